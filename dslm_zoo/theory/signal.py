"""Whole-model signal-propagation recursion over sub-layer specs: per-sub-layer forward variance, token
correlation and gradients. Pure math on :class:`SubSpec` / :class:`StackSpec` records; nothing here reads a model
(``dslm_zoo.diagnostics.predict`` turns a model, a name or a config into specs and calls :func:`predict_specs`).

Kedia et al. 2024 (arXiv:2403.09635); the recursions are those of ``shared/spec/dslm.md`` Sec. 3, with the
component moments of Sec. 2 generalised to arbitrary weight variances and finite width/length (derived here,
each piece checked against Monte Carlo of the component and of whole models, see tests/test_diagnostics.py):

* every sub-layer is read (by ``dslm_zoo.diagnostics.predict``) from the model itself: the residual scales (lambda, beta) of each ``Residual`` (timm:
  lambda = 1, beta^2 = mean square of the LayerScale gamma), and the *empirical* second moment of every weight
  (fused Q/K/V by row slice), so the prediction holds for any init scheme and after training too. A model on
  the meta device (or a model name / config) is read from the ``InitRule`` standard deviations that
  ``init_model`` returns, so a 1000-layer prediction allocates nothing;
* attention with input second moment u and token correlation r, logit variance ss2 = d^2 sq2 sk2 u^2 (q = 1-r),
  value/output gain G_vo = d^2 sv2 so2 (d the model width):
      out var = G_vo u A,  A = r + q^2 (L-1) ss2/(d L) + S (q (1 + 4 q ss2/d) + r p_a)/(1-p_a)
      out cov = G_vo u C,  C = r + (q + 2 q^2 ss2/d)/L
  where S = E[sum_j P_ij^2] is computed exactly (quadrature over the softmax of i.i.d. Gaussian logits of
  variance q ss2, not the paper's e^{q ss2}/L, which is 2x off at q ss2 >= 2). Causal attention is resolved
  per position (query i sees i keys): stream and gradient variances become vectors over positions;
* FFN with pre-activation variance t = d s1^2 u: out var = d_ff s2^2 E[phi^2]/(1-p_1), out cov = d_ff s2^2
  E[phi phi'] (ReLU / exact GeLU closed forms of Sec. 2);
* Pre-LN: v <- lambda^2 v + beta^2 var_branch/(1-p); Post-LN: the same sum, then LayerNorm;
* backward from an i.i.d. output gradient (loss = sum(out * G)): LayerNorm multiplies the gradient variance by
  (1 - k/d) E[1/s_t^2], k the directions it projects out that the gradient actually has (2 for an i.i.d.
  gradient, fewer inside Post-LN stacks), and E[1/s_t^2] = (1 + kappa)/s^2 with kappa the spread of the
  per-token variance (chi-square, dropout masks, how peaked each softmax row is, class tokens);
  FFN backward gain d s2^2 d_ff s1^2 E[phi'^2]; attention: the value path G_vo [S/(1-p_a) + rho (K2 - S)]
  (K2 = E[(column sum of P)^2]) plus, with ``qk_path=True``, the path through the logits (derived; the paper
  drops it, which underestimates the attention backward gain by 20-70%): queries G_vo ss2 q^2 T, keys
  G_vo ss2 q (T + rho r (K2 - S)), T = E[sum_j P_j^2 (1 - 2 P_j + S)] (quadrature as S);
* weight-gradient norms of each branch's output projection (W_O, FFN W2): for a d_in -> d_out matrix fed by
  inputs of second moment m and token cross-moment c, with output gradients of variance g and token
  correlation rho, E|dW|^2 = d_in d_out B (L m g + L (L-1) c g rho).

The result is a :class:`SignalPrediction`, one row per residual-stream point: the stack input (kind 'input'),
then every sub-layer output. ``dslm_zoo.diagnostics`` measures the same rows on real batches.

Known limits (measured): token correlations after causal layers are 5-10% low in the first layers (pairwise
correlations there are far from equal, and the FFN map is convex); the first attention layer of a ViT whose
patch projection has fan_in < d (a low-rank input) is 10-15% low; encoder-decoder gradients into the
encoder are modelled but not yet checked against a measurement.
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field, fields
from functools import lru_cache
from operator import attrgetter
from typing import Any, Sequence

from .components import (
    causal_mean_sq_mass, gelu_cross_moment, gelu_moments, local_rnn_moments, relu_corr_map, softmax_power_sums,
)

__all__ = [
    "SignalTable",
    "SignalPrediction",
    "SubSpec",
    "StackSpec",
    "predict_specs",
    "attention_moments",
    "attention_variance_and_cov",
    "softmax_sq_mass",
    "token_correlation",
    "check_predict_args",
]

COLUMNS = ("stack", "sublayer", "block", "kind", "fwd_var", "fwd_corr", "grad_var", "grad_corr", "wgrad_norm", "sum_var")
_FLOAT_COLUMNS = ("fwd_var", "fwd_corr", "grad_var", "grad_corr", "wgrad_norm", "sum_var")
_INT_COLUMNS = ("stack", "sublayer", "block")


# ---------------------------------------------------------------------------------------------------------------
# The table both predictions and measurements use.


@dataclass
class SignalTable:
    """Per-residual-point signal statistics; each column a list with one entry per row.

    Rows: for every stack, its input (``kind='input'``, ``sublayer=-1``, ``block=-1``) then every residual
    sub-layer's output (``kind`` 'attn' | 'cross_attn' | 'ffn'). ``fwd_var``: variance of the residual stream
    (``torch.var``); ``fwd_corr``: token-token correlation; ``grad_var`` / ``grad_corr``: the same for the
    gradient of ``loss = sum(out * G)``; ``wgrad_norm``: Frobenius norm of the gradient of the sub-layer's output
    projection (attention W_O / FFN W2; nan on input rows); ``sum_var``: variance of the residual sum
    ``lambda x + beta F`` (Post-LN: what enters the sub-layer's LayerNorm, the forward quantity the normalised
    stream hides; Pre-LN: the stream itself; nan on input rows). ``meta`` holds the settings (seq_len, ...).
    """

    stack: list[int] = field(default_factory=list)
    sublayer: list[int] = field(default_factory=list)
    block: list[int] = field(default_factory=list)
    kind: list[str] = field(default_factory=list)
    fwd_var: list[float] = field(default_factory=list)
    fwd_corr: list[float] = field(default_factory=list)
    grad_var: list[float] = field(default_factory=list)
    grad_corr: list[float] = field(default_factory=list)
    wgrad_norm: list[float] = field(default_factory=list)
    sum_var: list[float] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.kind)

    def __post_init__(self) -> None:
        n = len(self.kind)
        for c in COLUMNS:
            if len(getattr(self, c)) != n:
                raise ValueError(f"column {c!r} has {len(getattr(self, c))} rows, expected {n}")

    # -- selection ------------------------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        return [{c: getattr(self, c)[i] for c in COLUMNS} for i in range(len(self))]

    def sublayer_rows(self, stack: int | None = None) -> list[int]:
        """Row indices of sub-layer outputs (not the input rows), optionally of one stack."""
        return [i for i, k in enumerate(self.kind) if k != "input" and (stack is None or self.stack[i] == stack)]

    def input_row(self, stack: int | None = None) -> int:
        """Row index of a stack's input (default: the last stack, the one the loss is on)."""
        s = self.stack[-1] if stack is None else stack
        return next(i for i, k in enumerate(self.kind) if k == "input" and self.stack[i] == s)

    def output_row(self, stack: int | None = None) -> int:
        s = self.stack[-1] if stack is None else stack
        return max(i for i in range(len(self)) if self.stack[i] == s)

    def grad_ratio(self, stack: int | None = None) -> float:
        """Gradient variance at the stack input over that at its last sub-layer output."""
        return self.grad_var[self.input_row(stack)] / self.grad_var[self.output_row(stack)]

    @classmethod
    def mean(cls, tables: Sequence["SignalTable"]):
        """Row-wise mean of tables with one row layout (e.g. predictions for several seeds of one model)."""
        tables = list(tables)
        if not tables:
            raise ValueError("nothing to average")
        first = tables[0]
        if any(t.kind != first.kind for t in tables):
            raise ValueError("tables have different row layouts")
        cols: dict[str, Any] = {c: list(getattr(first, c)) for c in ("stack", "sublayer", "block", "kind")}
        for c in _FLOAT_COLUMNS:
            cols[c] = [_nanmean([getattr(t, c)[i] for t in tables]) for i in range(len(first))]
        meta = dict(first.meta)
        meta["n_models"] = len(tables)
        return cls(**cols, meta=meta)

    # -- export ---------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {c: list(getattr(self, c)) for c in COLUMNS}
        d["meta"] = dict(self.meta)
        d["type"] = type(self).__name__
        for f in fields(self):
            if f.name not in COLUMNS and f.name != "meta":
                d[f.name] = getattr(self, f.name)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        n = len(kw.get("kind", []))
        for c in _FLOAT_COLUMNS:  # a column missing from an older file reads as nan
            kw[c] = [float("nan") if v is None else float(v) for v in kw.get(c, [None] * n)]
        for c in _INT_COLUMNS:
            kw[c] = [int(v) for v in kw.get(c, [])]
        return cls(**kw)

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """JSON text (nan written as null); also written to ``path`` when given."""

        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            return v

        text = json.dumps(clean(self.to_dict()), indent=1)
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text

    @classmethod
    def from_json(cls, path_or_text: str | os.PathLike):
        s = str(path_or_text)
        text = s if s.lstrip().startswith("{") else open(s).read()
        return cls.from_dict(json.loads(text))

    def to_csv(self, path: str | os.PathLike) -> None:
        """One line per row, the columns of ``COLUMNS`` (floats with repr precision)."""
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(COLUMNS)
            for r in self.rows():
                w.writerow([repr(r[c]) if isinstance(r[c], float) else r[c] for c in COLUMNS])

    @classmethod
    def from_csv(cls, path: str | os.PathLike, meta: dict[str, Any] | None = None):
        cols: dict[str, list[Any]] = {c: [] for c in COLUMNS}
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                for c in COLUMNS:
                    v = row[c]
                    cols[c].append(int(v) if c in _INT_COLUMNS else float(v) if c in _FLOAT_COLUMNS else v)
        return cls(**cols, meta=dict(meta or {}))

    # -- plotting -------------------------------------------------------------------------------------------
    def plot(self, target: Any = None, *, label: str | None = None, style: str = "-", **kw: Any):
        """Forward variance and gradient statistics against depth.

        ``target``: a file path (writes a PNG with three panels: forward variance, residual-stream gradient
        variance, output-projection weight-gradient norm), an Axes (forward variance only), a sequence of two
        or three Axes, or None (a new figure, returned).
        """
        import matplotlib

        if isinstance(target, (str, os.PathLike)):
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        path = target if isinstance(target, (str, os.PathLike)) else None
        if path is not None or target is None:
            fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        elif hasattr(target, "plot"):
            fig, axes = target.figure, [target]
        else:
            axes = list(target)
            fig = axes[0].figure
        x = list(range(len(self)))
        lab = label or self.meta.get("label") or type(self).__name__
        series = [("fwd_var", "forward variance"), ("grad_var", "gradient variance"), ("wgrad_norm", "|dW_out| (W_O / W_2)")]
        for ax, (col, title) in zip(axes, series):
            y = getattr(self, col)
            ax.plot(x, y, style, label=lab, **kw)
            ax.set_xlabel("residual point (0 = stack input)")
            ax.set_ylabel(title)
            if col != "fwd_corr" and all(v > 0 for v in y if math.isfinite(v)) and _span(y) > 20:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        if path is not None:
            fig.tight_layout()
            fig.savefig(path, dpi=120)
            plt.close(fig)
            return path
        return fig


