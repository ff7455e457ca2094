"""Notebook tests: a real JupyterLab (one per session, isolated in a temp folder) driven in headless
chromium, with the same chromium and launch arguments as the browser tests.

A failing test gets the server's log in its report, and a screenshot of the page in test-artifacts/.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from browser import conftest as browser_suite  # tests/browser/conftest.py

from .jupyter_support import JupyterLab, LabPage, start_jupyter_lab, stop_jupyter_lab

ARTIFACTS = browser_suite.ARTIFACTS

LOG_TAIL_LINES = 200


@pytest.fixture(scope="session")
def jupyter_lab(tmp_path_factory) -> JupyterLab:
    started = time.monotonic()
    lab = start_jupyter_lab(tmp_path_factory.mktemp("jupyter"))
    print(f"\njupyter lab answered at {lab.url} after {time.monotonic() - started:.1f} s")
    yield lab
    stop_jupyter_lab(lab)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure: the server's log in the report (what the kernel and server said), and a flag for
    `lab_page` to save a screenshot."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        item.notebook_failed = True
        lab = item.funcargs.get("jupyter_lab") if hasattr(item, "funcargs") else None
        if lab is not None:
            tail = "\n".join(lab.log().splitlines()[-LOG_TAIL_LINES:])
            report.sections.append(("jupyter lab server log", tail))


@pytest.fixture
def lab_page(browser, jupyter_lab, request):  # browser: tests/conftest.py's, shared with the browser tests
    """A fresh page (console errors recorded); the test's kernels are shut down after it."""
    for stale in ARTIFACTS.glob(f"failed-{request.node.name}.*"):   # an earlier run's failure would mislead
        stale.unlink()
    context = browser.new_context(viewport={"width": 1400, "height": 900}, device_scale_factor=1)
    context.set_default_timeout(20_000)
    wrapped = LabPage(context.new_page())
    yield wrapped
    if getattr(request.node, "notebook_failed", False):   # what the page showed when the test failed
        ARTIFACTS.mkdir(exist_ok=True)
        wrapped.page.screenshot(path=str(ARTIFACTS / f"failed-{request.node.name}.png"), full_page=True)
        (ARTIFACTS / f"failed-{request.node.name}.log").write_text(
            "console errors:\n" + "\n".join(wrapped.errors) + "\n\njupyter lab log:\n" + jupyter_lab.log())
    context.close()
    jupyter_lab.shutdown_kernels()


@pytest.fixture(scope="session")
def built_widget() -> Path:
    """The widget's module as `make frontend` builds it, not older than the viewer's sources."""
    from t3vis.notebook.widget import WIDGET_MODULE

    if not WIDGET_MODULE.is_file():
        pytest.fail(f"the notebook widget is not built ({WIDGET_MODULE} is missing): run `make frontend`",
                    pytrace=False)
    frontend = Path(__file__).resolve().parents[2] / "frontend"
    sources = [f for f in (frontend / "src").rglob("*") if f.is_file()] + \
        [frontend / n for n in ("package-lock.json", "vite.widget.config.ts") if (frontend / n).exists()]
    newer = [str(f.relative_to(frontend)) for f in sources if f.stat().st_mtime > WIDGET_MODULE.stat().st_mtime]
    if newer:
        pytest.fail(f"the widget build is older than {', '.join(newer[:3])}: run `make frontend`", pytrace=False)
    return WIDGET_MODULE
