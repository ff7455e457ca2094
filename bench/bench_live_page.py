"""Following a run while it trains, in the real page: how soon after a checkpoint lands does the open
page show it, and draw its layout?

A writer process fine-tunes the demo model (all-MiniLM-L6-v2 with a fresh 2-class head, on demo
sentences) with a plain PyTorch loop and t3vis.Recorder, training without pause once its first
checkpoint is recorded. The viewer serves the run from another process (create_app + uvicorn, as
`t3vis serve` runs it) and headless Chromium has the page open on it, on the last layer with UMAP
(the layout the server lays out in the background for every new checkpoint), following the latest
checkpoint (the page opens on the latest, so "follow latest" is on). The bench asks the writer for
each new checkpoint once the page is done with the one before (and at least --every seconds after
it), so that every measure below is of one checkpoint at a time, while training runs.

The landing moment is the rename of the checkpoint's staging folder to checkpoints/step-NNNNNNNN
(store/atomic.py, staged_directory: os.replace(staging, final)), detected from the writer's side
twice: a thread of this process lists the checkpoints folder every 5 ms and stamps each step-*
name when it first sees it, and the writer stamps the snapshot's return (one fsync of the folder
after the rename). The rename came before both, so the earlier of the two is taken (they differ
by a few ms; the gap is in the detail, seen_after_return_s). In the page, a MutationObserver
installed before the app starts stamps the frame that first shows each checkpoint count on the
slider ([data-testid=checkpoint-slider] max) and each projection key the plot says it drew
([data-testid=projection-plot] data-drawn, set once the scatter has drawn that
run|step|layer|method, its 900 ms transition from the layout before included). Stamps are
Date.now() in the page against time.time() here: one machine, one clock. The page's resource
timings also give when it asked for the new layout and when the answer (200) came, and a wrapped
fetch keeps what the server said meanwhile: a job already running at the page's first ask for the
layout was started by the background (the page's own job answers "queued" first).

1. Checkpoint landed -> the slider shows it, per checkpoint, without a reload (target: the max
   <= 2 s, the issue's "within 2 s of the checkpoint landing"). Baseline: what a user did before,
   a reload: a second page (same browser, its cache warm) navigates to the viewer's URL once the
   checkpoint is in, timed from the start of navigation to its slider showing that checkpoint.
2. Checkpoint landed -> its projection (last layer, UMAP) drawn in the following page (target: the
   max <= 60 s, the issue's "a user never waits for the layout of a checkpoint that landed more
   than a minute earlier"). Baseline: a cold layout request, after the last checkpoint, for that
   checkpoint at a layer neither the page nor the background laid out (the last layer but one,
   UMAP, aligned to the previous checkpoint as the page asks): timed to its 200, it lays out the
   chain of that layer's checkpoints, as a user opening a combo nobody followed waits for it. The
   ratios to it are shown without a target (see below). Also shown: the time to the page having
   the layout (its request answered) against the same cold request; a cold layout in the page, like
   for like (a click on the layer picker, the last layer but two, to its layout drawn: the same
   status poll and transition around the same chain), and one layout alone (the first checkpoint at
   the last layer but three, cold).

At the defaults (150 probe sentences) a layout takes the server about a second or less, so the
page's own cadence sets the time to a drawn layout: noticing the checkpoint (the 700 ms version
poll), the 500 ms poll of the projection's status, then the 900 ms transition. A cold request for
a 5-checkpoint chain takes about as long or less (measured: 0.76-3.9 s against 2.6-4.1 s drawn), so
"faster than cold" is not a target on 2 cores: it holds only where a layout costs more than that
cadence. The like-for-like ratio
(against the cold layout in the page, the same cadence around it) says whether following saves
the user any wait.

The first checkpoint (step 0) opens the page and warms it up (the server's first UMAP compiles its
kernels); it is not counted. Console errors in either page (Chromium's "GPU stall" notes aside, as
tests/browser) make their own row MISS. Every process and temporary folder is removed at the end.

    .venv/bin/python bench/bench_live_page.py [--n 150] [--checkpoints 4] [--every 3] [--screenshot PNG]

Environment (used by run_all): T3VIS_BENCH_LIVE_PAGE_N (probe sentences, 150),
T3VIS_BENCH_LIVE_PAGE_CHECKPOINTS (new checkpoints measured, 4), T3VIS_BENCH_LIVE_PAGE_EVERY (the
least seconds between checkpoints, 3), T3VIS_STATIC_DIR (a viewer built elsewhere; default the
package's, from `make frontend`), T3VIS_CHROMIUM (/usr/bin/chromium).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C
from bench_browser import CHROMIUM, CHROMIUM_ARGS, Unavailable

BENCH = "live_page"
RUN = "live"
STATIC = Path(os.environ.get("T3VIS_STATIC_DIR") or C.REPO / "src" / "t3vis" / "server" / "static")
VIEWPORT = {"width": 1400, "height": 900}
SLIDER_TARGET_S = 2.0
LAYOUT_TARGET_S = 60.0
WATCH_S = 0.005                       # how often the checkpoints folder is listed
SLIDER_TIMEOUT_S = 30.0               # a checkpoint not on the slider by then counts as never shown
LAYOUT_TIMEOUT_S = 180.0              # likewise for its layout
WARMUP_TIMEOUT_S = 300.0              # the first page and UMAP (kernels compile) on a busy machine
BATCH = 16
TRAIN_SENTENCES = 400

# The writer: records the run in argv[1] with argv[2] probe sentences; each "snap" line on stdin
# records a checkpoint at the next step boundary (one JSON line on stdout when it returns), "stop"
# closes the run. It trains without pause once its first checkpoint is in.
WRITER = textwrap.dedent(f"""
    import json, sys, threading, time
    sys.path.insert(0, {str(C.BENCH_DIR)!r})
    import torch
    import _common as C
    from t3vis import Recorder

    run, n = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(0)
    model, tokenizer = C.load_model("cpu")
    texts, labels = C.demo_texts(n + {TRAIN_SENTENCES}, seed=5)
    train_texts, train_labels = texts[n:], labels[n:]
    rec = Recorder(run, model, tokenizer, texts[:n], labels[:n], batch_size=64, keep_weights="none")
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    orders = []
    def listen():
        for line in sys.stdin:
            orders.append(line.strip())
        orders.append("stop")
    threading.Thread(target=listen, daemon=True).start()
    print(json.dumps({{"ready": time.time()}}), flush=True)
    step, trained, recorded = 0, 0, False
    while True:
        if orders:
            order = orders.pop(0)
            if order == "stop":
                break
            started = time.time()
            rec.snapshot(step=step)
            print(json.dumps({{"step": step, "started": started, "returned": time.time(), "trained": trained}}),
                  flush=True)
            trained, recorded = 0, True
        elif not recorded:                   # the first checkpoint is the untrained model
            time.sleep(0.02)
            continue
        rows = [(step * {BATCH} + j) % len(train_texts) for j in range({BATCH})]
        enc = tokenizer([train_texts[r] for r in rows], padding=True, truncation=True, max_length=64,
                        return_tensors="pt")
        gold = torch.tensor([train_labels[r] for r in rows])
        logits = model(**enc).logits
        rec.observe(torch.tensor(rows), logits, gold, step=step)
        loss = torch.nn.functional.cross_entropy(logits, gold)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step, trained = step + 1, trained + 1
    rec.close()
    print(json.dumps({{"done": time.time()}}), flush=True)
