"""The viewer in headless Chromium on a synthetic run of 1,000,000 points, against a 10,000-point
baseline opened in the same run of this benchmark (same server, same browser, same page size).

1. Time to first render: from navigation to the first frame that shows the projection's points
   (the projection panel says it drew this run/step/layer/method in `data-drawn`, and a
   screenshot of the plot has ink: non-background pixels). Timed from asking for the page to the
   screenshot that showed the points coming back. The pixels come from the browser's own
   screenshot, not read back from the canvas in the page, which would itself block the page.
2. Time to finish a lasso: the mouse drags a polygon over the left half of the projection (lasso
   mode, as tests/browser does); timed from the mouse release (a capture-phase listener in the
   page) until the selection chip shows a count and the table has reloaded for the selection.
   Also the drag itself: seconds per mouse move (each move redraws the lasso over every point).
3. Responsiveness while a projection computes: on the baseline run, the table's "loss" header is
   clicked and the time until its first row changes (server round trip included) is measured when
   idle, then while the server computes an uncached projection that the page asked for (t-SNE by
   default: the page polls and shows progress meanwhile), then idle again once it is drawn.
   Reported: busy / idle p50. (On the 1M run an uncached projection would not finish within the
   benchmark's time: neighbourhood preservation searches neighbours exactly. So this part runs
   on the baseline; the same click is also timed idle on the 1M run against the baseline.)
4. The built bundle: bytes of src/t3vis/server/static/assets/*.js and *.css, raw and gzip -9.

The 1M page is held to absolute targets (TARGETS below, issue 15): first render, the longest
main-thread task from load through the lasso, the lasso's release -> selection + table, and the
time per mouse move while it is dragged; each is printed beside its ratio to the baseline (1M /
baseline, for regressions that scale with the points). The table sort and the sort while a
projection computes are held as ratios (1M / baseline, busy / idle), the JS heap per point as
an absolute; the baseline page is opened before and after the 1M page and its median is used.
Long main-thread tasks (PerformanceObserver) and the JS heap are reported for the 1M page.
T3VIS_STATIC_DIR measures a viewer built elsewhere (`npx vite build --outDir DIR`).

Both runs are written by bench/_synthetic.py (no model); their default projection (last layer,
PCA) is seeded into the run's cache with a clustered random layout, so the server answers it
at once and the page's own work is what is timed. One in-process uvicorn server on a free port
serves both; Chromium runs headless with WebGL on SwiftShader (the flags of tests/browser).

    .venv/bin/python bench/bench_browser.py

Environment: T3VIS_BENCH_BROWSER_N (1000000), T3VIS_BENCH_BROWSER_BASE_N (10000),
T3VIS_BENCH_BROWSER_CLICKS (5 clicks per sample set), T3VIS_BENCH_BROWSER_BUSY_METHOD (tsne),
T3VIS_CHROMIUM (/usr/bin/chromium), T3VIS_STATIC_DIR (the package's static/). Needs the built
viewer (`make frontend`) and chromium; without them main() raises with the command that fixes it
(run_all shows an ERROR row).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C
from _synthetic import seed_projection, synthetic_run

from t3vis.server.launch import BackgroundServer

BENCH = "browser"
STATIC = Path(os.environ.get("T3VIS_STATIC_DIR") or C.REPO / "src" / "t3vis" / "server" / "static")
CHROMIUM = os.environ.get("T3VIS_CHROMIUM", "/usr/bin/chromium")
# as tests/browser/conftest.py (WebGL without a GPU: ANGLE on SwiftShader), plus precise heap sizes
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-dev-shm-usage", "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                 "--enable-precise-memory-info"]
VIEWPORT = {"width": 1600, "height": 1000}
STEP, LAYER, METHOD = 100, 1, "pca"      # synthetic_run: one checkpoint at step 100, layers 0..1 (1 is the last)
LASSO_FRAC = 0.5
LASSO_STEPS = 6                           # mouse moves per side of the lasso's rectangle
LASSO_SETTLE_S = 3.0                      # after a lasso shows, its long tasks are collected this long
BUSY_SPACING_S = 1.0                      # between table clicks while a projection computes
METHOD_LABELS = {"pca": "PCA", "umap": "UMAP", "tsne": "t-SNE"}

# Targets (<=). On the 1M page, absolute (issue 15): first render 3 s, no main-thread task over
# 0.2 s from load through the lasso, a lasso's release -> count and first table page 1 s, a drag
# redrawn at least 10 times a second (0.1 s a mouse move); the ratios to the baseline are printed
# beside them. Kept from the earlier ratio targets (a run at the defaults on 2 shared cores: table
# sort 1.21x, sort while t-SNE computes / idle 1.32x, JS heap 256 B/point, each with a margin of
# about 1.5x): a sort done in the page instead of the server grows with the rows; a projection
# computed on the server's event loop holds every request until it is done (about 200x idle); a
# JS object per point is well over 400 B.
TARGETS = {"render_s": 3.0, "longest_task_s": 0.2, "lasso_s": 1.0, "lasso_move_s": 0.1,
           "sort": 2.0, "busy": 3.0, "heap_per_point": 400.0}


class Unavailable(RuntimeError):
    """The benchmark cannot run here (no chromium, no built viewer, no playwright)."""


# -- in-page probes ---------------------------------------------------------------------------

# Installed before any page script: input timestamps and long tasks, read back by the bench.
INIT_JS = """
window.__bench = {mouseup: null, click: null, longtasks: []};
addEventListener('mouseup', () => { window.__bench.mouseup = performance.now(); }, true);
addEventListener('click', () => { window.__bench.click = performance.now(); }, true);
try {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.__bench.longtasks.push([e.startTime, e.duration]);
  }).observe({type: 'longtask', buffered: true});
} catch (e) { /* no long-task timing in this browser */ }
"""

# Truthy once the projection panel says it drew `key` (run|step|layer|method); its pixels are
# then read from a screenshot (screen_ink).
DRAWN_KEY_JS = """key => {
  const plot = document.querySelector('[data-testid=projection-plot]');
  if (!plot) return false;
  const drawn = plot.getAttribute('data-drawn');
  return drawn === null || drawn.startsWith(key);
}"""
PLOT_SELECTOR = "[data-testid=projection-scatter]"
INK_POLL_S = 0.05
# ink that means the points are drawn: before them, a screenshot of the plot's box had 527 ink
# pixels once (text drawn over the plot); the points of either run are tens of thousands
MIN_POINT_INK = 5000

TABLE_TOTAL_JS = "() => document.querySelector('[data-testid=table-count]')?.dataset.total ?? ''"
FIRST_ROW_JS = "() => document.querySelector('[data-testid=table-body] tr')?.getAttribute('data-id') ?? ''"


# -- setup --------------------------------------------------------------------------------------

def preflight() -> None:
    if not Path(CHROMIUM).exists():
        raise Unavailable(f"chromium is missing at {CHROMIUM}: `apt-get update && apt-get install -y chromium` "
                          "(Debian), or point T3VIS_CHROMIUM at a Chromium binary")
    if not (STATIC / "index.html").exists() or not list((STATIC / "assets").glob("*.js")):
        raise Unavailable(f"the viewer is not built ({STATIC / 'index.html'} is missing): run `make frontend`")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        raise Unavailable("playwright is not installed in this Python: `pip install -e '.[dev]'`") from None
    sources = [f for f in (C.REPO / "frontend" / "src").rglob("*") if f.is_file()]
    built = (STATIC / "index.html").stat().st_mtime
    newer = [str(f.relative_to(C.REPO)) for f in sources if f.stat().st_mtime > built]
    if newer:
        print(f"[browser] warning: the built viewer is older than {', '.join(newer[:3])}"
              f"{' ...' if len(newer) > 3 else ''}; measuring the build as it is (`make frontend` to update)",
              flush=True)


def clustered_layout(n: int, seed: int = 0):
    """(n, 2) float32: 12 Gaussian clusters of uneven size and spread; preservation (n,) in [0, 1]."""
    import numpy as np

    rng = np.random.default_rng(seed)
    k = 12
    centers = rng.uniform(-10, 10, size=(k, 2))
    spread = rng.uniform(0.4, 1.6, size=k)
    weights = rng.dirichlet(np.full(k, 2.0))
    which = rng.choice(k, size=n, p=weights)
    layout = centers[which] + rng.normal(size=(n, 2)) * spread[which, None]
    return layout.astype(np.float32), rng.random(n).astype(np.float32)


def make_run(folder: Path, name: str, n: int) -> Path:
    t0 = time.perf_counter()
    run_dir = synthetic_run(folder / name, n)
    layout, preservation = clustered_layout(n)
    seed_projection(run_dir, STEP, LAYER, METHOD, layout, preservation)
    print(f"[browser] synthetic run '{name}' of {n:,} points written and seeded in {time.perf_counter() - t0:.1f}s",
          flush=True)
    return run_dir


# -- page actions -------------------------------------------------------------------------------

class Page:
    def __init__(self, browser, timeout_s: float):
        self.context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
        self.context.set_default_timeout(timeout_s * 1000)
        self.context.add_init_script(INIT_JS)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("crash", lambda _: self.errors.append("page crashed"))

    def close(self):
        self.context.close()

    def eval(self, js: str, arg=None):
        return self.page.evaluate(js, arg)

    def wait(self, js: str, arg=None, timeout_s: float | None = None, polling="raf"):
        kw = {"timeout": timeout_s * 1000} if timeout_s is not None else {}
        return self.page.wait_for_function(js, arg=arg, polling=polling, **kw).json_value()

    def heap(self) -> float | None:
        return self.eval("() => performance.memory ? performance.memory.usedJSHeapSize : null")

    def longtasks(self, since: float = 0.0) -> list[list[float]]:
        return [t for t in self.eval("() => window.__bench.longtasks") if t[0] >= since]

    def api_timings(self) -> dict:
        """The API requests of the page so far: path -> [start, end, bytes] (page clock, seconds)."""
        entries = self.eval("""() => performance.getEntriesByType('resource').filter(e => e.name.includes('/api/'))
            .map(e => [new URL(e.name).pathname, e.startTime, e.responseEnd, e.encodedBodySize])""")
        out = {}
        for path, start, end, size in entries:
            short = path.split("/api/", 1)[1]
            out.setdefault(short, [round(start / 1000, 3), round(end / 1000, 3), size])
        return out


def screen_ink(p: Page) -> int:
    """Non-background pixels of the projection as the screen shows it. A screenshot is composited
    by the browser; reading the WebGL canvas back from the page would make the page's main thread
    wait for the GPU to finish the frame, a long task of the benchmark's own making."""
    box = p.page.locator(PLOT_SELECTOR).bounding_box()
    if not box or box["width"] < 2 or box["height"] < 2:
        return 0
    png = p.page.screenshot(clip=box, animations="allow", caret="initial")
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    return int((rgb < 235).any(axis=2).sum())


