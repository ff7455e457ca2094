"""The notebook harness, proven on a plain anywidget defined in a notebook cell: it renders in
JupyterLab, its synced trait reaches the kernel, and its custom messages are handled while a
long cell keeps the kernel busy only when its comm is routed to an ipykernel subshell."""

from __future__ import annotations

import time

from .jupyter_support import (
    cell,
    cell_output_text,
    console_errors,
    execution_count,
    kernel_busy,
    open_notebook,
    run_all_cells,
    run_cell,
    wait_cell_done,
    wait_cell_output,
    wait_kernel_busy,
    wait_kernel_idle,
    write_notebook,
)

# A button counting its clicks in a synced trait, and a ping button whose custom message the
# kernel answers with a pong naming the thread that handled it and whether the busy cell was running.
WIDGET_CELL = '''
import threading

import anywidget
import traitlets


class HarnessWidget(anywidget.AnyWidget):
    _esm = """
    export default {
      render({ model, el }) {
        el.dataset.widget = model.get("label");
        const clicks = document.createElement("button");
        clicks.className = "harness-clicks";
        const showClicks = () => { clicks.textContent = `clicks: ${model.get("clicks")}`; };
        showClicks();
        model.on("change:clicks", showClicks);
        clicks.addEventListener("click", () => {
          model.set("clicks", model.get("clicks") + 1);
          model.save_changes();
        });
        let pings = 0;
        const ping = document.createElement("button");
        ping.className = "harness-ping";
        ping.textContent = "ping";
        ping.addEventListener("click", () => { pings += 1; model.send({ ping: pings }); });
        const pong = document.createElement("output");
        pong.className = "harness-pong";
        model.on("msg:custom", (msg) => {
          if (msg.pong === undefined) return;
          pong.textContent = `pong ${msg.pong} from ${msg.thread}`;
          pong.dataset.pong = String(msg.pong);
          pong.dataset.thread = msg.thread;
          pong.dataset.duringBusyCell = String(msg.during_busy_cell);
        });
        el.append(clicks, ping, pong);
      },
    };
    """
    label = traitlets.Unicode("").tag(sync=True)
    clicks = traitlets.Int(0).tag(sync=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.on_msg(self._answer_ping)

    def _answer_ping(self, widget, content, buffers):
        if "ping" in content:
            self.send({"pong": content["ping"], "thread": threading.current_thread().name,
                       "during_busy_cell": bool(get_ipython().user_ns.get("busy_cell_running"))})
'''

# Route every frontend message of one widget to its own ipykernel 7 subshell thread: the shell
# channel thread asks a comm's `_reply_subshell_for(data, default)` where a comm_msg goes.
# Subshells are created by the subshell manager in the shell channel thread, hence the callback.
ROUTING_CELL = '''
import threading


def create_subshell(kernel, timeout=10.0):
    manager = kernel.shell_channel_thread.manager
    created, result = threading.Event(), {}

    def create():
        try:
            result["id"] = manager._create_subshell()
        except BaseException as err:
            result["error"] = err
        finally:
            created.set()

    manager._shell_channel_io_loop.add_callback(create)
    if not created.wait(timeout):
        raise TimeoutError("the shell channel thread did not create a subshell")
    if "error" in result:
        raise result["error"]
    return result["id"]


def route_to_subshell(widget):
    subshell_id = create_subshell(get_ipython().kernel)
    widget.comm._reply_subshell_for = lambda data, default: subshell_id
    return subshell_id
'''

BUSY_SECONDS = 12
BUSY_CELL = f'''
import time
busy_cell_running = True
time.sleep({BUSY_SECONDS})
busy_cell_running = False
print("slept")
'''


def widget(page, index: int, label: str):
    return cell(page, index).locator(f".jp-OutputArea-output [data-widget={label}]")


def assert_no_console_errors(p):
    errors = console_errors(p)
    assert not errors, f"console errors: {errors}"


