"""The model routes on generative runs: instance view, attention, generation and pruning.

A tiny GPT-2 causal-lm run (prompts with completions) and a tiny T5 seq2seq run are recorded
with their weights at two checkpoints. Each answer is checked against an independent
reference where there is one (the recording's per-token outputs, the model's own
`outputs.loss` and attention weights) and against the public functions the route stands for
(t3vis.explain, t3vis.generate, t3vis.evaluate) on the checkpoint's model loaded apart.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_generative_model, make_pairs
from fastapi.testclient import TestClient

import t3vis
from t3vis.server import create_app
from t3vis.server.models import MAX_NEW_TOKENS

N_PROBE = 8
STEPS = (0, 1)
KINDS = {"gpt2": "causal-lm", "t5": "seq2seq"}
METHODS = ("gradient", "grad_x_input", "integrated_gradients", "lrp", "attention_rollout")


def _record(path: Path, kind: str, task_name: str) -> Path:
    from t3vis.tasks import get_task

    model, tokenizer = make_generative_model(kind)
    sources, targets = make_pairs(N_PROBE)
    rec = t3vis.Recorder(path, model, tokenizer, sources, targets=targets, task=task_name, keep_weights="all",
                         max_length=48)
    rec.snapshot(step=0, epoch=0.0)
    task = get_task(task_name)
    examples = task.examples(model, sources, targets)
    batch = task.encode(model, tokenizer, examples, np.arange(N_PROBE), max_length=48, device=torch.device("cpu"))
    optimizer = torch.optim.SGD(model.parameters(), lr=2.0)
    task.losses(model(**batch.inputs).logits, batch).mean().backward()
    optimizer.step()
    rec.snapshot(step=1, epoch=1.0)
    rec.close()
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("generative-views")
    paths = [_record(root / kind, kind, task) for kind, task in KINDS.items()]
    runs = {p.name: t3vis.open_run(p) for p in paths}
    models = {name: r.checkpoint(1).load_model() for name, r in runs.items()}
    with TestClient(create_app(paths), raise_server_exceptions=False) as client:
        yield client, runs, models


def _example(runs, run: str, example_id: int) -> tuple[str, str]:
    row = runs[run].examples.set_index("id").loc[example_id]
    return row["text"], row["target"]


def _post(client, run: str, route: str, body: dict, step: int = 1):
    r = client.post(f"/api/runs/{run}/checkpoints/{step}/{route}", json=body)
    assert r.status_code < 500, r.text
    return r


def _own_loss(model, tokenizer, run: str, text: str, target: str) -> float:
    """The model's own outputs.loss, with the inputs built here from the tokenizer (not by the task)."""
    with torch.no_grad():
        if KINDS[run] == "seq2seq":
            source = tokenizer(text, return_tensors="pt")
            labels = tokenizer(target, return_tensors="pt")["input_ids"]
            return float(model(**source, labels=labels).loss)
        prompt = tokenizer(text)["input_ids"]
        completion = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = torch.tensor([prompt + completion])
        labels = torch.tensor([[-100] * len(prompt) + completion])
        return float(model(input_ids=ids, labels=labels).loss)


@pytest.mark.parametrize("run", list(KINDS))
def test_a_probe_example_is_scored_as_recorded(served, run):
    client, runs, models = served
    model, tokenizer = models[run]
    for step in STEPS:
        ck = runs[run].checkpoint(step)
        row = int(runs[run].examples.set_index("id").loc[3, "probe_row"])
        stored = ck.token_outputs.example(row)
        answer = _post(client, run, "instance", {"id": 3, "method": "gradient"}, step).json()
        assert answer["task"] == KINDS[run] and answer["token"] is None and answer["scores"] is None
        assert answer["target_ids"] == stored["target"].tolist()
        assert answer["target_tokens"] == tokenizer.convert_ids_to_tokens(stored["target"].tolist())
        assert answer["top1_ids"] == stored["top1"].tolist()
        np.testing.assert_allclose(answer["target_probs"], stored["prob"].astype(np.float64), rtol=2e-3, atol=1e-4)
        np.testing.assert_allclose(answer["target_nll"], stored["nll"].astype(np.float64), rtol=2e-3, atol=1e-3)
        assert answer["loss"] == pytest.approx(float(ck.outputs.set_index("id").loc[3, "loss"]), rel=1e-5)
        assert sum(answer["stream_lengths"].values()) == len(answer["input_tokens"])
        assert answer["attention_id"] == "id=3"
    text, target = _example(runs, run, 3)
    assert answer["loss"] == pytest.approx(_own_loss(model, tokenizer, run, text, target), rel=1e-5)
    source = tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])
    assert answer["input_tokens"][:len(source)] == source
    if KINDS[run] == "seq2seq":
        assert list(answer["stream_lengths"]) == ["input", "decoder_input"]
        assert answer["stream_lengths"]["input"] == len(source)
        assert answer["predicted_at"] == [len(source) + k for k in range(len(answer["target_ids"]))]


