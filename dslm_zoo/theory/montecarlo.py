"""Monte Carlo verification of the moment calculator (:mod:`dslm_zoo.theory.components`).

Reproduces the authors' per-component suite (Kedia et al. 2024, arXiv:2403.09635, App. A; the
``simulations/`` scripts of github.com/akhilkedia/TranformersGetStable; spec ``dslm.md`` section 6):
equicorrelated Gaussian inputs (tokens correlated, features i.i.d.), an independent equicorrelated
upstream gradient injected as ``loss = sum(out * G)``, and the measured mean, variance ``E[y^2] - mean^2``,
token covariance (mean off-diagonal entry of the L x L token covariance matrix over the observations
``(run, feature)``, i.e. ``torch.cov`` rows = tokens, times ``L/(L-1)``) and the same for the input gradient.
The error of one configuration is the authors' :func:`calc_err`; a suite reports the 50th/90th/99th
percentile over its grid, in percent, with the authors' index rule ``sorted[int(n * q / 100)]``.

Speed (CPU, 2 cores). Equicorrelated samples are drawn as ``mu + s (sqrt(r) z0 + sqrt(1-r) Z)`` (exactly the
authors' multivariate normal, without the L x L Cholesky), covariances are reduced to O(n) sums, and
configurations that differ only in parameters entering *linearly* share one draw: the output (or input
gradient) is then a linear combination ``sum_k a_k C_k`` of a few component tensors, and every statistic
follows exactly from the component sums, cross sums and token sums (:class:`_LinAcc`). Which axes are
"outer" (a fresh draw for every value) and how many independent draws (``replicas``) an outer point
gets is part of each grid's spec; ``replicas`` equal to the number of inner configurations means every
configuration has its own draw, as in the authors' scripts. Each configuration still sees exactly the
authors' sample size (runs / batch); sharing only correlates the errors of configurations that differ in
a scale or a mixing coefficient. Seeds derive from (base seed, component, outer index, replica).

Entry points: :func:`run_component`, :func:`run_suite`, :func:`format_table`. ``grid='full'`` is the
authors' grids (see :data:`FULL_GRIDS`), ``grid='reduced'`` a deterministic sub-grid with the same
per-configuration sample sizes that runs in tens of seconds (used by the tests).
"""
from __future__ import annotations

import functools
import itertools
import math
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from . import components as C

__all__ = [
    "AUTHORS_ERRORS",
    "FULL_GRIDS",
    "REDUCED_GRIDS",
    "EXTRA_GRIDS",
    "GridSpec",
    "SuiteResult",
    "calc_err",
    "softmax_err",
    "percentiles",
    "run_component",
    "run_suite",
    "format_table",
    "merge_results",
    "n_configs",
    "check_width_divisor",
    "PAPER_COMPONENTS",
    "EXTRA_COMPONENTS",
]

PERCENTILES = (50, 90, 99)

#: The authors' published errors [median, P90, P99] in percent (simulations/expected_output.txt).
AUTHORS_ERRORS: dict[str, dict[str, tuple[float, float, float]]] = {
    "linear": {"x mean": (0.0, 0.4, 1.3), "x var": (0.4, 1.4, 2.8), "g var": (0.2, 1.0, 2.2), "x cov": (0.4, 1.4, 2.8), "g cov": (0.2, 1.0, 2.2)},
    "relu": {"x mean": (0.3, 1.3, 2.3), "x var": (0.5, 1.9, 3.4), "g var": (0.6, 1.5, 2.6), "x cov": (0.3, 1.6, 3.1), "g cov": (0.2, 1.1, 2.3)},
    "gelu": {"x mean": (0.1, 1.0, 2.4), "x var": (0.2, 0.6, 1.3), "g var": (0.2, 0.6, 1.1), "x cov": (0.1, 0.5, 1.2), "g cov": (0.1, 0.4, 0.9)},
    "layernorm": {"x mean": (1.4e-05, 9.3e-05, 1.4e-04), "x var": (0.0, 0.0, 0.0), "g var": (0.4, 1.5, 3.2), "x cov": (0.1, 0.5, 1.0), "x covd": (0.0, 0.0, 0.0), "g cov": (0.2, 0.9, 2.2)},
    "dropout": {"x mean": (0.0, 0.1, 0.5), "x var": (0.1, 0.5, 1.5), "g var": (0.1, 0.7, 1.5), "x cov": (0.0, 0.4, 1.3), "g cov": (0.1, 0.5, 1.2)},
    "softmax": {"x mean": (0.0, 0.0, 0.0), "x var full": (0.2, 0.9, 4.0), "x var approx": (0.1, 0.5, 2.6), "g var full": (0.1, 0.6, 4.5), "g var approx": (0.1, 0.6, 3.7)},
    "attention": {"x mean": (0.2, 1.0, 2.5), "x var": (1.4, 4.1, 7.8), "g var": (2.2, 13.3, 44.5), "x cov": (1.3, 3.9, 7.4), "g cov": (1.6, 4.5, 8.2)},
}

PAPER_COMPONENTS = ("linear", "relu", "gelu", "layernorm", "dropout", "softmax", "attention")
EXTRA_COMPONENTS = ("causal_attention", "cross_attention", "mha", "ffn", "embedding", "residual_layers", "activation_mean")


# ----------------------------------------------------------------------------------------------------------
# Error definitions (the authors', verbatim semantics)
# ----------------------------------------------------------------------------------------------------------
def calc_err(actual: float, predicted: float, pred_var: float = 0.0) -> float:
    """The authors' error: ``|a-p|/|a|`` when ``pred_var == 0``; ``min(|a|, |a/pred_var|)`` when ``p == 0``;
    else ``min(|a-p|/|a|, |a-p|/pred_var)`` (relative to the value, or to the predicted variance)."""
    if pred_var == 0:
        return abs((actual - predicted) / actual) if actual != 0 else (0.0 if predicted == 0 else math.inf)
    if predicted == 0:
        return min(abs(actual), abs(actual / pred_var))
    rel = abs((actual - predicted) / actual) if actual != 0 else math.inf
    return min(rel, abs((actual - predicted) / pred_var))


def softmax_err(actual: float, predicted: float) -> float:
    """The softmax script's error: plain ``|a-p|/|a|`` (its predictions are never 0)."""
    return abs((actual - predicted) / actual)


def percentiles(errs: Sequence[float], qs: Sequence[int] = PERCENTILES) -> tuple[float, ...]:
    """``sorted(errs)[int(n q / 100)] * 100`` for each q: the authors' percentile rule, in percent."""
    e = np.sort(np.asarray(errs, dtype=np.float64)) * 100.0
    n = len(e)
    return tuple(float(e[min(int(n * q / 100), n - 1)]) for q in qs)


