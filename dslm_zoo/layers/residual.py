"""The DSLM residual: x <- lambda x + beta Dropout(Branch(.)) (Kedia et al. 2024, Sec. 4, step 1).

Pre-LN:  x <- lambda x + beta Dropout(Branch(LN(x)))
Post-LN: x <- LN(lambda x + beta Dropout(Branch(x)))
lambda and beta are fixed Python floats set by the init scheme (DSLM: lambda^2 + beta^2 = 1; DeepNorm:
lambda = alpha, beta = 1; Xavier/Megatron: 1, 1). Floats, not buffers: a bf16 buffer would round
sqrt(0.995) to 0.9961 and the error would compound over a thousand sub-layers. Post-LN with a LayerNorm runs the
same sum as LN_{eps / lambda^2}(x + (beta / lambda) F): LayerNorm is scale-invariant, so the skip's scale costs
nothing (docs/depth.md, benchmarks/residual_cost.py).

Two Pre-LN variants the depth study compares DSLM with (issue 13), both off by default:
Peri-LN (Kim et al. 2025, arXiv:2502.02732): x <- lambda x + beta Dropout(LN_out(Branch(LN(x)))), a norm on the
branch output too (``out_norm``); LayerNorm Scaling (Sun et al. 2025, "The Curse of Depth", arXiv:2502.05795):
x <- lambda x + beta Dropout(Branch(LN(x) / sqrt(l))) in layer l = 1..L (``in_scale``).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .norm import LayerNorm

__all__ = ["Residual"]


class Residual(nn.Module):
    """One residual sub-layer around an injected ``branch`` (attention, cross-attention or FFN)."""

    def __init__(self, branch: nn.Module, norm: nn.Module, norm_first: bool, drop: float = 0.0, *,
                 out_norm: nn.Module | None = None, in_scale: float = 1.0):
        super().__init__()
        if not norm_first and (out_norm is not None or in_scale != 1.0):
            raise ValueError("out_norm (Peri-LN) and in_scale (LayerNorm Scaling) are Pre-LN variants: need norm_first=True")
        self.branch = branch
        self.norm = norm
        self.norm_first = norm_first
        self.out_norm = out_norm
        self.in_scale = float(in_scale)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()
        self.lam = 1.0
        self.beta = 1.0

    def set_scales(self, lam: float, beta: float) -> None:
        self.lam, self.beta = float(lam), float(beta)

    def _combine(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        skip = x if self.lam == 1.0 else x * self.lam
        return torch.add(skip, y, alpha=self.beta)

    @property
    def norm_input_scale(self) -> float:
        """What the norm's input must be multiplied by to give the residual sum lambda x + beta F (Post-LN folds
        lambda into the norm, see ``forward``; 1 otherwise). The signal monitor reads the sum through it."""
        return self.lam if self._folds() else 1.0

    def _folds(self) -> bool:
        return not self.norm_first and self.lam > 0.0 and self.lam != 1.0 and isinstance(self.norm, LayerNorm)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.norm_first:
            h = self.norm(x)
            y = self.branch(h if self.in_scale == 1.0 else h * self.in_scale, *args, **kwargs)
            return self._combine(x, self.drop(y if self.out_norm is None else self.out_norm(y)))
        y = self.drop(self.branch(x, *args, **kwargs))
        if self._folds():
            # LayerNorm is scale-invariant: LN_eps(lam x + beta y) = LN_{eps/lam^2}(x + (beta/lam) y) exactly, so the
            # residual is one add and DSLM costs one multiply in the backward instead of three element-wise passes
            return self.norm(torch.add(x, y, alpha=self.beta / self.lam), eps=self.norm.eps / self.lam**2)
        return self.norm(self._combine(x, y))

    def extra_repr(self) -> str:
        extra = "" if self.in_scale == 1.0 else f", in_scale={self.in_scale:.6g}"
        return f"lam={self.lam:.6g}, beta={self.beta:.6g}, norm_first={self.norm_first}{extra}"
