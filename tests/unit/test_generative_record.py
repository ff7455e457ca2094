"""Recording generative models: one teacher-forced probe pass per snapshot, per stack, run format v2.

References are built independently of t3vis's task encoding: inputs tokenised here by hand and
the model's own `outputs.loss` (which shifts labels itself), log-softmax of the model's logits,
finite differences over head gates.
"""

from contextlib import ExitStack

import numpy as np
import pytest
import torch
from conftest import make_generative_model, make_model, make_pairs, make_texts

import t3vis
from t3vis.errors import InvalidInputError, UnsupportedModelError
from t3vis.models.gates import gated_heads
from t3vis.models.structure import find_stacks

CASES = [("gpt2", "causal-lm", False), ("gpt2", "causal-lm", True), ("llama", "causal-lm", True),
         ("llama", "causal-lm", False), ("t5", "seq2seq", True), ("bart", "seq2seq", True)]


def _by_hand(tokenizer, model, source, target, task, whole):
    """(model inputs, labels) of one example, tokenised here: what the model's own loss is given."""
    if task == "seq2seq":
        ids = torch.tensor([tokenizer(source)["input_ids"]])
        labels = torch.tensor([tokenizer(text_target=target)["input_ids"]])
        return {"input_ids": ids}, labels          # the model builds its decoder inputs from the labels
    if whole:
        ids = torch.tensor([tokenizer(source)["input_ids"]])
        return {"input_ids": ids}, ids.clone()
    prompt = tokenizer(source)["input_ids"]
    completion = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = torch.tensor([prompt + completion])
    return {"input_ids": ids}, torch.tensor([[-100] * len(prompt) + completion])


def _record(tmp_path, kind, task, with_targets, n=7, **options):
    model, tokenizer = make_generative_model(kind)
    sources, targets = make_pairs(n)
    rec = t3vis.Recorder(tmp_path / "run", model, tokenizer, sources, targets=targets if with_targets else None,
                         task=task, batch_size=3, **options)
    rec.snapshot(step=0)
    return model, tokenizer, sources, targets, t3vis.open_run(tmp_path / "run")


@pytest.mark.parametrize("kind, task, with_targets", CASES)
def test_each_examples_loss_and_token_outputs_match_the_model_on_that_example_alone(tmp_path, kind, task,
                                                                                     with_targets):
    model, tokenizer, sources, targets, run = _record(tmp_path, kind, task, with_targets)
    ck = run.checkpoints[0]
    out, tokens = ck.outputs, ck.token_outputs
    model.eval()
    for i, (source, target) in enumerate(zip(sources, targets)):
        inputs, labels = _by_hand(tokenizer, model, source, target, task, not with_targets)
        with torch.no_grad():
            reference = model(**inputs, labels=labels)
        assert out.loc[i, "loss"] == pytest.approx(reference.loss.item(), rel=1e-5)
        # per token: the logits that predict each label (decoder-only: shifted by one)
        logits, gold = (reference.logits[0], labels[0]) if task == "seq2seq" else \
            (reference.logits[0, :-1], labels[0, 1:])
        keep = gold != -100
        log_probs = logits[keep].log_softmax(-1)
        nll = -log_probs[torch.arange(int(keep.sum())), gold[keep]].numpy()
        mine = tokens.example(i)
        np.testing.assert_array_equal(mine["target"], gold[keep].numpy())
        np.testing.assert_allclose(mine["nll"], nll, rtol=2e-3, atol=2e-3)            # stored float16
        np.testing.assert_allclose(mine["prob"], np.exp(-nll), rtol=2e-3, atol=2e-3)
        np.testing.assert_array_equal(mine["top1"], logits[keep].argmax(-1).numpy())
        assert out.loc[i, "n_tokens"] == int(keep.sum())
        assert out.loc[i, "perplexity"] == pytest.approx(np.exp(reference.loss.item()), rel=1e-4)
        assert out.loc[i, "mean_prob"] == pytest.approx(np.exp(-nll).mean(), rel=1e-4)
        assert out.loc[i, "token_accuracy"] == pytest.approx((mine["top1"] == mine["target"]).mean())
    # the checkpoint's loss is over all target tokens together, as a training loop reports it
    n_tokens = out["n_tokens"].to_numpy()
    assert ck.metrics["probe_loss"] == pytest.approx((out["loss"] * n_tokens).sum() / n_tokens.sum(), rel=1e-5)


