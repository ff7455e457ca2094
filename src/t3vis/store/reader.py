"""Read a run directory. Imports no torch: runs open on machines without it.

Every file is checked where it is read (the boundary): run.json and meta.json for their
required fields and types, Parquet files for their required columns and types, arrays for
their shapes against run.json. A file that fails, or that a third-party reader (pyarrow,
numpy, safetensors, transformers) cannot read, raises CorruptRunError naming the file and
what to do; nothing past the reader sees a KeyError or a library's own exception.
"""

from __future__ import annotations

import json
import math
import struct
import warnings
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from t3vis.cartography import summarize_dynamics
from t3vis.errors import CorruptRunError, NotFoundError, T3VisError
from t3vis.store import schema

RERECORD = "re-record the run, or restore the file from a backup"
RESAVE_WEIGHTS = ("re-save the checkpoint's weights there (model.save_pretrained and "
                  "tokenizer.save_pretrained), or record with save_weights=True")

# run.json keys every reader needs, with their type check; other keys are checked when present
_RUN_REQUIRED: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "format_version": ("an integer", lambda v: _is_int(v)),
    "label_names": ("a list of class names", lambda v: isinstance(v, list) and len(v) > 0
                    and all(isinstance(n, (str, int)) and not isinstance(n, bool) for n in v)),
    "num_layers": ("a positive integer", lambda v: _is_int(v) and v > 0),
    "num_heads": ("a positive integer", lambda v: _is_int(v) and v > 0),
    "hidden_size": ("a positive integer", lambda v: _is_int(v) and v > 0),
}
_RUN_OPTIONAL: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "num_probe": ("a non-negative integer", lambda v: _is_int(v) and v >= 0),
    "max_length": ("a positive integer", lambda v: _is_int(v) and v > 0),
    "model": ("an object", lambda v: isinstance(v, dict)),
    "pooling": ("a string", lambda v: isinstance(v, str)),
    "weights_roots": ("a list of folder paths", lambda v: isinstance(v, list) and all(isinstance(p, str) for p in v)),
}
_CHECKPOINT_REQUIRED: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "step": ("a non-negative integer", lambda v: _is_int(v) and v >= 0),
}
_CHECKPOINT_OPTIONAL: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "epoch": ("a number or null", lambda v: v is None or _is_number(v)),
    "metrics": ("an object or null", lambda v: v is None or isinstance(v, dict)),
    "weights": ("a path or null", lambda v: v is None or isinstance(v, str)),
    "time": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "gate_grad_scale": ("a positive number", lambda v: _is_number(v) and math.isfinite(v) and v > 0),
}

# required Parquet columns, each with the kind of Arrow type it must have
_INTEGER = ("an integer", pa.types.is_integer)
_FLOAT = ("a float", pa.types.is_floating)
_BOOL = ("a boolean", pa.types.is_boolean)
_STRING = ("a string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t))
_PROBS = ("a fixed-size list of floats",
          lambda t: pa.types.is_fixed_size_list(t) and pa.types.is_floating(t.value_type))
EXAMPLE_TYPES = {"id": _INTEGER, "split": _STRING, "text": _STRING, "label": _INTEGER, "probe_row": _INTEGER}
OUTPUT_TYPES = {"id": _INTEGER, "pred": _INTEGER, "loss": _FLOAT, "gold_prob": _FLOAT, "correct": _BOOL,
                "probs": _PROBS}
DYNAMICS_TYPES = {"id": _INTEGER, "epoch": _INTEGER, "step": _INTEGER, "gold_prob": _FLOAT, "correct": _BOOL}

# weight files a Hugging Face folder may hold (one of them must be there)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")
# a tokenizer is built from one of these (the first is the fast tokenizers' single file)
VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                    "tokenizer.model")
_POSITIVE_INT = ("a positive integer", lambda v: _is_int(v) and v > 0)
_CONFIG_REQUIRED: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "model_type": ("a model family name", lambda v: isinstance(v, str) and bool(v)),
}
# sizes under the names the supported families use: transformers builds the model from them
_CONFIG_OPTIONAL: dict[str, tuple[str, Callable[[Any], bool]]] = {
    name: _POSITIVE_INT for name in ("num_hidden_layers", "num_attention_heads", "hidden_size", "vocab_size",
                                     "n_layer", "n_head", "n_embd", "n_layers", "n_heads", "dim")}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def open_run(path: str | Path) -> Run:
    """Open the run at `path` for reading."""
    return Run(path)


