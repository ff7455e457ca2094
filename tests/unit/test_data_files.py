"""Reading labelled texts for `t3vis record`: file types, label forms, and clear errors."""

import pandas as pd
import pytest

from t3vis.data_files import read_labelled_texts
from t3vis.errors import InvalidInputError, NotFoundError


def test_compressed_csv_with_ids_and_splits(tmp_path):
    path = tmp_path / "d.csv.gz"
    frame = pd.DataFrame({"text": ["a", "b"], "label": [1, 0], "id": [7, 9], "split": ["train", "dev"]})
    frame.to_csv(path, index=False)
    table = read_labelled_texts(path)
    assert table.texts == ["a", "b"] and table.labels == [1, 0]
    assert table.ids.tolist() == [7, 9] and table.splits == ["train", "dev"] and table.source_ids is None
    assert (table.id_column, table.split_column) == ("id", "split")   # picked up, and said so


def test_labels_come_back_as_the_file_holds_them(tmp_path):
    path = tmp_path / "d.jsonl"
    pd.DataFrame({"text": ["a", "b", "c"], "label": ["pos", "neg", "pos"]}).to_json(path, orient="records", lines=True)
    assert read_labelled_texts(path).labels == ["pos", "neg", "pos"]   # no order imposed: tasks/labels.py decides


def test_a_json_file_may_hold_an_array_or_json_lines(tmp_path):
    array, lines = tmp_path / "array.json", tmp_path / "lines.json"
    array.write_text('[\n  {"text": "good", "label": "pos"},\n  {"text": "bad", "label": "neg"}\n]\n')
    lines.write_text('{"text": "good", "label": "pos"}\n{"text": "bad", "label": "neg"}\n')
    for path in (array, lines):
        table = read_labelled_texts(path)
        assert table.texts == ["good", "bad"] and table.labels == ["pos", "neg"]
    one = tmp_path / "one.json"
    one.write_text('{"text": "only", "label": 1}\n')   # a single JSON Lines row
    assert read_labelled_texts(one).texts == ["only"]


def test_string_ids_are_kept_as_source_ids_and_named_columns_are_used(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame({"text": ["a", "b"], "label": [0, 1], "id": ["ex-0000", "ex-0001"], "key": [5, 3],
                  "part": ["dev", "train"]}).to_csv(path, index=False)
    table = read_labelled_texts(path)
    assert table.ids is None and table.source_ids == ["ex-0000", "ex-0001"]
    chosen = read_labelled_texts(path, id_column="key", split_column="part")
    assert chosen.ids.tolist() == [5, 3] and chosen.source_ids is None and chosen.splits == ["dev", "train"]
    with pytest.raises(InvalidInputError, match=r"no id column 'uid'.*--id-column"):
        read_labelled_texts(path, id_column="uid")
    with pytest.raises(InvalidInputError, match=r"no split column 'fold'.*--split-column"):
        read_labelled_texts(path, split_column="fold")


def test_repeated_or_missing_ids_are_refused(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame({"text": ["a", "b", "c"], "label": [0, 1, 0], "id": ["x", "y", "x"]}).to_csv(path, index=False)
    with pytest.raises(InvalidInputError, match=r"repeats \['x'\]; ids must be unique.*--id-column"):
        read_labelled_texts(path)
    pd.DataFrame({"text": ["a", "b"], "label": [0, 1], "id": [1, None]}).to_csv(path, index=False)
    with pytest.raises(InvalidInputError, match=r"1 row.* have no 'id'"):
        read_labelled_texts(path)


def test_missing_text_column_names_the_columns_and_the_flag(tmp_path):
    path = tmp_path / "d.parquet"
    pd.DataFrame({"sentence": ["a"], "label": [0]}).to_parquet(path)
    with pytest.raises(InvalidInputError, match=r"no text column 'text'.*\['sentence', 'label'\].*--text-column"):
        read_labelled_texts(path)


def test_rows_without_text_or_label_are_dropped_counted_and_an_empty_file_refused(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [{"text": "a", "label": 0}, {"text": None, "label": 1}, {"text": "c", "label": None},
            {"text": "   ", "label": 1}, {"text": "", "label": 0}, {"text": "f", "label": 1}]
    pd.DataFrame(rows).to_json(path, orient="records", lines=True)
    table = read_labelled_texts(path)
    assert table.texts == ["a", "f"] and table.labels == [0, 1]
    assert table.dropped == {"with an empty or missing text": 3, "with a missing label": 1}
    assert table.dropped_message() == "left out 4 of 6 rows: 3 with an empty or missing text, 1 with a missing label"
    pd.DataFrame({"text": ["", None], "label": [1, 0]}).to_json(path, orient="records", lines=True)
    with pytest.raises(InvalidInputError, match=r"no rows with both a text .* 2 with an empty or missing text"):
        read_labelled_texts(path)
    full = tmp_path / "full.csv"
    pd.DataFrame({"text": ["a"], "label": [0]}).to_csv(full, index=False)
    assert read_labelled_texts(full).dropped_message() is None


def test_unknown_types_malformed_and_missing_files(tmp_path):
    (tmp_path / "d.xlsx").write_text("x")
    with pytest.raises(InvalidInputError, match="unknown file type"):
        read_labelled_texts(tmp_path / "d.xlsx")
    with pytest.raises(NotFoundError, match="no data file"):
        read_labelled_texts(tmp_path / "missing.csv")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(InvalidInputError, match="cannot read"):
        read_labelled_texts(tmp_path / "bad.parquet")
