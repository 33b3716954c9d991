"""torch.compile of one block reused for every layer, against eager and a whole-model compile (issue 13): compile
time (the first step) and the training-step speedup, per depth.

    python benchmarks/compile_block.py [--depths 12 24 48] [--dim 192] [--batch 32] [--steps 5] [--whole-up-to 24]

The model is ``dslm_vit_tiny`` at each depth and width (32x32 images, patch 4, 10 classes, fp32, CPU). ``block``
is what ``train.compile: true`` does in the trainer: ``block.compile()`` on every block of every stack. The blocks
share their code, and their parameters are graph inputs, so dynamo compiles one graph and reuses it for every
layer: compile time should not grow with depth. ``whole`` is ``torch.compile(model)`` (run up to
``--whole-up-to`` layers; its compile time grows with depth). Every arm runs in a fresh process (no shared
compile cache). ``first step`` is forward, backward and AdamW of the first batch, compile included; ``step`` the
median of the next ``--steps``; ``speedup`` eager step time over this arm's.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def one(arm: str, depth: int, dim: int, batch: int, steps: int) -> dict:
    import torch
    from torch import nn

    import dslm_zoo
    from dslm_zoo.layers import Transformer

    torch.manual_seed(0)
    model = dslm_zoo.create_model("dslm_vit_tiny", depth=depth, embed_dim=dim, num_heads=max(dim // 64, 1), img_size=32,
                                  patch_size=4, num_classes=10, drop_rate=0.0)
    if arm == "block":
        for stack in (m for m in model.modules() if isinstance(m, Transformer)):
            for blk in stack.blocks:
                blk.compile()
    elif arm == "whole":
        model = torch.compile(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    return dict(arm=arm, depth=depth, first_s=times[0], step_s=statistics.median(times[1:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", type=int, nargs="+", default=[12, 24, 48])
    ap.add_argument("--dim", type=int, default=192)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--whole-up-to", type=int, default=24, help="deepest model to compile whole (minutes on a CPU)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--one", nargs=2, metavar=("ARM", "DEPTH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.dim, args.batch, args.steps)))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, ViT d = {args.dim}, batch {args.batch}, fp32, "
          f"median of {args.steps} steps\n")
    print("| depth | arm | first step, compile included (s) | step (s) | speedup over eager |")
    print("|---:|---|---:|---:|---:|")
    for depth in args.depths:
        eager = None
        for arm in ("eager", "block", "whole"):
            if arm == "whole" and depth > args.whole_up_to:
                continue
            cmd = [sys.executable, __file__, "--one", arm, str(depth), "--dim", str(args.dim), "--batch", str(args.batch),
                   "--steps", str(args.steps)] + (["--threads", str(args.threads)] if args.threads else [])
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                why = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1][:100]
                print(f"| {depth} | {arm} | failed: {why} | | |", flush=True)
                continue
            x = json.loads(r.stdout.strip().splitlines()[-1])
            eager = x["step_s"] if arm == "eager" else eager
            speed = f"{eager / x['step_s']:.3f}" if eager else "-"
            print(f"| {depth} | {arm} | {x['first_s']:.1f} | {x['step_s']:.3f} | {speed} |", flush=True)


if __name__ == "__main__":
    main()