def _nanmean(vals: Sequence[float]) -> float:
    v = [x for x in vals if math.isfinite(x)]
    return sum(v) / len(v) if v else float("nan")


def _span(y: Sequence[float]) -> float:
    v = [a for a in y if math.isfinite(a) and a > 0]
    return max(v) / min(v) if v else 1.0


# Rule-of-thumb bounds of a trainable signal at init, and where each comes from (SignalPrediction.summary).
TRAINABLE = {
    "fwd_growth": (10.0, "Pre-LN stream variance growth over the stack (last / first sub-layer), at most 10x: past "
                         "that every branch's share of the stream, and so of each update, shrinks as 1/sqrt(growth) "
                         "(Kedia et al. 2024 Sec. 3; Xiong et al. 2020 on Pre-LN)"),
    "sum_growth": (10.0, "Post-LN residual-sum variance growth (what each LayerNorm divides out), at most 10x"),
    "grad_ratio": ((0.1, 10.0), "input / output gradient variance within one order of magnitude: outside it the "
                                "gradient vanishes or explodes with depth, the Post-LN failure (Xiong et al. 2020; "
                                "Wang et al. 2022, DeepNet)"),
    "out_corr": (0.99, "token correlation at the output below 0.99: near 1 every token carries the same vector, "
                       "rank collapse (Noci et al. 2022)"),
}


@dataclass
class SignalPrediction(SignalTable):
    """:class:`SignalTable` computed by :func:`predict` (no measurement involved)."""

    def verdict(self) -> dict[str, Any]:
        """The checks of :meth:`summary` as data: ``{check: (value, bound, ok)}`` and ``trainable``."""
        out: dict[str, Any] = {}
        for st in sorted(set(self.stack)):
            rows = self.sublayer_rows(st)
            pre = [self.fwd_var[i] for i in rows]
            sums = [self.sum_var[i] for i in rows]
            post = not bool(self.meta.get("norm_first", True))
            key = "sum_growth" if post else "fwd_growth"
            series = sums if post else pre
            growth = max(series[-1], series[0]) / min(series[-1], series[0]) if series[0] > 0 and series[-1] > 0 else math.inf
            out[f"stack {st}: {key}"] = (growth, TRAINABLE[key][0], growth <= TRAINABLE[key][0])
            ratio = self.grad_ratio(st)
            lo, hi = TRAINABLE["grad_ratio"][0]
            out[f"stack {st}: grad_ratio"] = (ratio, (lo, hi), lo <= ratio <= hi)
            corr = self.fwd_corr[self.output_row(st)]
            out[f"stack {st}: out_corr"] = (corr, TRAINABLE["out_corr"][0], corr < TRAINABLE["out_corr"][0])
        out["trainable"] = all(v[2] for v in out.values())
        return out

    def summary(self) -> str:
        """A short report: does the signal stay in a trainable range at init? With the bounds and their sources."""
        v = self.verdict()
        m = self.meta
        lines = [f"{m.get('label', 'model')}: depth {m.get('depth')}, d {m.get('dim')}, seq_len {m.get('seq_len')}"]
        for key, val in v.items():
            if key == "trainable":
                continue
            value, bound, ok = val
            b = f"in [{bound[0]:g}, {bound[1]:g}]" if isinstance(bound, tuple) else f"<= {bound:g}" if "growth" in key else f"< {bound:g}"
            lines.append(f"  {'ok  ' if ok else 'FAIL'} {key:<24} {value:.4g}  (want {b})")
        lines.append("verdict: " + ("trainable at init: every check passes" if v["trainable"] else
                                    "at risk: a check fails (see above); try init='dslm'"))
        lines.append("bounds (rules of thumb): " + "; ".join(f"{k}: {t[1]}" for k, t in TRAINABLE.items()))
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Component moments (pure floats; numpy vectors over positions for causal attention only).

def _sq_mass(n: int, s: float, all_n: bool = False) -> tuple[Any, Any, Any]:
    """Softmax over n logits of variance s (vectors over sizes 1..n if ``all_n``): S = E[sum_j P_j^2],
    T = E[sum_j P_j^2 (1 - 2 P_j + sum_k P_k^2)] (the logit-gradient mass; 0 for n = 1) and E[(sum_j P_j^2)^2]
    (how much S varies from row to row), from :func:`softmax_power_sums`."""
    import numpy as np

    m2, m3, m4, m22 = softmax_power_sums(n, s, all_sizes=all_n)
    S = np.minimum(m2, 1.0)
    ES2 = np.maximum(m4 + m22, S * S)
    T = np.maximum(S - 2.0 * m3 + ES2, 0.0)
    return (S, T, ES2) if all_n else (float(S[0]), float(T[0]), float(ES2[0]))


def softmax_sq_mass(seq_len: int, logit_var: float) -> float:
    """E[sum_j P_j^2] for a softmax over ``seq_len`` i.i.d. logits of variance ``logit_var`` (quadrature, within
    0.5% of Monte Carlo; see :func:`dslm_zoo.theory.components.softmax_power_sums`)."""
    if seq_len <= 1:
        return 1.0
    return _sq_mass(int(seq_len), logit_var)[0]