def wait_ink(p: Page, key: str, min_ink: int, timeout_s: float) -> tuple[float, int]:
    """Wait until the projection of `key` is on screen with at least `min_ink` pixels of points;
    perf_counter() when the screenshot that showed them came back, and the ink."""
    p.wait(DRAWN_KEY_JS, key, timeout_s=timeout_s)
    deadline = time.perf_counter() + timeout_s
    while True:
        ink = screen_ink(p)
        if ink >= min_ink:
            return time.perf_counter(), ink
        if time.perf_counter() > deadline:
            raise TimeoutError(f"the projection {key} showed {ink} ink pixels after {timeout_s:.0f}s")
        time.sleep(INK_POLL_S)


def first_render(p: Page, url: str, key: str, timeout_s: float) -> dict:
    """Navigate, and wait for the projection's points on screen: seconds from asking for the page
    to the screenshot that shows them (the screenshot's own time included)."""
    w0 = time.perf_counter()
    p.page.goto(url, wait_until="commit")
    t, ink = wait_ink(p, key, MIN_POINT_INK, timeout_s)
    return {"s": t - w0, "ink": ink}


def sort_clicks(p: Page, clicks: int, until_js: str | None = None, timeout_s: float = 60,
                spacing_s: float = 0.15) -> list[float]:
    """Click the table's loss header `clicks` times (each toggles the order); seconds from each click
    to the table's first row changing. With until_js, stop early once it is true (before a click)."""
    p.page.wait_for_selector("[data-testid=table-body] tr")
    times = []
    for _ in range(clicks):
        if until_js is not None and p.eval(until_js):
            break
        before = p.eval(FIRST_ROW_JS)
        p.page.click("[data-testid=sort-loss]")
        done = p.wait(f"prev => (({FIRST_ROW_JS})() !== prev && ({FIRST_ROW_JS})() !== '') ? performance.now() : false",
                      before, timeout_s=timeout_s)
        clicked = p.eval("() => window.__bench.click")
        times.append((done - clicked) / 1000)
        p.page.wait_for_timeout(spacing_s * 1000)       # let the page settle between clicks
    return times


