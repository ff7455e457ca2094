"""Read a run directory. Imports no torch: runs open on machines without it."""

from __future__ import annotations

import json
import warnings
import zipfile
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from t3vis.errors import CorruptRunError, NotFoundError
from t3vis.store import schema
from t3vis.cartography import summarize_dynamics


def open_run(path: str | Path) -> "Run":
    """Open the run at `path` for reading."""
    return Run(path)


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CorruptRunError(f"{what} is missing: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptRunError(f"{what} is not valid JSON ({e}): {path}") from None


class Run:
    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        if not self.path.is_dir():
            raise NotFoundError(f"no run at {self.path}: the folder does not exist "
                                "(record one with `t3vis demo`, `t3vis record`, or t3vis.Recorder)")
        if not (self.path / schema.RUN_META).is_file():
            raise NotFoundError(f"{self.path} is not a t3vis run: it has no {schema.RUN_META} "
                                "(pass the folder that t3vis.Recorder or `t3vis record --out` wrote)")
        self.meta = _read_json(self.path / schema.RUN_META, "the run's metadata")
        version = self.meta.get("format_version")
        if version != schema.FORMAT_VERSION:
            raise CorruptRunError(f"{self.path} has run format {version!r}; this t3vis reads format "
                                  f"{schema.FORMAT_VERSION} (install the t3vis version that wrote it)")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, checkpoints={[c.step for c in self.checkpoints]})"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def label_names(self) -> list[str]:
        return list(self.meta["label_names"])

    @property
    def num_layers(self) -> int:
        return int(self.meta["num_layers"])

    @property
    def num_heads(self) -> int:
        return int(self.meta["num_heads"])

    @property
    def hidden_size(self) -> int:
        return int(self.meta["hidden_size"])

    @cached_property
    def examples(self) -> pd.DataFrame:
        """Every example the run knows: probed ones (probe_row >= 0) and training ones seen."""
        return _read_parquet(self.path / schema.EXAMPLES, "the examples table")

    @property
    def probe_examples(self) -> pd.DataFrame:
        """The probed examples, in probe order (row i matches row i of hidden() and outputs)."""
        ex = self.examples
        return ex[ex["probe_row"] >= 0].sort_values("probe_row").reset_index(drop=True)

    @property
    def checkpoints(self) -> list["Checkpoint"]:
        """Complete checkpoints, sorted by step. Staging folders and folders without meta.json are skipped."""
        folder = self.path / schema.CHECKPOINTS_DIR
        found = []
        for p in folder.iterdir() if folder.is_dir() else ():
            step = schema.parse_checkpoint_dirname(p.name)
            if step is not None and (p / schema.CHECKPOINT_META).is_file():
                try:
                    found.append(Checkpoint(self, p))
                except CorruptRunError as e:  # one damaged checkpoint must not hide the others
                    warnings.warn(f"skipping checkpoint {p.name}: {e}", stacklevel=2)
        return sorted(found, key=lambda c: c.step)

    def checkpoint(self, step: int) -> "Checkpoint":
        for ck in self.checkpoints:
            if ck.step == int(step):
                return ck
        steps = [c.step for c in self.checkpoints]
        raise NotFoundError(f"run {self.name!r} has no checkpoint at step {step}; it has steps {steps}")

    def dynamics_observations(self) -> pd.DataFrame:
        """Raw observations from the training passes: id, epoch, step, gold_prob, correct."""
        parts = sorted((self.path / schema.DYNAMICS_DIR).glob("part-*.parquet"))
        if not parts:
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                                 zip(schema.DYNAMICS_COLUMNS, ("int64", "int32", "int64", "float32", "bool"))})
        return pd.concat([_read_parquet(p, "a training-dynamics part") for p in parts], ignore_index=True)

    def dynamics(self, **region_options) -> pd.DataFrame:
        """Per example: id, confidence, variability, correctness, epochs, region (the data map)."""
        return summarize_dynamics(self.dynamics_observations(), **region_options)


