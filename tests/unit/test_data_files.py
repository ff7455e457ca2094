"""Reading labelled texts for `t3vis record`: file types, label forms, and clear errors."""

import numpy as np
import pandas as pd
import pytest

from t3vis.data_files import read_labelled_texts
from t3vis.errors import InvalidInputError, NotFoundError


def test_compressed_csv_with_ids_and_splits(tmp_path):
    path = tmp_path / "d.csv.gz"
    frame = pd.DataFrame({"text": ["a", "b"], "label": [1, 0], "id": [7, 9], "split": ["train", "dev"]})
    frame.to_csv(path, index=False)
    table = read_labelled_texts(path)
    assert table.texts == ["a", "b"] and table.labels.tolist() == [1, 0]
    assert table.ids.tolist() == [7, 9] and table.splits == ["train", "dev"] and table.label_names is None


def test_label_names_map_in_the_given_order(tmp_path):
    path = tmp_path / "d.jsonl"
    pd.DataFrame({"text": ["a", "b", "c"], "label": ["pos", "neg", "pos"]}).to_json(path, orient="records", lines=True)
    assert read_labelled_texts(path, label_names=["pos", "neg"]).labels.tolist() == [0, 1, 0]
    default = read_labelled_texts(path)   # without the model's names: sorted
    assert default.label_names == ["neg", "pos"] and default.labels.tolist() == [1, 0, 1]
    with pytest.raises(InvalidInputError, match=r"label\(s\) \['pos'\] are not among the model's labels"):
        read_labelled_texts(path, label_names=["neg", "neutral"])


def test_missing_text_column_names_the_columns_and_the_flag(tmp_path):
    path = tmp_path / "d.parquet"
    pd.DataFrame({"sentence": ["a"], "label": [0]}).to_parquet(path)
    with pytest.raises(InvalidInputError, match=r"no text column 'text'.*\['sentence', 'label'\].*--text-column"):
        read_labelled_texts(path)


def test_rows_without_text_or_label_are_dropped_and_an_empty_file_refused(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame({"text": ["a", None, "c"], "label": [0, 1, np.nan]}).to_csv(path, index=False)
    table = read_labelled_texts(path)
    assert table.texts == ["a"] and table.labels.tolist() == [0]
    pd.DataFrame({"text": [None], "label": [1]}).to_csv(path, index=False)
    with pytest.raises(InvalidInputError, match="no rows with both"):
        read_labelled_texts(path)


def test_fractional_labels_unknown_types_and_missing_files(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame({"text": ["a"], "label": [0.5]}).to_csv(path, index=False)
    with pytest.raises(InvalidInputError, match="fractional"):
        read_labelled_texts(path)
    (tmp_path / "d.xlsx").write_text("x")
    with pytest.raises(InvalidInputError, match="unknown file type"):
        read_labelled_texts(tmp_path / "d.xlsx")
    with pytest.raises(NotFoundError, match="no data file"):
        read_labelled_texts(tmp_path / "missing.csv")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(InvalidInputError, match="cannot read"):
        read_labelled_texts(tmp_path / "bad.parquet")
