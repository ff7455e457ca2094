"""Models split across devices: each layer's head gates live on the device of the block they scale.

There is no second accelerator here, so the split is cpu + "meta" (tensors with shapes and no
data), the way accelerate splits a model with a `device_map`: the blocks after the split sit on
the other device, and a pre-hook moves their inputs there. A gate on the wrong device fails
the forward pass outright ("Tensor on device cpu is not on the expected device meta").
"""

import torch
from conftest import make_model, make_texts
from torch import nn

from t3vis.models.gates import gated_heads, mask_to_gates
from t3vis.models.structure import find_attention_layout, layer_devices, module_device


def test_module_device_is_read_from_the_modules_own_weights():
    assert module_device(nn.Linear(2, 3, device="meta")) == torch.device("meta")
    assert module_device(nn.Linear(2, 3)) == torch.device("cpu")
    only_buffer = nn.Module()
    only_buffer.register_buffer("scale", torch.ones(3, device="meta"))
    assert module_device(only_buffer) == torch.device("meta")
    assert module_device(nn.ReLU()) is None


def _split_bert():
    """A tiny BERT with block 0 on the cpu and block 1, the pooler and the classifier on "meta"."""
    model, tokenizer = make_model("bert")
    layout = find_attention_layout(model)      # found before the split, as a caller's own code would

    def to_meta(x):
        return x.to("meta") if torch.is_tensor(x) else x

    def inputs_to_meta(module, args, kwargs):
        return tuple(to_meta(a) for a in args), {k: to_meta(v) for k, v in kwargs.items()}

    for module in (model.bert.encoder.layer[1], model.bert.pooler, model.classifier):
        module.to("meta")
        module.register_forward_pre_hook(inputs_to_meta, with_kwargs=True)
    return model.eval(), tokenizer, layout


def test_layer_devices_follow_each_blocks_projection():
    _, _, layout = _split_bert()
    assert layer_devices(layout, "cpu") == (torch.device("cpu"), torch.device("meta"))


def test_gates_are_placed_on_each_blocks_own_device():
    model, tokenizer, layout = _split_bert()
    enc = tokenizer(make_texts(2), padding=True, return_tensors="pt")
    gates = mask_to_gates(layout, {0: [1], 1: [0]}, device="cpu")          # made on the first device
    seen = {}

    def keep(layer, context, gated):
        seen[layer] = (context, gated)

    with torch.no_grad(), gated_heads(layout, gates, on_gated=keep):
        logits = model(**enc).logits
    assert logits.device.type == "meta"
    assert {layer: gated.device.type for layer, (_, gated) in seen.items()} == {0: "cpu", 1: "meta"}
    context, gated = seen[0]                       # on the cpu the values can be checked: head 1 is zeroed
    assert context[..., 8:16].abs().max() > 0
    assert torch.equal(gated[..., 8:16], torch.zeros_like(gated[..., 8:16]))
    assert torch.equal(gated[..., :8], context[..., :8]) and torch.equal(gated[..., 16:], context[..., 16:])
    assert all(not p._forward_pre_hooks for p in layout.output_projections)
