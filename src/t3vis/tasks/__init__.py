"""Tasks: what an example is and what the model is asked to do with it (see base.Task).

`get_task("classification" | "causal-lm" | "seq2seq")`, or pass a Task instance through.
Importing this package imports no torch (the run reader uses tasks.formats); the tasks do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from t3vis.errors import InvalidInputError
from t3vis.tasks.formats import FORMATS, task_format

if TYPE_CHECKING:
    from t3vis.tasks.base import Task

TASKS = tuple(FORMATS)


def get_task(task: str | Task | None) -> Task:
    """The task of that name (None: classification); a Task is returned as it is."""
    from t3vis.tasks.base import Task
    from t3vis.tasks.causal_lm import CausalLM
    from t3vis.tasks.classification import Classification
    from t3vis.tasks.seq2seq import Seq2Seq

    if isinstance(task, Task):
        return task
    if task is not None and not isinstance(task, str):
        raise InvalidInputError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
    by_name: dict[str, type[Task]] = {"classification": Classification, "causal-lm": CausalLM, "seq2seq": Seq2Seq}
    return by_name[task_format(task).name]()
