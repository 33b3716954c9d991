"""Hooks that measure signal propagation on real batches: ``SignalMonitor``.

For every residual-stream point of a model (each stack's input and every residual sub-layer's output) the
monitor records, per forward pass, the variance of the stream (``torch.var``) and its token correlation
(:func:`dslm_zoo.theory.signal.token_correlation`), and, through tensor hooks on the same tensors, the
variance and token correlation of the gradient that reaches them in the next backward. After a backward the
weight-gradient norms of each sub-layer's output projection (attention W_O, FFN W2) and of its whole branch are
read from ``.grad``. The statistics are kept as 0-dim tensors (no host sync inside the hooks), nothing else is
retained, and ``enabled = False`` turns every hook into a no-op, so the monitor can stay attached in training.

Works on dslm_zoo models (every ``Residual`` of every stack in ``stack_plans()``) and on timm
``VisionTransformer`` (Pre-LN ``Block``: the point after attention is the input of ``norm2``).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from ..theory.signal import _FLOAT_COLUMNS, SignalTable, _nanmean

__all__ = ["ResidualPoint", "residual_points", "SignalMonitor", "SignalMeasurement"]


@dataclass
class SignalMeasurement(SignalTable):
    """Measured :class:`SignalTable`; ``wgrad_branch`` is the gradient norm of every branch parameter, and for
    an average over models ``spread`` holds the per-row standard deviation of each column across them."""

    wgrad_branch: list[float] = field(default_factory=list)
    spread: dict[str, list[float]] = field(default_factory=dict)
    n_models: int = 1

    @classmethod
    def average(cls, items: Sequence["SignalMeasurement"]) -> "SignalMeasurement":
        """Row-wise mean over measurements of one architecture (e.g. several init seeds), plus the per-row
        standard deviation of each column across them in ``spread``."""
        items = list(items)
        avg = super().mean(items)  # checks the row layouts and averages the shared columns
        avg.wgrad_branch = [_nanmean([m.wgrad_branch[i] for m in items]) for i in range(len(avg))]

        def sd(col: str) -> list[float]:
            out = []
            for i in range(len(avg)):
                v = [getattr(m, col)[i] for m in items if math.isfinite(getattr(m, col)[i])]
                out.append(statistics.stdev(v) if len(v) > 1 else float("nan"))
            return out

        avg.spread = {c: sd(c) for c in _FLOAT_COLUMNS}
        avg.n_models = len(items)
        return avg


@dataclass
class ResidualPoint:
    """One residual-stream point: where to hook it and which weights belong to the sub-layer ending there."""

    stack: int
    sublayer: int  # -1 for the stack input
    block: int
    kind: str  # input | attn | cross_attn | ffn
    module: nn.Module
    pre: bool  # True: the point is the module's first input; False: its output
    out_weight: nn.Parameter | None = None  # W_O / FFN W2
    branch: nn.Module | None = None  # every parameter of the sub-layer's branch
    post_norm: nn.Module | None = None  # Post-LN: the LayerNorm whose input is the residual sum


def _is_timm_vit(model: nn.Module) -> bool:
    try:
        from timm.models.vision_transformer import VisionTransformer as TimmViT
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, TimmViT)


def residual_points(model: nn.Module) -> list[ResidualPoint]:
    """The residual-stream points of a dslm_zoo model or a timm ViT, in the row order of ``SignalTable``."""
    pts: list[ResidualPoint] = []
    if _is_timm_vit(model):
        blocks = list(model.blocks)
        pts.append(ResidualPoint(0, -1, -1, "input", blocks[0], True))
        for b, blk in enumerate(blocks):
            if not hasattr(blk, "norm2") or not hasattr(blk, "ls1"):
                raise TypeError(f"unsupported timm block {type(blk).__name__}")
            pts.append(ResidualPoint(0, 2 * b, b, "attn", blk.norm2, True, blk.attn.proj.weight, blk.attn))
            pts.append(ResidualPoint(0, 2 * b + 1, b, "ffn", blk, False, blk.mlp.fc2.weight, blk.mlp))
        return pts
    if not hasattr(model, "stack_plans"):
        raise TypeError(f"{type(model).__name__} is neither a dslm_zoo model nor a timm VisionTransformer")
    from ..layers import Attention, CrossAttention, LocalRNN

    for k, plan in enumerate(model.stack_plans()):
        st = plan.stack
        res = st.residuals()
        per_block = len(st.blocks[0].residuals())
        pts.append(ResidualPoint(k, -1, -1, "input", res[0], True))
        for i, r in enumerate(res):
            b = r.branch
            kind = ("cross_attn" if isinstance(b, CrossAttention) else "attn" if isinstance(b, Attention)
                    else "rnn" if isinstance(b, LocalRNN) else "ffn")
            w = b.fc2.weight if kind == "ffn" else b.proj.weight  # the output projection (weight-gradient rows)
            post = None if r.norm_first else r.norm
            pts.append(ResidualPoint(k, i, i // per_block, kind, r, False, w, b, post))
    return pts


def _first_tensor(x: Any) -> torch.Tensor | None:
    """``x`` if a tensor, else the first tensor of a tuple, list or dict (hook arguments, batches)."""
    items = x.values() if isinstance(x, dict) else x if isinstance(x, (tuple, list)) else [x]
    return next((t for t in items if isinstance(t, torch.Tensor)), None)


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(variance, token correlation) of a (..., tokens, features) tensor as 0-dim fp32 tensors."""
    x = x.detach().float()
    var = x.var()
    if x.dim() < 2 or x.shape[-2] < 2:
        return var, torch.full((), float("nan"), device=x.device)
    x = x.reshape(-1, x.shape[-2], x.shape[-1])
    B, N, _ = x.shape
    xc = x - x.mean(-1, keepdim=True)
    tot = xc.sum(1)
    total = (tot * tot).sum()
    diag = (xc * xc).sum()
    corr = ((total - diag) / (B * N * (N - 1))) / (diag / (B * N))
    return var, corr


