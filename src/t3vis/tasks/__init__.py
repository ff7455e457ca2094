"""Tasks: what an example is and what the model is asked to do with it (see base.Task).

`get_task("classification" | "causal-lm" | "seq2seq")`, or pass a Task instance through.
"""

from __future__ import annotations

from t3vis.errors import InvalidInputError
from t3vis.tasks.base import Task
from t3vis.tasks.formats import FORMATS, task_format

TASKS = tuple(FORMATS)


def get_task(task: str | Task | None) -> Task:
    """The task of that name (None: classification); a Task is returned as it is."""
    if isinstance(task, Task):
        return task
    name = task_format(task).name if isinstance(task, str) or task is None else None
    if name is None:
        raise InvalidInputError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
    from t3vis.tasks.causal_lm import CausalLM
    from t3vis.tasks.classification import Classification
    from t3vis.tasks.seq2seq import Seq2Seq

    by_name: dict[str, type[Task]] = {"classification": Classification, "causal-lm": CausalLM, "seq2seq": Seq2Seq}
    return by_name[name]()
