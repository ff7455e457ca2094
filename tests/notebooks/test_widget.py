"""t3vis.show in a real JupyterLab: a notebook trains a tiny model with the Trainer callback and shows
the widget; the widget follows the run while the training cell keeps the kernel busy, a lasso in it
is read back in a Python cell as a DataFrame, and a selection set from Python shows in it."""

from __future__ import annotations

import json
from pathlib import Path

from .jupyter_support import (
    cell,
    cell_output_text,
    console_errors,
    execution_count,
    open_notebook,
    run_cell,
    wait_cell_done,
    wait_cell_output,
    write_notebook,
)

TESTS = Path(__file__).resolve().parents[1]
STEPS, EVAL_EVERY, STEP_PAUSE_S = 12, 3, 1.0
CHECKPOINTS = STEPS // EVAL_EVERY + 1           # step 0 and every evaluation

SETUP = f'''
import json, sys, time
sys.path.insert(0, {str(TESTS)!r})
import torch
from conftest import make_labels, make_model, make_texts
from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

import t3vis
from t3vis.integrations.transformers import T3VisCallback

torch.manual_seed(0)
model, tokenizer = make_model("bert")
train_texts, train_labels = make_texts(32, seed=1), make_labels(32, seed=1)
probe_texts, probe_labels = make_texts(40, seed=2), make_labels(40, seed=2)


class Rows(torch.utils.data.Dataset):
    def __init__(self, texts, labels):
        self.rows = [{{**tokenizer(t), "labels": y}} for t, y in zip(texts, labels)]
    def __len__(self):
        return len(self.rows)
    def __getitem__(self, i):
        return self.rows[i]


class Pace(TrainerCallback):
    """Slow steps, so the test sees the widget follow the run while the cell runs."""
    def on_step_end(self, *args, **kwargs):
        time.sleep({STEP_PAUSE_S})


callback = T3VisCallback("run", tokenizer, probe_texts, probe_labels, batch_size=20)
args = TrainingArguments(output_dir="out", max_steps={STEPS}, per_device_train_batch_size=8, eval_strategy="steps",
                         eval_steps={EVAL_EVERY}, save_strategy="no", report_to=[], use_cpu=True,
                         logging_strategy="no", disable_tqdm=True, learning_rate=1e-3)
trainer = Trainer(model=model, args=args, train_dataset=Rows(train_texts, train_labels),
                  eval_dataset=Rows(probe_texts[:8], probe_labels[:8]),
                  data_collator=DataCollatorWithPadding(tokenizer), callbacks=[callback, Pace()])
w = t3vis.show(callback, height=900)
w
'''
TRAIN = 'trainer.train()\nprint("trained", w.live_in_busy_kernel)'
READ = """
chosen = w.selection
print("ids", json.dumps(sorted(int(i) for i in chosen.index)))
print("texts", chosen["text"].notna().sum())
"""
SET = 'w.selection = [1, 2, 3, 5, 8]\nprint("selected")'
ONE_VIEW = 't3vis.show("run", view="datamap", height=480)'

SLIDER = "[data-testid=checkpoint-slider]"


def slider_max(page) -> int | None:
    """The widget's checkpoint slider's last index (None before the run opens). Playwright's CSS
    locators pierce the widget's open shadow root."""
    found = page.locator(SLIDER)
    return int(found.get_attribute("max")) if found.count() else None


def inside(polygon, x: float, y: float) -> bool:
    """Even-odd rule: whether (x, y) is inside the polygon (page pixels)."""
    hit = False
    for (x1, y1), (x2, y2) in zip(polygon, polygon[1:] + polygon[:1]):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            hit = not hit
    return hit