def lasso(p: Page, timeout_s: float) -> dict:
    """Drag a lasso over the left LASSO_FRAC of the projection; time from release to the selection
    shown in the header and the table reloaded with it."""
    total_before = p.eval(TABLE_TOTAL_JS)
    box = p.page.locator("[data-testid=projection-scatter]").bounding_box()
    x0, y0 = box["x"] + 4, box["y"] + 4
    x1, y1 = box["x"] + box["width"] * LASSO_FRAC, box["y"] + box["height"] - 4
    mouse = p.page.mouse
    d0 = time.perf_counter()
    mouse.move(x0, y0)
    mouse.down()
    for x, y in ((x1, y0), (x1, y1), (x0, y1), (x0, y0 + 2)):
        mouse.move(x, y, steps=LASSO_STEPS)
    drag = time.perf_counter() - d0
    moves = 1 + 4 * LASSO_STEPS
    w0 = time.perf_counter()
    mouse.up()
    done = p.wait("""prev => {
        const chip = document.querySelector('[data-testid=selection-chip]');
        const m = chip && chip.innerText.match(/([\\d,]+)/);
        const total = document.querySelector('[data-testid=table-count]')?.dataset.total ?? '';
        if (!m || total === '' || total === prev) return false;
        return {t: performance.now(), n: Number(m[1].replace(/,/g, '')), total: Number(total)};
    }""", total_before, timeout_s=timeout_s)
    wall = time.perf_counter() - w0
    released = p.eval("() => window.__bench.mouseup")
    return {"s": (done["t"] - released) / 1000, "wall_s": wall, "drag_s": drag, "move_s": drag / moves,
            "selected": done["n"], "table_total": done["total"], "table_total_before": total_before}