@pytest.mark.parametrize("kind, stacks", [("gpt2", {"decoder": 2}), ("llama", {"decoder": 2}),
                                          ("t5", {"encoder": 2, "decoder": 3, "cross": 3}),
                                          ("bart", {"encoder": 2, "decoder": 3, "cross": 3})])
def test_every_stack_is_recorded_with_its_own_files(tmp_path, kind, stacks):
    task = "seq2seq" if "cross" in stacks else "causal-lm"
    _, _, sources, _, run = _record(tmp_path, kind, task, True)
    assert {s.name: s.num_layers for s in run.stacks} == stacks
    assert run.default_stack == "decoder" and run.meta["format_version"] == 2 and run.meta["task"] == task
    ck = run.checkpoints[0]
    for stack in run.stacks:
        assert ck.stack_head_importance(stack.name).shape == (stack.num_layers, 4)
        assert ck.example_gate_gradients(stack=stack.name).shape == (len(sources), stack.num_layers, 4)
        if stack.hidden:
            assert ck.hidden(stack.num_layers, stack.name).shape == (len(sources), 32)
        else:
            with pytest.raises(t3vis.NotFoundError, match="no hidden states of its own"):
                ck.hidden(0, stack.name)
    if "cross" in stacks:
        coverage = ck.attention_summary("coverage", "cross")
        assert coverage.shape == (3, 4) and ((coverage > 0) & (coverage <= 1)).all()
        assert np.isnan(ck.attention_summary("to_self", "cross")).all()   # positions of two streams
        with pytest.raises(t3vis.NotFoundError, match="cross-attention summary"):
            ck.attention_summary("coverage", "encoder")


def test_pooled_states_are_the_mean_over_target_tokens_and_over_source_tokens(tmp_path):
    model, tokenizer, sources, targets, run = _record(tmp_path, "bart", "seq2seq", True)
    ck = run.checkpoints[0]
    model.eval()
    for i in (0, 4):
        source = torch.tensor([tokenizer(sources[i])["input_ids"]])
        labels = torch.tensor([tokenizer(text_target=targets[i])["input_ids"]])
        with torch.no_grad():
            out = model(input_ids=source, labels=labels, output_hidden_states=True)
        for layer in (0, 2):
            np.testing.assert_allclose(ck.hidden(layer, "encoder")[i].astype(np.float32),
                                       out.encoder_hidden_states[layer][0].mean(0).numpy(), rtol=5e-3, atol=5e-3)
        for layer in (0, 3):     # one decoder position per target token
            np.testing.assert_allclose(ck.hidden(layer, "decoder")[i].astype(np.float32),
                                       out.decoder_hidden_states[layer][0].mean(0).numpy(), rtol=5e-3, atol=5e-3)


def test_a_causal_lm_pools_its_completion_tokens_or_the_last_token(tmp_path):
    model, tokenizer = make_generative_model("gpt2")
    sources, targets = make_pairs(4)
    runs = {}
    for pooling in ("auto", "last"):
        rec = t3vis.Recorder(tmp_path / pooling, model, tokenizer, sources, targets=targets, task="causal-lm",
                             pooling=pooling)
        rec.snapshot(step=0)
        runs[pooling] = t3vis.open_run(tmp_path / pooling).checkpoints[0]
    model.eval()
    inputs, labels = _by_hand(tokenizer, model, sources[1], targets[1], "causal-lm", False)
    with torch.no_grad():
        states = model(**inputs, output_hidden_states=True).hidden_states[-1][0]
    completion = labels[0] != -100
    np.testing.assert_allclose(runs["auto"].hidden(2)[1].astype(np.float32), states[completion].mean(0).numpy(),
                               rtol=5e-3, atol=5e-3)
    np.testing.assert_allclose(runs["last"].hidden(2)[1].astype(np.float32), states[-1].numpy(), rtol=5e-3, atol=5e-3)