""")

# The viewer, as `t3vis serve RUN` runs it (create_app + uvicorn), with the static folder chosen.
SERVER = textwrap.dedent("""
    import sys
    import uvicorn
    from t3vis.server import create_app
    from t3vis.server.launch import bind

    run, static = sys.argv[1], sys.argv[2]
    sock = bind("127.0.0.1", 0)
    print(sock.getsockname()[1], flush=True)
    app = create_app([run], static_dir=static)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=3)).run(sockets=[sock])
""")

# In the page, before the app starts: when (Date.now(), and the page's own clock from the start of
# navigation) a frame first showed each checkpoint count on the slider and each drawn projection key;
# the last click; what the server said about each layout the page waited for; room for every
# request's timing.
WATCH_PAGE = """
window.__live = {count: {}, drawn: {}, jobs: {}, click: null};
addEventListener('click', () => { window.__live.click = Date.now() / 1000; }, true);
performance.setResourceTimingBufferSize(100000);
// what the server said (status, message) while a layout was computing (202): whose job the page waited on
const pageFetch = window.fetch;
window.fetch = function (input, init) {
  const answer = pageFetch.call(this, input, init);
  const url = String(input?.url ?? input);
  if (url.includes('/projection?')) {
    const said = (window.__live.jobs[url.slice(url.indexOf('api/') + 4)] ??= []);
    answer.then((r) => r.status === 202 && r.clone().json().then((s) => said.push([s.status, s.message])))
      .catch(() => {});
  }
  return answer;
};
const note = () => {
  const slider = document.querySelector('[data-testid=checkpoint-slider]');
  const count = !slider ? null : slider.disabled ? 0 : Number(slider.max) + 1;
  const drawn = document.querySelector('[data-testid=projection-plot]')?.getAttribute('data-drawn') || '';
  const fresh = [];
  if (count !== null && !(count in window.__live.count)) fresh.push(['count', count]);
  if (drawn && !(drawn in window.__live.drawn)) fresh.push(['drawn', drawn]);
  for (const [kind, key] of fresh) window.__live[kind][key] = null;     // the frame that shows it stamps it
  if (fresh.length) requestAnimationFrame(() => {
    const stamp = {t: Date.now() / 1000, perf: performance.now() / 1000};
    for (const [kind, key] of fresh) window.__live[kind][key] = stamp;
  });
};
new MutationObserver(note).observe(document, {subtree: true, childList: true, attributes: true,
                                              attributeFilter: ['max', 'disabled', 'data-drawn']});
