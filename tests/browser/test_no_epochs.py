"""Runs recorded without epochs open in every view: a plain PyTorch loop's `snapshot(step=...)`
("plain", with training dynamics) and checkpoints recorded without a trainer state ("nodyn", no
dynamics). Their checkpoints answer `"epoch": null`; the viewer names them by step alone."""

from __future__ import annotations

import re

import pytest

import t3vis

from .browser_support import (
    INK_JS,
    INK_POINT_JS,
    assert_no_console_errors,
    open_app,
    table_total,
    wait_projection,
)

pytestmark = pytest.mark.browser

LAST = 6                       # conftest.PLAIN_STEPS[-1]
BAD_WORDS = re.compile(r"\b(null|NaN|undefined)\b")

# the text a user reads in the header and in every selector, options included
READ_TEXT_JS = """() => {
  const header = document.querySelector('header.top');
  const parts = [header.innerText];
  for (const el of header.querySelectorAll('[title]')) parts.push(el.title);
  for (const o of document.querySelectorAll('select option')) parts.push(o.textContent);
  return parts.join('\\n');
}"""


def assert_readable(p, where: str):
    text = p.page.evaluate(READ_TEXT_JS)
    bad = BAD_WORDS.findall(text)
    assert not bad, f"{where}: the header or a selector shows {bad}: {text!r}"


def hover_tooltip(p, selector: str) -> str:
    x, y = p.page.evaluate(INK_POINT_JS, selector)
    p.page.mouse.move(x, y)
    tip = p.page.locator("[data-testid=tooltip]")
    tip.wait_for()
    p.page.wait_for_function("() => !document.querySelector('[data-testid=tooltip] .text').innerText.includes('…')")
    text = tip.inner_text()
    p.page.mouse.move(2, 2)
    return text


def test_run_without_epochs_opens_every_view(page, server, plain):
    run = t3vis.open_run(plain["path"])
    assert [c.epoch for c in run.checkpoints] == [None, None, None], "the fixture must record no epochs"
    open_app(page, server, "run=plain")          # past "Loading run", the real panels present
    wait_projection(page, "plain", LAST, 2)
    page.page.wait_for_function(f"() => ({INK_JS})('[data-testid=projection-scatter]') > 100")
    # the header names the checkpoint by its step alone
    info = page.page.inner_text("[data-testid=checkpoint-info]")
    assert f"step {LAST}" in info and "epoch" not in info
    ticks = page.page.locator("[data-testid=checkpoint-info] >> xpath=..//button[contains(@class,'tick')]")
    assert ticks.evaluate_all("els => els.map(e => e.title)") == ["step 0", "step 3", "step 6"]
    assert_readable(page, "plain run")
    # the data map: training dynamics counted by passes, drawn
    assert int(page.page.get_attribute("[data-testid=datamap-plot]", "data-n")) == len(plain["texts"]) // 2
    page.page.wait_for_function(f"() => ({INK_JS})('[data-testid=datamap-scatter]') > 50")
    # the table and the heads grid
    assert table_total(page) == len(plain["texts"])
    assert page.page.locator("[data-testid=table-body] tr").count() == len(plain["texts"])
    page.page.wait_for_function("document.querySelector('[data-testid=head-canvas]')?.dataset.layers === '2'")
    # training curves: per checkpoint (probe accuracy, dots) and per batch (the moving average)
    curves = page.page.locator("[data-testid=curves-chart]")
    curves.locator("circle").first.wait_for()
    assert "probe accuracy" in curves.inner_text() and "training batches" in curves.inner_text()
    assert curves.locator("path[d^='M']").count() >= 2
    # tooltips in the projection and the data map
    for selector in ("[data-testid=projection-scatter]", "[data-testid=datamap-scatter]"):
        tip = hover_tooltip(page, selector)
        assert "gold" in tip and not BAD_WORDS.search(tip), f"tooltip of {selector}: {tip!r}"
    # an example's instance view: its history across the checkpoints
    page.page.locator("[data-testid=table-body] tr").first.click()
    page.page.locator("[data-testid=tokens] .tok").first.wait_for()
    page.page.wait_for_selector("[data-testid=history-chart] circle")
    history = page.page.inner_text("[data-testid=instance-view]")
    assert not BAD_WORDS.search(history), f"instance view: {history!r}"
    # the comparison: its checkpoint selector names steps only
    page.page.click("[data-testid=compare-toggle]")
    page.page.wait_for_selector("[data-testid=compare-b-plot][data-state=drawn]")
    options = page.page.locator("[data-testid=compare-step] option").all_inner_texts()
    assert options == ["step 0", "step 3", "step 6"]
    page.page.select_option("[data-testid=compare-step]", "3")
    page.page.wait_for_function(
        "() => document.querySelector('[data-testid=compare-b-plot]')?.dataset.drawn?.startsWith('plain|3|')")
    layers = page.page.locator("[data-testid=compare-layer] option").all_inner_texts()
    assert layers == ["0 (embeddings)", "1", "2"]
    assert_readable(page, "plain run, comparing")
    # scrubbing to another checkpoint works as with epochs
    page.page.locator("[data-testid=checkpoint-slider]").fill("0")
    wait_projection(page, "plain", 0, 2)
    assert "step 0" in page.page.inner_text("[data-testid=checkpoint-info]")
    assert_no_console_errors(page)


def test_run_without_dynamics_says_why_its_data_map_is_empty(page, server, plain):
    open_app(page, server, "run=nodyn")
    wait_projection(page, "nodyn", LAST, 2)
    page.page.wait_for_function(f"() => ({INK_JS})('[data-testid=projection-scatter]') > 100")
    empty = page.page.locator("[data-testid=datamap-view] [data-testid=panel-empty]")
    assert "no training dynamics" in empty.inner_text() and "Recorder.observe()" in empty.inner_text()
    assert page.page.get_attribute("[data-testid=datamap-plot]", "data-n") == "0"
    assert table_total(page) == len(plain["texts"])
    page.page.wait_for_function("document.querySelector('[data-testid=head-canvas]')?.dataset.layers === '2'")
    # the checkpoints' metrics still make curves; there are no training batches to draw
    curves = page.page.locator("[data-testid=curves-chart]")
    curves.locator("circle").first.wait_for()
    assert "training batches" not in curves.inner_text()
    assert "epoch" not in page.page.inner_text("[data-testid=checkpoint-info]")
    assert_readable(page, "run without dynamics")
    assert_no_console_errors(page)
