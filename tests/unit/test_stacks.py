"""Attention stacks found from a model's structure: names, sizes and streams per family."""

import pytest
import torch
from conftest import make_generative_model, make_model

from t3vis.errors import UnsupportedModelError
from t3vis.models.attention_maps import capture_attention
from t3vis.models.structure import attention_weights_index, find_attention_layout, find_stacks


@pytest.mark.parametrize("kind, expected", [
    ("gpt2", [("decoder", 2, "input", "input", "hidden_states")]),
    ("llama", [("decoder", 2, "input", "input", "hidden_states")]),
    ("t5", [("encoder", 2, "input", "input", "encoder_hidden_states"),
            ("decoder", 3, "decoder_input", "decoder_input", "decoder_hidden_states"),
            ("cross", 3, "decoder_input", "input", None)]),
    ("bart", [("encoder", 2, "input", "input", "encoder_hidden_states"),
              ("decoder", 3, "decoder_input", "decoder_input", "decoder_hidden_states"),
              ("cross", 3, "decoder_input", "input", None)]),
])
def test_each_family_has_its_stacks(kind, expected):
    model, _ = make_generative_model(kind)
    stacks = find_stacks(model)
    assert [(s.stack, s.num_layers, s.queries, s.keys, s.hidden_output) for s in stacks] == expected
    for s in stacks:
        assert (s.num_heads, s.head_dim) == (4, 8)     # Llama: 4 query heads over 2 key/value heads
        assert len({id(site.projection) for site in s.layers}) == s.num_layers


def test_a_classifier_is_one_encoder_or_decoder_stack():
    assert find_attention_layout(make_model("bert")[0]).stack == "encoder"
    assert find_attention_layout(make_model("gpt2")[0]).stack == "decoder"     # causal weights


def test_an_encoder_decoder_has_no_single_layout():
    with pytest.raises(UnsupportedModelError, match="3 attention stacks"):
        find_attention_layout(make_generative_model("bart")[0])


def test_t5s_position_bias_is_not_taken_for_attention_weights():
    # T5's attention layers return (hidden, position_bias, weights): both 4-D and of one shape
    model, tokenizer = make_generative_model("t5")
    model.eval()            # in training, dropout on the weights makes rows sum to anything
    stacks = find_stacks(model)
    ids = torch.tensor([tokenizer("good movie")["input_ids"]])
    with torch.no_grad(), capture_attention(stacks) as maps:
        model(input_ids=ids, decoder_input_ids=ids[:, :2], output_attentions=True)
    for s in stacks:
        for weights in maps.layers(s):
            torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    bias = torch.randn(1, 4, 3, 3)
    assert attention_weights_index((torch.zeros(1, 3, 32), bias)) is None


def test_stacks_are_found_under_bfloat16_autocast():
    # TRL's SFTConfig trains in bfloat16 by default: rows of bfloat16 weights sum to 1 only within 2e-3
    model, _ = make_generative_model("gpt2")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        stacks = find_stacks(model)
    assert [s.stack for s in stacks] == ["decoder"]
    rows = torch.full((1, 1, 1, 300), 1 / 300).to(torch.bfloat16)
    assert attention_weights_index((rows,)) == 0
