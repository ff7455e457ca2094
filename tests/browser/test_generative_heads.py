"""The heads panel of a generative run: a grid per attention stack, marks per stack, and pruning
that answers with a sequence model's measures and greedy generations before and after.

The tiny seq2seq run ("gen", tests/browser/conftest.py) is a T5 of 2 encoder and 3 decoder
layers with 4 heads each. Sizes are read from the checkpoint's model config, measures from
t3vis.evaluate and generations from t3vis.generate on the checkpoint's model loaded apart.
"""

from __future__ import annotations

import json

import pytest

from .browser_support import INK_JS, assert_no_console_errors, click_head, open_app

pytestmark = pytest.mark.browser

MAX_NEW_TOKENS = 20          # the viewer's generation length for the before / after comparison
GRID = "[data-testid=head-grid] .grid"

# distinct colours drawn on the heads canvas: a grid of flat cells has a handful, one of
# attention thumbnails many
COLOURS_JS = """() => {
  const c = document.querySelector('[data-testid=head-canvas]');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const seen = new Set();
  for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 200) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
  return seen.size;
}"""


def wait_grid(p, stack: str, layers: int, heads: int):
    """Wait until the grid shows the stack's heads with their thumbnails."""
    p.page.wait_for_function(
        """([stack, l, h]) => { const c = document.querySelector('[data-testid=head-canvas]');
             return c && c.dataset.stack === stack && c.dataset.layers === String(l) && c.dataset.heads === String(h)
               && (c.dataset.thumbs || '').startsWith(`${l},${h},`); }""", arg=[stack, layers, heads])


def choose_stack(p, label: str):
    p.page.click(f"[data-testid=head-stack] button:has-text('{label}')")


def checkpoint_model(gen):
    import t3vis

    run = t3vis.open_run(gen["path"])
    ck = run.checkpoints[-1]
    model, tokenizer = ck.load_model()
    probed = run.examples[run.examples["probe_row"] >= 0].sort_values("probe_row")
    return run, ck, model, tokenizer, probed


def shown_measures(p) -> dict[str, float]:
    return {f"{m}-{when}": float(p.page.get_attribute(f"[data-testid={m}-{when}]", "data-value"))
            for m in ("loss", "perplexity", "token-acc") for when in ("before", "after")}


