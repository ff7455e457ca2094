"""Read a run directory. Imports no torch: runs open on machines without it.

Every file is checked where it is read (store/checks.py; a checkpoint's model folder in
store/weights_folder.py): a damaged or foreign file raises CorruptRunError naming the file and
what to do; nothing past the reader sees a KeyError or a library's own exception.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from t3vis.cartography import summarize_dynamics
from t3vis.errors import CorruptRunError, InvalidInputError, NotFoundError, T3VisError
from t3vis.store import schema
from t3vis.store.checks import (
    CHECKPOINT_OPTIONAL,
    CHECKPOINT_REQUIRED,
    RERECORD,
    RUN_OPTIONAL,
    RUN_REQUIRED,
    check_fields,
    check_parquet,
    check_shape,
    dynamics_types,
    example_types,
    is_int,
    load_npy,
    output_types,
    read_json,
    read_parquet,
    read_parquet_table,
    reading,
)
from t3vis.store.weights_folder import check_weights_folder, load_failure
from t3vis.tasks.formats import TaskFormat, task_format


def open_run(path: str | Path) -> Run:
    """Open the run at `path` for reading."""
    return Run(path)



@dataclass(frozen=True)
class StackInfo:
    """One attention stack of a run, as run.json records it."""

    name: str            # "encoder", "decoder" or "cross"
    num_layers: int
    num_heads: int
    hidden_size: int
    hidden: bool         # it has hidden states of its own (cross-attention has not)


@dataclass(frozen=True)
class TokenOutputs:
    """Per target token of a generative run, ragged: example i's tokens are offsets[i]:offsets[i+1]."""

    offsets: np.ndarray     # (N+1,) int64
    target: np.ndarray      # int32, the target token
    nll: np.ndarray         # float16, its negative log-likelihood
    prob: np.ndarray        # float16, its probability
    top1: np.ndarray        # int32, the model's most likely token there

    def example(self, row: int) -> dict[str, np.ndarray]:
        """The arrays of probe row `row`."""
        if not 0 <= int(row) < len(self.offsets) - 1:
            raise NotFoundError(f"probe row {row} does not exist; rows are 0..{len(self.offsets) - 2}")
        a, b = int(self.offsets[row]), int(self.offsets[row + 1])
        return {"target": self.target[a:b], "nll": self.nll[a:b], "prob": self.prob[a:b], "top1": self.top1[a:b]}


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
        self.meta = read_json(meta_path, "the run's metadata")
        version = self.meta.get("format_version")
        if version not in schema.READABLE_VERSIONS and is_int(version):
            raise CorruptRunError(f"{self.path} has run format {version!r}; this t3vis reads formats "
                                  f"{', '.join(map(str, schema.READABLE_VERSIONS))} (install the t3vis version "
                                  "that wrote it)")
        check_fields(self.meta, RUN_REQUIRED, RUN_OPTIONAL, meta_path, "the run's metadata")
        if self.task_format.has_classes and not self.meta["label_names"]:
            raise CorruptRunError(f"{meta_path}: label_names is empty, but a {self.task_format.name} run needs its "
                                  f"class names ({RERECORD})")
        names = [s.name for s in self.stacks]
        if self.default_stack not in names:
            raise CorruptRunError(f"{meta_path}: default_stack {self.default_stack!r} is none of the stacks "
                                  f"{names} ({RERECORD})")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, checkpoints={[c.step for c in self.checkpoints]})"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def task_format(self) -> TaskFormat:
        """What this run's task stores (format v1 runs: classification)."""
        try:
            return task_format(self.meta.get("task"))
        except InvalidInputError as e:
            raise CorruptRunError(f"{self.path / schema.RUN_META}: {e} ({RERECORD})") from None

    @property
    def stacks(self) -> list[StackInfo]:
        """The attention stacks, in the order they run (a v1 run: its one stack)."""
        listed = self.meta.get("stacks")
        if listed is None:
            name = str(self.meta.get("default_stack") or "encoder")
            return [StackInfo(name, self.num_layers, self.num_heads, self.hidden_size, True)]
        return [StackInfo(s["name"], int(s["num_layers"]), int(s["num_heads"]), int(s["hidden_size"]), s["hidden"])
                for s in listed]

    @property
    def default_stack(self) -> str:
        """The stack whose files carry the plain names (hidden.npy...) and whose sizes run.json's
        num_layers, num_heads and hidden_size give."""
        return str(self.meta.get("default_stack") or self.stacks[0].name)

    def stack(self, name: str | None = None) -> StackInfo:
        """One stack by name (None: the default one); NotFoundError naming the stacks there are."""
        name = self.default_stack if name is None else name
        for s in self.stacks:
            if s.name == name:
                return s
        raise NotFoundError(f"run {self.name!r} has no {name!r} stack; it has {[s.name for s in self.stacks]}")

    @property
    def truncated(self) -> int:
        """Probe examples cut at max_length when recorded (0 in runs that do not say)."""
        return int(self.meta.get("truncated") or 0)

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
        return read_parquet(self.path / schema.EXAMPLES, "the examples table", example_types(self.task_format))

    def check_examples(self) -> Path:
        """The examples table's path, after checking its columns (reads the footer only)."""
        return check_parquet(self.path / schema.EXAMPLES, "the examples table", example_types(self.task_format))

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
        return [check_parquet(p, "a training-dynamics part", dynamics_types(self.task_format)) for p in parts]

    def dynamics_observations(self) -> pd.DataFrame:
        """Raw observations from the training passes: id, epoch, step, gold_prob, correct."""
        parts = sorted((self.path / schema.DYNAMICS_DIR).glob("part-*.parquet"))
        types = dynamics_types(self.task_format)
        if not parts:
            correct = "float32" if self.task_format.correct_is_fraction else "bool"
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                                 zip(schema.DYNAMICS_COLUMNS, ("int64", "int32", "int64", "float32", correct))})
        frames = [read_parquet(p, "a training-dynamics part", types)[list(types)] for p in parts]
        return pd.concat(frames, ignore_index=True)

    def dynamics(self, **region_options) -> pd.DataFrame:
        """Per example: id, confidence, variability, correctness, epochs, region (the data map).
        Regions split at 1/K confidence, K = len(label_names), unless region_options say otherwise;
        a generative run's confidence is the mean target-token probability, its correctness the
        token accuracy, and its regions split at the task's threshold (TaskFormat)."""
        region_options.setdefault("num_classes", max(len(self.label_names), 1))
        if self.task_format.confidence_threshold is not None:
            region_options.setdefault("confidence_threshold", self.task_format.confidence_threshold)
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
        self.meta = read_json(meta_path, f"checkpoint metadata of {path.name}")
        check_fields(self.meta, CHECKPOINT_REQUIRED, CHECKPOINT_OPTIONAL, meta_path,
                      f"checkpoint metadata of {path.name}")
        self.step = int(self.meta["step"])
        self.epoch = self.meta.get("epoch")
        self._hidden: dict[str, np.ndarray] = {}       # per stack, read once
        self._heads: dict[str, dict[str, np.ndarray]] = {}
        self._grads: dict[str, np.ndarray] = {}

    def __repr__(self) -> str:
        return f"Checkpoint(step={self.step}, epoch={self.epoch}, metrics={self.metrics})"

    @property
    def metrics(self) -> dict:
        return dict(self.meta.get("metrics") or {})

    def _expect_rows(self) -> int | None:
        return self.run.num_probe

    @cached_property
    def outputs(self) -> pd.DataFrame:
        """The task's output columns, row i is probe row i: classification id, pred, loss, gold_prob,
        correct, nan, probs; generative id, loss, perplexity, mean_prob, token_accuracy, n_tokens, nan."""
        path = self.path / schema.OUTPUTS
        table = read_parquet_table(path, f"outputs of checkpoint {self.step}", output_types(self.run.task_format))
        if "probs" not in table.column_names:
            return table.to_pandas()
        df = table.drop(["probs"]).to_pandas()
        probs = table.column("probs").combine_chunks()
        width = probs.type.list_size
        df["probs"] = list(probs.flatten().to_numpy(zero_copy_only=False).reshape(-1, width))
        return df

    def check_outputs(self) -> Path:
        """The outputs table's path, after checking its columns (reads the footer only)."""
        return check_parquet(self.path / schema.OUTPUTS, f"outputs of checkpoint {self.step}",
                             output_types(self.run.task_format))

    def _file(self, name: str, stack: str | None) -> Path:
        info = self.run.stack(stack)
        return self.path / schema.stack_file(name, info.name, self.run.default_stack)

    @property
    def hidden_states(self) -> np.ndarray:
        """float16 (layers+1, N, d) of the default stack, memory-mapped."""
        return self.stack_hidden_states(None)

    def stack_hidden_states(self, stack: str | None = None) -> np.ndarray:
        """float16 (layers+1, N, d) of one stack (None: the default), memory-mapped."""
        info = self.run.stack(stack)
        if info.name not in self._hidden:
            if not info.hidden:
                raise NotFoundError(f"the {info.name} stack has no hidden states of its own (a cross-attention "
                                    f"stack's are the decoder's); choose one of "
                                    f"{[s.name for s in self.run.stacks if s.hidden]}")
            path = self._file(schema.HIDDEN, info.name)
            what = f"hidden states of checkpoint {self.step}" + ("" if stack is None else f" ({info.name})")
            states = load_npy(path, what)
            check_shape(states, (info.num_layers + 1, self._expect_rows(), info.hidden_size),
                        "(layers + 1, probe examples, hidden size)", path, what)
            self._hidden[info.name] = states
        return self._hidden[info.name]

    def hidden(self, layer: int, stack: str | None = None) -> np.ndarray:
        """Pooled hidden states of one layer, (N, d); layer 0 is the embeddings. stack: None for
        the default one, else "encoder" or "decoder" of an encoder-decoder."""
        states = self.stack_hidden_states(stack)
        if not -states.shape[0] <= int(layer) < states.shape[0]:
            raise NotFoundError(f"layer {layer} does not exist; checkpoint {self.step} has layers "
                                f"0..{states.shape[0] - 1} (0 = embeddings)")
        return states[int(layer)]

    @property
    def heads(self) -> dict[str, np.ndarray]:
        """Every array of the default stack's heads.npz, each checked for its shape: importance,
        importance_raw and the attention summaries (L, H), thumbnails (L, H, K, K)."""
        return self.stack_heads(None)

    def stack_heads(self, stack: str | None = None) -> dict[str, np.ndarray]:
        """heads.npz of one stack (None: the default)."""
        info = self.run.stack(stack)
        if info.name in self._heads:
            return self._heads[info.name]
        path = self._file(schema.HEADS, info.name)
        what = f"head data of checkpoint {self.step}" + ("" if stack is None else f" ({info.name})")
        with reading(path, what), np.load(path) as npz:   # zipfile and zlib errors too, for a damaged archive
            arrays = {k: np.asarray(npz[k]) for k in npz.files}
        grid = (info.num_layers, info.num_heads)
        for key in ("importance", "importance_raw", "thumbnails"):
            if key not in arrays:
                raise CorruptRunError(f"{what} lacks the array {key!r}: {path} ({RERECORD})")
        for key, array in arrays.items():
            if key in ("importance", "importance_raw") or key.startswith("attention_"):
                check_shape(array, grid, "(layers, heads)", path, f"{what} ({key})")
        check_shape(arrays["thumbnails"], (*grid, None, None), "(layers, heads, K, K)", path,
                    f"{what} (thumbnails)")
        self._heads[info.name] = arrays
        return arrays

    @property
    def head_importance(self) -> np.ndarray:
        """(L, H) of the default stack, normalised per layer to unit L2 norm (Michel et al. 2019)."""
        return self.heads["importance"]

    @property
    def head_importance_raw(self) -> np.ndarray:
        """(L, H), sum over the probe set of |d loss / d gate|."""
        return self.heads["importance_raw"]

    def stack_head_importance(self, stack: str | None = None, *, raw: bool = False) -> np.ndarray:
        return self.stack_heads(stack)["importance_raw" if raw else "importance"]

    def example_gate_gradients(self, rows=None, stack: str | None = None) -> np.ndarray:
        """Signed d loss / d gate per probe example, (n, L, H) float32; rows select probe rows.
        float32 files are used as stored; older float16 files are scaled back by meta.json's
        gate_grad_scale (never rounded through float16 again)."""
        grads = self._stack_gate_grads(stack)
        grads = grads if rows is None else grads[np.asarray(rows)]
        grads = np.asarray(grads, dtype=np.float32)
        scale = self.meta.get("gate_grad_scale")
        return grads * np.float32(scale) if scale is not None else grads

    def _stack_gate_grads(self, stack: str | None) -> np.ndarray:
        info = self.run.stack(stack)
        if info.name not in self._grads:
            path = self._file(schema.GATE_GRADS, info.name)
            what = f"per-example gate gradients of checkpoint {self.step}"
            what += "" if stack is None else f" ({info.name})"
            grads = load_npy(path, what)
            check_shape(grads, (self._expect_rows(), info.num_layers, info.num_heads),
                        "(probe examples, layers, heads)", path, what)
            self._grads[info.name] = grads
        return self._grads[info.name]

    def attention_summary(self, name: str, stack: str | None = None) -> np.ndarray:
        if name not in schema.ATTENTION_SUMMARIES + schema.CROSS_ATTENTION_SUMMARIES:
            raise NotFoundError(f"no attention summary {name!r}; choose one of "
                                f"{schema.ATTENTION_SUMMARIES + schema.CROSS_ATTENTION_SUMMARIES}")
        key = f"attention_{name}"
        heads = self.stack_heads(stack)
        if key not in heads:
            if name in schema.CROSS_ATTENTION_SUMMARIES:
                raise NotFoundError(f"{name!r} is a cross-attention summary; the {self.run.stack(stack).name} stack "
                                    "has none")
            raise CorruptRunError(f"head data of checkpoint {self.step} lacks the array {key!r}: "
                                  f"{self._file(schema.HEADS, stack)} ({RERECORD})")
        return heads[key]

    @property
    def attention_thumbnails(self) -> np.ndarray:
        """(L, H, K, K) mean attention over the probe set for the first K positions, padding excluded."""
        return self.heads["thumbnails"]

    @cached_property
    def token_outputs(self) -> TokenOutputs:
        """Per target token of a generative run (ragged): see TokenOutputs."""
        if not self.run.task_format.token_outputs:
            raise NotFoundError(f"a {self.run.task_format.name} run has no per-token outputs")
        path = self.path / schema.TOKENS
        what = f"per-token outputs of checkpoint {self.step}"
        with reading(path, what), np.load(path) as npz:
            arrays = {k: np.asarray(npz[k]) for k in npz.files}
        missing = [k for k in schema.TOKEN_ARRAYS if k not in arrays]
        if missing:
            raise CorruptRunError(f"{what} lacks the array(s) {missing}: {path} ({RERECORD})")
        offsets = arrays["offsets"]
        rows = self._expect_rows()
        check_shape(offsets, (None if rows is None else rows + 1,), "(probe examples + 1,)", path, f"{what} (offsets)",
                    np.integer)
        total = int(offsets[-1]) if len(offsets) else 0
        if len(offsets) == 0 or offsets[0] != 0 or (np.diff(offsets) < 0).any():
            raise CorruptRunError(f"{what}: offsets must start at 0 and never decrease: {path} ({RERECORD})")
        for key in ("target", "nll", "prob", "top1"):
            check_shape(arrays[key], (total,), "(target tokens,)", path, f"{what} ({key})",
                        np.floating if key in ("nll", "prob") else np.integer)
        return TokenOutputs(offsets, arrays["target"], arrays["nll"], arrays["prob"], arrays["top1"])

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
                "(checkpoints/.../weights), or name its folder in run.json's weights_roots")
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
            kept = "none were kept for it" if where is None else f"{where} is gone"
            raise NotFoundError(f"checkpoint {self.step} of run {self.run.name!r} has no saved weights ({kept}); "
                                "pick a checkpoint that kept them, or record with keep_weights='all' (or a "
                                "keep_weights policy that keeps this checkpoint)")
        check_weights_folder(where, f"weights of checkpoint {self.step}")
        from t3vis.models.loading import load_checkpoint_model  # torch only when a model is wanted

        roots = self.run.weights_roots() if confined else None
        try:
            return load_checkpoint_model(where, self.run.task_format.auto_model, device=device, roots=roots)
        except (T3VisError, ImportError, MemoryError):
            raise
        except Exception as e:      # transformers, safetensors and tokenizers raise many types for damaged files
            raise load_failure(where, f"weights of checkpoint {self.step}", e) from None

