"""`t3vis record` on a researcher's own small data files: labels, ids, JSON, dropped rows, messages, append."""

import json

import pandas as pd
import pytest
from conftest import make_model, make_tokenizer

import t3vis
from t3vis.cli import main

TOPICS = ["sport", "politics", "technology"]        # how the model was trained: sport=0, politics=1, technology=2
TEXTS = ["the match ended in a draw", "parliament passed the bill", "a new chip was announced",
         "the striker scored twice", "the minister resigned", "the phone runs faster"]
INTENDED = [0, 1, 2, 0, 1, 2]


def save_checkpoint(folder, id2label=None, num_layers=2, seed=0):
    """A 3-class tiny BERT saved as a Trainer would; id2label None keeps the placeholders LABEL_0..2."""
    if num_layers == 2:
        model, tokenizer = make_model("bert", num_labels=3, seed=seed)
    else:
        from transformers import AutoModelForSequenceClassification, BertConfig
        tokenizer = make_tokenizer("bert")
        config = BertConfig(vocab_size=len(tokenizer), num_labels=3, hidden_size=32, num_hidden_layers=num_layers,
                            num_attention_heads=4, intermediate_size=37, max_position_embeddings=64,
                            pad_token_id=tokenizer.pad_token_id)
        model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    if id2label is not None:
        model.config.id2label = dict(enumerate(id2label))
        model.config.label2id = {name: i for i, name in enumerate(id2label)}
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_csv(path, texts, labels, **columns):
    pd.DataFrame({"text": texts, "label": labels, **columns}).to_csv(path, index=False)
    return path


def record(tmp_path, checkpoint, data, *extra, out="run"):
    return main(["record", str(checkpoint), "--data", str(data), "--out", str(tmp_path / out), "--batch-size", "4",
                 *extra])


# -- 1. labels mean what the user meant ---------------------------------------------------------------

def test_a_placeholder_model_with_topic_names_is_refused_with_the_mapping_then_recorded_right(tmp_path, capsys):
    checkpoint = save_checkpoint(tmp_path / "out" / "checkpoint-6")
    data = write_csv(tmp_path / "topics.csv", TEXTS, [TOPICS[i] for i in INTENDED])
    assert record(tmp_path, checkpoint, data) == 2
    err = capsys.readouterr().err
    assert "['politics', 'sport', 'technology']" in err and "--label-map politics=0,sport=1,technology=2" in err
    assert "LABEL_0" in err and not (tmp_path / "run").exists()

    assert record(tmp_path, checkpoint, data, "--label-map", "sport=0,politics=1,technology=2") == 0
    assert "labels: sport=0,politics=1,technology=2" in capsys.readouterr().out
    run = t3vis.open_run(tmp_path / "run")
    assert list(run.examples["label"]) == INTENDED
    assert run.label_names == TOPICS and run.meta["label_map"] == {"sport": 0, "politics": 1, "technology": 2}


def test_a_capitalised_name_matches_the_models_label(tmp_path):
    checkpoint = save_checkpoint(tmp_path / "checkpoint-6", id2label=TOPICS)
    data = write_csv(tmp_path / "topics.csv", TEXTS, ["Sport", "Politics", " TECHNOLOGY", "sport", "politics",
                                                      "technology"])
    assert record(tmp_path, checkpoint, data) == 0
    run = t3vis.open_run(tmp_path / "run")
    assert list(run.examples["label"]) == INTENDED          # not alphabetical: politics would have been 0
    assert run.label_names == TOPICS


def test_a_data_file_missing_one_class_keeps_the_trained_indices(tmp_path, capsys):
    checkpoint = save_checkpoint(tmp_path / "checkpoint-6")
    no_politics = [(t, y) for t, y in zip(TEXTS, INTENDED) if y != 1]
    data = write_csv(tmp_path / "topics.csv", [t for t, _ in no_politics], [TOPICS[y] for _, y in no_politics])
    assert record(tmp_path, checkpoint, data) == 2
    assert "--label-map sport=0,technology=1" in capsys.readouterr().err  # shown as an example, not applied
    label_map = tmp_path / "labels.json"
    label_map.write_text(json.dumps({"sport": 0, "politics": 1, "technology": 2}))
    assert record(tmp_path, checkpoint, data, "--label-map", str(label_map)) == 0
    run = t3vis.open_run(tmp_path / "run")
    assert list(run.examples["label"]) == [0, 2, 0, 2]       # technology stays 2, not 1
    assert run.label_names == TOPICS


