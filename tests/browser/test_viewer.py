"""The viewer in a real browser against a live server: drawing, linked selection, instance
view, checkpoint changes, pruning, errors, auth. Each test asserts what a user would see."""

from __future__ import annotations

import json

import pytest

from .browser_support import (
    INK_JS,
    INK_POINT_JS,
    TOKEN,
    assert_no_console_errors,
    click_head,
    lasso,
    open_app,
    selection_size,
    table_total,
    wait_projection,
    wait_table_total,
)

pytestmark = pytest.mark.browser


def test_projection_draws_points(page, server, tiny):
    open_app(page, server)
    wait_projection(page, "tiny", 10, 2)
    page.page.wait_for_function(f"() => ({INK_JS})('[data-testid=projection-scatter]') > 200", timeout=5000)
    assert page.page.get_attribute("[data-testid=projection-plot]", "data-n") == str(len(tiny["texts"]))
    # every colour has a legend: gold labels with their counts
    legend = page.page.inner_text("[data-testid=projection-view] [data-testid=legend]")
    assert "negative" in legend and "positive" in legend
    # the data map draws too
    assert page.page.evaluate(INK_JS, "[data-testid=datamap-scatter]") > 100
    # hovering a point shows the example: its text, label, prediction and loss
    x, y = page.page.evaluate(INK_POINT_JS, "[data-testid=projection-scatter]")
    page.page.mouse.move(x, y)
    tip = page.page.locator("[data-testid=tooltip]")
    tip.wait_for()
    page.page.wait_for_function("() => !document.querySelector('[data-testid=tooltip] .text').innerText.includes('…')")
    tip_text = tip.inner_text()
    assert "gold" in tip_text and "loss" in tip_text
    assert any(text in tip_text for text in tiny["texts"])
    # every colour-by option redraws with its own legend
    for value, title in (("correct", "Prediction is"), ("loss", "Loss"), ("region", "Data-map region"),
                         ("preservation", "Neighbourhood preservation"), ("pred", "Prediction")):
        page.page.select_option("[data-testid=color-by]", value)
        page.page.wait_for_function(
            "t => document.querySelector('[data-testid=projection-view] [data-testid=legend]').innerText.includes(t)",
            arg=title)
    assert "color=pred" in page.page.url
    page.page.wait_for_function(f"() => ({INK_JS})('[data-testid=projection-scatter]') > 200")
    assert_no_console_errors(page)


def test_projection_polls_while_computing(page, server):
    page.page.add_init_script("""
      window.__sawProgress = false;
      new MutationObserver(() => {
        const bar = '[data-testid=projection-view] [data-testid=panel-loading] .bar';
        if (document.querySelector(bar)) window.__sawProgress = true;
      }).observe(document, {subtree: true, childList: true});
    """)
    open_app(page, server, "run=tiny&method=tsne&layer=1")
    page.page.set_default_timeout(120_000)
    wait_projection(page, "tiny", 10, 1, "tsne")
    polls = [u for u in page.requests if "/checkpoints/10/projection" in u and "method=tsne" in u]
    assert len(polls) >= 2, "the first request starts the job (202); the page polls until it is done"
    assert page.page.evaluate("window.__sawProgress"), "no progress bar was shown while the server computed"
    assert page.page.evaluate(INK_JS, "[data-testid=projection-scatter]") > 200
    assert "t-SNE" in page.page.inner_text("[data-testid=projection-caption]")
    assert_no_console_errors(page)


def test_lasso_in_projection_filters_table(page, server, tiny):
    open_app(page, server)
    wait_projection(page, "tiny", 10, 2)
    assert table_total(page) == len(tiny["texts"]) + 8      # probes and training-only examples
    lasso(page, "[data-testid=projection-scatter]", 0.55)
    page.page.wait_for_selector("[data-testid=selection-chip]")
    n = selection_size(page)
    assert 0 < n < len(tiny["texts"])
    wait_table_total(page, n)
    assert page.page.locator("[data-testid=table-body] tr").count() == n
    # the URL holds the selection, so a copied link reopens it
    assert "sel=" in page.page.url
    # clearing the selection brings every row back
    page.page.click("[data-testid=selection-chip] button")
    wait_table_total(page, len(tiny["texts"]) + 8)
    assert_no_console_errors(page)


