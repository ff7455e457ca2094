"""Load sequence classifiers with eager attention (other kernels return no attention weights)."""

from __future__ import annotations

from pathlib import Path

from t3vis.errors import NotFoundError
from t3vis.store.weights_folder import BASE_REFERENCE, load_failure, resolve_adapter_base


def load_classifier(path: str | Path, *, num_labels: int | None = None, label_names: list[str] | None = None,
                    device: str | None = None):
    """(model, tokenizer) from a local folder, eval mode, eager attention. Never downloads."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise NotFoundError(f"no model at {path}: expected a Hugging Face model folder with config.json")
    kwargs = {"attn_implementation": "eager", "local_files_only": True}
    if label_names is not None:
        num_labels = len(label_names)
        kwargs["id2label"] = dict(enumerate(label_names))
        kwargs["label2id"] = {n: i for i, n in enumerate(label_names)}
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
    model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    ensure_padding(model, tokenizer)
    if device is not None:
        model.to(device)
    return model.eval(), tokenizer


def load_checkpoint_model(folder: str | Path, auto_model: str = "AutoModelForSequenceClassification", *,
                          device: str | None = None, roots: list[Path] | None = None):
    """(model, tokenizer) from a checkpoint's weights folder with the task's Auto class, eval mode,
    eager attention; never downloads. roots: where weights may be read from (None: anywhere).

    An adapter folder (a PEFT model's checkpoint, see record/model_weights.py) loads the base
    model it names with `auto_model`, then the adapter onto it: a PeftModel. A base outside
    `roots`, or one that does not load, is a CorruptRunError naming it."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    base = resolve_adapter_base(folder, roots)
    if base is None:
        model = _load_pretrained(auto_model, folder)
    else:
        model = _load_adapter(auto_model, folder, base)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    ensure_padding(model, tokenizer)
    if device is not None:
        model.to(device)
    return model.eval(), tokenizer


def _load_pretrained(auto_model: str, folder: Path):
    import transformers

    auto = getattr(transformers, auto_model)
    return auto.from_pretrained(folder, attn_implementation="eager", local_files_only=True)


def _load_adapter(auto_model: str, folder: Path, base: Path):
    """The base model in `base` (already confined and checked) with the adapter in `folder` on it."""
    from peft import PeftModel

    try:
        base_model = _load_pretrained(auto_model, base)
    except (ImportError, MemoryError):
        raise
    except Exception as e:      # transformers and safetensors raise many types for damaged files
        raise load_failure(base, f"base model weights named in {folder / BASE_REFERENCE}", e,
                           tokenizer=False) from None
    return PeftModel.from_pretrained(base_model, str(folder), local_files_only=True)


def ensure_padding(model, tokenizer) -> None:
    """Decoder models (GPT-2) ship without a pad token; reuse end-of-sequence, as is customary."""
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
