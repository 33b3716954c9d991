"""AdamW parameter groups, the DSLM learning-rate rule and the warmup + decay schedule.

The DSLM rule (derived in docs/lr_rule.md). Adam moves every entry of a tensor by about the learning rate per
step, whatever its gradient's scale, so a tensor initialised with standard deviation sigma changes by about
lr / sigma of itself per step. A learning rate tuned under the baseline init (Xavier, embeddings N(0, 0.02^2),
lambda = beta = 1) therefore under-trains every tensor that DSLM draws larger: the embedding tables
(sigma^2 = (1-p)/n_t, ~27x the 0.02 std) and W_V / W_O early in the stack. Two factors restore the baseline's
per-step change:

1. init-scale ratio, per tensor: ``sigma_dslm / sigma_xavier`` (both read off the init schemes' records, fused
   Q/K/V as the root mean square of their parts; constants such as LayerNorm gains and biases: 1);
2. branch scale, for every tensor inside a residual branch: a branch moves the stream by beta times its own
   change under DSLM, and by 1/sqrt(var_l) under a Pre-LN baseline whose stream variance grows about linearly
   with the sub-layer index l; averaged over the stack that is 2/sqrt(N_sub). The factor is
   ``(2 / sqrt(N_sub)) / beta = 2 / sqrt(k)``: independent of depth, sqrt(2) at the default k = 2.

``lr_rule='auto'`` applies this to models whose ``cfg.init`` is ``'dslm'``; other schemes get factor 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .config import OptimSection, ScheduleSection

__all__ = ["dslm_lr_multipliers", "param_groups", "build_optimizer", "build_scheduler", "lr_factor", "LrPlan"]


def _tensor_stds(model: nn.Module, scheme: str) -> tuple[dict[str, float | None], nn.Module]:
    """``{parameter name: std}`` the scheme draws (None for constants), read off a meta-device twin of ``model``
    initialised with the scheme (which also holds the scheme's lambda and beta); returns the twin too."""
    from ..init import init_model

    twin = type(model)(model.cfg.replace(init=scheme), device="meta")
    rules = init_model(twin, scheme)
    parts: dict[str, list[float]] = {}
    out: dict[str, float | None] = {}
    for key, rule in rules.items():
        name = key.split("[", 1)[0]
        if rule.std is None:
            out.setdefault(name, None)
        else:
            parts.setdefault(name, []).append(rule.std)
    for name, stds in parts.items():
        out[name] = math.sqrt(sum(s * s for s in stds) / len(stds))
    return out, twin


def _branch_params(model: nn.Module) -> dict[str, tuple[float, int]]:
    """``{parameter name: (beta, N_sub)}`` for every parameter inside a residual branch of a stack."""
    from ..layers import Transformer

    names = {id(p): n for n, p in model.named_parameters()}
    out: dict[str, tuple[float, int]] = {}
    for stack in (m for m in model.modules() if isinstance(m, Transformer)):
        for res in stack.residuals():
            for p in res.branch.parameters():
                out[names[id(p)]] = (res.beta, stack.num_sublayers)
    return out


def dslm_lr_multipliers(model: nn.Module) -> dict[str, float]:
    """The DSLM rule's learning-rate multiplier of every parameter (module docstring); 1 where it does not apply."""
    dslm, twin = _tensor_stds(model, "dslm")
    ref, _ = _tensor_stds(model, "xavier")
    branch = _branch_params(twin)  # the twin: ``model`` may sit on the meta device with its scales unset
    out = {}
    for name, _ in model.named_parameters():
        s_d, s_x = dslm.get(name), ref.get(name)
        m = s_d / s_x if s_d is not None and s_x else 1.0
        if name in branch:
            beta, n_sub = branch[name]
            m *= (2.0 / math.sqrt(n_sub)) / beta
        out[name] = m
    return out


@dataclass(frozen=True)
class LrPlan:
    """Which rule was applied and the multiplier range it produced (written to the run record)."""

    rule: str
    min_multiplier: float
    max_multiplier: float
    groups: int

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "min_multiplier": self.min_multiplier, "max_multiplier": self.max_multiplier,
                "groups": self.groups}


def _strip_wrappers(name: str) -> str:
    # DDP prefixes 'module.', torch.compile '_orig_mod.'; the rule and no_weight_decay speak the bare names
    for prefix in ("module.", "_orig_mod."):
        name = name.replace(prefix, "")
    return name


def param_groups(model: nn.Module, bare: nn.Module, optim: OptimSection) -> tuple[list[dict[str, Any]], LrPlan]:
    """AdamW groups of ``model`` (possibly wrapped) by (weight decay?, lr multiplier).

    ``bare`` is the unwrapped zoo model: its ``no_weight_decay()`` names the tensors without decay (norms,
    biases, embeddings) and its config decides the rule (``optim.lr_rule``).
    """
    use_rule = optim.lr_rule == "dslm" or (optim.lr_rule == "auto" and getattr(bare.cfg, "init", None) == "dslm")
    mult = dslm_lr_multipliers(bare) if use_rule else {}
    no_wd = set(bare.no_weight_decay()) if hasattr(bare, "no_weight_decay") else set()
    groups: dict[tuple[bool, float], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        bare_name = _strip_wrappers(name)
        decay = bare_name not in no_wd and p.ndim >= 2
        m = float(f"{mult.get(bare_name, 1.0):.4g}")  # 4 significant digits: near-equal multipliers share a group
        g = groups.setdefault((decay, m), {"params": [], "weight_decay": optim.weight_decay if decay else 0.0,
                                           "lr": optim.lr * m, "lr_mult": m, "names": []})
        g["params"].append(p)
        g["names"].append(bare_name)
    ms = [k[1] for k in groups] or [1.0]
    plan = LrPlan("dslm" if use_rule else "none", min(ms), max(ms), len(groups))
    return list(groups.values()), plan


def build_optimizer(model: nn.Module, bare: nn.Module, optim: OptimSection, fused: bool | None = None) -> tuple[torch.optim.AdamW, LrPlan]:
    groups, plan = param_groups(model, bare, optim)
    for g in groups:
        g.pop("names")
    opt = torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps, weight_decay=optim.weight_decay,
                            foreach=None, fused=fused)
    return opt, plan


def lr_factor(step: int, total: int, schedule: ScheduleSection) -> float:
    """The schedule's factor for optimizer step ``step`` (0-based) of ``total``."""
    w = schedule.warmup_steps
    if w and step < w:
        return (step + 1) / w
    if schedule.decay == "constant":
        return 1.0
    progress = min(1.0, (step - w) / max(1, total - w - 1)) if total - w > 1 else 1.0
    lo = schedule.min_lr_ratio
    if schedule.decay == "linear":
        return lo + (1.0 - lo) * (1.0 - progress)
    return lo + (1.0 - lo) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: ScheduleSection, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, schedule))