setInterval(note, 50);      // a safety net; the observer stamps first
"""

SHOWN_COUNT_JS = "n => window.__live.count[n] || false"
# the stamp of the first drawn key for run|step|layer|method (a stack or alignment may follow it)
DRAWN_STAMP_JS = """key => {
  const hit = Object.entries(window.__live.drawn).find(([k, v]) => v && (k === key || k.startsWith(key + '|')));
  return hit ? hit[1] : false;
}"""


def preflight() -> None:
    if not Path(CHROMIUM).exists():
        raise Unavailable(f"chromium is missing at {CHROMIUM}: `apt-get update && apt-get install -y chromium` "
                          "(Debian), or point T3VIS_CHROMIUM at a Chromium binary")
    if not (STATIC / "index.html").exists():
        raise Unavailable(f"the viewer is not built ({STATIC / 'index.html'} is missing): run `make frontend`")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        raise Unavailable("playwright is not installed in this Python: `pip install -e '.[dev]'`") from None


# -- the processes around the page ----------------------------------------------------------------

class Child:
    """A Python child process whose stdout lines are read in a thread (so reads can time out) and
    whose stderr goes to a file (its last lines explain a failure). It ends with this process."""

    def __init__(self, script: str, args: list[str], log: Path):
        self.log = log
        with open(log, "wb") as errors:
            self.process = subprocess.Popen([sys.executable, "-c", script, *args], cwd=C.REPO, text=True,
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
                                            preexec_fn=_ends_with_parent)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def line(self, timeout_s: float) -> str:
        try:
            line = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            raise RuntimeError(f"no word from the child in {timeout_s:.0f}s: {self.stderr()}") from None
        if line is None:
            raise RuntimeError(f"the child ended ({self.process.wait()}): {self.stderr()}")
        return line

    def send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def stderr(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self, grace_s: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def _ends_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)       # PR_SET_PDEATHSIG: no child outlives a killed bench


class Writer(Child):
    def snapshot(self, timeout_s: float = 120.0) -> dict:
        self.send("snap")
        return json.loads(self.line(timeout_s))

    def finish(self, timeout_s: float = 60.0) -> None:
        self.send("stop")
        while "done" not in json.loads(self.line(timeout_s)):
            pass


class Server(Child):
    def __init__(self, run_dir: Path, log: Path, start_timeout_s: float = 60.0):
        super().__init__(SERVER, [str(run_dir), str(STATIC)], log)
        try:
            port = int(self.line(start_timeout_s))
            self.url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + start_timeout_s
            while True:
                try:
                    with urllib.request.urlopen(f"{self.url}/api/runs", timeout=2):
                        return
                except OSError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"the viewer did not start: {self.stderr()}") from None
                    time.sleep(0.1)
        except BaseException:
            self.stop()
            raise

    def get_json(self, path: str):
        with urllib.request.urlopen(f"{self.url}{path}", timeout=30) as r:
            return json.loads(r.read())

    def projection_s(self, step: int, layer: int, method: str = "umap", timeout_s: float = 600.0) -> float:
        """Seconds from asking for a layout (aligned to the previous checkpoint, as the page asks)
        to its 200, polling its status every 100 ms."""
        url = (f"{self.url}/api/runs/{RUN}/checkpoints/{step}/projection?layer={layer}&method={method}"
               "&aligned=true&align=previous")
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout_s:
            with urllib.request.urlopen(url, timeout=60) as r:
                body = r.read()
                if r.status == 200:
                    return time.perf_counter() - t0
            status = json.loads(body)
            if status.get("status") == "failed":
                raise RuntimeError(f"layer {layer} {method} at step {step} failed: {status.get('message')}")
            time.sleep(0.1)
        raise RuntimeError(f"layer {layer} {method} at step {step} not laid out in {timeout_s:.0f}s")


class Landings(threading.Thread):
    """When each checkpoint folder was renamed into place: listed every WATCH_S (time.time())."""

    def __init__(self, run_dir: Path):
        super().__init__(daemon=True)
        self.folder = run_dir / "checkpoints"
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                names = [e.name for e in os.scandir(self.folder) if e.name.startswith("step-")]
            except FileNotFoundError:
                names = []
            now = time.time()
            for name in names:
                self.seen.setdefault(name, now)
            self.stop.wait(WATCH_S)

    def of(self, step: int, timeout_s: float = 5.0) -> float:
        name = f"step-{step:08d}"
        deadline = time.monotonic() + timeout_s
        while name not in self.seen:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.folder / name} never appeared although its snapshot returned")
            time.sleep(WATCH_S)
        return self.seen[name]


# -- the pages ---------------------------------------------------------------------------------------

class Page:
    def __init__(self, browser):
        self.context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
        self.context.add_init_script(WATCH_PAGE)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("crash", lambda _: self.errors.append("page crashed"))

    def stamp(self, js: str, arg, timeout_s: float) -> dict | None:
        """The stamp `js` returns once truthy (polled every frame); None when it never came."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            return self.page.wait_for_function(js, arg=arg, polling="raf", timeout=timeout_s * 1000).json_value()
        except PlaywrightTimeout:
            return None

    def console_errors(self) -> list[str]:
        return [e for e in self.errors if "GPU stall" not in e]


