"""Widget messages answered while a cell runs: an ipykernel 7 kernel reads every shell message on a
thread of its own and hands a comm's messages to the subshell the comm names. A comm routed to a
subshell of its own is served by that subshell's thread, so the widget keeps answering while the
main thread trains a model.

Everything here leans on ipykernel 7's internals (subshells, `_reply_subshell_for`); where they are
missing (an older ipykernel, another kernel, no kernel), routing is declined and the widget answers
when the kernel is idle, as every widget does.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

_CREATE_TIMEOUT_S = 10.0
_subshells: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def current_kernel() -> Any | None:
    """The running ipykernel, or None outside one."""
    try:
        from ipykernel.kernelbase import Kernel
    except ImportError:
        return None
    return Kernel.instance() if Kernel.initialized() else None


def widget_subshell(kernel: Any) -> str | None:
    """The id of the subshell that serves widgets in this kernel (created once), or None where the
    kernel has no subshells."""
    channel = getattr(kernel, "shell_channel_thread", None)
    if channel is None or not getattr(kernel, "_supports_kernel_subshells", False):
        return None
    with _lock:
        if kernel in _subshells:
            return _subshells[kernel]
        created: dict[str, Any] = {}
        done = threading.Event()
        manager = channel.manager

        def create() -> None:               # subshells are made on the shell channel's thread only
            try:
                created["id"] = manager._create_subshell()
            except Exception as e:          # declined: the widget answers when the kernel is idle
                created["error"] = e
            finally:
                done.set()

        channel.io_loop.add_callback(create)
        if not done.wait(_CREATE_TIMEOUT_S) or "id" not in created:
            return None
        _subshells[kernel] = created["id"]
        return created["id"]


def route_to_subshell(comm: Any, kernel: Any | None = None) -> str | None:
    """Sends every frontend message of `comm` to the widgets' subshell; returns its id, or None when
    the messages stay with the main thread."""
    kernel = kernel if kernel is not None else current_kernel()
    if kernel is None or comm is None or not hasattr(comm, "_reply_subshell_for"):
        return None
    subshell = widget_subshell(kernel)
    if subshell is None:
        return None
    # the kernel asks the comm where its messages go; this comm always answers: the subshell
    comm._reply_subshell_for = lambda data, default: subshell
    return subshell