def test_lasso_in_datamap_selects_across_views(page, server):
    open_app(page, server)
    wait_projection(page, "tiny", 10, 2)
    lasso(page, "[data-testid=datamap-scatter]", 1.0)
    page.page.wait_for_selector("[data-testid=selection-chip]")
    n = selection_size(page)
    assert n > 0
    wait_table_total(page, n)
    # the heads grid can now be scoped to the selection
    page.page.click("[data-testid=heads-scope] button:has-text('Selection')")
    page.page.wait_for_function(
        "() => document.querySelector('[data-testid=head-grid]').innerText.includes('selection, n=')")
    assert_no_console_errors(page)


def test_row_click_shows_saliency(page, server, tiny):
    open_app(page, server)
    first = page.page.locator("[data-testid=table-body] tr").first
    first.wait_for()
    row_id = int(first.get_attribute("data-id"))
    first.click()
    tokens = page.page.locator("[data-testid=tokens] .tok")
    tokens.first.wait_for()
    tok = tiny["tokenizer"]
    expected = tok.convert_ids_to_tokens(tok(tiny["texts"][row_id])["input_ids"])
    assert tokens.all_inner_texts() == expected
    colours = tokens.evaluate_all("els => els.map(e => getComputedStyle(e).backgroundColor)")
    assert len(set(colours)) > 2, f"tokens are not coloured by saliency: {colours}"
    assert any(c not in ("rgb(255, 255, 255)", "rgba(0, 0, 0, 0)") for c in colours)
    # integrated gradients reports its completeness delta, and the probabilities are drawn
    assert page.page.locator("[data-testid=ig-delta]").count() == 1
    assert page.page.locator("[data-testid=probs] .prob").count() == 2
    # the attention of the focused head is drawn from the binary endpoint (the full matrix on demand)
    page.page.click("[data-testid=attention-matrix-toggle]")
    page.page.wait_for_selector("[data-testid=attention-canvas]")
    assert page.page.evaluate(INK_JS, "[data-testid=attention-view] .canvas-wrap") > 50
    # another saliency method answers too
    page.page.select_option("[data-testid=saliency-method]", "gradient")
    page.page.wait_for_function(
        "() => document.querySelector('[data-testid=instance-view]').innerText.includes('Input gradient toward')")
    assert f"ex={row_id}" in page.page.url
    # free text typed by the user is analysed the same way
    page.page.click("[data-testid=instance-source] button:has-text('Free text')")
    page.page.fill("[data-testid=free-text]", "the film was great fun")
    page.page.click("[data-testid=instance-view] button:has-text('Analyse')")
    page.page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=tokens] .tok')].map(e => e.innerText).join(' ')"
        " === '[CLS] the film was great fun [SEP]'")
    assert_no_console_errors(page)


def test_integrated_gradients_shows_absolute_and_relative_error(page, server):
    """The absolute completeness error first, then the relative one when the server sends it (a
    server without `delta_relative` is answered here with and without it)."""
    relative = {"value": 0.5}

    def with_relative(route):
        answer = route.fetch().json()
        if relative["value"] is None:
            answer.pop("delta_relative", None)
        else:
            answer["delta"], answer["delta_relative"] = 0.25, relative["value"]
        route.fulfill(status=200, content_type="application/json", body=json.dumps(answer))

    page.page.route("**/instance", with_relative)
    open_app(page, server, "run=tiny&ex=3")
    facts = page.page.locator("[data-testid=instance-facts]")
    facts.wait_for()
    assert page.page.inner_text("[data-testid=ig-delta]") == "2.5e-1"
    assert page.page.inner_text("[data-testid=ig-delta-relative]") == "5.0e-1"
    assert facts.inner_text().index("2.5e-1") < facts.inner_text().index("5.0e-1"), "absolute first"
    assert "bad" in page.page.get_attribute("[data-testid=ig-delta]", "class")
    # no relative error: the absolute one alone, and no "null" or "undefined"
    relative["value"] = None
    page.page.select_option("[data-testid=saliency-target]", "0")
    page.page.wait_for_function("() => !document.querySelector('[data-testid=ig-delta-relative]')"
                                " && document.querySelector('[data-testid=instance-facts]')")
    text = page.page.inner_text("[data-testid=instance-facts]")
    assert "IG error" in text and "null" not in text and "undefined" not in text
    assert_no_console_errors(page)