class SignalMonitor:
    """Per-sub-layer forward and gradient statistics of the last forward/backward.

        with SignalMonitor(model) as mon:
            out = model.forward_features(x)
            (out * torch.randn_like(out)).sum().backward()
        table = mon.table()          # a SignalMeasurement (same rows as dslm_zoo.diagnostics.predict)

    ``grad=False`` skips the tensor hooks; ``enabled`` toggles everything (hooks stay registered but return at
    once). ``remove()`` (or leaving the ``with`` block) detaches the hooks. Under gradient checkpointing the
    forward hooks also fire during recomputation; the last call wins, which measures the same values.
    """

    def __init__(self, model: nn.Module, *, grad: bool = True, corr: bool = True, enabled: bool = True):
        self.model = model
        self.points = residual_points(model)
        self.grad, self.corr, self.enabled = grad, corr, enabled
        self._handles: list[Any] = []
        self.reset()
        self.attach()

    # -- life cycle -----------------------------------------------------------------------------------------
    def attach(self) -> "SignalMonitor":
        if self._handles:
            return self
        for idx, pt in enumerate(self.points):
            if pt.pre:
                def pre_hook(mod: nn.Module, args: tuple, idx: int = idx) -> None:
                    self._record(idx, _first_tensor(args))

                self._handles.append(pt.module.register_forward_pre_hook(pre_hook))
            else:
                def fwd_hook(mod: nn.Module, args: tuple, out: Any, idx: int = idx) -> None:
                    self._record(idx, _first_tensor(out))

                self._handles.append(pt.module.register_forward_hook(fwd_hook))
            if pt.post_norm is not None:
                def sum_hook(mod: nn.Module, args: tuple, idx: int = idx, owner: nn.Module = pt.module) -> None:
                    x = _first_tensor(args)
                    if self.enabled and x is not None:
                        # a DSLM Post-LN residual feeds its norm (lambda x + beta F) / lambda (Residual.forward)
                        scale = float(getattr(owner, "norm_input_scale", 1.0))
                        self._sum[idx] = x.detach().float().var() * scale**2

                self._handles.append(pt.post_norm.register_forward_pre_hook(sum_hook))
        return self

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> "SignalMonitor":
        return self.attach()

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def reset(self) -> None:
        n = len(self.points)
        self._fwd: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n
        self._grad: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n
        self._sum: list[torch.Tensor | None] = [None] * n

    # -- hooks ----------------------------------------------------------------------------------------------
    def _record(self, idx: int, x: torch.Tensor | None) -> None:
        if not self.enabled or x is None:
            return
        with torch.no_grad():
            v, c = _stats(x) if self.corr else (x.detach().float().var(), torch.full((), float("nan")))
        self._fwd[idx] = (v, c)
        if self.grad and x.requires_grad and torch.is_grad_enabled():
            def on_grad(g: torch.Tensor, idx: int = idx) -> None:
                if self.enabled:
                    with torch.no_grad():
                        self._grad[idx] = _stats(g) if self.corr else (g.detach().float().var(), torch.full((), float("nan")))

            x.register_hook(on_grad)

    # -- read-out -------------------------------------------------------------------------------------------
    def weight_grad_norms(self) -> tuple[list[float], list[float]]:
        """(output-projection, whole-branch) weight-gradient Frobenius norms per point (nan for input rows)."""
        out, br = [], []
        for pt in self.points:
            if pt.out_weight is None or pt.out_weight.grad is None:
                out.append(float("nan"))
            else:
                out.append(float(pt.out_weight.grad.detach().float().norm()))
            if pt.branch is None:
                br.append(float("nan"))
            else:
                sq = [p.grad.detach().float().pow(2).sum() for p in pt.branch.parameters() if p.grad is not None]
                br.append(float(torch.stack(sq).sum().sqrt()) if sq else float("nan"))
        return out, br

    def table(self, meta: dict[str, Any] | None = None):
        """The last forward/backward as a :class:`~dslm_zoo.diagnostics.compare.SignalMeasurement`."""
        nan = float("nan")
        fv = [nan if s is None else float(s[0]) for s in self._fwd]
        fc = [nan if s is None else float(s[1]) for s in self._fwd]
        gv = [nan if s is None else float(s[0]) for s in self._grad]
        gc = [nan if s is None else float(s[1]) for s in self._grad]
        wo, wb = self.weight_grad_norms()
        p = self.points
        # the residual sum: measured at a Post-LN LayerNorm's input, else the stream itself (Pre-LN)
        sv = [
            nan if q.kind == "input" else (nan if t is None else float(t)) if q.post_norm is not None else f
            for q, t, f in zip(p, self._sum, fv)
        ]
        return SignalMeasurement(
            stack=[q.stack for q in p], sublayer=[q.sublayer for q in p], block=[q.block for q in p],
            kind=[q.kind for q in p], fwd_var=fv, fwd_corr=fc, grad_var=gv, grad_corr=gc, wgrad_norm=wo,
            sum_var=sv, wgrad_branch=wb, meta=dict(meta or {}),
        )
