"""Pruning in the viewer: one click shows the estimate (a sample, with its 95% interval and
"of N") and then, with no other click, the exact figures, which equal t3vis.evaluate's.

A tiny random BERT classifier recorded with 300 probe examples (more than the estimate's
sample). The exact request is held back until the estimate was looked at, so both states are
seen for certain; a MutationObserver records every state the result box went through.
"""

from __future__ import annotations

import json

import pytest
from server_fixtures import record_pruning_run

import t3vis
from t3vis.server.launch import BackgroundServer
from t3vis.server.models import PRUNE_SAMPLE

from .browser_support import assert_no_console_errors, click_head, open_app
from .conftest import STATIC_DIR

pytestmark = pytest.mark.browser

N_PROBE = 300

# every state of the result box, in order: exact or not, the after-accuracy and its interval
WATCH_JS = """() => {
  window.__pruneStates = [];
  const record = () => {
    const box = document.querySelector('[data-testid=prune-result]');
    if (!box) return;
    const ci = box.querySelector('[data-testid=acc-after-interval]');
    const state = { exact: box.dataset.exact, what: box.querySelector('[data-testid=prune-masked]').innerText,
      acc: box.querySelector('[data-testid=acc-after]').dataset.value, low: ci?.dataset.low ?? null,
      high: ci?.dataset.high ?? null };
    const last = window.__pruneStates.at(-1);
    if (!last || JSON.stringify(last) !== JSON.stringify(state)) window.__pruneStates.push(state);
  };
  new MutationObserver(record).observe(document.body, { subtree: true, childList: true, attributes: true,
    characterData: true });
}"""


@pytest.fixture(scope="module")
def many(tmp_path_factory, built_frontend):
    from t3vis.server import create_app

    path = tmp_path_factory.mktemp("prune-estimate") / "many"
    texts, labels = record_pruning_run(path, N_PROBE)
    live = BackgroundServer(create_app([path], static_dir=STATIC_DIR))
    yield {"server": live, "path": path, "texts": texts, "labels": labels}
    live.stop()


def test_one_click_shows_the_estimate_then_the_exact_figures(page, many, artifacts):
    held, bodies = [], []

    def hold_exact(route):
        body = json.loads(route.request.post_data or "{}")
        bodies.append(body)
        if body.get("estimate"):
            route.continue_()
        else:
            held.append(route)                    # answered once the estimate was looked at

    page.page.route("**/prune", hold_exact)
    open_app(page, many["server"], "run=many")
    page.page.wait_for_function("document.querySelector('[data-testid=head-canvas]')?.dataset.layers === '2'")
    click_head(page, 0, 1)
    click_head(page, 1, 2)
    page.page.evaluate(WATCH_JS)
    page.page.click("[data-testid=prune-button]")

    page.page.wait_for_selector("[data-testid=prune-result][data-exact=false]")
    page.page.wait_for_timeout(300)
    assert len(held) == 1, f"the exact figures were not asked for by themselves: {bodies}"
    what = page.page.inner_text("[data-testid=prune-masked]")
    assert f"estimate from {PRUNE_SAMPLE} of {N_PROBE}" in what, what
    interval = page.page.locator("[data-testid=acc-after-interval]")
    low, high = float(interval.get_attribute("data-low")), float(interval.get_attribute("data-high"))
    estimate = float(page.page.get_attribute("[data-testid=acc-after]", "data-value"))
    assert low <= estimate <= high and high - low > 0
    assert page.page.inner_text("[data-testid=acc-after]").startswith("≈")
    page.page.locator("[data-testid=prune-panel]").screenshot(path=str(artifacts / "prune-estimate.png"))

    held[0].continue_()
    page.page.wait_for_selector("[data-testid=prune-result][data-exact=true]")
    page.page.locator("[data-testid=prune-panel]").screenshot(path=str(artifacts / "prune-exact.png"))
    shown = {k: float(page.page.get_attribute(f"[data-testid={k}]", "data-value"))
             for k in ("acc-before", "acc-after", "loss-before", "loss-after")}
    model, tokenizer = t3vis.open_run(many["path"]).checkpoint(0).load_model()
    before = t3vis.evaluate(model, tokenizer, many["texts"], many["labels"])
    after = t3vis.evaluate(model, tokenizer, many["texts"], many["labels"], masked_heads={0: [1], 1: [2]})
    assert shown["acc-before"] == pytest.approx(before.accuracy, abs=1e-6)
    assert shown["acc-after"] == pytest.approx(after.accuracy, abs=1e-6)
    assert shown["loss-before"] == pytest.approx(before.loss, abs=1e-6)
    assert shown["loss-after"] == pytest.approx(after.loss, abs=1e-6)
    assert page.page.locator("[data-testid=acc-after-interval]").count() == 0
    assert f"n = {N_PROBE}" in page.page.inner_text("[data-testid=prune-masked]")
    flips = int(sum(a != b for a, b in zip(before.predictions, after.predictions)))
    assert page.page.locator("[data-testid=prune-flips] li").count() == flips

    states = page.page.evaluate("window.__pruneStates")
    assert [s["exact"] for s in states] == ["false", "true"], states     # the estimate, then the exact figures
    assert [b.get("estimate", False) for b in bodies] == [True, False]   # one click, two requests
    assert low <= after.accuracy <= high, (low, after.accuracy, high)
    assert_no_console_errors(page)


def test_a_new_prune_aborts_the_previous_ones_exact_request(page, many):
    held = []

    def hold_exact(route):
        body = json.loads(route.request.post_data or "{}")
        if body.get("estimate") or held:
            route.continue_()
        else:
            held.append(route)                    # the first prune's exact figures never come

    page.page.route("**/prune", hold_exact)
    open_app(page, many["server"], "run=many")
    page.page.wait_for_function("document.querySelector('[data-testid=head-canvas]')?.dataset.layers === '2'")
    click_head(page, 0, 1)
    page.page.click("[data-testid=prune-button]")
    page.page.wait_for_selector("[data-testid=prune-result][data-exact=false]")
    click_head(page, 1, 3)
    page.page.click("[data-testid=prune-button]")                       # enabled while the exact figures come
    page.page.wait_for_selector("[data-testid=prune-result][data-exact=true]")
    assert "L0.H1, L1.H3" in page.page.inner_text("[data-testid=prune-masked]")
    held[0].continue_()                                                  # answers an aborted request: ignored
    page.page.wait_for_timeout(500)
    assert "L0.H1, L1.H3" in page.page.inner_text("[data-testid=prune-masked]")
    assert page.page.get_attribute("[data-testid=prune-button]", "data-phase") == "idle"
    assert_no_console_errors(page)