@pytest.mark.parametrize("run", list(KINDS))
def test_a_free_text_is_scored_by_the_model(served, run):
    client, _, models = served
    model, tokenizer = models[run]
    text, target = "the cat sat on a mat today", "the cat sat"
    answer = _post(client, run, "instance", {"text": text, "target_text": target, "method": "gradient"}).json()
    assert answer["loss"] == pytest.approx(_own_loss(model, tokenizer, run, text, target), rel=1e-5)
    assert np.mean(answer["target_nll"]) == pytest.approx(answer["loss"], rel=1e-5)
    np.testing.assert_allclose(np.exp(-np.asarray(answer["target_nll"])), answer["target_probs"], rtol=1e-5)
    assert answer["attention_id"].startswith("key=")
    if KINDS[run] == "causal-lm":            # without a completion the whole text is scored
        whole = _post(client, run, "instance", {"text": text, "method": "gradient"}).json()
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        with torch.no_grad():
            assert whole["loss"] == pytest.approx(float(model(input_ids=ids, labels=ids).loss), rel=1e-5)
        assert len(whole["target_ids"]) == ids.shape[1] - 1


@pytest.mark.parametrize("run", list(KINDS))
def test_a_saliency_row_is_t3vis_explain(served, run):
    client, runs, models = served
    model, tokenizer = models[run]
    text, target = _example(runs, run, 5)
    for method in METHODS:
        answer = _post(client, run, "instance", {"id": 5, "method": method, "token": 1}).json()
        [expected] = t3vis.explain(model, tokenizer, [text], method, task=KINDS[run], targets=[target], token=[1],
                                   max_length=48)
        assert answer["input_tokens"] == expected.input_tokens and answer["stream_lengths"] == expected.stream_lengths
        assert answer["target_tokens"] == expected.target_tokens
        np.testing.assert_allclose(answer["scores"], expected.scores[0], rtol=1e-4, atol=1e-6, err_msg=method)
        if method == "integrated_gradients":
            assert answer["delta"] == pytest.approx(float(expected.delta[0]), rel=1e-3, abs=1e-6)
        else:
            assert answer["delta"] is None
    # contrastive, by token string and by id
    foil = tokenizer.convert_ids_to_tokens(answer["top1_ids"][1])
    by_string = _post(client, run, "instance", {"id": 5, "method": "grad_x_input", "token": 1, "foil": foil}).json()
    by_id = _post(client, run, "instance", {"id": 5, "method": "grad_x_input", "token": 1,
                                            "foil": answer["top1_ids"][1]}).json()
    [expected] = t3vis.explain(model, tokenizer, [text], "grad_x_input", task=KINDS[run], targets=[target], token=[1],
                               foil=foil, max_length=48)
    assert by_string["foil"] == by_id["foil"] == answer["top1_ids"][1]
    np.testing.assert_allclose(by_string["scores"], expected.scores[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(by_id["scores"], expected.scores[0], rtol=1e-4, atol=1e-6)
    # the whole matrix
    whole = _post(client, run, "instance", {"id": 5, "method": "gradient", "token": 1, "matrix": True}).json()
    [expected] = t3vis.explain(model, tokenizer, [text], "gradient", task=KINDS[run], targets=[target], max_length=48)
    assert np.asarray(whole["matrix"]).shape == (len(whole["target_ids"]), len(whole["input_tokens"]))
    np.testing.assert_allclose(whole["matrix"], expected.scores, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(whole["scores"], expected.scores[1], rtol=1e-4, atol=1e-6)


def _attention(client, run: str, params: dict):
    r = client.get(f"/api/runs/{run}/checkpoints/1/instance/attention", params=params)
    assert r.status_code < 500, r.text
    return r


def _decoded(r) -> tuple[np.ndarray, list[str], list[str]]:
    shape = tuple(int(x) for x in r.headers["X-T3vis-Shape"].split(","))
    data = np.frombuffer(r.content, np.uint8).reshape(shape)
    return data, json.loads(r.headers["X-T3vis-Query-Tokens"]), json.loads(r.headers["X-T3vis-Key-Tokens"])


def test_attention_of_a_decoder_is_the_models_own(served):
    client, _, models = served
    model, tokenizer = models["gpt2"]
    answer = _post(client, "gpt2", "instance", {"id": 2, "method": "gradient"}).json()
    r = _attention(client, "gpt2", {"id": 2})
    data, queries, keys = _decoded(r)
    assert r.headers["X-T3vis-Stack"] == "decoder" and queries == keys == answer["input_tokens"]
    ids = torch.tensor([tokenizer.convert_tokens_to_ids(answer["input_tokens"])])
    with torch.no_grad():
        own = torch.stack(model(input_ids=ids, output_attentions=True).attentions)[:, 0].numpy()
    np.testing.assert_array_equal(data, np.clip(np.rint(own * 255), 0, 255).astype(np.uint8))


def test_attention_of_every_stack_of_an_encoder_decoder(served):
    client, runs, _ = served
    text, target = "the cat sat on a mat today", "the cat sat"
    answer = _post(client, "t5", "instance", {"text": text, "target_text": target, "method": "gradient"}).json()
    n_source = answer["stream_lengths"]["input"]
    source, decoder = answer["input_tokens"][:n_source], answer["input_tokens"][n_source:]
    for stack in runs["t5"].stacks:
        key = answer["attention_id"].removeprefix("key=")
        for params in ({"key": key, "stack": stack.name}, {"text": text, "target_text": target, "stack": stack.name}):
            r = _attention(client, "t5", params)
            data, queries, keys = _decoded(r)
            assert r.headers["X-T3vis-Stack"] == stack.name
            assert queries == (source if stack.name == "encoder" else decoder)
            assert keys == (decoder if stack.name == "decoder" else source)
            assert data.shape == (stack.num_layers, stack.num_heads, len(queries), len(keys))
            assert np.all(np.abs(data.astype(int).sum(-1) - 255) <= len(keys))
            if stack.name == "decoder":              # causal: no query sees a later key
                assert not np.triu(data, k=1).any()
    default = _attention(client, "t5", {"key": answer["attention_id"].removeprefix("key=")})
    assert default.headers["X-T3vis-Stack"] == "decoder"
    unknown = _attention(client, "t5", {"id": 1, "stack": "nowhere"})
    assert unknown.status_code == 404 and "cross" in unknown.json()["detail"]


@pytest.mark.parametrize("run", list(KINDS))
def test_generate_is_t3vis_generate(served, run):
    client, runs, models = served
    model, tokenizer = models[run]
    text, _ = _example(runs, run, 4)
    answer = _post(client, run, "generate", {"id": 4, "max_new_tokens": 6}).json()
    [expected] = t3vis.generate(model, tokenizer, [text], 6, task=KINDS[run])
    assert answer["token_ids"] == expected.token_ids.tolist() and answer["tokens"] == expected.tokens
    np.testing.assert_allclose(answer["probs"], expected.probs, rtol=1e-5)
    assert answer["text"] == expected.text and answer["finished"] == expected.finished
    scored = _post(client, run, "instance", {"id": 4, "method": "gradient"}).json()
    assert answer["reference_ids"] == scored["target_ids"] and answer["reference_tokens"] == scored["target_tokens"]
    reference = answer["reference_ids"]
    assert answer["matches"] == [k < len(reference) and t == reference[k] for k, t in enumerate(answer["token_ids"])]
    free = _post(client, run, "generate", {"text": "a dog ran", "max_new_tokens": 3}).json()
    [expected] = t3vis.generate(model, tokenizer, ["a dog ran"], 3, task=KINDS[run])
    assert free["token_ids"] == expected.token_ids.tolist() and free["reference_ids"] == []
    too_long = _post(client, run, "generate", {"id": 4, "max_new_tokens": MAX_NEW_TOKENS + 1})
    assert too_long.status_code == 422 and str(MAX_NEW_TOKENS) in too_long.json()["detail"]
    if KINDS[run] == "causal-lm":            # the tiny GPT-2 has 64 positions
        past = _post(client, run, "generate", {"id": 4, "max_new_tokens": 64})
        assert past.status_code == 422 and "64 positions" in past.json()["detail"]
        past = _post(client, run, "prune", {"ids": [4], "max_new_tokens": 64})
        assert past.status_code == 422 and "64 positions" in past.json()["detail"]


PRUNED = {"gpt2": ([[0, 1], [1, 3]], {0: [1], 1: [3]}),
          "t5": ({"decoder": [[0, 1], [2, 0]], "cross": [[1, 2]]}, {"decoder": {0: [1], 2: [0]}, "cross": {1: [2]}})}


@pytest.mark.parametrize("run", list(KINDS))
def test_pruning_is_t3vis_evaluate_and_generate(served, run):
    client, runs, models = served
    model, tokenizer = models[run]
    body, masked = PRUNED[run]
    ids = [1, 4, 6]
    answer = _post(client, run, "prune", {"masked_heads": body, "ids": ids, "max_new_tokens": 4}).json()
    texts, targets = zip(*(_example(runs, run, i) for i in ids))
    for name, heads in (("before", None), ("after", masked)):
        expected = t3vis.evaluate(model, tokenizer, list(texts), masked_heads=heads, task=KINDS[run],
                                  targets=list(targets), max_length=48)
        for measure in ("loss", "perplexity", "token_accuracy"):
            assert answer[name][measure] == pytest.approx(getattr(expected, measure), rel=1e-5), (name, measure)
    assert answer["n"] == 3 and answer["before"]["loss"] != answer["after"]["loss"]
    before = t3vis.generate(model, tokenizer, list(texts), 4, task=KINDS[run])
    after = t3vis.generate(model, tokenizer, list(texts), 4, task=KINDS[run], masked_heads=masked)
    assert [g["id"] for g in answer["generations"]] == ids
    for pair, b, a in zip(answer["generations"], before, after):
        assert pair["before"] == b.tokens and pair["after"] == a.tokens
        assert pair["changed"] == [k >= len(b.tokens) or t != b.tokens[k] for k, t in enumerate(a.tokens)]
        assert pair["reference"]
    whole = _post(client, run, "prune", {"masked_heads": body}).json()
    expected = t3vis.evaluate(model, tokenizer, *map(list, zip(*(_example(runs, run, i) for i in range(N_PROBE)))),
                              masked_heads=masked, task=KINDS[run], max_length=48)
    assert whole["n"] == N_PROBE and whole["after"]["loss"] == pytest.approx(expected.loss, rel=1e-5)


def test_pruning_names_the_stacks_and_heads_there_are(served):
    client, _, _ = served
    unknown = _post(client, "t5", "prune", {"masked_heads": {"nowhere": [[0, 0]]}, "ids": [1]})
    assert unknown.status_code == 404 and "cross" in unknown.json()["detail"]
    too_far = _post(client, "t5", "prune", {"masked_heads": {"encoder": [[2, 0]]}, "ids": [1]})
    assert too_far.status_code == 404 and "0..1" in too_far.json()["detail"]
    default = _post(client, "t5", "prune", {"masked_heads": [[2, 0]], "ids": [1]}).json()
    assert default["masked_heads"] == {"decoder": [[2, 0]]}


def test_clicking_token_after_token_scores_the_sequence_once(served, monkeypatch):
    """The scoring pass is the same for every target token of a sequence: kept per loaded model."""
    import t3vis.server.generative as generative

    client, _, _ = served
    calls = []
    real = generative.score
    monkeypatch.setattr(generative, "score", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = _post(client, "t5", "instance", {"id": 6, "method": "gradient", "token": 0}).json()
    again = _post(client, "t5", "instance", {"id": 6, "method": "grad_x_input", "token": 1}).json()
    assert len(calls) <= 1                       # 0 when an earlier test scored example 6 already
    assert again["target_probs"] == first["target_probs"] and again["loss"] == first["loss"]
    assert again["scores"] != first["scores"]
    before = len(calls)
    _post(client, "t5", "instance", {"text": "a text never scored", "target_text": "never", "method": "gradient"})
    assert len(calls) == before + 1              # another sequence is scored anew


def _projection(client, run: str, query: str, step: int = 1):
    for _ in range(200):
        r = client.get(f"/api/runs/{run}/checkpoints/{step}/projection?{query}")
        if r.status_code != 202:
            return r
        time.sleep(0.05)
    raise AssertionError(f"the projection {query} was never computed")


def test_the_projection_of_each_stack_is_of_its_own_hidden_states(served):
    """stack=encoder lays out the encoder's pooled states: PCA of the model's own encoder outputs,
    mean-pooled over each source's tokens (computed here with numpy, not t3vis's projection)."""
    client, runs, models = served
    model, tokenizer = models["t5"]
    layer = 1
    pooled = []
    with torch.no_grad():
        for text in runs["t5"].probe_examples["text"]:
            enc = tokenizer(text, return_tensors="pt")
            states = model.encoder(**enc, output_hidden_states=True).hidden_states[layer][0]    # (T, d)
            pooled.append(states.mean(0).numpy())
    Z = np.asarray(pooled, np.float64)
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)                 # cosine geometry
    Zc = Z - Z.mean(0)
    expected = Zc @ np.linalg.svd(Zc, full_matrices=False)[2][:2].T   # (N, 2) principal scores
    answers = {}
    for stack in ("encoder", "decoder"):
        r = _projection(client, "t5", f"layer={layer}&method=pca&aligned=false&stack={stack}")
        assert r.status_code == 200, r.text
        answers[stack] = np.frombuffer(r.content, "<f4").reshape(-1, 3)[:, :2]
    for axis in range(2):          # each axis up to its sign; float16 storage limits the match
        assert abs(np.corrcoef(answers["encoder"][:, axis], expected[:, axis])[0, 1]) > 0.99
    assert not np.allclose(answers["encoder"], answers["decoder"], atol=1e-3)
    default = _projection(client, "t5", f"layer={layer}&method=pca&aligned=false")
    assert np.frombuffer(default.content, "<f4").reshape(-1, 3)[:, :2].tolist() == answers["decoder"].tolist()
    for stack, detail in (("cross", "no hidden states of its own"), ("nope", "has no 'nope' stack")):
        r = _projection(client, "t5", f"layer=1&method=pca&stack={stack}")
        assert r.status_code == 404 and detail in r.json()["detail"]


@pytest.mark.parametrize("run", list(KINDS))
def test_bad_input_is_a_clear_4xx(served, run):
    client, _, _ = served
    cases = [({"id": 3, "token": 10_000}, 422, "out of range"),
             ({"id": 3, "target": 1}, 422, "token="),
             ({"id": 3, "token": 0, "foil": "no-such-token-anywhere"}, 422, "vocabulary"),
             ({"id": 3, "foil": 5}, 422, "token="),
             ({"id": 3, "text": "two at once"}, 422, "exactly one"),
             ({"id": 3, "target_text": "a"}, 422, "target_text"),
             ({"id": 99_999}, 404, "99999")]
    for body, status, words in cases:
        r = _post(client, run, "instance", body)
        assert r.status_code == status and words in r.json()["detail"], (body, r.text)
    if KINDS[run] == "seq2seq":
        r = _post(client, run, "instance", {"text": "a source without its target"})
        assert r.status_code == 422 and "target" in r.json()["detail"]


@pytest.mark.parametrize("run", list(KINDS))
def test_an_example_has_its_measures_at_every_checkpoint(served, run):
    client, runs, _ = served
    history = client.get(f"/api/runs/{run}/examples/2").json()["history"]
    assert [h["step"] for h in history] == list(STEPS)
    for entry in history:
        outputs = runs[run].checkpoint(entry["step"]).outputs.set_index("id").loc[2]
        for measure in ("loss", "perplexity", "token_accuracy"):
            assert entry[measure] == pytest.approx(float(outputs[measure]), rel=1e-6)
    assert history[0]["loss"] != history[1]["loss"]


def test_a_classification_run_keeps_its_views_and_refuses_the_generative_ones(tmp_path):
    from server_fixtures import record_tiny_run

    run_dir = record_tiny_run(tmp_path / "tiny")[0]
    stack = t3vis.open_run(run_dir).default_stack
    with TestClient(create_app([run_dir]), raise_server_exceptions=False) as client:
        for field in ({"token": 0}, {"foil": 0}, {"matrix": True}, {"target_text": "a"}):
            r = _post(client, "tiny", "instance", {"id": 3, **field}, step=5)
            assert r.status_code == 422 and "generative runs" in r.json()["detail"], field
        r = _post(client, "tiny", "generate", {"id": 3}, step=5)
        assert r.status_code == 422 and "classification run" in r.json()["detail"]
        by_stack = _post(client, "tiny", "prune", {"masked_heads": {stack: [[0, 1]]}, "ids": [1, 2]}, step=5).json()
        by_pairs = _post(client, "tiny", "prune", {"masked_heads": [[0, 1]], "ids": [1, 2]}, step=5).json()
        assert by_stack == by_pairs and "accuracy" in by_pairs["after"]
        r = _post(client, "tiny", "prune", {"masked_heads": {"cross": [[0, 1]]}}, step=5)
        assert r.status_code == 404 and stack in r.json()["detail"]
        r = client.get("/api/runs/tiny/checkpoints/5/instance/attention", params={"id": 3, "stack": "cross"})
        assert r.status_code == 404 and stack in r.json()["detail"]
