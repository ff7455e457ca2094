"""A checkpoint's Hugging Face model folder, checked before transformers reads it, and a failed
load traced to the part that failed (config, tokenizer or weights), so a damaged folder is a
CorruptRunError naming the file rather than whatever transformers raises.

A checkpoint of a PEFT (LoRA) model is an adapter folder: adapter_config.json, the adapter's
weights, the tokenizer and BASE_REFERENCE, which names the folder of the base model the
adapter applies to (relative to the adapter folder, or absolute). resolve_adapter_base finds
and checks that base, refusing one outside the folders weights may be read from."""

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
# an adapter folder (peft's save_pretrained) and the file naming its base model (t3vis)
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
BASE_REFERENCE = "t3vis_base.json"
# a tokenizer is built from one of these (the first is the fast tokenizers' single file)
VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                    "tokenizer.model")
_POSITIVE_INT = ("a positive integer", lambda v: is_int(v) and v > 0)
_NAME = ("a non-empty string", lambda v: isinstance(v, str) and bool(v))
_ADAPTER_REQUIRED: dict[str, tuple[str, Callable[[Any], bool]]] = {"peft_type": _NAME}
_BASE_REFERENCE_REQUIRED: dict[str, tuple[str, Callable[[Any], bool]]] = {"base": _NAME}
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


def is_adapter_folder(folder: Path) -> bool:
    """Whether `folder` holds a PEFT adapter (any of its files: a damaged one still counts)."""
    return any((folder / name).exists() for name in (ADAPTER_CONFIG, *ADAPTER_WEIGHT_FILES, BASE_REFERENCE))


def load_failure(folder: Path, what: str, error: Exception, *, tokenizer: bool = True) -> CorruptRunError:
    """Name the part of a model folder that did not load: the (adapter's) config, else the
    tokenizer, else the weights (each tried alone, only after a failed load). tokenizer=False
    for a base model folder, whose tokenizer is not used."""
    from transformers import AutoConfig, AutoTokenizer

    adapter = is_adapter_folder(folder)
    tokenizer_files = [n for n in TOKENIZER_FILES if (folder / n).exists()] or ["no tokenizer file"]
    if adapter:
        config = ("adapter config", [ADAPTER_CONFIG], lambda: _load_adapter_config(folder))
    else:
        config = ("model config", ["config.json"], lambda: AutoConfig.from_pretrained(folder, local_files_only=True))
    parts: list[tuple[str, list[str], Callable[[], object]]] = [config]
    if tokenizer:
        parts.append(("tokenizer", tokenizer_files,
                      lambda: AutoTokenizer.from_pretrained(folder, local_files_only=True)))
    for part, files, attempt in parts:
        try:
            attempt()
        except Exception as e:  # transformers and tokenizers raise many types for damaged files
            return CorruptRunError(f"the {part} of the {what} does not load ({_brief(e)}): {', '.join(files)} "
                                   f"in {folder} ({RESAVE_WEIGHTS})")
    weights = [n for n in (ADAPTER_WEIGHT_FILES if adapter else WEIGHT_FILES) if (folder / n).exists()]
    return CorruptRunError(f"the {what} do not load ({_brief(error)}): {', '.join(weights)} in {folder} "
                           f"({RESAVE_WEIGHTS})")


def _load_adapter_config(folder: Path) -> object:
    from peft import PeftConfig

    return PeftConfig.from_pretrained(str(folder), local_files_only=True)


def check_weights_folder(folder: Path, what: str) -> None:
    """A Hugging Face model folder, checked before transformers reads it: config.json a JSON
    object with a model_type and integer sizes, a weights file present, every safetensors file
    as long as its header says, the tokenizer's JSON files JSON and a vocabulary there. An
    adapter folder instead needs adapter_config.json with a peft_type, the adapter's weights and
    BASE_REFERENCE naming its base (checked when loading, by resolve_adapter_base)."""
    if not folder.is_dir():
        raise CorruptRunError(f"{what}: {folder} is not a folder ({RESAVE_WEIGHTS})")
    if is_adapter_folder(folder):
        _check_adapter(folder, what)
    else:
        _check_model(folder, what)
    for name in TOKENIZER_FILES:
        if name.endswith(".json") and (folder / name).exists():
            read_json(folder / name, f"the tokenizer file {name} of the {what}")
    if not any((folder / name).is_file() for name in VOCABULARY_FILES):
        raise CorruptRunError(f"the tokenizer of the {what} has no vocabulary: {folder / 'tokenizer.json'} is "
                              f"missing (nor is there a slow tokenizer's {', '.join(VOCABULARY_FILES[1:])}) "
                              f"({RESAVE_WEIGHTS})")


def resolve_adapter_base(folder: Path, roots: list[Path] | None) -> Path | None:
    """The base model folder BASE_REFERENCE in `folder` names, resolved (symlinks followed) and
    checked like a model folder (its tokenizer aside); None for a folder that is no adapter.
    roots: the resolved folders weights may be read from (None: anywhere); a base outside them
    is a CorruptRunError, so that a run's files cannot make a server load anything elsewhere."""
    if not is_adapter_folder(folder):
        return None
    reference = folder / BASE_REFERENCE
    named = Path(_read_base_reference(reference, "the base model reference")["base"])
    base = (named if named.is_absolute() else folder / named).resolve()
    if roots is not None and not any(base.is_relative_to(root) for root in roots):
        raise CorruptRunError(
            f"the base model {str(named)!r} named in {reference} resolves to {base}, outside the run folder and the "
            f"folders run.json names for weights ({', '.join(map(str, roots))}); refusing to load it. Move the base "
            "model into the run, or name its folder in run.json's weights_roots")
    if not base.is_dir():
        raise CorruptRunError(f"the base model named in {reference} is missing: {base} is not a folder (put the "
                              f"base model back there, or re-save the checkpoint's weights)")
    _check_model(base, f"base model named in {reference}")
    return base


def _read_base_reference(path: Path, what: str) -> dict:
    reference = read_json(path, what)
    check_fields(reference, _BASE_REFERENCE_REQUIRED, {}, path, what)
    return reference


def _check_model(folder: Path, what: str) -> None:
    """config.json and the weights of a (non-adapter) model folder."""
    config_path = folder / "config.json"
    check_fields(read_json(config_path, f"the model config of the {what}"), _CONFIG_REQUIRED, _CONFIG_OPTIONAL,
                 config_path, f"the model config of the {what}")
    _check_weight_files(folder, WEIGHT_FILES, what)


def _check_adapter(folder: Path, what: str) -> None:
    """adapter_config.json, the adapter's weights and the reference to the base model."""
    config_path = folder / ADAPTER_CONFIG
    check_fields(read_json(config_path, f"the adapter config of the {what}"), _ADAPTER_REQUIRED, {}, config_path,
                 f"the adapter config of the {what}")
    _check_weight_files(folder, ADAPTER_WEIGHT_FILES, what)
    _read_base_reference(folder / BASE_REFERENCE, f"the base model reference of the {what}")


def _check_weight_files(folder: Path, names: tuple[str, ...], what: str) -> None:
    """One of `names` is there, and every safetensors file is as long as its header says."""
    if not any((folder / name).is_file() for name in names):
        raise CorruptRunError(f"{what}: {folder} holds no weights file (one of {', '.join(names)}) "
                              f"({RESAVE_WEIGHTS})")
    for file in sorted(folder.glob("*.safetensors")):
        _check_safetensors(file, what)


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