def _read_json(path: Path, what: str) -> dict:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise CorruptRunError(f"{what} is missing: {path} ({RERECORD})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptRunError(f"{what} is not valid JSON ({e}): {path} ({RERECORD})") from None
    except OSError as e:
        raise CorruptRunError(f"{what} is unreadable ({e}): {path} ({RERECORD})") from None
    if not isinstance(value, dict):
        raise CorruptRunError(f"{what} is not a JSON object (it holds a {type(value).__name__}): {path} "
                              f"({RERECORD})")
    return value


def _check_fields(meta: dict, required: dict, optional: dict, path: Path, what: str) -> None:
    for key, (kind, _) in required.items():
        if key not in meta:
            raise CorruptRunError(f"{what} lacks the field {key!r} ({kind}): {path} ({RERECORD})")
    for key, (kind, ok) in {**required, **optional}.items():
        if key in meta and not ok(meta[key]):
            raise CorruptRunError(f"{what} has {key!r} = {meta[key]!r}, which is not {kind}: {path} ({RERECORD})")


class Run:
    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        if not self.path.is_dir():
            raise NotFoundError(f"no run at {self.path}: the folder does not exist "
                                "(record one with `t3vis demo`, `t3vis record`, or t3vis.Recorder)")
        if not (self.path / schema.RUN_META).is_file():
            raise NotFoundError(f"{self.path} is not a t3vis run: it has no {schema.RUN_META} "
                                "(pass the folder that t3vis.Recorder or `t3vis record --out` wrote)")
        meta_path = self.path / schema.RUN_META
        self.meta = _read_json(meta_path, "the run's metadata")
        version = self.meta.get("format_version")
        if version != schema.FORMAT_VERSION and _is_int(version):
            raise CorruptRunError(f"{self.path} has run format {version!r}; this t3vis reads format "
                                  f"{schema.FORMAT_VERSION} (install the t3vis version that wrote it)")
        _check_fields(self.meta, _RUN_REQUIRED, _RUN_OPTIONAL, meta_path, "the run's metadata")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, checkpoints={[c.step for c in self.checkpoints]})"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def label_names(self) -> list[str]:
        return [str(n) for n in self.meta["label_names"]]

    @property
    def num_layers(self) -> int:
        return int(self.meta["num_layers"])

    @property
    def num_heads(self) -> int:
        return int(self.meta["num_heads"])

    @property
    def hidden_size(self) -> int:
        return int(self.meta["hidden_size"])

    @property
    def num_probe(self) -> int | None:
        """N, the probe examples every checkpoint recorded (None in a run.json that does not say)."""
        value = self.meta.get("num_probe")
        return int(value) if value is not None else None

    @cached_property
    def examples(self) -> pd.DataFrame:
        """Every example the run knows: probed ones (probe_row >= 0) and training ones seen."""
        return _read_parquet(self.path / schema.EXAMPLES, "the examples table", EXAMPLE_TYPES)

    def check_examples(self) -> Path:
        """The examples table's path, after checking its columns (reads the footer only)."""
        return check_parquet(self.path / schema.EXAMPLES, "the examples table", EXAMPLE_TYPES)

    @property
    def probe_examples(self) -> pd.DataFrame:
        """The probed examples, in probe order (row i matches row i of hidden() and outputs)."""
        ex = self.examples
        return ex[ex["probe_row"] >= 0].sort_values("probe_row").reset_index(drop=True)

    def scan_checkpoints(self) -> tuple[list[Checkpoint], dict[int, CorruptRunError]]:
        """(complete checkpoints sorted by step, {step: error} of those whose meta.json is damaged or
        missing). Staging folders (still being written) are neither."""
        folder = self.path / schema.CHECKPOINTS_DIR
        found, damaged = [], {}
        for p in folder.iterdir() if folder.is_dir() else ():
            step = schema.parse_checkpoint_dirname(p.name)
            if step is None or not p.is_dir():
                continue
            if not (p / schema.CHECKPOINT_META).is_file():
                # checkpoints are renamed into place with meta.json inside: a named folder without it is damage
                damaged[step] = CorruptRunError(f"checkpoint {step}'s {schema.CHECKPOINT_META} is missing: "
                                                f"{p / schema.CHECKPOINT_META} ({RERECORD})")
                continue
            try:
                found.append(Checkpoint(self, p))
            except CorruptRunError as e:  # one damaged checkpoint must not hide the others
                damaged[step] = e
        return sorted(found, key=lambda c: c.step), damaged

    @property
    def checkpoints(self) -> list[Checkpoint]:
        """Complete checkpoints, sorted by step. Staging folders are skipped; so are checkpoints whose
        meta.json is damaged or missing, with a warning."""
        found, damaged = self.scan_checkpoints()
        for step, error in sorted(damaged.items()):
            warnings.warn(f"skipping checkpoint {schema.checkpoint_dirname(step)}: {error}", stacklevel=2)
        return found

    def checkpoint(self, step: int) -> Checkpoint:
        found, damaged = self.scan_checkpoints()
        for ck in found:
            if ck.step == int(step):
                return ck
        if int(step) in damaged:
            raise damaged[int(step)]
        raise NotFoundError(f"run {self.name!r} has no checkpoint at step {step}; "
                            f"it has steps {[c.step for c in found]}")

    def dynamics_parts(self) -> list[Path]:
        """The training-dynamics Parquet parts, each checked for its columns (footer only)."""
        parts = sorted((self.path / schema.DYNAMICS_DIR).glob("part-*.parquet"))
        return [check_parquet(p, "a training-dynamics part", DYNAMICS_TYPES) for p in parts]

    def dynamics_observations(self) -> pd.DataFrame:
        """Raw observations from the training passes: id, epoch, step, gold_prob, correct."""
        parts = sorted((self.path / schema.DYNAMICS_DIR).glob("part-*.parquet"))
        if not parts:
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                                 zip(schema.DYNAMICS_COLUMNS, ("int64", "int32", "int64", "float32", "bool"))})
        frames = [_read_parquet(p, "a training-dynamics part", DYNAMICS_TYPES)[list(DYNAMICS_TYPES)] for p in parts]
        return pd.concat(frames, ignore_index=True)

    def dynamics(self, **region_options) -> pd.DataFrame:
        """Per example: id, confidence, variability, correctness, epochs, region (the data map)."""
        return summarize_dynamics(self.dynamics_observations(), **region_options)

    def weights_roots(self) -> list[Path]:
        """Folders a checkpoint's weights may lie in: the run folder, and the folders outside it that
        the recorder named in run.json's `weights_roots` (Trainer checkpoints, `t3vis record`'s inputs)."""
        named = list(self.meta.get("weights_roots") or [])
        roots = [self.path.resolve()]
        for p in named:
            if isinstance(p, str) and p:
                root = Path(p).expanduser()
                roots.append((root if root.is_absolute() else self.path / root).resolve())
        return roots