@lru_cache(maxsize=64)
def _causal_consts(L: int) -> dict[str, Any]:
    """Position-only sums for causal attention (rows i = 1..L attend to keys 1..i; P ~ 1/i on average)."""
    import numpy as np

    i = np.arange(1, L + 1, dtype=np.float64)
    inv = 1.0 / i
    H = np.cumsum(inv[::-1])[::-1]  # H_j = sum_{i >= j} 1/i: the mean column sum of key j
    harmonic = float(inv.sum())
    return dict(
        i=i, inv=inv, frac=(i - 1.0) / i, frac_mean=float(((i - 1.0) / i).mean()), Hc=H, Hc2=H * H, inv2_rev=np.cumsum((inv * inv)[::-1])[::-1],
        later=(L - i), pair=2.0 * (L - harmonic) / (L * (L - 1.0)) if L > 1 else 1.0,
        # sum over query pairs i != i' >= j of P_ij P_i'j / min(i, i'): the part of the key-path cross term that
        # the centring v_j - o_i removes in short rows (o_i contains v_j with weight ~1/i)
        kcorr=2.0 * np.cumsum((inv * inv * (H - inv))[::-1])[::-1],
        # the softmax normalisation leaves a share 1 - 1/i of a logit's fluctuation in row i's weights:
        # (sum_{i>=j} f_i)^2 - sum_{i>=j} f_i^2 with f_i = (1 - 1/i)/i weighs the covariance between rows
        rowcov=np.cumsum((inv - inv * inv)[::-1])[::-1] ** 2 - np.cumsum(((inv - inv * inv) ** 2)[::-1])[::-1],
    )


def attention_moments(
    r: float, seq_len: int | None, d: int, logit_var: float, attn_drop: float = 0.0, causal: bool = False
) -> tuple[float, float, float, float]:
    """(A, C, S, K2) of single-head attention at unit input variance, finite L (derived; module docstring).

    ``out var = G_vo u A``, ``out cov = G_vo u C`` (mean over token pairs); ``S`` = E[sum_j P_ij^2] (mean row),
    ``K2`` = E[(sum_i P_ij)^2] (mean column). ``seq_len=None`` is the paper's large-L limit: A = C = r, S = 0,
    K2 = 1. Causal attention: the means over positions of the per-position values.
    """
    if seq_len is None:
        return r, r, 0.0, 1.0
    L = int(seq_len)
    if L <= 1:
        return 1.0, 1.0, 1.0, 1.0
    if causal:
        c = _attn_causal(r, L, d, logit_var, attn_drop)
        return float(c["A"].mean()), c["C"], float(c["S"].mean()), float(c["K2"].mean())
    b = _attn_bidir(r, L, d, logit_var, attn_drop)
    return b["A"], b["C"], b["S"], b["K2"]


def _value_factor(r: float, s: float, d: int, pa: float) -> float:
    """What multiplies E[sum_j P_ij^2] in the attention output variance (module docstring): the value spread
    (1 - r) with its logit-variance correction, and attention dropout's share."""
    q = 1.0 - r
    return (q * (1.0 + 4.0 * q * s / d) + r * pa) / (1.0 - pa)


def _causal_pair_cov(r: float, s: float, d: int, pair: float) -> float:
    """Mean output covariance over distinct positions of causal attention (``pair`` = 2 (L - H_L) / (L (L - 1)),
    the causal counterpart of the bidirectional 1/L; see ``attention_gain_and_corr``)."""
    q = 1.0 - r
    return r + q * pair + 2.0 * q * q * s / d * pair


def attention_variance_and_cov(
    r: float, seq_len: int | None, d: int, logit_var: float, attn_drop: float = 0.0, causal: bool = False
) -> tuple[float, float]:
    """(A, C) of :func:`attention_moments` alone, without its per-position vectors.

    For causal attention, A is linear in the per-row softmax masses, so its mean over positions needs only their
    mean (:func:`dslm_zoo.theory.components.causal_mean_sq_mass`, a scalar per grid node): the DSLM init
    schedule calls this once per layer, and a 1000-layer causal stack then costs milliseconds, not a quarter
    second. Equal to ``attention_moments(...)[:2]`` up to rounding (tests/test_predict.py)."""
    if seq_len is None or int(seq_len) <= 1 or not causal:
        return attention_moments(r, seq_len, d, logit_var, attn_drop, causal)[:2]
    L, q, s, pa = int(seq_len), 1.0 - r, logit_var, attn_drop
    c = _causal_consts(L)
    k_s = _value_factor(r, s, d, pa)
    A = r + q * q * c["frac_mean"] * s / d + causal_mean_sq_mass(L, q * s) * k_s
    C = _causal_pair_cov(r, s, d, c["pair"])
    return A, min(C, A)


def _attn_bidir(r: float, L: int, d: int, s: float, pa: float) -> dict[str, float]:
    q = 1.0 - r
    if L <= 1:
        return dict(A=1.0, C=1.0, S=1.0, T=0.0, K2=1.0, kappa=0.0)
    S, T, ES2 = _sq_mass(L, q * s)
    k_s = _value_factor(r, s, d, pa)
    A = r + q * q * (L - 1.0) * s / (d * L) + S * k_s
    C = r + (q + 2.0 * q * q * s / d) / L
    # E[(column sum)^2]: mean 1, the softmax spread S - 1/L, and the covariance of one key's weights in two
    # rows, ~ (1 - 1/L)^2 (e^{r q s} - 1) / L^2 per pair for lognormal weights whose logits correlate by r
    # across queries (the normalisation removes a share 1/L of each logit's fluctuation)
    K2 = 1.0 + max(S - 1.0 / L, 0.0) + (1.0 - 1.0 / L) ** 3 * math.expm1(max(r, 0.0) * q * s)
    # token-to-token spread of the output variance: rows differ in how peaked their softmax is
    kappa = k_s * k_s * max(ES2 - S * S, 0.0) / (A * A)
    return dict(A=A, C=min(C, A), S=S, T=T, K2=K2, kappa=kappa)


def _attn_causal(r: float, L: int, d: int, s: float, pa: float) -> dict[str, Any]:
    """Per-position moments of causal self-attention (query i sees keys 1..i), as numpy vectors over i / j."""
    c = _causal_consts(L)
    q = 1.0 - r
    S, T, ES2 = _sq_mass(L, q * s, all_n=True)  # row sums of P^2 and logit-gradient masses, row i has i keys
    k_s = _value_factor(r, s, d, pa)
    A = r + q * q * c["frac"] * s / d + S * k_s
    C = _causal_pair_cov(r, s, d, c["pair"])
    Srow = S * c["inv"]  # E[P_ij^2] for a key of row i
    R2 = _rev_cumsum(Srow)  # sum_{i >= j} E[P_ij^2]
    import numpy as np

    V = R2 - c["inv2_rev"]  # variance of column sums from the softmax's spread
    K2 = c["Hc2"] + V + c["rowcov"] * math.expm1(max(r, 0.0) * q * s)
    return dict(
        A=A, C=min(C, float(A.mean())), S=S, T=T, Srow=Srow, Trow=T * c["inv"], R2=R2, K2=K2,
        other_k=np.maximum(K2 - R2 - c["kcorr"], 0.0), kappa=k_s * k_s * np.maximum(ES2 - S * S, 0.0) / (A * A),
    )


@lru_cache(maxsize=16)
def _pair_bins(L: int, max_bins: int = 64) -> tuple[Any, Any, Any, Any]:
    """Position bins for the per-pair covariances of a causal stack: (first position of each bin, positions per
    bin, weight of each bin pair among the L (L - 1) ordered pairs of distinct positions, mean of 1/max(i, k)
    over those pairs). One bin per position up to ``max_bins`` positions, geometric bins beyond (the causal
    structure varies like 1/position)."""
    import numpy as np

    if L <= max_bins:
        starts = np.arange(L)
    else:
        starts = np.unique(np.floor(np.geomspace(1.0, L + 1.0, max_bins + 1)[:-1]).astype(int) - 1)
    n = np.diff(np.append(starts, L)).astype(np.float64)
    inv = 1.0 / np.arange(1, L + 1, dtype=np.float64)
    inv_sum = np.add.reduceat(inv, starts)  # sum of 1/k over each bin
    below = np.add.reduceat((np.arange(L) - np.repeat(starts, n.astype(int))) * inv, starts)  # sum (k - s_a - 1)/k
    counts = np.outer(n, n) - np.diag(n)
    later = np.triu(np.ones((len(n), len(n))), 1)  # a < b: every i in a precedes every k in b, max = k
    sums = later * np.outer(n, inv_sum) + later.T * np.outer(inv_sum, n) + np.diag(2.0 * below)
    ov = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    return starts, n, counts / max(L * (L - 1.0), 1.0), ov