def test_the_widget_follows_training_and_its_lasso_is_read_in_python(built_widget, lab_page, jupyter_lab, artifacts):
    write_notebook(jupyter_lab.root / "live.ipynb", [SETUP, TRAIN, READ, SET, ONE_VIEW])
    page = lab_page.page
    open_notebook(page, jupyter_lab, "live.ipynb")

    run_cell(page, 0)
    wait_cell_done(page, 0, timeout=120)
    # the run is not written yet: the widget waits for it, and says so
    page.locator("[data-testid=run-state][data-state=waiting]").wait_for(timeout=30_000)

    # training: the slider grows while the cell runs (the kernel answers the widget from a subshell)
    run_cell(page, 1)
    seen_while_busy: set[int] = set()
    while execution_count(page, 1) is None:
        n = slider_max(page)
        if n is not None:
            seen_while_busy.add(n + 1)
        page.wait_for_timeout(150)
    assert "trained True" in cell_output_text(page, 1)
    assert len(seen_while_busy) >= 3, f"checkpoint counts seen while the cell ran: {sorted(seen_while_busy)}"
    assert max(seen_while_busy) >= CHECKPOINTS - 1
    # ... and after it, every checkpoint, with follow-latest on the last one
    page.locator(f"{SLIDER}[max='{CHECKPOINTS - 1}']").wait_for(timeout=10_000)
    assert page.locator("[data-testid=checkpoint-info]").inner_text().startswith(f"step {STEPS}")

    # a lasso over the left half of the projection, with the mouse
    plot = page.locator("[data-testid=projection-plot]")
    page.locator(f"[data-testid=projection-plot][data-drawn^='run|{STEPS}|']").wait_for(timeout=60_000)
    plot.locator("[data-state=drawn]").wait_for(timeout=60_000)
    plot.scroll_into_view_if_needed()
    box = plot.bounding_box()
    left, top, right, bottom = box["x"] + 6, box["y"] + 6, box["x"] + box["width"] * 0.5, box["y"] + box["height"] - 6
    polygon = [(left, top), (right, top), (right, bottom), (left, bottom)]
    mouse = page.mouse
    mouse.move(*polygon[0])
    mouse.down()
    for x, y in [*polygon[1:], polygon[0]]:
        mouse.move(x, y, steps=12)
    mouse.up()
    chip = page.locator("[data-testid=selection-chip]")
    chip.wait_for(timeout=10_000)
    shown = int(chip.inner_text().split()[0].replace(",", ""))
    # which points the page drew inside the polygon: the widget's own positions of every example
    positions = page.evaluate("ids => ids.map((i) => window.__t3vis.pointPosition(i))", list(range(40)))
    expected = sorted(i for i, pos in enumerate(positions) if pos is not None and inside(polygon, *pos))
    assert 0 < len(expected) < 40 and shown == len(expected)
    page.screenshot(path=str(artifacts / "notebook-widget-lasso.png"), full_page=False)

    run_cell(page, 2)
    text = wait_cell_output(page, 2, "texts", timeout=60)
    lines = dict(line.split(" ", 1) for line in text.strip().splitlines())
    assert json.loads(lines["ids"]) == expected
    assert int(lines["texts"]) == len(expected)          # each selected example comes with its text

    # a selection set from Python shows in the widget
    run_cell(page, 3)
    wait_cell_output(page, 3, "selected", timeout=60)
    chip.filter(has_text="5 examples").wait_for(timeout=10_000)

    # one view alone: the data map, and no other view, in the new widget
    run_cell(page, 4)
    alone = cell(page, 4).locator("[data-testid=views]")
    alone.wait_for(timeout=60_000)
    assert alone.get_attribute("data-view") == "datamap"
    cell(page, 4).locator("[data-testid=datamap-view] canvas").first.wait_for(timeout=30_000)
    views = alone.locator("section[data-testid$='-view'], section[data-testid=data-table], "
                          "section[data-testid=head-grid], section[data-testid=training-curves]")
    assert [views.nth(i).get_attribute("data-testid") for i in range(views.count())] == ["datamap-view"]
    alone.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "notebook-widget-one-view.png"))
    assert not console_errors(lab_page), console_errors(lab_page)
