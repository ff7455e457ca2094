"""`t3vis demo --task seq2seq`: BBC News headlines from an encoder-decoder warm-started from the
bundled all-MiniLM-L6-v2, fine-tuned with the Trainer and recorded; tiny sizes, no downloads."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import t3vis
from t3vis.cli import main
from t3vis.defaults import headline_data_dir, load_generative_demo_model, load_headline_data
from t3vis.demo import DemoConfig
from t3vis.models.structure import find_stacks

pytestmark = pytest.mark.integration


def _articles_by_title() -> dict[str, str]:
    """{title: body} read straight from the corpus files (first line the title)."""
    articles = {}
    for file in headline_data_dir().glob("*/*.txt"):
        title, _, body = file.read_bytes().decode("utf-8", errors="replace").strip().partition("\n")
        articles[title.strip()] = " ".join(body.split())
    return articles


def test_headline_data_pairs_each_articles_opening_with_its_title():
    data = load_headline_data(sentences=2)
    assert 2_000 < len(data) <= 2_225   # the corpus's 2,225 articles, those it holds twice once
    assert set(data["category"]) == {"business", "entertainment", "politics", "sports", "tech"}
    first = data.iloc[0]   # business/001.txt
    assert first["title"] == "Ad sales boost Time Warner profit"
    assert first["source"].startswith("Quarterly profits at US media giant TimeWarner jumped 76%")
    assert first["source"].endswith("higher advert sales.")   # two sentences, the second one ending here
    assert data["source"].str.split().str.len().median() < 60


def test_the_warm_started_encoder_decoder_has_three_stacks_and_starts_decoding_at_cls():
    model, tokenizer = load_generative_demo_model()
    assert [(s.stack, s.num_layers, s.num_heads) for s in find_stacks(model)] == \
        [("encoder", 6, 12), ("decoder", 6, 12), ("cross", 6, 12)]
    assert model.config.decoder_start_token_id == tokenizer.cls_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert model.encoder.config._attn_implementation == "eager"
    assert model.decoder.config._attn_implementation == "eager" and model.config.decoder.is_decoder
    # the encoder and the decoder's self-attention start as the same pretrained MiniLM
    torch.testing.assert_close(model.decoder.bert.encoder.layer[0].attention.self.query.weight,
                               model.encoder.encoder.layer[0].attention.self.query.weight)


def test_the_classification_demo_keeps_its_defaults(monkeypatch, tmp_path):
    seen = []

    def fake_run(config):
        seen.append(config)
        return tmp_path

    monkeypatch.setattr("t3vis.demo.run_demo", fake_run)
    assert main(["demo", "--no-serve"]) == 0
    assert seen == [DemoConfig(out=Path("runs/demo"), train_size=4000, heldout_size=1000, probe_train_size=1000,
                               epochs=2, snapshots_per_epoch=2, batch_size=32, max_length=64, seed=0)]


@pytest.mark.filterwarnings("ignore:Version v4.12.0:FutureWarning")   # EncoderDecoderModel's, given labels
def test_the_seq2seq_demo_records_a_headline_model_learning(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--task", "seq2seq", "--out", str(out), "--train-size", "32", "--heldout-size", "6",
                 "--probe-train-size", "6", "--epochs", "1", "--batch-size", "8", "--max-length", "24",
                 "--no-serve"]) == 0
    run = t3vis.open_run(out)
    assert run.task_format.name == "seq2seq"
    assert [s.name for s in run.stacks] == ["encoder", "decoder", "cross"]
    assert [c.step for c in run.checkpoints] == [0, 2, 4]   # step 0 and every half epoch (4 steps)

    # the probe targets are the articles' titles, the sources the openings of their bodies
    probes = run.probe_examples
    assert list(probes["split"]) == ["validation"] * 6 + ["train"] * 6
    articles = _articles_by_title()
    for source, title in zip(probes["text"], probes["target"]):
        assert articles[title].startswith(source)

    # outputs per probe example; loss is the mean target-token NLL, perplexity its exponential
    first, last = run.checkpoints[0], run.checkpoints[-1]
    for ck in (first, last):
        outputs = ck.outputs
        assert {"loss", "perplexity", "token_accuracy", "n_tokens"} <= set(outputs.columns)
        np.testing.assert_allclose(outputs["perplexity"], np.exp(outputs["loss"]), rtol=1e-4)
        tokens = ck.token_outputs.example(0)
        # (per-token NLLs are stored in float16)
        assert outputs["loss"][0] == pytest.approx(float(np.mean(tokens["nll"].astype(np.float64))), rel=2e-3)
    assert last.metrics["validation_loss"] < first.metrics["validation_loss"]   # it learns, even in 4 steps

    # the newest checkpoint's weights reload, and give the loss recorded for a held-out example
    model, tokenizer = last.load_model()
    source, title = probes["text"][0], probes["target"][0]
    inputs = tokenizer(source, return_tensors="pt")
    labels = tokenizer(text_target=title, return_tensors="pt")["input_ids"]
    inputs = {k: v[:, :24] for k, v in inputs.items()}
    with torch.no_grad():
        own = model(**inputs, labels=labels[:, :24]).loss.item()
    assert last.outputs["loss"][0] == pytest.approx(own, rel=1e-3)
    assert math.isfinite(own)

    # training dynamics from the Trainer's passes: every training article, the probed ones linked
    dynamics = run.dynamics()
    assert len(dynamics) == 32 and (dynamics["epochs"] == 1).all()
    train_probes = set(probes.loc[probes["split"] == "train", "id"])
    assert train_probes <= set(dynamics["id"])