def test_gate_gradients_of_every_stack_match_finite_differences(tmp_path):
    model, tokenizer = make_generative_model("bart")
    model.double()
    sources, targets = make_pairs(3)
    t3vis.Recorder(tmp_path / "run", model, tokenizer, sources, targets=targets, task="seq2seq").snapshot(step=0)
    ck = t3vis.open_run(tmp_path / "run").checkpoints[0]
    stacks = find_stacks(model)
    model.eval()

    def losses(stack_index, layer, head, eps):
        gates = [torch.ones(s.num_layers, s.num_heads, dtype=torch.float64) for s in stacks]
        gates[stack_index][layer, head] += eps
        out = []
        with ExitStack() as hooks, torch.no_grad():
            for layout, g in zip(stacks, gates):
                hooks.enter_context(gated_heads(layout, g))
            for i in range(3):
                inputs, labels = _by_hand(tokenizer, model, sources[i], targets[i], "seq2seq", False)
                out.append(model(**inputs, labels=labels).loss.item())
        return np.array(out)

    for index, layout in enumerate(stacks):
        for layer, head in ((0, 1), (layout.num_layers - 1, 3)):
            numeric = (losses(index, layer, head, 1e-5) - losses(index, layer, head, -1e-5)) / 2e-5
            recorded = ck.example_gate_gradients(stack=layout.stack)[:, layer, head]
            np.testing.assert_allclose(recorded, numeric, rtol=1e-4, atol=1e-7)


def test_a_snapshot_leaves_the_model_as_it_found_it(tmp_path):
    model, tokenizer = make_generative_model("t5")
    sources, targets = make_pairs(4)
    # transformers installs its own output-capturing hooks at the first such forward; ours must not stay
    inputs, labels = _by_hand(tokenizer, model, sources[0], targets[0], "seq2seq", False)
    model(**inputs, labels=labels, output_attentions=True, output_hidden_states=True)
    model.zero_grad(set_to_none=True)
    model.train()
    hooks_before = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    t3vis.Recorder(tmp_path / "run", model, tokenizer, sources, targets=targets, task="seq2seq").snapshot(step=0)
    assert model.training and all(m.training for m in model.modules())
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks_before
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(p, params[n]) for n, p in model.named_parameters())


def test_a_lora_model_keeps_only_its_adapter_per_checkpoint_and_loads_back(tmp_path):
    model, tokenizer = make_generative_model("llama", lora=True)
    sources, targets = make_pairs(5)
    rec = t3vis.Recorder(tmp_path / "run", model, tokenizer, sources, targets=targets, task="causal-lm",
                         keep_weights="all")
    rec.snapshot(step=0)
    with torch.no_grad():     # a training step's worth of change in the adapter only
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn_like(p) * 0.5)
    rec.snapshot(step=1)
    run = t3vis.open_run(tmp_path / "run")
    assert [s.name for s in run.stacks] == ["decoder"]
    for ck in run.checkpoints:
        files = {p.name for p in (ck.path / "weights").iterdir()}
        assert "adapter_model.safetensors" in files and "model.safetensors" not in files
    assert (tmp_path / "run" / "base_model" / "model.safetensors").is_file()
    ids = torch.tensor([tokenizer(sources[0])["input_ids"]])
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        loaded, _ = run.checkpoints[1].load_model()
        np.testing.assert_allclose(loaded(input_ids=ids).logits.numpy(), expected.numpy(), atol=1e-5)
        first, _ = run.checkpoints[0].load_model()
        assert not torch.allclose(first(input_ids=ids).logits, expected, atol=1e-4)
    # the probe pass of the wrapped model is that of its base with the adapter applied
    assert run.checkpoints[1].outputs.loss.to_numpy() != pytest.approx(run.checkpoints[0].outputs.loss.to_numpy())


