"""RMS normalisation with its scale held constant in the backward pass (LRP's rule LRP-LN for RMSNorm).

`F.layer_norm` and `F.rms_norm` calls are rewritten by lrp.ConservativePropagation. Many
models (Llama's LlamaRMSNorm, T5's T5LayerNorm, ...) normalise by hand instead:
x * rsqrt(mean(x^2) + eps) * g. Those modules are found structurally: a module whose class name
says it normalises ("Norm") is probed on random tensors. One that calls a functional norm is
left to the mode; one that computes x * g / rms(x), for a gain vector g it is measured to have
(so Gemma's (1 + w) is as fine as Llama's w), gets a forward hook that returns the same value
with 1/rms(x) detached; any other is refused with UnsupportedModelError naming it, since its
scale cannot be held constant and relevance would not be conserved through it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from t3vis.errors import UnsupportedModelError

_FUNCTIONAL_NORMS = {F.layer_norm, F.rms_norm}
_PROBE_SCALE = 100.0     # |x| large against eps: the gain is read off without knowing eps


class _SeesFunctionalNorm(TorchFunctionMode):
    """Records whether a functional layer or RMS norm ran inside it."""

    def __init__(self):
        super().__init__()
        self.seen = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen = self.seen or func in _FUNCTIONAL_NORMS
        return func(*args, **(kwargs or {}))


def rms_norm_constant_scale(x: torch.Tensor, gain: torch.Tensor, eps: float, dtype: torch.dtype) -> torch.Tensor:
    """x * gain / rms(x) in the output dtype, 1/rms(x) a constant for autograd."""
    wide = x.to(torch.promote_types(x.dtype, torch.float32))
    scale = torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + eps).detach()            # (..., 1)
    return (wide * scale * gain.to(wide.dtype)).to(dtype)


def _width(module: nn.Module) -> int | None:
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 1:
        return int(weight.shape[0])
    shape = getattr(module, "normalized_shape", None)
    return int(shape[-1]) if shape else None


def _eps(module: nn.Module) -> float:
    for name in ("variance_epsilon", "eps", "epsilon"):
        value = getattr(module, name, None)
        if isinstance(value, (int, float)):
            return float(value)
    return 1e-6


@torch.no_grad()
def _probe(name: str, module: nn.Module) -> torch.Tensor | None:
    """None where the module normalises through a functional norm; else its gain (d,) if it is
    an RMS norm; UnsupportedModelError otherwise."""
    refuse = UnsupportedModelError(
        f"LRP cannot hold the normalisation scale of {name} ({type(module).__name__}) constant: it is neither "
        "F.layer_norm, F.rms_norm nor x * g / rms(x); use integrated_gradients or grad_x_input for this model")
    width = _width(module)
    if width is None:
        raise refuse
    param = next(module.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    x = torch.randn(2, 3, width, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = (x * 3 + 0.5).to(dtype=dtype, device=device)          # off-centre: a centring norm fails the test
    seer = _SeesFunctionalNorm()
    try:
        with seer, torch.autocast(device.type, enabled=False):
            out = module(x)
            flat = module(torch.full((1, width), _PROBE_SCALE, dtype=dtype, device=device))
    except Exception as error:        # a norm that needs more than the hidden states (a gate, a condition)
        raise refuse from error
    if seer.seen:
        return None
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        raise refuse
    gain = flat[0].to(torch.float64)                          # x / rms(x) = 1 for a constant x
    expected = rms_norm_constant_scale(x.double(), gain, _eps(module), torch.float64)
    tolerance = 1e-4 if dtype in (torch.float32, torch.float64) else 3e-2
    if not torch.allclose(out.double(), expected, rtol=tolerance, atol=tolerance * float(expected.abs().max())):
        raise refuse
    return gain.to(dtype)


def _is_norm(module: nn.Module) -> bool:
    return "norm" in type(module).__name__.lower() and not isinstance(module, (nn.LayerNorm, nn.RMSNorm))


@contextmanager
def constant_rms_scales(model: nn.Module) -> Iterator[int]:
    """Every hand-written RMS norm of the model with its scale detached; yields how many were found.

    UnsupportedModelError (before anything is attached) for a norm that can be held neither way.
    """
    found = [(module, gain, _eps(module)) for name, module in model.named_modules() if _is_norm(module)
             for gain in [_probe(name, module)] if gain is not None]
    with ExitStack() as stack:
        for module, gain, eps in found:
            def hook(mod, args, kwargs, output, gain=gain, eps=eps):
                x = args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
                return rms_norm_constant_scale(x, gain, eps, output.dtype)

            stack.callback(module.register_forward_hook(hook, with_kwargs=True).remove)
        yield len(found)