class Checkpoint:
    def __init__(self, run: Run, path: Path):
        self.run = run
        self.path = path
        meta_path = path / schema.CHECKPOINT_META
        self.meta = _read_json(meta_path, f"checkpoint metadata of {path.name}")
        _check_fields(self.meta, _CHECKPOINT_REQUIRED, _CHECKPOINT_OPTIONAL, meta_path,
                      f"checkpoint metadata of {path.name}")
        self.step = int(self.meta["step"])
        self.epoch = self.meta.get("epoch")

    def __repr__(self) -> str:
        return f"Checkpoint(step={self.step}, epoch={self.epoch}, metrics={self.metrics})"

    @property
    def metrics(self) -> dict:
        return dict(self.meta.get("metrics") or {})

    def _expect_rows(self) -> int | None:
        return self.run.num_probe

    @cached_property
    def outputs(self) -> pd.DataFrame:
        """id, pred, loss, gold_prob, correct, nan, probs; row i is probe row i."""
        path = self.path / schema.OUTPUTS
        table = _read_parquet_table(path, f"outputs of checkpoint {self.step}", OUTPUT_TYPES)
        df = table.drop(["probs"]).to_pandas()
        probs = table.column("probs").combine_chunks()
        width = probs.type.list_size
        df["probs"] = list(probs.flatten().to_numpy(zero_copy_only=False).reshape(-1, width))
        return df

    def check_outputs(self) -> Path:
        """The outputs table's path, after checking its columns (reads the footer only)."""
        return check_parquet(self.path / schema.OUTPUTS, f"outputs of checkpoint {self.step}", OUTPUT_TYPES)

    @cached_property
    def hidden_states(self) -> np.ndarray:
        """float16 (layers+1, N, d), memory-mapped."""
        path = self.path / schema.HIDDEN
        states = _load_npy(path, f"hidden states of checkpoint {self.step}")
        run = self.run
        _check_shape(states, (run.num_layers + 1, self._expect_rows(), run.hidden_size),
                     "(layers + 1, probe examples, hidden size)", path, f"hidden states of checkpoint {self.step}")
        return states

    def hidden(self, layer: int) -> np.ndarray:
        """Pooled hidden states of one layer, (N, d); layer 0 is the embeddings."""
        states = self.hidden_states
        if not -states.shape[0] <= int(layer) < states.shape[0]:
            raise NotFoundError(f"layer {layer} does not exist; checkpoint {self.step} has layers "
                                f"0..{states.shape[0] - 1} (0 = embeddings)")
        return states[int(layer)]

    @cached_property
    def heads(self) -> dict[str, np.ndarray]:
        """Every array of heads.npz, each checked for its shape: importance, importance_raw and
        the attention summaries (L, H), thumbnails (L, H, K, K)."""
        path = self.path / schema.HEADS
        what = f"head data of checkpoint {self.step}"
        try:
            with np.load(path) as npz:
                arrays = {k: np.asarray(npz[k]) for k in npz.files}
        except FileNotFoundError:
            raise CorruptRunError(f"{what} is missing: {path} ({RERECORD})") from None
        except Exception as e:   # numpy, zipfile and zlib raise many types for a damaged archive
            raise CorruptRunError(f"{what} is unreadable ({type(e).__name__}: {e}): {path} ({RERECORD})") from None
        grid = (self.run.num_layers, self.run.num_heads)
        for key in ("importance", "importance_raw", "thumbnails"):
            if key not in arrays:
                raise CorruptRunError(f"{what} lacks the array {key!r}: {path} ({RERECORD})")
        for key, array in arrays.items():
            if key in ("importance", "importance_raw") or key.startswith("attention_"):
                _check_shape(array, grid, "(layers, heads)", path, f"{what} ({key})")
        _check_shape(arrays["thumbnails"], (*grid, None, None), "(layers, heads, K, K)", path,
                     f"{what} (thumbnails)")
        return arrays

    @property
    def head_importance(self) -> np.ndarray:
        """(L, H), normalised per layer to unit L2 norm (Michel et al. 2019)."""
        return self.heads["importance"]

    @property
    def head_importance_raw(self) -> np.ndarray:
        """(L, H), sum over the probe set of |d loss / d gate|."""
        return self.heads["importance_raw"]

    def example_gate_gradients(self, rows=None) -> np.ndarray:
        """Signed d loss / d gate per probe example, (n, L, H) float32; rows select probe rows.
        float32 files are used as stored; older float16 files are scaled back by meta.json's
        gate_grad_scale (never rounded through float16 again)."""
        grads = self._gate_grads
        grads = grads if rows is None else grads[np.asarray(rows)]
        grads = np.asarray(grads, dtype=np.float32)
        scale = self.meta.get("gate_grad_scale")
        return grads * np.float32(scale) if scale is not None else grads

    @cached_property
    def _gate_grads(self) -> np.ndarray:
        path = self.path / schema.GATE_GRADS
        what = f"per-example gate gradients of checkpoint {self.step}"
        grads = _load_npy(path, what)
        _check_shape(grads, (self._expect_rows(), self.run.num_layers, self.run.num_heads),
                     "(probe examples, layers, heads)", path, what)
        return grads

    def attention_summary(self, name: str) -> np.ndarray:
        if name not in schema.ATTENTION_SUMMARIES:
            raise NotFoundError(f"no attention summary {name!r}; choose one of {schema.ATTENTION_SUMMARIES}")
        key = f"attention_{name}"
        if key not in self.heads:
            raise CorruptRunError(f"head data of checkpoint {self.step} lacks the array {key!r}: "
                                  f"{self.path / schema.HEADS} ({RERECORD})")
        return self.heads[key]

    @property
    def attention_thumbnails(self) -> np.ndarray:
        """(L, H, K, K) mean attention over the probe set for the first K positions, padding excluded."""
        return self.heads["thumbnails"]

    @property
    def weights_path(self) -> Path | None:
        """Where meta.json says the weights are (relative to the checkpoint folder), as recorded."""
        where = self.meta.get("weights")
        if where is None:
            return None
        p = Path(where)
        return p if p.is_absolute() else (self.path / p)

    def confined_weights_path(self) -> Path | None:
        """The weights folder, resolved (symlinks followed), if it lies inside the run folder or a
        folder run.json names for weights (Run.weights_roots); CorruptRunError otherwise. A server
        loads weights only through this: a run's files must not make it load anything elsewhere."""
        where = self.weights_path
        if where is None:
            return None
        resolved = where.resolve()
        roots = self.run.weights_roots()
        if not any(resolved.is_relative_to(root) for root in roots):
            raise CorruptRunError(
                f"checkpoint {self.step}'s weights location {str(where)!r} (in {self.path / schema.CHECKPOINT_META}) "
                f"resolves to {resolved}, outside the run folder and the folders run.json names for weights "
                f"({', '.join(map(str, roots))}); refusing to load it. Move the weights into the run "
                "(checkpoints/.../weights) or record the Trainer output folder in run.json")
        return resolved

    def has_weights(self, *, confined: bool = False) -> bool:
        """Whether weights are there to load (confined: and inside the allowed folders)."""
        try:
            where = self.confined_weights_path() if confined else self.weights_path
        except CorruptRunError:
            return False
        return where is not None and where.exists()

    def load_model(self, device: str | None = None, *, confined: bool = False):
        """(model, tokenizer) as at this checkpoint, in eval mode with eager attention.
        confined: refuse weights outside the run (see confined_weights_path)."""
        where = self.confined_weights_path() if confined else self.weights_path
        if where is None or not where.exists():
            raise NotFoundError(f"checkpoint {self.step} of run {self.run.name!r} has no saved weights "
                                f"(looked at {where}); record with save_weights=True to load it")
        check_weights_folder(where, f"weights of checkpoint {self.step}")
        from t3vis.models.loading import load_classifier  # torch only when a model is wanted

        try:
            return load_classifier(where, device=device)
        except (T3VisError, ImportError, MemoryError):
            raise
        except Exception as e:      # transformers, safetensors and tokenizers raise many types for damaged files
            raise _load_failure(where, f"weights of checkpoint {self.step}", e) from None


