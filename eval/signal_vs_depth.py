#!/usr/bin/env python
"""Whole-model theory vs measurement at init, depths 12 to 1000: Pre/Post-LN x Xavier/DSLM (issue 4's table).

For each (init, LayerNorm placement, depth) a BERT-style encoder (``dslm_bert_tiny`` with the depth and width
overridden, 4 heads, dropout 0.1, 64 tokens x 8 sequences) is built ``--seeds`` times; every model is predicted
from its own weights (:func:`dslm_zoo.diagnostics.predict_and_measure`) and measured with the authors' protocol
(training-mode forward, loss = sum(out * G), G ~ N(0, 1)).

Forward table, per row: the largest and median forward-variance error over sub-layers of the seed means; the
largest error of the residual sums (in Post-LN the LayerNorm inputs: the stream itself is normalised to 1) and
their mean signed error (the bias, which noise averages out of); and how many sub-layers miss 5% by more than
three standard errors of the seed mean (0: every layer is within 5% up to measurement noise).

Gradient table, per row: the input/output gradient-variance ratio predicted and measured (seed means) and their
quotient; the variance across models of log(ratio) and the models a 5% standard error on the mean would take
(:func:`dslm_zoo.diagnostics.across_models`); and the per-sub-layer gradient factor's bias (mean over sub-layers
of log(predicted / measured factor), +- its jackknife standard error), and what it compounds to over the stack
(comparable with pred/meas).
In Xavier Post-LN each sub-layer multiplies the gradient by a factor that differs from model to model by
O(1/sqrt(d)); over hundreds of sub-layers the ratio becomes log-normal with a log-variance ~ depth / d, its mean
sits in a tail that no affordable number of models samples, and the seed mean cannot pin the expectation the
theory gives. The per-sub-layer factor can still be pinned.

    python eval/signal_vs_depth.py --out eval/results/signal_vs_depth.md   # ~40 min on 2 cores
    python eval/signal_vs_depth.py --depths 12 48 --seeds 16 --inits xavier
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dslm_zoo  # noqa: E402
from dslm_zoo.diagnostics import (  # noqa: E402
    across_models, average_pairs, predict_and_measure,
)
from dslm_zoo.diagnostics.compare import _fmt  # noqa: E402

VOCAB, HEADS, L, B = 2000, 4, 64, 8


def run(init: str, norm_first: bool, depth: int, width: int, seeds: int) -> dict[str, float]:
    def make(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return dslm_zoo.create_model(
            "dslm_bert_tiny", init=init, depth=depth, embed_dim=width, num_heads=HEADS, norm_first=norm_first,
            vocab_size=VOCAB, type_vocab_size=0,
        )

    tokens = torch.randint(0, VOCAB, (B, L), generator=torch.Generator().manual_seed(0))
    pairs = list(predict_and_measure(make, tokens, seeds, seq_len=L))
    out = dict(average_pairs(pairs)[2].summary)
    if seeds > 1:
        out.update(across_models(pairs))
    return out


def _pct(x: float, digits: int = 2) -> str:
    return f"{100 * x:.{digits}f}%" if math.isfinite(x) else "-"


FWD_HEAD = ("| init | LN | depth | d | seeds | fwd var err max | median | sum var err max | sum var bias | "
            "layers off 5% by > 3 se |\n|---|---|---|---|---|---|---|---|---|---|")
GRAD_HEAD = ("| init | LN | depth | d | seeds | grad ratio pred | meas | pred/meas | var log ratio | models for 5% | "
             "per-sub-layer factor bias | compounded |\n|---|---|---|---|---|---|---|---|---|---|---|---|")


def rows(init: str, norm_first: bool, depth: int, width: int, seeds: int, s: dict[str, float]) -> tuple[str, str]:
    key = f"| {init} | {'Pre' if norm_first else 'Post'} | {depth} | {width} | {seeds} |"
    beyond = s["var_rows_beyond_5pct_3se"]
    fwd = (f"{key} {_pct(s['fwd_var_max_err'])} | {_pct(s['fwd_var_median_err'])} | {_pct(s['sum_var_max_err'])} | "
           f"{_pct(s['sum_var_bias'])} | {'-' if not math.isfinite(beyond) else int(beyond)} |")
    meas = s["grad_ratio_meas"]
    note = "" if math.isfinite(meas) else " (fp32 overflow)"
    if "factor_bias" in s:
        fb = f"{_pct(s['factor_bias'], 3)} +- {_pct(s['factor_bias_se'], 3)}"
        comp = _fmt(math.exp(s["factor_bias"] * s["n_sub"]))
        spread = f"{_fmt(s['log_ratio_var'])} | {_fmt(s['models_for_5pct'])}"
    else:
        fb, comp, spread = "-", "-", "- | -"
    grad = (f"{key} {_fmt(s['grad_ratio_pred'])} | {_fmt(meas)}{note} | {_fmt(s['grad_ratio_rel'])} | {spread} | "
            f"{fb} | {comp} |")
    return fwd, grad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", type=int, nargs="+", default=[12, 48, 192, 1000])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--seeds", type=int, nargs="+", default=[16, 16, 16, 4], help="one value, or one per depth")
    ap.add_argument("--inits", nargs="+", default=["dslm", "xavier"])
    ap.add_argument("--ln", nargs="+", choices=("pre", "post"), default=["pre", "post"], help="LayerNorm placements")
    ap.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    ap.add_argument("--append", action="store_true", help="add to --out instead of replacing it")
    args = ap.parse_args(argv)
    if len(args.seeds) not in (1, len(args.depths)):
        ap.error(f"--seeds takes one value or one per depth ({len(args.depths)}), got {len(args.seeds)}")
    seeds_for = dict(zip(args.depths, args.seeds * len(args.depths) if len(args.seeds) == 1 else args.seeds))
    torch.set_num_threads(min(2, torch.get_num_threads()))
    fwd_lines, grad_lines = [FWD_HEAD], [GRAD_HEAD]
    for depth in args.depths:
        for init in args.inits:
            for norm_first in [ln == "pre" for ln in args.ln]:
                t = time.time()
                s = run(init, norm_first, depth, args.width, seeds_for[depth])
                fwd, grad = rows(init, norm_first, depth, args.width, seeds_for[depth], s)
                fwd_lines.append(fwd)
                grad_lines.append(grad)
                print(f"{fwd}\n{grad}  [{time.time() - t:.0f}s]", flush=True)
    tables = "Forward\n\n" + "\n".join(fwd_lines) + "\n\nGradient\n\n" + "\n".join(grad_lines) + "\n"
    print("\n" + tables)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        cmd = "python eval/signal_vs_depth.py " + " ".join(argv if argv is not None else sys.argv[1:])
        text = f"Produced by `{cmd.strip()}` ({torch.__version__}, CPU).\n\n" + tables
        if args.append and args.out.exists():
            text = args.out.read_text() + "\n" + text
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