def test_integer_labels_stay_indices_and_names_outside_the_model_are_named(tmp_path, capsys):
    checkpoint = save_checkpoint(tmp_path / "checkpoint-6", id2label=TOPICS)
    assert record(tmp_path, checkpoint, write_csv(tmp_path / "ints.csv", TEXTS, INTENDED)) == 0
    assert list(t3vis.open_run(tmp_path / "run").examples["label"]) == INTENDED
    data = write_csv(tmp_path / "other.csv", TEXTS[:2], ["sport", "weather"])
    assert record(tmp_path, checkpoint, data, out="run2") == 2
    assert "['weather'] are not among the model's labels ['sport', 'politics', 'technology']" in capsys.readouterr().err
    assert record(tmp_path, checkpoint, write_csv(tmp_path / "big.csv", TEXTS[:1], [3]), out="run3") == 2
    assert "outside the model's classes 0..2" in capsys.readouterr().err


def test_a_label_map_that_cannot_be_read_is_explained(tmp_path, capsys):
    checkpoint = save_checkpoint(tmp_path / "checkpoint-6")
    data = write_csv(tmp_path / "topics.csv", TEXTS, [TOPICS[i] for i in INTENDED])
    assert record(tmp_path, checkpoint, data, "--label-map", "sport:0") == 2
    assert "write name=index pairs separated by commas" in capsys.readouterr().err
    as_list = tmp_path / "labels.json"
    as_list.write_text(json.dumps(TOPICS))
    assert record(tmp_path, checkpoint, data, "--label-map", str(as_list)) == 2
    assert "must hold one JSON object of name: index" in capsys.readouterr().err
    assert record(tmp_path, checkpoint, data, "--label-map", str(tmp_path / "missing.json")) == 2
    assert "no label map file at" in capsys.readouterr().err
    assert record(tmp_path, checkpoint, data, "--label-map", "sport=0,politics=1,technology=3") == 2
    assert "gives 'technology' the index 3; the model's classes are 0..2" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_python_api_takes_label_names(tmp_path):
    from t3vis.record.offline import record_checkpoints

    checkpoint = save_checkpoint(tmp_path / "checkpoint-6")
    data = write_csv(tmp_path / "topics.csv", TEXTS, [TOPICS[i] for i in INTENDED])
    notes = []
    record_checkpoints([checkpoint], data, tmp_path / "run", label_names=TOPICS, log=notes.append, batch_size=4)
    assert list(t3vis.open_run(tmp_path / "run").examples["label"]) == INTENDED
    assert "labels: sport=0,politics=1,technology=2" in notes


# -- 2. data files read as the user meant ---------------------------------------------------------------

def test_string_ids_are_kept_as_source_id_and_rows_numbered(tmp_path, capsys):
    checkpoint = save_checkpoint(tmp_path / "checkpoint-6", id2label=TOPICS)
    ids = [f"ex-{i:04d}" for i in range(len(TEXTS))]
    data = write_csv(tmp_path / "topics.csv", TEXTS, INTENDED, id=ids)
    assert record(tmp_path, checkpoint, data) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "column 'id', kept as source_id" in captured.out
    examples = t3vis.open_run(tmp_path / "run").examples
    assert list(examples["id"]) == list(range(len(TEXTS))) and list(examples["source_id"]) == ids


def test_id_and_split_columns_are_chosen_by_flag(tmp_path):
    checkpoint = save_checkpoint(tmp_path / "checkpoint-6", id2label=TOPICS)
    data = write_csv(tmp_path / "topics.csv", TEXTS, INTENDED, key=[60, 50, 40, 30, 20, 10],
                     fold=["dev", "dev", "dev", "train", "train", "train"])
    assert record(tmp_path, checkpoint, data, "--id-column", "key", "--split-column", "fold") == 0
    examples = t3vis.open_run(tmp_path / "run").probe_examples
    assert list(examples["id"]) == [60, 50, 40, 30, 20, 10] and list(examples["split"]) == ["dev"] * 3 + ["train"] * 3
    assert "source_id" not in examples.columns


def test_help_documents_the_new_flags(capsys):
    with pytest.raises(SystemExit):
        main(["record", "--help"])
    out = capsys.readouterr().out
    for flag in ("--id-column", "--split-column", "--label-map", "--append"):
        assert flag in out


def test_a_json_array_file_is_read(tmp_path):
    checkpoint = save_checkpoint(tmp_path / "checkpoint-6", id2label=TOPICS)
    data = tmp_path / "topics.json"
    data.write_text(json.dumps([{"text": t, "label": TOPICS[y]} for t, y in zip(TEXTS, INTENDED)], indent=2))
    assert record(tmp_path, checkpoint, data) == 0
    assert list(t3vis.open_run(tmp_path / "run").examples["label"]) == INTENDED