def _brief(error: Exception) -> str:
    first = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {first[:300]}"


def _load_failure(folder: Path, what: str, error: Exception) -> CorruptRunError:
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
    _check_fields(_read_json(config_path, f"the model config of the {what}"), _CONFIG_REQUIRED, _CONFIG_OPTIONAL,
                  config_path, f"the model config of the {what}")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise CorruptRunError(f"{what}: {folder} holds no weights file (one of {', '.join(WEIGHT_FILES)}) "
                              f"({RESAVE_WEIGHTS})")
    for file in sorted(folder.glob("*.safetensors")):
        _check_safetensors(file, what)
    for name in TOKENIZER_FILES:
        if name.endswith(".json") and (folder / name).exists():
            _read_json(folder / name, f"the tokenizer file {name} of the {what}")
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
    needed = 8 + length + max((int(e) for e in ends if _is_int(e)), default=0)
    if size < needed:
        raise CorruptRunError(f"{what}: {path} is truncated ({size} of {needed} bytes) ({RESAVE_WEIGHTS})")


def _check_shape(array: np.ndarray, expected: tuple, meaning: str, path: Path, what: str) -> None:
    """array's shape against expected (None: any size there), and a numeric dtype."""
    fits = array.ndim == len(expected) and all(e is None or s == e for s, e in zip(array.shape, expected))
    if not fits or not np.issubdtype(array.dtype, np.floating):
        want = "(" + ", ".join("any" if e is None else str(e) for e in expected) + ")"
        raise CorruptRunError(f"{what} have shape {array.shape} and dtype {array.dtype}; run.json says "
                              f"{meaning} = {want} of floats: {path} ({RERECORD})")