class _PairCov:
    """Mean covariance between distinct positions, per pair of position bins, in a causal stack.

    Causal attention makes positions differ in variance (position i averages i values) and in how much they share
    (positions i and k share min(i, k) keys). A per-token LayerNorm then divides every pair's covariance by its own
    two standard deviations, so the mean correlation after it is not the mean covariance over the mean variance:
    at init in a 4-layer DSLM Post-LN GPT the first LayerNorm raises the mean correlation from 0.177 to 0.189
    (measured); the ratio of means predicted no change."""

    def __init__(self, L: int):
        import numpy as np

        self.starts, self.n, self.w, self.ov = _pair_bins(L)
        inv = 1.0 / np.arange(1, L + 1, dtype=np.float64)
        s1, s2 = np.add.reduceat(inv, self.starts), np.add.reduceat(inv * inv, self.starts)
        self.q = np.outer(s1, s1) - np.diag(s2)  # sum of 1/(i i') over distinct positions i in a, i' in b
        nb = len(self.n)
        self._tri = np.tril(np.ones((nb, nb)))  # 2-D prefix and suffix sums as two small matmuls (faster than cumsum)
        self.q_keys = np.diagonal(self.suffix_pairs(self.q)).copy()  # the same over query pairs reading a key in bin a
        self.later = np.maximum.outer(np.arange(nb), np.arange(nb))  # the later bin of each bin pair
        # prefix_mean's pair counts depend on L alone: computed once, not at every layer (the recursion's hot path)
        cnt = np.cumsum(np.cumsum(self.w, 0), 1)
        self._cnt_pos = cnt > 0
        self._inv_cnt = np.divide(1.0, cnt, out=np.zeros_like(cnt), where=self._cnt_pos)
        self._first = int(np.flatnonzero(self._cnt_pos.ravel())[0]) if self._cnt_pos.any() else -1
        self._bin_idx = np.repeat(np.arange(nb), self.n.astype(int))  # position -> its bin

    @staticmethod
    def suffix(vec: Any) -> Any:
        """Sums of a per-bin vector over bins >= a."""
        import numpy as np

        return np.cumsum(vec[::-1])[::-1]

    def suffix_pairs(self, M: Any) -> Any:
        """Sums of a bin-pair matrix over bin pairs (>= a, >= b)."""
        return self._tri.T @ M @ self._tri

    def sum_bins(self, vec: Any) -> Any:
        import numpy as np

        return np.add.reduceat(np.asarray(vec, dtype=np.float64), self.starts)

    def bin(self, vec: Any) -> Any:
        import numpy as np

        return np.add.reduceat(np.asarray(vec, dtype=np.float64), self.starts) / self.n

    def uniform(self, cov: float) -> Any:
        import numpy as np

        return np.full(self.w.shape, float(cov))

    def scaled(self, C: Any, inv: Any) -> Any:
        """Covariances after dividing position i by sqrt(1 / inv_i) (a LayerNorm with per-position 1 / variance)."""
        return C * self.root_outer(inv)

    def root_outer(self, inv: Any) -> Any:
        """The per-bin-pair factor of :meth:`scaled`, sqrt(inv_a inv_b) (kept by the forward pass for the backward)."""
        import numpy as np

        sb = np.sqrt(self.bin(inv))
        return sb[:, None] * sb

    def mean(self, C: Any) -> float:
        import numpy as np

        return float(np.vdot(self.w, C))

    def prefix_mean(self, C: Any) -> Any:
        """Per bin pair (a, b): the mean of C over distinct position pairs (j, j') with j up to the end of bin a and
        j' up to the end of bin b: what causal queries in a and b average over their keys."""
        import numpy as np

        out = (self._tri @ (self.w * C) @ self._tri.T) * self._inv_cnt
        first = out.flat[self._first] if self._first >= 0 else 0.0  # position 1 alone has no pair: its first row's
        return np.where(self._cnt_pos, out, first)

    def per_position(self, M: Any) -> Any:
        """The diagonal of a bin-pair matrix, expanded to positions."""
        import numpy as np

        return np.diagonal(M)[self._bin_idx]


def _rev_cumsum(x: Any) -> Any:
    import numpy as np

    return np.cumsum(x[::-1])[::-1]


def _act_moments(act: str, t: float, r: float) -> tuple[float, float, float, float]:
    """(E[phi^2], E[phi phi'], E[phi'^2], E[dphi dphi']) for pre-activations of variance t, token correlation r."""
    r = min(max(r, -1.0), 1.0)
    if act == "relu":
        return t / 2.0, t / 2.0 * relu_corr_map(r), 0.5, 0.25 + math.asin(r) / (2.0 * math.pi)
    if act == "gelu":
        if t <= 0.0:
            return 0.0, 0.0, 0.25, 0.25
        m, v = gelu_moments(t)
        a = t / (1.0 + t)
        g_var = 0.5 + (-math.acos(a) + a * (5.0 * t + 3.0) / (1.0 + 2.0 * t) ** 1.5) / (2.0 * math.pi)
        ra = r * a
        den = ((t + 1.0) ** 2 - r * r * t * t) ** 1.5
        g_cov = 0.5 + (-math.acos(ra) + ra * ((t + 1.0) * (2.0 * t + 3.0) - 2.0 * r * r * t * t) / den) / (2.0 * math.pi)
        return v + m * m, gelu_cross_moment(t, r), g_var, g_cov
    raise ValueError(f"unsupported activation {act!r} (relu, gelu)")


# ---------------------------------------------------------------------------------------------------------------
# What the recursion needs of a model: one record per sub-layer.


@dataclass
class SubSpec:
    kind: str  # attn | cross_attn | ffn
    block: int
    d: int
    norm_first: bool
    lam2: float
    beta2: float
    p: float  # residual (hidden) dropout
    ln_g: float  # LayerNorm gain mean square / bias mean square / eps
    ln_b: float
    eps: float
    # attention
    sq2: float = 0.0
    sk2: float = 0.0
    sv2: float = 0.0
    so2: float = 0.0
    pa: float = 0.0
    causal: bool = False
    L: int | None = None
    # ffn
    s1: float = 0.0
    s2: float = 0.0
    dff: int = 0
    act: str = "relu"
    p1: float = 0.0  # dropout after the activation (timm Mlp.drop1)
    b_out: float = 0.0  # mean square of the branch's output bias
    # LocalRNN (kind 'rnn'): s1 = W_ih, shh2 = W_hh, s2 = W_out mean squares, window = steps
    shh2: float = 0.0
    window: int = 0

    def evolve(self, **changes: Any) -> "SubSpec":
        """A copy with ``changes``: ``dataclasses.replace`` without re-running ``__init__`` over every field (a
        1000-layer prediction makes a few thousand of these; replace was a tenth of its time)."""
        unknown = changes.keys() - _SUBSPEC_FIELDS
        if unknown:
            raise TypeError(f"SubSpec has no field(s) {sorted(unknown)}")
        out = object.__new__(SubSpec)
        out.__dict__.update(self.__dict__, **changes)
        return out


_SUBSPEC_FIELDS = frozenset(f.name for f in fields(SubSpec))


@dataclass
class StackSpec:
    subs: list[SubSpec]
    d: int
    norm_first: bool
    final_g: float  # final LayerNorm (Pre-LN); 1/0 and identity=True for Post-LN
    final_b: float
    final_eps: float
    final_identity: bool
    seq_len: int | None
    v_in: Any  # residual-stream variance entering the stack (after embedding dropout); per position for ViTs
    r_in: float  # and its token correlation
    memory: int | None = None  # index of the stack feeding cross-attention
    role: str = "encoder"
    p_emb: float = 0.0  # embedding dropout (active)


# ---------------------------------------------------------------------------------------------------------------
# The recursion. Stream and gradient variances are floats, or numpy vectors over positions in stacks with causal
# self-attention (whose moments depend on the position); correlations are means over token pairs (floats).


