"""The projection, data map, table, tooltip, filters and training curves of a generative run.

The tiny seq2seq run ("gen", tests/browser/conftest.py) is a T5 of 2 encoder and 3 decoder layers
with 4 heads, its 16 examples given the categories sport / tech / politics in turn. Expected
values come from the recorded run read apart (t3vis.open_run) and from the checkpoint's model
config, never from the viewer's own arithmetic.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from .browser_support import INK_JS, assert_no_console_errors, open_app

pytestmark = pytest.mark.browser

STEP = 8                 # the run's last checkpoint: the one the viewer opens
PROJ_LEGEND = "[data-testid=projection-view] [data-testid=legend]"
SCATTER = "[data-testid=projection-scatter]"


def recorded(gen):
    """The run read apart: its probed examples (probe order) and the last checkpoint's outputs."""
    import t3vis

    run = t3vis.open_run(gen["path"])
    ck = run.checkpoint(STEP)
    return run, ck, run.probe_examples, ck.outputs


def wait_drawn(p, key: str):
    p.page.wait_for_function(
        "k => { const e = document.querySelector('[data-testid=projection-plot]');"
        " return e && e.dataset.drawn === k && e.dataset.state === 'drawn'; }", arg=key)
    p.page.wait_for_function(f"() => ({INK_JS})('{SCATTER}') > 100")


def positions(p, ids) -> np.ndarray:
    pos = [p.page.evaluate("id => window.__t3vis.pointPosition(id)", int(i)) for i in ids]
    assert all(x is not None for x in pos), "an example is not drawn in the projection"
    return np.array(pos, dtype=float)


def shoot(p, selector: str, artifacts, name: str):
    p.page.locator(selector).screenshot(path=str(artifacts / f"{name}.png"))


def legend_text(p) -> str:
    return p.page.inner_text(PROJ_LEGEND)


def choose_color(p, value: str, title: str):
    p.page.select_option("[data-testid=color-by]", value)
    p.page.wait_for_function(f"t => document.querySelector('{PROJ_LEGEND}')?.innerText.includes(t)", arg=title)


def hover(p, example_id: int, tries: int = 20):
    """The mouse on an example's point, until the projection says it hovers that point."""
    for _ in range(tries):
        x, y = p.page.evaluate("id => window.__t3vis.pointPosition(id)", example_id)
        p.page.mouse.move(x, y)
        try:
            p.page.wait_for_function(
                "id => document.querySelector('[data-testid=projection-plot]').dataset.hoverId === String(id)",
                arg=example_id, timeout=500)
            return
        except PlaywrightTimeoutError:
            p.page.mouse.move(1, 1)
    raise AssertionError(f"the mouse never came to rest on example {example_id}'s point")


