"""Seed-averaged residual-stream second moment of the speech encoder-decoder at DSLM init (Pre-LN).

    python benchmarks/speech_init_variance.py --width 128 --seeds 8

Uses tests/test_speech.py::_stream_second_moments (synthetic 3 s utterances, Zipf targets, dropout on).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_speech import _stream_second_moments  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--depths", type=int, nargs="+", default=[192, 1000], help="encoder depths; decoder = half")
    args = ap.parse_args()
    print("| encoder + decoder layers | d | seeds | encoder min..max | decoder min..max | time |")
    print("|---|---|---|---|---|---|")
    for depth in args.depths:
        t = time.time()
        enc, dec = _stream_second_moments(
            True, seeds=range(args.seeds), depth=depth, decoder_depth=depth // 2, embed_dim=args.width, num_heads=2
        )
        print(f"| {depth} + {depth // 2} | {args.width} | {args.seeds} | {min(enc):.3f}..{max(enc):.3f} | "
              f"{min(dec):.3f}..{max(dec):.3f} | {time.time() - t:.0f}s |", flush=True)


if __name__ == "__main__":
    main()
