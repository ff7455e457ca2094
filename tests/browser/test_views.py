"""The views' interactions in a real browser against a live server: colour by confidence and
variability, filters shared by the projections and the table, click selection, the comparison
of two projections, a head's importance over checkpoints, where a token attends, the training
curves moving every view, and a page that stays responsive while a projection computes."""

from __future__ import annotations

import json
import re
import time
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

import t3vis

from .browser_support import (
    INK_JS,
    assert_no_console_errors,
    lasso,
    open_app,
    selection_size,
    wait_projection,
    wait_table_total,
)

pytestmark = pytest.mark.browser

LEGEND = "[data-testid=projection-view] [data-testid=legend]"


def wait_pane(p, testid: str, key: str):
    p.page.wait_for_function(
        "([t, k]) => { const e = document.querySelector(`[data-testid=${t}-plot]`);"
        " return e && e.dataset.drawn === k && e.dataset.state === 'drawn'; }", arg=[testid, key])


def wait_shown(p, n: int):
    """Until the projection shows n points (those the filter keeps)."""
    p.page.wait_for_function(
        "n => document.querySelector('[data-testid=projection-plot]').dataset.shown === String(n)", arg=n)


def point_position(p, example_id: int, where: str = "projection"):
    pos = p.page.evaluate("([id, w]) => window.__t3vis.pointPosition(id, w)", [example_id, where])
    assert pos is not None, f"example {example_id} is not drawn in {where}"
    return pos


def hover_point(p, example_id: int, tries: int = 20):
    """Puts the mouse on an example's point and waits until the plot says it hovers that point.

    The page may still be settling (a panel opening resizes the plot), so a position read once
    can be stale by the time the mouse gets there: read it again until the hover lands."""
    for _ in range(tries):
        x, y = point_position(p, example_id)
        p.page.mouse.move(x, y)
        try:
            p.page.wait_for_function(
                "id => document.querySelector('[data-testid=projection-plot]').dataset.hoverId === String(id)",
                arg=example_id, timeout=500)
            return x, y
        except PlaywrightTimeoutError:
            p.page.mouse.move(1, 1)
    raise AssertionError(f"the mouse never came to rest on example {example_id}'s point")


def test_colour_by_gold_prob_and_variability(page, server, tiny):
    open_app(page, server, "run=tiny&layer=2")
    wait_projection(page, "tiny", 10, 2)
    page.page.wait_for_function(f"() => ({INK_JS})('[data-testid=projection-scatter]') > 200")
    ink_label = page.page.evaluate(INK_JS, "[data-testid=projection-scatter]")
    for value, title, ends in (("gold_prob", "Gold-label confidence", ("0 wrong", "1 right")),
                               ("variability", "Data-map variability", ("0",)),
                               ("confidence", "Data-map confidence", ("0", "1"))):
        page.page.select_option("[data-testid=color-by]", value)
        page.page.wait_for_function(f"t => document.querySelector('{LEGEND}').innerText.includes(t)", arg=title)
        legend = page.page.locator(LEGEND)
        assert legend.locator(".ramp").count() == 1, "a continuous colour needs a gradient legend"
        text = legend.inner_text()
        for end in ends:
            assert end in text
        assert f"color={value}" in page.page.url
    # variability: the legend's upper end is the 98th percentile of the data-map variability
    page.page.select_option("[data-testid=color-by]", "variability")
    run = t3vis.open_run(tiny["path"])
    dyn = run.dynamics().set_index("id")
    var = dyn["variability"].reindex(range(len(tiny["texts"]))).to_numpy(np.float32)
    finite = np.sort(var[np.isfinite(var)])
    hi = finite[int(np.floor(0.98 * (len(finite) - 1)))]
    page.page.wait_for_function(f"t => document.querySelector('{LEGEND}').innerText.includes(t)", arg=f"{hi:.2f}")
    # gold_prob: the colours drawn differ from the label colours (the canvas was redrawn)
    page.page.select_option("[data-testid=color-by]", "gold_prob")
    page.page.wait_for_timeout(400)
    assert page.page.evaluate(INK_JS, "[data-testid=projection-scatter]") != ink_label
    assert_no_console_errors(page)


