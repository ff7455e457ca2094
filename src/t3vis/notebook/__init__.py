"""t3vis in a notebook: `t3vis.show(run)` renders the viewer inline (anywidget), live while a run
records in the same kernel. Needs the `notebook` extra (anywidget)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from t3vis.errors import InvalidInputError

if TYPE_CHECKING:
    from t3vis.notebook.widget import ViewerWidget


def run_path(run: Any) -> Path:
    """The folder of what `show` was given: a path, a Run, a Recorder or a T3VisCallback."""
    if isinstance(run, (str, Path)):
        return Path(run)
    for attribute in ("run_dir", "path"):           # Recorder / T3VisCallback; Run
        found = getattr(run, attribute, None)
        if isinstance(found, (str, Path)):
            return Path(found)
    raise InvalidInputError("show() takes a run folder, a Run, a Recorder or a T3VisCallback; "
                            f"got {type(run).__name__}")


def show(run: Any, view: str | None = None, *, height: int | None = None) -> ViewerWidget:
    """The viewer of `run` as a notebook widget; `view` names one view to show alone ("projection",
    "datamap", "instance", "table", "heads", "curves"). A folder not written yet is waited for."""
    try:
        from t3vis.notebook.widget import DEFAULT_HEIGHT, ViewerWidget
    except ImportError as e:
        raise InvalidInputError(f"the notebook viewer needs anywidget ({e}); pip install 't3vis[notebook]'") from None
    return ViewerWidget(run_path(run), view=view, height=DEFAULT_HEIGHT if height is None else height)
