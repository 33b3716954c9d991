"""Where did a NaN or inf start? Re-run one forward/backward with the signal hooks and name the first sub-layer.

Forward: the first residual-stream point (stack input, then every sub-layer in forward order) whose activations
are not finite. Backward: the first point, from the output towards the input, whose incoming gradient is not
finite, then the first parameter in that order with a non-finite gradient. The trainer calls this at the step
where the loss or the gradient norm went non-finite.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .hooks import ResidualPoint, SignalMonitor

__all__ = ["NonFiniteReport", "locate_nonfinite"]


@dataclass(frozen=True)
class NonFiniteReport:
    """``kind``: 'activations' | 'gradients' | 'parameter gradients' | 'loss'; ``where``: the sub-layer named
    by its module path, stack, block and type."""

    kind: str
    where: str

    def __str__(self) -> str:
        return f"first non-finite {self.kind}: {self.where}"


def _describe(pt: ResidualPoint, names: dict[int, str]) -> str:
    name = names.get(id(pt.module), type(pt.module).__name__)
    if pt.kind == "input":
        return f"the input of stack {pt.stack} ({name}: the embedding output)"
    return f"{name} ({pt.kind} sub-layer {pt.sublayer} of stack {pt.stack}, block {pt.block})"


def _finite(x: float) -> bool:
    return math.isfinite(x)


def locate_nonfinite(bare: nn.Module, run: Callable[[], torch.Tensor]) -> NonFiniteReport | None:
    """Run ``run()`` (a forward returning the loss; it may go through a DDP/FSDP wrapper) and its backward with
    hooks on ``bare``, the zoo model itself; return where values first went non-finite, or None if all stayed
    finite."""
    names = {id(m): n for n, m in bare.named_modules()}
    with SignalMonitor(bare, grad=True, corr=False) as mon:
        loss = run()
        if loss.requires_grad:
            loss.backward()
        # None = the point was not reached (no forward, or no gradient flowed there): not evidence of anything
        fwd = [None if s is None else float(s[0]) for s in mon._fwd]
        grad = [None if s is None else float(s[0]) for s in mon._grad]
    pts = mon.points
    for pt, v in zip(pts, fwd):
        if v is not None and not _finite(v):
            return NonFiniteReport("activations", _describe(pt, names))
    if not torch.isfinite(loss.detach()).all():
        return NonFiniteReport("loss", "the head or the loss (every sub-layer's activations are finite)")
    for pt, g in reversed(list(zip(pts, grad))):
        if g is not None and not _finite(g):
            return NonFiniteReport("gradients", _describe(pt, names))
    for n, p in reversed(list(bare.named_parameters())):
        if p.grad is not None and not torch.isfinite(p.grad).all():
            return NonFiniteReport("parameter gradients", n)
    return None