def test_filters_apply_to_projection_and_table(page, server, tiny):
    open_app(page, server, "run=tiny&layer=2")
    wait_projection(page, "tiny", 10, 2)
    page.page.wait_for_function(f"() => ({INK_JS})('[data-testid=projection-scatter]') > 200")
    ink_all = page.page.evaluate(INK_JS, "[data-testid=projection-scatter]")
    out = t3vis.open_run(tiny["path"]).checkpoints[-1].outputs
    wrong = int((~out["correct"].astype(bool)).sum())
    assert 0 < wrong < len(out)
    page.page.click("[data-testid=projection-filter-toggle]")
    page.page.select_option("[data-testid=proj-filter-correct]", "false")
    # the projection keeps only the wrong predictions, and the table shows the same examples
    wait_shown(page, wrong)
    wait_table_total(page, wrong)
    assert page.page.input_value("[data-testid=filter-correct]") == "false", "the table's filter shows the same filter"
    assert "f=correct" in page.page.url
    page.page.wait_for_timeout(300)
    ink = page.page.evaluate(INK_JS, "[data-testid=projection-scatter]")
    assert ink < ink_all, "filtered-out points are not dimmed"
    # hidden points cannot be lassoed: a lasso over everything takes only the kept points
    page.page.click("[data-testid=filter-mode] button:has-text('hide')")
    page.page.wait_for_timeout(300)
    lasso(page, "[data-testid=projection-scatter]", 1.0)
    page.page.wait_for_selector("[data-testid=selection-chip]")
    assert selection_size(page) == wrong
    # a loss range narrows both further
    page.page.click("[data-testid=selection-chip] button")
    lo = float(np.median(out["loss"]))
    page.page.fill("[data-testid=proj-filter-loss-min]", f"{lo:.4f}")
    page.page.press("[data-testid=proj-filter-loss-min]", "Enter")
    both = int(((~out["correct"].astype(bool)) & (out["loss"] >= float(f"{lo:.4f}"))).sum())
    wait_shown(page, both)
    wait_table_total(page, both)
    page.page.click("[data-testid=proj-filter-clear]")
    wait_table_total(page, len(tiny["texts"]) + 8)
    assert_no_console_errors(page)


def test_data_map_applies_the_point_filter(page, server, tiny):
    open_app(page, server, "run=tiny&layer=2")
    wait_projection(page, "tiny", 10, 2)
    page.page.wait_for_selector("[data-testid=datamap-scatter][data-state=drawn]")
    run = t3vis.open_run(tiny["path"])
    dm_ids = set(run.dynamics()["id"].astype(int))
    out = run.checkpoints[-1].outputs
    wrong_ids = set(out["id"][~out["correct"].astype(bool)].astype(int))
    assert dm_ids - set(out["id"].astype(int)), "the data map should hold training examples that were not probed"
    # correctness is known for probe examples only: the data map keeps the probed ones predicted wrong
    expected = len(dm_ids & wrong_ids)
    assert 0 < expected < len(dm_ids)
    page.page.select_option("[data-testid=filter-correct]", "false")
    page.page.wait_for_function(
        "n => document.querySelector('[data-testid=datamap-plot]').dataset.shown === String(n)", arg=expected)
    assert page.page.get_attribute("[data-testid=datamap-plot]", "data-n") == str(len(dm_ids))
    note = page.page.inner_text("[data-testid=datamap-filter-note]")
    assert f"{expected} of {len(dm_ids)}" in note and "probe examples only" in note
    # the filtered-out points are only dimmed, yet a lasso over everything takes just the kept ones
    page.page.wait_for_timeout(300)
    lasso(page, "[data-testid=datamap-scatter]", 1.0)
    page.page.wait_for_selector("[data-testid=selection-chip]")
    assert selection_size(page) == expected
    wait_table_total(page, expected)
    # without the filter the same lasso takes every training example
    page.page.click("[data-testid=selection-chip] button")
    page.page.select_option("[data-testid=filter-correct]", "")
    page.page.wait_for_function(
        "n => document.querySelector('[data-testid=datamap-plot]').dataset.shown === String(n)", arg=len(dm_ids))
    assert page.page.locator("[data-testid=datamap-filter-note]").count() == 0
    lasso(page, "[data-testid=datamap-scatter]", 1.0)
    page.page.wait_for_selector("[data-testid=selection-chip]")
    wait_table_total(page, len(dm_ids))
    assert selection_size(page) == len(dm_ids)
    assert_no_console_errors(page)