def _mean(x: Any) -> float:
    # sum / size: np.mean's dispatch costs more than the sum itself on these short vectors
    return x if isinstance(x, float) else float(x.sum()) / x.size


def _branch_fwd(s: SubSpec, u: float, r: float, mem: tuple[float, float, int | None] | None) -> dict[str, Any]:
    """Forward moments of one branch (before its residual dropout) for input second moment u, correlation r.

    ``var`` (float, or per-position vector for causal attention) and ``cov`` (mean over token pairs) of the
    output, the second and cross moments ``m_o``, ``c_o`` of the input of its output projection, and what the
    backward pass needs."""
    d = s.d
    if s.kind == "rnn":
        m_o, c_o, gain_v, gain_c = local_rnn_moments(u, r, s.window, d * s.s1, d * s.shh2, d * s.s2)
        k = d * s.s2
        return dict(var=k * m_o + s.b_out, cov=k * c_o + s.b_out, m_o=m_o, c_o=c_o, gain_v=gain_v, gain_c=gain_c,
                    kappa=0.0)
    if s.kind == "ffn":
        t = d * s.s1 * u
        e2, ec, eg2, egc = _act_moments(s.act, t, r)
        k = s.dff * s.s2
        return dict(
            var=k * e2 / (1.0 - s.p1) + s.b_out, cov=k * ec + s.b_out, m_o=e2 / (1.0 - s.p1), c_o=ec,
            eg2=eg2 / (1.0 - s.p1), egc=egc, kappa=0.0,
        )
    g_vo = d * d * s.sv2 * s.so2
    if s.kind == "cross_attn":
        assert mem is not None
        u_k, r_k, M = mem
        ss2 = d * d * s.sq2 * s.sk2 * u * u_k
        bd = _attn_bidir(r_k, int(M), d, ss2, s.pa) if M is not None else dict(A=r_k, C=r_k, S=0.0, T=0.0, K2=1.0, kappa=0.0)
        A, C = bd["A"], bd["C"]
        extra: dict[str, Any] = dict(S=bd["S"], T=bd["T"], M=M if M is not None else 0, kappa=bd["kappa"])
    elif s.causal and s.L is not None and s.L > 1:
        u_k, r_k = u, r
        ss2 = d * d * s.sq2 * s.sk2 * u * u
        c = _attn_causal(r, int(s.L), d, ss2, s.pa)
        A, C = c["A"], c["C"]
        extra = dict(causal=c, kappa=c["kappa"])
    else:
        u_k, r_k = u, r
        ss2 = d * d * s.sq2 * s.sk2 * u * u
        bd = _attn_bidir(r, int(s.L), d, ss2, s.pa) if s.L is not None else dict(A=r, C=r, S=0.0, T=0.0, K2=1.0, kappa=0.0)
        A, C = bd["A"], bd["C"]
        extra = dict(S=bd["S"], T=bd["T"], K2=bd["K2"], kappa=bd["kappa"])
    return dict(
        var=g_vo * u_k * A + s.b_out, cov=g_vo * u_k * C + s.b_out, m_o=d * s.sv2 * u_k * A, c_o=d * s.sv2 * u_k * C,
        g_vo=g_vo, ss2=ss2, r_k=r_k, **extra,
    )


def _branch_bwd(
    s: SubSpec, f: dict[str, Any], gb: Any, rb: float, r_q: float, Lq: int, qk_path: bool, cg_keys: Any = None
) -> tuple[Any, float, float, float]:
    """Backward through a branch whose output gradient has variance ``gb`` (float or per-position vector) and
    pair-mean correlation ``rb``: (variance and pair-mean covariance of the gradient at the branch input, and for
    cross-attention the variance and covariance of the gradient it sends to each memory token). ``cg_keys``
    (causal attention): per key j, the mean gradient covariance of the query pairs that read it (i, i' >= j),
    instead of the stack-wide mean."""
    gm = _mean(gb)
    cg = gm * rb  # mean covariance of the output gradient between two tokens
    if s.kind == "rnn":
        return f["gain_v"] * gb, f["gain_c"] * cg, 0.0, 0.0
    if s.kind == "ffn":
        k = s.d * s.s2 * s.dff * s.s1
        return k * f["eg2"] * gb, k * f["egc"] * cg, 0.0, 0.0
    g_vo, ss2, pa = f["g_vo"], f["ss2"], s.pa
    q = 1.0 - f["r_k"]
    qk = 1.0 if qk_path else 0.0
    if s.kind == "cross_attn":
        S, M = f["S"], max(f["M"], 1)
        rho = Lq / M  # mean column sum
        col2 = rho * rho + Lq * max(S / M - 1.0 / (M * M), 0.0) * (1.0 + (Lq - 1.0) * max(r_q, 0.0))
        own = rho * S  # sum over queries of E[P_ij^2]
        q_var = qk * g_vo * ss2 * q * q * f["T"] * gb
        m_var = g_vo * (own * gm / (1.0 - pa) + cg * (col2 - own)) + qk * g_vo * ss2 * q * (
            rho * f["T"] * gm + cg * r_q * (col2 - own)
        )
        m_cov = g_vo * (Lq * (1.0 - S) * (gm - cg) + cg * (Lq * Lq - M * col2)) / max(M * (M - 1.0), 1.0)
        return q_var, 0.0, m_var, m_cov
    if "causal" in f:
        import numpy as np

        c = f["causal"]
        L = len(c["S"])
        gbv = gb if not isinstance(gb, float) else np.full(L, gb)
        R1 = _rev_cumsum(c["Srow"] * gbv)  # sum_{i >= j} E[P_ij^2] g_i
        other = c["K2"] - c["R2"]  # sum over distinct query pairs of E[P_ij P_i'j]
        ck = cg if cg_keys is None else cg_keys
        v_var = g_vo * (R1 / (1.0 - pa) + ck * other)
        # logit-gradient masses: T_i of row i (0 for the first query, a softmax over one key), T_i / i per key
        q_var = qk * g_vo * ss2 * q * q * c["T"] * gbv
        k_var = qk * g_vo * ss2 * q * (_rev_cumsum(c["Trow"] * gbv) + ck * f["r_k"] * c["other_k"])
        v_cov = g_vo * (float(((1.0 - c["S"]) * (gbv - cg)).sum()) + cg * (L * L - float(c["K2"].sum()))) / (L * (L - 1.0))
        return v_var + q_var + k_var, v_cov, 0.0, 0.0
    S, K2 = f["S"], f["K2"]
    L = max(int(s.L or Lq), 1)
    v_var = g_vo * (S * gm / (1.0 - pa) + cg * (K2 - S))
    q_var = qk * g_vo * ss2 * q * q * f["T"] * gb
    k_var = qk * g_vo * ss2 * q * (f["T"] * gm + cg * f["r_k"] * (K2 - S))
    v_cov = g_vo * ((1.0 - S) * (gm - cg) + cg * (L - K2)) / max(L - 1.0, 1.0)
    return v_var + q_var + k_var, v_cov, 0.0, 0.0


def _act_maps(act: str, t: float, R: Any) -> tuple[Any, Any]:
    """``_act_moments(act, t, r)[1]`` (E[phi phi']) and ``[3]`` (E[dphi dphi']) at every correlation of the array
    R, in closed form on the whole array (the same formulas as :func:`_act_moments`). Both at once: the forward
    pass needs the first and the backward the second at the same input, and they share the arcsine and root."""
    import numpy as np

    R = np.clip(R, -1.0, 1.0)
    if act == "relu":  # t/2 f(R), f the ReLU correlation map (relu_corr_map); arccos = pi/2 - arcsin
        asin = np.arcsin(R)
        m1 = t / 2.0 * (R + (np.sqrt(1.0 - R * R) - R * (0.5 * math.pi - asin)) / math.pi)
        return m1, 0.25 + asin / (2.0 * math.pi)
    if act == "gelu":
        if t <= 0.0:
            return np.zeros(R.shape), np.full(R.shape, 0.25)
        R2 = R * R
        ra = R * (t / (1.0 + t))
        asin = np.arcsin(ra)
        q = (1.0 + t) ** 2 - R2 * (t * t)
        root = np.sqrt(q)
        # gelu_cross_moment, and gelu's derivative cross moment
        m1 = (t / 4.0) * (R + (2.0 / math.pi) * R * asin + (2.0 / math.pi) * t * (t * (1.0 - R2) + 1.0 + R2) / ((1.0 + t) * root))
        m3 = 0.5 + (asin - 0.5 * math.pi + ra * ((t + 1.0) * (2.0 * t + 3.0) - 2.0 * R2 * (t * t)) / (q * root)) / (2.0 * math.pi)
        return m1, m3
    raise ValueError(f"unsupported activation {act!r} (relu, gelu)")


