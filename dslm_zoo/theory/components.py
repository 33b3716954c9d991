"""Closed-form signal moments of transformer components (Kedia et al. 2024, arXiv:2403.09635, Sec. 3 / App. A).

Every function maps input moments (mean, variance, token correlation) and gradient moments to output moments.
Only the scalar closed forms the initialisation recipe needs live here for now; the full calculator builds on them.
"""
from __future__ import annotations

import math

__all__ = [
    "relu_corr_map",
    "gelu_moments",
    "gelu_cross_moment",
    "attention_forward_brackets",
]


def relu_corr_map(r: float) -> float:
    """E[relu(a) relu(b)] / E[relu(a)^2] for standard normals of correlation r: the FFN's correlation map f(r)."""
    r = min(max(r, -1.0), 1.0)
    return r + (math.sqrt(1.0 - r * r) - r * math.acos(r)) / math.pi


def gelu_moments(t: float) -> tuple[float, float]:
    """Mean and variance of gelu(z) = z Phi(z) for z ~ N(0, t)."""
    a = t / (1.0 + t)
    mean = t / math.sqrt(2.0 * math.pi * (1.0 + t))
    var = (t / (2.0 * math.pi)) * (math.pi - a - math.acos(a) + 2.0 * a * math.sqrt((1.0 - a) / (1.0 + a)))
    return mean, var


def gelu_cross_moment(t: float, r: float) -> float:
    """E[gelu(z1) gelu(z2)] for z1, z2 ~ N(0, t) with correlation r (covariance plus squared mean)."""
    a = t / (1.0 + t)
    cov_plus_mean2 = (t / 4.0) * (
        r
        + (2.0 / math.pi) * r * math.asin(r * a)
        + (2.0 / math.pi) * t * (t * (1.0 - r * r) + 1.0 + r * r) / ((1.0 + t) * math.sqrt((1.0 + t) ** 2 - r * r * t * t))
    )
    return cov_plus_mean2


def attention_forward_brackets(
    r: float, seq_len: int | None, logit_var: float, head_dim: int, attn_drop: float = 0.0
) -> tuple[float, float]:
    """Variance and covariance brackets of single-head softmax attention at unit input variance.

    ``out var = d sv2 * A`` and ``out cov = d sv2 * C`` (value weights of variance sv2, input variance 1, token
    correlation r, logit variance ``logit_var``). ``seq_len=None`` is the paper's large-L limit A = r, C = r, in
    which attention averages the tokens and its output is fully correlated.
    """
    if seq_len is None:
        return r, r
    L, s = float(seq_len), logit_var
    q = 1.0 - r
    A = r + (q * q * (L - 1.0) * s / head_dim + math.exp(q * s) / (1.0 - attn_drop) * (q + 4.0 * q * q * s / head_dim)) / L
    C = r + (q + 2.0 * q * q * s / head_dim) / L
    return A, C
