"""The stacks' normalisation layers, computed in fp32 inside low-precision models (deep stacks overflow otherwise).

``LayerNorm`` (the default) and ``DyT``, Dynamic Tanh (Zhu et al. 2025, "Transformers without Normalization",
arXiv:2503.10622): ``weight * tanh(alpha * x) + bias`` with one learned scalar ``alpha`` (initialised to 0.5, the
paper's default), an element-wise stand-in for LayerNorm. ``make_norm`` builds either by name.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LayerNorm", "DyT", "NORMS", "make_norm"]

NORMS = ("layernorm", "dyt")


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` whose statistics are taken in fp32 whatever the input or autocast dtype. ``eps`` overrides
    the module's for one call (a Post-LN residual folds its skip scale into it, see ``Residual``)."""

    def forward(self, x: torch.Tensor, eps: float | None = None) -> torch.Tensor:
        eps = self.eps if eps is None else eps
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        # no autocast under fx (the device is a proxy there) nor on the meta device (autocast has no meta backend)
        if torch.fx._symbolic_trace.is_fx_symbolic_tracing() or x.device.type == "meta":
            return F.layer_norm(x.float(), self.normalized_shape, w, b, eps).to(x.dtype)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return F.layer_norm(x.float(), self.normalized_shape, w, b, eps).to(x.dtype)


class DyT(nn.Module):
    """Dynamic Tanh: ``weight * tanh(alpha * x) + bias`` over the last dimension, in fp32."""

    def __init__(self, dim: int, alpha_init: float = 0.5, device=None, dtype=None):
        super().__init__()
        fk = dict(device=device, dtype=dtype)
        self.alpha_init = float(alpha_init)
        self.alpha = nn.Parameter(torch.full((1,), self.alpha_init, **fk))
        self.weight = nn.Parameter(torch.ones(dim, **fk))
        self.bias = nn.Parameter(torch.zeros(dim, **fk))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(self.alpha.float() * x.float()) * self.weight.float() + self.bias.float()
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, alpha_init={self.alpha_init}"


def make_norm(kind: str, dim: int, device=None, dtype=None) -> nn.Module:
    """A stack norm by name: ``'layernorm'`` or ``'dyt'``."""
    if kind == "layernorm":
        return LayerNorm(dim, device=device, dtype=dtype)
    if kind == "dyt":
        return DyT(dim, device=device, dtype=dtype)
    raise ValueError(f"unknown norm {kind!r}; expected one of {NORMS}")
