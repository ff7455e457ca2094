"""A data-map selection and the table agree: on a 3-class run recorded by a plain loop that
observes training examples it never registered (no text), the viewer says how many selected
examples are not probed and how many have no text, next to the selection count and in the
table's header; and the data map's regions state their rule, split at 1/3 for 3 classes."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from conftest import make_labels, make_model, make_texts  # tests/conftest.py

import t3vis
from t3vis.server.launch import BackgroundServer

from .browser_support import assert_no_console_errors, lasso, open_app, selection_size, table_total

N_PROBE = 12                              # ids 0..11: 6 training + 6 validation probes
UNREGISTERED = list(range(500, 530))      # observed by the loop, never given to add_examples: no text
REGISTERED = list(range(900, 904))        # observed and registered: text, but not probed


def record_three_class_run(path):
    """A plain loop: three epochs over the training probes, the registered and the unregistered ids."""
    import torch

    from t3vis import Recorder

    model, tokenizer = make_model("bert", num_labels=3, seed=8)
    texts, labels = make_texts(N_PROBE, seed=41), make_labels(N_PROBE, num_labels=3, seed=41)
    half = N_PROBE // 2
    rec = Recorder(path, model, tokenizer, texts, labels, splits=["train"] * half + ["validation"] * half,
                   batch_size=16, label_names=["negative", "neutral", "positive"], progress=False)
    reg_texts, reg_labels = make_texts(len(REGISTERED), seed=42), make_labels(len(REGISTERED), 3, seed=42)
    rec.add_examples(REGISTERED, reg_texts, reg_labels)
    train_texts = texts[:half] + reg_texts + make_texts(len(UNREGISTERED), seed=43)
    train_labels = torch.tensor(labels[:half] + reg_labels + make_labels(len(UNREGISTERED), 3, seed=43))
    train_ids = torch.tensor(list(range(half)) + REGISTERED + UNREGISTERED)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
    for epoch in range(3):
        logits = model(**tokenizer(train_texts, padding=True, return_tensors="pt")).logits
        rec.observe(train_ids, logits, train_labels, epoch=epoch)
        loss = torch.nn.functional.cross_entropy(logits, train_labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        rec.snapshot(step=epoch, epoch=float(epoch))
    rec.close()
    return path


@pytest.fixture(scope="module")
def three(tmp_path_factory, built_frontend):
    from t3vis.server import create_app

    path = record_three_class_run(tmp_path_factory.mktemp("three") / "three")
    live = BackgroundServer(create_app([path], static_dir=built_frontend.parent))   # the viewer under test
    yield {"server": live, "path": path}
    live.stop()


def counts_from_files(path, ids) -> dict:
    """What the selection holds, read straight from the run's files with pandas."""
    run = t3vis.open_run(path)
    examples: pd.DataFrame = run.examples
    texted = set(examples.loc[examples["text"].fillna("").str.strip() != "", "id"].astype(int))
    probed = set(examples.loc[examples["probe_row"] >= 0, "id"].astype(int))
    ids = set(ids)
    return {"n": len(ids), "not_probed": len(ids - probed), "without_text": len(ids - texted),
            "listed": len(ids & set(examples["id"].astype(int)))}


def number_before(text: str, words: str) -> int:
    found = re.search(r"([\d,]+) " + re.escape(words), text)
    assert found, f"no '<n> {words}' in {text!r}"
    return int(found.group(1).replace(",", ""))


