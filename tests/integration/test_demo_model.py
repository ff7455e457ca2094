"""The offline defaults and the demo path on the real all-MiniLM-L6-v2 and Rotten Tomatoes."""

import numpy as np
import pytest

import t3vis
from t3vis.defaults import DEMO_LABELS, load_demo_data, load_demo_model
from t3vis.demo import DemoConfig, run_demo, stratified_split

pytestmark = pytest.mark.integration


def test_demo_data_is_the_polarity_corpus_without_plot_rows():
    data = load_demo_data()
    assert 12_000 < len(data) < 13_000
    assert set(data["label"]) == {0, 1}
    assert data["text"].str.len().max() < 1_000  # plot synopses are paragraphs; sentences are not
    assert not data["text"].duplicated().any()


def test_stratified_split_is_disjoint_and_keeps_the_label_mix():
    labels = np.array([0] * 300 + [1] * 700)
    a, b = stratified_split(labels, (100, 50), seed=0)
    assert len(a) == 100 and len(b) == 50 and not set(a) & set(b)
    assert labels[a].mean() == pytest.approx(0.7) and labels[b].mean() == pytest.approx(0.7)


def test_demo_model_is_minilm_with_eager_attention_and_a_fresh_head():
    model, _tokenizer = load_demo_model(DEMO_LABELS)
    assert model.config.num_hidden_layers == 6 and model.config.num_attention_heads == 12
    assert model.config.hidden_size == 384 and model.config._attn_implementation == "eager"
    assert 22_000_000 < sum(p.numel() for p in model.parameters()) < 23_000_000
    assert model.config.id2label == {0: "rotten", 1: "fresh"}


def test_demo_runs_end_to_end_on_a_small_sample(tmp_path):
    config = DemoConfig(out=tmp_path / "demo", train_size=48, heldout_size=16, probe_train_size=16, epochs=1,
                        snapshots_per_epoch=2, batch_size=16, max_length=32)
    lines = []
    run_demo(config, log=lines.append)
    run = t3vis.open_run(tmp_path / "demo")
    assert [c.step for c in run.checkpoints] == [0, 2, 3]   # step 0 and every half epoch (3 steps)
    assert run.num_layers == 6 and run.num_heads == 12 and run.hidden_size == 384
    ck = run.checkpoints[-1]
    assert ck.hidden(6).shape == (32, 384)
    assert ck.head_importance.shape == (6, 12) and (ck.head_importance_raw > 0).all()
    # MiniLM has previous-token heads: the recorded attention summaries must show one
    assert ck.attention_summary("to_previous").max() > 0.5
    assert set(run.probe_examples["split"]) == {"validation", "train"}
    assert len(run.examples) == 48 + 16
    dyn = run.dynamics()
    assert len(dyn) == 48 and (dyn["epochs"] == 1).all()
    # data map selections light up probed training examples: their ids are shared
    assert len(set(dyn["id"]) & set(run.probe_examples["id"])) == 16
    assert any("held-out accuracy" in line for line in lines)
    model, _ = ck.load_model()
    assert model.config.num_labels == 2
