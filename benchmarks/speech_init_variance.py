"""Seed-averaged residual-stream second moment of the speech encoder-decoder at DSLM init, Pre-LN and Post-LN.

    python benchmarks/speech_init_variance.py --width 128 --seeds 16

Uses tests/test_speech.py::_stream_runs (two synthetic 3 s utterances, Zipf targets, dropout on). Pre-LN: the
stream after every block; Post-LN: the sum entering every LayerNorm (the stream itself is 1 by construction).
Each column gives min..max over depth of the seed average and, in brackets, the largest standard error of that
average (per-seed sd / sqrt(seeds)): single Pre-LN models random-walk by ~2/sqrt(d) per block, so a deviation
of a few standard errors at the 1000th block is seed noise, not drift; ``predict`` expects 1.00 throughout.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_speech import _stream_runs  # noqa: E402


def _summary(runs: list[list[float]]) -> str:
    cols = list(zip(*runs))
    means = [statistics.fmean(c) for c in cols]
    sem = max(statistics.stdev(c) / len(c) ** 0.5 for c in cols) if len(runs) > 1 else float("nan")
    return f"{min(means):.3f}..{max(means):.3f} (se <= {sem:.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--depths", type=int, nargs="+", default=[192, 1000], help="encoder depths; decoder = half")
    args = ap.parse_args()
    torch.set_num_threads(1)  # many small ops: one thread is as fast and leaves the other core free
    print("| encoder + decoder layers | LN | d | seeds | encoder min..max | decoder min..max | time |")
    print("|---|---|---|---|---|---|---|")
    for depth in args.depths:
        for norm_first in (True, False):
            t = time.time()
            enc, dec = _stream_runs(
                norm_first, seeds=range(args.seeds), depth=depth, decoder_depth=depth // 2, embed_dim=args.width,
                num_heads=2,
            )
            print(f"| {depth} + {depth // 2} | {'Pre' if norm_first else 'Post'} | {args.width} | {args.seeds} | "
                  f"{_summary(enc)} | {_summary(dec)} | {time.time() - t:.0f}s |", flush=True)


if __name__ == "__main__":
    main()
