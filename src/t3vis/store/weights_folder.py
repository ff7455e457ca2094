"""A checkpoint's Hugging Face model folder, checked before transformers reads it, and a failed
load traced to the part that failed (config, tokenizer or weights), so a damaged folder is a
CorruptRunError naming the file rather than whatever transformers raises."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from t3vis.errors import CorruptRunError
from t3vis.store.checks import check_fields, is_int, read_json

RESAVE_WEIGHTS = ("re-save the checkpoint's weights there (model.save_pretrained and "
                  "tokenizer.save_pretrained), or record with keep_weights='all'")

# weight files a Hugging Face folder may hold (one of them must be there)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")
# a tokenizer is built from one of these (the first is the fast tokenizers' single file)
VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                    "tokenizer.model")
_POSITIVE_INT = ("a positive integer", lambda v: is_int(v) and v > 0)
_CONFIG_REQUIRED: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "model_type": ("a model family name", lambda v: isinstance(v, str) and bool(v)),
}
# sizes under the names the supported families use: transformers builds the model from them
_CONFIG_OPTIONAL: dict[str, tuple[str, Callable[[Any], bool]]] = {
    name: _POSITIVE_INT for name in ("num_hidden_layers", "num_attention_heads", "hidden_size", "vocab_size",
                                     "n_layer", "n_head", "n_embd", "n_layers", "n_heads", "dim")}


def _brief(error: Exception) -> str:
    first = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {first[:300]}"


def load_failure(folder: Path, what: str, error: Exception) -> CorruptRunError:
    """Name the part of a model folder that did not load: the config, else the tokenizer, else
    the weights (each tried alone, only after a failed load)."""
    from transformers import AutoConfig, AutoTokenizer

    tokenizer_files = [n for n in TOKENIZER_FILES if (folder / n).exists()] or ["no tokenizer file"]
    parts = (("model config", ["config.json"], lambda: AutoConfig.from_pretrained(folder, local_files_only=True)),
             ("tokenizer", tokenizer_files, lambda: AutoTokenizer.from_pretrained(folder, local_files_only=True)))
    for part, files, attempt in parts:
        try:
            attempt()
        except Exception as e:  # transformers and tokenizers raise many types for damaged files
            return CorruptRunError(f"the {part} of the {what} does not load ({_brief(e)}): {', '.join(files)} "
                                   f"in {folder} ({RESAVE_WEIGHTS})")
    weights = [n for n in WEIGHT_FILES if (folder / n).exists()]
    return CorruptRunError(f"the {what} do not load ({_brief(error)}): {', '.join(weights)} in {folder} "
                           f"({RESAVE_WEIGHTS})")


def check_weights_folder(folder: Path, what: str) -> None:
    """A Hugging Face model folder, checked before transformers reads it: config.json a JSON
    object with a model_type and integer sizes, a weights file present, every safetensors file
    as long as its header says, the tokenizer's JSON files JSON and a vocabulary there."""
    if not folder.is_dir():
        raise CorruptRunError(f"{what}: {folder} is not a folder ({RESAVE_WEIGHTS})")
    config_path = folder / "config.json"
    check_fields(read_json(config_path, f"the model config of the {what}"), _CONFIG_REQUIRED, _CONFIG_OPTIONAL,
                  config_path, f"the model config of the {what}")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise CorruptRunError(f"{what}: {folder} holds no weights file (one of {', '.join(WEIGHT_FILES)}) "
                              f"({RESAVE_WEIGHTS})")
    for file in sorted(folder.glob("*.safetensors")):
        _check_safetensors(file, what)
    for name in TOKENIZER_FILES:
        if name.endswith(".json") and (folder / name).exists():
            read_json(folder / name, f"the tokenizer file {name} of the {what}")
    if not any((folder / name).is_file() for name in VOCABULARY_FILES):
        raise CorruptRunError(f"the tokenizer of the {what} has no vocabulary: {folder / 'tokenizer.json'} is "
                              f"missing (nor is there a slow tokenizer's {', '.join(VOCABULARY_FILES[1:])}) "
                              f"({RESAVE_WEIGHTS})")


def _check_safetensors(path: Path, what: str) -> None:
    """The header parses and the file holds every byte its header and tensors' offsets name."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            if 8 + length > size:
                raise CorruptRunError(f"{what}: {path} is truncated or not a safetensors file ({size} bytes; "
                                      f"its first 8 bytes ask for a {length}-byte header) ({RESAVE_WEIGHTS})")
            header = json.loads(f.read(length)) if length else None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise CorruptRunError(f"{what}: {path} is not a readable safetensors file ({type(e).__name__}: {e}) "
                              f"({RESAVE_WEIGHTS})") from None
    if not isinstance(header, dict):
        raise CorruptRunError(f"{what}: {path} is not a safetensors file (no header) ({RESAVE_WEIGHTS})")
    ends = [v.get("data_offsets", [0, 0])[-1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    needed = 8 + length + max((int(e) for e in ends if is_int(e)), default=0)
    if size < needed:
        raise CorruptRunError(f"{what}: {path} is truncated ({size} of {needed} bytes) ({RESAVE_WEIGHTS})")

