#!/usr/bin/env python
"""Whole-model theory vs measurement at init, depths 12 to 1000: Pre/Post-LN x Xavier/DSLM (issue 4's table).

For each (init, LayerNorm placement, depth) a BERT-style encoder (``dslm_bert_tiny`` with the depth and width
overridden, 4 heads, dropout 0.1, 64 tokens x 8 sequences) is built ``--seeds`` times; every model is predicted
from its own weights (:func:`dslm_zoo.diagnostics.predict_vs_measure`) and measured with the authors' protocol
(training-mode forward, loss = sum(out * G), G ~ N(0, 1)). Printed per row: the largest and median forward
variance error over sub-layers, the largest error of the residual sums (in Post-LN the LayerNorm inputs: the
stream itself is normalised to 1), the input/output gradient-variance ratio predicted and measured (seed means), their
quotient, and ``cv``, the coefficient of variation of the measured input gradient across seeds: when it is large
the seed mean of a handful of models cannot pin the expectation the theory gives (Xavier Post-LN multiplies a
per-layer factor that differs from model to model, so the ratio is about log-normal and its mean sits in the tail).

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
from dslm_zoo.diagnostics import predict_vs_measure  # noqa: E402
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
    p, m, c = predict_vs_measure(make, tokens, seeds, seq_len=L)
    i = m.input_row()
    cv = m.spread["grad_var"][i] / m.grad_var[i] if seeds > 1 else float("nan")
    return dict(c.summary, cv=cv)


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
    head = ("| init | LN | depth | d | seeds | fwd var err max | median | sum var err max | grad ratio pred | meas | "
            "pred/meas | cv |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    print(head, flush=True)
    for depth in args.depths:
        for init in args.inits:
            for norm_first in [ln == "pre" for ln in args.ln]:
                t = time.time()
                s = run(init, norm_first, depth, args.width, seeds_for[depth])
                meas = s["grad_ratio_meas"]
                note = "" if math.isfinite(meas) else " (fp32 overflow)"
                line = (f"| {init} | {'Pre' if norm_first else 'Post'} | {depth} | {args.width} | {seeds_for[depth]} | "
                        f"{100 * s['fwd_var_max_err']:.2f}% | {100 * s['fwd_var_median_err']:.2f}% | "
                        f"{100 * s['sum_var_max_err']:.2f}% | "
                        f"{_fmt(s['grad_ratio_pred'])} | {_fmt(meas)}{note} | {_fmt(s['grad_ratio_rel'])} | "
                        f"{_fmt(s['cv'])} |")
                lines.append(line)
                print(line + f"  [{time.time() - t:.0f}s]", flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        cmd = "python eval/signal_vs_depth.py " + " ".join(argv if argv is not None else sys.argv[1:])
        text = f"Produced by `{cmd.strip()}` ({torch.__version__}, CPU).\n\n" + "\n".join(lines) + "\n"
        if args.append and args.out.exists():
            text = args.out.read_text() + "\n" + text
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
