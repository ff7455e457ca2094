"""Write a run directory (format in schema.py). Every file lands atomically; nothing the writer
did not write is ever overwritten."""

from __future__ import annotations

import datetime as _dt
import json
import shutil
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from t3vis.errors import InvalidInputError
from t3vis.store import schema
from t3vis.store.atomic import (
    recover_replaced,
    remove_stale_staging,
    staged_directory,
    write_bytes_atomic,
    write_json_atomic,
)
from t3vis.store.rows import RaggedRows, RowFile
from t3vis.tasks.formats import CLASSIFICATION


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def examples_table(df: pd.DataFrame) -> pa.Table:
    """The examples table; a generative run's `target` column travels as text."""
    missing = [c for c in schema.EXAMPLE_COLUMNS if c not in df.columns]
    if missing:
        raise InvalidInputError(f"examples table lacks column(s) {missing}")
    if df["id"].duplicated().any():
        dup = df.loc[df["id"].duplicated(), "id"].iloc[0]
        raise InvalidInputError(f"example id {dup} appears twice; ids must be unique")
    df = df.copy()
    df["id"] = df["id"].astype("int64")
    df["label"] = df["label"].astype("int64")
    df["probe_row"] = df["probe_row"].astype("int64")
    df["split"] = df["split"].astype(str)
    df["text"] = df["text"].astype(str)
    if "target" in df.columns:
        df["target"] = df["target"].astype(str)
    return pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)


class CheckpointStage:
    """The files of one checkpoint while it is being written, in a hidden staging folder."""

    def __init__(self, path: Path):
        self.path = path
        self.meta_extra: dict = {}
        self.metrics: dict = {}   # merged into meta.json's metrics when the checkpoint completes

    def hidden_array(self, num_layers_plus_one: int, num_examples: int, hidden_size: int,
                     file: str = schema.HIDDEN) -> np.ndarray:
        """A float16 memory-mapped array to fill in place (layer-major); file: schema.stack_file's name."""
        return np.lib.format.open_memmap(
            self.path / file, mode="w+", dtype=np.float16,
            shape=(num_layers_plus_one, num_examples, hidden_size),
        )

    def hidden_rows(self, num_layers_plus_one: int, num_examples: int, hidden_size: int,
                    file: str = schema.HIDDEN) -> RowFile:
        """hidden_array's file, written a batch of examples at a time (rows along axis 1): the
        writer never holds more of it than a batch, however many examples there are."""
        return RowFile(self.path / file, (num_layers_plus_one, num_examples, hidden_size), np.float16, axis=1)

    def gate_grad_rows(self, num_examples: int, num_layers: int, num_heads: int,
                       file: str = schema.GATE_GRADS) -> RowFile:
        """write_gate_grads' file (float32, see there), written a batch of examples at a time."""
        return RowFile(self.path / file, (num_examples, num_layers, num_heads), np.float32, axis=0)

    def scratch(self, name: str) -> str:
        """The name of a hidden file in the staging folder for work in progress (a rank's shard):
        whoever makes it removes it before the checkpoint completes; a failed one takes it along."""
        return f".scratch-{name}"

    def write_outputs(self, outputs: pd.DataFrame | Mapping[str, np.ndarray],
                      columns: tuple[str, ...] = CLASSIFICATION.output_columns) -> None:
        """The task's output columns (TaskFormat.output_columns), each with its stored type: a
        frame, or arrays by column name (probs (N, C), the others (N,))."""
        missing = [c for c in columns if c not in outputs]
        if missing:
            raise InvalidInputError(f"checkpoint outputs lack column(s) {missing}")
        pq.write_table(pa.table({c: _output_column(c, outputs[c]) for c in columns}), self.path / schema.OUTPUTS,
                       compression="zstd")

    def write_heads(self, arrays: dict[str, np.ndarray], file: str = schema.HEADS) -> None:
        """An .npz of the named arrays (as np.savez writes it, but any name is allowed and no pickles)."""
        _write_npz(self.path / file, arrays)

    def write_gate_grads(self, grads: np.ndarray, file: str = schema.GATE_GRADS) -> None:
        """grads (N, L, H), stored float32: one example's gradients can be many orders of magnitude
        below the checkpoint's largest, which a float16 relative to that largest would flush to zero."""
        np.save(self.path / file, np.asarray(grads, dtype=np.float32))

    def write_tokens(self, arrays: dict[str, np.ndarray]) -> None:
        """Per-target-token arrays (schema.TOKEN_ARRAYS), ragged by offsets."""
        missing = [k for k in schema.TOKEN_ARRAYS if k not in arrays]
        if missing:
            raise InvalidInputError(f"token arrays lack {missing}")
        _write_npz(self.path / schema.TOKENS,
                   {k: np.asarray(arrays[k], dtype=TOKEN_DTYPES[k]) for k in schema.TOKEN_ARRAYS})

    def token_rows(self, num_examples: int, name: str = schema.TOKENS) -> RaggedRows:
        """Per-target-token values (write_tokens' arrays but offsets, in their stored types), put a
        batch of examples at a time into files of the staging folder: see write_token_files."""
        return RaggedRows(self.path / name, num_examples, {k: v for k, v in TOKEN_DTYPES.items() if k != "offsets"})

    def write_token_files(self, shards: Sequence[RaggedRows]) -> None:
        """write_tokens for the values of token_rows' files (finished; one per shard of the
        examples, in order; each removed once in): streamed into the npz a chunk at a time."""
        offsets, total = [np.zeros(1, np.int64)], 0
        for shard in shards:
            shard.finish()
            assert shard.offsets is not None
            offsets.append(shard.offsets[1:] + total)
            total += shard.total
        with zipfile.ZipFile(self.path / schema.TOKENS, mode="w", compression=zipfile.ZIP_STORED) as npz:
            with npz.open("offsets.npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.concatenate(offsets), allow_pickle=False)
            for column in schema.TOKEN_ARRAYS[1:]:
                dtype = np.dtype(TOKEN_DTYPES[column])
                with npz.open(f"{column}.npy", mode="w", force_zip64=True) as member:
                    np.lib.format.write_array_header_1_0(member, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                                  "fortran_order": False, "shape": (total,)})
                    for shard in shards:
                        if shard.dtypes[column] != dtype:
                            raise InvalidInputError(f"token {column} stored as {dtype}, not {shard.dtypes[column]}")
                        for chunk in shard.chunks(column):
                            member.write(chunk)
        for shard in shards:
            shard.remove()

    @property
    def weights_dir(self) -> Path:
        return self.path / schema.WEIGHTS_DIR


