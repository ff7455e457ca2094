"""A served run whose run.json is damaged: the viewer still opens the readable run, lists the
damaged one in the run picker as damaged, and, when it is picked, says why it cannot open."""

from __future__ import annotations

import json
import shutil

import pytest

from t3vis.server.launch import BackgroundServer

from .browser_support import open_app

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def damaged_server(tiny, built_frontend, tmp_path_factory):
    from t3vis.server import create_app

    broken = shutil.copytree(tiny["path"], tmp_path_factory.mktemp("damaged") / "broken")
    meta = json.loads((broken / "run.json").read_text())
    del meta["num_layers"]
    (broken / "run.json").write_text(json.dumps(meta))
    live = BackgroundServer(create_app([broken, tiny["path"]]))     # the damaged run first on purpose
    yield live
    live.stop()


def test_a_damaged_run_is_listed_and_explained_and_the_readable_one_opens(page, damaged_server):
    page.page.goto(damaged_server.url + "/")
    page.page.wait_for_selector("#app [data-testid=views]")
    picker = page.page.locator("[data-testid=run-picker]")
    assert picker.input_value() == "tiny"                           # a readable run first, not list[0]
    options = picker.locator("option").all_text_contents()
    assert any(o.startswith("broken") and "damaged" in o for o in options), options
    assert any(o.startswith("tiny") and "probes" in o for o in options), options

    picker.select_option("broken")
    banner = page.page.locator("[data-testid=run-error]")
    banner.wait_for()
    text = banner.inner_text()
    assert "run.json" in text and "num_layers" in text, text        # names the file and the field
    assert banner.get_by_role("button", name="tiny").count() == 1    # offers the readable run only
    assert banner.get_by_role("button", name="broken").count() == 0

    banner.get_by_role("button", name="tiny").click()
    open_app_ready = page.page.locator("#app [data-testid=views]")
    open_app_ready.wait_for()
    assert not [e for e in page.errors if e.startswith("page error")], page.errors


def test_the_readable_run_of_a_server_with_a_damaged_one_opens_fully(page, damaged_server):
    open_app(page, damaged_server, "run=tiny")