# The page's API requests since `since` (time.time()): [path and query, start, end] in seconds after `since`.
API_SINCE_JS = """since => performance.getEntriesByType('resource').filter(e => e.name.includes('/api/'))
  .map(e => [e.name.split('/api/')[1], (performance.timeOrigin + e.startTime) / 1000 - since,
             (performance.timeOrigin + e.responseEnd) / 1000 - since])
  .filter(e => e[1] >= 0 && !e[0].endsWith('/version'))"""


def layout_path(step: int, layer: int) -> str:
    """The start of the page's request for a step's layout, after /api/."""
    return f"runs/{RUN}/checkpoints/{step}/projection?layer={layer}&method=umap&"


def layout_requests(api: list, step: int, layer: int) -> dict:
    """When the page first asked for the step's layout and when its last ask (the 200) was answered,
    in seconds after the landing (inf: never)."""
    asks = [(a, b) for path, a, b in api if path.startswith(layout_path(step, layer))]
    return {"layout_asked_s": min((a for a, _ in asks), default=float("inf")),
            "layout_answered_s": max((b for _, b in asks), default=float("inf"))}


def drawn_key(step: int, layer: int) -> str:
    return f"{RUN}|{step}|{layer}|umap"


def cold_in_page_s(p: Page, step: int, layer: int) -> float:
    """Seconds from a click on the layer picker to that layer's layout drawn, for a layer nobody
    laid out: the page's own costs (its status poll, the transition) around a cold layout."""
    p.page.get_by_test_id("layer-picker").get_by_role("radio", name=str(layer), exact=True).click()
    drawn = p.stamp(DRAWN_STAMP_JS, drawn_key(step, layer), LAYOUT_TIMEOUT_S)
    return drawn["t"] - p.page.evaluate("() => window.__live.click") if drawn else float("inf")