def clear_selection(p: Page, n: int, timeout_s: float) -> None:
    if p.page.locator("[data-testid=selection-chip] button").count():
        p.page.click("[data-testid=selection-chip] button")
    p.wait("n => document.querySelector('[data-testid=table-count]')?.dataset.total === String(n)", n,
           timeout_s=timeout_s)


# -- the measurements -----------------------------------------------------------------------------

def measure_run(browser, server: BackgroundServer, name: str, n: int, clicks: int,
                timeout_s: float) -> tuple[Page, dict]:
    """First render, idle sort clicks and a lasso on one run; the page is left open."""
    p = Page(browser, timeout_s)
    key = f"{name}|{STEP}|{LAYER}|{METHOD}"
    url = f"{server.url}/?run={name}&step={STEP}&layer={LAYER}&method={METHOD}"
    out = {"n": n}
    out["render"] = first_render(p, url, key, timeout_s)
    out["heap_after_render"] = p.heap()
    long_render = p.longtasks()
    out["longest_task_render_s"] = max((d for _, d in long_render), default=0.0) / 1000
    out["longtask_total_render_s"] = sum(d for _, d in long_render) / 1000
    out["api"] = p.api_timings()
    slow = sorted(out["api"].items(), key=lambda kv: -kv[1][1])[:4]
    print(f"[browser] {name}: API answers (start-end s, bytes): "
          + "; ".join(f"{path} {a:.2f}-{b:.2f} {size:,}" for path, (a, b, size) in slow), flush=True)
    print(f"[browser] {name} ({n:,} pts): first render {out['render']['s']:.2f}s "
          f"({out['render']['ink']:,} ink px), longest task "
          f"{out['longest_task_render_s']:.2f}s, JS heap {(out['heap_after_render'] or 0) / 2**20:.0f} MiB", flush=True)
    with contextlib.suppress(Exception):  # heads, curves or the data map still loading: measure anyway
        p.page.wait_for_load_state("networkidle", timeout=min(timeout_s, 60) * 1000)
    p.wait(f"() => ({TABLE_TOTAL_JS})() === '{n}'", timeout_s=timeout_s)
    out["sort_idle"] = sort_clicks(p, clicks, timeout_s=timeout_s)
    print(f"[browser] {name}: table sort click -> rows {', '.join(f'{t * 1000:.0f}' for t in out['sort_idle'])} ms",
          flush=True)
    t_lasso = p.eval("() => performance.now()")
    out["lasso"] = lasso(p, timeout_s)
    # the page's work for the lasso goes on after the table shows it (the plots repaint the
    # selection): its long tasks count too
    p.page.wait_for_timeout(LASSO_SETTLE_S * 1000)
    long_lasso = p.longtasks(t_lasso)
    out["longest_task_lasso_s"] = max((d for _, d in long_lasso), default=0.0) / 1000
    out["heap_after_lasso"] = p.heap()
    la = out["lasso"]
    print(f"[browser] {name}: lasso {la['s']:.2f}s after release (wall {la['wall_s']:.2f}s; drag {la['drag_s']:.2f}s, "
          f"{la['move_s'] * 1000:.0f} ms a mouse move), {la['selected']:,} selected, table {la['table_total']:,}, "
          f"longest task {out['longest_task_lasso_s']:.2f}s", flush=True)
    out["errors"] = list(p.errors)
    return p, out


