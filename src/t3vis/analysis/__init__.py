"""Analyses: pure functions over arrays and models. No I/O, no web.

Heavy modules (umap, openTSNE, captum-free saliency) are imported on first use.
"""

_LAZY = {
    "project": ("t3vis.analysis.projection", "project"),
    "project_aligned": ("t3vis.analysis.projection", "project_aligned"),
    "neighborhood_preservation": ("t3vis.analysis.projection", "neighborhood_preservation"),
    "explain": ("t3vis.analysis.saliency", "explain"),
    "Attribution": ("t3vis.analysis.saliency", "Attribution"),
    "head_importance": ("t3vis.analysis.heads", "head_importance"),
    "evaluate": ("t3vis.analysis.heads", "evaluate"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 't3vis.analysis' has no attribute {name!r}")
