"""t3vis.show in Jupyter Notebook 7 (the notebook package's own page, not JupyterLab's): the widget
renders one view of a recorded run and answers over the comm there too."""

from __future__ import annotations

from server_fixtures import record_tiny_run

from .jupyter_support import (
    console_errors,
    run_cell,
    wait_cell_done,
    wait_kernel_connected,
    wait_kernel_idle,
    write_notebook,
)

CELL = 'import t3vis\nt3vis.show("tiny", view="projection", height=460)'


def run_in_notebook7(lab_page, lab, name: str, source: str) -> list[str]:
    """Opens a one-cell notebook in Notebook 7's page, runs the cell; the page's console errors."""
    write_notebook(lab.root / name, [source])
    page = lab_page.page
    page.goto(f"{lab.url}/notebooks/{name}?token={lab.token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    wait_kernel_connected(lab, name, 60)
    wait_kernel_idle(page, 60_000)
    run_cell(page, 0)
    wait_cell_done(page, 0, timeout=120)
    return console_errors(lab_page)


def test_the_widget_renders_a_view_in_jupyter_notebook(built_widget, lab_page, jupyter_lab, artifacts):
    # what Notebook 7's page logs by itself here (it reports one error of its own, widget or not)
    own_errors = set(run_in_notebook7(lab_page, jupyter_lab, "plain.ipynb", "1 + 1"))
    lab_page.errors.clear()
    record_tiny_run(jupyter_lab.root / "tiny")
    run_in_notebook7(lab_page, jupyter_lab, "classic.ipynb", CELL)
    page = lab_page.page
    views = page.locator("[data-testid=views]")
    views.wait_for(timeout=60_000)
    assert views.get_attribute("data-view") == "projection"
    page.locator("[data-testid=projection-plot][data-drawn^='tiny|5|']").wait_for(timeout=60_000)
    page.locator("[data-testid=projection-plot] [data-state=drawn]").wait_for(timeout=30_000)
    assert page.locator("[data-testid=projection-plot]").get_attribute("data-points-drawn") != "0"
    page.screenshot(path=str(artifacts / "notebook7-widget.png"))
    assert not set(console_errors(lab_page)) - own_errors, console_errors(lab_page)