def test_stack_picker_switches_grid_thumbnails_and_history(page, gen_server, gen, artifacts):
    _, ck, model, _, _ = checkpoint_model(gen)
    sizes = {"encoder": (model.config.num_layers, model.config.num_heads),
             "decoder": (model.config.num_decoder_layers, model.config.num_heads),
             "cross": (model.config.num_decoder_layers, model.config.num_heads)}
    assert sizes["encoder"] != sizes["decoder"]          # the test tells the stacks apart by their sizes
    open_app(page, gen_server, "run=gen")
    picker = page.page.locator("[data-testid=head-stack]")
    assert picker.locator("button").all_inner_texts() == ["Encoder", "Decoder", "Cross-attention"]
    # the run's default stack first: the decoder
    wait_grid(page, "decoder", *sizes["decoder"])
    assert picker.locator("[aria-checked=true]").inner_text() == "Decoder"
    assert page.page.evaluate(INK_JS, GRID) > 500
    with_thumbnails = page.page.evaluate(COLOURS_JS)
    page.page.uncheck("[data-testid=head-grid] label.check input")
    page.page.wait_for_function(f"() => ({COLOURS_JS})() < {with_thumbnails} / 2")
    page.page.check("[data-testid=head-grid] label.check input")
    page.page.wait_for_function(f"() => ({COLOURS_JS})() >= {with_thumbnails}")
    page.page.locator("[data-testid=head-grid]").screenshot(path=str(artifacts / "generative-heads-decoder.png"))

    # focus the last decoder layer's last head, then switch to the encoder: the focus moves inside it
    click_head(page, 2, 3)
    page.page.wait_for_selector("[data-testid=head-history][data-stack=decoder][data-head='2.3']")
    choose_stack(page, "Encoder")
    wait_grid(page, "encoder", *sizes["encoder"])
    assert "stack=encoder" in page.page.url
    page.page.wait_for_selector("[data-testid=head-history][data-stack=encoder][data-head='1.3']")
    assert "Encoder L1.H3" in page.page.text_content("[data-testid=head-history-title]")
    page.page.wait_for_function("() => document.querySelector('[data-testid=head-history-chart]')")

    choose_stack(page, "Cross-attention")
    wait_grid(page, "cross", *sizes["cross"])
    assert "Cross-attention" in page.page.inner_text("[data-testid=head-axes]")
    options = page.page.locator("[data-testid=heads-metric] option").evaluate_all("os => os.map(o => o.value)")
    assert "coverage" in options, options
    # the grid's numbers are those of the cross stack: its history over checkpoints as the API has it
    history = page.page.evaluate("() => fetch('/api/runs/gen/heads/history?stack=cross').then(r => r.json())")
    page.page.wait_for_selector("[data-testid=head-history][data-stack=cross][data-head='1.3']")
    shown = json.loads(page.page.get_attribute("[data-testid=head-history]", "data-values"))
    assert shown == pytest.approx([c[1][3] for c in history["importance"]], rel=1e-6)
    assert len(shown) == len(gen_steps := history["steps"]) and gen_steps[-1] == ck.step
    page.page.select_option("[data-testid=heads-metric]", "coverage")
    page.page.wait_for_function(
        "() => document.querySelector('[data-testid=head-grid] [data-testid=legend]').innerText.includes('coverage')")
    assert page.page.evaluate(INK_JS, GRID) > 500
    page.page.locator("[data-testid=head-grid]").screenshot(path=str(artifacts / "generative-heads-cross.png"))
    # back to a self-attention stack, which has no coverage: the grid falls back to importance
    choose_stack(page, "Decoder")
    wait_grid(page, "decoder", *sizes["decoder"])
    assert page.page.input_value("[data-testid=heads-metric]") == "importance"
    assert_no_console_errors(page)


def test_pruning_a_decoder_head_is_t3vis_evaluate(page, gen_server, gen):
    import t3vis

    run, _, model, tokenizer, probed = checkpoint_model(gen)
    open_app(page, gen_server, "run=gen")
    wait_grid(page, "decoder", model.config.num_decoder_layers, model.config.num_heads)
    click_head(page, 1, 2)
    assert page.page.locator("[data-testid=marked-head]").all_inner_texts() == ["decoder L1.H2"]
    assert "all probe examples" in page.page.inner_text("[data-testid=prune-panel]")
    page.page.click("[data-testid=prune-button]")
    page.page.wait_for_selector("[data-testid=prune-result][data-kind=sequence]", timeout=120_000)
    assert "decoder L1.H2" in page.page.inner_text("[data-testid=prune-masked]")
    assert f"n = {len(probed)}" in page.page.inner_text("[data-testid=prune-masked]")
    shown = shown_measures(page)

    sources, targets = list(probed["text"]), list(probed["target"])
    max_length = int(run.meta["max_length"])
    for when, masked in (("before", None), ("after", {"decoder": {1: [2]}})):
        expected = t3vis.evaluate(model, tokenizer, sources, masked_heads=masked, task="seq2seq", targets=targets,
                                  max_length=max_length)
        assert shown[f"loss-{when}"] == pytest.approx(expected.loss, rel=1e-5)
        assert shown[f"perplexity-{when}"] == pytest.approx(expected.perplexity, rel=1e-5)
        assert shown[f"token-acc-{when}"] == pytest.approx(expected.token_accuracy, abs=1e-9)
    assert shown["loss-before"] != shown["loss-after"]
    # at most 20 examples evaluated: each one's generations before and after
    assert page.page.locator("[data-testid=prune-generation]").count() == len(probed)
    assert_no_console_errors(page)


