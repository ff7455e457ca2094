"""`t3vis record --task causal-lm|seq2seq` on saved checkpoints of generative models."""

import json

import pandas as pd
import pytest
import torch
from conftest import make_generative_model, make_pairs

import t3vis
from t3vis.cli import main


def _checkpoints(tmp_path, kind):
    """Two checkpoint folders of one tiny model, its output layer nudged between them."""
    model, tokenizer = make_generative_model(kind)
    folders = []
    for step in (20, 10):   # out of order on purpose
        with torch.no_grad():
            model.get_output_embeddings().weight.mul_(1.0 + step / 40)
        folder = tmp_path / f"checkpoint-{step}"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "epoch": step / 10}))
        folders.append(folder)
    return folders


def _loss_of(folder, auto, **inputs):
    model = auto.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        return model(**inputs).loss.item()


def test_seq2seq_checkpoints_record_with_their_targets(tmp_path, capsys):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    folders = _checkpoints(tmp_path, "bart")
    sources, targets = make_pairs(6)
    data = tmp_path / "news.csv"
    topics = ["tech", "sport", "", "tech", "sport", "tech"]       # one article without a section
    pd.DataFrame({"article": sources, "title": targets, "label": topics}).to_csv(data, index=False)
    code = main(["record", *map(str, folders), "--data", str(data), "--out", str(tmp_path / "run"), "--task", "seq2seq",
                 "--text-column", "article", "--target-column", "title", "--batch-size", "4"])
    assert code == 0
    out = capsys.readouterr().out
    assert "perplexity" in out and "categories: column 'label' (3 distinct)" in out
    run = t3vis.open_run(tmp_path / "run")
    # the file's label column is each article's category, to colour and filter by
    assert run.label_names == ["sport", "tech", "unknown"]
    assert run.probe_examples["label"].tolist() == [1, 0, 2, 1, 0, 1]
    assert run.task_format.name == "seq2seq" and [s.name for s in run.stacks] == ["encoder", "decoder", "cross"]
    assert [c.step for c in run.checkpoints] == [10, 20]
    assert run.probe_examples["target"].tolist() == targets
    tokenizer = AutoTokenizer.from_pretrained(folders[0])
    for ck, folder in zip(run.checkpoints, sorted(folders, key=lambda f: int(f.name.split("-")[1]))):
        expected = _loss_of(folder, AutoModelForSeq2SeqLM, input_ids=torch.tensor([tokenizer(sources[2])["input_ids"]]),
                            labels=torch.tensor([tokenizer(text_target=targets[2])["input_ids"]]))
        assert ck.outputs.loc[2, "loss"] == pytest.approx(expected, rel=1e-5)
        assert ck.weights_path == folder.resolve()
    loaded, _ = run.checkpoints[0].load_model()
    assert type(loaded).__name__ == "BartForConditionalGeneration"


def test_a_category_column_named_but_absent_is_refused(tmp_path, capsys):
    folders = _checkpoints(tmp_path, "bart")
    sources, targets = make_pairs(4)
    data = tmp_path / "news.csv"
    pd.DataFrame({"article": sources, "title": targets}).to_csv(data, index=False)
    code = main(["record", *map(str, folders), "--data", str(data), "--out", str(tmp_path / "run"), "--task", "seq2seq",
                 "--text-column", "article", "--target-column", "title", "--label-column", "section"])
    assert code != 0
    assert "section" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_causal_lm_checkpoints_record_whole_texts_without_a_target_column(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folders = _checkpoints(tmp_path, "gpt2")
    texts, _ = make_pairs(5)
    data = tmp_path / "texts.jsonl"
    pd.DataFrame({"text": texts}).to_json(data, orient="records", lines=True)
    assert main(["record", *map(str, folders), "--data", str(data), "--out", str(tmp_path / "run"),
                 "--task", "causal-lm"]) == 0
    run = t3vis.open_run(tmp_path / "run")
    ids = torch.tensor([AutoTokenizer.from_pretrained(folders[0])(texts[1])["input_ids"]])
    expected = _loss_of(folders[1], AutoModelForCausalLM, input_ids=ids, labels=ids)    # checkpoint-10
    assert run.checkpoints[0].outputs.loc[1, "loss"] == pytest.approx(expected, rel=1e-5)


def test_seq2seq_without_a_target_column_is_refused_clearly(tmp_path, capsys):
    folders = _checkpoints(tmp_path, "t5")
    data = tmp_path / "news.csv"
    pd.DataFrame({"text": make_pairs(3)[0]}).to_csv(data, index=False)
    code = main(["record", *map(str, folders), "--data", str(data), "--out", str(tmp_path / "run"),
                 "--task", "seq2seq"])
    assert code != 0
    assert "needs a target text for every source" in capsys.readouterr().err
    assert not (tmp_path / "run" / "run.json").exists()
