"""The DSLM initialisation recipe and the other schemes' depth-dependent constants, each from one formula.

Kedia et al. 2024 (arXiv:2403.09635), Sec. 4 ("DeepScaleLM"): residual scaling x <- lambda x + beta F(x) with
lambda^2 + beta^2 = 1 and beta^2 = k / N_sub; W_V, W_O variance from the forward correlation recursion; FFN and
embedding variances that make every block's forward gain 1 after dropout. DeepNet (Wang et al. 2022,
arXiv:2203.00555) constants live here too so that every depth formula sits in one file and is tested against
the theory.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from .components import gelu_cross_moment, gelu_moments, local_rnn_moments, relu_corr_map
from .signal import attention_moments, attention_variance_and_cov

__all__ = [
    "dslm_residual_scales",
    "deepnorm_constants",
    "dslm_embedding_var",
    "dslm_ffn_var",
    "ffn_corr_map",
    "dslm_local_rnn_vars",
    "local_rnn_corr_map",
    "attention_variance_bracket",
    "attention_gain_and_corr",
    "SublayerSpec",
    "dslm_attention_schedule",
]

Act = Literal["relu", "gelu"]


def dslm_residual_scales(n_sub: int, k: float = 2.0) -> tuple[float, float]:
    """(lambda, beta) with beta^2 = k / N_sub and lambda^2 + beta^2 = 1 (Sec. 4, step 1)."""
    if n_sub <= 0:
        raise ValueError(f"n_sub must be positive, got {n_sub}")
    if not 0.0 < k <= n_sub:
        raise ValueError(f"dslm_k must lie in (0, N_sub={n_sub}], got {k}")
    beta2 = k / n_sub
    return math.sqrt(1.0 - beta2), math.sqrt(beta2)


def deepnorm_constants(
    num_encoder_layers: int, num_decoder_layers: int, part: Literal["encoder", "decoder"]
) -> tuple[float, float]:
    """DeepNet's (alpha, beta) for one stack (Wang et al. 2022, Table 1 / Eq. 3).

    Encoder-only (M = 0): alpha = (2N)^{1/4}, beta = (8N)^{-1/4}; decoder-only (N = 0): alpha = (2M)^{1/4},
    beta = (8M)^{-1/4}; encoder-decoder: encoder alpha = 0.81 (N^4 M)^{1/16}, beta = 0.87 (N^4 M)^{-1/16},
    decoder alpha = (3M)^{1/4}, beta = (12M)^{-1/4}.
    """
    N, M = num_encoder_layers, num_decoder_layers
    if part == "encoder":
        if N <= 0:
            raise ValueError("an encoder needs at least one layer")
        if M == 0:
            return (2 * N) ** 0.25, (8 * N) ** -0.25
        return 0.81 * (N**4 * M) ** (1 / 16), 0.87 * (N**4 * M) ** (-1 / 16)
    if M <= 0:
        raise ValueError("a decoder needs at least one layer")
    if N == 0:
        return (2 * M) ** 0.25, (8 * M) ** -0.25
    return (3 * M) ** 0.25, (12 * M) ** -0.25


def dslm_embedding_var(num_tables: int, dropout: float) -> float:
    """Per-table variance (1-p)/n_t, so the summed embedding has variance 1 after dropout (Sec. 4, step 2)."""
    return (1.0 - dropout) / num_tables


@lru_cache(maxsize=None)
def _gelu_unit_t(ratio: float, dropout: float) -> float:
    """t = d sigma^2 solving ratio * t * E[gelu(z)^2] = 1 - p for z ~ N(0, t) (bisection; E[.] is increasing in t)."""
    target = 1.0 - dropout

    def g(t: float) -> float:
        m, v = gelu_moments(t)
        return ratio * t * (v + m * m) - target

    lo, hi = 1e-6, 1e3
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if g(mid) < 0 else (lo, mid)
    return math.sqrt(lo * hi)


def dslm_ffn_var(dim: int, hidden_dim: int, dropout: float, act: Act = "relu") -> float:
    """Common variance of W1 and W2 giving the FFN a forward gain of 1 after dropout (Sec. 4, step 5).

    Condition (derived): d_ff sigma^2 E[phi(z)^2] = 1 - p with z ~ N(0, d sigma^2). For ReLU E[phi^2] = d sigma^2/2,
    so sigma^2 = sqrt(2 (1-p) / (d d_ff)), which is the paper's sqrt((1-p)/2)/d at d_ff = 4d. For GeLU the
    second moment comes from the GeLU moments and the equation is solved numerically.
    """
    ratio = hidden_dim / dim
    if act == "relu":
        return math.sqrt(2.0 * (1.0 - dropout) / ratio) / dim
    if act == "gelu":
        return _gelu_unit_t(ratio, dropout) / dim
    raise ValueError(f"unknown activation {act!r}; expected 'relu' or 'gelu'")


def dslm_local_rnn_vars(dim: int, window: int, dropout: float) -> tuple[float, float, float]:
    """(W_ih, W_hh, W_out) variances of a LocalRNN branch under DSLM (derived from
    :func:`dslm_zoo.theory.components.local_rnn`): W_ih 1/d gives the first step unit pre-activation variance;
    W_hh 2/d (He) makes the ReLU recurrence critical, t_k = 1 + t_{k-1} = k at unit input, so every token of the
    window weighs the same, forward and backward; W_out 2 (1-p) / (d t_M) = 2 (1-p) / (d M) gives the branch a
    forward gain of 1 after dropout, as for the FFN."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    return 1.0 / dim, 2.0 / dim, 2.0 * (1.0 - dropout) / (dim * window)


