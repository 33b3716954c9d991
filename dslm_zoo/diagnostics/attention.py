"""Attention entropy per self-attention layer: how spread each softmax row is, the rank-collapse and
entropy-collapse check of the depth study (issue 13).

A row's entropy is divided by log(number of keys it sees), so 1 is uniform attention (what a stack whose tokens
became identical produces: every logit equal) and 0 is all weight on one key (entropy collapse, Zhai et al. 2023,
"Stabilizing Transformer Training by Preventing Attention Entropy Collapse"). The probabilities are recomputed
from each layer's own input with its Q and K projections, position bias and causal mask, since
``F.scaled_dot_product_attention`` never materialises them.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..layers import Attention, CrossAttention

__all__ = ["attention_entropy"]


def _row_entropy(mod: Attention, x: torch.Tensor, bias: torch.Tensor | None) -> float:
    B, N, _ = x.shape
    q, k, _ = mod.qkv(x).view(B, N, 3, mod.num_heads, mod.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    logits = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(mod.head_dim)
    if bias is not None:
        logits = logits + bias.float()
    if mod.causal:
        keep = torch.ones(N, N, dtype=torch.bool, device=x.device).tril()
        logits = logits.masked_fill(~keep, float("-inf"))
    p = logits.softmax(-1)
    ent = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)  # (B, H, N)
    seen = torch.isfinite(logits).sum(-1)
    rows = seen > 1  # a row with one key has no spread to measure (the first causal position)
    return float((ent[rows] / torch.log(seen[rows].float())).mean()) if rows.any() else float("nan")


@torch.no_grad()
def attention_entropy(model: nn.Module, *args: Any, **kwargs: Any) -> list[float]:
    """Mean normalised row entropy of every self-attention layer (forward order) on one eval-mode forward of
    ``model(*args, **kwargs)``; cross-attention is left out."""
    out: list[float] = []
    hooks = [m.register_forward_pre_hook(lambda mod, a: out.append(_row_entropy(mod, a[0], a[1] if len(a) > 1 else None)))
             for m in model.modules() if isinstance(m, Attention) and not isinstance(m, CrossAttention)]
    if not hooks:
        raise ValueError(f"{type(model).__name__} has no dslm_zoo self-attention layer")
    was = model.training
    model.eval()
    try:
        model(*args, **kwargs)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return out
