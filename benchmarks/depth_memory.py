"""Step time and peak memory against depth, with and without activation checkpointing, and inference throughput
(issue 13, docs/depth.md).

    python benchmarks/depth_memory.py [--depths 12 48 192 1000] [--dim 64] [--batch 8] [--seq 128] [--steps 3]

The model is ``dslm_bert_1000L`` at each depth, narrowed to ``--dim`` (the shape of
``recipes/bert_1000L_64D_en20m_mlm.yaml``, the 1000-layer training run), masked-LM loss on random tokens, fp32 on
the CPU. A training step is forward, backward and AdamW. Every (depth, checkpointing) row runs in a fresh process,
so that its peak resident set is its own: ``peak RSS`` is that process's peak (weights, gradients, AdamW state,
activations, allocator slack: what the machine must hold), ``step mem`` the peak minus the resident set before
the first step (what training adds to the built model). Activation checkpointing (``set_grad_checkpointing``)
keeps one block's activations at a time and runs each block's forward twice. ``infer tok/s``: forward only, eval
mode, ``torch.inference_mode``. Step time is the median over ``--steps`` steps after one warm-up step.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux


def one(depth: int, dim: int, ckpt: bool, batch: int, seq: int, steps: int, vocab: int) -> dict:
    """One row, measured in this process."""
    import torch
    from torch import nn

    import dslm_zoo

    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = dslm_zoo.create_model("dslm_bert_1000L", depth=depth, embed_dim=dim, drop_rate=0.0, vocab_size=vocab,
                                  max_seq_len=seq)
    build_s = time.perf_counter() - t0
    model.set_grad_checkpointing(ckpt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(5, vocab, (batch, seq))
    labels = torch.where(torch.rand(batch, seq) < 0.15, ids, torch.full_like(ids, -100))
    base = _rss_mb()
    times = []
    model.train()
    for i in range(steps + 1):
        t = time.perf_counter()
        loss = nn.functional.cross_entropy(model(ids).flatten(0, 1).float(), labels.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t)
    peak = _peak_mb()
    model.eval()
    with torch.inference_mode():
        model(ids)
        t = time.perf_counter()
        for _ in range(steps):
            model(ids)
        infer = steps * batch * seq / (time.perf_counter() - t)
    return dict(depth=depth, dim=dim, ckpt=ckpt, params=sum(p.numel() for p in model.parameters()), build_s=build_s,
                step_s=statistics.median(times), peak_mb=peak, step_mb=peak - base, infer_tok_s=infer,
                loss=float(loss))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", type=int, nargs="+", default=[12, 48, 192, 1000])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--one", nargs=2, metavar=("DEPTH", "CKPT"), help=argparse.SUPPRESS)  # a row, in a child
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(one(int(args.one[0]), args.dim, args.one[1] == "1", args.batch, args.seq, args.steps, args.vocab)))
        return
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch} x {args.seq} tokens, d = {args.dim}, "
          f"fp32, median of {args.steps} steps\n")
    print("| depth | params | checkpointing | step (s) | tokens/s | peak RSS (MB) | step mem (MB) | infer tok/s |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for depth in args.depths:
        for ckpt in (False, True):
            cmd = [sys.executable, __file__, "--one", str(depth), "1" if ckpt else "0", "--dim", str(args.dim),
                   "--batch", str(args.batch), "--seq", str(args.seq), "--vocab", str(args.vocab),
                   "--steps", str(args.steps), "--threads", str(args.threads)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:  # e.g. out of memory: reported in the table, not hidden
                why = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1][:80]
                print(f"| {depth} | | {'on' if ckpt else 'off'} | failed: {why} | | | | |", flush=True)
                continue
            x = json.loads(r.stdout.strip().splitlines()[-1])
            print(f"| {depth} | {x['params'] / 1e6:.2f}M | {'on' if ckpt else 'off'} | {x['step_s']:.3f} | "
                  f"{args.batch * args.seq / x['step_s']:.0f} | {x['peak_mb']:.0f} | {x['step_mb']:.0f} | "
                  f"{x['infer_tok_s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