class Checkpoint:
    def __init__(self, run: Run, path: Path):
        self.run = run
        self.path = path
        self.meta = _read_json(path / schema.CHECKPOINT_META, f"checkpoint metadata of {path.name}")
        self.step = int(self.meta["step"])
        self.epoch = self.meta.get("epoch")

    def __repr__(self) -> str:
        return f"Checkpoint(step={self.step}, epoch={self.epoch}, metrics={self.metrics})"

    @property
    def metrics(self) -> dict:
        return dict(self.meta.get("metrics") or {})

    @cached_property
    def outputs(self) -> pd.DataFrame:
        """id, pred, loss, gold_prob, correct, nan, probs; row i is probe row i."""
        table = _read_parquet_table(self.path / schema.OUTPUTS, f"outputs of checkpoint {self.step}")
        df = table.drop(["probs"]).to_pandas()
        probs = table.column("probs").combine_chunks()
        width = probs.type.list_size
        df["probs"] = list(probs.flatten().to_numpy(zero_copy_only=False).reshape(-1, width))
        return df

    @cached_property
    def hidden_states(self) -> np.ndarray:
        """float16 (layers+1, N, d), memory-mapped."""
        return _load_npy(self.path / schema.HIDDEN, f"hidden states of checkpoint {self.step}")

    def hidden(self, layer: int) -> np.ndarray:
        """Pooled hidden states of one layer, (N, d); layer 0 is the embeddings."""
        states = self.hidden_states
        if not -states.shape[0] <= int(layer) < states.shape[0]:
            raise NotFoundError(f"layer {layer} does not exist; checkpoint {self.step} has layers "
                                f"0..{states.shape[0] - 1} (0 = embeddings)")
        return states[int(layer)]

    @cached_property
    def heads(self) -> dict[str, np.ndarray]:
        try:
            with np.load(self.path / schema.HEADS) as npz:
                return {k: npz[k] for k in npz.files}
        except (FileNotFoundError, ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise CorruptRunError(f"head data of checkpoint {self.step} is unreadable ({e}): "
                                  f"{self.path / schema.HEADS}") from None

    @property
    def head_importance(self) -> np.ndarray:
        """(L, H), normalised per layer to unit L2 norm (Michel et al. 2019)."""
        return self.heads["importance"]

    @property
    def head_importance_raw(self) -> np.ndarray:
        """(L, H), sum over the probe set of |d loss / d gate|."""
        return self.heads["importance_raw"]

    def example_gate_gradients(self, rows=None) -> np.ndarray:
        """Signed d loss / d gate per probe example, (n, L, H) float32; rows select probe rows."""
        grads = self._gate_grads
        grads = grads if rows is None else grads[np.asarray(rows)]
        return grads.astype(np.float32) * float(self.meta.get("gate_grad_scale", 1.0))

    @cached_property
    def _gate_grads(self) -> np.ndarray:
        return _load_npy(self.path / schema.GATE_GRADS, f"per-example gate gradients of checkpoint {self.step}")

    def attention_summary(self, name: str) -> np.ndarray:
        if name not in schema.ATTENTION_SUMMARIES:
            raise NotFoundError(f"no attention summary {name!r}; choose one of {schema.ATTENTION_SUMMARIES}")
        return self.heads[f"attention_{name}"]

    @property
    def attention_thumbnails(self) -> np.ndarray:
        """(L, H, K, K) mean attention over the probe set for the first K positions, padding excluded."""
        return self.heads["thumbnails"]

    @property
    def weights_path(self) -> Path | None:
        where = self.meta.get("weights")
        if where is None:
            return None
        p = Path(where)
        return p if p.is_absolute() else (self.path / p)

    def load_model(self, device: str | None = None):
        """(model, tokenizer) as at this checkpoint, in eval mode with eager attention."""
        where = self.weights_path
        if where is None or not where.exists():
            raise NotFoundError(f"checkpoint {self.step} of run {self.run.name!r} has no saved weights "
                                f"(looked at {where}); record with save_weights=True to load it")
        from t3vis.models.loading import load_classifier  # torch only when a model is wanted

        return load_classifier(where, device=device)


def _load_npy(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except (FileNotFoundError, ValueError, OSError) as e:
        raise CorruptRunError(f"{what} are unreadable ({e}): {path}") from None


def _read_parquet_table(path: Path, what: str):
    try:
        return pq.read_table(path)
    except FileNotFoundError:
        raise CorruptRunError(f"{what} is missing: {path}") from None
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise CorruptRunError(f"{what} is unreadable ({type(e).__name__}: {e}): {path}") from None


def _read_parquet(path: Path, what: str) -> pd.DataFrame:
    return _read_parquet_table(path, what).to_pandas()