def _branch_pair_cov(
    s: SubSpec, f: dict[str, Any], pc: _PairCov, Cu: Any, u: float, ru: float, Rpre: Any = None
) -> Any:
    """Per-bin-pair output covariance of a branch in a causal stack. Causal attention: queries i and k average
    the input correlations of their key prefixes (``Rpre``) and share min(i, k) keys, the term
    q (1 + 2 q ss2 / d) / max(i, k) of ``_attn_causal``'s C (with uniform input correlation the mean over pairs is
    that C). FFN: every pair's own input correlation through the activation's correlation map. Cross-attention
    reads one memory for every position (uniform)."""
    if s.kind == "ffn":
        m1, f["dphi_pairs"] = _act_maps(s.act, s.d * s.s1 * u, Cu / u if u > 0 else Cu)  # the backward's at this input
        return s.dff * s.s2 * m1 + s.b_out
    if s.kind == "rnn":
        R = Cu / u if u > 0 else Cu
        _, c_o, _, f["rnn_gain_pairs"] = local_rnn_moments(u, R, s.window, s.d * s.s1, s.d * s.shh2, s.d * s.s2)
        return s.d * s.s2 * c_o + s.b_out
    if "causal" not in f:
        return pc.uniform(f["cov"])
    q = 1.0 - ru
    return f["g_vo"] * u * (Rpre + q * (1.0 + 2.0 * q * f["ss2"] / s.d) * pc.ov) + s.b_out


def _branch_pair_grad(
    s: SubSpec, f: dict[str, Any], pc: _PairCov, gb: Any, Gb: Any, R_in: Any, u: float
) -> tuple[Any, Any]:
    """Causal stacks: (per-key mean gradient covariance of the query pairs reading it, for ``_branch_bwd``; the
    per-bin-pair covariance of the gradient at the branch input, or None where it is uniform).

    Causal attention, value path with P_ij ~ 1/i: keys j, j' receive sum_{i >= j, i' >= j'} G(i, i') / (i i')
    from distinct queries and sum_{i >= max(j, j')} g_i E[P_ij P_ij'] ~ g_i (1 - S_i) / (i (i - 1)) from a shared
    one. FFN: every pair through the activation-derivative correlation at its own input correlation."""
    import numpy as np

    if s.kind == "ffn":
        return None, s.d * s.s2 * s.dff * s.s1 * f["dphi_pairs"] * Gb
    if s.kind == "rnn":
        return None, f["rnn_gain_pairs"] * Gb
    if "causal" not in f:
        return None, None
    Z = pc.suffix_pairs(Gb * pc.q)
    keys = np.diagonal(Z) / np.maximum(pc.q_keys, 1e-300)
    c = f["causal"]
    L = len(c["S"])
    i = np.arange(1, L + 1, dtype=np.float64)
    gbv = np.broadcast_to(np.asarray(gb, dtype=np.float64), (L,))
    shared = np.where(i > 1, gbv * (1.0 - c["S"]) / (i * np.maximum(i - 1.0, 1.0)), 0.0)
    D = pc.suffix(pc.sum_bins(shared))
    return np.repeat(keys, pc.n.astype(int)), f["g_vo"] * (Z + D[pc.later])


# Depth stepping. Blocks of a deep stack are identical (same residual scales, same weight variances), and at depth
# each changes the stream by a small share of itself: the branch adds beta^2 var_F to lambda^2 v (DSLM: beta^2 ~ 1/N;
# Xavier Pre-LN: the stream has grown to ~l times the branch by layer l). Then k identical blocks act like one
# block whose branch is frozen at its first input (explicit Euler in depth; with the middle block's weights): x <- lambda^2k x + beta^2 (1 + lambda^2
# + ... + lambda^2(k-1)) F(x), and the backward through it is that block's Jacobian with the same coefficients.
# The step k is chosen from the last block's per-layer branch share (k share <= STEP_TOL), so a stack whose blocks
# change the stream by O(1) (Post-LN Xavier, the first layers) is run block by block, and stepping is used only on
# runs of at least STEP_MIN_RUN identical blocks; the first block and the last STEP_TAIL blocks of a run are exact.
# The skipped rows of the table are interpolated per sub-layer slot (log-linear for variances and norms). A step's
# weight-gradient row takes the output projection's input moments of the block after the step (the next step's
# first), one block past the block it stands for rather than k - 1 blocks before it.
# The token correlation limits the step too: its change per block, relative to max(|r|, STEP_CORR_FLOOR), stays
# under STEP_TOL_CORR (a step evaluates the attention at its first input, and the attention moments move with r).
# Raising the floor to 0.1 put a 1000-layer DSLM GPT's rows 2.85% off the exact ones, 0.2 12.9% (the worst rows
# then are token correlations; benchmarks/predict_speed.py's max-dev measure).
# Measured against the block-by-block recursion on the zoo's 1000-layer configs: benchmarks/predict_speed.py.
STEP_TOL = 0.02
STEP_TOL_CORR = 0.02
STEP_CORR_FLOOR = 0.05
STEP_MIN_RUN = 64
STEP_TAIL = 2
STEP_MAX = 64


def _block_slices(subs: Sequence[SubSpec]) -> list[tuple[int, int]]:
    """(first, end) sub-layer indices of each block, in order."""
    blk = [s.block for s in subs]
    starts = [i for i in range(len(blk)) if i == 0 or blk[i] != blk[i - 1]]
    return list(zip(starts, starts[1:] + [len(blk)]))


_STRUCTURE = ("kind", "d", "norm_first", "causal", "L", "dff", "act", "window")