class RunWriter:
    """Creates a run directory and adds checkpoints and training dynamics to it."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.recover()

    def recover(self) -> None:
        """Put back a checkpoint whose replacement a crash interrupted (see store/atomic.py)."""
        parent = self.run_dir / schema.CHECKPOINTS_DIR
        if parent.is_dir():
            recover_replaced(parent, schema.TRASH_PREFIX, schema.STAGING_PREFIX)

    @classmethod
    def create(cls, run_dir: str | Path, meta: dict, examples: pd.DataFrame) -> RunWriter:
        """Start a run in `run_dir`: a new folder, an empty one, or one an interrupted create left."""
        run_dir = Path(run_dir)
        _check_creatable(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        marker = run_dir / _CREATING_MARKER
        marker.touch()  # until run.json is written: whatever is here, this create put here
        for sub in (schema.CHECKPOINTS_DIR, schema.DYNAMICS_DIR, schema.CACHE_DIR):
            (run_dir / sub).mkdir(exist_ok=True)
        meta = dict(meta)
        meta.setdefault("format_version", schema.FORMAT_VERSION)
        meta.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        writer = cls(run_dir)
        writer.write_examples(examples)
        write_json_atomic(run_dir / schema.RUN_META, meta)  # last: its presence marks a run
        marker.unlink()
        return writer

    def add_weights_root(self, folder: str | Path) -> None:
        """Name a folder outside the run that checkpoints' weights may be loaded from (run.json's
        `weights_roots`); the server loads weights only from the run and the folders named here."""
        meta = json.loads((self.run_dir / schema.RUN_META).read_text())
        roots = list(meta.get("weights_roots") or [])
        resolved = str(Path(folder).expanduser().resolve())
        if resolved not in roots:
            meta["weights_roots"] = [*roots, resolved]
            write_json_atomic(self.run_dir / schema.RUN_META, meta)

    def checkpoint_steps(self) -> list[int]:
        """The steps of the complete checkpoints on disk, in order (staging and trash folders excluded)."""
        parent = self.run_dir / schema.CHECKPOINTS_DIR
        if not parent.is_dir():
            return []
        steps = (schema.parse_checkpoint_dirname(p.name) for p in parent.iterdir()
                 if (p / schema.CHECKPOINT_META).is_file())
        return sorted(step for step in steps if step is not None)

    def drop_weights(self, step: int) -> int:
        """Delete the weights this run saved with checkpoint `step` (checkpoints/step-*/weights);
        returns the bytes freed. meta.json is rewritten first, atomically, with "weights": null, so a
        crash never leaves it naming a half-deleted folder (a leftover folder is removed next time).
        Weights meta.json names elsewhere (a Trainer's checkpoint) are never touched."""
        folder = self.run_dir / schema.CHECKPOINTS_DIR / schema.checkpoint_dirname(step)
        meta_path = folder / schema.CHECKPOINT_META
        meta = _readable_meta(meta_path)
        if meta is None:
            return 0    # a damaged meta.json: leave the checkpoint as it is (the reader reports it)
        if meta.get("weights") == schema.WEIGHTS_DIR:
            meta["weights"] = None
            write_json_atomic(meta_path, meta)
        weights = folder / schema.WEIGHTS_DIR
        if meta.get("weights") is not None or not weights.is_dir():
            return 0
        freed = folder_bytes(weights)
        shutil.rmtree(weights)
        return freed

    def saved_weights_bytes(self, step: int) -> int:
        """Bytes of the weights this run saved with checkpoint `step` (0 when none or referenced)."""
        folder = self.run_dir / schema.CHECKPOINTS_DIR / schema.checkpoint_dirname(step)
        meta = _readable_meta(folder / schema.CHECKPOINT_META) or {}
        return folder_bytes(folder / schema.WEIGHTS_DIR) if meta.get("weights") == schema.WEIGHTS_DIR else 0

    def write_examples(self, examples: pd.DataFrame) -> None:
        write_bytes_atomic(self.run_dir / schema.EXAMPLES, _parquet_bytes(examples_table(examples)))

    def append_dynamics(self, dynamics: pd.DataFrame, *, fractional: bool = False) -> None:
        """fractional: `correct` holds token accuracies (TaskFormat.correct_is_fraction)."""
        if dynamics.empty:
            return
        table = pa.table({
            "id": pa.array(dynamics["id"].to_numpy(np.int64)),
            "epoch": pa.array(dynamics["epoch"].to_numpy(np.int32)),
            "step": pa.array(dynamics["step"].to_numpy(np.int64)),
            "gold_prob": pa.array(dynamics["gold_prob"].to_numpy(np.float32)),
            # a bool, or a generative example's token accuracy (schema.DYNAMICS_COLUMNS)
            "correct": pa.array(dynamics["correct"].to_numpy(np.float32 if fractional else bool)),
        })
        folder = self.run_dir / schema.DYNAMICS_DIR
        folder.mkdir(exist_ok=True)
        index = 1 + max((int(p.stem.split("-")[1]) for p in folder.glob("part-*.parquet")), default=-1)
        write_bytes_atomic(folder / f"part-{index:06d}.parquet", _parquet_bytes(table))

    @contextmanager
    def checkpoint(self, step: int, *, epoch: float | None, metrics: dict,
                   weights_location: str | None = None) -> Iterator[CheckpointStage]:
        """Stage a checkpoint; it becomes visible, complete, when the block ends without error."""
        parent = self.run_dir / schema.CHECKPOINTS_DIR
        parent.mkdir(exist_ok=True)
        self.recover()
        remove_stale_staging(parent, schema.STAGING_PREFIX)
        final = parent / schema.checkpoint_dirname(step)
        with staged_directory(final, schema.STAGING_PREFIX, schema.TRASH_PREFIX) as staging:
            stage = CheckpointStage(staging)
            yield stage
            meta = {
                "step": int(step),
                "epoch": None if epoch is None else float(epoch),
                "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "metrics": {k: _json_number(v) for k, v in {**metrics, **stage.metrics}.items()},
                "weights": weights_location if weights_location is not None else (
                    schema.WEIGHTS_DIR if stage.weights_dir.exists() else None),
                **stage.meta_extra,
            }
            (staging / schema.CHECKPOINT_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with zipfile.ZipFile(path, mode="w", compression=zipfile.ZIP_STORED) as npz:
        for name, array in arrays.items():
            with npz.open(f"{name}.npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


# the stored type of each per-target-token array (tokens.npz)
TOKEN_DTYPES = {"offsets": np.int64, "target": np.int32, "nll": np.float16, "prob": np.float16, "top1": np.int32}

# the stored type of each output column any task has; probs is a fixed-size list per example
_OUTPUT_TYPES = {"id": np.int64, "pred": np.int32, "loss": np.float32, "gold_prob": np.float32, "correct": bool,
                 "nan": bool, "perplexity": np.float32, "mean_prob": np.float32, "token_accuracy": np.float32,
                 "n_tokens": np.int32}


def _output_column(name: str, values: pd.Series | np.ndarray) -> pa.Array:
    if name == "probs":
        rows = values.to_numpy() if isinstance(values, pd.Series) else values
        probs = np.asarray(rows if rows.ndim == 2 else np.stack(list(rows)), dtype=np.float32)
        return pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1)), probs.shape[1])
    return pa.array(np.asarray(values, dtype=_OUTPUT_TYPES[name]))


