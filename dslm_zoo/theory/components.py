"""Closed-form signal moments of transformer components.

Kedia et al. 2024, "Transformers Get Stable: An End-to-End Signal Propagation Theory for Language Models"
(ICML 2024, arXiv:2403.09635), Sec. 3 and App. A; distilled in ``shared/spec/dslm.md`` sections 1-3.
The formulas not in the paper (the attention gradient through Q, K and the softmax, causal and cross
attention, embeddings, the finite-d LayerNorm terms) are derived in ``docs/theory.md`` and in the
docstrings below; ``dslm_zoo.theory.montecarlo`` checks each of them against simulation.

Conventions
-----------
Every component is a function ``f(m: Moments, **params) -> Moments``:

* the *input* ``m`` carries the forward moments of the component's input ``x`` (``mean``, ``var``, token
  correlation ``corr``) and the moments of the gradient arriving at the component's *output*
  (``grad_var``, ``grad_corr``; gradients have mean 0);
* the *result* carries the forward moments of the output ``y`` and the moments of the gradient at the
  component's *input* ``dL/dx``.

Moments are per feature, averaged over features and tokens; ``corr`` is the token-token correlation
``Cov(x_i, x_j) / Var(x)`` for two different tokens ``i != j`` (features are i.i.d.). Weights are i.i.d.
``N(0, sigma2)`` with ``sigma2`` the per-element variance (not the fan-in-scaled "raw" sigma).
Components compose with :func:`chain` (forward pass, then backward pass) and residual sub-layers with
:func:`residual`, :func:`pre_ln` and :func:`post_ln`; :func:`propagate` runs a whole stack of layers and
returns the moments at every depth. Everything is pure-Python float math: a 1000-layer recursion takes
a few tens of milliseconds.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

__all__ = [
    # existing helpers used by the recipe
    "relu_corr_map",
    "gelu_moments",
    "gelu_cross_moment",
    "attention_forward_brackets",
    # calculator
    "Moments",
    "Component",
    "chain",
    "linear",
    "relu",
    "gelu",
    "layernorm",
    "layernorm_feature_corr",
    "dropout",
    "softmax",
    "attention",
    "multi_head_attention",
    "cross_attention",
    "cross_attention_memory_grad",
    "ffn",
    "local_rnn",
    "local_rnn_moments",
    "embedding",
    "collision_probability",
    "combine_independent",
    "residual",
    "pre_ln",
    "post_ln",
    "propagate",
    "causal_structure",
    "softmax_power_sums",
]

_SQRT_2PI = math.sqrt(2.0 * math.pi)


# ----------------------------------------------------------------------------------------------------------
# The moment record
# ----------------------------------------------------------------------------------------------------------
def _ratio(num: float, den: float) -> float:
    return num / den if den != 0.0 else 0.0


@dataclass(frozen=True)
class Moments:
    """Per-feature moments of a signal and of the gradient that flows with it.

    ``mean``, ``var`` and ``corr`` describe the forward signal (``corr`` = token-token correlation
    ``cov / var``); ``grad_var`` and ``grad_corr`` the backward gradient (mean 0). See the module docstring
    for which side of a component each field refers to. ``cov`` and ``grad_cov`` give the covariances.
    """

    mean: float = 0.0
    var: float = 1.0
    corr: float = 0.0
    grad_var: float = 1.0
    grad_corr: float = 0.0

    @property
    def cov(self) -> float:
        """Token-token covariance ``corr * var``."""
        return self.corr * self.var

    @property
    def grad_cov(self) -> float:
        """Token-token covariance of the gradient ``grad_corr * grad_var``."""
        return self.grad_corr * self.grad_var

    @property
    def second_moment(self) -> float:
        """``E[x^2] = var + mean^2``."""
        return self.var + self.mean * self.mean

    @property
    def raw_corr(self) -> float:
        """Correlation of the raw (uncentred) signal ``E[x_i x_j] / E[x^2]``: the mean acts as a shared part."""
        return _ratio(self.cov + self.mean * self.mean, self.second_moment)

    @classmethod
    def from_cov(
        cls, mean: float, var: float, cov: float, grad_var: float = 1.0, grad_cov: float = 0.0
    ) -> "Moments":
        """Build from covariances instead of correlations (a zero variance gives correlation 0)."""
        return cls(mean, var, _ratio(cov, var), grad_var, _ratio(grad_cov, grad_var))

    def replace(self, **changes: float) -> "Moments":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def with_grad(self, grad_var: float, grad_corr: float) -> "Moments":
        """A copy with the gradient fields replaced."""
        return Moments(self.mean, self.var, self.corr, grad_var, grad_corr)


Component = Callable[[Moments], Moments]


def chain(m: Moments, *stages: Component) -> Moments:
    """Compose components ``x -> stages[0] -> ... -> stages[-1] -> y``.

    The forward pass runs the stages in order; the backward pass then runs them in reverse, each one at
    its own forward input, starting from the gradient moments in ``m`` (the gradient at the chain's
    output). Returns the output's forward moments and the gradient at the chain's input.
    """
    inputs = []
    x = m
    for f in stages:
        inputs.append(x)
        x = f(x)
    g_var, g_corr = m.grad_var, m.grad_corr
    for f, xin in zip(reversed(stages), reversed(inputs)):
        back = f(xin.with_grad(g_var, g_corr))
        g_var, g_corr = back.grad_var, back.grad_corr
    return Moments(x.mean, x.var, x.corr, g_var, g_corr)


# ----------------------------------------------------------------------------------------------------------
# Helpers kept for the recipe (signatures fixed)
# ----------------------------------------------------------------------------------------------------------
def relu_corr_map(r: float) -> float:
    """E[relu(a) relu(b)] / E[relu(a)^2] for standard normals of correlation r: the FFN's correlation map f(r).

    ``f(r) = r + (sqrt(1 - r^2) - r arccos r) / pi``.
    """
    r = min(max(r, -1.0), 1.0)
    return r + (math.sqrt(1.0 - r * r) - r * math.acos(r)) / math.pi


def gelu_moments(t: float) -> tuple[float, float]:
    """Mean and variance of gelu(z) = z Phi(z) for z ~ N(0, t).

    With ``a = t / (1 + t)``: mean ``t / sqrt(2 pi (1 + t))``,
    variance ``(t / 2 pi) (pi - a - arccos a + 2 a sqrt((1 - a) / (1 + a)))``.
    """
    a = t / (1.0 + t)
    mean = t / math.sqrt(2.0 * math.pi * (1.0 + t))
    var = (t / (2.0 * math.pi)) * (math.pi - a - math.acos(a) + 2.0 * a * math.sqrt((1.0 - a) / (1.0 + a)))
    return mean, var


def gelu_cross_moment(t: float, r: float) -> float:
    """E[gelu(z1) gelu(z2)] for z1, z2 ~ N(0, t) with correlation r (covariance plus squared mean).

    ``(t/4) [ r + (2/pi) r arcsin(r a) + (2/pi) t (t (1 - r^2) + 1 + r^2) / ((1+t) sqrt((1+t)^2 - r^2 t^2)) ]``.
    """
    a = t / (1.0 + t)
    cov_plus_mean2 = (t / 4.0) * (
        r
        + (2.0 / math.pi) * r * math.asin(r * a)
        + (2.0 / math.pi) * t * (t * (1.0 - r * r) + 1.0 + r * r) / ((1.0 + t) * math.sqrt((1.0 + t) ** 2 - r * r * t * t))
    )
    return cov_plus_mean2


def attention_forward_brackets(
    r: float,
    seq_len: int | None,
    logit_var: float,
    head_dim: int,
    attn_drop: float = 0.0,
    *,
    model_dim: int | None = None,
) -> tuple[float, float]:
    """Variance and covariance brackets of single-head softmax attention at unit input variance.

    ``out var = d sv2 * A`` and ``out cov = d sv2 * C`` (value weights of variance sv2, input variance 1, token
    correlation r, logit variance ``logit_var`` = ss2). ``seq_len=None`` is the paper's large-L limit A = r, C = r,
    in which attention averages the tokens and its output is fully correlated. Finite L (q = 1 - r, p = attn_drop):

        A = r + [ e^{q ss2} / (1-p) (q + r p + 4 q^2 ss2/d) + (L-1) q^2 ss2/d ] / L
        C = r + [ q + 2 q^2 ss2/d ] / L

    The ``ss2/d`` terms divide by the *model width* d (the width of the block input that the Q, K and V
    projections read), not by the head width: Monte Carlo (``montecarlo.check_width_divisor``) puts the
    model-width version within a few percent and the head-width one off by 5-9x at ss2 = 1. Pass
    ``model_dim=d``; without it ``head_dim`` is used as before, which overestimates those terms by the
    number of heads. The ``r p`` term is the dropout of the shared (correlated) part of the values, which
    the paper's formula omits (derived; confirmed by Monte Carlo).
    """
    if seq_len is None:
        return r, r
    L, s = float(seq_len), logit_var
    q = 1.0 - r
    width = float(model_dim if model_dim is not None else head_dim)
    A = r + (q * q * (L - 1.0) * s / width + math.exp(q * s) / (1.0 - attn_drop) * (q + r * attn_drop + 4.0 * q * q * s / width)) / L
    C = r + (q + 2.0 * q * q * s / width) / L
    return A, C


# ----------------------------------------------------------------------------------------------------------
# Gaussian integrals for non-zero means (Gauss-Hermite, probabilists' weights)
# ----------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _gauss_hermite(n: int = 64) -> tuple[tuple[float, ...], tuple[float, ...]]:
    import numpy as np

    x, w = np.polynomial.hermite_e.hermegauss(n)
    w = w / math.sqrt(2.0 * math.pi)
    return tuple(float(v) for v in x), tuple(float(v) for v in w)


def _phi(x: float) -> float:
    return math.exp(-0.5 * x * x) / _SQRT_2PI


def _Phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _pair_expectation(h: Callable[[float], float], r: float) -> float:
    """E[h(z) h(+-z)] over z ~ N(0,1) with the sign of r: the cross moment for correlation r (shared part)."""
    xs, ws = _gauss_hermite()
    if r >= 0.0:
        return sum(w * h(x) ** 2 for x, w in zip(xs, ws))
    return sum(w * h(x) * h(-x) for x, w in zip(xs, ws))


def _relu_cond_mean(a: float, b: float) -> float:
    """E[relu(a + b z)], z ~ N(0,1)."""
    if b <= 0.0:
        return max(a, 0.0)
    return a * _Phi(a / b) + b * _phi(a / b)


def _gelu_cond_mean(a: float, b2: float) -> float:
    """E[(a + b z) Phi(a + b z)], z ~ N(0,1), b2 = b^2."""
    c = math.sqrt(1.0 + b2)
    return a * _Phi(a / c) + (b2 / c) * _phi(a / c)


def _gelu_grad_cond_mean(a: float, b2: float) -> float:
    """E[gelu'(a + b z)] with gelu'(x) = Phi(x) + x phi(x)."""
    c = math.sqrt(1.0 + b2)
    return _Phi(a / c) + a * _phi(a / c) / (1.0 + b2) ** 1.5


# ----------------------------------------------------------------------------------------------------------
# Linear, activations, LayerNorm, dropout, softmax
# ----------------------------------------------------------------------------------------------------------
def linear(m: Moments, d_in: int, d_out: int, sigma2: float) -> Moments:
    """Bias-free linear map ``y = x W``, ``W`` of shape ``d_in x d_out`` with i.i.d. ``N(0, sigma2)`` entries.

    Forward: ``mean 0; var = d_in sigma2 (s2 + mu^2); cov = d_in sigma2 (mu^2 + r s2)`` (the input mean is
    shared by all tokens, so it shows up as covariance). Backward: ``grad var = d_out sigma2 g2``,
    ``grad cov = d_out sigma2 g2 rho``.
    """
    var = d_in * sigma2 * m.second_moment
    cov = d_in * sigma2 * (m.mean * m.mean + m.cov)
    return Moments(0.0, var, _ratio(cov, var), d_out * sigma2 * m.grad_var, m.grad_corr)


def relu(m: Moments) -> Moments:
    """ReLU. Input mean 0 (closed forms; a non-zero mean is integrated numerically):

    out mean ``s / sqrt(2 pi)``; out var ``s2 (pi - 1) / (2 pi)``;
    out cov ``s2 (pi r + sqrt(1 - r^2) - r arccos r - 1) / (2 pi)``;
    grad var ``g2 / 2``; grad cov ``g2 rho (1/4 + arcsin(r) / (2 pi))``.
    """
    s2, r = m.var, min(max(m.corr, -1.0), 1.0)
    if s2 <= 0.0:
        y = max(m.mean, 0.0)
        on = 1.0 if m.mean > 0 else 0.0
        return Moments(y, 0.0, 0.0, on * m.grad_var, m.grad_corr)
    if m.mean == 0.0:
        mean = math.sqrt(s2) / _SQRT_2PI
        var = s2 * (math.pi - 1.0) / (2.0 * math.pi)
        cov = s2 * (math.pi * r + math.sqrt(1.0 - r * r) - r * math.acos(r) - 1.0) / (2.0 * math.pi)
        g_var = 0.5 * m.grad_var
        g_cov = m.grad_cov * (0.25 + math.asin(r) / (2.0 * math.pi))
        return Moments.from_cov(mean, var, cov, g_var, g_cov)
    mu, s = m.mean, math.sqrt(s2)
    mean = _relu_cond_mean(mu, s)
    second = (mu * mu + s2) * _Phi(mu / s) + mu * s * _phi(mu / s)
    sr, sq = s * math.sqrt(abs(r)), s * math.sqrt(1.0 - abs(r))
    cross = _pair_expectation(lambda z: _relu_cond_mean(mu + sr * z, sq), r)
    on = _Phi(mu / s)
    on2 = _pair_expectation(lambda z: _Phi((mu + sr * z) / sq) if sq > 0 else float(mu + sr * z > 0), r)
    return Moments.from_cov(mean, second - mean * mean, cross - mean * mean, on * m.grad_var, on2 * m.grad_cov)


def gelu(m: Moments) -> Moments:
    """GeLU ``x Phi(x)`` (exact erf form). Input mean 0 (closed forms), with ``t = s2``, ``a = t / (1 + t)``:

    out mean ``t / sqrt(2 pi (1+t))``; out var ``(t / 2 pi)(pi - a - arccos a + 2 a sqrt((1-a)/(1+a)))``;
    out cov ``(t/4)[r + (2/pi) r arcsin(r a) + (2/pi) t (t(1-r^2) + 1 + r^2)/((1+t) sqrt((1+t)^2 - r^2 t^2))] - mean^2``;
    grad var ``g2 [1/2 + (1/2pi)(-arccos a + a (5t+3)/(1+2t)^{3/2})]``;
    grad cov ``g2 rho [1/2 + (1/2pi)(-arccos(r a) + r a ((t+1)(2t+3) - 2 r^2 t^2)/((t+1)^2 - r^2 t^2)^{3/2})]``.
    A non-zero mean is integrated numerically (Gauss-Hermite).
    """
    t, r = m.var, min(max(m.corr, -1.0), 1.0)
    if t <= 0.0:
        x = m.mean
        return Moments(x * _Phi(x), 0.0, 0.0, (_Phi(x) + x * _phi(x)) ** 2 * m.grad_var, m.grad_corr)
    if m.mean == 0.0:
        mean, var = gelu_moments(t)
        cov = gelu_cross_moment(t, r) - mean * mean
        a = t / (1.0 + t)
        g_var = m.grad_var * (0.5 + (-math.acos(a) + a * (5.0 * t + 3.0) / (1.0 + 2.0 * t) ** 1.5) / (2.0 * math.pi))
        ra = r * a
        g_cross = 0.5 + (
            -math.acos(ra) + ra * ((t + 1.0) * (2.0 * t + 3.0) - 2.0 * r * r * t * t) / ((t + 1.0) ** 2 - r * r * t * t) ** 1.5
        ) / (2.0 * math.pi)
        return Moments.from_cov(mean, var, cov, g_var, m.grad_cov * g_cross)
    mu, s = m.mean, math.sqrt(t)
    xs, ws = _gauss_hermite()
    mean = _gelu_cond_mean(mu, t)
    second = sum(w * ((mu + s * x) * _Phi(mu + s * x)) ** 2 for x, w in zip(xs, ws))
    dsq = sum(w * (_Phi(mu + s * x) + (mu + s * x) * _phi(mu + s * x)) ** 2 for x, w in zip(xs, ws))
    sr, b2 = s * math.sqrt(abs(r)), t * (1.0 - abs(r))
    cross = _pair_expectation(lambda z: _gelu_cond_mean(mu + sr * z, b2), r)
    dcross = _pair_expectation(lambda z: _gelu_grad_cond_mean(mu + sr * z, b2), r)
    return Moments.from_cov(mean, second - mean * mean, cross - mean * mean, dsq * m.grad_var, dcross * m.grad_cov)


def _cos_angle_mean(r: float, n: int) -> float:
    """E[cos angle] between two n-dim Gaussian vectors with i.i.d. coordinates of correlation r.

    ``r (2/n) (Gamma((n+1)/2) / Gamma(n/2))^2 2F1(1/2, 1/2; n/2 + 1; r^2)`` ~ ``r (1 - (1 - r^2) / (2n))``.
    """
    if n < 1:
        return r
    r2 = r * r
    pref = (2.0 / n) * math.exp(2.0 * (math.lgamma((n + 1) / 2.0) - math.lgamma(n / 2.0)))
    c = n / 2.0 + 1.0
    term, total, k = 1.0, 1.0, 0
    while True:  # 2F1(1/2, 1/2; c; r^2): terms shrink at least like r^2 k / (k + c)
        term *= (0.5 + k) ** 2 / ((c + k) * (k + 1.0)) * r2
        total += term
        k += 1
        if term < 1e-15 * total or k > 10000:
            break
    return r * pref * total


def layernorm(m: Moments, d: int, eps: float = 0.0, finite_d: bool = True) -> Moments:
    """LayerNorm over ``d`` features (gain 1, bias 0); the input mean cancels.

    Paper (``finite_d=False``): out mean 0, out var 1, out token corr ``r (1 - 1/d)``, grad var ``g2 / s2``,
    grad cov ``g2 rho / s2``. The backward division by the input variance is what makes Pre-LN gradients grow.

    Finite-d forms (default, derived): the output of token i is ``sqrt(d) * u_i`` with ``u_i`` the unit vector
    of the centred input, so the token correlation is the mean cosine between two (d-1)-dim Gaussian vectors
    of coordinate correlation r: ``r (2/n)(Gamma((n+1)/2)/Gamma(n/2))^2 2F1(1/2,1/2;n/2+1;r^2)``, ``n = d-1``
    (``~ r (1 - (1-r^2)/(2(d-1)))``). The input gradient is ``P g / sigma`` with P projecting out the
    all-ones and the output directions (trace d - 2) and ``sigma^2 = s2 chi2_{d-1} / d``, so
    ``grad var = g2 (d-2) / ((d-3) s2)``; for two tokens ``tr(P_i P_j) = d - 3 + cos^2`` and
    ``E[1/(sigma_i sigma_j)] ~ d / (s2 (d-1)) (1 + (3 + r^2) / (2 (d-1)))``, giving
    ``grad cov = g2 rho / s2 * (d - 3 + r^2)/(d - 1) * (1 + (3 + r^2)/(2(d-1)))``.
    ``eps`` adds to the variance inside the square root (torch's default is 1e-5).
    The covariance between two features of one token is ``-1/(d-1)`` (:func:`layernorm_feature_corr`).
    """
    s2, r = m.var, min(max(m.corr, -1.0), 1.0)
    if not finite_d:
        return Moments(0.0, 1.0, r * (1.0 - 1.0 / d), _ratio(m.grad_var, s2 + eps), m.grad_corr)
    v = s2 * (d - 1.0) / d
    out_var = _ratio(v, v + eps) if eps > 0 else 1.0
    corr = _cos_angle_mean(r, d - 1)
    inv2 = 1.0 / (s2 * (d - 3.0) / d + eps) if d > 3 else 1.0 / (s2 + eps)
    g_var = m.grad_var * (d - 2.0) / d * inv2
    n = d - 1.0
    inv11 = (d / (s2 * n + d * eps)) * (1.0 + (3.0 + r * r) / (2.0 * n))
    g_cov = m.grad_cov * (d - 3.0 + r * r) / d * inv11
    return Moments(0.0, out_var, corr, g_var, _ratio(g_cov, g_var))


def layernorm_feature_corr(d: int) -> float:
    """Correlation between two features of one token after LayerNorm: exactly ``-1/(d-1)`` (they sum to 0)."""
    return -1.0 / (d - 1.0)


def dropout(m: Moments, p: float) -> Moments:
    """Inverted dropout (scale ``1/(1-p)``).

    out mean ``mu``; out var ``(s2 + p mu^2)/(1-p)``; out cov unchanged (``r s2``), so the correlation
    becomes ``r (1-p)`` at mean 0; grad var ``g2/(1-p)``; grad cov unchanged (``rho -> rho (1-p)``).
    """
    if p <= 0.0:
        return m
    var = (m.var + p * m.mean * m.mean) / (1.0 - p)
    g_var = m.grad_var / (1.0 - p)
    return Moments.from_cov(m.mean, var, m.cov, g_var, m.grad_cov)


def softmax(m: Moments, seq_len: int, variant: str = "full") -> Moments:
    """Softmax over ``L = seq_len`` logits of variance s2 and correlation r (``m`` describes the logits).

    With ``s = (1 - r) s2`` (the common part of the logits cancels):

    * ``variant="approx"`` (paper): out var ``(e^s - 1)/L^2``; grad var ``g2 (1-rho) e^s / L^2``;
    * ``variant="full"`` (paper): out var ``(E - 1) E^2 / ((L-1) e^s + 1)^2`` with ``E = e^{s L/(L-1)}``;
      grad var ``g2 (1-rho) (out var + 1/L^2)``;
    * ``variant="improved"`` (derived): with ``w_k = e^{y_k}``, ``S = sum_k w_k = L E[w] (1 + Delta)`` and
      ``E[w_j^2 / S^2]`` expanded to first order in 1/L,
      ``E[P^2] = (e^s / L^2) (1 + (3 (e^s - 1) - 2 (e^{2s} - 1)) / L)``, out var ``E[P^2] - 1/L^2``
      (exact to O(s): ``s (1 - 1/L) / L^2``; the paper's forms are off by 1/L and 2/L there);
      grad var ``g2 (1-rho) (E[P^2] - (2 e^{3s} - e^{2s}) / L^3)`` from
      ``E[P_j^2 (g_j - sum_k P_k g_k)^2] = g2 (1-rho) (E[P^2] - 2 E[P^3] + E[P_j^2 sum_k P_k^2])``.

    out mean ``1/L``. The paper states the gradient for i.i.d. upstream gradients; a gradient component
    shared by all L positions is annihilated by the softmax Jacobian (``dx_j = P_j (g_j - sum_k P_k g_k)``),
    hence ``1 - rho``. Outputs and input gradients both sum to zero over the L positions, so their
    correlations across positions are ``-1/(L-1)``. The input mean is irrelevant (shift invariance).
    """
    L = float(seq_len)
    s = (1.0 - m.corr) * m.var
    if variant == "approx":
        var = (math.exp(s) - 1.0) / (L * L)
        p2 = math.exp(s) / (L * L)
    elif variant == "full":
        big = math.exp(s * L / (L - 1.0))
        var = (big - 1.0) * big * big / ((L - 1.0) * math.exp(s) + 1.0) ** 2
        p2 = var + 1.0 / (L * L)
    elif variant == "improved":
        e1 = math.exp(s)
        p2_out = e1 / (L * L) * (1.0 + (3.0 * (e1 - 1.0) - 2.0 * (e1 * e1 - 1.0)) / L)
        var = p2_out - 1.0 / (L * L)
        p2 = p2_out - (2.0 * e1 ** 3 - e1 * e1) / L ** 3
    else:
        raise ValueError(f"variant must be 'approx', 'full' or 'improved', got {variant!r}")
    g_var = m.grad_var * (1.0 - m.grad_corr) * p2
    neg = -1.0 / (L - 1.0)
    return Moments(1.0 / L, var, neg, g_var, neg)


# ----------------------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Structure:
    """Averages over the attention pattern that the finite-L formulas need.

    n_i keys per query. ``h1 = avg_i 1/n_i``; ``a1 = avg over ordered query pairs of 1/max(n_i, n_i')``;
    for keys j (S_j = sum over the queries that see j of 1/n_i): ``c2 = avg_j S_j^2``,
    ``b2 = avg over key pairs of sum_{i sees both} 1/n_i^2``, ``c11 = avg over key pairs of S_j S_j'``.
    """

    h1: float
    a1: float
    c2: float
    b2: float
    c11: float


@functools.lru_cache(maxsize=256)
def causal_structure(seq_len: int, causal: bool = True) -> _Structure:
    """Structure constants of full (``causal=False``: every query sees L keys) or causal attention.

    Causal (query i sees n_i = i + 1 keys, H_L the harmonic number):
    ``h1 = H_L / L``, ``a1 = 2 (L - H_L) / (L (L-1))``, ``c2 = (1/L) sum_j (H_L - H_j)^2`` (-> 2 for large L),
    ``b2 = (L - H_L) / (L (L-1))``, ``c11 = (L - c2) / (L - 1)``. Full: ``h1 = a1 = b2 = 1/L``, ``c2 = c11 = 1``.
    """
    L = int(seq_len)
    if not causal:
        return _Structure(1.0 / L, 1.0 / L, 1.0, 1.0 / L, 1.0)
    if L == 1:
        return _Structure(1.0, 1.0, 1.0, 1.0, 1.0)
    harm = [0.0] * (L + 1)
    for n in range(1, L + 1):
        harm[n] = harm[n - 1] + 1.0 / n
    HL = harm[L]
    c2 = sum((HL - harm[j]) ** 2 for j in range(L)) / L
    return _Structure(HL / L, 2.0 * (L - HL) / (L * (L - 1.0)), c2, (L - HL) / (L * (L - 1.0)), (L - c2) / (L - 1.0))


_S_STEP = 0.025  # grid of logit variances on which the softmax moments are tabulated (linear interpolation)
_S_MAX = 25.0
_N_T, _N_GH = 320, 80


@functools.lru_cache(maxsize=1024)
def _power_sums_node(n: int, k: int, all_sizes: bool):
    """:func:`softmax_power_sums` at the grid node s = k * _S_STEP (a (4, sizes) numpy array)."""
    import numpy as np

    s = k * _S_STEP
    sizes = np.arange(1, n + 1, dtype=np.float64) if all_sizes else np.array([float(n)])
    if s <= 0.0:  # uniform weights 1/n
        return np.stack([1.0 / sizes, sizes**-2.0, sizes**-3.0, (sizes - 1.0) / sizes**3])
    x, w = _gauss_hermite(_N_GH)
    xh, wh = np.asarray(x), np.asarray(w)
    wh = wh / wh.sum()
    sd = math.sqrt(s)
    lt = np.linspace(-math.log(n) - 0.5 * s - 14.0, 6.0 + 3.0 * sd, _N_T)  # log t
    ex = sd * xh
    a = np.exp(ex)[None, :] * np.exp(lt)[:, None]  # t e^x
    phi = np.maximum((wh[None, :] * np.exp(-a)).sum(1), 1e-300)

    def t_psi(m: int, power: int):  # t^power E[e^{m x} e^{-t e^x}]
        return (wh[None, :] * np.exp(np.minimum(m * ex[None, :] - a + power * lt[:, None], 700.0))).sum(1)

    p2 = t_psi(2, 2)
    # integrands in d log t of E[P_1^2], E[P_1^3], E[P_1^4] (times phi^{n-1}) and E[P_1^2 P_2^2] (times phi^{n-1})
    f = np.stack([p2, t_psi(3, 3) / 2.0, t_psi(4, 4) / 6.0, p2 * p2 / 6.0 / phi], axis=1)
    f[0] *= 0.5  # trapezoid
    f[-1] *= 0.5
    F = np.exp((sizes[:, None] - 1.0) * np.log(phi)[None, :])  # phi^{n-1}, one row per size
    I = (F @ f) * (lt[1] - lt[0])
    out = np.stack([sizes * I[:, 0], sizes * I[:, 1], sizes * I[:, 2], sizes * (sizes - 1.0) * I[:, 3]])
    if sizes[0] == 1.0:
        out[:, 0] = (1.0, 1.0, 1.0, 0.0)  # one key: P = 1 exactly
    return out


def softmax_power_sums(n: int, s: float, all_sizes: bool = False):
    """Moments of the weights P of a softmax over n i.i.d. N(0, s) logits (derived; exact up to quadrature).

    Returns a numpy array of shape (4, sizes) with rows E[sum_j P_j^2], E[sum_j P_j^3], E[sum_j P_j^4] and
    E[sum_{j != k} P_j^2 P_k^2], and one column per softmax size: 1..n if ``all_sizes`` (the rows of causal
    attention), else n alone.

    P_j = w_j / sum_k w_k with i.i.d. lognormal w = e^y (a shared part of the logits cancels). The Laplace
    identity 1/D^m = int_0^inf t^{m-1} e^{-t D} dt / (m-1)!, phi(t) = E[e^{-t w}] and psi_m(t) = E[w^m e^{-t w}]
    give E[P_1^m] = int t^{m-1}/(m-1)! psi_m phi^{n-1} dt and E[P_1^2 P_2^2] = int t^3/6 psi_2^2 phi^{n-2} dt
    (Gauss-Hermite in y, trapezoid in log t). Checked against sampling: E[sum P^2] within 2% for n <= 128,
    s <= 3 (tests/test_predict.py), the higher sums within 3% (tests/test_theory_components.py). Tabulated on
    a grid of s (step 0.025, capped at 25) and interpolated linearly, so that the many calls of a deep
    recursion reuse a few nodes. One implementation serves the component formulas,
    ``predict`` and the DSLM init recipe.
    """
    return _on_grid(s, lambda k: _power_sums_node(int(n), k, all_sizes))


def _on_grid(s: float, node: Callable[[int], Any]) -> Any:
    """``node(k)`` (a value at the grid node s = k * _S_STEP) interpolated linearly to logit variance ``s``."""
    s = min(max(float(s), 0.0), _S_MAX)
    x = s / _S_STEP
    k = int(x)
    frac = x - k
    out = node(k)
    if frac > 1e-12:
        out = (1.0 - frac) * out + frac * node(k + 1)
    return out


@functools.lru_cache(maxsize=1024)
def _causal_sq_mass_node(n: int, k: int) -> float:
    """Mean over row sizes 1..n of min(E[sum_j P_j^2], 1) at the grid node s = k * _S_STEP."""
    import numpy as np

    return float(np.minimum(_power_sums_node(n, k, True)[0], 1.0).mean())


def causal_mean_sq_mass(n: int, s: float) -> float:
    """Mean over the rows of causal attention (row i has i keys, i = 1..n) of E[sum_j P_j^2] at logit variance s.

    The same number as averaging :func:`softmax_power_sums` over sizes (both interpolate linearly between the
    same nodes, and the nodes lie in [0, 1], so the clip commutes with the mean), but a scalar per node: the DSLM
    init's attention schedule of a 1000-layer causal stack evaluates it once per layer."""
    return _on_grid(s, lambda k: _causal_sq_mass_node(int(n), k))


@functools.lru_cache(maxsize=4096)
def _weight_moments(s: float, seq_len: int, causal: bool) -> tuple[float, float, float, float]:
    """Averages over queries of ``E[sum_j P^2]``, ``E[sum_j P^3]``, ``E[sum_j P^4]``, ``E[sum_{j!=k} P_j^2 P_k^2]``
    for logits of variance s (:func:`softmax_power_sums`; causal attention: query i sees i keys)."""
    m = softmax_power_sums(int(seq_len), s, all_sizes=causal)
    return tuple(float(v) for v in m.mean(1))  # type: ignore[return-value]


def _p2_sum(s: float, seq_len: int, causal: bool) -> float:
    """Average over queries of ``E[sum_j P_ij^2]`` (see :func:`_weight_moments`)."""
    return _weight_moments(s, seq_len, causal)[0]


def _second_moment_view(m: Moments) -> tuple[float, float]:
    """(E[x^2], raw correlation): attention only sees second moments; a mean acts as a shared component."""
    return m.second_moment, m.raw_corr


def attention(
    m: Moments,
    *,
    d: int,
    d_k: int,
    seq_len: int,
    sigma_q2: float,
    sigma_k2: float,
    sigma_v2: float,
    attn_drop: float = 0.0,
    causal: bool = False,
    variant: str = "improved",
) -> Moments:
    """Single-head attention ``y = Drop(softmax(Q K^T / sqrt(d_k))) V``, ``Q, K, V = X W`` (``W``: d -> d_k).

    Notation: ``s2 = E[x^2]``, ``r`` the token correlation, ``q = 1 - r``, ``p = attn_drop``,
    ``ss2 = d^2 s2^2 sq2 sk2`` the logit variance (``(1-r) ss2`` within one query's row), ``a = ss2/d``
    (d = model width: the ``ss2/d`` terms divide by the input width, not d_k; see
    :func:`attention_forward_brackets`), ``E1 = e^{q ss2}``, ``Er = e^{r q ss2}``, ``g2, rho`` the
    upstream gradient. With ``L`` keys per query (non-causal) the structure constants are
    ``h1 = a1 = b2 = 1/L``, ``c2 = c11 = 1``; causal attention uses :func:`causal_structure`.

    ``variant="paper"`` (section 2 of the spec, non-causal only):

        var  = d sv2 s2 { r + [ q^2 (L-1) a + E1/(1-p) (q + 4 q^2 a) ] / L }
        cov  = d sv2 s2 { r + [ q + 2 q^2 a ] / L }
        gvar = g2 d_k sv2 (1 + (L-1) rho (1-p)) / (L (1-p))          (value path only)
        gcov = g2 d_k sv2 (1 + (L-1) rho) / L

    ``variant="improved"`` (derived; docs/theory.md). Decompose ``x_j = c + e_j`` (c shared by all tokens,
    variance r s2; e_j i.i.d., variance tau = q s2) and the logit of query i on key j as ``u_i . e_j`` with
    ``u_i = x_i W_Q W_K^T / sqrt(d_k)``, ``E|u|^2 = ss2 / s2``. Under the softmax weights each ``e_j`` is a
    Gaussian shifted by ``tau u_i`` (exponential tilting), which gives the forward terms:

        var = d sv2 s2 { r + pi/(1-p) (q + r p + 4 q^2 a) + q^2 a (1 - pi) }
        cov = d sv2 s2 { r + (q + 2 (1+r) q^2 a) a1 + r q^2 a (1 - a1) }

    where ``pi = avg_i E[sum_j P_ij^2]`` (exact for lognormal softmax weights, :func:`_p2_sum`;
    ``pi ~ E1 h1 = e^{q ss2}/L`` at large L; at small n, e.g. the first causal positions, ``e^{q ss2}/n``
    would grossly overestimate it: n = 1 gives exactly 1).

    (``r p``: dropout also drops the shared part c; the ``r`` terms of cov come from ``E[u_i . u_i'] = r E|u|^2``.)
    The input gradient has three paths, ``dX = dV W_V^T + dQ W_Q^T + dK W_K^T``, with
    ``dS_ij = P_ij g_i . (D_ij v_j - y_i)`` (D the dropout mask); the cross terms between paths are O(1/d).
    To leading order in 1/L and ss2:

        value: g2 d_k sv2 [ pi/(1-p) + rho Er (c2 - h1) ]
        Q:     g2 d_k sv2 ss2 q [ (q + r p) pi2/(1-p) + q ((1 - pi)^2 + (2/(1-p) - 1) A + B)/d ]
        K:     g2 d_k sv2 ss2 [ (q + r p) pi2/(1-p) + rho r q (c2 - h1) ]

    with the softmax-weight moments (per query, averaged; :func:`_weight_moments`) ``A = E sum_j P_j^2 (1-P_j)^2``,
    ``B = E sum_{j!=k} P_j^2 P_k^2`` and the softmax-Jacobian moment ``pi2 = A + B`` (``~ pi`` at large n,
    0 at n = 1: one key gives no gradient through the softmax). At large L these reduce to

        Q ~ g2 d_k sv2 ss2 q [ (q + r p) e^{q ss2}/((1-p) L) + q (1 + (d-1)/L)/d ]
        K ~ g2 d_k sv2 ss2 [ (q + r p) e^{q ss2}/((1-p) L) + rho r q (L-1)/L ]
        gvar = value + Q + K
        gcov = g2 d_k sv2 [ (1 - pi)/(L-1) + rho (c11 - b2) ] + rho g2 d_k sv2 q^2 a (1 + (d+1) a1)

    The Q path comes from ``sum_j P_j (g_i . w_j) k~_j`` with ``w_j = v_j - y_i = sum_k (delta_jk - P_k) v_k``;
    the three Wick pairings of ``E[(b.e_k)(b.e_k')(e_j.e_j')]`` give ``d pi2``, ``(1 - pi)^2`` and ``A + B``
    (at uniform weights this is the centred Wishart ``E[(E^T E)^2]``: ``q^2 ss2 (L + d - 1)/(d L)``
    relative to ``g2 d_k sv2``); the part not touched by dropout is shared by all queries (so it adds
    ``rho`` times itself to the covariance). The K path sums over
    queries: ``dK_j ~ v~_j G^T Q / L``, and ``G^T Q`` is coherent when both rho and r are non-zero.
    At rho = 0 and r = 0 the value path alone is ``1/L`` and the Q path ``ss2 (1/d + 1/L)``: at L = 1000,
    d = 100 they are comparable, which is why the value-path formula misses by tens of percent.
    """
    if variant not in ("improved", "paper"):
        raise ValueError(f"variant must be 'improved' or 'paper', got {variant!r}")
    s2, r = _second_moment_view(m)
    r = min(max(r, -1.0), 1.0)
    q, p, L = 1.0 - r, attn_drop, float(seq_len)
    ss2 = d * d * s2 * s2 * sigma_q2 * sigma_k2
    a = ss2 / d
    E1 = math.exp(q * ss2)
    g2, rho = m.grad_var, m.grad_corr
    if variant == "paper":
        if causal:
            raise ValueError("variant='paper' has no causal form; use variant='improved'")
        var = d * sigma_v2 * s2 * (r + (q * q * (L - 1.0) * a + E1 / (1.0 - p) * (q + 4.0 * q * q * a)) / L)
        cov = d * sigma_v2 * s2 * (r + (q + 2.0 * q * q * a) / L)
        g_var = g2 * d_k * sigma_v2 * (1.0 + (L - 1.0) * rho * (1.0 - p)) / (L * (1.0 - p))
        g_cov = g2 * d_k * sigma_v2 * (1.0 + (L - 1.0) * rho) / L
        return Moments.from_cov(0.0, var, cov, g_var, g_cov)
    st = causal_structure(seq_len, causal)
    Er = math.exp(r * q * ss2)
    S2, S3, S4, S22 = _weight_moments(q * ss2, int(seq_len), causal)
    pi = S2  # avg_i E[sum_j P_ij^2], ~ E1 h1
    jac_a = S2 - 2.0 * S3 + S4  # E[sum_j P_j^2 (1 - P_j)^2]
    pi2 = jac_a + S22  # E[sum_j P_j^2 (1 - 2 P_j + sum_k P_k^2)]: softmax-Jacobian second moment
    kap = 1.0 / (1.0 - p)
    var = d * sigma_v2 * s2 * (r + pi * kap * (q + r * p + 4.0 * q * q * a) + q * q * a * (1.0 - pi))
    cov = d * sigma_v2 * s2 * (r + (q + 2.0 * (1.0 + r) * q * q * a) * st.a1 + r * q * q * a * (1.0 - st.a1))
    base = g2 * d_k * sigma_v2
    g_val = base * (pi * kap + rho * Er * (st.c2 - st.h1))
    g_q = base * ss2 * q * ((q + r * p) * kap * pi2 + q * ((1.0 - pi) ** 2 + (2.0 * kap - 1.0) * jac_a + S22) / d)
    g_k = base * ss2 * ((q + r * p) * kap * pi2 + rho * r * q * (st.c2 - st.h1))
    b2 = (1.0 - pi) / (seq_len - 1.0) if seq_len > 1 else 0.0  # exact: sum_{j != j'} P_ij P_ij' = 1 - sum_j P_ij^2
    g_cov = base * (b2 + rho * (st.c11 - st.b2)) + rho * base * q * q * a * (1.0 + (d + 1.0) * st.a1)
    return Moments.from_cov(0.0, var, cov, g_val + g_q + g_k, g_cov)


def multi_head_attention(
    m: Moments,
    *,
    d: int,
    n_heads: int,
    seq_len: int,
    sigma_q2: float,
    sigma_k2: float,
    sigma_v2: float,
    sigma_o2: float,
    d_k: int | None = None,
    attn_drop: float = 0.0,
    causal: bool = False,
    variant: str = "improved",
) -> Moments:
    """Multi-head attention: ``n_heads`` heads of width ``d_k`` (default ``d / n_heads``), concatenated and
    projected by ``W_O`` (``n_heads d_k -> d``, variance ``sigma_o2``), no output dropout.

    Heads have independent weights, so the concatenation has the single-head moments (:func:`attention`)
    and the output is :func:`linear` of it: ``var = H d_k so2 var_head``, ``cov = H d_k so2 cov_head``.
    Backward: each head receives ``g2' = d so2 g2`` (same rho) and the heads' input gradients add with
    zero cross terms: ``grad var = H * head grad var(g2')``, likewise the covariance.
    """
    dk = d_k if d_k is not None else d // n_heads
    width = n_heads * dk
    head = functools.partial(
        attention, d=d, d_k=dk, seq_len=seq_len, sigma_q2=sigma_q2, sigma_k2=sigma_k2, sigma_v2=sigma_v2,
        attn_drop=attn_drop, causal=causal, variant=variant,
    )
    h_out = head(m.with_grad(0.0, 0.0))
    out = linear(h_out, width, d, sigma_o2)
    g_head = d * sigma_o2 * m.grad_var
    h_back = head(m.with_grad(g_head, m.grad_corr))
    return Moments(out.mean, out.var, out.corr, n_heads * h_back.grad_var, h_back.grad_corr)


def cross_attention(
    m: Moments,
    mem: Moments,
    *,
    d: int,
    d_k: int,
    mem_len: int,
    sigma_q2: float,
    sigma_k2: float,
    sigma_v2: float,
    attn_drop: float = 0.0,
    d_mem: int | None = None,
) -> Moments:
    """Single-head cross-attention: queries from ``m`` (width d), keys and values from a memory ``mem``
    (width ``d_mem``, default d; its own variance, correlation and length ``Lm = mem_len``), independent of
    the query stream. Returns the output moments and the gradient at the *query* input (Q path only; the
    memory's gradient is :func:`cross_attention_memory_grad`).

    With ``s2x, r_x`` (queries), ``s2m, r_m, q_m = 1 - r_m`` (memory), ``ss2 = d d_m s2x s2m sq2 sk2``,
    ``E1 = e^{q_m ss2}``, ``Er = e^{r_x q_m ss2}``, ``a_m = ss2 / d_m`` (derived, as in :func:`attention`):

        var  = d_m sv2 s2m { r_m + E1/(1-p) (q_m + r_m p + 4 q_m^2 a_m)/Lm + q_m^2 a_m (1 - 1/Lm) }
        cov  = d_m sv2 s2m { r_m + (q_m + 2 (1 + r_x) q_m^2 a_m) Er / Lm + r_x q_m^2 a_m (1 - 1/Lm) }
        gvar = g2 d_k sv2 ss2 (s2m / (d s2x)) q_m [ (q_m (d_m + 2) + p r_m d_m) E1 / ((1-p) Lm) + q_m (Lm - 1)/Lm ]
        gcov = rho g2 d_k sv2 ss2 (s2m / (d s2x)) q_m^2 (Lm + d_m + 1) / Lm

    The output correlation tends to ``r_m`` (all queries average the same memory), not to ``r_x``.
    """
    dm = d_mem if d_mem is not None else d
    s2x, rx = _second_moment_view(m)
    s2m, rm = _second_moment_view(mem)
    qm, p, Lm = 1.0 - rm, attn_drop, float(mem_len)
    ss2 = d * dm * s2x * s2m * sigma_q2 * sigma_k2
    am = ss2 / dm
    E1, Er = math.exp(qm * ss2), math.exp(rx * qm * ss2)
    var = dm * sigma_v2 * s2m * (rm + E1 / (1.0 - p) * (qm + rm * p + 4.0 * qm * qm * am) / Lm + qm * qm * am * (1.0 - 1.0 / Lm))
    cov = dm * sigma_v2 * s2m * (rm + (qm + 2.0 * (1.0 + rx) * qm * qm * am) * Er / Lm + rx * qm * qm * am * (1.0 - 1.0 / Lm))
    base = m.grad_var * d_k * sigma_v2 * ss2 * _ratio(s2m, d * s2x)
    g_var = base * qm * ((qm * (dm + 2.0) + p * rm * dm) * E1 / ((1.0 - p) * Lm) + qm * (Lm - 1.0) / Lm)
    g_cov = m.grad_corr * base * qm * qm * (Lm + dm + 1.0) / Lm
    return Moments.from_cov(0.0, var, cov, g_var, g_cov)


def cross_attention_memory_grad(
    m: Moments,
    mem: Moments,
    *,
    d: int,
    d_k: int,
    seq_len: int,
    mem_len: int,
    sigma_q2: float,
    sigma_k2: float,
    sigma_v2: float,
    attn_drop: float = 0.0,
    d_mem: int | None = None,
) -> Moments:
    """Gradient reaching the memory of :func:`cross_attention` (value + key paths), as a ``Moments`` whose
    forward fields are the memory's own and whose gradient fields are ``dL/dmem`` (upstream ``g2, rho``
    from ``m``; ``Lq = seq_len`` queries):

        value: g2 d_k sv2 [ E1 Lq / ((1-p) Lm^2) + rho Er Lq (Lq-1) / Lm^2 ]
        key:   g2 d_k sv2 ss2 [ (q_m + r_m p) E1 Lq / ((1-p) Lm^2) + rho r_x q_m Lq (Lq-1) / Lm^2 ]
        gcov = g2 d_k sv2 (Lq / Lm^2) (1 + (Lq - 1) rho)

    A memory read by several decoder layers receives the sum of these (independent) contributions.
    """
    dm = d_mem if d_mem is not None else d
    s2x, rx = _second_moment_view(m)
    s2m, rm = _second_moment_view(mem)
    qm, p, Lm, Lq = 1.0 - rm, attn_drop, float(mem_len), float(seq_len)
    ss2 = d * dm * s2x * s2m * sigma_q2 * sigma_k2
    E1, Er = math.exp(qm * ss2), math.exp(rx * qm * ss2)
    g2, rho = m.grad_var, m.grad_corr
    base = g2 * d_k * sigma_v2
    w1, w2 = Lq / (Lm * Lm), Lq * (Lq - 1.0) / (Lm * Lm)
    g_val = base * (E1 * w1 / (1.0 - p) + rho * Er * w2)
    g_key = base * ss2 * ((qm + rm * p) * E1 * w1 / (1.0 - p) + rho * rx * qm * w2)
    g_cov = base * w1 * (1.0 + (Lq - 1.0) * rho)
    return Moments.from_cov(mem.mean, mem.var, mem.cov, g_val + g_key, g_cov)


# ----------------------------------------------------------------------------------------------------------
# Blocks, embeddings, residuals, whole models
# ----------------------------------------------------------------------------------------------------------
def ffn(
    m: Moments,
    *,
    d: int,
    d_ff: int,
    sigma1_2: float,
    sigma2_2: float,
    activation: str = "relu",
    p: float = 0.0,
) -> Moments:
    """Feed-forward block ``Drop_p(act(x W1) W2)``, ``W1: d -> d_ff`` (variance sigma1_2), ``W2: d_ff -> d``.

    :func:`chain` of :func:`linear`, :func:`relu` / :func:`gelu`, :func:`linear`, :func:`dropout`. For ReLU at
    unit input variance and correlation r: forward gain ``d sigma1^2 (1/2) d_ff sigma2^2 / (1-p)`` and output
    correlation ``(1-p) f(r)`` with ``f`` = :func:`relu_corr_map`.
    """
    acts = {"relu": relu, "gelu": gelu}
    if activation not in acts:
        raise ValueError(f"activation must be one of {sorted(acts)}, got {activation!r}")
    return chain(
        m,
        functools.partial(linear, d_in=d, d_out=d_ff, sigma2=sigma1_2),
        acts[activation],
        functools.partial(linear, d_in=d_ff, d_out=d, sigma2=sigma2_2),
        functools.partial(dropout, p=p),
    )


def local_rnn_moments(u: float, R: Any, window: int, a: float, b: float, o: float) -> tuple[float, Any, float, Any]:
    """The moments of :func:`local_rnn`'s ReLU recurrence, for a token-pair correlation ``R`` of the input that is a
    float or a numpy array (the per-bin-pair correlations of a causal stack in ``signal``): the second and cross
    moments of the output projection's input, E[h_M^2] and E[h_M h'_M], and the input-gradient gains, variance
    and pair covariance per unit of the output gradient's.

    ``u`` is the input's second moment; ``a = d sigma_ih^2``, ``b = d sigma_hh^2``, ``o = d sigma_out^2``. With
    h_0 = 0 and ReLU: t_k = a u + b t_{k-1}/2, c_k = a u R + b (t_{k-1}/2) f(c_{k-1}/t_{k-1}) (f the ReLU
    correlation map). Mean field: the input and recurrent weights are independent of the vectors they multiply
    (the large-width limit, also for weights tied across steps), and two windows pair the same step of different
    tokens. Backward: E[relu'^2] = 1/2, for pairs 1/4 + arcsin(c_k/t_k)/(2 pi).
    """
    import numpy as np

    def cross(t: float, C: Any) -> Any:  # E[relu(x) relu(y)] for variance t, cross moment C
        rho = np.clip(C / t, -1.0, 1.0)
        return t / 2.0 * (rho + (np.sqrt(1.0 - rho * rho) - rho * np.arccos(rho)) / math.pi)

    zero = 0.0 * R  # a zero of R's kind (float or array)
    ts: list[float] = []
    cs: list[Any] = []
    t, c = 0.0, zero
    for _ in range(window):
        t, c = a * u + b * t / 2.0, a * u * R + b * (cross(t, c) if t > 0 else zero)
        ts.append(t)
        cs.append(c)
    c_o = cross(ts[-1], cs[-1]) if ts[-1] > 0 else zero
    gain_v, vh = 0.0, o
    gain_c, ch = zero, o + zero
    for k in range(window - 1, -1, -1):  # back through step k + 1
        dc = ch * (0.25 + np.arcsin(np.clip(cs[k] / ts[k], -1.0, 1.0)) / (2.0 * math.pi) if ts[k] > 0 else 0.25)
        gain_v, gain_c = gain_v + a * 0.5 * vh, gain_c + a * dc
        vh, ch = b * 0.5 * vh, b * dc
    if not hasattr(R, "shape"):
        c_o, gain_c = float(c_o), float(gain_c)
    return ts[-1] / 2.0, c_o, gain_v, gain_c


def local_rnn(
    m: Moments,
    *,
    d: int,
    window: int,
    sigma_ih2: float,
    sigma_hh2: float,
    sigma_out2: float,
) -> Moments:
    """The local recurrence of R-Transformer (Wang et al. 2019, arXiv:1907.05572) as the zoo builds it
    (``dslm_zoo.layers.LocalRNN``): per position t a ReLU Elman RNN over the ``window`` inputs x_{t-window+1..t},
    h_k = relu(W_ih x_k + W_hh h_{k-1}), h_0 = 0, and the output projection y = W_out h_window (all d x d, biases
    0 at init, variances ``sigma_*2`` per element).

    Forward (derived; :func:`local_rnn_moments`): var_y = d sigma_out^2 t_M / 2, cov_y = d sigma_out^2 (t_M/2)
    f(c_M/t_M). Backward, from the output gradient (g2, cross moment g2 rho): the gradient at h_M has d sigma_out^2
    g2 and each step back multiplies by E[relu'^2] = 1/2 (pairs of windows: 1/4 + arcsin(c_k/t_k)/(2 pi)) and by
    d sigma_hh^2. A token is read by ``window`` windows, at steps 1..window, whose gradients are uncorrelated
    (chains of different length through W_hh), so the input gradient sums them: d sigma_ih^2 sum_k D_k, and its
    pair covariance sums the same-step pair terms. Edge positions (the zero-padded first window - 1 positions,
    the last window - 1 tokens read by fewer windows) are not modelled: a share ~window / L of the sequence.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    u = m.second_moment
    r = _ratio(m.cov + m.mean * m.mean, u)  # raw correlation: the input mean is shared by all tokens
    m_o, c_o, gain_v, gain_c = local_rnn_moments(u, r, window, d * sigma_ih2, d * sigma_hh2, d * sigma_out2)
    o = d * sigma_out2
    return Moments.from_cov(0.0, o * m_o, o * c_o, gain_v * m.grad_var, gain_c * m.grad_cov)


def collision_probability(counts: Sequence[float]) -> float:
    """Chance that two independent draws from the (unnormalised) distribution ``counts`` coincide: sum p_v^2."""
    total = float(sum(counts))
    return sum((c / total) ** 2 for c in counts) if total > 0 else 0.0


def embedding(
    table_vars: Sequence[float],
    same_row_probs: Sequence[float],
    grad_var: float = 1.0,
    grad_corr: float = 0.0,
    p: float = 0.0,
) -> Moments:
    """Sum of ``n_t`` embedding tables with i.i.d. ``N(0, s_t^2)`` rows, then dropout ``p`` (derived).

    ``var = sum_t s_t^2``; token correlation ``r_emb = sum_t s_t^2 P_t / sum_t s_t^2`` where ``P_t`` is the chance
    that two positions read the same row of table t (word table: :func:`collision_probability` of the token
    frequencies; learned positions: 0; segments: P(same segment)); dropout then gives ``var / (1-p)`` and
    ``r_emb (1-p)``. The gradient fields pass the upstream gradient through (scaled by dropout): a table row
    receives the sum of the gradients of the positions that read it.
    """
    if len(table_vars) != len(same_row_probs):
        raise ValueError("table_vars and same_row_probs must have the same length")
    var = float(sum(table_vars))
    cov = float(sum(v * pr for v, pr in zip(table_vars, same_row_probs)))
    return dropout(Moments.from_cov(0.0, var, cov, grad_var, grad_var * grad_corr), p)


def combine_independent(skip: Moments, branch: Moments, lam: float = 1.0, beta: float = 1.0) -> Moments:
    """``lam * skip + beta * branch`` for independent (at init) skip and branch signals.

    ``mean = lam mu_s + beta mu_b``, ``var = lam^2 var_s + beta^2 var_b``, ``cov = lam^2 cov_s + beta^2 cov_b``;
    the gradient fields combine the same way (skip path ``lam``, branch path ``beta``).
    """
    l2, b2 = lam * lam, beta * beta
    return Moments.from_cov(
        lam * skip.mean + beta * branch.mean,
        l2 * skip.var + b2 * branch.var,
        l2 * skip.cov + b2 * branch.cov,
        l2 * skip.grad_var + b2 * branch.grad_var,
        l2 * skip.grad_cov + b2 * branch.grad_cov,
    )


def residual(m: Moments, branch: Component, lam: float = 1.0, beta: float = 1.0) -> Moments:
    """Residual sub-layer ``x <- lam x + beta F(x)`` (DSLM: ``lam^2 + beta^2 = 1``).

    The branch output is uncorrelated with ``x`` at init (zero-mean random weights), so moments add:
    ``var = lam^2 var_x + beta^2 var_F``, ``cov`` likewise; backward ``dL/dx = lam g + beta J_F^T g`` with
    ``grad var = lam^2 g2 + beta^2 Var(J_F^T g)``.
    """
    return combine_independent(m, branch(m), lam, beta)


def pre_ln(m: Moments, branch: Component, d: int, lam: float = 1.0, beta: float = 1.0, eps: float = 0.0) -> Moments:
    """Pre-LN sub-layer ``x <- lam x + beta F(LN(x))``; ``branch`` is F including its dropout."""
    return residual(m, lambda x: chain(x, functools.partial(layernorm, d=d, eps=eps), branch), lam, beta)


def post_ln(m: Moments, branch: Component, d: int, lam: float = 1.0, beta: float = 1.0, eps: float = 0.0) -> Moments:
    """Post-LN sub-layer ``x <- LN(lam x + beta F(x))``; ``branch`` is F including its dropout."""
    return chain(m, lambda x: residual(x, branch, lam, beta), functools.partial(layernorm, d=d, eps=eps))


def propagate(m0: Moments, layers: Sequence[Component]) -> list[Moments]:
    """Run a stack of layers; return ``N + 1`` Moments, entry l at the input of layer l (entry N: the output).

    Forward fields: the signal entering layer l. Gradient fields: the gradient at that point, obtained by
    backpropagating ``m0``'s gradient fields, which are taken as the gradient at the *final output*.
    """
    fwd = [m0]
    for f in layers:
        fwd.append(f(fwd[-1]))
    out: list[Moments] = [None] * (len(layers) + 1)  # type: ignore[list-item]
    g_var, g_corr = m0.grad_var, m0.grad_corr
    last = fwd[-1]
    out[-1] = last.with_grad(g_var, g_corr)
    for l in range(len(layers) - 1, -1, -1):
        back = layers[l](fwd[l].with_grad(g_var, g_corr))
        g_var, g_corr = back.grad_var, back.grad_corr
        out[l] = fwd[l].with_grad(g_var, g_corr)
    return out