def _runs_left(subs: Sequence[SubSpec], blocks: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Per block: how many blocks of the same structure follow it (itself included) and the length of the run it
    is in. Weight variances and residual scales may vary along a run (DSLM's attention schedule, Megatron's
    1/sqrt(2l)): a step uses the specs of its middle block."""
    struct = attrgetter(*_STRUCTURE)
    keys = [tuple(map(struct, subs[a:b])) for a, b in blocks]
    left = [1] * len(blocks)
    for i in range(len(blocks) - 2, -1, -1):
        if keys[i] == keys[i + 1]:
            left[i] = left[i + 1] + 1
    total, i = [0] * len(blocks), 0
    while i < len(blocks):
        total[i : i + left[i]] = [left[i]] * left[i]
        i += left[i]
    return left, total


def _stepped(s: SubSpec, k: int) -> SubSpec:
    """One sub-layer standing for k identical ones: lambda^2 -> lambda^2k, beta^2 -> beta^2 sum_{m<k} lambda^2m."""
    if k == 1:
        return s
    geom = float(k) if s.lam2 == 1.0 else (1.0 - s.lam2 ** k) / (1.0 - s.lam2)
    return s.evolve(lam2=s.lam2 ** k, beta2=s.beta2 * geom)


def _expand_rows(vals: list[float], where: list[tuple[int, int, int]], n: int, slots: list[list[tuple[int, int]]],
                 log: bool) -> list[float]:
    """Per sub-layer values from the stepped ones: ``vals[0]`` is the input row, ``vals[m + 1]`` the output of
    stepped sub-layer m, which ends at original sub-layer ``where[m] = (index, block, slot)``; ``slots[j]`` lists
    the (index, block) of every original sub-layer in slot j. Rows a step skipped are interpolated over the block
    index within their slot (log-linear for positive quantities when ``log``)."""
    import numpy as np

    if len(where) == n:
        return list(vals)
    out = np.full(n + 1, np.nan)
    out[0] = vals[0]
    w = np.asarray(where, dtype=np.int64).reshape(-1, 3)
    y_all = np.asarray(vals[1:], dtype=np.float64)
    out[w[:, 0] + 1] = y_all
    for j, members in enumerate(slots):
        sel = w[:, 2] == j
        xs, y = w[sel, 1], y_all[sel]
        idx, blk = np.asarray(members, dtype=np.int64).reshape(-1, 2).T
        use_log = log and bool(np.all(y > 0))
        z = np.interp(blk, xs, np.log(y) if use_log else y)
        known = np.isin(idx, w[sel, 0])
        out[idx[~known] + 1] = (np.exp(z) if use_log else z)[~known]
    return out.tolist()


def _run_stack(st: StackSpec, mem: tuple[float, float, int | None] | None, step: bool = True) -> dict[str, Any]:
    """Forward pass of one stack: per-point variance/correlation and the per-sub-layer records (one per stepped
    sub-layer; ``step=False`` runs every block, see STEP_TOL)."""
    positional = any(s.kind == "attn" and s.causal and (s.L or 0) > 1 for s in st.subs)
    if not isinstance(st.v_in, float):  # per-position input (ViT class tokens)
        v: Any = st.v_in.copy()
    elif positional:
        import numpy as np

        v = np.full(int(st.seq_len), float(st.v_in))
    else:
        v = float(st.v_in)
    r = st.r_in
    # kap: squared coefficient of variation of the per-token variance s_t^2 (over tokens and weights). LayerNorm's
    # backward scales the gradient by (1 - 2/d) E[1/s_t^2] ~ (1 - 2/d)(1 + kap)/s^2 (derived): a Gaussian vector
    # has kap = 2/d and the two cancel; a LayerNorm output has kap = 0.
    kap: Any = (3.0 / (1.0 - st.p_emb) - 1.0) / st.d
    fv, fr, sv, recs = [_mean(v)], [r], [float("nan")], []
    pc = _PairCov(len(v)) if positional else None
    C = pc.scaled(pc.uniform(r), v) if pc is not None else None  # r sqrt(v_i v_k)
    blocks = _block_slices(st.subs)
    left, total = _runs_left(st.subs, blocks)
    # Post-LN renormalises after every sub-layer, so k of them compose as one only where the sum keeps the scale
    # (lambda^2 + beta^2 = 1, DSLM); a DeepNorm or Xavier Post-LN block (alpha^2 + beta^2 != 1) is run one by one
    steppable = [all(x.norm_first or abs(x.lam2 + x.beta2 - 1.0) < 1e-9 for x in st.subs[a:e]) for a, e in blocks]
    where: list[tuple[int, int, int]] = []  # per stepped sub-layer: (original index it ends at, block, slot)
    share, b_i = math.inf, 0
    last_of_slot: dict[int, tuple[dict[str, Any], int]] = {}
    while b_i < len(blocks):
        k = 1
        if step and total[b_i] >= STEP_MIN_RUN and left[b_i] < total[b_i] and share > 0 and steppable[b_i]:
            k = max(1, min(STEP_MAX, int(STEP_TOL / share), left[b_i] - STEP_TAIL))
        first, end = blocks[b_i]
        last, mid = blocks[b_i + k - 1][0], blocks[b_i + k // 2][0]
        share, r_before = 0.0, r
        for j in range(end - first):
            orig = st.subs[last + j]  # the row this step ends at (its weight-gradient norm)
            s = _stepped(st.subs[mid + j], k)
            where.append((last + j, b_i + k - 1, j))
            if s.norm_first:
                inv = 1.0 / (v + s.eps)
                unit = _mean(v * inv)
                u = s.ln_g * unit + s.ln_b
                if pc is not None:
                    inv_outer = pc.root_outer(inv)
                    Cu = s.ln_g * C * inv_outer + s.ln_b
                    ru = pc.mean(Cu) / u if u > 0 else r
                else:
                    ru = (s.ln_g * unit * r + s.ln_b) / u if u > 0 else r
            else:
                inv, u, ru, Cu = None, _mean(v), r, C
            f = _branch_fwd(s, u, ru, mem if s.kind == "cross_attn" else None)
            Rpre = None
            if pc is not None and "causal" in f:
                # query i averages the values of positions <= i: their own mean correlation, not the stack's
                Rpre = pc.prefix_mean(Cu / u if u > 0 else Cu)
                r_i = pc.per_position(Rpre)
                f["var"] = f["var"] + f["g_vo"] * u * (r_i - ru) * (1.0 - f["causal"]["S"] / (1.0 - s.pa))
            b = s.beta2 * f["var"] / (1.0 - s.p)
            y = s.lam2 * v + b
            ym = _mean(y)
            if pc is not None:
                C = s.lam2 * C + s.beta2 * _branch_pair_cov(s, f, pc, Cu, u, ru, Rpre)
                ry = pc.mean(C) / ym if ym > 0 else r
            else:
                ry = (s.lam2 * _mean(v) * r + s.beta2 * f["cov"]) / ym if ym > 0 else r
            # per-token variances add; their spread (kappa) enters the backward through E[1/s_t^2] ~ (1 + kappa)/s^2:
            # the skip's spread, the branch's (chi-square over d features, dropout masks,
            # softmax rows) and the skip-branch cross term 2 lambda beta <x, b>/d of variance 4 lambda^2 v b/d
            kb = f["kappa"] + (3.0 / (1.0 - s.p) - 1.0) / s.d
            ky = (s.lam2 * s.lam2 * kap * v * v + kb * b * b + 4.0 * s.lam2 * v * b / s.d) / (y * y)
            rec: dict[str, Any] = dict(u=u, inv=inv, f=f, r_in=r, kappa=kap, kappa_y=ky, b=b, y=y)
            if pc is not None:
                rec["R_in"] = Cu / u if u > 0 else Cu  # per-pair correlation at the branch input
                if s.norm_first:
                    rec["inv_outer"] = inv_outer
            if s.norm_first:
                v, r, kap = y, ry, ky
            else:
                kap = 0.0
                inv_post = 1.0 / (y + s.eps)
                v = s.ln_g * y * inv_post + s.ln_b
                vm = _mean(v)
                if pc is not None:
                    C = s.ln_g * pc.scaled(C, inv_post) + s.ln_b
                    r = pc.mean(C) / vm if vm > 0 else ry
                else:
                    r = (s.ln_g * _mean(y * inv_post) * ry + s.ln_b) / vm if vm > 0 else ry
                rec["inv_post"] = inv_post
            recs.append(rec)
            fv.append(_mean(v))
            fr.append(r)
            sv.append(ym)
            rec["spec"], rec["orig"] = s, orig
            if j in last_of_slot and last_of_slot[j][1] > 1:
                last_of_slot[j][0]["f_end"] = f  # the moments one block past the previous step's end (weight rows)
            last_of_slot[j] = (rec, k)
            # the per-layer branch share of this block, what the next step's size is chosen from
            share = max(share, orig.beta2 * _mean(f["var"]) / (1.0 - orig.p) / ym if ym > 0 else math.inf)
        # and the relative change of the token correlation per layer (attention averages tokens: the correlation
        # moves faster than the variance share says where it is small)
        share = max(share, abs(r - r_before) / k / max(abs(r_before), STEP_CORR_FLOOR) * (STEP_TOL / STEP_TOL_CORR))
        b_i += k
    if st.final_identity:
        out = (_mean(v), r)
    else:
        unit = _mean(v / (v + st.final_eps))
        uo = st.final_g * unit + st.final_b
        cov_o = pc.mean(pc.scaled(C, 1.0 / (v + st.final_eps))) if pc is not None else unit * r
        out = (uo, (st.final_g * cov_o + st.final_b) / uo if uo > 0 else r)
    return dict(v=v, fv=fv, fr=fr, sv=sv, recs=recs, out=out, kappa=kap, pc=pc, where=where)


def _backward_stack(st: StackSpec, fw: dict[str, Any], g_out: float, rho_out: float, qk_path: bool, batch: int):
    """Backward pass: gradient variance/correlation at every point, output-projection weight-gradient norms and
    the gradient this stack sends into its memory (variance, covariance per memory token)."""
    d = st.d
    L = int(st.seq_len or 1)
    # LayerNorm's backward projects the gradient off two of d directions, the mean and the output itself. An
    # i.i.d. gradient loses 2/d of its variance. Inside a Post-LN stack the gradient reaching a LayerNorm's
    # output is orthogonal to it (derived: x . g_x = y' . g_y' = 0 because the value path is linear in x), and
    # only the share that came through the next branch has a mean component: it loses share/d.
    proj = 1.0 - 2.0 / d
    proj_post = proj
    if st.final_identity:
        g: Any = float(g_out)
    else:
        g = g_out * st.final_g * proj * (1.0 + fw["kappa"]) / (fw["v"] + st.final_eps)
    rho = rho_out
    n = len(fw["recs"])  # stepped sub-layers (see STEP_TOL): each record holds the spec it ran with
    gv, gr, wg = [0.0] * (n + 1), [0.0] * (n + 1), [float("nan")] * (n + 1)
    gv[n], gr[n] = _mean(g), rho
    mem_var = mem_cov = 0.0
    pc: _PairCov | None = fw.get("pc")
    Gc = None
    if pc is not None:  # per-pair gradient covariances, as in the forward pass (see _PairCov)
        import numpy as np

        g = np.broadcast_to(np.asarray(g, dtype=np.float64), (L,)).copy()
        Gc = pc.scaled(pc.uniform(rho_out * g_out), g / g_out if g_out > 0 else g)
    for i in range(n - 1, -1, -1):
        rec = fw["recs"][i]
        s, orig = rec["spec"], rec["orig"]
        f = rec["f"]
        if not s.norm_first:  # gradient at the sum before the LayerNorm
            fac = s.ln_g * proj_post * rec["inv_post"] * (1.0 + rec["kappa_y"])
            g = g * fac
            if Gc is not None:
                Gc = pc.scaled(Gc, fac)
        gb = s.beta2 * g / (1.0 - s.p)  # at the branch output, before the residual dropout
        rb = rho * (1.0 - s.p)
        cg_keys = Gx = None
        if Gc is not None:
            Gb = s.beta2 * Gc
            cg_keys, Gx = _branch_pair_grad(s, f, pc, gb, Gb, rec["R_in"], rec["u"])
        bv, bc, mv, mc = _branch_bwd(s, f, gb, rb, rec["r_in"], L, qk_path, cg_keys)
        mem_var += mv
        mem_cov += mc
        # output projection d_in -> d: inputs of second moment m_o / cross moment c_o, output gradients gb / rb
        fan_in = s.dff if s.kind == "ffn" else d
        gw = gb if orig is s else orig.beta2 * g / (1.0 - orig.p)  # one layer's share, not the step's
        gbm = _mean(gw)
        # a step's row stands for its last block, whose branch input has moved on from the step's first: read the
        # output projection's input moments one block further, where the next step starts (the 1000-layer DSLM GPT's
        # rows: within 0.40% of every-block, 0.76% with the step's own moments)
        fo = rec.get("f_end", f)
        sq = fan_in * d * batch * (L * _mean(fo["m_o"] * gw) + L * (L - 1.0) * fo["c_o"] * gbm * rb)
        wg[i + 1] = math.sqrt(max(sq, 0.0))
        if s.norm_first:
            g_new = s.lam2 * g + bv * s.ln_g * proj * rec["inv"] * (1.0 + rec["kappa"])
            c_new = s.lam2 * _mean(g) * rho + bc * s.ln_g * _mean(rec["inv"])
            if Gc is not None:
                Gc = s.lam2 * Gc + s.ln_g * (Gx if Gx is not None else bc) * rec["inv_outer"]
        else:
            # Post-LN cross term 2 lambda beta <g_y, J_F g_y> (derived): g_y is orthogonal to y = lambda x + beta F,
            # and F = J_F x (value path and ReLU FFN are linear in x), so E <g_y, J_F g_y> = -|g_y|^2 lambda beta
            # |F|^2 / (d |y|^2): a relative -2 lambda^2 b / (d y) with b the branch's share of y
            g_new = s.lam2 * g * (1.0 - 2.0 * rec["b"] / (d * rec["y"])) + bv
            c_new = s.lam2 * _mean(g) * rho + bc
            if Gc is not None:
                Gc = s.lam2 * Gc + (Gx if Gx is not None else pc.uniform(bc))
            gnm = _mean(g_new)
            proj_post = 1.0 - (_mean(bv) / gnm if gnm > 0 else 1.0) / d
        g = g_new
        gm = _mean(g)
        if Gc is not None:
            c_new = pc.mean(Gc)
        rho = c_new / gm if gm > 0 else 0.0
        gv[i], gr[i] = gm, rho
    return gv, gr, wg, mem_var, mem_cov


def predict_specs(
    stacks: list[StackSpec], g_out: float, rho_out: float, qk_path: bool, batch: int, meta: dict[str, Any],
    step: bool = True,
) -> SignalPrediction:
    """The recursion over a model's specs, forward then backward; ``step=False`` evaluates every block instead of
    stepping over runs of identical blocks (STEP_TOL)."""
    fws: list[dict[str, Any]] = []
    for st in stacks:
        mem = None
        if st.memory is not None:
            mv, mr = fws[st.memory]["out"]
            M = next((s.L for s in st.subs if s.kind == "cross_attn" and s.L is not None), stacks[st.memory].seq_len)
            mem = (mv, mr, M)
        fws.append(_run_stack(st, mem, step=step))
    # backward: the loss sits on the last stack; a memory stack receives what cross-attention sends back
    grads: list[Any] = [None] * len(stacks)
    incoming = {i: [0.0, 0.0] for i in range(len(stacks))}
    for k in range(len(stacks) - 1, -1, -1):
        st = stacks[k]
        is_memory = any(o.memory == k for o in stacks)
        if k == len(stacks) - 1 or not is_memory:
            go, ro = g_out, rho_out
        else:
            go = incoming[k][0]
            ro = incoming[k][1] / go if go > 0 else 0.0
        gv, gr, wg, mv, mc = _backward_stack(st, fws[k], go, ro, qk_path, batch)
        grads[k] = (gv, gr, wg)
        if st.memory is not None:
            incoming[st.memory][0] += mv
            incoming[st.memory][1] += mc
    t = SignalPrediction(meta=meta)
    for k, st in enumerate(stacks):
        fw = fws[k]
        n, where = len(st.subs), fw["where"]
        slots: list[list[tuple[int, int]]] = []
        for blk, (a, e) in enumerate(_block_slices(st.subs)):
            for j in range(e - a):
                while len(slots) <= j:
                    slots.append([])
                slots[j].append((a + j, blk))
        gv, gr, wg = (_expand_rows(x, where, n, slots, log) for x, log in zip(grads[k], (True, False, True)))
        fw = {**fw, **{c: _expand_rows(fw[c], where, n, slots, log) for c, log in (("fv", True), ("fr", False), ("sv", True))}}
        t.stack.extend([k] * (n + 1))
        t.sublayer.append(-1), t.block.append(-1), t.kind.append("input")
        t.sublayer.extend(range(n)), t.block.extend(s.block for s in st.subs), t.kind.extend(s.kind for s in st.subs)
        nan = float("nan")
        for col, vals in zip(_FLOAT_COLUMNS, (fw["fv"], fw["fr"], gv, gr, [nan] + wg[1:], [nan] + fw["sv"][1:])):
            getattr(t, col).extend(map(float, vals))
    return t


def check_predict_args(**kw: Any) -> None:
    """predict()'s numeric arguments: lengths and batch positive integers, correlations in [-1, 1], variances > 0."""
    def each(v: Any) -> list[Any]:
        return list(v) if isinstance(v, (list, tuple)) else [v]

    for name in ("seq_len", "memory_len", "batch_size"):
        v = kw[name]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"predict: {name} must be a positive integer, got {v!r}")
    for name, lo, hi in (("r_emb", -1.0, 1.0), ("grad_corr", -1.0, 1.0)):  # a measured r_emb can be slightly < 0
        for v in each(kw[name]) if kw[name] is not None else []:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise ValueError(f"predict: {name} must lie in [{lo:g}, {hi:g}], got {v!r}")
    for name in ("emb_var", "grad_var", "pixel_var"):
        for v in each(kw[name]) if kw[name] is not None else []:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
                raise ValueError(f"predict: {name} must be a positive finite number, got {v!r}")



# ---------------------------------------------------------------------------------------------------------------
# Measuring the embedding statistics the prediction starts from.


def token_correlation(x: Any) -> float:
    """Token-token correlation of (batch, tokens, features) activations.

    Per token the features are centred (as LayerNorm sees them); per sequence the token covariance matrix over
    features is formed; the result is the mean off-diagonal entry over the mean diagonal entry.
    """
    import torch

    with torch.no_grad():
        x = x.detach().float()
        if x.dim() == 2:
            x = x[None]
        x = x.reshape(-1, x.shape[-2], x.shape[-1])
        B, N, D = x.shape
        if N < 2:
            return float("nan")
        xc = x - x.mean(-1, keepdim=True)
        tot = xc.sum(1)  # (B, D)
        total = (tot * tot).sum()  # sum over all pairs incl. diagonal of token inner products
        diag = (xc * xc).sum()
        off = (total - diag) / (B * N * (N - 1))
        return float(off / (diag / (B * N)))
