"""The instance view of a generative (seq2seq) run in a real browser: the target tokens as recorded,
a target token's saliency equal to t3vis.explain (plain, integrated gradients, contrastive), the
whole saliency matrix, the cross-attention of the decoder over the source, the greedy generation
equal to t3vis.generate, and the example's history. Expected values come from the recording
(t3vis.open_run) and from the checkpoint's model loaded apart, not from the viewer's code."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import t3vis

from .browser_support import INK_JS, assert_no_console_errors, open_app

pytestmark = pytest.mark.browser

STEP = 8                # the run's last checkpoint, the one the viewer opens on
EXAMPLE = 3
VIEW = "[data-testid=instance-view]"
MAX_LENGTH = 48         # what the run was recorded with (tests/browser/conftest.py)


@pytest.fixture(scope="module")
def recorded(gen):
    """The example's text, target and recorded per-token outputs, and the checkpoint's model."""
    run = t3vis.open_run(gen["path"])
    row = run.examples.set_index("id").loc[EXAMPLE]
    ck = run.checkpoint(STEP)
    model, tokenizer = ck.load_model()
    return {"text": row["text"], "target": row["target"], "tokens": ck.token_outputs.example(int(row["probe_row"])),
            "loss": float(ck.outputs.set_index("id").loc[EXAMPLE, "loss"]), "model": model, "tokenizer": tokenizer,
            "path": gen["path"]}


def open_example(page, gen_server):
    open_app(page, gen_server, f"run=gen&ex={EXAMPLE}&step={STEP}")
    page.page.wait_for_selector(f"{VIEW} [data-testid=target-token]")


def attribute_list(page, selector: str, name: str) -> list[str]:
    return page.page.eval_on_selector_all(selector, f"els => els.map((e) => e.getAttribute('{name}'))")


def pick_token(page, k: int, method: str):
    page.page.select_option(f"{VIEW} [data-testid=saliency-method]", method)
    page.page.locator(f"{VIEW} [data-testid=target-token]").nth(k).click()
    page.page.wait_for_selector(f"{VIEW} [data-testid=saliency-row][data-token='{k}'][data-method='{method}']")


def saliency_scores(page) -> np.ndarray:
    cells = f"{VIEW} [data-testid=saliency-row] [data-testid=input-token]"
    return np.array([float(s) for s in attribute_list(page, cells, "data-score")])


def streams(recorded) -> tuple[list[str], list[str]]:
    """The source's tokens and the decoder's input tokens (the target shifted right), from the tokenizer."""
    tokenizer = recorded["tokenizer"]
    source = tokenizer.convert_ids_to_tokens(tokenizer(recorded["text"])["input_ids"])
    labels = tokenizer(recorded["target"])["input_ids"]
    return source, tokenizer.convert_ids_to_tokens([recorded["model"].config.decoder_start_token_id, *labels[:-1]])


def test_target_tokens_are_the_recorded_ones(page, gen_server, recorded):
    open_example(page, gen_server)
    tokenizer, stored = recorded["tokenizer"], recorded["tokens"]
    targets = f"{VIEW} [data-testid=target-token]"
    assert attribute_list(page, targets, "data-token") == tokenizer.convert_ids_to_tokens(stored["target"].tolist())
    assert attribute_list(page, targets, "data-top1") == tokenizer.convert_ids_to_tokens(stored["top1"].tolist())
    probs = np.array([float(p) for p in attribute_list(page, targets, "data-prob")])
    np.testing.assert_allclose(probs, stored["prob"].astype(np.float64), rtol=2e-3, atol=1e-4)
    # shaded by probability: 1 - p; by loss: NLL over the largest NLL (at least ln 2)
    levels = np.array([float(v) for v in attribute_list(page, targets, "data-level")])
    np.testing.assert_allclose(levels, 1 - stored["prob"].astype(np.float64), rtol=2e-3, atol=2e-3)
    page.page.locator(f"{VIEW} [data-testid=target-shade] button", has_text="loss").click()
    nll = stored["nll"].astype(np.float64)
    page.page.wait_for_function(
        "v => document.querySelector('[data-testid=target-token]').dataset.level !== v", arg=str(levels[0]))
    levels = np.array([float(v) for v in attribute_list(page, targets, "data-level")])
    np.testing.assert_allclose(levels, np.clip(nll / max(math.log(2), nll.max()), 0, 1), rtol=2e-3, atol=2e-3)
    # the top-1 guess is written under a token exactly where it is not the target
    guesses = page.page.locator(f"{targets} [data-testid=top1-guess]").all_text_contents()
    wrong = stored["top1"] != stored["target"]
    assert [g != "✓" for g in guesses] == wrong.tolist()
    facts = page.page.locator(f"{VIEW} [data-testid=sequence-facts]")
    assert float(facts.get_attribute("data-loss")) == pytest.approx(recorded["loss"], rel=1e-4)
    assert float(facts.get_attribute("data-token-accuracy")) == pytest.approx(float(np.mean(~wrong)))
    # the input: the source's tokens, then the decoder's (the target shifted right)
    source, decoder = streams(recorded)
    shown = {s: page.page.locator(f"{VIEW} [data-testid=stream-{s}] [data-testid=input-token]").all_text_contents()
             for s in ("input", "decoder_input")}
    assert len(shown["input"]) == len(source) and len(shown["decoder_input"]) == len(decoder)
    assert page.page.locator(f"{VIEW} [data-testid=stream-input]").inner_text().lower().startswith("source")
    # the history across the three checkpoints
    assert page.page.locator(f"{VIEW} [data-testid=history-chart] circle").count() >= 3
    assert_no_console_errors(page)


@pytest.mark.parametrize("method", ["gradient", "integrated_gradients"])
def test_a_target_tokens_saliency_is_t3vis_explain(page, gen_server, recorded, method):
    open_example(page, gen_server)
    k = 1
    pick_token(page, k, method)
    [expected] = t3vis.explain(recorded["model"], recorded["tokenizer"], [recorded["text"]], method, task="seq2seq",
                               targets=[recorded["target"]], token=[k], max_length=MAX_LENGTH)
    np.testing.assert_allclose(saliency_scores(page), expected.scores[0], rtol=1e-4, atol=1e-6)
    # the columns after the predicting position are greyed (their scores are 0: causal attention)
    hidden = page.page.eval_on_selector_all(f"{VIEW} [data-testid=saliency-row] [data-testid=input-token]",
                                            "els => els.map((e) => e.classList.contains('hidden'))")
    cols = np.arange(len(expected.input_tokens))
    assert hidden == (cols > len(expected.input_tokens) - expected.stream_lengths["decoder_input"] + k).tolist()
    assert any(hidden) and np.all(expected.scores[0][np.array(hidden)] == 0)
    delta = page.page.locator(f"{VIEW} [data-testid=ig-delta]")
    if method == "integrated_gradients":
        shown, want = float(delta.inner_text()), float(expected.delta[0])    # two significant digits
        assert abs(shown - want) <= 0.051 * 10 ** math.floor(math.log10(abs(want))), (shown, want)
        assert page.page.locator(f"{VIEW} [data-testid=ig-delta-relative]").count() == 1
    else:
        assert delta.count() == 0
    assert_no_console_errors(page)


def test_contrast_with_a_foil_and_the_whole_matrix(page, gen_server, recorded, artifacts):
    open_example(page, gen_server)
    tokenizer = recorded["tokenizer"]
    k, method = 1, "grad_x_input"
    pick_token(page, k, method)
    foil = tokenizer.convert_ids_to_tokens(int(recorded["tokens"]["target"][0]))
    assert foil != tokenizer.convert_ids_to_tokens(int(recorded["tokens"]["target"][k]))
    page.page.fill(f"{VIEW} [data-testid=foil-input]", foil)
    page.page.click(f"{VIEW} [data-testid=foil-apply]")
    foil_id = tokenizer.convert_tokens_to_ids(foil)
    page.page.wait_for_selector(f"{VIEW} [data-testid=saliency-row][data-foil='{foil_id}']")
    assert page.page.inner_text(f"{VIEW} [data-testid=foil-id]").count(str(foil_id)) == 1
    [expected] = t3vis.explain(recorded["model"], tokenizer, [recorded["text"]], method, task="seq2seq",
                               targets=[recorded["target"]], token=[k], foil=foil, max_length=MAX_LENGTH)
    np.testing.assert_allclose(saliency_scores(page), expected.scores[0], rtol=1e-4, atol=1e-6)

    # the whole matrix: one row per target token, each t3vis.explain's row
    page.page.click(f"{VIEW} [data-testid=matrix-button]")
    page.page.wait_for_selector(f"{VIEW} [data-testid=saliency-matrix]")
    matrix = page.page.locator(f"{VIEW} [data-testid=saliency-matrix]")
    assert int(matrix.get_attribute("data-rows")) == len(recorded["tokens"]["target"])
    assert int(matrix.get_attribute("data-columns")) == len(expected.input_tokens)
    assert page.page.evaluate(INK_JS, f"{VIEW} [data-testid=saliency-matrix-view]") > 200
    box = matrix.bounding_box()
    page.page.mouse.move(box["x"] + box["width"] - 6, box["y"] + box["height"] - 6)
    page.page.wait_for_function("() => document.querySelector('[data-testid=matrix-hover]').textContent.includes('←')")
    page.page.locator(VIEW).screenshot(path=str(artifacts / "generative-instance-matrix.png"))
    assert_no_console_errors(page)

    # a foil the vocabulary lacks: a message by the foil, not a broken view
    page.page.fill(f"{VIEW} [data-testid=foil-input]", "no-such-token-xyz")
    page.page.click(f"{VIEW} [data-testid=foil-apply]")
    message = page.page.locator(f"{VIEW} [data-testid=foil-error]")
    message.wait_for()
    assert "no-such-token-xyz" in message.inner_text() and "vocabulary" in message.inner_text().lower()
    assert page.page.locator(f"{VIEW} [data-testid=panel-error]").count() == 0
    assert page.page.locator(f"{VIEW} [data-testid=target-token]").count() == len(recorded["tokens"]["target"])
    # the browser logs the refused request itself (a 422 response); the page adds nothing
    refused = [e for e in page.errors if "status of 422" not in e]
    assert not refused, refused


def test_cross_attention_runs_from_the_decoder_to_the_source(page, gen_server, recorded, artifacts):
    open_example(page, gen_server)
    page.page.locator(f"{VIEW} [data-testid=attention-stack] button", has_text="Cross-attention").click()
    page.page.wait_for_selector(f"{VIEW} [data-testid=attention-queries]")
    page.page.click(f"{VIEW} [data-testid=attention-matrix-toggle]")
    canvas = page.page.locator(f"{VIEW} [data-testid=attention-canvas]")
    canvas.wait_for()
    source, decoder = streams(recorded)
    assert json.loads(canvas.get_attribute("data-rows")) == decoder
    assert json.loads(canvas.get_attribute("data-columns")) == source
    assert page.page.evaluate(INK_JS, f"{VIEW} [data-testid=attention-view] .canvas-wrap") > 200
    assert "Cross-attention" in page.page.text_content(f"{VIEW} [data-testid=attention-title]")
    # a query's row over the source keys sums to about 1
    page.page.locator(f"{VIEW} [data-testid=attention-queries] .tok").nth(1).click()
    weights = [float(w) for w in attribute_list(page, f"{VIEW} [data-testid=attention-tokens] .tok", "data-weight")]
    assert len(weights) == len(source) and sum(weights) == pytest.approx(1, abs=0.05)
    page.page.locator(VIEW).screenshot(path=str(artifacts / "generative-instance-cross-attention.png"))
    assert_no_console_errors(page)


def test_the_generation_is_t3vis_generate(page, gen_server, recorded, artifacts):
    open_example(page, gen_server)
    page.page.wait_for_selector(f"{VIEW} [data-testid=gen-token]")
    [expected] = t3vis.generate(recorded["model"], recorded["tokenizer"], [recorded["text"]], 20, task="seq2seq")
    tokens = f"{VIEW} [data-testid=gen-token]"
    assert attribute_list(page, tokens, "data-token") == expected.tokens
    np.testing.assert_allclose([float(p) for p in attribute_list(page, tokens, "data-prob")], expected.probs, rtol=1e-4)
    reference = recorded["tokens"]["target"].tolist()
    matches = [k < len(reference) and t == reference[k] for k, t in enumerate(expected.token_ids.tolist())]
    assert attribute_list(page, tokens, "data-match") == ["yes" if m else "no" for m in matches]
    assert page.page.inner_text(f"{VIEW} [data-testid=generation-text]") == expected.text
    pick_token(page, 0, "integrated_gradients")
    page.page.locator(VIEW).screenshot(path=str(artifacts / "generative-instance.png"))
    assert_no_console_errors(page)


def test_a_free_text_is_scored_and_the_history_picks_a_checkpoint(page, gen_server, recorded, artifacts):
    open_example(page, gen_server)
    # the example's history: a click near step 4 moves the whole viewer there
    chart = page.page.locator(f"{VIEW} [data-testid=history-chart] svg").first
    box = chart.bounding_box()
    page.page.mouse.click(box["x"] + 38 + (box["width"] - 76) * 4 / 8, box["y"] + box["height"] / 2)
    page.page.wait_for_function("() => new URLSearchParams(location.search).get('step') === '4'")
    page.page.wait_for_selector(f"{VIEW} [data-testid=saliency-row][data-step='4']")
    page.page.locator(f"{VIEW} [data-testid=instance-source] button", has_text="Free text").click()
    text, target = "the cat sat on a mat today", "the cat sat"
    page.page.fill(f"{VIEW} [data-testid=free-text]", text)
    page.page.fill(f"{VIEW} [data-testid=free-target]", target)
    page.page.locator(f"{VIEW} button", has_text="Analyse").click()
    tokenizer = recorded["tokenizer"]
    labels = tokenizer(target)["input_ids"]
    page.page.wait_for_function(
        "n => document.querySelectorAll('[data-testid=instance-view] [data-testid=target-token]').length === n"
        " && document.querySelector('[data-testid=sequence-facts]')", arg=len(labels))
    assert attribute_list(page, f"{VIEW} [data-testid=target-token]", "data-token") == \
        tokenizer.convert_ids_to_tokens(labels)
    model, _ = t3vis.open_run(recorded["path"]).checkpoint(4).load_model()
    with torch.no_grad():
        own = float(model(**tokenizer(text, return_tensors="pt"), labels=torch.tensor([labels])).loss)
    loss = float(page.page.get_attribute(f"{VIEW} [data-testid=sequence-facts]", "data-loss"))
    assert loss == pytest.approx(own, rel=1e-4)
    # its generation, beside the typed target as the reference
    page.page.wait_for_selector(f"{VIEW} [data-testid=gen-token]")
    [expected] = t3vis.generate(model, tokenizer, [text], 20, task="seq2seq")
    generated = f"{VIEW} [data-testid=gen-token]"
    assert attribute_list(page, generated, "data-token") == expected.tokens
    matches = [k < len(labels) and t == labels[k] for k, t in enumerate(expected.token_ids.tolist())]
    assert attribute_list(page, generated, "data-match") == ["yes" if m else "no" for m in matches]
    assert page.page.locator(f"{VIEW} [data-testid=ref-token]").all_text_contents()[:len(labels)] == \
        [t.lstrip("▁") for t in tokenizer.convert_ids_to_tokens(labels)]
    page.page.locator(VIEW).screenshot(path=str(artifacts / "generative-instance-free-text.png"))
    assert_no_console_errors(page)