def fresh_load_s(p: Page, url: str, count: int) -> float:
    """Seconds from the start of navigating to `url` to the slider showing `count` checkpoints."""
    p.page.goto(url, wait_until="commit")
    got = p.stamp(SHOWN_COUNT_JS, count, SLIDER_TIMEOUT_S)
    seconds = got["perf"] if got else float("inf")
    p.page.goto("about:blank")                      # no second page polling and loading beside the live one
    return seconds


# -- the measurement ---------------------------------------------------------------------------------

def measure(folder: Path, n: int, checkpoints: int, every_s: float, screenshot: Path | None) -> dict:
    from playwright.sync_api import sync_playwright

    run_dir = folder / "runs" / RUN
    run_dir.parent.mkdir(parents=True)
    with contextlib.ExitStack() as cleanup:               # every child ends, whatever fails
        writer = Writer(WRITER, [str(run_dir), str(n)], folder / "writer.log")
        cleanup.callback(writer.stop)
        server = Server(run_dir, folder / "server.log")    # starts while the writer loads its model
        cleanup.callback(server.stop)
        landings = Landings(run_dir)
        landings.start()
        cleanup.callback(landings.stop.set)
        writer.line(timeout_s=300)                          # the model is loaded
        first = writer.snapshot()
        pw = cleanup.enter_context(sync_playwright())
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        cleanup.callback(browser.close)
        out = follow(browser, server, writer, landings, f"{server.url}/?run={RUN}&method=umap", first,
                     checkpoints, every_s, screenshot)
        writer.finish()
    return out