def test_header_names_task_and_stacks_and_projects_either_stack(page, gen_server, gen, artifacts):
    _, ck, probed, _ = recorded(gen)
    model, _ = ck.load_model()
    cfg = model.config
    expected = (f"Sequence to sequence · encoder {cfg.num_layers}×{cfg.num_heads} · decoder "
                f"{cfg.num_decoder_layers}×{cfg.num_heads} · cross {cfg.num_decoder_layers}×{cfg.num_heads}")
    open_app(page, gen_server, "run=gen")
    assert page.page.inner_text("[data-testid=run-task]") == expected

    # the decoder (the run's default stack) first: its layers, embeddings to the last block
    picker = page.page.locator("[data-testid=projection-stack]")
    assert picker.locator("option").all_inner_texts() == ["Encoder", "Decoder"]
    assert picker.input_value() == "decoder"
    layers = page.page.locator("[data-testid=layer-picker] button")
    assert layers.count() == cfg.num_decoder_layers + 1
    wait_drawn(page, f"gen|{STEP}|{cfg.num_decoder_layers}|pca")
    ids = probed["id"].tolist()
    decoder_at = positions(page, ids)
    page.page.screenshot(path=str(artifacts / "generative-page.png"), full_page=True)
    shoot(page, "[data-testid=projection-view]", artifacts, "generative-projection-decoder")

    # the encoder: fewer layers, the layer kept inside them, its own layout
    picker.select_option("encoder")
    assert layers.count() == cfg.num_layers + 1
    wait_drawn(page, f"gen|{STEP}|{cfg.num_layers}|pca|encoder")
    assert "pstack=encoder" in page.page.url and f"layer={cfg.num_layers}" in page.page.url
    assert "Encoder" in page.page.inner_text("[data-testid=projection-caption]")
    encoder_at = positions(page, ids)
    moved = np.linalg.norm(encoder_at - decoder_at, axis=1)
    assert (moved > 2).sum() >= len(ids) // 2, f"the encoder's layout is the decoder's: moved {moved}"
    # the server's answers for the two stacks differ too (the drawing is of what was asked)
    differ = page.page.evaluate(
        """async ([s, le, ld]) => {
             const get = (q) => fetch(`/api/runs/gen/checkpoints/${s}/projection?method=pca&aligned=true&${q}`)
               .then((r) => r.arrayBuffer()).then((b) => Array.from(new Float32Array(b)));
             const [e, d] = await Promise.all([get(`layer=${le}&stack=encoder`), get(`layer=${ld}&stack=decoder`)]);
             return e.length === d.length && e.some((v, i) => Math.abs(v - d[i]) > 1e-4);
           }""", [STEP, cfg.num_layers, cfg.num_decoder_layers])
    assert differ
    shoot(page, "[data-testid=projection-view]", artifacts, "generative-projection-encoder")
    page.page.locator("header.top").screenshot(path=str(artifacts / "generative-header.png"))
    assert_no_console_errors(page)


def test_colour_by_category_and_perplexity(page, gen_server, gen, artifacts):
    _, _, probed, outputs = recorded(gen)
    open_app(page, gen_server, "run=gen")
    wait_drawn(page, f"gen|{STEP}|3|pca")
    options = page.page.locator("[data-testid=color-by] option").all_inner_texts()
    assert options[0] == "Category", options
    for word in ("Loss", "Perplexity", "Token accuracy", "Mean target-token probability", "Data-map confidence",
                 "Data-map variability", "Data-map region", "Neighbourhood preservation"):
        assert any(o.startswith(word) for o in options), (word, options)
    assert not any(re.search(r"gold|Prediction|Correctness", o) for o in options), options

    # the default: the examples' categories, with their counts among the probed examples
    topics = [gen["topics"][i] for i in probed["id"]]
    legend = legend_text(page)
    assert legend.startswith("Category") and "gold" not in legend.lower()
    for topic in ("sport", "tech", "politics"):
        count = re.search(rf"{topic}\s*(\d+)", legend)
        assert count and int(count.group(1)) == topics.count(topic), (topic, legend)
    shoot(page, "[data-testid=projection-view]", artifacts, "generative-projection-category")

    # perplexity: a log scale from the points' lowest to their 98th percentile
    choose_color(page, "perplexity", "Perplexity")
    assert "color=perplexity" in page.page.url
    ppl = np.sort(outputs["perplexity"].to_numpy(dtype=float))
    ends = re.search(r"([\d,.]+)\s*≥\s*([\d,.]+)", legend_text(page))
    assert ends, legend_text(page)
    low, high = (float(v.replace(",", "")) for v in ends.groups())
    p98 = ppl[math.floor(0.98 * (len(ppl) - 1))]
    for shown, want in ((low, ppl[0]), (high, p98)):
        assert abs(shown - want) <= (0.5 if want >= 100 else 0.051) + want * 1e-5, (shown, want, legend_text(page))
    shoot(page, "[data-testid=projection-view]", artifacts, "generative-projection-perplexity")

    # token accuracy and loss draw too, each with its own legend
    choose_color(page, "token_accuracy", "Token accuracy")
    page.page.wait_for_function(f"() => ({INK_JS})('{SCATTER}') > 100")
    choose_color(page, "loss", "Loss")
    assert_no_console_errors(page)