def test_pruning_a_selection_shows_generations_before_and_after(page, gen_server, gen, artifacts):
    import t3vis

    _, _, model, tokenizer, probed = checkpoint_model(gen)
    ids = [1, 4, 6]
    page.page.set_viewport_size({"width": 1600, "height": 1400})     # room for the three generations
    open_app(page, gen_server, "run=gen")
    wait_grid(page, "decoder", model.config.num_decoder_layers, model.config.num_heads)
    # marks of two stacks, pruned together
    click_head(page, 0, 1)
    click_head(page, 2, 0)
    choose_stack(page, "Cross-attention")
    wait_grid(page, "cross", model.config.num_decoder_layers, model.config.num_heads)
    click_head(page, 1, 2)
    assert page.page.locator("[data-testid=marked-head]").all_inner_texts() == \
        ["decoder L0.H1", "decoder L2.H0", "cross L1.H2"]
    page.page.evaluate("ids => window.__t3vis.select(ids)", ids)
    page.page.wait_for_function("""() => document.querySelector('[data-testid=prune-panel]')
                                      .innerText.includes("selection's 3 probe examples")""")
    page.page.click("[data-testid=prune-button]")
    page.page.wait_for_selector("[data-testid=prune-generations]", timeout=120_000)
    pairs = page.page.locator("[data-testid=prune-generation]")
    assert pairs.count() == 3
    assert [int(pairs.nth(i).get_attribute("data-id")) for i in range(3)] == ids
    masked_text = page.page.inner_text("[data-testid=prune-masked]")
    assert "decoder L0.H1, decoder L2.H0, cross L1.H2" in masked_text and "n = 3" in masked_text

    body = {"masked_heads": {"decoder": [[0, 1], [2, 0]], "cross": [[1, 2]]}, "ids": ids,
            "max_new_tokens": MAX_NEW_TOKENS}
    step = page.page.evaluate("() => new URLSearchParams(location.search).get('step')")
    answer = page.page.evaluate(
        """([body, step]) => fetch(`/api/runs/gen/checkpoints/${step}/prune`, {method: 'POST',
             headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)}).then(r => r.json())""",
        [body, step])
    rows = probed.set_index("id").loc[ids]
    masked = {"decoder": {0: [1], 2: [0]}, "cross": {1: [2]}}
    before = t3vis.generate(model, tokenizer, list(rows["text"]), MAX_NEW_TOKENS, task="seq2seq")
    after = t3vis.generate(model, tokenizer, list(rows["text"]), MAX_NEW_TOKENS, task="seq2seq", masked_heads=masked)
    for i, (pair, b, a) in enumerate(zip(answer["generations"], before, after)):
        row = pairs.nth(i)
        shown_after = json.loads(row.locator("[data-testid=gen-after]").get_attribute("data-tokens"))
        shown_before = json.loads(row.locator("[data-testid=gen-before]").get_attribute("data-tokens"))
        assert shown_after == pair["after"] == a.tokens
        assert shown_before == pair["before"] == b.tokens
        assert json.loads(row.locator("[data-testid=gen-reference]").get_attribute("data-tokens")) == pair["reference"]
        assert row.locator("[data-testid=gen-after] .tok.changed").count() == sum(pair["changed"])
    page.page.locator("[data-testid=head-grid]").screenshot(path=str(artifacts / "generative-heads-prune.png"))
    assert_no_console_errors(page)


def test_classifier_heads_have_no_stack_picker(page, server):
    open_app(page, server, "run=tiny")
    page.page.wait_for_function("document.querySelector('[data-testid=head-canvas]')?.dataset.layers === '2'")
    assert page.page.locator("[data-testid=head-stack]").count() == 0
    assert "stack=" not in page.page.url
    click_head(page, 1, 3)
    click_head(page, 0, 1)
    assert page.page.locator("[data-testid=marked-head]").all_inner_texts() == ["L0.H1", "L1.H3"]
    # the classifier's request masks its one stack by a plain [[layer, head]] list, as before stacks
    with page.page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/prune")) as sent:
        page.page.click("[data-testid=prune-button]")
    assert json.loads(sent.value.post_data)["masked_heads"] == [[0, 1], [1, 3]]
    page.page.wait_for_selector("[data-testid=prune-result] [data-testid=acc-after]")
    assert page.page.locator("[data-testid=prune-generations]").count() == 0
    assert_no_console_errors(page)