def measure_busy(p: Page, name: str, n: int, busy_method: str, clicks: int, timeout_s: float,
                 compute_timeout_s: float) -> dict:
    """On an open page of run `name`: ask for an uncached projection, click the table while the
    server computes it, wait for it to be drawn, click again."""
    clear_selection(p, n, timeout_s)
    loading = ("() => !!document.querySelector('[data-testid=projection-view] [data-testid=panel-loading]')"
               " || !!document.querySelector('[data-testid=projection-view] [aria-busy=true]')")
    t0 = time.perf_counter()
    p.page.click(f"[data-testid=method-picker] button:has-text('{METHOD_LABELS[busy_method]}')")
    p.wait(loading, timeout_s=timeout_s)
    busy = sort_clicks(p, 2 * clicks, until_js=f"() => !({loading})()", timeout_s=timeout_s, spacing_s=BUSY_SPACING_S)
    still_busy = p.eval(loading)
    key = f"{name}|{STEP}|{LAYER}|{busy_method}"
    t_drawn, _ = wait_ink(p, key, MIN_POINT_INK, compute_timeout_s)
    compute_s = t_drawn - t0
    print(f"[browser] {name}: {busy_method} computed and drawn {compute_s:.1f}s after the click; table sort "
          f"while computing {', '.join(f'{t * 1000:.0f}' for t in busy)} ms"
          + ("" if still_busy else " (the job finished before all clicks)"), flush=True)
    p.page.wait_for_timeout(300)
    after = sort_clicks(p, clicks, timeout_s=timeout_s)
    print(f"[browser] {name}: table sort idle again {', '.join(f'{t * 1000:.0f}' for t in after)} ms", flush=True)
    return {"busy": busy, "idle_after": after, "compute_s": compute_s, "busy_method": busy_method,
            "errors": list(p.errors)}