def test_table_lists_targets_and_measures_and_sorts_by_perplexity(page, gen_server, gen, artifacts):
    _, _, probed, outputs = recorded(gen)
    open_app(page, gen_server, "run=gen")
    table = page.page.locator("[data-testid=data-table]")
    page.page.wait_for_function(
        "n => document.querySelectorAll('[data-testid=table-body] tr').length === n", arg=len(probed))
    heads = [h.strip() for h in table.locator("thead th").all_inner_texts()]
    for name in ("source", "target", "category", "loss", "ppl.", "tok. acc.", "conf.", "var.", "region"):
        assert any(h.startswith(name) for h in heads), (name, heads)
    assert not any(h.startswith(("gold", "pred", "p(gold)")) for h in heads), heads

    want = outputs.set_index("id")
    target_of = dict(zip(probed["id"], probed["target"], strict=True))
    text_of = probed.set_index("id")["text"]
    for row in table.locator("[data-testid=table-body] tr").all():
        i = int(row.get_attribute("data-id"))
        cells = {c: row.locator(f"td[data-col={c}]").inner_text()
                 for c in ("target", "text", "loss", "perplexity", "token_accuracy", "label")}
        assert cells["target"] == target_of[i].strip()
        assert cells["text"] == text_of[i].strip()
        assert float(cells["loss"]) == pytest.approx(want.loc[i, "loss"], abs=6e-4)
        assert float(cells["perplexity"]) == pytest.approx(want.loc[i, "perplexity"], abs=0.06, rel=1e-4)
        accuracy = float(cells["token_accuracy"].rstrip("%"))
        assert accuracy == pytest.approx(100 * want.loc[i, "token_accuracy"], abs=0.06)
        assert cells["label"] == gen["topics"][i]

    # sorted by perplexity: highest first, as the recorded outputs order them
    page.page.click("[data-testid=sort-perplexity]")
    order = outputs.sort_values("perplexity", ascending=False)["id"].tolist()
    page.page.wait_for_function(
        "first => document.querySelector('[data-testid=table-body] tr')?.dataset.id === String(first)", arg=order[0])
    rows = table.locator("[data-testid=table-body] tr")
    shown = [int(i) for i in rows.evaluate_all("rs => rs.map(r => r.dataset.id)")]
    assert shown == order
    table.screenshot(path=str(artifacts / "generative-table.png"))

    # the search finds targets, not only sources
    word = max(re.findall(r"[A-Za-z]{4,}", target_of[order[0]]), key=len)
    page.page.fill("[data-testid=table-search]", word)
    matches = [i for i in probed["id"] if word.lower() in f"{target_of[i]} {text_of[i]}".lower()]
    page.page.wait_for_function(
        "n => document.querySelector('[data-testid=table-count]')?.dataset.total === String(n)", arg=len(matches))
    assert order[0] in matches
    assert_no_console_errors(page)