def test_region_filter_takes_several_regions(page, server, tiny):
    open_app(page, server, "run=tiny&layer=2")
    wait_projection(page, "tiny", 10, 2)
    dyn = t3vis.open_run(tiny["path"]).dynamics()
    counts = dyn["region"].value_counts()
    assert len(counts) >= 2
    smallest = set(counts.index[-2:])                       # the two smallest regions, in the menu's order
    two = [r for r in ("easy-to-learn", "ambiguous", "hard-to-learn") if r in smallest]
    expected = int(dyn["region"].isin(two).sum())
    menu = "[data-testid=filter-region]"
    page.page.click(f"{menu} summary")
    for r in two:
        page.page.check(f"{menu} input[value='{r}']")
    wait_table_total(page, expected)
    assert page.page.get_attribute(menu, "data-value") == ",".join(two)
    assert page.page.inner_text(f"{menu} summary") == f"region: {two[0]}, {two[1]}"
    f = parse_qs(urlparse(page.page.url).query)["f"][0]
    assert f == f"region:{two[0]},{two[1]}"
    # the data map keeps the same examples (its regions are its own), the projection the probed ones
    page.page.wait_for_function(
        "n => document.querySelector('[data-testid=datamap-plot]').dataset.shown === String(n)", arg=expected)
    # the link restores both regions: the menu shows them checked and the table the same rows
    page.page.goto(page.page.url)
    wait_table_total(page, expected)
    page.page.click(f"{menu} summary")
    for r in ("easy-to-learn", "ambiguous", "hard-to-learn"):
        assert page.page.is_checked(f"{menu} input[value='{r}']") == (r in two)
    # unchecking one leaves the other
    page.page.uncheck(f"{menu} input[value='{two[0]}']")
    wait_table_total(page, int((dyn["region"] == two[1]).sum()))
    page.page.keyboard.press("Escape")
    assert not page.page.is_visible(f"{menu} input[value='{two[1]}']")
    assert_no_console_errors(page)


def test_click_on_a_point_selects_it_everywhere(page, server, tiny):
    open_app(page, server, "run=tiny&layer=2")
    wait_projection(page, "tiny", 10, 2)
    page.page.wait_for_selector("[data-testid=projection-scatter][data-state=drawn]")
    target = 7
    x, y = hover_point(page, target)
    page.page.wait_for_selector("[data-testid=tooltip]")
    page.page.mouse.click(x, y)
    page.page.wait_for_selector("[data-testid=selection-chip]")
    assert selection_size(page) == 1
    wait_table_total(page, 1)
    assert page.page.get_attribute("[data-testid=table-body] tr", "data-id") == str(target)
    # the instance view opens it
    page.page.wait_for_function(
        "id => document.querySelector('[data-testid=instance-source]').innerText.includes('Example #' + id)",
        arg=target)
    page.page.locator("[data-testid=tokens] .tok").first.wait_for()
    assert f"ex={target}" in page.page.url and f"sel={target}" in page.page.url
    # Ctrl+click adds a second example to the selection
    other = 12
    x2, y2 = hover_point(page, other)
    page.page.keyboard.down("Control")
    page.page.mouse.click(x2, y2)
    page.page.keyboard.up("Control")
    page.page.wait_for_function(
        "() => /2 examples/.test(document.querySelector('[data-testid=selection-chip]').innerText)")
    wait_table_total(page, 2)
    assert_no_console_errors(page)


