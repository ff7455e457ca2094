"""The notebook widget in a real ipykernel, driven over the Jupyter protocol as a frontend drives it:
a request from the page is answered while a cell keeps the kernel busy (the widget's comm is served
by a subshell), where a widget left on the main thread answers only once the cell ends."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from server_fixtures import record_tiny_run

BUSY_S = 8.0


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    from jupyter_client.manager import start_new_kernel

    run, _, _ = record_tiny_run(tmp_path_factory.mktemp("kernel") / "tiny")
    manager, client = start_new_kernel(kernel_name="python3")
    try:
        yield client, run
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def execute(client, code: str, timeout: float = 120) -> str:
    """Runs code and returns what it printed (raising with the traceback on an error)."""
    out: list[str] = []
    reply = client.execute_interactive(code, timeout=timeout, output_hook=lambda m: out.append(_text(m)))
    assert reply["content"]["status"] == "ok", reply["content"].get("traceback")
    return "".join(out)


def _text(msg) -> str:
    if msg["msg_type"] == "stream":
        return msg["content"]["text"]
    if msg["msg_type"] == "error":
        return "\n".join(msg["content"]["traceback"])
    return ""


def ask_while_busy(client, comm_id: str, path: str) -> tuple[float, float, dict]:
    """Starts a cell that sleeps BUSY_S, sends the widget a request one second in, and returns when
    the answer arrived and when the cell ended (seconds after the request), and the answer."""
    cell = client.execute(f"import time; time.sleep({BUSY_S})")
    time.sleep(1.0)
    request_id = uuid.uuid4().hex
    msg = client.session.msg("comm_msg", {"comm_id": comm_id, "data": {"method": "custom", "content": {
        "type": "request", "id": request_id, "method": "GET", "path": path}}})
    client.shell_channel.send(msg)
    sent = time.monotonic()
    answered = ended = None
    answer: dict = {}
    while answered is None or ended is None:
        assert time.monotonic() - sent < BUSY_S + 60, "no answer from the kernel"
        if ended is None and client.shell_channel.msg_ready():
            reply = client.get_shell_msg(timeout=1)
            if reply["parent_header"].get("msg_id") == cell:
                ended = time.monotonic() - sent
        try:
            io = client.get_iopub_msg(timeout=0.05)
        except Exception:      # queue.Empty: nothing published yet
            continue
        data = io["content"].get("data", {}) if io["msg_type"] == "comm_msg" else {}
        content = data.get("content", {}) if data.get("method") == "custom" else {}
        if content.get("type") == "response" and content.get("id") == request_id:
            answered = time.monotonic() - sent
            answer = {**content, "body": json.loads(bytes(io["buffers"][0]))}
    return answered, ended, answer


def test_the_widget_answers_while_a_cell_keeps_the_kernel_busy(kernel):
    client, run = kernel
    printed = execute(client, f"import t3vis\nw = t3vis.show({str(run)!r})\n"
                              "print(w.comm.comm_id, w.live_in_busy_kernel)")
    comm_id, live = printed.split()
    assert live == "True"                        # ipykernel 7 has subshells: the comm was routed to one
    answered, ended, answer = ask_while_busy(client, comm_id, "/runs/tiny/version")
    assert answer["status"] == 200 and answer["body"]["steps"] == [0, 5]
    assert answered < 2.0, f"answered {answered:.1f} s after the request"
    assert answered < ended - 3.0, f"answered {answered:.1f} s, the busy cell ended at {ended:.1f} s"


def test_a_widget_left_on_the_main_thread_waits_for_the_cell(kernel):
    """The control: the same request to a widget whose comm stays with the main thread is answered
    only once the cell ends (what the routing above is for)."""
    client, run = kernel
    printed = execute(client, f"w2 = t3vis.show({str(run)!r})\ndel w2.comm._reply_subshell_for\nprint(w2.comm.comm_id)")
    answered, ended, answer = ask_while_busy(client, printed.strip(), "/runs/tiny/version")
    assert answer["status"] == 200
    assert answered >= ended - 0.5, f"answered {answered:.1f} s, before the busy cell ended at {ended:.1f} s"
