"""Selections of any size as server-side handles (docs/api.md, "Selections of any size"), the lean
points (columns=) and the quantised projection (encoding=u16).

The store and the body parsers are checked on their own; the routes on the tiny recorded run
(24 probe examples, 6 training-only ones), each answer against an independent source: the same
request with the ids as a list, numpy over the run's examples read by t3vis.open_run, the gate
gradients summed by hand, t3vis.evaluate on the checkpoint's model.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time

import numpy as np
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from server_fixtures import N_PROBE, N_TRAIN_ONLY, record_tiny_run

import t3vis
from t3vis.errors import InvalidInputError
from t3vis.server import create_app
from t3vis.server.encodings import decode_projection_u16, projection_u16
from t3vis.server.selections import SelectionExpired, SelectionStore, handle_of, ids_from_bytes, rows_from_bitmap

OCTET = {"Content-Type": "application/octet-stream"}
HANDLE = r"^sel-[0-9a-f]{16}$"


def _i64(ids) -> bytes:
    return np.asarray(ids, dtype="<i8").tobytes()


def _bitmap(rows, n: int) -> bytes:
    bits = np.zeros(((n + 7) // 8) * 8, dtype=np.uint8)
    bits[list(rows)] = 1
    return np.packbits(bits, bitorder="little").tobytes()


# -- the store and the parsers ------------------------------------------------------------------

def test_a_handle_is_a_pure_function_of_the_run_and_the_set():
    store = SelectionStore()
    a = store.put("demo", ids_from_bytes(_i64([5, 1, 3, 1])))
    assert a == store.put("demo", ids_from_bytes(_i64([1, 3, 5]))) == handle_of("demo", np.array([1, 3, 5]))
    assert a != store.put("other", ids_from_bytes(_i64([1, 3, 5])))
    assert a != store.put("demo", ids_from_bytes(_i64([1, 3])))
    np.testing.assert_array_equal(store.get("demo", a), [1, 3, 5])
    assert store.held_ids == 3 + 3 + 2


def test_the_store_drops_the_least_recently_used_beyond_its_ids():
    store = SelectionStore(max_ids=10)
    a, b = store.put("r", np.arange(4)), store.put("r", np.arange(10, 14))
    store.get("r", a)                                       # a is now more recent than b
    c = store.put("r", np.arange(20, 24))                   # 12 ids > 10: b goes
    with pytest.raises(SelectionExpired, match=f"selection {b} expired: send it again"):
        store.get("r", b)
    assert len(store.get("r", a)) == len(store.get("r", c)) == 4 and store.held_ids == 8
    big = store.put("r", np.arange(100, 125))               # larger than the bound: kept, alone
    assert len(store.get("r", big)) == 25 and store.held_ids == 25
    with pytest.raises(SelectionExpired):
        store.get("r", a)


def test_a_handle_of_another_run_is_expired_and_says_whose_it_is():
    store = SelectionStore()
    handle = store.put("a", np.arange(3))
    with pytest.raises(SelectionExpired, match=r"expired: send it again \(it was made for run 'a', not 'b'\)"):
        store.get("b", handle)


def test_the_store_is_thread_safe():
    store = SelectionStore(max_ids=300)
    handles: list[str] = []
    lock = threading.Lock()

    def work(worker: int):
        for i in range(200):
            h = store.put("r", np.arange(3) + 100_000 * worker + 10 * i)
            with lock:
                handles.append(h)
            with contextlib.suppress(SelectionExpired):
                store.get("r", handles[np.random.default_rng(i).integers(len(handles))])

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    held = 0
    for h in set(handles):
        with contextlib.suppress(SelectionExpired):
            held += len(store.get("r", h))
    assert held == store.held_ids == 300          # the bound is met exactly and the count agrees with the items


@pytest.mark.parametrize("body, match", [(b"\x01" * 12, "12 bytes, not a whole number"), (b"", "empty")])
def test_bad_id_bodies(body, match):
    with pytest.raises(InvalidInputError, match=match):
        ids_from_bytes(body)


def test_a_bitmap_is_read_least_significant_bit_first():
    # byte 0 = 0b0000_0101: rows 0 and 2; byte 1 = 0b1000_0000: row 15; row 16 in byte 2
    np.testing.assert_array_equal(rows_from_bitmap(bytes([0b101, 0b1000_0000, 1]), 17), [0, 2, 15, 16])
    np.testing.assert_array_equal(rows_from_bitmap(bytes([0xFF]), 3), [0, 1, 2])     # padding bits ignored
    with pytest.raises(InvalidInputError, match=r"ceil\(17 / 8\) = 3 bytes"):
        rows_from_bitmap(bytes(2), 17)


def test_the_u16_projection_by_hand():
    rows = np.array([[-1.0, 10.0, 1.0], [3.0, 20.0, 0.5], [0.0, 12.5, np.nan], [1.0, 10.0, 0.0]], np.float32)
    data = projection_u16(rows.tobytes())
    assert len(data) == 16 + 5 * 4
    np.testing.assert_array_equal(np.frombuffer(data[:16], "<f4"), [-1, 3, 10, 20])
    # x: (x + 1) / 4 * 65535 -> 0, 65535, 16383.75, 32767.5; y: (y - 10) / 10 * 65535
    np.testing.assert_array_equal(np.frombuffer(data, "<u2", 4, 16), [0, 65535, 16384, 32768])
    np.testing.assert_array_equal(np.frombuffer(data, "<u2", 4, 24), [0, 65535, 16384, 0])
    np.testing.assert_array_equal(np.frombuffer(data, np.uint8, 4, 32), [254, 127, 255, 0])
    back = decode_projection_u16(data)
    np.testing.assert_allclose(back[:, :2], rows[:, :2], atol=10 / 65535)
    assert np.isnan(back[2, 2]) and back[0, 2] == 1.0


# -- the routes ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("handles")
    run_dir = record_tiny_run(root / "tiny")[0]
    other = shutil.copytree(run_dir, root / "elsewhere" / "other")
    with TestClient(create_app([run_dir, other]), raise_server_exceptions=False) as client:
        yield client, t3vis.open_run(run_dir)


def _hold(client, ids, run: str = "tiny") -> dict:
    r = client.post(f"/api/runs/{run}/selections", content=_i64(ids), headers=OCTET)
    assert r.status_code == 200, r.text
    return r.json()


def test_posting_ids_answers_a_handle_and_the_summary(served):
    client, run = served
    ids = [3, 1001, 7, 3, 424242, 0]                   # a training-only id, an unknown one, a repeat
    body = _hold(client, ids)
    assert body["handle"] == _hold(client, sorted(set(ids)))["handle"]       # same set, same handle
    as_json = client.post("/api/runs/tiny/selections", json={"ids": ids[::-1]}).json()
    assert as_json["handle"] == body["handle"]
    summary = client.post("/api/runs/tiny/selection", json={"ids": ids}).json()
    assert {k: v for k, v in body.items() if k not in ("handle", "count")} == summary
    known = np.isin(sorted(set(ids)), run.examples["id"].to_numpy())
    assert body["count"] == body["n"] == 5 and body["unknown"] == int((~known).sum()) == 1
    assert client.post("/api/runs/tiny/selection", json={"selection": body["handle"]}).json() == summary


@pytest.mark.parametrize("query", [{}, {"sort": "loss", "descending": True}, {"labels": [1], "sort": "gold_prob"},
                                   {"limit": 3, "offset": 2}])
def test_the_table_by_handle_equals_the_table_by_ids(served, query):
    client, run = served
    ids = [23, 1, 1003, 8, 12, 5, 1000, 17]
    handle = _hold(client, ids)["handle"]
    by_ids = client.post("/api/runs/tiny/table", json={**query, "ids": ids}).json()
    by_handle = client.post("/api/runs/tiny/table", json={**query, "selection": handle}).json()
    assert by_handle == by_ids
    examples = run.examples
    chosen = examples[np.isin(examples["id"].to_numpy(), ids)]
    if "labels" in query:
        chosen = chosen[chosen["label"].isin(query["labels"])]
    assert by_handle["total"] == len(chosen)


def test_a_bitmap_over_the_probe_rows_selects_their_ids(served):
    client, run = served
    rows = [0, 3, 9, 23]
    r = client.post("/api/runs/tiny/selections", params={"over": "probes"}, content=_bitmap(rows, N_PROBE),
                    headers=OCTET)
    assert r.status_code == 200, r.text
    examples = run.examples
    probe_order = examples[examples["probe_row"] >= 0].sort_values("probe_row")["id"].to_numpy()
    want = sorted(probe_order[rows].tolist())
    assert r.json()["count"] == 4 and r.json()["not_probed"] == 0
    assert r.json()["handle"] == _hold(client, want)["handle"]
    page = client.post("/api/runs/tiny/table", json={"selection": r.json()["handle"]}).json()
    assert [row["id"] for row in page["rows"]] == want
    # probe row i is row i of the points answer
    points = pa.ipc.open_stream(client.get("/api/runs/tiny/checkpoints/5/points").content).read_all()
    assert sorted(points.column("id").to_numpy()[rows].tolist()) == want


def test_a_million_ids_travel_as_one_body(served):
    client, run = served
    ids = np.arange(-500_000, 500_000, dtype=np.int64)          # every id of the run, and 999,970 unknown
    body = _hold(client, ids)
    n_known = len(run.examples)
    assert body["count"] == 1_000_000 and body["unknown"] == 1_000_000 - n_known == 1_000_000 - N_PROBE - N_TRAIN_ONLY
    page = client.post("/api/runs/tiny/table", json={"selection": body["handle"], "limit": 1000}).json()
    assert page["total"] == n_known and sorted(r["id"] for r in page["rows"]) == sorted(run.examples["id"])


def test_heads_by_handle_equal_heads_by_ids_and_the_gate_gradients_by_hand(served):
    client, run = served
    ids = [9, 2, 1001, 15]                             # 1001: training only, skipped
    handle = _hold(client, ids)["handle"]
    by_ids = client.post("/api/runs/tiny/checkpoints/5/heads", json={"scope": "selection", "ids": ids}).json()
    by_handle = client.post("/api/runs/tiny/checkpoints/5/heads",
                            json={"scope": "selection", "selection": handle}).json()
    assert by_handle["n"] == by_ids["n"] == 3 and by_handle["skipped"] == by_ids["skipped"] == 1
    np.testing.assert_allclose(by_handle["importance"], by_ids["importance"], rtol=1e-6)
    examples = run.examples.set_index("id")
    grads = run.checkpoint(5).example_gate_gradients(examples.loc[[2, 9, 15], "probe_row"].to_numpy())
    total = np.abs(grads.astype(np.float64)).sum(axis=0)                   # (L, H)
    np.testing.assert_allclose(by_handle["importance"], total / np.linalg.norm(total, axis=1, keepdims=True),
                               rtol=1e-5)
    one = _hold(client, [4])["handle"]
    example = client.post("/api/runs/tiny/checkpoints/5/heads", json={"scope": "example", "selection": one})
    assert example.status_code == 200 and example.json()["n"] == 1
    two = client.post("/api/runs/tiny/checkpoints/5/heads", json={"scope": "example", "selection": handle})
    assert two.status_code == 422 and "exactly one id" in two.json()["detail"]


def test_pruning_by_handle_equals_pruning_by_ids_and_evaluate(served):
    client, run = served
    ids = [11, 0, 6, 1002, 19, 3]
    handle = _hold(client, ids)["handle"]
    masked = [[0, 1], [1, 3]]
    by_ids = client.post("/api/runs/tiny/checkpoints/5/prune", json={"masked_heads": masked, "ids": ids}).json()
    by_handle = client.post("/api/runs/tiny/checkpoints/5/prune",
                            json={"masked_heads": masked, "selection": handle}).json()
    assert by_handle["n"] == by_ids["n"] == 5 and by_handle["skipped"] == by_ids["skipped"] == 1
    for side in ("before", "after"):
        for measure in ("accuracy", "loss"):
            assert by_handle[side][measure] == pytest.approx(by_ids[side][measure], rel=1e-6)
    assert sorted(map(str, by_handle["flips"])) == sorted(map(str, by_ids["flips"]))
    model, tokenizer = run.checkpoint(5).load_model()
    examples = run.examples.set_index("id").loc[[0, 3, 6, 11, 19]]
    after = t3vis.evaluate(model, tokenizer, examples["text"].tolist(), examples["label"].to_numpy(),
                           masked_heads={0: [1], 1: [3]}, max_length=run.meta.get("max_length") or 128)
    assert by_handle["after"]["accuracy"] == pytest.approx(after.accuracy)
    assert by_handle["after"]["loss"] == pytest.approx(after.loss, rel=1e-5)


@pytest.mark.parametrize("content, headers, params, match", [
    (_i64([1, 2])[:-3], OCTET, None, "13 bytes, not a whole number of int64 ids"),
    (b"", OCTET, None, "empty"),
    (bytes(2), OCTET, {"over": "probes"}, "ceil(24 / 8) = 3 bytes"),
    (bytes(3), OCTET, {"over": "probes"}, "empty"),
    (b'{"ids": []}', {"Content-Type": "application/json"}, None, "empty"),
    (b'{"ids": [1]}', {"Content-Type": "application/json"}, {"over": "probes"}, "octet-stream"),
    (b'{"ids": "1,2"}', {"Content-Type": "application/json"}, None, "body field 'ids'"),
    (b'{"ids": [1], "selection": "x"}', {"Content-Type": "application/json"}, None, "selection"),
    (b'{"ids": [1', {"Content-Type": "application/json"}, None, "JSON"),
    (b"1,2,3", {"Content-Type": "text/plain"}, None, "content type 'text/plain'"),
    (_i64([1]), OCTET, {"over": "everything"}, "over"),
])
def test_bad_selection_bodies_are_422_with_a_reason(served, content, headers, params, match):
    client, _ = served
    r = client.post("/api/runs/tiny/selections", content=content, headers=headers, params=params)
    assert r.status_code == 422, r.text
    assert match in r.json()["detail"]


@pytest.mark.parametrize("url, body", [
    ("/api/runs/tiny/table", {}), ("/api/runs/tiny/selection", {}),
    ("/api/runs/tiny/checkpoints/5/heads", {"scope": "selection"}),
    ("/api/runs/tiny/checkpoints/5/prune", {"masked_heads": [[0, 1]]}),
])
def test_every_route_that_takes_ids_takes_a_handle(served, url, body):
    client, _ = served
    handle = _hold(client, [1, 2, 3])["handle"]
    assert client.post(url, json={**body, "selection": handle}).status_code == 200
    both = client.post(url, json={**body, "selection": handle, "ids": [1, 2, 3]})
    assert both.status_code == 422 and "not both" in both.json()["detail"]
    never = "sel-0123456789abcdef"
    gone = client.post(url, json={**body, "selection": never})
    assert gone.status_code == 410 and gone.json()["detail"].startswith(f"selection {never} expired: send it again")
    odd = client.post(url, json={**body, "selection": "sel-XYZ"})
    assert odd.status_code == 422 and "selection" in odd.json()["detail"]
    elsewhere = client.post(url.replace("/tiny/", "/other/"), json={**body, "selection": handle})
    assert elsewhere.status_code == 410 and "made for run 'tiny', not 'other'" in elsewhere.json()["detail"]


def test_an_evicted_handle_is_410_and_posting_again_restores_it(served):
    client, _ = served
    handle = _hold(client, [5, 6])["handle"]
    store = client.app.state.t3vis.selections
    saved, store.max_ids = store.max_ids, 1
    try:
        _hold(client, [7, 8])                           # over the bound: [5, 6] goes
    finally:
        store.max_ids = saved
    assert client.post("/api/runs/tiny/table", json={"selection": handle}).status_code == 410
    assert _hold(client, [6, 5])["handle"] == handle
    assert client.post("/api/runs/tiny/table", json={"selection": handle}).json()["total"] == 2


# -- lean points and the quantised projection ------------------------------------------------------

def test_points_answer_the_columns_asked_in_probe_order(served):
    client, _ = served
    whole = pa.ipc.open_stream(client.get("/api/runs/tiny/checkpoints/5/points").content).read_all()
    r = client.get("/api/runs/tiny/checkpoints/5/points", params={"columns": "label,id,label"})
    assert r.status_code == 200 and r.headers["x-t3vis-rows"] == str(N_PROBE)
    lean = pa.ipc.open_stream(r.content).read_all()
    assert lean.column_names == ["label", "id"]
    assert lean.column("id").equals(whole.column("id")) and lean.column("label").equals(whole.column("label"))
    region = pa.ipc.open_stream(client.get("/api/runs/tiny/checkpoints/5/points?columns=id,region").content)
    region_table = region.read_all()
    assert pa.types.is_dictionary(region_table.schema.field("region").type)
    assert region_table.column("region").to_pylist() == whole.column("region").to_pylist()
    bad = client.get("/api/runs/tiny/checkpoints/5/points", params={"columns": "id,perplexity"})
    assert bad.status_code == 422 and "'perplexity'" in bad.json()["detail"] and "gold_prob" in bad.json()["detail"]
    assert client.get("/api/runs/tiny/checkpoints/5/points", params={"columns": ","}).status_code == 422


def test_the_u16_projection_stands_for_the_float32_one(served):
    client, _ = served
    url = "/api/runs/tiny/checkpoints/5/projection"
    params = {"layer": 1, "method": "pca"}
    r = client.get(url, params=params)
    deadline = time.monotonic() + 120                   # the layout is computed in the background: poll
    while r.status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.05)
        r = client.get(url, params=params)
    assert r.status_code == 200, r.text
    rows = np.frombuffer(r.content, "<f4").reshape(-1, 3)
    q = client.get(url, params={**params, "encoding": "u16"})
    assert q.status_code == 200 and len(q.content) == 16 + 5 * len(rows)
    for header in ("x-t3vis-rows", "x-t3vis-sampled", "x-t3vis-mean-preservation"):
        assert q.headers[header] == r.headers[header]
    back = decode_projection_u16(q.content)
    span = rows[:, :2].max(axis=0) - rows[:, :2].min(axis=0)
    assert np.all(np.abs(back[:, :2] - rows[:, :2]) <= span / 65535 + 1e-6)
    np.testing.assert_allclose(back[:, 2], rows[:, 2], atol=0.5 / 254 + 1e-6)
    assert client.get(url, params={**params, "encoding": "f32"}).content == r.content
    assert client.get(url, params={**params, "encoding": "u8"}).status_code == 422