def follow(browser, server: Server, writer: Writer, landings: Landings, url: str, first: dict,
           checkpoints: int, every_s: float, screenshot: Path | None) -> dict:
    layer = int(server.get_json(f"/api/runs/{RUN}")["num_layers"])
    live, fresh = Page(browser), Page(browser)
    t0 = time.perf_counter()
    live.page.goto(url)
    live.page.wait_for_selector("[data-testid=views]", timeout=WARMUP_TIMEOUT_S * 1000)
    if not live.page.is_checked("[data-testid=follow-latest]"):
        raise RuntimeError("the page opened on the latest checkpoint does not follow the latest")
    if live.stamp(DRAWN_STAMP_JS, drawn_key(first["step"], layer), WARMUP_TIMEOUT_S) is None:
        raise RuntimeError(f"the first checkpoint's UMAP was not drawn within {WARMUP_TIMEOUT_S:.0f}s")
    warmup_s = time.perf_counter() - t0
    fresh_load_s(fresh, url, 1)                             # warms the second page's cache; not counted
    print(f"[live_page] page open on step {first['step']} with its UMAP drawn in {warmup_s:.1f}s "
          f"(layer {layer}); following", flush=True)

    rows, last = [], time.time()
    for count in range(2, checkpoints + 2):
        time.sleep(max(0.0, every_s - (time.time() - last)))
        row = new_checkpoint(live, fresh, writer, landings, url, count, layer)
        rows.append(row)
        last = row["landed"]
    if screenshot is not None:                               # the page as it follows, to look at
        live.page.screenshot(path=str(screenshot))

    # cold layouts, training still running: the last checkpoint at a layer nobody laid out (its
    # chain of every checkpoint), asked of the server and in the page, and one layout alone (the
    # first checkpoint, a third such layer)
    last_step = rows[-1]["step"] if rows else first["step"]
    cold_chain_s = server.projection_s(last_step, layer - 1)
    cold_page_s = cold_in_page_s(live, last_step, layer - 2)
    cold_one_s = server.projection_s(first["step"], layer - 3)
    print(f"[live_page] cold layout of step {last_step} (a chain of {checkpoints + 1}): asked of the server (layer "
          f"{layer - 1}) {cold_chain_s:.2f}s, in the page (layer {layer - 2}, click to drawn) {cold_page_s:.2f}s; "
          f"one layout alone (layer {layer - 3}, step {first['step']}): {cold_one_s:.2f}s",
          flush=True)
    errors = live.console_errors() + fresh.console_errors()
    live.context.close()
    fresh.context.close()
    return {"checkpoints": rows, "layer": layer, "warmup_s": warmup_s, "cold_chain_s": cold_chain_s,
            "cold_page_s": cold_page_s, "cold_one_s": cold_one_s, "chain_length": checkpoints + 1,
            "console_errors": errors}


