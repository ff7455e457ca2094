"""A checkpoint's model weights on disk, for a plain transformers model or a PEFT (LoRA) model.

A plain model is saved whole (save_pretrained, safetensors) with its tokenizer. A PEFT model's
checkpoint holds only its adapter (a few MB where the model is GBs) and the tokenizer, plus
BASE_REFERENCE naming the base model the adapter applies to. That base is the same at every
checkpoint (PEFT freezes it), so it is written once per run, or not at all when the model was
loaded from a local folder, which is then referenced. models/loading.py load_checkpoint_model
reads both kinds back. Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from t3vis.errors import InvalidInputError
from t3vis.models.batches import unwrap
from t3vis.store.weights_folder import BASE_REFERENCE, WEIGHT_FILES
from t3vis.store.writer import folder_bytes


@dataclass(frozen=True)
class WeightsSaved:
    """What save_model_weights wrote. base_folder: the base model of a PEFT model's adapter
    (None for a plain model); base_referenced: that base is a folder the model was loaded from,
    outside the run, and the run must be allowed to read weights from it."""

    bytes_written: int
    base_folder: Path | None = None
    base_referenced: bool = False


def save_model_weights(model: nn.Module, tokenizer, folder: Path, *, base_dir: Path) -> WeightsSaved:
    """Save `model` (unwrapped from DDP) and `tokenizer` into `folder`. A PEFT model saves only
    its adapter there, and its base model into `base_dir` unless that holds one already or the
    base was loaded from a local folder (then referenced, by absolute path)."""
    model = unwrap(model)
    folder.mkdir(parents=True, exist_ok=True)
    if not _is_peft(model):
        _save_pretrained(model, folder)
        tokenizer.save_pretrained(folder)
        return WeightsSaved(folder_bytes(folder))
    _refuse_merged(model)
    _save_pretrained(model, folder)         # a PeftModel saves its adapter's config and weights only
    tokenizer.save_pretrained(folder)
    local = _local_base_folder(model)
    base_bytes = 0
    if local is not None:
        base, named = local, str(local)
    else:
        base, named = base_dir, os.path.relpath(base_dir.absolute(), folder.absolute())
        if not _holds_model(base_dir):                 # saved at an earlier checkpoint of the run
            _save_base(model, tokenizer, base_dir)
            base_bytes = folder_bytes(base_dir)
    (folder / BASE_REFERENCE).write_text(json.dumps({"base": named}, indent=1) + "\n")
    return WeightsSaved(folder_bytes(folder) + base_bytes, base, base_referenced=local is not None)


def _save_pretrained(model: nn.Module, folder: Path) -> None:
    save = getattr(model, "save_pretrained", None)
    if not callable(save):
        raise InvalidInputError(f"{type(model).__name__} has no save_pretrained(), so its weights cannot be saved "
                                "with the checkpoint: pass keep_weights='none', or weights_location to snapshot()")
    save(folder, safe_serialization=True)


def _is_peft(model: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:             # without peft installed no model is a PeftModel
        return False
    return isinstance(model, PeftModel)


def _refuse_merged(model) -> None:
    """A merged adapter is inside the base layers' weights: saved, the base would hold it twice."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    if any(isinstance(m, BaseTunerLayer) and m.merged for m in model.modules()):
        raise InvalidInputError("the PEFT model's adapter is merged into its base weights, so neither can be saved "
                                "apart: call model.unmerge_adapter() before the checkpoint, and merge after it")


def _local_base_folder(model) -> Path | None:
    """The local model folder the base was loaded from (config.json there), if any."""
    base = model.get_base_model()
    names = (getattr(model.peft_config.get(model.active_adapter), "base_model_name_or_path", None),
             getattr(base, "name_or_path", None), getattr(getattr(base, "config", None), "_name_or_path", None))
    for name in names:
        if isinstance(name, str) and name and (Path(name) / "config.json").is_file():
            return Path(name).resolve()
    return None


def _holds_model(folder: Path) -> bool:
    """A config and weights there (a save interrupted before its weights does not count)."""
    return (folder / "config.json").is_file() and any((folder / name).is_file() for name in WEIGHT_FILES)


def _save_base(model, tokenizer, base_dir: Path) -> None:
    """The base model's own weights, under its own parameter names: the LoRA layers stay in the
    module tree (q_proj.base_layer.weight, q_proj.lora_A...), so save_pretrained of the base
    alone would write both, which the base model class cannot load."""
    base_dir.mkdir(parents=True, exist_ok=True)
    model.get_base_model().save_pretrained(base_dir, state_dict=_base_state_dict(model), safe_serialization=True)
    tokenizer.save_pretrained(base_dir)


def _base_state_dict(model) -> dict:
    try:
        from peft import get_base_model_state_dict
    except ImportError:             # older peft: drop the adapter's entries and the wrappers' infix
        prefix = model.base_model.prefix
        return {key.replace(".base_layer.", "."): value for key, value in model.get_base_model().state_dict().items()
                if not any(part.startswith(prefix) for part in key.split("."))}
    return get_base_model_state_dict(model)
