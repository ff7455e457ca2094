"""Drive a real JupyterLab in headless Chromium: start the server, write and open notebooks, run
cells and read their outputs, through the DOM only (JupyterLab exposes no app object to pages).

The server is isolated from the home folder (its config, data, runtime, settings, workspaces and
IPython dirs live in a temp folder), offline (no news, update checks or PyPI extension manager),
and its only kernel, `python3`, is this interpreter with ipykernel.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

STARTUP_TIMEOUT_S = 60

# JupyterLab settings written before the start: nothing calls out, and every cell stays in the DOM
# (the default windowing would leave cells out of the page while they are off screen), and a notebook
# starts its kernel without asking (a "Select Kernel" dialog can pop up on the first load otherwise).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none", "autoStartDefaultKernel": True},
}


@dataclass
class JupyterLab:
    """A running `jupyter lab` server: its base url, token and root folder (where notebooks go)."""

    url: str
    token: str
    root: Path
    log_path: Path
    process: subprocess.Popen = field(repr=False)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10) -> Any:
        """Call the server's REST API (`path` starts with /api/)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                         headers={"Authorization": f"token {self.token}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode()
        return json.loads(text) if text else None

    def shutdown_kernels(self) -> None:
        """Stop every session's kernel, so a test leaves no kernel running for the next one."""
        for session in self.api("GET", "/api/sessions"):
            self.api("DELETE", f"/api/sessions/{session['id']}")
        for kernel in self.api("GET", "/api/kernels"):
            self.api("DELETE", f"/api/kernels/{kernel['id']}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_kernelspec(data_dir: Path) -> Path:
    """The `python3` kernelspec, pointing at this very interpreter (the venv's), whatever is on PATH."""
    spec_dir = data_dir / "kernels" / "python3"
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (ipykernel)", "language": "python", "metadata": {"debugger": False}}
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    return spec_dir


def write_lab_settings(settings_dir: Path) -> None:
    for plugin, values in LAB_SETTINGS.items():
        path = settings_dir / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def start_jupyter_lab(base: Path) -> JupyterLab:
    """Start `python -m jupyterlab` on a free port of 127.0.0.1 with a random token, everything it
    writes under `base`, and wait until /api/status answers."""
    dirs = {name: base / name for name in ("root", "config", "data", "runtime", "ipython", "settings", "workspaces")}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    write_kernelspec(dirs["data"])
    write_lab_settings(dirs["settings"])
    env = {**os.environ,
           "JUPYTER_CONFIG_DIR": str(dirs["config"]), "JUPYTER_DATA_DIR": str(dirs["data"]),
           "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]), "IPYTHONDIR": str(dirs["ipython"]),
           "PYTHONUNBUFFERED": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    env.pop("JUPYTER_PATH", None)
    env.pop("JUPYTER_CONFIG_PATH", None)
    port, token = free_port(), secrets.token_hex(16)
    command = [sys.executable, "-m", "jupyterlab", "--no-browser",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
               "--ServerApp.allow_root=True",   # containers and CI often run as root
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={dirs['root']}",
               "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
               "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
               f"--LabApp.user_settings_dir={dirs['settings']}", f"--LabApp.workspaces_dir={dirs['workspaces']}"]
    log_path = base / "jupyter-lab.log"
    with log_path.open("wb") as log:
        # its own process group: stopping it also stops the kernels it started
        process = subprocess.Popen(command, cwd=dirs["root"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    lab = JupyterLab(url=f"http://127.0.0.1:{port}", token=token, root=dirs["root"], log_path=log_path,
                     process=process)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {process.returncode} while starting:\n{lab.log()}")
        try:
            lab.api("GET", "/api/status", timeout=2)
            return lab
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                stop_jupyter_lab(lab)
                raise RuntimeError(f"jupyter lab did not answer /api/status within {STARTUP_TIMEOUT_S} s:\n"
                                   f"{lab.log()}") from None
            time.sleep(0.2)


def stop_jupyter_lab(lab: JupyterLab, timeout: float = 20) -> None:
    """Ask the server to shut down (it stops its kernels), then make sure its process group is gone."""
    if lab.process.poll() is None:
        try:
            lab.api("POST", "/api/shutdown", timeout=5)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            lab.process.terminate()
        try:
            lab.process.wait(timeout)
        except subprocess.TimeoutExpired:
            lab.process.kill()
            lab.process.wait(5)
    with contextlib.suppress(ProcessLookupError):   # kernels that outlived the server (none, normally)
        os.killpg(lab.process.pid, signal.SIGKILL)


# --- notebooks ------------------------------------------------------------------------------------

def write_notebook(path: Path, cells: list[str]) -> Path:
    """An nbformat v4 notebook of code cells, bound to the `python3` kernel (so no kernel dialog)."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


# --- the page -------------------------------------------------------------------------------------

@dataclass
class LabPage:
    """A Playwright page with its console errors recorded (as the browser suite's Page does)."""

    page: Any
    errors: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))


def console_errors(p: LabPage) -> list[str]:
    return list(p.errors)


NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook"
CELL = f"{NOTEBOOK} .jp-Cell"
# The toolbar's execution indicator follows the notebook's own executions; the status bar's kernel
# status does not (with a subshell answering comm messages it says Idle while a cell still runs).
KERNEL_STATUS = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator"


def open_notebook(page, lab: JupyterLab, name: str, timeout: float = 60.0) -> None:
    """Open `name` (relative to the lab's root) in a new, empty workspace and wait until its kernel
    is connected and idle.

    A fresh named workspace per open is the workspace reset without `?reset`, which reloads the page
    once JupyterLab has started (a wait could then pass on the page about to go away).
    """
    workspace = f"t{next(_workspace_numbers)}"
    page.goto(f"{lab.url}/lab/workspaces/{workspace}/tree/{name}?token={lab.token}")
    page.wait_for_selector(CELL, timeout=timeout * 1000)
    page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Spinner", state="detached",
                           timeout=timeout * 1000)
    wait_kernel_connected(lab, name, timeout)
    wait_kernel_idle(page, timeout)
    dismiss_dialogs(page)


_workspace_numbers = itertools.count(1)


def wait_kernel_connected(lab: JupyterLab, name: str, timeout: float = 60.0) -> None:
    """Wait until the server has a session for notebook `name` whose kernel has a page connected
    (the toolbar's status says idle before any kernel exists, so it alone does not tell)."""
    deadline = time.monotonic() + timeout
    while True:
        sessions = [s for s in lab.api("GET", "/api/sessions") if s["path"] == name]
        if any(s["kernel"] and s["kernel"].get("connections", 0) > 0 for s in sessions):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"no kernel connected for {name} within {timeout} s; sessions: {sessions}")
        time.sleep(0.1)


def dismiss_dialogs(page) -> None:
    """Close any modal dialog JupyterLab opened (kernel choice, ...) and any toast notification."""
    for button in page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept").all():
        button.click()
    for close in page.locator(".jp-toast-container .jp-toast-button, .Toastify__close-button").all():
        close.click()


def kernel_status(page) -> str:
    """The notebook toolbar's kernel status: idle, busy, starting, ... ('' before it shows one)."""
    return page.locator(KERNEL_STATUS).first.get_attribute("data-status") or ""


def kernel_busy(page) -> bool:
    return kernel_status(page) == "busy"


def wait_kernel_idle(page, timeout: float = 30.0) -> None:
    page.wait_for_function("sel => document.querySelector(sel)?.dataset.status === 'idle'",
                           arg=KERNEL_STATUS, timeout=timeout * 1000)


def wait_kernel_busy(page, timeout: float = 10.0) -> None:
    page.wait_for_function("sel => document.querySelector(sel)?.dataset.status === 'busy'",
                           arg=KERNEL_STATUS, timeout=timeout * 1000)


def cell(page, index: int):
    return page.locator(CELL).nth(index)


def run_all_cells(page) -> None:
    """Run → Run All Cells, through the menu bar."""
    run_menu_command(page, "Run", "runmenu:run-all")


def run_menu_command(page, menu: str, command: str) -> None:
    page.locator(".lm-MenuBar-item", has_text=menu).first.click()
    page.locator(f".lm-Menu-item[data-command='{command}']").first.click()


def run_cell(page, index: int) -> None:
    """Select cell `index` (by its prompt) and run it without moving on: Run → Run Selected Cell and
    Do not Advance (the menu, not Ctrl+Enter, so that keyboard focus does not matter)."""
    cell(page, index).locator(".jp-InputPrompt").click()
    page.wait_for_function("([sel, i]) => document.querySelectorAll(sel)[i]?.classList.contains('jp-mod-active')",
                           arg=[CELL, index])
    run_menu_command(page, "Run", "notebook:run-cell")


def execution_count(page, index: int) -> int | None:
    """The cell's prompt number: `[3]:` gives 3, a queued or running `[*]:` and an unrun `[ ]:` give None."""
    text = cell(page, index).locator(".jp-InputPrompt").inner_text().strip()
    digits = text.strip("[]: ")
    return int(digits) if digits.isdigit() else None


def cell_output_text(page, index: int) -> str:
    return "\n".join(cell(page, index).locator(".jp-OutputArea-output").all_inner_texts())


def wait_cell_output(page, index: int, expect: str | Callable[[str], bool], timeout: float = 30.0,
                     poll: float = 0.1) -> str:
    """Wait until cell `index`'s output contains `expect` (or `expect(text)` is true); return the text.
    Timeouts here are in seconds, as everywhere in this module."""
    check = (lambda text: expect in text) if isinstance(expect, str) else expect
    deadline = time.monotonic() + timeout
    while True:
        text = cell_output_text(page, index)
        if check(text):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"cell {index} output never matched {expect!r} in {timeout} s; it is:\n{text}")
        page.wait_for_timeout(poll * 1000)


def wait_cell_done(page, index: int, timeout: float = 30.0, previous: int | None = None) -> int:
    """Wait until cell `index` has run (its prompt shows a number other than `previous`, its count
    before this run); return that number."""
    deadline = time.monotonic() + timeout
    while (count := execution_count(page, index)) in (None, previous):
        if time.monotonic() > deadline:
            raise AssertionError(f"cell {index} did not finish in {timeout} s; its output:\n"
                                 f"{cell_output_text(page, index)}")
        page.wait_for_timeout(100)
    return count