# ----------------------------------------------------------------------------------------------------------
# Statistics of linear combinations of component tensors
# ----------------------------------------------------------------------------------------------------------
class _LinAcc:
    """Sums that give mean, variance and token covariance of ``y = sum_k a_k C_k`` for any coefficients ``a``.

    Components have shape ``(R, T, D)`` (varying over the T "token" axis) or ``(R, 1, D)`` (shared by all
    tokens). Observations are the ``(run, feature)`` pairs, N = R D of them, as in ``torch.cov(y.transpose(0, 1)
    .reshape(T, -1))``. Elementwise work is float32 (chunks), the accumulation float64.
    """

    def __init__(self, n: int, T: int) -> None:
        self.n, self.T = n, T
        self.m1 = np.zeros(n)
        self.m2 = np.zeros((n, n))
        self.tt = np.zeros((n, n))
        self.tok = np.zeros((n, T))
        self.nobs = 0

    def add(self, comps: Sequence[torch.Tensor]) -> None:
        assert len(comps) == self.n
        T = self.T
        R = max(c.shape[0] for c in comps)
        D = max(c.shape[2] for c in comps)
        full = [c.shape[1] != 1 for c in comps]
        ts = []  # token sums per observation, float64, (R, D)
        for c, f in zip(comps, full):
            s = c.sum(1) if f else c[:, 0, :] * T
            ts.append(s.expand(R, D).double())
        for k, (c, f) in enumerate(zip(comps, full)):
            self.m1[k] += ts[k].sum().item()
            if f:
                self.tok[k] += c.expand(R, T, D).sum(2).double().sum(0).numpy()
            else:
                self.tok[k] += c.expand(R, 1, D).sum().item()
            for l in range(k, self.n):
                cl, fl = comps[l], full[l]
                if f and fl:
                    v = (c * cl).sum().item()
                elif f:
                    v = (cl[:, 0, :].double() * ts[k]).sum().item()
                elif fl:
                    v = (c[:, 0, :].double() * ts[l]).sum().item()
                else:
                    v = T * (c[:, 0, :].double() * cl[:, 0, :].double()).expand(R, D).sum().item()
                self.m2[k, l] += v
                if l != k:
                    self.m2[l, k] += v
                t = (ts[k] * ts[l]).sum().item()
                self.tt[k, l] += t
                if l != k:
                    self.tt[l, k] += t
        self.nobs += R * D

    def stats(self, a: Sequence[float]) -> tuple[float, float, float]:
        """(mean, var, token cov) of ``sum_k a_k C_k``."""
        a = np.asarray(a, dtype=np.float64)
        N, T = self.nobs, self.T
        s1 = float(a @ self.m1)
        s2 = float(a @ self.m2 @ a)
        tt = float(a @ self.tt @ a)
        tok = a @ self.tok
        count = N * T
        mean = s1 / count
        var = s2 / count - mean * mean
        all_cov = (tt - s1 * s1 / N) / (N - 1)
        diag_cov = (s2 - float(tok @ tok) / N) / (N - 1)
        cov = (all_cov - diag_cov) / (T * (T - 1)) if T > 1 else 0.0
        return mean, var, cov


def _direct_stats(y: torch.Tensor) -> tuple[float, float, float]:
    acc = _LinAcc(1, y.shape[1])
    acc.add([y])
    return acc.stats([1.0])