def test_a_lasso_on_the_data_map_says_what_the_table_cannot_list(page, three):
    open_app(page, three["server"], "run=three")
    page.page.wait_for_selector("[data-testid=datamap-scatter][data-state=drawn]")
    dm_ids = sorted(t3vis.open_run(three["path"]).dynamics_observations()["id"].unique().astype(int).tolist())
    expected = counts_from_files(three["path"], dm_ids)
    # by construction: 6 training probes + 4 registered + 30 unregistered; 34 not probed, 30 without text
    assert expected == {"n": 40, "not_probed": 34, "without_text": 30, "listed": 10}
    page.page.wait_for_timeout(300)
    lasso(page, "[data-testid=datamap-scatter]", 1.0)
    page.page.wait_for_selector("[data-testid=selection-chip]")
    assert selection_size(page) == expected["n"]
    # the table lists the examples with text; its header says why the rest are missing
    page.page.wait_for_function("document.querySelector('[data-testid=table-scope]')?.textContent.includes('without')")
    scope = page.page.inner_text("[data-testid=table-scope]")
    assert f"selection of {expected['n']}" in scope
    assert number_before(scope, "not probed") == expected["not_probed"]
    assert number_before(scope, "without text") == expected["without_text"]
    assert "Recorder.add_examples" in scope
    assert table_total(page) == expected["listed"]
    # the same next to the selection count in the header, and under the data map
    notes = page.page.inner_text("[data-testid=selection-notes]")
    assert number_before(notes, "not probed") == expected["not_probed"]
    assert number_before(notes, "without text") == expected["without_text"]
    dm_note = page.page.inner_text("[data-testid=datamap-selection-note]")
    assert number_before(dm_note, "without text") == expected["without_text"]
    assert_no_console_errors(page)


def test_a_selection_of_probed_examples_with_text_has_no_notes(page, three):
    open_app(page, three["server"], "run=three")
    page.page.wait_for_selector("[data-testid=datamap-scatter][data-state=drawn]")
    page.page.evaluate("ids => window.__t3vis.select(ids)", [0, 1, 2, 900, 500])
    page.page.wait_for_function(
        "document.querySelector('[data-testid=table-scope]')?.textContent.includes('not probed')")
    scope = page.page.inner_text("[data-testid=table-scope]")
    expected = counts_from_files(three["path"], [0, 1, 2, 900, 500])
    assert (expected["not_probed"], expected["without_text"]) == (2, 1)      # 900 and 500; 500 has no text
    assert number_before(scope, "not probed") == 2 and number_before(scope, "without text") == 1
    page.page.evaluate("ids => window.__t3vis.select(ids)", [0, 1, 2])
    page.page.wait_for_function("document.querySelector('[data-testid=table-count]')?.dataset.total === '3'")
    page.page.wait_for_timeout(300)
    assert "not probed" not in page.page.inner_text("[data-testid=table-scope]")
    assert page.page.locator("[data-testid=selection-notes]").count() == 0
    assert_no_console_errors(page)


def test_the_regions_state_their_rule_for_three_classes(page, three):
    open_app(page, three["server"], "run=three")
    page.page.wait_for_selector("[data-testid=datamap-scatter][data-state=drawn]")
    captions = page.page.locator("[data-testid=datamap-view] [data-testid=region-label]").all_text_contents()
    assert "hard-to-learn · conf. < 0.33" in captions and "easy-to-learn · conf. ≥ 0.33" in captions
    assert "1/3 classes" in page.page.inner_text("[data-testid=datamap-rule]")
    page.page.locator("[data-testid=datamap-view] [role=radio]", has_text="Region").click()
    legend = page.page.locator("[data-testid=datamap-view] [data-testid=legend]").inner_text()
    dyn = t3vis.open_run(three["path"]).dynamics()
    # the legend states the rule of each region that has examples, with its numbers
    if (dyn["region"] == "hard-to-learn").any():
        assert "confidence < 0.33 (= 1/3 classes)" in legend
    if (dyn["region"] == "easy-to-learn").any():
        assert "confidence ≥ 0.33 (= 1/3 classes)" in legend
    assert (dyn["region"] == "ambiguous").any() and "variability >" in legend
    # the regions drawn follow the rule: nothing below 1/3 is easy, nothing at or above it hard
    calm = dyn[dyn["region"] != "ambiguous"]
    assert (calm.loc[calm["region"] == "easy-to-learn", "confidence"] >= 1 / 3).all()
    assert (calm.loc[calm["region"] == "hard-to-learn", "confidence"] < 1 / 3).all()
    assert_no_console_errors(page)