def new_checkpoint(live: Page, fresh: Page, writer: Writer, landings: Landings, url: str, count: int,
                   layer: int) -> dict:
    """Have the writer record the run's `count`-th checkpoint; time it to the following page's slider
    and to its layout drawn there, then a fresh page load to its slider."""
    snap = writer.snapshot()
    seen = landings.of(snap["step"])
    landed = min(seen, snap["returned"])                      # the rename came before both
    shown = live.stamp(SHOWN_COUNT_JS, count, SLIDER_TIMEOUT_S)
    drawn = live.stamp(DRAWN_STAMP_JS, drawn_key(snap["step"], layer), LAYOUT_TIMEOUT_S)
    api = live.page.evaluate(API_SINCE_JS, landed)
    jobs = live.page.evaluate("() => window.__live.jobs")
    said = [m for path, messages in jobs.items() if path.startswith(layout_path(snap["step"], layer))
            for m in messages]
    row = {"step": snap["step"], "landed": landed, "trained_steps_before": snap["trained"],
           "snapshot_s": snap["returned"] - snap["started"], "seen_after_return_s": seen - snap["returned"],
           "slider_s": shown["t"] - landed if shown else float("inf"),
           "layout_s": drawn["t"] - landed if drawn else float("inf"),
           **layout_requests(api, snap["step"], layer),
           "joined_running_job": bool(said) and said[0][0] == "running", "job_statuses": said,
           "api": [[path, round(a, 3), round(b, 3)] for path, a, b in api],
           "fresh_load_s": fresh_load_s(fresh, url, count)}
    print(f"[live_page] step {row['step']} ({row['trained_steps_before']} training steps after the one before, "
          f"snapshot {row['snapshot_s']:.1f}s): on the slider {row['slider_s']:.2f}s after the rename; its layout "
          f"asked {row['layout_asked_s']:.2f}s, answered {row['layout_answered_s']:.2f}s, drawn "
          f"{row['layout_s']:.2f}s{' (joined the background job)' if row['joined_running_job'] else ''}; "
          f"a fresh load shows it in {row['fresh_load_s']:.2f}s", flush=True)
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=C.env_int("T3VIS_BENCH_LIVE_PAGE_N", 150), help="probe sentences")
    p.add_argument("--checkpoints", type=int, default=C.env_int("T3VIS_BENCH_LIVE_PAGE_CHECKPOINTS", 4),
                   help="new checkpoints measured (after the first, which opens the page)")
    p.add_argument("--screenshot", type=Path, help="save the following page here (PNG) at the end")
    p.add_argument("--every", type=float, default=float(C.env_str("T3VIS_BENCH_LIVE_PAGE_EVERY", "3")),
                   help="the least seconds between two checkpoints")
    args = p.parse_args([] if argv is None else argv)
    if args.checkpoints < 1 or args.n < 20:
        raise SystemExit("--checkpoints must be at least 1 and --n at least 20")
    preflight()

    with tempfile.TemporaryDirectory(prefix="t3vis-bench-live-page-") as tmp:
        out = measure(Path(tmp), args.n, args.checkpoints, args.every, args.screenshot)

    each = out["checkpoints"]
    slider = [c["slider_s"] for c in each]
    drawn = [c["layout_s"] for c in each]
    answered = [c["layout_answered_s"] for c in each]
    fresh = [c["fresh_load_s"] for c in each]
    cold, layer, errors = out["cold_chain_s"], out["layer"], out["console_errors"]
    if errors:
        print(f"[live_page] console errors: {errors[:10]}", flush=True)
    detail = {"probe": args.n, "checkpoints": each, "every_s": args.every, "warmup_s": out["warmup_s"],
              "loadavg": C.loadavg()}
    slider_med, fresh_med = C.median(slider), C.median(fresh)
    return [
        C.result(BENCH, "checkpoint renamed in -> on the page's slider, live (max)", max(slider), "s",
                 target=SLIDER_TARGET_S, detail={**detail, "each_s": slider}),
        C.result(BENCH, "checkpoint renamed in -> on the page's slider, live (median)", slider_med, "s"),
        C.result(BENCH, "fresh page load -> its slider shows the checkpoint (median; the reload of before)",
                 fresh_med, "s", detail={"each_s": fresh}),
        C.result(BENCH, "on the slider: live (median) / fresh page load (median)", slider_med / fresh_med, "x"),
        C.result(BENCH, f"checkpoint renamed in -> its layout drawn, following (UMAP, layer {layer}; max)",
                 max(drawn), "s", target=LAYOUT_TARGET_S, detail={"each_s": drawn}),
        C.result(BENCH, "checkpoint renamed in -> its layout drawn, following (median)", C.median(drawn), "s"),
        C.result(BENCH, "checkpoint renamed in -> the page has its layout (projection answered; max)", max(answered),
                 "s", detail={"each_s": answered, "asked_s": [c["layout_asked_s"] for c in each]}),
        C.result(BENCH, f"cold layout request: the last checkpoint at layer {layer - 1} (UMAP, a chain of "
                 f"{out['chain_length']})", cold, "s"),
        C.result(BENCH, f"cold layout in the page: layer picker click -> drawn (layer {layer - 2}, a chain of "
                 f"{out['chain_length']})", out["cold_page_s"], "s"),
        C.result(BENCH, f"cold layout request: one layout alone (layer {layer - 3}, first checkpoint)",
                 out["cold_one_s"], "s"),
        C.result(BENCH, "layout drawn, following (max) / cold layout request", max(drawn) / cold, "x"),
        C.result(BENCH, "layout answered, following (max) / cold layout request", max(answered) / cold, "x"),
        C.result(BENCH, "layout drawn, following (max) / cold layout in the page", max(drawn) / out["cold_page_s"],
                 "x"),
        C.result(BENCH, "console errors in the pages", len(errors), "errors", target=0,
                 detail={"errors": errors[:20]}),
    ]


if __name__ == "__main__":
    try:
        C.standalone(lambda: main(sys.argv[1:]))
    except Unavailable as e:
        raise SystemExit(f"bench_live_page cannot run: {e}") from None