def local_rnn_corr_map(r: float, window: int) -> float:
    """Output correlation of a LocalRNN branch at the DSLM variances for input correlation r (unit input)."""
    m_o, c_o, _, _ = local_rnn_moments(1.0, r, window, 1.0, 2.0, 1.0)
    return c_o / m_o


def ffn_corr_map(r: float, act: Act, dim: int, hidden_dim: int, dropout: float) -> float:
    """Correlation of the FFN output (before dropout) for input correlation r, at the DSLM variance."""
    if act == "relu":
        return relu_corr_map(r)
    t = dim * dslm_ffn_var(dim, hidden_dim, dropout, "gelu")
    m, v = gelu_moments(t)
    return gelu_cross_moment(t, r) / (v + m * m)


def attention_variance_bracket(r: float, seq_len: int, dim: int, logit_var: float = 1.0, attn_drop: float = 0.0) -> float:
    """A = out var / (d sv2 sx2) of single-head attention at finite L (the paper's bracket, Sec. 2 of dslm.md).

    A = r + (1-r)^2 (L-1) s/(d L) + E[sum P^2] ((1-r) (1 + 4 (1-r) s / d) + r p_a) / (1 - p_a), with d the
    *input width* (checked by Monte Carlo: with d = d_k the bracket is 2x too large at r = 0) and the paper's
    e^{(1-r)s}/L replaced by the exact E[sum P^2], which stays accurate at short lengths where e^{(1-r)s}/L is
    off by up to 2x. One implementation with ``predict``: :func:`dslm_zoo.theory.signal.attention_moments`.
    """
    return attention_moments(r, seq_len, dim, logit_var, attn_drop)[0]


def attention_gain_and_corr(
    r: float, seq_len: int | None, dim: int, attn_drop: float = 0.0, causal: bool = False
) -> tuple[float, float]:
    """(A, correlation of the output) of attention at unit input variance and unit logit variance.

    ``seq_len=None`` is the paper's large-L limit (A = r, output fully correlated). Otherwise (derived, see
    :func:`dslm_zoo.theory.signal.attention_moments`): bidirectional: A from ``attention_variance_bracket``,
    covariance C = r + ((1-r) + 2 (1-r)^2 / d) / L. Causal: position i attends to i tokens, so A is the mean
    over i of A(r, i); two positions i < j share the first i values with weights ~1/i and ~1/j, so their
    covariance is r + (1-r)/j (plus the 2 (1-r)^2 / d term) and the mean over pairs has
    2 (L - H_L) / (L (L-1)) in place of 1/L, H_L the harmonic number. Against Monte Carlo at L = 128, d = 64
    (tests/test_init.py): A within 1% at r = 0.5 and within 6% at r = 0, the output correlation within 7%.
    """
    if seq_len is None:
        return r, 1.0
    if seq_len < 2:
        return 1.0, 1.0
    A, C = attention_variance_and_cov(r, seq_len, dim, 1.0, attn_drop, causal)
    return A, min(C / A, 1.0)


@dataclass(frozen=True)
class SublayerSpec:
    """One residual sub-layer of a stack, in forward order, as the recursion sees it."""

    kind: Literal["attn", "cross_attn", "ffn", "rnn"]
    dim: int
    causal: bool = False
    seq_len: int | None = None  # for cross-attention: the memory length
    memory_corr: float | None = None  # cross-attention only
    act: Act = "relu"
    hidden_dim: int = 0
    window: int = 0  # LocalRNN only


def dslm_attention_schedule(
    sublayers: list[SublayerSpec],
    r0: float,
    n_sub: int,
    k: float,
    dropout: float,
    attn_drop: float = 0.0,
) -> tuple[list[float], list[float]]:
    """Run the forward correlation recursion (Sec. 4, step 4) over a stack.

    Returns ``(gains, corrs)``: for every sub-layer the product d^2 sv2 so2 that makes an attention sub-layer's
    forward gain exactly 1 (``nan`` for FFN sub-layers) and the residual-stream correlation entering it, plus the
    stream correlation after the last sub-layer as ``corrs[-1]`` (so ``len(corrs) == len(sublayers) + 1``).

    Paper rule (``seq_len=None``): d^2 sv2 so2 = (1-p)/r and the attention output is fully correlated. Finite-L
    rule (derived, dslm.md Sec. 4 caution): d^2 sv2 so2 = (1-p)/A(r, L) with A the single-head variance bracket, and
    the attention output correlation C/A; it stays finite as r -> 0, where the paper rule diverges.
    """
    lam2 = 1.0 - k / n_sub
    beta2 = k / n_sub
    r = r0
    gains: list[float] = []
    corrs: list[float] = [r]
    for s in sublayers:
        if s.kind == "ffn":
            gains.append(float("nan"))
            r_branch = (1.0 - dropout) * ffn_corr_map(r, s.act, s.dim, s.hidden_dim, dropout)
        elif s.kind == "rnn":
            gains.append(float("nan"))
            r_branch = (1.0 - dropout) * local_rnn_corr_map(r, s.window)
        else:
            r_in = s.memory_corr if s.kind == "cross_attn" else r
            if s.seq_len is None and r_in <= 0.0:
                raise ValueError("the paper's large-L rule needs a positive input correlation; pass a seq_len")
            A, corr_out = attention_gain_and_corr(r_in, s.seq_len, s.dim, attn_drop, s.causal and s.kind == "attn")
            gains.append((1.0 - dropout) / A)
            r_branch = (1.0 - dropout) * corr_out
        r = lam2 * r + beta2 * r_branch
        corrs.append(r)
    return gains, corrs