def test_comparison_of_two_projections(page, server, tiny):
    open_app(page, server, "run=tiny&layer=2")
    wait_projection(page, "tiny", 10, 2)
    page.page.click("[data-testid=compare-toggle]")
    page.page.wait_for_selector("[data-testid=comparison-view]")
    page.page.select_option("[data-testid=compare-step]", "0")
    wait_pane(page, "compare-a", "tiny|10|2|pca")
    wait_pane(page, "compare-b", "tiny|0|2|pca")
    assert "cmp=0.2" in page.page.url
    for pane in ("compare-a", "compare-b"):
        assert page.page.evaluate(INK_JS, f"[data-testid={pane}-scatter]") > 100
    # a lasso in the right pane selects in both panes, the main projection and the table
    lasso(page, "[data-testid=compare-b-scatter]", 0.6)
    page.page.wait_for_selector("[data-testid=selection-chip]")
    n = selection_size(page)
    assert 0 < n < len(tiny["texts"])
    wait_table_total(page, n)
    # hovering a point in one pane highlights the same example in the other
    page.page.click("[data-testid=selection-chip] button")
    x, y = point_position(page, 3, "left")
    page.page.mouse.move(x, y)
    page.page.wait_for_function("() => document.querySelector('[data-testid=compare-b-plot]').dataset.hoverId === '3'")
    assert page.page.get_attribute("[data-testid=projection-plot]", "data-hover-id") == "3"
    # two layers: the second pane takes another layer of the same checkpoint
    page.page.select_option("[data-testid=compare-step]", "10")
    page.page.select_option("[data-testid=compare-layer]", "1")
    wait_pane(page, "compare-b", "tiny|10|1|pca")
    assert "cmp=10.1" in page.page.url
    # the link reopens the comparison
    page.page.goto(page.page.url)
    page.page.wait_for_selector("[data-testid=comparison-view]")
    wait_pane(page, "compare-b", "tiny|10|1|pca")
    page.page.click("[data-testid=compare-close]")
    assert page.page.locator("[data-testid=comparison-view]").count() == 0
    assert "cmp=" not in page.page.url
    assert_no_console_errors(page)


def head_cell(p, layer: int, head: int):
    canvas = p.page.locator("[data-testid=head-canvas]")
    cell = int(canvas.get_attribute("data-cell"))
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    return box["x"] + 26 + head * cell + cell / 2, box["y"] + 16 + layer * cell + cell / 2


def test_head_importance_over_checkpoints(page, server, tiny):
    open_app(page, server, "run=tiny")
    page.page.wait_for_function("document.querySelector('[data-testid=head-canvas]')?.dataset.layers === '2'")
    run = t3vis.open_run(tiny["path"])
    expected = np.stack([ck.head_importance for ck in run.checkpoints])      # (C, L, H)
    x, y = head_cell(page, 1, 3)
    page.page.mouse.move(x, y)
    page.page.wait_for_selector("[data-testid=head-history][data-head='1.3']")
    values = json.loads(page.page.get_attribute("[data-testid=head-history]", "data-values"))
    assert values == pytest.approx(expected[:, 1, 3].tolist(), rel=1e-5, abs=1e-6)
    chart = page.page.locator("[data-testid=head-history-chart]")
    assert chart.locator("circle").count() == len(run.checkpoints)
    # the current checkpoint (the last) is marked where its dot is
    marker_x = float(chart.locator("line.marker").get_attribute("x1"))
    last_dot_x = float(chart.locator("circle").last.get_attribute("cx"))
    assert marker_x == pytest.approx(last_dot_x, abs=0.5)
    # clicking a head keeps its history shown after the mouse leaves
    x, y = head_cell(page, 0, 2)
    page.page.mouse.click(x, y)
    page.page.mouse.move(5, 5)
    page.page.wait_for_selector("[data-testid=head-history][data-head='0.2']")
    values = json.loads(page.page.get_attribute("[data-testid=head-history]", "data-values"))
    assert values == pytest.approx(expected[:, 0, 2].tolist(), rel=1e-5, abs=1e-6)
    assert_no_console_errors(page)