def test_observe_keeps_mean_target_token_probability_and_token_accuracy(tmp_path):
    model, tokenizer = make_generative_model("gpt2")
    sources, _ = make_pairs(4)
    rec = t3vis.Recorder(tmp_path / "run", model, tokenizer, sources, task="causal-lm")
    vocab = model.config.vocab_size
    logits = torch.zeros(2, 3, vocab)
    logits[0, 0, 5] = np.log(3.0)          # position 0 predicts token 1 of row 0: p(5) = 3 / (V + 2)
    logits[0, 1, 7] = 10.0                 # position 1: token 7 is the argmax, the label is 6
    logits[1, 0, 9] = 10.0                 # row 1 predicts its one target right
    labels = torch.tensor([[-100, 5, 6], [-100, 9, -100]])
    rec.observe([0, 1], logits, labels, epoch=0, step=1)
    no_target = torch.tensor([[-100, 4, -100], [-100, -100, -100]])     # row 3 has no target token
    rec.observe([2, 3], logits, no_target, epoch=0, step=2)
    rec.flush()
    obs = t3vis.open_run(tmp_path / "run").dynamics_observations().set_index("id")
    p5 = 3 / (vocab - 1 + 3)
    p6 = 1 / (vocab - 1 + np.exp(10.0))
    assert obs.loc[0, "gold_prob"] == pytest.approx((p5 + p6) / 2, rel=1e-5)
    assert obs.loc[0, "correct"] == pytest.approx(0.5)       # position 0 right (5 is its argmax), 1 wrong
    assert obs.loc[1, "correct"] == pytest.approx(1.0)
    assert 3 not in obs.index and 2 in obs.index             # nothing to score: no observation
    dyn = t3vis.open_run(tmp_path / "run").dynamics()
    assert set(dyn["region"]) <= {"easy-to-learn", "ambiguous", "hard-to-learn"}


def test_observe_refuses_a_batch_without_any_target_token(tmp_path):
    model, tokenizer = make_generative_model("gpt2")
    rec = t3vis.Recorder(tmp_path / "run", model, tokenizer, make_texts(3), task="causal-lm")
    with pytest.raises(InvalidInputError, match="every label of this batch is -100"):
        rec.observe([0], torch.zeros(1, 3, model.config.vocab_size), torch.full((1, 3), -100))
    with pytest.raises(InvalidInputError, match=r"expects \(batch, tokens, vocabulary\)"):
        rec.observe([0], torch.zeros(1, model.config.vocab_size), torch.tensor([1]))


@pytest.mark.parametrize("make, task, targets, message", [
    (lambda: make_generative_model("t5"), "seq2seq", None, "needs a target text for every source"),
    (lambda: make_generative_model("t5"), "seq2seq", ["a", " "] + ["b"] * 4, "target of example 1 .* is empty"),
    (lambda: make_generative_model("gpt2"), "causal-lm", ["a", ""] + ["b"] * 4, "completion of example 1 .* is empty"),
])
def test_bad_generative_examples_are_refused_clearly(tmp_path, make, task, targets, message):
    model, tokenizer = make()
    with pytest.raises(InvalidInputError, match=message):
        t3vis.Recorder(tmp_path / "run", model, tokenizer, make_texts(6), targets=targets, task=task)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("make, task, message", [
    (lambda: make_model("bert"), "causal-lm", "no language-modelling head"),
    (lambda: make_generative_model("gpt2"), "classification", "is a language model"),
    (lambda: make_generative_model("gpt2"), "seq2seq", "not an encoder-decoder"),
    (lambda: make_generative_model("bart"), "causal-lm", "is an encoder-decoder"),
])
def test_a_model_that_cannot_do_the_task_is_refused(tmp_path, make, task, message):
    model, tokenizer = make()
    texts = make_texts(4)
    with pytest.raises(UnsupportedModelError, match=message):
        t3vis.Recorder(tmp_path / "run", model, tokenizer, texts, [0, 1, 0, 1] if task == "classification" else texts,
                       task=task)


