"""The DSLM residual: x <- lambda x + beta Dropout(Branch(.)) (Kedia et al. 2024, Sec. 4, step 1).

Pre-LN:  x <- lambda x + beta Dropout(Branch(LN(x)))
Post-LN: x <- LN(lambda x + beta Dropout(Branch(x)))
lambda and beta are fixed Python floats set by the init scheme (DSLM: lambda^2 + beta^2 = 1; DeepNorm:
lambda = alpha, beta = 1; Xavier/Megatron: 1, 1). Floats, not buffers: a bf16 buffer would round
sqrt(0.995) to 0.9961 and the error would compound over a thousand sub-layers.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["Residual"]


class Residual(nn.Module):
    """One residual sub-layer around an injected ``branch`` (attention, cross-attention or FFN)."""

    def __init__(self, branch: nn.Module, norm: nn.Module, norm_first: bool, drop: float = 0.0):
        super().__init__()
        self.branch = branch
        self.norm = norm
        self.norm_first = norm_first
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()
        self.lam = 1.0
        self.beta = 1.0

    def set_scales(self, lam: float, beta: float) -> None:
        self.lam, self.beta = float(lam), float(beta)

    def _combine(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        skip = x if self.lam == 1.0 else x * self.lam
        return torch.add(skip, y, alpha=self.beta)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.norm_first:
            return self._combine(x, self.drop(self.branch(self.norm(x), *args, **kwargs)))
        return self.norm(self._combine(x, self.drop(self.branch(x, *args, **kwargs))))

    def extra_repr(self) -> str:
        return f"lam={self.lam:.6g}, beta={self.beta:.6g}, norm_first={self.norm_first}"