def bundle_rows() -> list[dict]:
    rows, total_raw, total_gz = [], 0, 0
    for ext in ("js", "css"):
        files = sorted((STATIC / "assets").glob(f"*.{ext}"))
        raw = sum(f.stat().st_size for f in files)
        gz = sum(len(gzip.compress(f.read_bytes(), compresslevel=9)) for f in files)
        total_raw, total_gz = total_raw + raw, total_gz + gz
        detail = {"files": [f.name for f in files]}
        rows.append(C.result(BENCH, f"bundle {ext.upper()} bytes", raw, "B", detail=detail))
        rows.append(C.result(BENCH, f"bundle {ext.upper()} bytes, gzip -9", gz, "B"))
    rows.append(C.result(BENCH, "bundle JS+CSS bytes", total_raw, "B"))
    rows.append(C.result(BENCH, "bundle JS+CSS bytes, gzip -9", total_gz, "B"))
    print(f"[browser] bundle: {total_raw:,} B, {total_gz:,} B gzipped", flush=True)
    return rows


def main() -> list[dict]:
    n_big = C.env_int("T3VIS_BENCH_BROWSER_N", 1_000_000)
    n_base = C.env_int("T3VIS_BENCH_BROWSER_BASE_N", 10_000)
    clicks = C.env_int("T3VIS_BENCH_BROWSER_CLICKS", 5)
    busy_method = C.env_str("T3VIS_BENCH_BROWSER_BUSY_METHOD", "tsne")
    if busy_method not in METHOD_LABELS or busy_method == METHOD:
        raise Unavailable(f"T3VIS_BENCH_BROWSER_BUSY_METHOD must be one of umap, tsne; got {busy_method!r}")
    preflight()
    from playwright.sync_api import sync_playwright

    from t3vis.server import create_app

    rows = bundle_rows()
    timeout_s = max(60.0, 180.0 * n_big / 1_000_000)
    with tempfile.TemporaryDirectory(prefix="t3vis-bench-browser-") as tmp:
        folder = Path(tmp)
        big_dir = make_run(folder, "big", n_big)
        base_dir = make_run(folder, "base", n_base)
        server = BackgroundServer(create_app([big_dir, base_dir], static_dir=STATIC))
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
                try:
                    # baseline first, then the big run, then the baseline again: its first render is the
                    # median of both (a warm server and browser cache helps the second alike)
                    p, base = measure_run(browser, server, "base", n_base, clicks, timeout_s)
                    p.close()
                    p, big = measure_run(browser, server, "big", n_big, clicks, timeout_s)
                    p.close()
                    p, base2 = measure_run(browser, server, "base", n_base, clicks, timeout_s)
                    try:
                        busy = measure_busy(p, "base", n_base, busy_method, clicks, timeout_s, compute_timeout_s=300)
                    finally:
                        p.close()
                finally:
                    browser.close()
        finally:
            server.stop()

    base_render = C.median([base["render"]["s"], base2["render"]["s"]])
    base_lasso = C.median([base["lasso"]["s"], base2["lasso"]["s"]])
    base_sort = C.median(base["sort_idle"] + base2["sort_idle"])
    big_sort = C.median(big["sort_idle"])
    idle = base2["sort_idle"] + busy["idle_after"]
    idle_p50 = C.median(idle)
    busy_p50 = C.median(busy["busy"]) if busy["busy"] else float("nan")
    nb = f"{n_big:,}"
    errors = big["errors"] + base["errors"] + base2["errors"] + busy["errors"]
    if errors:
        print(f"[browser] console errors: {errors[:10]}", flush=True)
    detail = {"big": big, "base": [base, base2], "loadavg": C.loadavg(), "console_errors": errors}
    # no heap figure (a Chromium without precise memory info) cannot pass the memory target
    heap = float("nan") if big["heap_after_render"] is None else float(big["heap_after_render"])
    rows += [
        C.result(BENCH, f"first render, {nb} points", big["render"]["s"], "s", target=TARGETS["render_s"],
                 detail=detail),
        C.result(BENCH, f"first render {nb} / {n_base:,} points", big["render"]["s"] / base_render, "x",
                 detail={"base_s": [base["render"]["s"], base2["render"]["s"]]}),
        C.result(BENCH, f"longest main-thread task, load through lasso, {nb} points",
                 max(big["longest_task_render_s"], big["longest_task_lasso_s"]), "s", target=TARGETS["longest_task_s"],
                 detail={"render_s": big["longest_task_render_s"], "lasso_s": big["longest_task_lasso_s"]}),
        C.result(BENCH, f"JS heap after first render, {nb} points", heap, "B"),
        C.result(BENCH, f"JS heap per point after first render, {nb} points", heap / n_big, "B/pt",
                 target=TARGETS["heap_per_point"], detail={"heap_reported": big["heap_after_render"] is not None}),
        C.result(BENCH, f"lasso release -> selection + table, {nb} points", big["lasso"]["s"], "s",
                 target=TARGETS["lasso_s"],
                 detail={"selected": big["lasso"]["selected"], "table_total": big["lasso"]["table_total"],
                         "drag_s": big["lasso"]["drag_s"]}),
        C.result(BENCH, f"lasso {nb} / {n_base:,} points", big["lasso"]["s"] / base_lasso, "x",
                 detail={"base_s": [base["lasso"]["s"], base2["lasso"]["s"]],
                         "base_selected": [base["lasso"]["selected"], base2["lasso"]["selected"]]}),
        C.result(BENCH, f"lasso drag: time per mouse move, {nb} points", big["lasso"]["move_s"], "s",
                 target=TARGETS["lasso_move_s"]),
        C.result(BENCH, f"lasso drag per move {nb} / {n_base:,} points",
                 big["lasso"]["move_s"] / C.median([base["lasso"]["move_s"], base2["lasso"]["move_s"]]), "x"),
        C.result(BENCH, f"table sort click -> rows p50, {nb} rows", big_sort, "s", detail={"times": big["sort_idle"]}),
        C.result(BENCH, f"table sort {nb} / {n_base:,} rows", big_sort / base_sort, "x", target=TARGETS["sort"],
                 detail={"base_times": base["sort_idle"] + base2["sort_idle"]}),
        C.result(BENCH, f"table sort p50 while {busy_method} computes ({n_base:,} points)", busy_p50, "s",
                 detail={"busy": busy["busy"], "idle": idle, "compute_s": busy["compute_s"]}),
        C.result(BENCH, f"table sort while {busy_method} computes / idle", busy_p50 / idle_p50, "x",
                 target=TARGETS["busy"],
                 detail={"idle_p50": idle_p50}),
        C.result(BENCH, f"{busy_method} of {n_base:,} points: click -> drawn", busy["compute_s"], "s"),
    ]
    return rows


if __name__ == "__main__":
    try:
        C.standalone(main)
    except Unavailable as e:
        raise SystemExit(f"bench_browser cannot run: {e}") from None