def test_long_examples_are_truncated_and_the_run_says_how_many(tmp_path):
    model, tokenizer = make_generative_model("llama")       # its tokenizer has no pad token: eos pads
    assert tokenizer.pad_token is None
    long_text = " ".join(["good movie"] * 20)                 # 41 tokens with <s>
    texts = [long_text, "bad film", long_text]
    rec = t3vis.Recorder(tmp_path / "run", model, tokenizer, texts, task="causal-lm", max_length=16)
    rec.snapshot(step=0)
    run = t3vis.open_run(tmp_path / "run")
    assert run.truncated == 2 and run.meta["truncated"] == 2
    assert run.checkpoints[0].outputs["n_tokens"].tolist() == [15, 2, 15]     # all but the first of 16, 3


def test_a_v1_classification_run_still_reads(tmp_path):
    import json

    model, tokenizer = make_model("bert")
    texts = make_texts(6)
    t3vis.Recorder(tmp_path / "run", model, tokenizer, texts, [0, 1] * 3).snapshot(step=0)
    meta_path = tmp_path / "run" / "run.json"
    meta = json.loads(meta_path.read_text())
    before = t3vis.open_run(tmp_path / "run").checkpoints[0].hidden(2).copy()
    for key in ("stacks", "default_stack", "truncated"):
        meta.pop(key)
    meta.update(format_version=1, task="sequence-classification")
    meta_path.write_text(json.dumps(meta))
    run = t3vis.open_run(tmp_path / "run")
    assert run.task_format.name == "classification" and [s.name for s in run.stacks] == ["encoder"]
    np.testing.assert_array_equal(run.checkpoints[0].hidden(2), before)
    assert run.checkpoints[0].head_importance.shape == (2, 4)


def test_categories_of_generative_examples_are_stored_as_their_labels_and_served(tmp_path):
    """A topic per example (BBC News: sport, tech, ...) is what the viewer colours and filters by."""
    import pyarrow as pa
    from fastapi.testclient import TestClient

    from t3vis.server import create_app

    model, tokenizer = make_generative_model("t5")
    sources, targets = make_pairs(6)
    topics = ["sport", "tech", "sport", "politics", "tech", "sport"]
    rec = t3vis.Recorder(tmp_path / "run", model, tokenizer, sources, targets=targets, task="seq2seq",
                         categories=topics)
    rec.snapshot(step=0)
    rec.close()
    run = t3vis.open_run(tmp_path / "run")
    assert run.label_names == ["politics", "sport", "tech"]          # sorted, as named by hand
    assert run.examples["label"].tolist() == [1, 2, 1, 0, 2, 1]
    with TestClient(create_app([tmp_path / "run"])) as client:
        points = pa.ipc.open_stream(client.get("/api/runs/run/checkpoints/0/points").content).read_all()
        assert points.column("label").to_pylist() == [1, 2, 1, 0, 2, 1]
        assert "perplexity" in points.schema.names and "gold_prob" not in points.schema.names
        page = client.post("/api/runs/run/table", json={"step": 0, "labels": [2]}).json()
        assert [r["id"] for r in page["rows"]] == [1, 4]
    # indices into label_names work as names do; the classifier's classes are its labels
    rec = t3vis.Recorder(tmp_path / "by-index", model, tokenizer, sources, targets=targets, task="seq2seq",
                         categories=[0, 1, 0, 1, 1, 0], label_names=["news", "opinion"])
    assert rec.label_names == ["news", "opinion"] and rec.labels.tolist() == [0, 1, 0, 1, 1, 0]
    with pytest.raises(InvalidInputError, match="one per example"):
        t3vis.Recorder(tmp_path / "short", model, tokenizer, sources, targets=targets, task="seq2seq",
                       categories=topics[:2])
    with pytest.raises(InvalidInputError, match="outside"):
        t3vis.Recorder(tmp_path / "range", model, tokenizer, sources, targets=targets, task="seq2seq",
                       categories=[0, 1, 2, 0, 1, 2], label_names=["news", "opinion"])
    classifier, tok = make_model("bert")
    with pytest.raises(InvalidInputError, match="categories= is for generative"):
        t3vis.Recorder(tmp_path / "cls", classifier, tok, ["a b", "c d"], [0, 1], categories=["x", "y"])