def test_heads_are_named_as_the_api_addresses_them(page, server, tiny):
    """Heads are 0-based everywhere, as in the API and t3vis.evaluate(masked_heads=...): the cell
    importance[1][3] reads "L1.H3", "layer 1, head 3"."""
    open_app(page, server, "run=tiny&layer=0")
    page.page.wait_for_function("document.querySelector('[data-testid=head-canvas]')?.dataset.layers === '2'")
    importance = t3vis.open_run(tiny["path"]).checkpoints[-1].head_importance        # (L, H), 0-based
    assert "L0–L1" in page.page.inner_text("[data-testid=head-axes]")
    assert "H0–H3" in page.page.inner_text("[data-testid=head-axes]")
    x, y = head_cell(page, 1, 3)
    page.page.mouse.move(x, y)
    tip = page.page.locator("[data-testid=head-tip]")
    tip.wait_for()
    assert (tip.get_attribute("data-layer"), tip.get_attribute("data-head")) == ("1", "3")
    text = tip.inner_text()
    assert "L1.H3" in text and "layer 1, head 3" in text, text
    shown = float(re.search(r"importance ([-\d.]+)", text).group(1))
    assert shown == pytest.approx(importance[1, 3], abs=6e-4)
    assert "L1.H3" in page.page.inner_text("[data-testid=head-history-title]")
    # marking it for pruning names it the same way
    page.page.mouse.click(x, y)
    chip = page.page.locator("[data-testid=marked-head]")
    assert chip.all_inner_texts() == ["L1.H3"] and chip.get_attribute("title") == "layer 1, head 3"
    # the instance view's attention picker lists the layers from L0
    page.page.locator("[data-testid=table-body] tr").first.click()
    page.page.locator("[data-testid=att-layer]").wait_for()
    assert page.page.locator("[data-testid=att-layer] option").all_inner_texts() == ["L0", "L1"]
    assert page.page.input_value("[data-testid=att-layer]") == "1"
    assert "L1.H3" in page.page.inner_text("[data-testid=attention-title]")
    # the hidden-state layers are another axis: layer 0 is the embeddings
    assert "layer 0 (embeddings)" in page.page.inner_text("[data-testid=projection-caption]")
    assert_no_console_errors(page)


def test_click_a_token_to_see_where_it_attends(page, server):
    open_app(page, server, "run=tiny&head=1.2")
    row = page.page.locator("[data-testid=table-body] tr").nth(2)
    row.wait_for()
    ex = int(row.get_attribute("data-id"))
    row.click()
    toks = page.page.locator("[data-testid=attention-tokens] .tok")
    toks.first.wait_for()
    assert page.page.locator("[data-testid=attention-canvas]").count() == 0, "the full matrix is shown on demand only"
    toks.nth(1).click()
    page.page.wait_for_selector("[data-testid=attention-tokens][data-query='1']")
    shown = [float(w) for w in toks.evaluate_all("els => els.map(e => e.dataset.weight)")]
    # the same row read straight from the API: layer block 1, head 2, query token 1
    raw = page.page.evaluate("""async id => {
      const r = await fetch(`api/runs/tiny/checkpoints/10/instance/attention?id=${id}`);
      const shape = r.headers.get('X-T3vis-Shape').split(',').map(Number);
      return {shape, data: Array.from(new Uint8Array(await r.arrayBuffer()))};
    }""", ex)
    L, H, T, _ = raw["shape"]
    data = np.array(raw["data"], np.uint8).reshape(L, H, T, T)
    assert shown == pytest.approx((data[1, 2, 1] / 255).tolist(), abs=1e-4)
    assert abs(sum(shown) - 1) < 0.05
    # the key token it attends to most is shaded darkest
    colours = toks.evaluate_all("els => els.map(e => getComputedStyle(e).backgroundColor)")
    assert len(set(colours)) > 1
    # the full matrix on demand, for the same head
    page.page.click("[data-testid=attention-matrix-toggle]")
    page.page.wait_for_selector("[data-testid=attention-canvas]")
    assert page.page.evaluate(INK_JS, "[data-testid=attention-view] .canvas-wrap") > 50
    assert page.page.input_value("[data-testid=att-layer]") == "1"
    assert page.page.input_value("[data-testid=att-head]") == "2"
    assert_no_console_errors(page)


