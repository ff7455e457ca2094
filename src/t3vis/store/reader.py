"""Read a run directory. Imports no torch: runs open on machines without it.

Every file is checked where it is read (store/checks.py; a checkpoint's model folder in
store/weights_folder.py): a damaged or foreign file raises CorruptRunError naming the file and
what to do; nothing past the reader sees a KeyError or a library's own exception.
"""

from __future__ import annotations

import warnings
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
    DYNAMICS_TYPES,
    EXAMPLE_TYPES,
    OUTPUT_TYPES,
    RERECORD,
    RUN_OPTIONAL,
    RUN_REQUIRED,
    check_fields,
    check_parquet,
    check_shape,
    is_int,
    load_npy,
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
        if version != schema.FORMAT_VERSION and is_int(version):
            raise CorruptRunError(f"{self.path} has run format {version!r}; this t3vis reads format "
                                  f"{schema.FORMAT_VERSION} (install the t3vis version that wrote it)")
        check_fields(self.meta, RUN_REQUIRED, RUN_OPTIONAL, meta_path, "the run's metadata")

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
        return read_parquet(self.path / schema.EXAMPLES, "the examples table", EXAMPLE_TYPES)

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
        frames = [read_parquet(p, "a training-dynamics part", DYNAMICS_TYPES)[list(DYNAMICS_TYPES)] for p in parts]
        return pd.concat(frames, ignore_index=True)

    def dynamics(self, **region_options) -> pd.DataFrame:
        """Per example: id, confidence, variability, correctness, epochs, region (the data map).
        Regions split at 1/K confidence, K = len(label_names), unless region_options say otherwise."""
        region_options.setdefault("num_classes", len(self.label_names))
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
        table = read_parquet_table(path, f"outputs of checkpoint {self.step}", OUTPUT_TYPES)
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
        states = load_npy(path, f"hidden states of checkpoint {self.step}")
        run = self.run
        check_shape(states, (run.num_layers + 1, self._expect_rows(), run.hidden_size),
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
        with reading(path, what), np.load(path) as npz:   # zipfile and zlib errors too, for a damaged archive
            arrays = {k: np.asarray(npz[k]) for k in npz.files}
        grid = (self.run.num_layers, self.run.num_heads)
        for key in ("importance", "importance_raw", "thumbnails"):
            if key not in arrays:
                raise CorruptRunError(f"{what} lacks the array {key!r}: {path} ({RERECORD})")
        for key, array in arrays.items():
            if key in ("importance", "importance_raw") or key.startswith("attention_"):
                check_shape(array, grid, "(layers, heads)", path, f"{what} ({key})")
        check_shape(arrays["thumbnails"], (*grid, None, None), "(layers, heads, K, K)", path,
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
        grads = load_npy(path, what)
        check_shape(grads, (self._expect_rows(), self.run.num_layers, self.run.num_heads),
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