def test_tooltip_datamap_filters_and_curves_speak_the_task(page, gen_server, gen, artifacts):
    run, _, probed, outputs = recorded(gen)
    open_app(page, gen_server, "run=gen")
    wait_drawn(page, f"gen|{STEP}|3|pca")

    # the hover card: source and target, loss, perplexity, token accuracy; no gold, no prediction
    example = int(probed["id"].iloc[5])
    hover(page, example)
    tip = page.page.locator("[data-testid=tooltip]")
    page.page.wait_for_selector("[data-testid=tooltip-target]")
    text = tip.inner_text()
    row = probed.set_index("id").loc[example]
    assert row["text"].strip()[:30] in text and row["target"].strip()[:30] in text, text
    for word in ("loss", "perplexity", "token acc.", "category"):
        assert word in text, (word, text)
    assert "gold" not in text and "pred" not in text, text
    page.page.screenshot(path=str(artifacts / "generative-tooltip.png"), clip={**tip.bounding_box(), "x": 0, "y": 0,
                         "width": 1600, "height": 1000})
    page.page.mouse.move(1, 1)

    # the data map: confidence is the mean target-token probability, correctness the token accuracy
    dm = page.page.locator("[data-testid=datamap-view]")
    assert "mean target-token probability" in dm.inner_text()
    assert "Token accuracy" in dm.locator("[data-testid=legend]").inner_text()
    dm.screenshot(path=str(artifacts / "generative-datamap.png"))

    # the filters: category, region, loss; no prediction, no correctness
    page.page.click("[data-testid=projection-filter-toggle]")
    bar = page.page.locator("[data-testid=projection-filters]")
    assert bar.locator("[data-testid=proj-filter-pred]").count() == 0
    assert bar.locator("[data-testid=proj-filter-correct]").count() == 0
    assert bar.locator("[data-testid=proj-filter-label]").count() == 1
    assert bar.locator("[data-testid=proj-filter-region]").count() == 1
    cut = float(np.median(outputs["loss"]))
    page.page.fill("[data-testid=proj-filter-loss-max]", f"{cut:.4f}")
    page.page.press("[data-testid=proj-filter-loss-max]", "Tab")
    kept = int((outputs["loss"] <= round(cut, 4)).sum())
    page.page.wait_for_function(
        "n => document.querySelector('[data-testid=projection-plot]').dataset.shown === String(n)", arg=kept)
    shoot(page, "[data-testid=projection-view]", artifacts, "generative-projection-filter")
    page.page.click("[data-testid=proj-filter-clear]")

    # the training curves: token accuracy (checkpoints and training steps), perplexity, loss
    curves = page.page.locator("[data-testid=training-curves]")
    kinds = curves.locator("[data-testid=curves-metric] button").all_inner_texts()
    assert kinds == ["Token accuracy", "Perplexity", "Loss"], kinds
    metrics = {k for ck in run.checkpoints for k in ck.metrics}
    accuracy = sorted(k.replace("_", " ") for k in metrics if "token_accuracy" in k)
    assert accuracy, metrics
    legend = curves.locator("[data-testid=curves-chart] .legend").inner_text()
    for name in [*accuracy, "training token accuracy", "training mean target-token probability"]:
        assert name in legend, (name, legend)
    assert curves.locator("[data-testid=curves-chart] path[stroke-dasharray]").count() == 2
    curves.screenshot(path=str(artifacts / "generative-curves-token-accuracy.png"))
    curves.locator("[data-testid=curves-metric] button", has_text="Perplexity").click()
    perplexity = sorted(k.replace("_", " ") for k in metrics if "perplexity" in k)
    assert perplexity, metrics
    page.page.wait_for_function(
        "n => document.querySelector('[data-testid=curves-chart] .legend').innerText.includes(n)", arg=perplexity[0])
    legend = curves.locator("[data-testid=curves-chart] .legend").inner_text()
    assert all(name in legend for name in perplexity) and "token accuracy" not in legend, legend
    assert curves.locator("[data-testid=curves-chart] path").count() == len(perplexity)
    curves.screenshot(path=str(artifacts / "generative-curves-perplexity.png"))
    assert_no_console_errors(page)


def test_comparison_lays_out_the_chosen_stack_in_both_panes(page, gen_server, gen, artifacts):
    run, ck, probed, _ = recorded(gen)
    encoder_layers = ck.load_model()[0].config.num_layers
    first = run.checkpoints[0].step
    open_app(page, gen_server, "run=gen&pstack=encoder")
    wait_drawn(page, f"gen|{STEP}|{encoder_layers}|pca|encoder")
    page.page.click("[data-testid=compare-toggle]")
    for pane, step in (("compare-a", STEP), ("compare-b", first)):
        page.page.wait_for_function(
            "([t, k]) => { const e = document.querySelector(`[data-testid=${t}-plot]`);"
            " return e && e.dataset.drawn === k && e.dataset.state === 'drawn'; }",
            arg=[pane, f"gen|{step}|{encoder_layers}|pca|encoder"])
        assert page.page.evaluate(INK_JS, f"[data-testid={pane}-scatter]") > 100
    # the right pane's layers are the encoder's, and its caption names the stack
    options = page.page.locator("[data-testid=compare-layer] option").all_inner_texts()
    assert len(options) == encoder_layers + 1, options
    assert "Encoder" in page.page.inner_text("[data-testid=comparison-view]")
    # one example's point is found in both panes
    example = int(probed["id"].iloc[0])
    for where in ("left", "right"):
        assert page.page.evaluate("([id, w]) => window.__t3vis.pointPosition(id, w)", [example, where]) is not None
    page.page.locator("[data-testid=comparison-view]").screenshot(path=str(artifacts / "generative-comparison.png"))
    assert_no_console_errors(page)
