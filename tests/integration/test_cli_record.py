"""`t3vis record CKPT... --data FILE --out RUN` on Hugging Face checkpoint folders."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import make_labels, make_model, make_texts

import t3vis
from t3vis.cli import main


@pytest.fixture
def checkpoints(tmp_path):
    """Three checkpoint folders of one tiny model, the weights nudged between them."""
    model, tokenizer = make_model("bert")
    model.config.id2label, model.config.label2id = {0: "neg", 1: "pos"}, {"neg": 0, "pos": 1}
    folders = []
    for step in (30, 10, 20):  # given out of order on purpose
        with torch.no_grad():
            model.classifier.bias[1] = step / 20  # the later the checkpoint, the more it leans to "pos"
        folder = tmp_path / f"checkpoint-{step}"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "epoch": step / 10}))
        folders.append(folder)
    return folders


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_record_reads_every_file_type_and_orders_by_step(tmp_path, checkpoints, suffix):
    texts, labels = make_texts(9), make_labels(9)
    frame = pd.DataFrame({"sentence": texts, "polarity": ["pos" if y else "neg" for y in labels]})
    data = tmp_path / f"data{suffix}"
    {".csv": lambda: frame.to_csv(data, index=False),
     ".jsonl": lambda: frame.to_json(data, orient="records", lines=True),
     ".parquet": lambda: frame.to_parquet(data)}[suffix]()
    code = main(["record", *map(str, checkpoints), "--data", str(data), "--out", str(tmp_path / "run"),
                 "--text-column", "sentence", "--label-column", "polarity", "--batch-size", "4"])
    assert code == 0
    run = t3vis.open_run(tmp_path / "run")
    assert [c.step for c in run.checkpoints] == [10, 20, 30]
    assert [c.epoch for c in run.checkpoints] == [1.0, 2.0, 3.0]
    assert run.label_names == ["neg", "pos"]
    assert list(run.examples["label"]) == labels   # names mapped through the model's label2id
    # each checkpoint references its folder and was probed with its own weights
    assert run.checkpoints[0].weights_path == (tmp_path / "checkpoint-10").resolve()
    # ...and names those folders in run.json, the only folders outside the run the server loads from
    assert sorted(run.meta["weights_roots"]) == sorted(str(f.resolve()) for f in checkpoints)
    biases = [c.outputs["probs"].iloc[0][1] for c in run.checkpoints]
    assert biases[0] < biases[1] < biases[2]  # the bias towards "pos" grows step by step
    model, _ = run.checkpoints[1].load_model()
    assert model.classifier.bias[1].item() == pytest.approx(1.0)


def test_record_names_a_missing_column_and_the_flag_to_fix_it(tmp_path, checkpoints, capsys):
    data = tmp_path / "data.csv"
    pd.DataFrame({"text": ["good"], "y": [1]}).to_csv(data, index=False)
    code = main(["record", str(checkpoints[0]), "--data", str(data), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert "no label column 'label'" in err and "['text', 'y']" in err and "--label-column" in err
    assert not (tmp_path / "run").exists()


def test_record_refuses_labels_outside_the_model(tmp_path, checkpoints, capsys):
    data = tmp_path / "data.csv"
    pd.DataFrame({"text": ["good", "bad"], "label": [0, 4]}).to_csv(data, index=False)
    assert main(["record", str(checkpoints[0]), "--data", str(data), "--out", str(tmp_path / "run")]) == 2
    assert "label 4 of example 1 is outside the model's classes 0..1" in capsys.readouterr().err


def test_record_refuses_a_folder_that_is_not_a_checkpoint(tmp_path, capsys):
    data = tmp_path / "data.csv"
    pd.DataFrame({"text": ["good"], "label": [0]}).to_csv(data, index=False)
    assert main(["record", str(tmp_path), "--data", str(data), "--out", str(tmp_path / "run")]) == 2
    assert "not a Hugging Face checkpoint" in capsys.readouterr().err


def test_console_script_reports_a_wrong_run_path(tmp_path):
    result = subprocess.run([sys.executable, "-m", "t3vis.cli", "info", str(tmp_path / "nope")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "no run at" in result.stderr and "nope" in result.stderr
    assert "Traceback" not in result.stderr


def test_names_on_a_placeholder_model_need_the_training_mapping(tmp_path, capsys):
    model, tokenizer = make_model("bert")          # id2label: LABEL_0, LABEL_1
    folder = tmp_path / "checkpoint-5"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    data = tmp_path / "data.csv"
    pd.DataFrame({"text": ["good", "bad", "fun"], "label": ["yes", "no", "yes"]}).to_csv(data, index=False)
    assert main(["record", str(folder), "--data", str(data), "--out", str(tmp_path / "run")]) == 2
    assert "--label-map no=0,yes=1" in capsys.readouterr().err   # the mapping it needs, as a flag
    assert not (tmp_path / "run").exists()
    # trained as yes=0, no=1: said so, recorded so
    assert main(["record", str(folder), "--data", str(data), "--out", str(tmp_path / "run"),
                 "--label-map", "yes=0,no=1"]) == 0
    run = t3vis.open_run(tmp_path / "run")
    assert run.label_names == ["yes", "no"] and list(run.examples["label"]) == [0, 1, 0]
    assert run.meta["label_map"] == {"yes": 0, "no": 1}
    assert "labels: yes=0,no=1" in capsys.readouterr().out
    assert [c.step for c in run.checkpoints] == [5]
