"""Per-layer forward variance of the residual stream at init, DSLM vs Xavier, Pre-LN and Post-LN, every family.

    python benchmarks/init_variance.py --depths 192 1000 --width 128 --seeds 4

Prints a markdown table: min / max / last-layer variance of the seed-averaged residual stream (the quantity
the theory predicts), plus the spread of single models. Inputs are random tokens / Gaussian images; the DSLM
r_emb is set to the inputs' analytic embedding correlation (tests/test_init.py::_r_emb).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_init import measured_variance  # noqa: E402

FAMILIES = ["dslm_bert_tiny", "dslm_gpt_tiny", "dslm_vit_tiny"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", type=int, nargs="+", default=[192])
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--families", nargs="+", default=FAMILIES)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"| family | depth | d | LN | init | min var | max var | last var | seeds | time |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for depth in args.depths:
        for fam in args.families:
            for scheme, nf in (("dslm", True), ("dslm", False), ("xavier", True)):
                t = time.time()
                v = measured_variance(fam, scheme, depth, args.width, args.seeds, norm_first=nf)
                print(
                    f"| {fam} | {depth} | {args.width} | {'Pre' if nf else 'Post'} | {scheme} | {v.min():.3f} | "
                    f"{v.max():.3f} | {v[-1]:.3f} | {args.seeds} | {time.time() - t:.0f}s |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
