"""The server's three costs a user feels, each against a baseline measured in the same run.

1. Instance view with integrated gradients on a 64-token example (demo model, all-MiniLM-L6-v2,
   recorded into a tiny run with weights): p50 and p95 of POST .../instance through the ASGI app,
   against calling `t3vis.explain` + `t3vis.evaluate` directly on the same loaded model
   (ratio = server overhead; the model work is the same).
2. A 1,000,000-point projection over real HTTP (uvicorn on a loopback port, fetched with
   urllib): time to fetch and decode the binary float32 (N, 3) the API sends, against the same
   numbers as JSON (a JSON route on the same server, decoded with json.loads into an array).
   The layout is placed in the run's cache first: this measures sending, not projecting
   (bench_projection.py measures that). Bytes are held to the information content, not to
   JSON: the projection to 12 B/point (three float32), the per-point Arrow columns to their
   typed width with dictionary codes (see POINTS_BUDGET_B). The run is synthetic (no recorded
   run has a million points); binary sizes do not depend on the values.
3. A table page of a 1,000,000-row run (synthesised with pyarrow and the store's writer, not
   from a model): p50 per query of POST .../table (DuckDB over the Parquet files), against
   pandas reading the same Parquet columns, merging, filtering and sorting.
4. A selection of half that run (500,000 ids): POST .../selections (int64 ids, answered with a
   handle and the selection's summary) and a table page filtered by the handle, each against
   the unfiltered first page measured in the same run (the selection reaches DuckDB as a
   registered Arrow table joined with the rows, not as a million bound parameters).

    .venv/bin/python bench/bench_server.py

Environment: T3VIS_BENCH_SERVER_ROWS (1000000), T3VIS_BENCH_SERVER_POINTS (1000000),
T3VIS_BENCH_REPEATS (3; the instance view takes max(10, 3 x repeats) samples),
T3VIS_BENCH_SERVER_PARTS ("table,projection,instance").
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C
from _synthetic import seed_projection, synthetic_run

from t3vis.server.encodings import decode_projection_u16

PAGE_TARGET_S = 0.1          # the issue: a page of a 1,000,000-row run in well under 100 ms
SELECTED = 500_000           # ids in the selection of part 4
# A table page filtered by a 500,000-id handle: well under 1 s (issue 15), held to a quarter of it.
# Against the unfiltered first page (a top-50 of an in-memory table, ~7 ms) it costs a hash join's
# build (500k ids) and probe (1M rows) more: measured 63 ms by id, 115 ms by loss (9x and 16x) on 2
# shared cores at load 5. Posting the selection: 4 MB parsed and deduplicated with numpy, hashed,
# summarised in one DuckDB pass of two joins: measured 177 ms (25x). The ratios are held to about
# twice that: the ids bound as a list parameter (1.05 s for the page by id), np.unique (0.5 s in
# numpy 2) or a group-by of every text per summary (0.6 s) each miss them.
HANDLE_PAGE_TARGET_S = 0.25
HANDLE_PAGE_RATIO = 30.0
POST_SELECTION_TARGET_S = 0.5
POST_SELECTION_RATIO = 60.0
INSTANCE_OVERHEAD_TARGET = 1.2


def _percentile(values, q):
    import numpy as np

    return float(np.percentile(np.asarray(values), q))


# -- 1. instance view -------------------------------------------------------------------

def _not_cached():
    raise RuntimeError("the instance view's checkpoint should be in the server's model cache by now")


def bench_instance(folder: Path, samples: int) -> list[dict]:
    from fastapi.testclient import TestClient

    import t3vis
    from t3vis.server import create_app

    model, tokenizer = C.load_model("cpu")
    texts, labels = C.demo_texts(16)
    rec = t3vis.Recorder(folder / "instance", model, tokenizer, texts, labels, batch_size=16)
    rec.snapshot(step=1, epoch=0.0)
    words = " ".join(C.demo_texts(400)[0]).split()
    text = " ".join(words[:64])
    while len(tokenizer(text)["input_ids"]) > 64:
        text = text.rsplit(" ", 1)[0]
    n_tokens = len(tokenizer(text)["input_ids"])
    body = {"text": text, "method": "integrated_gradients"}
    with TestClient(create_app([folder / "instance"])) as client:
        url = "/api/runs/instance/checkpoints/1/instance"
        assert client.post(url, json=body).status_code == 200            # loads the checkpoint: not timed
        cache = client.app.state.t3vis.models
        (key,) = cache.keys()                            # the checkpoint the first request loaded
        loaded = cache.get(key, _not_cached)
        served, direct = [], []
        for _ in range(samples):            # interleaved, so a noisy neighbour hits both alike
            t0 = time.perf_counter()
            r = client.post(url, json=body)
            served.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
            t0 = time.perf_counter()
            t3vis.evaluate(loaded.model, loaded.tokenizer, [text], [0], layout=loaded.layout)
            t3vis.explain(loaded.model, loaded.tokenizer, [text], "integrated_gradients")
            direct.append(time.perf_counter() - t0)
    p50, p95, d50 = _percentile(served, 50), _percentile(served, 95), _percentile(direct, 50)
    print(f"[server] instance IG, {n_tokens} tokens: p50 {p50:.3f}s p95 {p95:.3f}s (direct p50 {d50:.3f}s)",
          flush=True)
    detail = {"tokens": n_tokens, "samples": samples, "served_s": served, "direct_s": direct, "loadavg": C.loadavg()}
    return [C.result("server", f"instance IG p50, {n_tokens} tokens", p50, "s", detail=detail),
            C.result("server", f"instance IG p95, {n_tokens} tokens", p95, "s"),
            C.result("server", "instance IG p50: served / direct explain+evaluate", p50 / d50, "x",
                     target=INSTANCE_OVERHEAD_TARGET, op="<=")]


# -- 2. projection and point columns over HTTP ----------------------------------------------

# Information content per point, the budget the binary formats are held to:
#   projection: x, y and neighbourhood preservation, float32 each                      = 12 B
#   points (Arrow): id int64 8, label/pred int32 4 + 4, loss/gold_prob/confidence/variability
#   float32 4 x 4, split and region as int32 dictionary codes 4 + 4, correct 1 bit, and a
#   validity bit for each of the 10 columns                                              = 41.375 B
PROJECTION_BUDGET_B = 12.0
U16_BUDGET_B = 5.0               # encoding=u16: x, y uint16, preservation uint8 (plus a 16-byte header)
LEAN_POINTS_BUDGET_B = 8 + 4 + 2 / 8     # columns=id,label: int64 + int32 and their validity bits
POINTS_BUDGET_B = 8 + 2 * 4 + 4 * 4 + 2 * 4 + 1 / 8 + 10 / 8
BYTES_TARGET = 1.1             # float64 coordinates (2x), JSON (about 3x) or strings in place of
                               # dictionary codes (about 1.3x for points) all miss it
# JSON / binary fetch + decode time over HTTP. Measured at 1,000,000 points on 2 shared cores:
# 314x (binary 0.018 s, JSON 5.6 s); at 100,000: 89x. It misses when the binary answer costs more
# than about 0.1 s at 1M points: bytes built per request from Python objects, the layout or its
# preservation recomputed or re-read from the hidden states instead of the cache.
TRANSFER_TARGET = 50.0


def _get(url: str) -> bytes:
    """The body of a GET over real HTTP (urllib: a client outside the server's event loop)."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=600) as response:
        return response.read()


def bench_projection_transfer(folder: Path, n: int, repeats: int) -> list[dict]:
    import numpy as np
    import pyarrow as pa
    from fastapi.responses import JSONResponse

    import t3vis
    from t3vis.server import create_app
    from t3vis.server.launch import BackgroundServer

    t0 = time.perf_counter()
    run_dir = synthetic_run(folder / "points", n, seed=1)
    print(f"[server] synthesised a {n:,}-point run in {time.perf_counter() - t0:.1f}s", flush=True)
    ck = t3vis.open_run(run_dir).checkpoints[-1]
    rng = np.random.default_rng(0)
    layout = rng.normal(size=(n, 2)).astype(np.float32)
    preservation = rng.random(n).astype(np.float32)
    seed_projection(run_dir, ck.step, 1, "pca", layout, preservation)
    app = create_app([run_dir])
    rows = np.column_stack([layout, preservation]).astype(np.float32)

    def as_json():       # the baseline: the same (N, 3) numbers as a JSON API would send them
        return JSONResponse({"rows": n, "points": rows.tolist()})

    app.add_api_route("/bench/projection.json", as_json, methods=["GET"])
    server = BackgroundServer(app)
    try:
        base = f"{server.url}/api/runs/points/checkpoints/{ck.step}"
        binary_url = f"{base}/projection?layer=1&method=pca&aligned=false"
        json_url = f"{server.url}/bench/projection.json"
        _get(binary_url)                                                   # opens the run's cache: not timed
        binary_t, json_t = [], []
        for _ in range(repeats):            # interleaved, so a noisy neighbour hits both alike
            t0 = time.perf_counter()
            body = _get(binary_url)
            got = np.frombuffer(body, "<f4").reshape(-1, 3)
            binary_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            text = _get(json_url)
            parsed = np.asarray(json.loads(text)["points"], np.float32)
            json_t.append(time.perf_counter() - t0)
        assert np.array_equal(got, rows) and np.array_equal(parsed, rows)
        points_body = _get(f"{base}/points")
        u16_t = []
        for _ in range(repeats):            # the fetch only: the page decodes it in a worker, not numpy here
            t0 = time.perf_counter()
            u16_body = _get(f"{binary_url}&encoding=u16")
            u16_t.append(time.perf_counter() - t0)
        quantised = decode_projection_u16(u16_body)
        lean_body = _get(f"{base}/points?columns=id,label")
    finally:
        server.stop()
    span = layout.max(axis=0) - layout.min(axis=0)
    assert np.all(np.abs(quantised[:, :2] - layout) <= span / 65535 + 1e-5)
    lean = pa.ipc.open_stream(lean_body).read_all()
    assert lean.column_names == ["id", "label"] and lean.num_rows == n
    points = pa.ipc.open_stream(points_body).read_all()
    assert points.num_rows == n
    b, js = C.median(binary_t), C.median(json_t)
    per_point, points_per_point = len(body) / n, len(points_body) / n
    print(f"[server] projection u16 {C.median(u16_t):.3f}s ({len(u16_body) / n:.2f} B/pt); points columns=id,label "
          f"{len(lean_body) / n:.2f} B/pt", flush=True)
    print(f"[server] projection {n:,} pts over HTTP: binary {b:.3f}s ({per_point:.2f} B/pt), JSON {js:.3f}s "
          f"({len(text) / n:.1f} B/pt): JSON / binary {js / b:.1f}x (target >= {TRANSFER_TARGET}); "
          f"points {points_per_point:.2f} B/pt (budget {POINTS_BUDGET_B:.3f})", flush=True)
    return [C.result("server", f"projection {n:,} pts binary: fetch + decode over HTTP", b, "s",
                     detail={"json_s": json_t, "binary_s": binary_t, "loadavg": C.loadavg()}),
            C.result("server", f"projection {n:,} pts JSON: fetch + decode over HTTP", js, "s"),
            C.result("server", "projection fetch + decode: JSON / binary time", js / b, "x", target=TRANSFER_TARGET,
                     op=">="),
            C.result("server", "projection B/point / 12 B (2 x float32 + preservation float32)",
                     per_point / PROJECTION_BUDGET_B, "x", target=BYTES_TARGET,
                     detail={"bytes": len(body), "json_bytes": len(text)}),
            C.result("server", f"projection {n:,} pts u16: fetch over HTTP", C.median(u16_t), "s",
                     detail={"u16_s": u16_t}),
            C.result("server", "projection u16 B/point / 5 B (2 x uint16 + preservation uint8)",
                     len(u16_body) / n / U16_BUDGET_B, "x", target=BYTES_TARGET, detail={"bytes": len(u16_body)}),
            C.result("server", f"points columns=id,label B/point / {LEAN_POINTS_BUDGET_B} B (int64 + int32)",
                     len(lean_body) / n / LEAN_POINTS_BUDGET_B, "x", target=BYTES_TARGET,
                     detail={"bytes": len(lean_body), "schema": str(lean.schema)}),
            C.result("server", f"points B/point / {POINTS_BUDGET_B:.3f} B (typed columns, dictionary codes)",
                     points_per_point / POINTS_BUDGET_B, "x", target=BYTES_TARGET,
                     detail={"bytes": len(points_body), "schema": str(points.schema)})]


# -- 3. table page of a 1,000,000-row run ---------------------------------------------------

QUERIES = {
    "first page, by id": {},
    "label=1, by loss desc": {"labels": [1], "sort": "loss", "descending": True},
    "text search 'great plot'": {"search": "great plot"},
    "region + confidence range, by variability": {"regions": ["ambiguous", "hard-to-learn"], "conf_min": 0.2,
                                                  "conf_max": 0.8, "sort": "variability"},
    "page 1000 of incorrect, by gold_prob": {"correct": False, "sort": "gold_prob", "offset": 50_000},
}


def _pandas_page(run_dir: Path, dm, q: dict):
    """Baseline: what a server without DuckDB does per request."""
    import pandas as pd

    ex = pd.read_parquet(run_dir / "examples.parquet", columns=["id", "split", "text", "label"])
    out = pd.read_parquet(run_dir / "checkpoints" / "step-00000100" / "outputs.parquet",
                          columns=["id", "pred", "correct", "loss", "gold_prob"])
    df = ex.merge(out, on="id", how="left").merge(dm, on="id", how="left")
    keep = pd.Series(True, index=df.index)
    if "labels" in q:
        keep &= df["label"].isin(q["labels"])
    if "correct" in q:
        keep &= df["correct"] == q["correct"]
    if "search" in q:
        keep &= df["text"].str.contains(q["search"], case=False, regex=False)
    if "regions" in q:
        keep &= df["region"].isin(q["regions"])
    if "conf_min" in q:
        keep &= df["confidence"] >= q["conf_min"]
    if "conf_max" in q:
        keep &= df["confidence"] <= q["conf_max"]
    sub = df[keep]
    sub = sub.sort_values([q.get("sort", "id"), "id"], ascending=not q.get("descending", False))
    off = q.get("offset", 0)
    return len(sub), sub.iloc[off:off + 50]


def bench_table(folder: Path, n: int, repeats: int) -> list[dict]:
    from fastapi.testclient import TestClient

    import t3vis
    from t3vis.server import create_app

    t0 = time.perf_counter()
    run_dir = synthetic_run(folder / "table", n)
    print(f"[server] synthesised a {n:,}-row run in {time.perf_counter() - t0:.1f}s", flush=True)
    dm = t3vis.open_run(run_dir).dynamics()[["id", "confidence", "variability", "region"]]
    rows = []
    with TestClient(create_app([run_dir])) as client:
        t0 = time.perf_counter()
        assert client.post("/api/runs/table/table", json={}).status_code == 200
        first = time.perf_counter() - t0
        rows.append(C.result("server", f"table first request ({n:,} rows; builds the data map)", first, "s"))
        unfiltered = float("inf")
        for name, q in QUERIES.items():
            times = []
            for _ in range(max(repeats, 5)):
                t0 = time.perf_counter()
                r = client.post("/api/runs/table/table", json=q)
                times.append(time.perf_counter() - t0)
            page = r.json()
            base = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                total, sub = _pandas_page(run_dir, dm, q)
                base.append(time.perf_counter() - t0)
            assert page["total"] == total and [x["id"] for x in page["rows"]] == sub["id"].tolist(), name
            p50, b50 = C.median(times), C.median(base)
            print(f"[server] table '{name}': {p50 * 1000:.1f} ms (pandas {b50 * 1000:.0f} ms), total {total:,}",
                  flush=True)
            rows.append(C.result("server", f"table page p50: {name}", p50, "s", target=PAGE_TARGET_S,
                                 detail={"times": times, "pandas": base, "total": total, "loadavg": C.loadavg()}))
            rows.append(C.result("server", f"table pandas / served: {name}", b50 / p50, "x", target=10.0, op=">="))
            if name == "first page, by id":
                unfiltered = p50
        rows += _bench_selection_handle(client, n, max(repeats, 5), unfiltered)
    return rows


def _bench_selection_handle(client, n: int, repeats: int, unfiltered_s: float) -> list[dict]:
    """POST a SELECTED-id selection, then table pages filtered by its handle, each interleaved with
    the unfiltered first page (the baseline), so a noisy neighbour hits both alike."""
    import numpy as np

    chosen = np.sort(np.random.default_rng(2).choice(n, min(SELECTED, n), replace=False)).astype("<i8")
    body = chosen.tobytes()
    octet = {"Content-Type": "application/octet-stream"}
    queries = {"by id": {}, "by loss desc": {"sort": "loss", "descending": True}}
    posts: list[float] = []
    pages: dict[str, list[float]] = {name: [] for name in queries}
    baseline: list[float] = []
    answers: dict[str, dict] = {}
    handle = client.post("/api/runs/table/selections", content=body, headers=octet).json()["handle"]   # warm-up
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = client.post("/api/runs/table/selections", content=body, headers=octet)
        posts.append(time.perf_counter() - t0)
        assert r.status_code == 200 and r.json()["handle"] == handle and r.json()["count"] == len(chosen), r.text
        for name, q in queries.items():
            t0 = time.perf_counter()
            r = client.post("/api/runs/table/table", json={**q, "selection": handle})
            pages[name].append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
            answers[name] = r.json()
        t0 = time.perf_counter()
        assert client.post("/api/runs/table/table", json={}).status_code == 200
        baseline.append(time.perf_counter() - t0)
    assert answers["by id"]["total"] == len(chosen)
    assert [row["id"] for row in answers["by id"]["rows"]] == chosen[:50].tolist()
    base = min(C.median(baseline), unfiltered_s)         # the unfiltered page, at its best in this run
    post = C.median(posts)
    print(f"[server] POST a {len(chosen):,}-id selection: {post * 1000:.0f} ms ({post / base:.1f}x the unfiltered "
          f"page, {base * 1000:.1f} ms)", flush=True)
    rows = [C.result("server", f"POST a {len(chosen):,}-id selection (int64 body) p50", post, "s",
                     target=POST_SELECTION_TARGET_S, detail={"times": posts, "loadavg": C.loadavg()}),
            C.result("server", f"POST a {len(chosen):,}-id selection / unfiltered page", post / base, "x",
                     target=POST_SELECTION_RATIO, detail={"unfiltered_s": baseline})]
    for name, times in pages.items():
        p50 = C.median(times)
        print(f"[server] table page filtered by a {len(chosen):,}-id handle, {name}: {p50 * 1000:.1f} ms "
              f"({p50 / base:.2f}x the unfiltered page)", flush=True)
        rows += [C.result("server", f"table page filtered by a {len(chosen):,}-id selection handle, {name} p50",
                          p50, "s", target=HANDLE_PAGE_TARGET_S, detail={"times": times, "loadavg": C.loadavg()}),
                 C.result("server", f"table page by {len(chosen):,}-id handle / unfiltered page, {name}", p50 / base,
                          "x", target=HANDLE_PAGE_RATIO)]
    return rows


def main() -> list[dict]:
    rows_n = C.env_int("T3VIS_BENCH_SERVER_ROWS", 1_000_000)
    points_n = C.env_int("T3VIS_BENCH_SERVER_POINTS", 1_000_000)
    repeats = C.env_int("T3VIS_BENCH_REPEATS", 3)
    parts = {p.strip() for p in C.env_str("T3VIS_BENCH_SERVER_PARTS", "table,projection,instance").split(",")}
    with tempfile.TemporaryDirectory(prefix="t3vis-bench-server-") as tmp:
        folder = Path(tmp)
        results = []
        if "table" in parts:
            results += bench_table(folder, rows_n, repeats)
        if "projection" in parts:
            results += bench_projection_transfer(folder, points_n, repeats)
        if "instance" in parts:
            results += bench_instance(folder, max(10, 3 * repeats))
    return results


if __name__ == "__main__":
    C.standalone(main)
