"""A full-page screenshot of the viewer in use, for people to look at: test-artifacts/app-<run>.png.

On runs/demo when it exists (the demo model on Rotten Tomatoes), else on the tiny test run.
The page shows a UMAP projection, a data-map selection linked into the table and the heads
grid, a pruning result, and the instance view of the probe example the model gets most wrong.
"""

from __future__ import annotations

import pytest

import t3vis

from .browser_support import DEMO_RUN, assert_no_console_errors, click_head, lasso_points, wait_projection

pytestmark = pytest.mark.browser


def most_wrong_validation_example(run) -> int:
    ck = run.checkpoints[-1]
    out = ck.outputs.merge(run.examples[["id", "split"]], on="id")
    held_out = out[out["split"] != "train"]
    return int((held_out if len(held_out) else out).sort_values("loss").iloc[-1]["id"])


def datamap_lasso(demo: bool) -> list[tuple[float, float]]:
    """A lasso over the data map (fractions of its canvas) that holds points: the demo's
    hard-to-learn corner; on the tiny run (a few training passes, every point near the middle)
    the whole plot."""
    if demo:
        return [(0.0, 0.55), (0.45, 0.55), (0.45, 1.0), (0.0, 1.0)]
    return [(0.02, 0.02), (0.98, 0.02), (0.98, 0.98), (0.02, 0.98)]


def test_screenshot_of_the_app(page, server, tiny, artifacts):
    demo = (DEMO_RUN / "run.json").exists()
    name = "demo" if demo else "tiny"
    run = t3vis.open_run(DEMO_RUN if demo else tiny["path"])
    example = most_wrong_validation_example(run)
    last = run.checkpoints[-1].step
    layers = run.num_layers
    page.page.set_viewport_size({"width": 1680, "height": 1050})
    page.page.goto(f"{server.url}/?run={name}&method=umap&color=label&ex={example}&head=1.3")
    page.page.wait_for_selector("[data-testid=views]")
    # UMAP of every checkpoint is computed on first request (cached afterwards): allow for it
    page.page.set_default_timeout(180_000)
    wait_projection(page, name, last, layers, "umap")
    page.page.set_default_timeout(30_000)
    # select the hard-to-learn corner of the data map (low confidence, low variability)
    lasso_points(page, "[data-testid=datamap-scatter]", datamap_lasso(demo))
    page.page.wait_for_selector("[data-testid=selection-chip]")
    page.page.click("[data-testid=heads-scope] button:has-text('Selection')")
    page.page.locator("[data-testid=tokens] .tok").first.wait_for()
    page.page.click("[data-testid=attention-matrix-toggle]")
    page.page.wait_for_selector("[data-testid=attention-canvas]")
    page.page.wait_for_selector("[data-testid=history-chart]")
    click_head(page, 0, 2)
    click_head(page, 1, 3)
    page.page.click("[data-testid=prune-button]")
    page.page.wait_for_selector("[data-testid=prune-result]", timeout=120_000)
    page.page.wait_for_timeout(1200)       # let the point transitions settle
    path = artifacts / f"app-{name}.png"
    page.page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 50_000
    assert_no_console_errors(page)


VIEWS = {
    "projection": "projection-view", "comparison": "comparison-view", "datamap": "datamap-view", "table": "data-table",
    "heads": "head-grid", "instance": "instance-view", "training": "training-curves",
}


def nontrivial(path) -> tuple[int, float]:
    """(distinct colours, share of the commonest colour) of a screenshot."""
    from PIL import Image

    img = Image.open(path).convert("RGB")
    colours = img.getcolors(maxcolors=1 << 20)
    total = img.width * img.height
    return len(colours), max(c for c, _ in colours) / total


def test_screenshots_of_each_view(page, server, tiny, artifacts):
    """test-artifacts/view-<name>.png for every panel, each showing real content."""
    demo = (DEMO_RUN / "run.json").exists()
    name = "demo" if demo else "tiny"
    run = t3vis.open_run(DEMO_RUN if demo else tiny["path"])
    example = most_wrong_validation_example(run)
    first, last, layers = run.checkpoints[0].step, run.checkpoints[-1].step, run.num_layers
    page.page.set_viewport_size({"width": 1680, "height": 1050})
    page.page.goto(f"{server.url}/?run={name}&method=pca&color=gold_prob&ex={example}&head=1.3"
                   f"&cmp={first}.{layers}" + ("&f=correct:0" if demo else ""))
    page.page.wait_for_selector("[data-testid=views]")
    page.page.set_default_timeout(120_000)
    wait_projection(page, name, last, layers, "pca")
    page.page.wait_for_selector("[data-testid=compare-b-plot][data-state=drawn]")
    page.page.wait_for_selector("[data-testid=compare-a-plot][data-state=drawn]")
    page.page.set_default_timeout(30_000)
    page.page.click("[data-testid=projection-filter-toggle]")
    # select the hard-to-learn corner of the data map: it lights up in every view
    lasso_points(page, "[data-testid=datamap-scatter]", datamap_lasso(demo))
    page.page.wait_for_selector("[data-testid=selection-chip]")
    page.page.locator("[data-testid=tokens] .tok").first.wait_for()
    page.page.locator("[data-testid=attention-tokens] .tok").nth(2).click()
    page.page.wait_for_selector("[data-testid=head-history-chart]")
    page.page.wait_for_selector("[data-testid=history-chart]")
    page.page.wait_for_timeout(1200)       # let the point transitions settle
    for view, testid in VIEWS.items():
        path = artifacts / f"view-{view}.png"
        page.page.locator(f"[data-testid={testid}]").screenshot(path=str(path))
        colours, top = nontrivial(path)
        # a blank panel is ~99% background; the tiny run's few dozen points leave more of it bare
        bare = 0.95 if demo else 0.975
        assert colours > 40 and top < bare, f"{path.name} looks empty: {colours} colours, {top:.0%} one colour"
    assert_no_console_errors(page)


def test_screenshot_of_a_run_without_epochs(page, server, plain, artifacts):
    """test-artifacts/app-plain.png: a run whose checkpoints have no epoch, every view with real
    content and steps in place of epochs."""
    run = t3vis.open_run(plain["path"])
    example = most_wrong_validation_example(run)
    last, layers = run.checkpoints[-1].step, run.num_layers
    page.page.set_viewport_size({"width": 1680, "height": 1050})
    page.page.goto(f"{server.url}/?run=plain&method=pca&color=correct&ex={example}&head=1.2")
    page.page.wait_for_selector("[data-testid=views]")
    wait_projection(page, "plain", last, layers, "pca")
    lasso_points(page, "[data-testid=datamap-scatter]", datamap_lasso(False))
    page.page.wait_for_selector("[data-testid=selection-chip]")
    page.page.locator("[data-testid=tokens] .tok").first.wait_for()
    page.page.wait_for_selector("[data-testid=history-chart] circle")
    page.page.wait_for_selector("[data-testid=curves-chart] circle")
    page.page.wait_for_selector("[data-testid=head-history-chart]")
    page.page.wait_for_timeout(1200)       # let the point transitions settle
    path = artifacts / "app-plain.png"
    page.page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 50_000
    assert "epoch" not in page.page.inner_text("[data-testid=checkpoint-info]")
    for view, testid in VIEWS.items():
        if view == "comparison":
            continue
        shot = artifacts / f"plain-{view}.png"
        page.page.locator(f"[data-testid={testid}]").screenshot(path=str(shot))
        colours, top = nontrivial(shot)
        assert colours > 40 and top < 0.975, f"{shot.name} looks empty: {colours} colours, {top:.0%} one colour"
    assert_no_console_errors(page)
