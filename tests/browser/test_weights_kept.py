"""A run whose older checkpoints kept no weights (Recorder(keep_weights="last:1")): at such a
checkpoint the instance view and pruning say so and name the steps that kept them, instead of
sending requests that can only fail; at the checkpoint that kept them, saliency is computed."""

from __future__ import annotations

import pytest
from conftest import make_labels, make_model, make_texts  # tests/conftest.py

from t3vis.server.launch import BackgroundServer

from .browser_support import assert_no_console_errors, open_app

pytestmark = pytest.mark.browser
STEPS = (0, 1, 2)


@pytest.fixture(scope="module")
def last_only_server(built_frontend, tmp_path_factory):
    from t3vis import Recorder, open_run
    from t3vis.server import create_app

    model, tokenizer = make_model("bert", seed=6)
    path = tmp_path_factory.mktemp("weights") / "lastonly"
    rec = Recorder(path, model, tokenizer, make_texts(8, seed=3), make_labels(8, seed=3), batch_size=8,
                   keep_weights="last:1")
    for step in STEPS:
        rec.snapshot(step=step)
    rec.close()
    assert [c.has_weights() for c in open_run(path).checkpoints] == [False, False, True]
    live = BackgroundServer(create_app([path]))
    yield live
    live.stop()


def test_a_checkpoint_without_weights_says_so_and_names_those_with_them(page, last_only_server):
    open_app(page, last_only_server, "run=lastonly&step=0&ex=3")
    note = page.page.locator("[data-testid=no-weights]")
    note.wait_for()
    assert "Checkpoint 0 kept no weights" in note.inner_text() and "kept them: 2" in note.inner_text()
    assert page.page.locator("[data-testid=tokens]").count() == 0
    assert "step 0 kept no weights" in page.page.inner_text("[data-testid=views]")
    assert not [r for r in page.requests if "/instance" in r], page.requests     # nothing sent to fail
    # the checkpoint that kept its weights computes saliency
    page.page.goto(f"{last_only_server.url}/?run=lastonly&step=2&ex=3")
    page.page.wait_for_selector("[data-testid=tokens] .tok")
    assert page.page.locator("[data-testid=no-weights]").count() == 0
    assert_no_console_errors(page)