def test_rows_with_empty_text_are_counted_and_an_all_empty_file_refused(tmp_path, capsys):
    checkpoint = save_checkpoint(tmp_path / "checkpoint-6", id2label=TOPICS)
    data = tmp_path / "topics.jsonl"
    rows = [{"text": t, "label": y} for t, y in zip(TEXTS, INTENDED)] + [{"text": "", "label": 0}] * 2
    pd.DataFrame(rows).to_json(data, orient="records", lines=True)
    assert record(tmp_path, checkpoint, data) == 0
    assert "left out 2 of 8 rows: 2 with an empty or missing text" in capsys.readouterr().out
    assert t3vis.open_run(tmp_path / "run").num_probe == 6
    pd.DataFrame([{"text": " ", "label": 0}]).to_json(data, orient="records", lines=True)
    assert record(tmp_path, checkpoint, data, out="run2") == 2
    assert "no rows with both a text" in capsys.readouterr().err


# -- 3. messages and names a user can act on --------------------------------------------------------------

def test_an_existing_run_names_the_append_flag(tmp_path, capsys):
    checkpoint = save_checkpoint(tmp_path / "checkpoint-6", id2label=TOPICS)
    data = write_csv(tmp_path / "topics.csv", TEXTS, INTENDED)
    assert record(tmp_path, checkpoint, data) == 0
    assert record(tmp_path, checkpoint, data) == 2
    err = capsys.readouterr().err
    assert "--append" in err and "exist_ok" not in err


def test_a_checkpoint_that_does_not_exist_is_said_not_to(tmp_path, capsys):
    data = write_csv(tmp_path / "topics.csv", TEXTS, INTENDED)
    assert record(tmp_path, tmp_path / "out" / "checkpoint-99", data) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "checkpoint-99" in err and "config.json" not in err
    assert record(tmp_path, data, data) == 2
    assert "is a file; give the checkpoint's folder" in capsys.readouterr().err


def test_the_run_is_named_after_the_model_not_the_first_checkpoint(tmp_path):
    checkpoint = save_checkpoint(tmp_path / "bert-topics" / "checkpoint-6", id2label=TOPICS)
    data = write_csv(tmp_path / "topics.csv", TEXTS, INTENDED)
    assert record(tmp_path, checkpoint, data) == 0
    assert t3vis.open_run(tmp_path / "run").meta["model"]["name_or_path"] == "bert-topics"  # the output folder
    # a config.json that kept the base model's name (older transformers wrote it) names the model
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, "_name_or_path": "bert-base-uncased"}))
    assert record(tmp_path, checkpoint, data, out="run2") == 0
    assert t3vis.open_run(tmp_path / "run2").meta["model"]["name_or_path"] == "bert-base-uncased"


def test_append_checks_the_probe_set_and_the_model(tmp_path, capsys):
    first = save_checkpoint(tmp_path / "out" / "checkpoint-6")
    second = save_checkpoint(tmp_path / "out" / "checkpoint-12", seed=1)
    data = write_csv(tmp_path / "topics.csv", TEXTS, [TOPICS[i] for i in INTENDED])
    assert record(tmp_path, first, data, "--label-map", "sport=0,politics=1,technology=2") == 0
    # the same data: the run's own mapping is reused, and the checkpoint added
    assert record(tmp_path, second, data, "--append") == 0
    run = t3vis.open_run(tmp_path / "run")
    assert [c.step for c in run.checkpoints] == [6, 12] and list(run.examples["label"]) == INTENDED

    third = save_checkpoint(tmp_path / "out" / "checkpoint-18", seed=2)
    changed = write_csv(tmp_path / "changed.csv", ["something else", *TEXTS[1:]], [TOPICS[i] for i in INTENDED])
    assert record(tmp_path, third, changed, "--append") == 2
    assert "texts differ from example 0 on ('the match ended in a draw' in the run" in capsys.readouterr().err
    relabelled = write_csv(tmp_path / "relabelled.csv", TEXTS, [TOPICS[i] for i in [0, 1, 2, 0, 1, 0]])
    assert record(tmp_path, third, relabelled, "--append") == 2
    assert "labels differ from example 5 on (2 in the run, 0 now)" in capsys.readouterr().err
    renamed = write_csv(tmp_path / "renamed.csv", TEXTS, ["a", "b", "c", "a", "b", "c"])
    assert record(tmp_path, third, renamed, "--append", "--label-map", "a=0,b=1,c=2") == 2
    assert "label names: the run has ['sport', 'politics', 'technology'], this recording ['a', 'b', 'c']" in (
        capsys.readouterr().err)
    shallow = save_checkpoint(tmp_path / "out" / "checkpoint-24", num_layers=1)
    assert record(tmp_path, shallow, data, "--append") == 2
    assert "layers: the run has 2, this recording 1" in capsys.readouterr().err
    assert [c.step for c in t3vis.open_run(tmp_path / "run").checkpoints] == [6, 12]   # nothing added
