"""t3vis: visual analytics for training and fine-tuning Transformers in NLP.

`open_run` and the store need no torch; everything that touches a model is imported
on first use, so reading a run stays light.
"""

from t3vis.errors import CorruptRunError, InvalidInputError, NotFoundError, T3VisError, UnsupportedModelError
from t3vis.store.reader import Checkpoint, Run, open_run

__version__ = "0.1.0"

_LAZY = {
    "Recorder": ("t3vis.record.recorder", "Recorder"),
    "analysis": ("t3vis.analysis", None),
    "explain": ("t3vis.analysis.saliency", "explain"),
    "Attribution": ("t3vis.analysis.saliency", "Attribution"),
    "head_importance": ("t3vis.analysis.heads", "head_importance"),
    "evaluate": ("t3vis.analysis.heads", "evaluate"),
    "generate": ("t3vis.analysis.generation", "generate"),
    "show": ("t3vis.notebook", "show"),
}

__all__ = [
    "Attribution",
    "Checkpoint",
    "CorruptRunError",
    "InvalidInputError",
    "NotFoundError",
    "Recorder",
    "Run",
    "T3VisError",
    "UnsupportedModelError",
    "__version__",
    "evaluate",
    "explain",
    "generate",
    "head_importance",
    "open_run",
    "show",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        loaded = importlib.import_module(module)
        return loaded if attr is None else getattr(loaded, attr)
    raise AttributeError(f"module 't3vis' has no attribute {name!r}")
