"""What a probe set's labels mean (tasks/labels.py): indices, names matched to the model, explicit maps."""

import numpy as np
import pytest

from t3vis.errors import InvalidInputError
from t3vis.tasks.labels import format_mapping, is_placeholder, parse_label_map, resolve_labels

NAMED = {0: "sport", 1: "politics", 2: "technology"}
PLACEHOLDER = {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}


def test_names_match_the_models_names_ignoring_case_and_spaces():
    resolved = resolve_labels(["Sport", " POLITICS ", "technology", "sport"], NAMED, 3)
    assert resolved.ids.tolist() == [0, 1, 2, 0]          # the model's order, not alphabetical (1, 2, 0)
    assert resolved.names == ["sport", "politics", "technology"]
    assert resolved.mapping == {"sport": 0, "politics": 1, "technology": 2}


def test_json_style_string_keys_of_id2label_are_read():
    assert resolve_labels(["b", "a"], {"0": "b", "1": "a"}, 2).ids.tolist() == [0, 1]


def test_integers_and_numeric_strings_stay_indices_and_are_checked():
    assert resolve_labels(np.array([2, 0, 1]), PLACEHOLDER, 3).ids.tolist() == [2, 0, 1]
    assert resolve_labels(["2", " 0", "1"], NAMED, 3).ids.tolist() == [2, 0, 1]
    assert resolve_labels([1.0, 0.0], None, 2).ids.tolist() == [1, 0]
    assert resolve_labels([True, False], None, 2).ids.tolist() == [1, 0]
    with pytest.raises(InvalidInputError, match=r"label 3 of example 1 is outside the model's classes 0\.\.2"):
        resolve_labels([0, 3], NAMED, 3)
    with pytest.raises(InvalidInputError, match="fractional"):
        resolve_labels([0.5], NAMED, 3)


def test_placeholder_model_with_names_and_no_mapping_is_refused_showing_the_mapping():
    with pytest.raises(InvalidInputError) as caught:
        resolve_labels(["sport", "politics", "technology"], PLACEHOLDER, 3)
    message = str(caught.value)
    assert "['politics', 'sport', 'technology']" in message            # the names found
    assert "--label-map politics=0,sport=1,technology=2" in message     # an example flag value
    assert "label_names=" in message and "LABEL_0" in message
    with pytest.raises(InvalidInputError, match="--label-map"):
        resolve_labels(["a"], None, 2)                                   # no id2label at all: the same


def test_placeholder_model_with_its_own_placeholder_names_needs_no_mapping():
    assert resolve_labels(["label_1", "LABEL_0"], PLACEHOLDER, 3).ids.tolist() == [1, 0]


def test_label_names_give_index_order():
    resolved = resolve_labels(["sport", "Technology", "politics"], PLACEHOLDER, 3,
                              label_names=["sport", "politics", "technology"])
    assert resolved.ids.tolist() == [0, 2, 1]
    assert resolved.mapping == {"sport": 0, "politics": 1, "technology": 2}
    with pytest.raises(InvalidInputError, match=r"2 label names .* 3 classes"):
        resolve_labels(["a"], PLACEHOLDER, 3, label_names=["a", "b"])


def test_label_map_gives_name_to_index_and_a_data_file_missing_one_class():
    # only sport and technology occur: index 2 must stay technology's, not become 1
    resolved = resolve_labels(["technology", "sport"], PLACEHOLDER, 3,
                              label_map={"sport": 0, "politics": 1, "technology": 2})
    assert resolved.ids.tolist() == [2, 0]
    assert resolved.names == ["sport", "politics", "technology"]
    partial = resolve_labels(["b"], PLACEHOLDER, 3, label_map={"b": 2})
    assert partial.names == ["LABEL_0", "LABEL_1", "b"] and partial.ids.tolist() == [2]


def test_names_outside_the_mapping_are_named():
    with pytest.raises(InvalidInputError, match=r"\['Neutral'\] are not among the model's labels"):
        resolve_labels(["sport", "Neutral"], NAMED, 3)
    with pytest.raises(InvalidInputError, match=r"\['x'\] are not among the label map"):
        resolve_labels(["x"], PLACEHOLDER, 3, label_map={"a": 0})


def test_bad_label_maps_are_refused():
    with pytest.raises(InvalidInputError, match=r"index 3; the model's classes are 0\.\.2"):
        resolve_labels(["a"], PLACEHOLDER, 3, label_map={"a": 3})
    with pytest.raises(InvalidInputError, match="the same index 0"):
        resolve_labels(["a"], PLACEHOLDER, 3, label_map={"a": 0, "b": 0})
    with pytest.raises(InvalidInputError, match="not both"):
        resolve_labels(["a"], PLACEHOLDER, 1, label_map={"a": 0}, label_names=["a"])
    with pytest.raises(InvalidInputError, match="same ignoring case"):
        resolve_labels(["a"], {0: "Pos", 1: "pos"}, 2)


def test_parse_and_format_the_flag():
    assert parse_label_map("sport=0, politics = 1,technology=2") == {"sport": 0, "politics": 1, "technology": 2}
    assert parse_label_map("a=b=1") == {"a=b": 1}    # the index follows the last "="
    assert format_mapping({"b": 1, "a": 0}) == "a=0,b=1"
    for bad in ("sport", "sport=x", "=1", ","):
        with pytest.raises(InvalidInputError, match="label map"):
            parse_label_map(bad)


def test_placeholder_detection():
    assert is_placeholder(PLACEHOLDER, 3) and is_placeholder(None, 2) and is_placeholder({}, 2)
    assert not is_placeholder(NAMED, 3)
    assert not is_placeholder({0: "LABEL_0", 1: "spam"}, 2)


def test_arrays_series_and_tensors_of_indices_are_read_as_indices():
    import pandas as pd
    import torch

    for raw in (np.array([2, 0]), pd.Series([2, 0]), torch.tensor([2, 0]), [np.int64(2), np.int64(0)]):
        assert resolve_labels(raw, NAMED, 3).ids.tolist() == [2, 0]
    assert resolve_labels(pd.Series(["Politics", "sport"]), NAMED, 3).ids.tolist() == [1, 0]
    assert resolve_labels([], NAMED, 3).ids.tolist() == []   # the Recorder refuses an empty probe set itself