def _readable_meta(path: Path) -> dict | None:
    """A checkpoint's meta.json as a dict, or None if it cannot be read as one."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def folder_bytes(folder: Path) -> int:
    """The summed size of the files under `folder` (0 if it does not exist)."""
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# Present only while `create` runs: a folder holding it was left by an interrupted create.
_CREATING_MARKER = ".t3vis-create-incomplete"


def _check_creatable(run_dir: Path) -> None:
    """Refuse to create a run where it would overwrite files that are not an interrupted create's."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise InvalidInputError(f"cannot create a run at {run_dir}: it is a file, not a folder; "
                                "choose a new folder for the run")
    if (run_dir / schema.RUN_META).exists():
        raise InvalidInputError(f"{run_dir} already holds a t3vis run (it has {schema.RUN_META}); add "
                                "checkpoints to it (t3vis.Recorder(..., exist_ok=True)), or choose a new folder")
    names = sorted(p.name for p in run_dir.iterdir())
    if names and _CREATING_MARKER not in names:
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise InvalidInputError(f"cannot create a run in {run_dir}: the folder is not empty (it holds {shown}) "
                                "and t3vis never writes among other files; choose a new folder for the run, "
                                "or empty this one")


def _json_number(value):
    """NaN and infinity are not JSON: they are written as null."""
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None