def test_widget_renders_in_the_output_area(lab_page, jupyter_lab, artifacts):
    page = lab_page.page
    write_notebook(jupyter_lab.root / "renders.ipynb", [WIDGET_CELL, 'w = HarnessWidget(label="shown")\nw'])
    open_notebook(page, jupyter_lab, "renders.ipynb")
    run_all_cells(page)
    button = widget(page, 1, "shown").locator("button.harness-clicks")
    button.wait_for(state="visible")
    assert button.inner_text() == "clicks: 0"
    assert widget(page, 1, "shown").locator("button.harness-ping").is_visible()
    widget(page, 1, "shown").evaluate("el => el.scrollIntoView({block: 'center'})")
    page.screenshot(path=str(artifacts / "notebook-harness.png"))
    assert_no_console_errors(lab_page)


def test_clicks_reach_the_kernel(lab_page, jupyter_lab):
    page = lab_page.page
    write_notebook(jupyter_lab.root / "clicks.ipynb",
                   [WIDGET_CELL, 'w = HarnessWidget(label="counter")\nw', "print(w.clicks)"])
    open_notebook(page, jupyter_lab, "clicks.ipynb")
    run_all_cells(page)
    assert wait_cell_output(page, 2, lambda text: text.strip() != "").strip() == "0"
    button = widget(page, 1, "counter").locator("button.harness-clicks")
    for _ in range(3):
        button.click()
    assert button.inner_text() == "clicks: 3"
    before = execution_count(page, 2)
    run_cell(page, 2)
    wait_cell_done(page, 2, previous=before)
    assert cell_output_text(page, 2).strip() == "3"
    assert_no_console_errors(lab_page)


def test_custom_messages_are_handled_during_a_busy_cell_only_from_a_subshell(lab_page, jupyter_lab, artifacts):
    page = lab_page.page
    write_notebook(jupyter_lab.root / "subshell.ipynb", [
        WIDGET_CELL, ROUTING_CELL,
        'plain = HarnessWidget(label="plain")\nplain',
        'routed = HarnessWidget(label="routed")\nprint(route_to_subshell(routed))\nrouted',
        BUSY_CELL])
    open_notebook(page, jupyter_lab, "subshell.ipynb")
    for index in range(4):
        run_cell(page, index)
    plain, routed = widget(page, 2, "plain"), widget(page, 3, "routed")
    routed.locator("button.harness-ping").wait_for(state="visible")
    plain.locator("button.harness-ping").wait_for(state="visible")
    wait_kernel_idle(page)

    run_cell(page, 4)
    wait_kernel_busy(page)
    busy_since = time.monotonic()
    plain.locator("button.harness-ping").click()
    routed.locator("button.harness-ping").click()

    # the routed widget's pong comes back from the subshell thread while the cell still sleeps
    routed_pong = routed.locator("output.harness-pong[data-pong='1']")
    routed_pong.wait_for(timeout=5_000)
    assert routed_pong.get_attribute("data-thread").startswith("subshell-")
    assert routed_pong.get_attribute("data-during-busy-cell") == "true"
    page.wait_for_timeout(2_000)
    assert kernel_busy(page), "the busy cell ended before the test could compare the two widgets"
    assert time.monotonic() - busy_since < BUSY_SECONDS - 2
    # ...while the plain widget's ping waits for the main thread
    assert plain.locator("output.harness-pong").inner_text() == ""
    routed.evaluate("el => el.scrollIntoView({block: 'center'})")
    page.screenshot(path=str(artifacts / "notebook-harness-subshell.png"))

    wait_kernel_idle(page, timeout=BUSY_SECONDS + 10)
    plain_pong = plain.locator("output.harness-pong[data-pong='1']")
    plain_pong.wait_for(timeout=10_000)
    assert plain_pong.get_attribute("data-thread") == "MainThread"
    assert plain_pong.get_attribute("data-during-busy-cell") == "false"
    assert "slept" in cell_output_text(page, 4)
    assert_no_console_errors(lab_page)