def test_checkpoint_change_requests_new_projection(page, server):
    open_app(page, server, "run=tiny&layer=1")
    wait_projection(page, "tiny", 10, 1)
    before = [u for u in page.requests if "/projection" in u]
    assert any("/checkpoints/10/projection" in u and "layer=1" in u for u in before)
    page.page.click("[data-testid=checkpoint-info] >> xpath=..//button[normalize-space()='0']")
    wait_projection(page, "tiny", 0, 1)
    assert any("/checkpoints/0/projection" in u for u in page.requests)
    assert any("/checkpoints/0/points" in u for u in page.requests)
    assert "step=0" in page.page.url
    assert "step 0" in page.page.inner_text("[data-testid=checkpoint-info]")
    # the slider moves it too
    page.page.locator("[data-testid=checkpoint-slider]").fill("1")
    wait_projection(page, "tiny", 5, 1)
    assert page.page.evaluate(INK_JS, "[data-testid=projection-scatter]") > 200
    assert_no_console_errors(page)


def test_prune_matches_evaluate(page, server, tiny):
    import t3vis

    open_app(page, server)
    page.page.wait_for_function("document.querySelector('[data-testid=head-canvas]')?.dataset.layers === '2'")
    click_head(page, 0, 1)
    click_head(page, 1, 3)
    click_head(page, 1, 2)
    click_head(page, 1, 2)           # a second click unmarks
    assert "Prune 2 heads" in page.page.inner_text("[data-testid=prune-button]")
    # the marked heads are named as masked_heads below addresses them: 0-based
    assert page.page.locator("[data-testid=marked-head]").all_inner_texts() == ["L0.H1", "L1.H3"]
    page.page.click("[data-testid=prune-button]")
    page.page.wait_for_selector("[data-testid=prune-result]")
    shown = {k: float(page.page.get_attribute(f"[data-testid={k}]", "data-value"))
             for k in ("acc-before", "acc-after", "loss-before", "loss-after")}

    run = t3vis.open_run(tiny["path"])
    model, tokenizer = run.checkpoints[-1].load_model()
    before = t3vis.evaluate(model, tokenizer, tiny["texts"], tiny["labels"])
    after = t3vis.evaluate(model, tokenizer, tiny["texts"], tiny["labels"], masked_heads={0: [1], 1: [3]})
    assert shown["acc-before"] == pytest.approx(before.accuracy, abs=1e-6)
    assert shown["acc-after"] == pytest.approx(after.accuracy, abs=1e-6)
    assert shown["loss-before"] == pytest.approx(before.loss, rel=1e-4, abs=1e-5)
    assert shown["loss-after"] == pytest.approx(after.loss, rel=1e-4, abs=1e-5)
    flips = int(sum(a != b for a, b in zip(before.predictions, after.predictions)))
    assert page.page.locator("[data-testid=prune-flips] li").count() == flips
    # the grid can show an attention summary instead of importance
    page.page.select_option("[data-testid=heads-metric]", "entropy")
    page.page.wait_for_function(
        "() => document.querySelector('[data-testid=head-grid] [data-testid=legend]').innerText.includes('entropy')")
    assert_no_console_errors(page)


def test_unknown_run_shows_error(page, server):
    page.page.goto(f"{server.url}/?run=no-such-run")
    banner = page.page.locator("[data-testid=run-error]")
    banner.wait_for()
    assert "no-such-run" in banner.inner_text()
    # the page stays usable: the run picker offers the real runs
    assert "tiny" in page.page.inner_text("[data-testid=run-picker]")
    page.page.select_option("[data-testid=run-picker]", "tiny")
    page.page.wait_for_selector("[data-testid=views]")
    assert page.page.locator("[data-testid=run-error]").count() == 0


def test_token_is_sent_and_required(page, token_server):
    page.page.goto(f"{token_server.url}/?run=tiny")                # a fresh browser, no token
    page.page.wait_for_selector("[data-testid=fatal-error]")
    assert "token" in page.page.inner_text("[data-testid=fatal-error]").lower()
    page.page.goto(f"{token_server.url}/?token={TOKEN}&run=tiny")   # the printed URL
    page.page.wait_for_selector("[data-testid=views]")
    assert table_total(page) > 0
    # the printed URL also left an HttpOnly cookie, so a plain reload stays signed in, as in Jupyter
    cookies = page.page.context.cookies()
    assert any(c["name"] == "t3vis_token" and c["httpOnly"] for c in cookies)
    page.page.goto(f"{token_server.url}/?run=tiny")
    page.page.wait_for_selector("[data-testid=views]")
    assert table_total(page) > 0
