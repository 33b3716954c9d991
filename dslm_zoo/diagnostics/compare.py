"""Measure signal propagation on real batches and compare it with :func:`dslm_zoo.diagnostics.predict`.

The protocol is the authors' (Kedia et al. 2024, Sec. 6 of ``shared/spec/dslm.md``): a training-mode forward on
a real batch, an upstream gradient G with i.i.d. N(0, 1) entries injected as ``loss = sum(out * G)`` at the
output of the last stack (``forward_features``; ``forward_hidden`` for encoder-decoders), one backward, no
optimiser step. Single models fluctuate by about 2/sqrt(d) around the theory's expectation (the cross term
2 lambda beta cov(x, F(x)) random-walks), so :func:`measure_many` averages fresh initialisations.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from ..theory.signal import _FLOAT_COLUMNS, SignalPrediction, SignalTable
from .predict import _call, measure_embedding, predict
from .hooks import SignalMeasurement, SignalMonitor, _first_tensor

__all__ = [
    "SignalMeasurement", "measure", "measure_many", "compare", "Comparison", "predict_vs_measure", "predict_and_measure",
    "average_pairs", "across_models",
]


def measure(
    model: nn.Module,
    batch: Any,
    *,
    train: bool = True,
    grad: bool = True,
    seed: int | None = 0,
    output_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None,
) -> SignalMeasurement:
    """One forward (training mode by default) and one backward of ``sum(out * G)``, G ~ N(0, 1) i.i.d.

    ``batch``: a tensor (input ids, images), a tuple of positional arguments or a dict of keyword arguments
    of ``model.forward_hidden`` where the model has one, else of ``model.forward_features`` (or of
    ``output_fn(model, batch)``, which must return the output tensor).
    ``seed`` fixes G and the dropout masks. Parameter gradients are cleared before and after.
    """
    was = model.training
    model.train(train)
    model.zero_grad(set_to_none=True)
    gen_state = torch.random.get_rng_state()
    try:
        if seed is not None:
            torch.manual_seed(seed)
        with SignalMonitor(model, grad=grad) as mon:
            with torch.enable_grad():
                out = output_fn(model, batch) if output_fn is not None else _call(model, batch)
                if isinstance(out, (tuple, list)):
                    out = out[0]
                if grad:
                    G = torch.randn(out.shape, dtype=torch.float32, device=out.device).to(out.dtype)
                    (out * G).float().sum().backward()
            table = mon.table(meta=dict(model=type(model).__name__, train=train, seq_len=_seq_len(out),
                                        batch_size=int(out.shape[0]) if out.dim() > 0 else 1))
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was)
        if seed is not None:
            torch.random.set_rng_state(gen_state)
    return table


def _seq_len(out: torch.Tensor) -> int | None:
    return int(out.shape[-2]) if out.dim() >= 3 else None


def measure_many(
    make_model: Callable[[int], nn.Module],
    batch: Any,
    seeds: Sequence[int] | int = 4,
    **kwargs: Any,
) -> SignalMeasurement:
    """Average of :func:`measure` over freshly built models ``make_model(seed)`` (one G and dropout draw each)."""
    seeds = range(seeds) if isinstance(seeds, int) else seeds
    items = []
    for s in seeds:
        model = make_model(s)
        items.append(measure(model, batch(s) if callable(batch) else batch, seed=1000 + s, **kwargs))
        del model
    return SignalMeasurement.average(items)


# ---------------------------------------------------------------------------------------------------------------


def _rel(p: float, m: float) -> float:
    if not (math.isfinite(p) and math.isfinite(m)) or m == 0:
        return float("nan")
    return abs(p - m) / abs(m)


@dataclass
class Comparison:
    """Predicted vs measured per row, relative errors |p - m| / |m|, and a summary."""

    rows: list[dict[str, Any]]
    summary: dict[str, float]

    def errors(self, col: str, kinds: Sequence[str] = ("attn", "cross_attn", "ffn")) -> list[float]:
        return [r[f"{col}_err"] for r in self.rows if r["kind"] in kinds]

    def table(self, every: int = 1, cols: Sequence[str] = ("fwd_var", "fwd_corr", "grad_var", "wgrad_norm")) -> str:
        """A compact text table: every ``every``-th sub-layer (plus the first and last rows)."""
        head = f"{'row':>4} {'blk':>4} {'kind':<6}" + "".join(f" {c + ' pred':>14} {'meas':>10} {'err%':>6}" for c in cols)
        lines = [head, "-" * len(head)]
        n = len(self.rows)
        for i, r in enumerate(self.rows):
            if not (i == 0 or i == n - 1 or r["kind"] == "input" or (r["sublayer"] + 1) % every == 0):
                continue
            s = f"{i:>4} {r['block']:>4} {r['kind']:<6}"
            for c in cols:
                e = r[f"{c}_err"]
                s += f" {_fmt(r[c + '_pred']):>14} {_fmt(r[c + '_meas']):>10} {('' if not math.isfinite(e) else f'{100 * e:.1f}'):>6}"
            lines.append(s)
        sm = self.summary
        lines.append(
            f"forward variance rel. error: max {100 * sm['fwd_var_max_err']:.2f}%, median {100 * sm['fwd_var_median_err']:.2f}%"
            f" (residual sums: max {100 * sm['sum_var_max_err']:.2f}%)"
            f" | grad ratio input/output: predicted {_fmt(sm['grad_ratio_pred'])}, measured {_fmt(sm['grad_ratio_meas'])}"
            f" (pred/meas {sm['grad_ratio_rel']:.3f})"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table(every=max(1, len(self.rows) // 24))

    def to_dict(self) -> dict[str, Any]:
        return dict(rows=self.rows, summary=self.summary)


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    return f"{x:.4g}"


def compare(prediction: SignalTable, measurement: SignalTable) -> Comparison:
    """Row-by-row relative errors; summary: max/median forward-variance error over sub-layer rows (and of the
    residual sums, which in Post-LN are what the LayerNorms normalise), median
    errors of the other columns, and the input/output gradient-variance ratio predicted vs measured.

    Measurement noise: ``sum_var_bias`` is the mean signed error (p - m) / m of the residual sums over
    sub-layers, and, for an average over models (``SignalMeasurement.average``),
    ``var_rows_beyond_5pct_3se`` counts the sub-layers whose forward variance or residual sum misses the
    prediction by more than 5% plus three standard errors of the mean (nan for a single model)."""
    if list(prediction.kind) != list(measurement.kind):
        raise ValueError(
            f"row layouts differ ({len(prediction)} predicted vs {len(measurement)} measured rows): "
            "was the prediction made for the same architecture?"
        )
    rows = []
    for i in range(len(prediction)):
        r: dict[str, Any] = {c: getattr(prediction, c)[i] for c in ("stack", "sublayer", "block", "kind")}
        for c in _FLOAT_COLUMNS:
            p, m = getattr(prediction, c)[i], getattr(measurement, c)[i]
            r[f"{c}_pred"], r[f"{c}_meas"], r[f"{c}_err"] = p, m, _rel(p, m)
        rows.append(r)
    sub = [r for r in rows if r["kind"] != "input"]

    def stat(col: str, fn: Callable[[list[float]], float]) -> float:
        v = [r[f"{col}_err"] for r in sub if math.isfinite(r[f"{col}_err"])]
        return fn(v) if v else float("nan")

    # a mean over a few models misses its expectation by ~ sd / sqrt(n): count the rows where even 3 standard
    # errors do not bring the measurement within 5% of the prediction
    spread = getattr(measurement, "spread", {})
    n_models = getattr(measurement, "n_models", 1)
    beyond = float("nan")
    if n_models > 1 and spread:
        beyond = 0.0
        for i, r in enumerate(rows):
            if r["kind"] == "input":
                continue
            for c in ("fwd_var", "sum_var"):
                p, m, sd = r[f"{c}_pred"], r[f"{c}_meas"], spread[c][i]
                if all(map(math.isfinite, (p, m, sd))) and abs(p - m) > 0.05 * abs(m) + 3.0 * sd / math.sqrt(n_models):
                    beyond += 1.0
                    break
    signed = [(r["sum_var_pred"] - r["sum_var_meas"]) / r["sum_var_meas"] for r in sub if math.isfinite(r["sum_var_err"])]
    gp, gm = prediction.grad_ratio(), measurement.grad_ratio()
    summary = dict(
        fwd_var_max_err=stat("fwd_var", max),
        fwd_var_median_err=stat("fwd_var", statistics.median),
        sum_var_max_err=stat("sum_var", max),
        sum_var_median_err=stat("sum_var", statistics.median),
        sum_var_bias=statistics.fmean(signed) if signed else float("nan"),
        var_rows_beyond_5pct_3se=beyond,
        fwd_corr_median_err=stat("fwd_corr", statistics.median),
        grad_var_median_err=stat("grad_var", statistics.median),
        grad_var_max_err=stat("grad_var", max),
        wgrad_norm_median_err=stat("wgrad_norm", statistics.median),
        grad_ratio_pred=gp,
        grad_ratio_meas=gm,
        grad_ratio_rel=gp / gm if gm else float("nan"),
    )
    return Comparison(rows, summary)


def predict_and_measure(
    make_model: Callable[[int], nn.Module],
    batch: Any,
    seeds: Sequence[int] | int = 4,
    *,
    seq_len: int | None = None,
    **predict_kwargs: Any,
) -> Iterator[tuple[SignalPrediction, SignalMeasurement]]:
    """For every seed, a fresh model ``make_model(seed)`` predicted from its own weights and then measured.

    The prediction takes the embedding statistics measured on ``batch`` (``measure_embedding``: variance and
    token correlation before dropout); the measurement is :func:`measure` on the same batch. Yields
    ``(prediction, measurement)`` per model, one model in memory at a time.
    """

    seeds = range(seeds) if isinstance(seeds, int) else seeds
    first = _first_tensor(batch)
    for s in seeds:
        model = make_model(s)
        emb = measure_embedding(model, batch)
        kw = dict(predict_kwargs)
        if first is not None:
            kw.setdefault("batch_size", int(first.shape[0]))
        pred = predict(model, seq_len, r_emb=[c for _, c in emb], emb_var=[v for v, _ in emb], **kw)
        meas = measure(model, batch, seed=1000 + s)
        del model
        yield pred, meas


def predict_vs_measure(
    make_model: Callable[[int], nn.Module],
    batch: Any,
    seeds: Sequence[int] | int = 4,
    *,
    seq_len: int | None = None,
    **predict_kwargs: Any,
) -> tuple[SignalPrediction, SignalMeasurement, Comparison]:
    """Theory vs measurement averaged over fresh models ``make_model(seed)`` (see :func:`predict_and_measure`):
    predictions and measurements are averaged row-wise and compared."""
    return average_pairs(list(predict_and_measure(make_model, batch, seeds, seq_len=seq_len, **predict_kwargs)))


def average_pairs(
    pairs: Sequence[tuple[SignalPrediction, SignalMeasurement]],
) -> tuple[SignalPrediction, SignalMeasurement, Comparison]:
    """Row-wise means of the predictions and of the measurements of :func:`predict_and_measure`, compared."""
    p = SignalPrediction.mean([q for q, _ in pairs])
    m = SignalMeasurement.average([q for _, q in pairs])
    return p, m, compare(p, m)


def across_models(pairs: Sequence[tuple[SignalTable, SignalTable]], stack: int | None = None) -> dict[str, float]:
    """How the input/output gradient ratio of one stack varies from model to model, and what that allows.

    ``pairs``: (prediction, measurement) per model, as :func:`predict_and_measure` yields them. Returned:

    * ``log_ratio_var``: variance across models of the log of the measured ratio. Each sub-layer multiplies
      the gradient by a factor that differs from model to model by O(1/sqrt(d)); over many sub-layers these
      compound, the ratio becomes about log-normal, and its mean is carried by rare models.
    * ``models_for_5pct``: models needed to pin the mean ratio to a 5% standard error, exp(var) - 1 over 0.05^2
      (a log-normal's squared coefficient of variation).
    * ``factor_bias``: the mean over sub-layers of log(predicted / measured per-sub-layer gradient factor),
      each factor g_in / g_out averaged over models before the log. A sub-layer's factor varies little between
      models, so this pins the theory per sub-layer even where the whole ratio cannot be pinned;
      ``factor_bias_se`` is its jackknife standard error over models (it keeps the correlation between
      sub-layers of one model), and exp(``factor_bias * n_sub``) is what the bias compounds to over the stack,
      comparable with the whole ratio's pred / meas.
    """
    import numpy as np

    if len(pairs) < 2:
        raise ValueError(f"need at least two models, got {len(pairs)}")
    p0 = pairs[0][0]
    lo, hi = p0.input_row(stack), p0.output_row(stack)

    def factors(t: SignalTable) -> Any:
        g = np.asarray(t.grad_var[lo : hi + 1], dtype=np.float64)
        return g[:-1] / g[1:]

    fp = np.stack([factors(p) for p, _ in pairs])
    fm = np.stack([factors(m) for _, m in pairs])
    n = len(pairs)

    def bias(keep: Any) -> float:
        return float(np.mean(np.log(fp[keep].mean(0) / fm[keep].mean(0))))

    every = np.ones(n, dtype=bool)
    jack = np.array([bias(every & (np.arange(n) != k)) for k in range(n)])
    log_ratio = np.log([m.grad_ratio(stack) for _, m in pairs])
    var = float(np.var(log_ratio, ddof=1))
    return dict(
        log_ratio_var=var,
        models_for_5pct=math.expm1(min(var, 700.0)) / 0.05**2,
        factor_bias=bias(every),
        factor_bias_se=float(math.sqrt((n - 1) / n * np.sum((jack - jack.mean()) ** 2))),
        n_sub=hi - lo,
    )
