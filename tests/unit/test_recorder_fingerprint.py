"""The callback's row-to-id table: tokens and label make a fingerprint; equal rows take turns."""

import torch

from t3vis.integrations.fingerprint import FingerprintTable, fingerprints


def test_fingerprints_ignore_padding_and_tell_labels_apart():
    right = torch.tensor([[5, 6, 7, 0]]), torch.tensor([[1, 1, 1, 0]])
    left = torch.tensor([[0, 5, 6, 7]]), torch.tensor([[0, 1, 1, 1]])
    assert fingerprints(*right) == fingerprints(*left)
    assert fingerprints(*right, torch.tensor([1])) == fingerprints(*left, torch.tensor([1]))
    assert fingerprints(*right, torch.tensor([0])) != fingerprints(*right, torch.tensor([1]))
    assert fingerprints(*right, torch.tensor([0])) != fingerprints(*right)
    assert fingerprints(torch.tensor([[5, 7, 6]])) != fingerprints(torch.tensor([[5, 6, 7]]))


def test_rows_sharing_a_fingerprint_take_their_ids_in_turn():
    # keys: 10 belongs to ids 100 and 101 (two equal rows), 20 to id 200, 30 to ids 300, 301, 302
    table = FingerprintTable(torch.tensor([10, 20, 30, 10, 30, 30]), torch.tensor([100, 200, 300, 101, 301, 302]))
    assert table.lookup(torch.tensor([10, 20, 99])).tolist() == [100, 200, -1]
    assert table.lookup(torch.tensor([10])).tolist() == [101]
    assert table.lookup(torch.tensor([10, 10, 10])).tolist() == [100, 101, 100]   # in one batch, too
    # three sightings of key 30, however batched, give each of its three ids once
    first = table.lookup(torch.tensor([30, 20, 30])).tolist()
    second = table.lookup(torch.tensor([30])).tolist()
    assert first == [300, 200, 301] and second == [302]
    assert table.lookup(torch.tensor([30, 30, 30])).tolist() == [300, 301, 302]


def test_a_rank_offset_starts_the_turns_elsewhere():
    keys, ids = torch.tensor([10, 10]), torch.tensor([100, 101])
    # two ranks that each see one of the two equal rows give out both ids
    assert FingerprintTable(keys, ids, start=0).lookup(torch.tensor([10])).tolist() == [100]
    assert FingerprintTable(keys, ids, start=1).lookup(torch.tensor([10])).tolist() == [101]


def test_an_empty_table_knows_no_row():
    table = FingerprintTable(torch.tensor([], dtype=torch.int64), torch.tensor([], dtype=torch.int64))
    assert table.lookup(torch.tensor([1, 2])).tolist() == [-1, -1]
