"""The run directory: write with RunWriter, read back with t3vis.open_run (no model, no torch)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import t3vis
from t3vis import CorruptRunError, NotFoundError
from t3vis.cartography import REGIONS, assign_regions, summarize_dynamics
from t3vis.store import schema
from t3vis.store.writer import RunWriter
from t3vis.tasks.formats import CLASSIFICATION

L, H, D, N, C, K = 2, 3, 5, 4, 3, 4   # layers, heads, hidden size, probe examples, classes, thumbnail size


def run_meta(**overrides) -> dict:
    meta = {"t3vis_version": "test", "model": {"name_or_path": "hand-made"}, "task": "sequence-classification",
            "label_names": ["neg", "neu", "pos"], "num_layers": L, "num_heads": H, "hidden_size": D,
            "pooling": "cls", "max_length": 16, "thumbnail_size": K, "num_probe": N}
    meta.update(overrides)
    return meta


def examples_frame() -> pd.DataFrame:
    # probe rows deliberately out of table order; two training-only examples (probe_row -1)
    return pd.DataFrame({
        "id": [10, 11, 12, 13, 14, 15],
        "split": ["train", "validation", "train", "validation", "train", "train"],
        "text": ["a b", "c d e", "f", "g h", "only train", "also train"],
        "label": [0, 2, 1, 1, 0, 2],
        "probe_row": [2, 0, -1, 3, 1, -1],
    })


PROBE_IDS = np.array([11, 14, 10, 13])   # ids in probe_row order
PROBE_LABELS = np.array([2, 0, 0, 1])


def outputs_frame(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(N, C))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    pred = probs.argmax(1)
    return pd.DataFrame({"id": PROBE_IDS, "pred": pred, "loss": -np.log(probs[np.arange(N), PROBE_LABELS]),
                         "gold_prob": probs[np.arange(N), PROBE_LABELS], "correct": pred == PROBE_LABELS,
                         "nan": [False, False, True, False], "probs": list(probs)})


def hidden_values(seed: int) -> np.ndarray:
    return np.random.default_rng(seed + 100).normal(size=(L + 1, N, D)).astype(np.float32)


def heads_arrays(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + 200)
    grads = rng.normal(size=(N, L, H)).astype(np.float32) * 7.0
    raw = np.abs(grads).sum(0)
    arrays = {"importance": (raw / np.linalg.norm(raw, axis=1, keepdims=True)).astype(np.float32),
              "importance_raw": raw.astype(np.float32),
              "thumbnails": rng.random((L, H, K, K)).astype(np.float16),
              "thumbnail_counts": np.full((K, K), N, np.int64)}
    for i, name in enumerate(schema.ATTENTION_SUMMARIES):
        arrays[f"attention_{name}"] = np.full((L, H), float(i), np.float32) + rng.random((L, H)).astype(np.float32)
    return arrays, grads


def write_checkpoint(writer: RunWriter, step: int, seed: int, epoch: float | None = 1.0, metrics=None):
    with writer.checkpoint(step, epoch=epoch, metrics=metrics or {"probe_accuracy": 0.5}) as stage:
        hidden = stage.hidden_array(L + 1, N, D)
        hidden[:] = hidden_values(seed)
        hidden.flush()
        del hidden
        stage.write_outputs(outputs_frame(seed))
        arrays, grads = heads_arrays(seed)
        stage.write_heads(arrays)
        stage.write_gate_grads(grads)


@pytest.fixture
def written(tmp_path):
    """A hand-made run with checkpoints written out of step order."""
    writer = RunWriter.create(tmp_path / "run", run_meta(), examples_frame())
    for step, seed in ((10, 1), (2, 2), (100_000_000, 3), (99_999_999, 4)):
        write_checkpoint(writer, step, seed, epoch=step / 10, metrics={"probe_accuracy": 0.25, "bad": float("nan")})
    return tmp_path / "run", writer


# -- round trip -------------------------------------------------------------------------


def test_run_meta_and_examples_round_trip(written):
    path, _ = written
    run = t3vis.open_run(path)
    assert run.meta["format_version"] == schema.FORMAT_VERSION
    assert "created" in run.meta
    assert run.label_names == ["neg", "neu", "pos"]
    assert (run.num_layers, run.num_heads, run.hidden_size) == (L, H, D)
    ex = run.examples
    assert list(ex.columns) == list(schema.EXAMPLE_COLUMNS)
    expected = examples_frame()
    assert ex["id"].tolist() == expected["id"].tolist()
    assert ex["text"].tolist() == expected["text"].tolist()
    assert ex["split"].tolist() == expected["split"].tolist()
    assert ex["label"].tolist() == expected["label"].tolist()
    assert ex["probe_row"].tolist() == expected["probe_row"].tolist()
    assert ex["id"].dtype == np.int64 and ex["label"].dtype == np.int64 and ex["probe_row"].dtype == np.int64


def test_probe_examples_are_in_probe_row_order(written):
    run = t3vis.open_run(written[0])
    probe = run.probe_examples
    assert probe["id"].tolist() == PROBE_IDS.tolist()
    assert probe["probe_row"].tolist() == [0, 1, 2, 3]
    assert probe["label"].tolist() == PROBE_LABELS.tolist()
    assert probe.index.tolist() == [0, 1, 2, 3]


def test_checkpoints_sorted_by_step_numerically(written):
    run = t3vis.open_run(written[0])
    # "step-100000000" sorts before "step-99999999" as text; the reader sorts by the number
    assert [c.step for c in run.checkpoints] == [2, 10, 99_999_999, 100_000_000]
    ck = run.checkpoint(10)
    assert ck.step == 10 and ck.epoch == 1.0
    assert ck.metrics == {"probe_accuracy": 0.25, "bad": None}   # NaN metrics become null in JSON
    assert ck.weights_path is None
    assert run.checkpoints[-1].step == 100_000_000
    assert "checkpoints=[2, 10, 99999999, 100000000]" in repr(run)


def test_outputs_columns_dtypes_and_values(written):
    run = t3vis.open_run(written[0])
    for step, seed in ((10, 1), (2, 2)):
        out = run.checkpoint(step).outputs
        want = outputs_frame(seed)
        assert list(out.columns) == list(CLASSIFICATION.output_columns)
        assert out["id"].dtype == np.int64
        assert out["pred"].dtype == np.int32
        assert out["loss"].dtype == np.float32
        assert out["gold_prob"].dtype == np.float32
        assert out["correct"].dtype == bool
        assert out["nan"].dtype == bool
        assert out["id"].tolist() == PROBE_IDS.tolist()
        assert out["pred"].tolist() == want["pred"].tolist()
        assert out["correct"].tolist() == want["correct"].tolist()
        assert out["nan"].tolist() == [False, False, True, False]
        np.testing.assert_allclose(out["loss"].to_numpy(), want["loss"].to_numpy(), rtol=1e-6)
        np.testing.assert_allclose(out["gold_prob"].to_numpy(), want["gold_prob"].to_numpy(), rtol=1e-6)
        probs = np.stack(out["probs"].to_numpy())
        assert probs.shape == (N, C) and probs.dtype == np.float32
        np.testing.assert_allclose(probs, np.stack(want["probs"].to_numpy()), rtol=1e-6)
        np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)


def test_hidden_layers_shape_dtype_values(written):
    run = t3vis.open_run(written[0])
    ck = run.checkpoint(99_999_999)
    want = hidden_values(4).astype(np.float16)
    assert ck.hidden_states.shape == (L + 1, N, D)
    assert isinstance(ck.hidden_states, np.memmap)
    for layer in range(L + 1):
        h = ck.hidden(layer)
        assert h.shape == (N, D) and h.dtype == np.float16
        np.testing.assert_array_equal(h, want[layer])
    np.testing.assert_array_equal(ck.hidden(-1), want[L])   # negative index counts from the top
    # float16 storage: within half precision of the float32 input
    np.testing.assert_allclose(ck.hidden(1).astype(np.float32), hidden_values(4)[1], rtol=1e-3, atol=1e-3)


def test_unknown_layer_is_not_found(written):
    ck = t3vis.open_run(written[0]).checkpoint(2)
    for layer in (L + 1, 50, -(L + 2)):
        with pytest.raises(NotFoundError, match=rf"layer {layer} does not exist.*0\.\.{L}"):
            ck.hidden(layer)


def test_head_importance_and_gate_gradients(written):
    ck = t3vis.open_run(written[0]).checkpoint(10)
    arrays, grads = heads_arrays(1)
    assert ck.head_importance.shape == (L, H)
    np.testing.assert_array_equal(ck.head_importance, arrays["importance"])
    np.testing.assert_allclose(np.linalg.norm(ck.head_importance, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(ck.head_importance_raw, arrays["importance_raw"])
    # stored float32 as given (no scale): read back bit for bit
    full = ck.example_gate_gradients()
    assert isinstance(ck._stack_gate_grads(None), np.memmap)   # N x L x H never loads whole to read a few rows
    assert ck._stack_gate_grads(None).dtype == np.float32
    assert "gate_grad_scale" not in ck.meta
    assert full.shape == (N, L, H) and full.dtype == np.float32
    np.testing.assert_array_equal(full, grads)
    some = ck.example_gate_gradients([3, 1])
    assert some.shape == (2, L, H)
    np.testing.assert_array_equal(some, full[[3, 1]])
    np.testing.assert_array_equal(ck.example_gate_gradients(np.array([True, False, False, True])), full[[0, 3]])


# One checkpoint's gate gradients, (N, L, H), chosen by hand: example 0 holds the checkpoint's
# largest magnitude (1000); example 1 is 1e-6 of it, example 2 is 1e-9 of it. Relative to the
# largest in float16 (the old storage), example 1 came back about 1% off and example 2 as zeros.
SMALL_GRADS = np.array([
    [[1000.0, -500.0, 250.0], [125.0, -62.5, 31.25]],
    [[1.0e-3, -1.5e-3, 2.5e-3], [-7.5e-4, 1.25e-3, -3.0e-3]],
    [[1.0e-6, -2.0e-6, 0.0], [3.0e-6, -4.0e-6, 5.0e-6]],
    [[0.5, -0.25, 0.125], [0.0, 0.0, -1.0]],
])


def test_small_gate_gradients_keep_float32_precision(tmp_path):
    writer = RunWriter.create(tmp_path / "run", run_meta(), examples_frame())
    with writer.checkpoint(1, epoch=None, metrics={}) as stage:
        stage.write_outputs(outputs_frame(0))
        stage.write_gate_grads(SMALL_GRADS)          # float64 in: stored as float32
    ck = t3vis.open_run(tmp_path / "run").checkpoint(1)
    assert np.load(ck.path / schema.GATE_GRADS).dtype == np.float32
    float32_eps = 2.0 ** -23
    for rows in ([1], [2], [1, 2], None):
        got = ck.example_gate_gradients(rows)
        want = SMALL_GRADS if rows is None else SMALL_GRADS[rows]
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=float32_eps, atol=0)
    one = ck.example_gate_gradients([1])[0]
    assert one[0, 0] == pytest.approx(1.0e-3, rel=float32_eps) and one[1, 2] == pytest.approx(-3.0e-3, rel=float32_eps)


def test_gate_gradients_of_older_runs_still_read(written):
    # runs written before float32 storage: float16 divided by meta.json's gate_grad_scale
    path, _ = written
    folder = path / schema.CHECKPOINTS_DIR / schema.checkpoint_dirname(2)
    stored = np.array([[[0.5, -0.25, 1.0], [0.125, 0.0, -1.0]]] * N, dtype=np.float16)
    np.save(folder / schema.GATE_GRADS, stored)
    meta = json.loads((folder / schema.CHECKPOINT_META).read_text())
    (folder / schema.CHECKPOINT_META).write_text(json.dumps({**meta, "gate_grad_scale": 8.0}))
    got = t3vis.open_run(path).checkpoint(2).example_gate_gradients([3])
    np.testing.assert_array_equal(got, [[[4.0, -2.0, 8.0], [1.0, 0.0, -8.0]]])


def test_attention_summaries_and_thumbnails(written):
    ck = t3vis.open_run(written[0]).checkpoint(2)
    arrays, _ = heads_arrays(2)
    for name in schema.ATTENTION_SUMMARIES:
        got = ck.attention_summary(name)
        assert got.shape == (L, H)
        np.testing.assert_array_equal(got, arrays[f"attention_{name}"])
    with pytest.raises(NotFoundError, match=r"no attention summary 'nonsense'.*entropy"):
        ck.attention_summary("nonsense")
    assert ck.attention_thumbnails.shape == (L, H, K, K)
    np.testing.assert_array_equal(ck.attention_thumbnails, arrays["thumbnails"])


def test_rerecording_a_step_replaces_it_atomically(written):
    path, writer = written
    write_checkpoint(writer, 10, seed=7)
    run = t3vis.open_run(path)
    assert [c.step for c in run.checkpoints] == [2, 10, 99_999_999, 100_000_000]
    np.testing.assert_array_equal(run.checkpoint(10).hidden(0), hidden_values(7)[0].astype(np.float16))
    leftovers = [p.name for p in (path / schema.CHECKPOINTS_DIR).iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_meta_extra_and_weights_location(tmp_path):
    writer = RunWriter.create(tmp_path / "run", run_meta(), examples_frame())
    with writer.checkpoint(3, epoch=None, metrics={}, weights_location="/somewhere/else") as stage:
        stage.meta_extra["note"] = "hello"
        stage.write_outputs(outputs_frame(0))
    ck = t3vis.open_run(tmp_path / "run").checkpoint(3)
    assert ck.epoch is None
    assert ck.meta["note"] == "hello"
    assert str(ck.weights_path) == "/somewhere/else"
    with pytest.raises(NotFoundError, match="no saved weights"):
        ck.load_model()


# -- training dynamics -------------------------------------------------------------------

# Hand-made observations. gold probabilities are dyadic, so float32 storage is exact.
#   id  per-epoch gold_prob           confidence  variability (population std)   correct
#   1   .5 .5 .5                      .5          0                              T T T
#   2   .125 .25 .375                 .25         sqrt(1/96)  ~ .102             F F F
#   3   .25 .75 .5                    .5          sqrt(1/24)  ~ .204             F T T
#   4   .5 .5625 .625                 .5625       sqrt(1/384) ~ .051             T T T
#   5   0 1 .5                        .5          sqrt(1/6)   ~ .408             F T F
#   6   epoch 0 seen twice (.25, .375 -> .3125), epoch 1 .3125
#                                     .3125       0                              (T, F) F
# Sorted variabilities 0 0 .051 .102 .204 .408: the 2/3 quantile (linear) is
# .102 + (.204 - .102) / 3 = .136, so 3 and 5 are ambiguous; of the rest confidence >= .5
# is easy-to-learn (1 sits exactly on the threshold) and below is hard-to-learn.
OBS = [  # id, epoch, gold_prob, correct
    (1, 0, .5, True), (1, 1, .5, True), (1, 2, .5, True),
    (2, 0, .125, False), (2, 1, .25, False), (2, 2, .375, False),
    (3, 0, .25, False), (3, 1, .75, True), (3, 2, .5, True),
    (4, 0, .5, True), (4, 1, .5625, True), (4, 2, .625, True),
    (5, 0, 0., False), (5, 1, 1., True), (5, 2, .5, False),
    (6, 0, .25, True), (6, 0, .375, False), (6, 1, .3125, False),
]
EXPECTED = {  # id: confidence, variability, correctness, epochs, region
    1: (.5, 0.0, 1.0, 3, "easy-to-learn"),
    2: (.25, np.sqrt(1 / 96), 0.0, 3, "hard-to-learn"),
    3: (.5, np.sqrt(1 / 24), 2 / 3, 3, "ambiguous"),
    4: (.5625, np.sqrt(1 / 384), 1.0, 3, "easy-to-learn"),
    5: (.5, np.sqrt(1 / 6), 1 / 3, 3, "ambiguous"),
    6: (.3125, 0.0, 0.25, 2, "hard-to-learn"),
}


def observations(rows=OBS) -> pd.DataFrame:
    return pd.DataFrame({"id": [r[0] for r in rows], "epoch": [r[1] for r in rows],
                         "step": np.arange(len(rows)) * 10, "gold_prob": [r[2] for r in rows],
                         "correct": [r[3] for r in rows]})


def check_summary(summary: pd.DataFrame) -> None:
    assert list(summary.columns) == ["id", "confidence", "variability", "correctness", "epochs", "region"]
    assert summary["id"].tolist() == sorted(EXPECTED)
    for _, row in summary.iterrows():
        conf, var, correct, epochs, region = EXPECTED[int(row["id"])]
        assert row["confidence"] == pytest.approx(conf, abs=1e-9), row["id"]
        assert row["variability"] == pytest.approx(var, abs=1e-7), row["id"]
        assert row["correctness"] == pytest.approx(correct, abs=1e-9), row["id"]
        assert row["epochs"] == epochs, row["id"]
        assert row["region"] == region, row["id"]


def test_dynamics_round_trip_from_parts(tmp_path):
    writer = RunWriter.create(tmp_path / "run", run_meta(), examples_frame())
    obs = observations()
    # one part per flush; the reader concatenates them
    writer.append_dynamics(obs[obs["epoch"] == 0])
    writer.append_dynamics(obs.iloc[0:0])   # an empty flush writes no part
    writer.append_dynamics(obs[obs["epoch"] > 0])
    parts = sorted(p.name for p in (tmp_path / "run" / schema.DYNAMICS_DIR).iterdir())
    assert parts == ["part-000000.parquet", "part-000001.parquet"]
    run = t3vis.open_run(tmp_path / "run")
    raw = run.dynamics_observations()
    assert list(raw.columns) == list(schema.DYNAMICS_COLUMNS)
    assert len(raw) == len(OBS)
    assert raw["id"].dtype == np.int64 and raw["epoch"].dtype == np.int32 and raw["correct"].dtype == bool
    assert raw["gold_prob"].dtype == np.float32
    assert sorted(raw["step"].tolist()) == list(range(0, 10 * len(OBS), 10))
    check_summary(run.dynamics())


def test_summarize_dynamics_by_hand():
    check_summary(summarize_dynamics(observations()))


def test_dynamics_region_options(tmp_path):
    # a zero quantile: every example with any variability is ambiguous (1 and 6 have none)
    summary = summarize_dynamics(observations(), variability_quantile=0.0)
    regions = dict(zip(summary["id"], summary["region"]))
    assert regions == {1: "easy-to-learn", 2: "ambiguous", 3: "ambiguous", 4: "ambiguous", 5: "ambiguous",
                       6: "hard-to-learn"}
    # a higher confidence threshold moves 1 and 4 to hard-to-learn
    summary = summarize_dynamics(observations(), confidence_threshold=0.6)
    regions = dict(zip(summary["id"], summary["region"]))
    assert regions[1] == "hard-to-learn" and regions[4] == "hard-to-learn" and regions[3] == "ambiguous"


def test_no_variability_means_no_ambiguous_region():
    region = assign_regions(np.array([0.9, 0.1, 0.5]), np.zeros(3))
    assert region.tolist() == ["easy-to-learn", "hard-to-learn", "easy-to-learn"]
    assert set(REGIONS) == {"easy-to-learn", "ambiguous", "hard-to-learn"}


def test_run_without_dynamics(tmp_path):
    RunWriter.create(tmp_path / "run", run_meta(), examples_frame())
    run = t3vis.open_run(tmp_path / "run")
    raw = run.dynamics_observations()
    assert raw.empty and list(raw.columns) == list(schema.DYNAMICS_COLUMNS)
    summary = run.dynamics()
    assert summary.empty
    assert list(summary.columns) == ["id", "confidence", "variability", "correctness", "epochs", "region"]
    assert run.checkpoints == []


# -- errors ---------------------------------------------------------------------------------


def test_missing_folder_is_not_found(tmp_path):
    missing = tmp_path / "no-such-run"
    with pytest.raises(NotFoundError) as info:
        t3vis.open_run(missing)
    assert str(missing) in str(info.value)
    assert "does not exist" in str(info.value)


def test_folder_without_run_json_is_not_found(tmp_path):
    folder = tmp_path / "just-a-folder"
    folder.mkdir()
    (folder / "examples.parquet").write_bytes(b"")
    with pytest.raises(NotFoundError) as info:
        t3vis.open_run(folder)
    assert str(folder) in str(info.value)
    assert schema.RUN_META in str(info.value)


def test_other_format_version_is_corrupt(tmp_path):
    RunWriter.create(tmp_path / "run", run_meta(format_version=schema.FORMAT_VERSION + 1), examples_frame())
    with pytest.raises(CorruptRunError, match=rf"format {schema.FORMAT_VERSION + 1}") as info:
        t3vis.open_run(tmp_path / "run")
    assert str(tmp_path / "run") in str(info.value)


def test_run_json_not_json_is_corrupt(tmp_path):
    RunWriter.create(tmp_path / "run", run_meta(), examples_frame())
    (tmp_path / "run" / schema.RUN_META).write_text("{not json")
    with pytest.raises(CorruptRunError, match="not valid JSON"):
        t3vis.open_run(tmp_path / "run")


def test_corrupt_examples_parquet_names_the_file(written):
    path, _ = written
    target = path / schema.EXAMPLES
    target.write_bytes(b"PAR1 but not really")
    run = t3vis.open_run(path)   # opening reads only run.json
    with pytest.raises(CorruptRunError) as info:
        _ = run.examples
    assert str(target) in str(info.value)


def test_corrupt_outputs_parquet_names_the_file(written):
    path, _ = written
    target = path / schema.CHECKPOINTS_DIR / schema.checkpoint_dirname(10) / schema.OUTPUTS
    target.write_bytes(target.read_bytes()[: len(target.read_bytes()) // 2])   # truncated
    ck = t3vis.open_run(path).checkpoint(10)
    with pytest.raises(CorruptRunError) as info:
        _ = ck.outputs
    assert str(target) in str(info.value)
    # garbage instead of Parquet
    target.write_bytes(b"this is not parquet at all" * 10)
    with pytest.raises(CorruptRunError) as info:
        _ = t3vis.open_run(path).checkpoint(10).outputs
    assert str(target) in str(info.value)
    # other checkpoints still read
    assert len(t3vis.open_run(path).checkpoint(2).outputs) == N


def test_missing_outputs_parquet_is_corrupt(written):
    path, _ = written
    target = path / schema.CHECKPOINTS_DIR / schema.checkpoint_dirname(2) / schema.OUTPUTS
    target.unlink()
    with pytest.raises(CorruptRunError, match="missing") as info:
        _ = t3vis.open_run(path).checkpoint(2).outputs
    assert str(target) in str(info.value)


@pytest.mark.parametrize("filename, read", [
    (schema.HIDDEN, lambda ck: ck.hidden(1)),
    (schema.HEADS, lambda ck: ck.head_importance),
    (schema.GATE_GRADS, lambda ck: ck.example_gate_gradients()),
])
@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing"])
def test_a_damaged_array_file_names_the_file(written, filename, read, damage):
    path, _ = written
    target = path / schema.CHECKPOINTS_DIR / schema.checkpoint_dirname(10) / filename
    data = target.read_bytes()
    if damage == "garbage":
        target.write_bytes(b"\x00garbage" * 100)
    elif damage == "truncated":
        target.write_bytes(data[: len(data) // 2])
    else:
        target.unlink()
    ck = t3vis.open_run(path).checkpoint(10)
    with pytest.raises(CorruptRunError) as info:
        read(ck)
    assert str(target) in str(info.value)


def test_unknown_checkpoint_step_lists_the_steps(written):
    run = t3vis.open_run(written[0])
    with pytest.raises(NotFoundError) as info:
        run.checkpoint(3)
    message = str(info.value)
    assert "step 3" in message
    assert "[2, 10, 99999999, 100000000]" in message


# -- atomicity ---------------------------------------------------------------------------------


def test_staging_and_incomplete_folders_are_invisible(written):
    path, _ = written
    folder = path / schema.CHECKPOINTS_DIR
    staging = folder / ".staging-xyz"
    staging.mkdir()
    (staging / schema.CHECKPOINT_META).write_text(json.dumps({"step": 5, "epoch": None, "metrics": {}}))
    incomplete = folder / schema.checkpoint_dirname(7)
    incomplete.mkdir()
    (incomplete / schema.HIDDEN).write_bytes(b"half")
    (folder / "notes.txt").write_text("a stray file")
    trash = folder / (schema.TRASH_PREFIX + schema.checkpoint_dirname(3))   # an old copy being replaced
    trash.mkdir()
    (trash / schema.CHECKPOINT_META).write_text(json.dumps({"step": 3, "epoch": None, "metrics": {}}))
    run = t3vis.open_run(path)
    # the writer renames checkpoints in with meta.json inside: a step folder without it is damage
    with pytest.warns(UserWarning, match="skipping checkpoint step-00000007"):
        assert [c.step for c in run.checkpoints] == [2, 10, 99_999_999, 100_000_000]
    for step in (3, 5):
        with pytest.raises(NotFoundError):
            run.checkpoint(step)
    with pytest.raises(CorruptRunError, match=schema.CHECKPOINT_META):
        run.checkpoint(7)


def test_next_checkpoint_removes_stale_staging(written):
    path, writer = written
    stale = path / schema.CHECKPOINTS_DIR / ".staging-left-by-a-crash"
    stale.mkdir()
    (stale / schema.HIDDEN).write_bytes(b"half a file")
    write_checkpoint(writer, 11, seed=5)
    assert not stale.exists()
    assert 11 in [c.step for c in t3vis.open_run(path).checkpoints]


def test_exception_inside_checkpoint_leaves_nothing(written):
    path, writer = written
    folder = path / schema.CHECKPOINTS_DIR
    before = sorted(p.name for p in folder.iterdir())

    class Boom(RuntimeError):
        pass

    with pytest.raises(Boom), writer.checkpoint(42, epoch=4.2, metrics={}) as stage:
        hidden = stage.hidden_array(L + 1, N, D)
        hidden[:] = 1.0
        hidden.flush()
        del hidden
        stage.write_outputs(outputs_frame(0))
        assert stage.path.parent == folder and stage.path.name.startswith(schema.STAGING_PREFIX)
        assert stage.path.is_dir()
        raise Boom("crash half-way")
    assert sorted(p.name for p in folder.iterdir()) == before
    assert not (folder / schema.checkpoint_dirname(42)).exists()
    run = t3vis.open_run(path)
    assert 42 not in [c.step for c in run.checkpoints]
    with pytest.raises(NotFoundError):
        run.checkpoint(42)


def test_exception_while_rerecording_keeps_the_old_checkpoint(written):
    path, writer = written
    with pytest.raises(ValueError), writer.checkpoint(2, epoch=0.0, metrics={}) as stage:
        stage.write_outputs(outputs_frame(9))
        raise ValueError("no")
    ck = t3vis.open_run(path).checkpoint(2)
    np.testing.assert_array_equal(ck.hidden(0), hidden_values(2)[0].astype(np.float16))
    assert ck.outputs["pred"].tolist() == outputs_frame(2)["pred"].tolist()
    assert [p.name for p in (path / schema.CHECKPOINTS_DIR).iterdir() if p.name.startswith(".")] == []


def test_a_corrupt_checkpoint_meta_hides_only_that_checkpoint(written):
    path, _ = written
    steps = [c.step for c in t3vis.open_run(path).checkpoints]
    damaged = path / schema.CHECKPOINTS_DIR / schema.checkpoint_dirname(steps[0]) / schema.CHECKPOINT_META
    damaged.write_text("{not json")
    with pytest.warns(UserWarning, match=f"skipping checkpoint {schema.checkpoint_dirname(steps[0])}"):
        remaining = [c.step for c in t3vis.open_run(path).checkpoints]
    assert remaining == steps[1:]