def test_training_view_moves_every_view(page, server):
    posts: list[dict] = []
    page.page.on("request", lambda r: posts.append({"url": r.url, "body": r.post_data})
                 if r.method == "POST" and "/api/" in r.url else None)
    open_app(page, server, "run=tiny&layer=2&ex=4")
    wait_projection(page, "tiny", 10, 2)
    page.page.locator("[data-testid=tokens] .tok").first.wait_for()
    page.page.wait_for_selector("[data-testid=curves-chart] svg")
    page.page.wait_for_function("() => document.querySelector('[data-testid=head-canvas]')?.dataset.layers === '2'")
    posts.clear()
    before = len(page.requests)
    chart = page.page.locator("[data-testid=curves-chart] svg")
    chart.scroll_into_view_if_needed()
    box = chart.bounding_box()
    page.page.mouse.click(box["x"] + 40, box["y"] + box["height"] / 2)      # the left end: step 0
    wait_projection(page, "tiny", 0, 2)
    assert "step=0" in page.page.url
    assert "step 0" in page.page.inner_text("[data-testid=checkpoint-info]")
    page.page.wait_for_function(
        "() => document.querySelector('[data-testid=instance-facts]')?.innerText.includes('step 0')")
    page.page.wait_for_timeout(500)
    later = page.requests[before:]
    for what in ("/checkpoints/0/points", "/checkpoints/0/projection", "/checkpoints/0/heads/thumbnails",
                 "/checkpoints/0/instance/attention"):
        assert any(what in u for u in later), f"no request for {what} after picking step 0 in the training view"
    assert any("/checkpoints/0/heads" in p["url"] for p in posts)
    assert any("/checkpoints/0/instance" in p["url"] for p in posts)
    assert any(p["url"].endswith("/table") and json.loads(p["body"])["step"] == 0 for p in posts)
    # the current checkpoint is marked in the training curves and in the example's history
    assert page.page.locator("[data-testid=curves-chart] line.marker").count() == 1
    assert_no_console_errors(page)


def test_page_stays_responsive_while_a_projection_computes(page, medium_server):
    posts: list[tuple[float, str]] = []
    page.page.on("request", lambda r: posts.append((time.monotonic(), r.url))
                 if r.method == "POST" and r.url.endswith("/table") else None)
    open_app(page, medium_server, "run=medium&method=tsne&layer=1")
    # the t-SNE of 3,000 points is not cached: the server answers 202 and the page polls
    page.page.wait_for_selector("[data-testid=projection-plot][data-state=computing]")
    first = page.page.get_attribute("[data-testid=table-body] tr", "data-id")
    for action, check in (
        ("[data-testid=sort-loss]",
         "() => document.querySelector('[data-testid=sort-loss]').classList.contains('active')"),
        ("[data-testid=table-next]",
         "() => document.querySelector('[data-testid=table-count]').innerText.startsWith('51')"),
        ("[data-testid=sort-loss]",
         "() => document.querySelector('[data-testid=sort-loss]').innerText.includes('▲')"),
    ):
        t0 = time.monotonic()
        page.page.click(action, timeout=3000)
        page.page.wait_for_function(check, timeout=3000)
        # the rows themselves are the new page, not the old one
        page.page.wait_for_function(
            "old => { const r = document.querySelector('[data-testid=table-body] tr');"
            " return r && r.dataset.id !== old; }",
            arg=first, timeout=3000)
        first = page.page.get_attribute("[data-testid=table-body] tr", "data-id")
        elapsed = time.monotonic() - t0
        assert elapsed < 3, f"the table took {elapsed:.1f} s to answer while the projection computed"
        assert page.page.get_attribute("[data-testid=projection-plot]", "data-state") == "computing", \
            "the projection finished before the interaction: the test no longer tests responsiveness"
    # the page kept polling and the projection arrives
    page.page.wait_for_selector("[data-testid=projection-plot][data-state=drawn]", timeout=120_000)
    assert page.page.evaluate(INK_JS, "[data-testid=projection-scatter]") > 500
    assert_no_console_errors(page)