def _eqc(gen: torch.Generator, R: int, T: int, D: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shared and per-token standard normal parts of an equicorrelated sample: (R, 1, D), (R, T, D)."""
    return torch.randn(R, 1, D, generator=gen), torch.randn(R, T, D, generator=gen)


def _chunks(R: int, per_run: int, budget: int = 12_000_000) -> list[tuple[int, int]]:
    step = max(1, min(R, budget // max(per_run, 1)))
    return [(i, min(R, i + step)) for i in range(0, R, step)]


# ----------------------------------------------------------------------------------------------------------
# Grids
# ----------------------------------------------------------------------------------------------------------
def _logspace(a: float, b: float, n: int) -> tuple[float, ...]:
    return tuple(float(v) for v in np.logspace(a, b, num=n, endpoint=True))


def _ints(a: float, b: float, n: int) -> tuple[int, ...]:
    return tuple(int(v) for v in np.logspace(a, b, num=n, endpoint=True, dtype=np.int32))


def _lin(n: int) -> tuple[float, ...]:
    return tuple(float(v) for v in np.linspace(0.0, 1.0, num=n, endpoint=False))


_SX3 = _logspace(-0.5, 0.5, 3)  # 0.316, 1, 3.16
_D3 = _ints(2, 3, 3)  # 100, 316, 1000


@dataclass(frozen=True)
class GridSpec:
    """A component's grid: ``axes`` (ordered), which of them are ``outer`` (fresh draw per value), the
    per-configuration sample size ``runs`` and the number of independent draws per outer point."""

    axes: dict[str, tuple]
    outer: tuple[str, ...]
    runs: int
    replicas: int = 1
    note: str = ""
    sample: int | None = None  # keep only this many outer points, drawn with a fixed seed


    @property
    def n_configs(self) -> int:
        return int(np.prod([len(v) for v in self.axes.values()]))


FULL_GRIDS: dict[str, GridSpec] = {
    "linear": GridSpec(
        {"mu": _logspace(-1, 1, 3), "sx": _SX3, "r": _lin(3), "sw": _logspace(-1, 1, 3), "sg": _SX3, "rho": _lin(3), "d1": _D3, "d2": _D3, "L": _ints(2, 3, 2)},
        outer=("d1", "d2", "L"), runs=100, replicas=27,
        note="100 runs with fresh weights per run; 27 independent draws per (d1, d2, L), 27 configurations each",
    ),
    "relu": GridSpec(
        {"sx": _SX3, "r": _lin(5), "sg": _SX3, "rho": _lin(5), "L": _ints(2, 3, 2)},
        outer=("sx", "r", "L"), runs=10_000, replicas=15, note="10^4 runs, every configuration its own draw",
    ),
    "gelu": GridSpec(
        {"sx": _SX3, "r": _lin(5), "sg": _SX3, "rho": _lin(5), "L": _ints(2, 3, 2)},
        outer=("sx", "r", "L"), runs=100_000, replicas=5, note="10^5 runs; 5 draws per (sx, r, L), 3 configurations each",
    ),
    "layernorm": GridSpec(
        {"mu": tuple(float(v) for v in np.linspace(-10, 10, 3, endpoint=False)), "sx": _SX3, "r": _lin(5), "sg": _SX3, "rho": _lin(5), "d": _D3, "L": _ints(2, 3, 2)},
        outer=("mu", "sx", "r", "d", "L"), runs=100, replicas=1, note="100 runs; one draw per (mu, sx, r, d, L), shared by its 15 (sg, rho)",
    ),
    "dropout": GridSpec(
        {"mu": tuple(float(v) for v in np.linspace(-10, 10, 3)), "sx": _SX3, "r": _lin(3), "sg": _SX3, "rho": _lin(3), "p": _lin(3), "d": _D3, "L": _ints(2, 3, 2)},
        outer=("p", "d", "L"), runs=100, replicas=9, note="100 runs; 9 draws per (p, d, L), 27 configurations each",
    ),
    "softmax": GridSpec(
        {"sx": _logspace(-2, 0, 5), "r": _lin(5), "sg": _logspace(-0.5, 0.5, 5), "L": _ints(math.log10(300), 4, 5)},
        outer=("sx", "r", "L"), runs=10_000, replicas=5, note="batch 10^4, every configuration its own draw",
    ),
    "attention": GridSpec(
        {"r": _lin(3), "sv": _SX3, "sq": _logspace(-1, math.log10(0.6), 3), "p": _lin(3), "sg": _SX3, "rho": _lin(3), "d": _D3, "dk": (32, 64, 128, 256), "L": _ints(math.log10(300), 3, 3)},
        outer=("r", "sq", "p", "d", "dk", "L"), runs=64, replicas=1,
        note="batch 64, one weight draw per configuration; one draw per (r, sq, p, d, dk, L), shared by the 27 (sv, sg, rho)",
    ),
}


def _sub(
    spec: GridSpec, replicas: int | None = None, runs: int | None = None, note: str = "", sample: int | None = None, **axes: tuple
) -> GridSpec:
    new_axes = dict(spec.axes)
    for k, v in axes.items():  # pick the full grid's own values (exact floats) closest to the requested ones
        picked = []
        for x in v:
            best = min(new_axes[k], key=lambda g: abs(g - x))
            assert abs(best - x) <= 1e-6 * max(1.0, abs(x)), (k, x)
            picked.append(best)
        new_axes[k] = tuple(picked)
    return GridSpec(new_axes, spec.outer, runs or spec.runs, replicas or spec.replicas, note, sample)


_F = FULL_GRIDS
REDUCED_GRIDS: dict[str, GridSpec] = {
    "linear": _sub(_F["linear"], replicas=9, d1=(316, 1000), d2=(316,), L=(100,), note="d1 in {316, 1000}, d2 = 316, L = 100; 9 draws per point"),
    "relu": _sub(_F["relu"], replicas=5, L=(100,), note="L = 100; 5 draws per (sx, r)"),
    "gelu": _sub(_F["gelu"], replicas=1, L=(100,), note="L = 100; one draw per (sx, r)"),
    "layernorm": _sub(_F["layernorm"], replicas=1, mu=(-10.0, 10.0 / 3), r=(0.0, 0.4, 0.8), d=(100, 316), L=(100,), note="mu in {-10, 3.33}, r in {0, .4, .8}, d in {100, 316}, L = 100"),
    "dropout": _sub(_F["dropout"], runs=150, replicas=3, d=(1000,), L=(100,), note="d = 1000, L = 100, 150 runs (1.5x the authors'); 3 draws per p"),
    "softmax": _sub(_F["softmax"], runs=1000, replicas=1, sample=40, note="40 of the 125 (sx, r, L) points drawn with a fixed seed; batch 1000; one draw per point"),
    "attention": _sub(_F["attention"], d=(316,), dk=(128,), L=(300,), note="d = 316, d_k = 128, L = 300"),
}


def _configs(spec: GridSpec) -> list[dict[str, Any]]:
    keys = list(spec.axes)
    return [dict(zip(keys, vals)) for vals in itertools.product(*spec.axes.values())]


def _seed(*parts: Any) -> int:
    return zlib.crc32(repr(parts).encode()) & 0x7FFFFFFF


# ----------------------------------------------------------------------------------------------------------
# Simulators: (outer config, inner configs, runs, generator) -> measured dicts
# ----------------------------------------------------------------------------------------------------------
def _sim_linear(o: dict, inner: list[dict], R: int, gen: torch.Generator) -> list[dict]:
    d1, d2, L = o["d1"], o["d2"], o["L"]
    fwd, bwd = _LinAcc(3, L), _LinAcc(2, L)
    for a, b in _chunks(R, L * max(d1, d2) + d1 * d2):
        r = b - a
        W = torch.randn(r, d1, d2, generator=gen) / math.sqrt(d1)  # raw sigma 1; sw scales
        z0, Z = _eqc(gen, r, L, d1)
        fwd.add([W.sum(1, keepdim=True), z0 @ W, Z @ W])
        g0, Gz = _eqc(gen, r, L, d2)
        Wt = W.transpose(1, 2)
        bwd.add([g0 @ Wt, Gz @ Wt])
    out = []
    for c in inner:
        sw = c["sw"]
        xm, xv, xc = fwd.stats([sw * c["mu"], sw * c["sx"] * math.sqrt(c["r"]), sw * c["sx"] * math.sqrt(1 - c["r"])])
        gm, gv, gc = bwd.stats([sw * c["sg"] * math.sqrt(c["rho"]), sw * c["sg"] * math.sqrt(1 - c["rho"])])
        out.append({"x mean": xm, "x var": xv, "x cov": xc, "g var": gv, "g cov": gc})
    return out


def _gelu_t(x: torch.Tensor) -> torch.Tensor:
    return x / 2 * (1 + torch.special.erf(x / math.sqrt(2.0)))


def _gelu_grad_t(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.special.erf(x / math.sqrt(2.0))) + x * torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _sim_act(kind: str, o: dict, inner: list[dict], R: int, gen: torch.Generator) -> list[dict]:
    sx, r, L = o["sx"], o["r"], o["L"]
    mu = o.get("mu", 0.0)
    fwd, bwd = _LinAcc(1, L), _LinAcc(2, L)
    for a, b in _chunks(R, L, budget=4_000_000):
        n = b - a
        z0, Z = _eqc(gen, n, L, 1)
        x = mu + sx * (math.sqrt(r) * z0 + math.sqrt(1 - r) * Z)
        if kind == "relu":
            y, dy = torch.relu(x), (x > 0).float()
        else:
            y, dy = _gelu_t(x), _gelu_grad_t(x)
        fwd.add([y])
        g0, Gz = _eqc(gen, n, L, 1)
        bwd.add([dy * g0, dy * Gz])
    xm, xv, xc = fwd.stats([1.0])
    out = []
    for c in inner:
        _, gv, gc = bwd.stats([c["sg"] * math.sqrt(c["rho"]), c["sg"] * math.sqrt(1 - c["rho"])])
        out.append({"x mean": xm, "x var": xv, "x cov": xc, "g var": gv, "g cov": gc})
    return out


def _ln_backward(g: torch.Tensor, yhat: torch.Tensor, inv_sigma: torch.Tensor) -> torch.Tensor:
    """d/dx of sum(LN(x) * g) for LN without affine: (g - mean(g) - yhat mean(g yhat)) / sigma."""
    return inv_sigma * (g - g.mean(-1, keepdim=True) - yhat * (g * yhat).mean(-1, keepdim=True))


def _sim_layernorm(o: dict, inner: list[dict], R: int, gen: torch.Generator) -> list[dict]:
    mu, sx, r, d, L = o["mu"], o["sx"], o["r"], o["d"], o["L"]
    fwd, feat, bwd = _LinAcc(1, L), _LinAcc(1, d), _LinAcc(2, L)
    eps = 1e-5
    for a, b in _chunks(R, L * d):
        n = b - a
        z0, Z = _eqc(gen, n, L, d)
        x = mu + sx * (math.sqrt(r) * z0 + math.sqrt(1 - r) * Z)
        y = torch.nn.functional.layer_norm(x, (d,), eps=eps)
        fwd.add([y])
        feat.add([y.transpose(1, 2)])
        var = x.var(-1, unbiased=False, keepdim=True)
        inv = torch.rsqrt(var + eps)
        g0, Gz = _eqc(gen, n, L, d)
        bwd.add([_ln_backward(g0.expand(n, L, d), y, inv), _ln_backward(Gz, y, inv)])
    xm, xv, xc = fwd.stats([1.0])
    _, _, xcd = feat.stats([1.0])
    out = []
    for c in inner:
        _, gv, gc = bwd.stats([c["sg"] * math.sqrt(c["rho"]), c["sg"] * math.sqrt(1 - c["rho"])])
        out.append({"x mean": xm, "x var": xv, "x cov": xc, "x covd": xcd, "g var": gv, "g cov": gc})
    return out


def _sim_dropout(o: dict, inner: list[dict], R: int, gen: torch.Generator) -> list[dict]:
    p, d, L = o["p"], o["d"], o["L"]
    fwd, bwd = _LinAcc(3, L), _LinAcc(2, L)
    for a, b in _chunks(R, L * d):
        n = b - a
        M = (torch.rand(n, L, d, generator=gen) >= p).float() / (1.0 - p)
        z0, Z = _eqc(gen, n, L, d)
        fwd.add([M, M * z0, M * Z])
        g0, Gz = _eqc(gen, n, L, d)
        bwd.add([M * g0, M * Gz])
    out = []
    for c in inner:
        xm, xv, xc = fwd.stats([c["mu"], c["sx"] * math.sqrt(c["r"]), c["sx"] * math.sqrt(1 - c["r"])])
        _, gv, gc = bwd.stats([c["sg"] * math.sqrt(c["rho"]), c["sg"] * math.sqrt(1 - c["rho"])])
        out.append({"x mean": xm, "x var": xv, "x cov": xc, "g var": gv, "g cov": gc})
    return out


def _sim_softmax(o: dict, inner: list[dict], R: int, gen: torch.Generator) -> list[dict]:
    sx, r, L = o["sx"], o["r"], o["L"]
    s1 = s2 = g1 = g2 = 0.0
    count = 0
    c = 1.0 / L  # shift: E[P^2] - mean^2 == E[(P-c)^2] - (mean-c)^2, without float32 cancellation
    for a, b in _chunks(R, L, budget=4_000_000):
        n = b - a
        z0, Z = torch.randn(n, 1, generator=gen), torch.randn(n, L, generator=gen)
        x = sx * (math.sqrt(r) * z0 + math.sqrt(1 - r) * Z)
        P = torch.softmax(x, -1)
        G = torch.randn(n, L, generator=gen)
        dx = P * (G - (P * G).sum(-1, keepdim=True))
        Pc = P - c
        s1 += Pc.sum().item()
        s2 += (Pc * Pc).sum().item()
        g1 += dx.sum().item()
        g2 += (dx * dx).sum().item()
        count += n * L
    xm_c = s1 / count
    xv = s2 / count - xm_c * xm_c
    gm = g1 / count
    gv0 = g2 / count - gm * gm
    return [{"x mean": xm_c + c, "x var": xv, "g var": gv0 * ci["sg"] ** 2} for ci in inner]


def _attn_kernel(
    X: torch.Tensor,
    Wq: torch.Tensor,
    Wk: torch.Tensor,
    Wv: torch.Tensor,
    p: float,
    gen: torch.Generator,
    grads: Sequence[torch.Tensor],
    causal: bool = False,
    mem: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Forward and hand-written backward of single-head attention for several upstream gradients.

    ``X``: (R, L, d) queries (and keys/values when ``mem`` is None); ``mem``: (R, Lm, d_m). Gradients of shape
    (R, 1, d_k) (shared by all tokens) or (R, L, d_k). Returns the output, the input gradients (queries) and
    the memory gradients (empty list without ``mem``).
    """
    src = X if mem is None else mem
    dk = Wq.shape[1]
    scale = 1.0 / math.sqrt(dk)
    Q, K, V = X @ Wq, src @ Wk, src @ Wv
    S = (Q @ K.transpose(1, 2)) * scale
    if causal:
        Lq, Lk = S.shape[1], S.shape[2]
        S = S.masked_fill(torch.ones(Lq, Lk, dtype=torch.bool).triu(1), float("-inf"))
    P = torch.softmax(S, -1)
    if p > 0:
        Dm = (torch.rand(P.shape, generator=gen) >= p).float() / (1.0 - p)
        A = P * Dm
    else:
        Dm, A = None, P
    Y = A @ V
    dxs, dms = [], []
    for G in grads:
        if G.shape[1] == 1:  # shared gradient: dA_ij = g . v_j for every query i
            dA = (V @ G.transpose(1, 2)).transpose(1, 2)  # (R, 1, Lk)
            dV = A.sum(1).unsqueeze(-1) * G  # (R, Lk, dk)
        else:
            dA = G @ V.transpose(1, 2)
            dV = A.transpose(1, 2) @ G
        dP = dA * Dm if Dm is not None else dA.expand_as(P)
        dS = P * (dP - (P * dP).sum(-1, keepdim=True))
        dS = dS * scale
        dQ = dS @ K
        dK = dS.transpose(1, 2) @ Q
        if mem is None:
            dxs.append(dQ @ Wq.T + dK @ Wk.T + dV @ Wv.T)
        else:
            dxs.append(dQ @ Wq.T)
            dms.append(dK @ Wk.T + dV @ Wv.T)
    return Y, dxs, dms


def _sim_attention(o: dict, inner: list[dict], R: int, gen: torch.Generator, causal: bool = False) -> list[dict]:
    r, sq, p, d, dk, L = o["r"], o["sq"], o["p"], o["d"], o["dk"], o["L"]
    mu, sx = o.get("mu", 0.0), o.get("sx", 1.0)
    Wq = torch.randn(d, dk, generator=gen) * (sq / math.sqrt(d))
    Wk = torch.randn(d, dk, generator=gen) * (sq / math.sqrt(d))
    Wv = torch.randn(d, dk, generator=gen) / math.sqrt(d)  # sv scales outputs and gradients linearly
    fwd, bwd = _LinAcc(1, L), _LinAcc(2, L)
    for a, b in _chunks(R, L * L, budget=6_000_000):
        n = b - a
        z0, Z = _eqc(gen, n, L, d)
        X = mu + sx * (math.sqrt(r) * z0 + math.sqrt(1 - r) * Z)
        g0, Gz = _eqc(gen, n, L, dk)
        Y, dxs, _ = _attn_kernel(X, Wq, Wk, Wv, p, gen, [g0, Gz], causal=causal)
        fwd.add([Y])
        bwd.add(dxs)
    m1, v1, c1 = fwd.stats([1.0])
    out = []
    for c in inner:
        sv = c["sv"]
        _, gv, gc = bwd.stats([sv * c["sg"] * math.sqrt(c["rho"]), sv * c["sg"] * math.sqrt(1 - c["rho"])])
        out.append({"x mean": sv * m1, "x var": sv * sv * v1, "x cov": sv * sv * c1, "g var": gv, "g cov": gc})
    return out


# ----------------------------------------------------------------------------------------------------------
# Predictions and errors
# ----------------------------------------------------------------------------------------------------------
def _M(c: dict, mu: float = 0.0) -> C.Moments:
    return C.Moments(c.get("mu", mu), c["sx"] ** 2, c["r"], c["sg"] ** 2, c.get("rho", 0.0))


def _err_std(meas: dict, pred: dict, suffix: str = "", g_cov_rel: bool = False) -> dict[str, float]:
    """x mean (vs pred var), x var, g var (relative), x cov (vs pred var), g cov (vs pred grad var)."""
    pv, pg = pred["x var" + suffix], pred["g var" + suffix]
    return {
        "x mean" + suffix: calc_err(meas["x mean"], pred["x mean" + suffix], pv),
        "x var" + suffix: calc_err(meas["x var"], pv),
        "g var" + suffix: calc_err(meas["g var"], pg),
        "x cov" + suffix: calc_err(meas["x cov"], pred["x cov" + suffix], pv),
        "g cov" + suffix: calc_err(meas["g cov"], pred["g cov" + suffix]) if g_cov_rel else calc_err(meas["g cov"], pred["g cov" + suffix], pg),
    }


def _pred_from(m: C.Moments, suffix: str = "") -> dict[str, float]:
    return {"x mean" + suffix: m.mean, "x var" + suffix: m.var, "x cov" + suffix: m.cov, "g var" + suffix: m.grad_var, "g cov" + suffix: m.grad_cov}


def _errors_linear(c: dict, meas: dict) -> dict[str, float]:
    sw2 = c["sw"] ** 2 / c["d1"]
    out = C.linear(_M(c), c["d1"], c["d2"], sw2)
    return _err_std(meas, _pred_from(out))


def _errors_act(kind: str, c: dict, meas: dict) -> dict[str, float]:
    f = C.relu if kind == "relu" else C.gelu
    return _err_std(meas, _pred_from(f(_M(c))))


def _errors_layernorm(c: dict, meas: dict) -> dict[str, float]:
    m = _M(c)
    res = {}
    for suffix, fin in (("", True), (" (paper)", False)):
        out = C.layernorm(m, c["d"], eps=1e-5 if fin else 0.0, finite_d=fin)
        res["x mean" + suffix] = calc_err(meas["x mean"], 0.0, 1.0)
        res["x var" + suffix] = calc_err(meas["x var"], out.var if fin else 1.0)
        res["g var" + suffix] = calc_err(meas["g var"], out.grad_var)
        res["x cov" + suffix] = calc_err(meas["x cov"], out.cov, 1.0)
        res["x covd" + suffix] = calc_err(meas["x covd"], C.layernorm_feature_corr(c["d"]), 1.0)
        res["g cov" + suffix] = calc_err(meas["g cov"], out.grad_cov, out.grad_var)
    return res


def _errors_dropout(c: dict, meas: dict) -> dict[str, float]:
    return _err_std(meas, _pred_from(C.dropout(_M(c), c["p"])))


def _errors_softmax(c: dict, meas: dict) -> dict[str, float]:
    m = C.Moments(0.0, c["sx"] ** 2, c["r"], c["sg"] ** 2, 0.0)
    full, approx, impr = (C.softmax(m, c["L"], variant=v) for v in ("full", "approx", "improved"))
    return {
        "x mean": softmax_err(meas["x mean"], full.mean),
        "x var full": softmax_err(meas["x var"], full.var),
        "x var approx": softmax_err(meas["x var"], approx.var),
        "g var full": softmax_err(meas["g var"], full.grad_var),
        "g var approx": softmax_err(meas["g var"], approx.grad_var),
        "x var improved": softmax_err(meas["x var"], impr.var),
        "g var improved": softmax_err(meas["g var"], impr.grad_var),
    }


def _attn_pred(c: dict, variant: str, causal: bool = False) -> C.Moments:
    d = c["d"]
    m = C.Moments(c.get("mu", 0.0), c.get("sx", 1.0) ** 2, c["r"], c["sg"] ** 2, c["rho"])
    return C.attention(
        m, d=d, d_k=c["dk"], seq_len=c["L"], sigma_q2=c["sq"] ** 2 / d, sigma_k2=c["sq"] ** 2 / d,
        sigma_v2=c["sv"] ** 2 / d, attn_drop=c["p"], causal=causal, variant=variant,
    )


def _errors_attention(c: dict, meas: dict) -> dict[str, float]:
    res = _err_std(meas, _pred_from(_attn_pred(c, "improved")), g_cov_rel=True)
    res.update(_err_std(meas, _pred_from(_attn_pred(c, "paper"), " (paper)"), " (paper)", g_cov_rel=True))
    return res


def _errors_causal(c: dict, meas: dict) -> dict[str, float]:
    return _err_std(meas, _pred_from(_attn_pred(c, "improved", causal=True)), g_cov_rel=True)


# ----------------------------------------------------------------------------------------------------------
# Extras (beyond the paper's suite): direct per-configuration simulations
# ----------------------------------------------------------------------------------------------------------
def _sim_cross(o: dict, inner: list[dict], R: int, gen: torch.Generator) -> list[dict]:
    c = o
    d, dm, dk, Lq, Lm = c["d"], c["dm"], c["dk"], c["L"], c["Lm"]
    Wq = torch.randn(d, dk, generator=gen) * (c["sq"] / math.sqrt(d))
    Wk = torch.randn(dm, dk, generator=gen) * (c["sq"] / math.sqrt(dm))
    Wv = torch.randn(dm, dk, generator=gen) / math.sqrt(dm)
    fwd, bq, bm = _LinAcc(1, Lq), _LinAcc(2, Lq), _LinAcc(2, Lm)
    for a, b in _chunks(R, Lq * Lm, budget=6_000_000):
        n = b - a
        z0, Z = _eqc(gen, n, Lq, d)
        X = c["sx"] * (math.sqrt(c["r"]) * z0 + math.sqrt(1 - c["r"]) * Z)
        y0, Y0 = _eqc(gen, n, Lm, dm)
        Mem = c["sm"] * (math.sqrt(c["rm"]) * y0 + math.sqrt(1 - c["rm"]) * Y0)
        g0, Gz = _eqc(gen, n, Lq, dk)
        Y, dxs, dms = _attn_kernel(X, Wq, Wk, Wv, c["p"], gen, [g0, Gz], mem=Mem)
        fwd.add([Y])
        bq.add(dxs)
        bm.add(dms)
    xm, xv, xc = fwd.stats([1.0])
    out = []
    for ci in inner:
        sv, sg, rho = ci["sv"], ci["sg"], ci["rho"]
        a = [sv * sg * math.sqrt(rho), sv * sg * math.sqrt(1 - rho)]
        _, gv, gc = bq.stats(a)
        _, mv, mc = bm.stats(a)
        out.append({"x mean": sv * xm, "x var": sv * sv * xv, "x cov": sv * sv * xc, "g var": gv, "g cov": gc, "m var": mv, "m cov": mc})
    return out


def _errors_cross(c: dict, meas: dict) -> dict[str, float]:
    d, dm = c["d"], c["dm"]
    m = C.Moments(0.0, c["sx"] ** 2, c["r"], c["sg"] ** 2, c["rho"])
    mem = C.Moments(0.0, c["sm"] ** 2, c["rm"], 0.0, 0.0)
    kw = dict(d=d, d_k=c["dk"], sigma_q2=c["sq"] ** 2 / d, sigma_k2=c["sq"] ** 2 / dm, sigma_v2=c["sv"] ** 2 / dm, attn_drop=c["p"], d_mem=dm)
    out = C.cross_attention(m, mem, mem_len=c["Lm"], **kw)
    mg = C.cross_attention_memory_grad(m, mem, seq_len=c["L"], mem_len=c["Lm"], **kw)
    res = _err_std(meas, _pred_from(out))
    res["m var"] = calc_err(meas["m var"], mg.grad_var)
    res["m cov"] = calc_err(meas["m cov"], mg.grad_cov)
    return res


def _torch_stats_autograd(fn: Callable[[torch.Tensor], torch.Tensor], X: torch.Tensor, G: torch.Tensor) -> dict[str, float]:
    X = X.detach().requires_grad_(True)
    Y = fn(X)
    (Y * G).sum().backward()
    xm, xv, xc = _direct_stats(Y.detach())
    _, gv, gc = _direct_stats(X.grad)
    return {"x mean": xm, "x var": xv, "x cov": xc, "g var": gv, "g cov": gc}


def _sample(gen: torch.Generator, R: int, L: int, D: int, mu: float, s: float, r: float) -> torch.Tensor:
    z0, Z = _eqc(gen, R, L, D)
    return mu + s * (math.sqrt(r) * z0 + math.sqrt(1 - r) * Z)


def _sim_mha(o: dict, inner: list[dict], R: int, gen: torch.Generator) -> list[dict]:
    d, H, L, p = o["d"], o["H"], o["L"], o["p"]
    dk = d // H
    sq, sv, so = o["sq"] / math.sqrt(d), o["sv"] / math.sqrt(d), 1.0 / math.sqrt(d)
    Wq, Wk, Wv = (torch.randn(H, d, dk, generator=gen) * s for s in (sq, sq, sv))
    Wo = torch.randn(d, d, generator=gen) * so
    causal = bool(o.get("causal", False))

    def fn(X: torch.Tensor) -> torch.Tensor:
        Q = torch.einsum("rld,hdk->rhlk", X, Wq)
        K = torch.einsum("rld,hdk->rhlk", X, Wk)
        V = torch.einsum("rld,hdk->rhlk", X, Wv)
        S = Q @ K.transpose(-1, -2) / math.sqrt(dk)
        if causal:
            S = S.masked_fill(torch.ones(L, L, dtype=torch.bool).triu(1), float("-inf"))
        A = torch.softmax(S, -1)
        if p > 0:
            A = A * (torch.rand(A.shape, generator=gen) >= p).float() / (1 - p)
        Y = (A @ V).transpose(1, 2).reshape(X.shape[0], L, d)
        return Y @ Wo

    X = _sample(gen, R, L, d, 0.0, 1.0, o["r"])
    G = _sample(gen, R, L, d, 0.0, 1.0, o["rho"])
    return [_torch_stats_autograd(fn, X, G)]


def _errors_mha(c: dict, meas: dict) -> dict[str, float]:
    d = c["d"]
    m = C.Moments(0.0, 1.0, c["r"], 1.0, c["rho"])
    out = C.multi_head_attention(
        m, d=d, n_heads=c["H"], seq_len=c["L"], sigma_q2=c["sq"] ** 2 / d, sigma_k2=c["sq"] ** 2 / d,
        sigma_v2=c["sv"] ** 2 / d, sigma_o2=1.0 / d, attn_drop=c["p"], causal=bool(c.get("causal", False)),
    )
    return _err_std(meas, _pred_from(out), g_cov_rel=True)


def _sim_ffn(o: dict, inner: list[dict], R: int, gen: torch.Generator) -> list[dict]:
    d, L, p, act = o["d"], o["L"], o["p"], o["act"]
    dff = 4 * d
    W1 = torch.randn(d, dff, generator=gen) * (o["s1"] / math.sqrt(d))
    W2 = torch.randn(dff, d, generator=gen) * (1.0 / math.sqrt(dff))
    f = torch.relu if act == "relu" else _gelu_t

    def fn(X: torch.Tensor) -> torch.Tensor:
        Y = f(X @ W1) @ W2
        if p > 0:
            Y = Y * (torch.rand(Y.shape, generator=gen) >= p).float() / (1 - p)
        return Y

    X = _sample(gen, R, L, d, 0.0, 1.0, o["r"])
    G = _sample(gen, R, L, d, 0.0, 1.0, o["rho"])
    return [_torch_stats_autograd(fn, X, G)]


def _errors_ffn(c: dict, meas: dict) -> dict[str, float]:
    d = c["d"]
    out = C.ffn(C.Moments(0.0, 1.0, c["r"], 1.0, c["rho"]), d=d, d_ff=4 * d, sigma1_2=c["s1"] ** 2 / d, sigma2_2=1.0 / (4 * d), activation=c["act"], p=c["p"])
    return _err_std(meas, _pred_from(out))


def _zipf_probs(V: int, a: float) -> np.ndarray:
    w = 1.0 / np.arange(1, V + 1) ** a
    return w / w.sum()


def _sim_embedding(o: dict, inner: list[dict], R: int, gen: torch.Generator) -> list[dict]:
    V, L, a, p = o["V"], o["L"], o["zipf"], o["p"]
    probs = torch.tensor(_zipf_probs(V, a), dtype=torch.float32)
    d = 64
    s2 = (0.5, 0.3, 0.2)
    acc = _LinAcc(1, L)
    for _ in range(R):
        word = torch.randn(V, d, generator=gen) * math.sqrt(s2[0])
        pos = torch.randn(L, d, generator=gen) * math.sqrt(s2[1])
        seg = torch.randn(2, d, generator=gen) * math.sqrt(s2[2])
        ids = torch.multinomial(probs, 32 * L, replacement=True, generator=gen).view(32, L)
        cut = torch.randint(1, L, (32, 1), generator=gen)
        segid = (torch.arange(L)[None, :] >= cut).long()
        E = word[ids] + pos[None] + seg[segid]
        if p > 0:
            E = E * (torch.rand(E.shape, generator=gen) >= p).float() / (1 - p)
        acc.add([E])
    xm, xv, xc = acc.stats([1.0])
    return [{"x mean": xm, "x var": xv, "x cov": xc}]


def _segment_same_prob(L: int) -> float:
    """P(two distinct positions share a segment) when the cut is uniform on 1..L-1 (segment 0 = [0, cut))."""
    tot = 0.0
    for cut in range(1, L):
        n0, n1 = cut, L - cut
        tot += (n0 * (n0 - 1) + n1 * (n1 - 1)) / (L * (L - 1))
    return tot / (L - 1)


def _errors_embedding(c: dict, meas: dict) -> dict[str, float]:
    probs = _zipf_probs(c["V"], c["zipf"])
    out = C.embedding([0.5, 0.3, 0.2], [C.collision_probability(probs.tolist()), 0.0, _segment_same_prob(c["L"])], p=c["p"])
    return {"x mean": calc_err(meas["x mean"], 0.0, out.var), "x var": calc_err(meas["x var"], out.var), "x cov": calc_err(meas["x cov"], out.cov, out.var)}


def _sim_residual_layers(o: dict, inner: list[dict], R: int, gen: torch.Generator) -> list[dict]:
    """A stack of Pre-LN or Post-LN transformer layers (single-head attention + ReLU FFN, dropout p)."""
    d, L, p, n, norm, lam, beta = o["d"], o["L"], o["p"], o["n"], o["norm"], o["lam"], o["beta"]
    dff = 4 * d
    layers = []
    for _ in range(n):
        layers.append(
            dict(
                Wq=torch.randn(d, d, generator=gen) / math.sqrt(d), Wk=torch.randn(d, d, generator=gen) / math.sqrt(d),
                Wv=torch.randn(d, d, generator=gen) * (o["sv"] / math.sqrt(d)), Wo=torch.randn(d, d, generator=gen) / math.sqrt(d),
                W1=torch.randn(d, dff, generator=gen) * math.sqrt(2.0 / d), W2=torch.randn(dff, d, generator=gen) / math.sqrt(dff),
            )
        )

    def drop(Y: torch.Tensor) -> torch.Tensor:
        return Y * (torch.rand(Y.shape, generator=gen) >= p).float() / (1 - p) if p > 0 else Y

    def attn(X: torch.Tensor, w: dict) -> torch.Tensor:
        S = (X @ w["Wq"]) @ (X @ w["Wk"]).transpose(1, 2) / math.sqrt(d)
        return drop((torch.softmax(S, -1) @ (X @ w["Wv"])) @ w["Wo"])

    def mlp(X: torch.Tensor, w: dict) -> torch.Tensor:
        return drop(torch.relu(X @ w["W1"]) @ w["W2"])

    def ln(X: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.layer_norm(X, (d,))

    def fn(X: torch.Tensor) -> torch.Tensor:
        for w in layers:
            for branch in (attn, mlp):
                X = lam * X + beta * branch(ln(X), w) if norm == "pre" else ln(lam * X + beta * branch(X, w))
        return X

    X = _sample(gen, R, L, d, 0.0, 1.0, o["r"])
    G = _sample(gen, R, L, d, 0.0, 1.0, 0.0)
    return [_torch_stats_autograd(fn, X, G)]


def _errors_residual_layers(c: dict, meas: dict) -> dict[str, float]:
    d, L, p = c["d"], c["L"], c["p"]
    att = functools.partial(C.multi_head_attention, d=d, n_heads=1, seq_len=L, sigma_q2=1.0 / d, sigma_k2=1.0 / d, sigma_v2=c["sv"] ** 2 / d, sigma_o2=1.0 / d)

    def att_drop(x: C.Moments) -> C.Moments:
        return C.chain(x, att, functools.partial(C.dropout, p=p))

    mlp = functools.partial(C.ffn, d=d, d_ff=4 * d, sigma1_2=2.0 / d, sigma2_2=1.0 / (4 * d), p=p)
    sub = C.pre_ln if c["norm"] == "pre" else C.post_ln
    layers = []
    for _ in range(c["n"]):
        for br in (att_drop, mlp):
            layers.append(functools.partial(sub, branch=br, d=d, lam=c["lam"], beta=c["beta"]))
    res = C.propagate(C.Moments(0.0, 1.0, c["r"], 1.0, 0.0), layers)
    out = res[-1]
    pred = {"x mean": out.mean, "x var": out.var, "x cov": out.cov, "g var": res[0].grad_var, "g cov": res[0].grad_cov}
    return _err_std(meas, pred, g_cov_rel=True)


def _sim_activation_mean(o: dict, inner: list[dict], R: int, gen: torch.Generator) -> list[dict]:
    return _sim_act(o["act"], o, inner, R, gen)


def _errors_activation_mean(c: dict, meas: dict) -> dict[str, float]:
    f = C.relu if c["act"] == "relu" else C.gelu
    return _err_std(meas, _pred_from(f(_M(c))))


EXTRA_GRIDS: dict[str, GridSpec] = {
    "causal_attention": GridSpec(
        {"r": (0.0, 1 / 3, 2 / 3), "sv": (1.0,), "sq": (0.245, 0.6, 1.0), "p": (0.0, 1 / 3), "sg": (1.0,), "rho": (0.0, 1 / 3, 2 / 3), "d": (100,), "dk": (32, 64), "L": (64, 256)},
        outer=("r", "sq", "p", "d", "dk", "L"), runs=64, replicas=1, note="causal mask; batch 64",
    ),
    "cross_attention": GridSpec(
        {"r": (0.0, 0.5), "sx": (1.0,), "rm": (0.0, 0.5), "sm": (0.7, 1.4), "sv": (1.0,), "sq": (0.245, 0.6), "p": (0.0, 1 / 3), "sg": (1.0,), "rho": (0.0, 0.5), "d": (100,), "dm": (100, 200), "dk": (64,), "L": (100,), "Lm": (150, 400)},
        outer=("r", "sx", "rm", "sm", "sq", "p", "d", "dm", "dk", "L", "Lm"), runs=32, replicas=1, note="independent memory; batch 32",
    ),
    "mha": GridSpec(
        {"d": (128,), "H": (4, 8), "L": (128,), "r": (0.0, 0.5), "sq": (0.6, 1.0), "sv": (1.0,), "p": (0.0, 1 / 3), "rho": (0.0, 0.5), "causal": (False, True)},
        outer=("d", "H", "L", "r", "sq", "sv", "p", "rho", "causal"), runs=32, replicas=1, note="W_O variance 1/d; batch 32",
    ),
    "ffn": GridSpec(
        {"d": (64, 128), "L": (64,), "act": ("relu", "gelu"), "s1": (0.7, 1.4), "r": (0.0, 0.5), "rho": (0.0, 0.5), "p": (0.0, 0.3)},
        outer=("d", "L", "act", "s1", "r", "rho", "p"), runs=64, replicas=1, note="d_ff = 4d; batch 64",
    ),
    "embedding": GridSpec(
        {"V": (50, 1000), "zipf": (1.0, 1.5), "L": (64,), "p": (0.0, 0.1)},
        outer=("V", "zipf", "L", "p"), runs=48, replicas=1, note="word (var .5) + position (.3) + segment (.2) tables; 48 table draws x 32 sequences",
    ),
    "residual_layers": GridSpec(
        {"norm": ("pre", "post"), "n": (4,), "d": (128,), "L": (64,), "p": (0.0, 0.1), "r": (0.2, 0.6), "sv": (1.0, 2.0), "lam": (1.0, math.sqrt(0.9)), "beta": (1.0,)},
        outer=("norm", "n", "d", "L", "p", "r", "sv", "lam", "beta"), runs=16, replicas=1, note="4 layers (8 sub-layers), attention + ReLU FFN; batch 16",
    ),
    "activation_mean": GridSpec(
        {"act": ("relu", "gelu"), "mu": (-1.0, 0.5, 2.0), "sx": (0.5, 1.5), "r": (0.0, 0.4, 0.8), "sg": (1.0,), "rho": (0.0, 0.5), "L": (100,)},
        outer=("act", "mu", "sx", "r", "L"), runs=10_000, replicas=2, note="non-zero input mean (Gauss-Hermite path); 10^4 runs",
    ),
}

# beta for the residual stacks is tied to lam: lam^2 + beta^2 = 1 when lam < 1 (DSLM); see _expand_residual.

_SIMULATORS: dict[str, Callable[..., list[dict]]] = {
    "linear": _sim_linear,
    "relu": functools.partial(_sim_act, "relu"),
    "gelu": functools.partial(_sim_act, "gelu"),
    "layernorm": _sim_layernorm,
    "dropout": _sim_dropout,
    "softmax": _sim_softmax,
    "attention": _sim_attention,
    "causal_attention": functools.partial(_sim_attention, causal=True),
    "cross_attention": _sim_cross,
    "mha": _sim_mha,
    "ffn": _sim_ffn,
    "embedding": _sim_embedding,
    "residual_layers": _sim_residual_layers,
    "activation_mean": _sim_activation_mean,
}

_ERRORS: dict[str, Callable[[dict, dict], dict[str, float]]] = {
    "linear": _errors_linear,
    "relu": functools.partial(_errors_act, "relu"),
    "gelu": functools.partial(_errors_act, "gelu"),
    "layernorm": _errors_layernorm,
    "dropout": _errors_dropout,
    "softmax": _errors_softmax,
    "attention": _errors_attention,
    "causal_attention": _errors_causal,
    "cross_attention": _errors_cross,
    "mha": _errors_mha,
    "ffn": _errors_ffn,
    "embedding": _errors_embedding,
    "residual_layers": _errors_residual_layers,
    "activation_mean": _errors_activation_mean,
}


# ----------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------
@dataclass
class SuiteResult:
    """Per-configuration errors of one component's suite and their percentiles (``seconds``: CPU time)."""

    component: str
    grid: str
    errors: dict[str, np.ndarray]
    configs: list[dict[str, Any]]
    n_draws: int
    seconds: float
    spec: GridSpec
    measured: list[dict[str, float]] = field(default_factory=list)

    @property
    def n_configs(self) -> int:
        return len(self.configs)

    def table(self) -> dict[str, tuple[float, ...]]:
        """{quantity: (P50, P90, P99)} in percent."""
        return {q: percentiles(e) for q, e in self.errors.items()}


def _spec_for(component: str, grid: str | GridSpec) -> GridSpec:
    if isinstance(grid, GridSpec):
        return grid
    if component in EXTRA_GRIDS:
        return EXTRA_GRIDS[component]
    if grid == "full":
        return FULL_GRIDS[component]
    if grid == "reduced":
        return REDUCED_GRIDS[component]
    raise ValueError(f"grid must be 'full', 'reduced' or a GridSpec, got {grid!r}")


def _expand_configs(component: str, spec: GridSpec) -> list[dict[str, Any]]:
    cfgs = _configs(spec)
    if component == "residual_layers":  # DSLM pairs: lam < 1 comes with beta = sqrt(1 - lam^2)
        for c in cfgs:
            if c["lam"] < 1.0:
                c["beta"] = math.sqrt(1.0 - c["lam"] ** 2)
    return cfgs


class _threads:
    """Temporarily set torch's intra-op thread count (None: leave it)."""

    def __init__(self, n: int | None) -> None:
        self.n, self.old = n, None

    def __enter__(self) -> None:
        if self.n is not None:
            self.old = torch.get_num_threads()
            torch.set_num_threads(self.n)

    def __exit__(self, *exc: Any) -> None:
        if self.old is not None:
            torch.set_num_threads(self.old)


def run_component(
    component: str,
    grid: str | GridSpec = "reduced",
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    keep_measured: bool = False,
    threads: int | None = 1,
    shard: tuple[int, int] | None = None,
) -> SuiteResult:
    """Run one component's suite. ``progress(n)`` is called with the number of configurations just finished.

    ``threads``: torch threads while running (default 1: on a shared 2-core machine multi-threaded reductions
    spin and run far slower; run several processes instead, see ``shard``). ``shard=(i, n)`` runs only the
    outer points ``i, i+n, i+2n, ...`` (the union of the n shards is the whole grid, with identical draws);
    merge shards with :func:`merge_results`.
    """
    with _threads(threads):
        return _run_component(component, grid, seed, progress, keep_measured, shard)


def merge_results(parts: Sequence[SuiteResult]) -> SuiteResult:
    """Concatenate the shards of one component's run (seconds: the sum of the shards' times)."""
    first = parts[0]
    errors = {q: np.concatenate([p.errors[q] for p in parts]) for q in first.errors}
    return SuiteResult(
        first.component, first.grid, errors, [c for p in parts for c in p.configs], sum(p.n_draws for p in parts),
        sum(p.seconds for p in parts), first.spec, [m for p in parts for m in p.measured],
    )


def _run_component(
    component: str,
    grid: str | GridSpec,
    seed: int,
    progress: Callable[[int], None] | None,
    keep_measured: bool,
    shard: tuple[int, int] | None,
) -> SuiteResult:
    if component not in _SIMULATORS:
        raise ValueError(f"unknown component {component!r}; choose from {sorted(_SIMULATORS)}")
    spec = _spec_for(component, grid)
    full_spec = FULL_GRIDS.get(component, spec)
    cfgs = _expand_configs(component, spec)
    outer_keys = spec.outer
    groups: dict[tuple, list[dict]] = {}
    for c in cfgs:
        groups.setdefault(tuple(c[k] for k in outer_keys), []).append(c)
    if spec.sample is not None and spec.sample < len(groups):
        keep = sorted(np.random.default_rng(_seed("sample", component)).choice(len(groups), spec.sample, replace=False))
        items = list(groups.items())
        groups = dict(items[i] for i in keep)
    # outer index in the *full* grid, so that a reduced run draws the same samples as the full one
    full_outer = list(itertools.product(*(full_spec.axes[k] for k in outer_keys))) if component in FULL_GRIDS else list(groups)
    index = {o: i for i, o in enumerate(full_outer)}
    sim, errf = _SIMULATORS[component], _ERRORS[component]
    errors: dict[str, list[float]] = {}
    kept, measured = [], []
    n_draws = 0
    t0 = time.process_time()
    for gi, (okey, members) in enumerate(groups.items()):
        if shard is not None and gi % shard[1] != shard[0]:
            continue
        outer = dict(zip(outer_keys, okey))
        K = max(1, min(spec.replicas, len(members)))
        for k in range(K):
            part = members[k::K]
            gen = torch.Generator().manual_seed(_seed(seed, component, index.get(okey, okey), k))
            meas = sim(outer, part, spec.runs, gen)
            n_draws += 1
            for c, mres in zip(part, meas):
                for q, e in errf(c, mres).items():
                    errors.setdefault(q, []).append(e)
                kept.append(c)
                if keep_measured:
                    measured.append(mres)
            if progress is not None:
                progress(len(part))
    return SuiteResult(component, grid if isinstance(grid, str) else "custom", {q: np.asarray(v) for q, v in errors.items()}, kept, n_draws, time.process_time() - t0, spec, measured)


def run_suite(
    components: Iterable[str] | None = None,
    grid: str = "reduced",
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> dict[str, SuiteResult]:
    """Run several components (default: the paper's seven)."""
    comps = list(components) if components is not None else list(PAPER_COMPONENTS)
    return {c: run_component(c, grid, seed, progress) for c in comps}


def n_configs(component: str, grid: str | GridSpec = "reduced") -> int:
    """Number of configurations of a component's grid (for progress bars)."""
    spec = _spec_for(component, grid)
    cfgs = _expand_configs(component, spec)
    if spec.sample is None:
        return len(cfgs)
    n_outer = len({tuple(c[k] for k in spec.outer) for c in cfgs})
    return len(cfgs) * min(spec.sample, n_outer) // n_outer


def _fmt(t: Sequence[float]) -> str:
    return ", ".join(f"{v:.1f}" if v >= 0.05 or v == 0 else f"{v:.1g}" for v in t)


def format_table(results: dict[str, SuiteResult], authors: bool = True) -> str:
    """Markdown table: component, quantity, ours [P50, P90, P99] (and the authors' numbers)."""
    lines = ["| component | quantity | ours [P50, P90, P99] % | authors [P50, P90, P99] % | configs | draws | seconds |", "|---|---|---|---|---|---|---|"]
    for name, res in results.items():
        ref = AUTHORS_ERRORS.get(name, {})
        for q, t in res.table().items():
            base = q.replace(" (paper)", "")
            a = ref.get(base)
            lines.append(f"| {name} | {q} | {_fmt(t)} | {_fmt(a) if (authors and a) else '-'} | {res.n_configs} | {res.n_draws} | {res.seconds:.0f} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# The d-versus-d_k question
# ----------------------------------------------------------------------------------------------------------
def check_width_divisor(
    seed: int = 0, runs: int = 64, configs: Sequence[tuple[int, int, int]] = ((316, 32, 1000), (1000, 32, 1000), (316, 128, 1000))
) -> list[dict[str, float]]:
    """Measure the single-head output variance where the ``ss2/d`` terms matter (ss2 = 1, r = 0; ``configs``
    are (d, d_k, L)) and compare the paper's bracket with d = model width and d = head width."""
    rows = []
    for d, dk, L in configs:
        c = {"r": 0.0, "sq": 1.0, "p": 0.0, "d": d, "dk": dk, "L": L}
        gen = torch.Generator().manual_seed(_seed(seed, "width", d, dk, L))
        meas = _sim_attention(c, [{"sv": 1.0, "sg": 1.0, "rho": 0.0}], runs, gen)[0]
        A_d, _ = C.attention_forward_brackets(0.0, L, 1.0, dk, model_dim=d)
        A_k, _ = C.attention_forward_brackets(0.0, L, 1.0, dk)
        rows.append({"d": d, "d_k": dk, "L": L, "measured": meas["x var"], "pred_model_width": A_d, "pred_head_width": A_k})
    return rows
