"""The page follows a run while it trains (issue 14), for real: a writer process records a tiny
run, a checkpoint every ~3 s, into a folder that does not exist when the server starts; the page,
opened before anything was recorded, says it waits, opens the run by itself, grows its
checkpoint slider within 2 s of each checkpoint landing (no reload), follows the latest
checkpoint or counts the new ones in a badge, keeps earlier layouts bit-identical, and says so
when the run is truncated and when it is deleted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from t3vis.server.launch import BackgroundServer

from .browser_support import ROOT, assert_no_console_errors, wait_projection

pytestmark = pytest.mark.browser

STEPS = (0, 2, 4, 6)
SNAPSHOT_EVERY_S = 3.0
LANDING_LIMIT_S = 2.0
LAYER = 2                  # make_model("bert"): 2 layers, so hidden layer 2 is the default shown

# Records STEPS into argv[1], a snapshot every SNAPSHOT_EVERY_S or more: snapshot i waits until the
# file argv[2] holds a number above i (the test lets them come as it is ready for them). Prints one
# JSON line per snapshot as it returns.
WRITER = textwrap.dedent(f"""
    import json, sys, time
    from pathlib import Path
    sys.path.insert(0, {str(ROOT / "tests")!r})
    import torch
    from conftest import make_labels, make_model, make_texts
    from t3vis import Recorder

    run, go = Path(sys.argv[1]), Path(sys.argv[2])
    model, tokenizer = make_model("bert", seed=9)
    texts, labels = make_texts(16, seed=31), make_labels(16, seed=31)
    print(json.dumps({{"ready": time.time()}}), flush=True)
    def allowed():
        try:
            return int(go.read_text() or 0)
        except (OSError, ValueError):
            return 0
    while not allowed():
        time.sleep(0.05)
    rec = Recorder(run, model, tokenizer, texts, labels, splits=["train"] * 8 + ["validation"] * 8, batch_size=16,
                   label_names=["negative", "positive"])
    ids, y = torch.arange(8), torch.tensor(labels[:8])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
    steps = {STEPS!r}
    last = None
    for i, step in enumerate(steps):
        for _ in range(step - (steps[i - 1] if i else step)):
            logits = model(**tokenizer(texts[:8], padding=True, return_tensors="pt")).logits
            rec.observe(ids, logits, y)
            loss = torch.nn.functional.cross_entropy(logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if last is not None:
            time.sleep(max(0.0, {SNAPSHOT_EVERY_S} - (time.time() - last)))
        while allowed() <= i:
            time.sleep(0.05)
        rec.snapshot(step=step, epoch=float(i))
        last = time.time()
        print(json.dumps({{"step": step, "returned": last}}), flush=True)
    rec.close()
    print(json.dumps({{"done": time.time()}}), flush=True)
""")

# In the page, from before the app starts: when the checkpoint slider first showed each count of
# checkpoints (Date.now(), the same clock as the writer's time.time()), a marker a reload would
# lose, and how many API requests (the version poll aside) await their answer.
WATCH_SLIDER = """
window.__sliderSeen = {};
window.__notReloaded = true;
window.__apiPending = 0;
const pageFetch = window.fetch;
window.fetch = function (input, init) {
  const url = String(input?.url ?? input);
  const counted = url.includes('api/') && !url.includes('/version');
  if (counted) window.__apiPending++;
  const answer = pageFetch.call(this, input, init);
  return counted ? answer.finally(() => window.__apiPending--) : answer;
};
setInterval(() => {
  const s = document.querySelector('[data-testid=checkpoint-slider]');
  if (!s) return;
  const count = s.disabled ? 0 : Number(s.max) + 1;
  if (!(count in window.__sliderSeen)) window.__sliderSeen[count] = Date.now() / 1000;
}, 15);
"""

PROJECTION_BYTES = """async ([run, step, layer]) => {
  for (;;) {
    const q = `layer=${layer}&method=pca&aligned=true&align=previous`;
    const r = await fetch(`api/runs/${run}/checkpoints/${step}/projection?${q}`);
    if (r.status === 200) return Array.from(new Uint8Array(await r.arrayBuffer()));
    if (r.status !== 202) throw new Error(`projection answered ${r.status}`);
    await new Promise((res) => setTimeout(res, 200));
  }
}"""


def meta_landed(run: Path, step: int) -> float:
    return (run / "checkpoints" / f"step-{step:08d}" / "meta.json").stat().st_mtime


def wait_api_quiet(p, quiet_ms: int = 300):
    """Until no API request (the version poll aside) has awaited its answer for quiet_ms."""
    p.page.wait_for_function("""ms => {
      if (window.__apiPending) { window.__quietSince = null; return false; }
      window.__quietSince ??= performance.now();
      return performance.now() - window.__quietSince >= ms;
    }""", arg=quiet_ms, polling=50)


def wait_step_shown(p, step: int):
    p.page.wait_for_function(
        "s => document.querySelector('[data-testid=checkpoint-info] strong')?.innerText === `step ${s}`", arg=step)


def slider_count(p) -> int:
    return p.page.evaluate("() => { const s = document.querySelector('[data-testid=checkpoint-slider]');"
                           " return s.disabled ? 0 : Number(s.max) + 1; }")


@pytest.fixture
def live_run(tmp_path, built_frontend):
    """A server of a run folder that does not exist yet, and the writer that will record it."""
    from t3vis.server import create_app

    run = tmp_path / "runs" / "live"
    assert not run.exists()
    live = BackgroundServer(create_app([run], static_dir=built_frontend.parent))
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    go = tmp_path / "go"
    writer = subprocess.Popen([sys.executable, str(script), str(run), str(go)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield {"server": live, "run": run, "go": go, "writer": writer}
    if writer.poll() is None:
        writer.kill()
    writer.wait()
    live.stop()


def read_line(writer) -> dict:
    line = writer.stdout.readline()
    if not line:
        raise AssertionError(f"the writer stopped: {writer.wait()} {writer.stderr.read()[-3000:]}")
    return json.loads(line)


def test_page_follows_a_run_while_it_trains(page, live_run, artifacts):
    server, run, writer = live_run["server"], live_run["run"], live_run["writer"]
    page.page.add_init_script(WATCH_SLIDER)
    page.page.goto(f"{server.url}/?run=live")

    # nothing recorded yet: the page waits, and says so
    banner = page.page.locator("[data-testid=run-state][data-state=waiting]")
    banner.wait_for()
    assert "Waiting for run “live” to start recording" in banner.inner_text()
    assert page.page.locator("[data-testid=views]").count() == 0
    assert read_line(writer).get("ready")                       # the writer's imports are done
    page.page.screenshot(path=str(artifacts / "live-waiting.png"))

    def allow(n: int):
        live_run["go"].write_text(str(n))

    allow(1)                                                    # step 0
    landed: dict[int, float] = {}

    # step 0: the run opens by itself, on its only checkpoint
    out = read_line(writer)
    assert out["step"] == 0
    landed[0] = min(out["returned"], meta_landed(run, 0))
    page.page.wait_for_selector("[data-testid=views]", timeout=10_000)
    assert page.page.is_checked("[data-testid=follow-latest]"), "a page opened at the latest checkpoint follows it"
    wait_projection(page, "live", 0, LAYER)
    layout0 = page.page.evaluate(PROJECTION_BYTES, ["live", 0, LAYER])
    allow(2)                                                    # step 2, still following

    # step 2, following: the slider grows and the views move to it
    out = read_line(writer)
    assert out["step"] == 2
    landed[2] = min(out["returned"], meta_landed(run, 2))
    page.page.wait_for_function("() => Number(document.querySelector('[data-testid=checkpoint-slider]').max) === 1")
    wait_step_shown(page, 2)
    wait_projection(page, "live", 2, LAYER)
    page.page.screenshot(path=str(artifacts / "live-following.png"))
    layout2 = page.page.evaluate(PROJECTION_BYTES, ["live", 2, LAYER])

    # no longer following: steps 4 and 6 land, the page stays on step 2 and a badge counts them
    page.page.uncheck("[data-testid=follow-latest]")
    allow(len(STEPS))
    badge = page.page.locator("[data-testid=new-checkpoints]")
    for n, step in enumerate((4, 6), start=1):
        out = read_line(writer)
        assert out["step"] == step
        landed[step] = min(out["returned"], meta_landed(run, step))
        page.page.wait_for_function("n => Number(document.querySelector('[data-testid=checkpoint-slider]').max) === n",
                                    arg=n + 1)
        page.page.wait_for_function("t => document.querySelector('[data-testid=new-checkpoints]')?.innerText === t",
                                    arg=f"+{n} new")
        assert page.page.inner_text("[data-testid=checkpoint-info] strong") == "step 2"
        wait_projection(page, "live", 2, LAYER)
    page.page.screenshot(path=str(artifacts / "live-badge.png"))
    assert read_line(writer).get("done")
    assert writer.wait(timeout=30) == 0

    # each checkpoint reached the slider within 2 s of its meta.json landing, without a reload
    seen = page.page.evaluate("() => window.__sliderSeen")
    assert page.page.evaluate("() => window.__notReloaded") is True
    for count, step in enumerate(STEPS, start=1):
        delay = seen[str(count)] - landed[step]
        assert -0.05 < delay < LANDING_LIMIT_S, f"step {step} reached the slider {delay:.2f} s after it landed"

    # earlier layouts did not move when later checkpoints landed (aligned each to the one before)
    assert page.page.evaluate(PROJECTION_BYTES, ["live", 0, LAYER]) == layout0
    assert page.page.evaluate(PROJECTION_BYTES, ["live", 2, LAYER]) == layout2

    # the badge goes to the latest checkpoint and clears
    badge.click()
    wait_step_shown(page, 6)
    wait_projection(page, "live", 6, LAYER)
    assert badge.count() == 0

    # the curves show every checkpoint's metrics: the page loaded them again as the run grew
    curves = page.page.evaluate("async () => (await (await fetch('api/runs/live/curves')).json()).checkpoints.length")
    assert curves == len(STEPS)
    loads = sum("/api/runs/live/curves" in u for u in page.requests)
    assert len(STEPS) <= loads <= 3 * len(STEPS), f"the curves were loaded {loads} times for {len(STEPS)} checkpoints"
    # the training dynamics grew with steps 2, 4 and 6 (observed between snapshots): the data map loaded again
    assert sum("/api/runs/live/datamap" in u for u in page.requests) >= 2

    # the run is truncated while on its last checkpoint: said, and the page moves to the latest left
    # (moved out in one rename, as a writer replaces a checkpoint: no half-deleted folder is ever seen)
    (run / "checkpoints" / "step-00000006").rename(run.parent / "removed-step-6")
    page.page.wait_for_function("() => Number(document.querySelector('[data-testid=checkpoint-slider]').max) === 2")
    wait_step_shown(page, 4)
    notice = page.page.locator("[data-testid=notice-info]", has_text="no longer in run")
    notice.wait_for()
    assert "step 6" in notice.inner_text()

    # the run is deleted (once the page has what it asked for at step 4): the page says so and keeps what it shows
    wait_projection(page, "live", 4, LAYER)
    wait_api_quiet(page)
    run.rename(run.parent / "deleted-live")
    shutil.rmtree(run.parent / "deleted-live")
    gone = page.page.locator("[data-testid=run-state][data-state=gone]")
    gone.wait_for()
    assert "gone" in gone.inner_text()
    assert page.page.locator("[data-testid=views]").count() == 1
    page.page.screenshot(path=str(artifacts / "live-gone.png"))
    assert slider_count(page) == 3
    assert_no_console_errors(page)


def test_align_to_final_checkpoint_is_an_explicit_choice(page, server):
    """A finished run's old alignment (anchored at the last checkpoint) is offered, off by default,
    kept in the URL, and asked of the server only when chosen."""
    page.page.goto(f"{server.url}/?run=tiny&layer=2")
    page.page.wait_for_selector("[data-testid=views]")
    wait_projection(page, "tiny", 10, 2)
    box = page.page.locator("[data-testid=align-final]")
    assert not box.is_checked()
    asked = [u for u in page.requests if "/projection?" in u]
    assert asked and all("align=previous" in u for u in asked)

    with page.page.expect_response(lambda r: "/projection?" in r.url and "align=final" in r.url):
        box.check()
    page.page.wait_for_function("() => new URLSearchParams(location.search).get('align') === 'final'")
    wait_projection(page, "tiny", 10, 2)

    # a link with align=final reopens the same choice
    page.page.goto(page.page.url)
    page.page.wait_for_selector("[data-testid=views]")
    assert page.page.locator("[data-testid=align-final]").is_checked()
    wait_projection(page, "tiny", 10, 2)
    assert [u for u in page.requests if "/projection?" in u][-1].count("align=final") == 1

    page.page.locator("[data-testid=align-final]").uncheck()
    page.page.wait_for_function("() => !new URLSearchParams(location.search).has('align')")
    assert_no_console_errors(page)