def _load_npy(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise CorruptRunError(f"{what} are missing: {path} ({RERECORD})") from None
    except Exception as e:      # numpy raises ValueError, OSError, EOFError, ... for a damaged file
        raise CorruptRunError(f"{what} are unreadable ({type(e).__name__}: {e}): {path} ({RERECORD})") from None


def check_parquet(path: Path, what: str, columns: dict) -> Path:
    """path, after checking that the Parquet file's footer reads and names every required
    column with the right kind of type."""
    try:
        found = pq.read_schema(path)
    except FileNotFoundError:
        raise CorruptRunError(f"{what} is missing: {path} ({RERECORD})") from None
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise CorruptRunError(f"{what} is unreadable ({type(e).__name__}: {e}): {path} ({RERECORD})") from None
    _check_columns(found, path, what, columns)
    return path


def _check_columns(found: pa.Schema, path: Path, what: str, columns: dict) -> None:
    names = set(found.names)
    missing = [c for c in columns if c not in names]
    if missing:
        raise CorruptRunError(f"{what} lacks the column(s) {missing} (it has {found.names}): {path} ({RERECORD})")
    for name, (kind, ok) in columns.items():
        if not ok(found.field(name).type):
            raise CorruptRunError(f"{what} has column {name!r} of type {found.field(name).type}, not {kind}: "
                                  f"{path} ({RERECORD})")


def _read_parquet_table(path: Path, what: str, columns: dict) -> pa.Table:
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise CorruptRunError(f"{what} is missing: {path} ({RERECORD})") from None
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise CorruptRunError(f"{what} is unreadable ({type(e).__name__}: {e}): {path} ({RERECORD})") from None
    _check_columns(table.schema, path, what, columns)
    return table


def _read_parquet(path: Path, what: str, columns: dict) -> pd.DataFrame:
    return _read_parquet_table(path, what, columns).to_pandas()
