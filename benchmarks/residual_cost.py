"""What DSLM's residual scaling costs in one residual sub-layer, forward and backward (issue 13): the plain residual
against DSLM's, Post-LN and Pre-LN, with the branch left out (its cost is the same in every arm).

    python benchmarks/residual_cost.py [--shapes 32x128x64 32x128x192] [--reps 200] [--threads 1]

Arms, on a stream x and a branch output y (``requires_grad``), forward then backward of the sum of the output:
``plain``: LN(x + y) (Post-LN) / x + y (Pre-LN), lambda = beta = 1; ``dslm literal``: LN(lam x + beta y) /
lam x + beta y, a multiply and a scaled add; ``dslm folded`` (Post-LN only, what ``Residual`` runs):
LN_{eps / lam^2}(x + (beta / lam) y), one scaled add (LayerNorm is scale-invariant). The arms run interleaved,
rep by rep, so that machine load hits them alike; the table has the median time and the cost over ``plain``.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F


def arms(dim: int, lam: float, beta: float, eps: float = 1e-5) -> dict[str, dict[str, object]]:
    w, b = torch.ones(dim), torch.zeros(dim)

    def ln(s: torch.Tensor, e: float = eps) -> torch.Tensor:
        return F.layer_norm(s, (dim,), w, b, e)

    return {
        "post": {
            "plain": lambda x, y: ln(x + y),
            "dslm literal": lambda x, y: ln(torch.add(x * lam, y, alpha=beta)),
            "dslm folded": lambda x, y: ln(torch.add(x, y, alpha=beta / lam), eps / lam**2),
        },
        "pre": {
            "plain": lambda x, y: x + y,
            "dslm literal": lambda x, y: torch.add(x * lam, y, alpha=beta),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=["32x128x64", "32x128x192"], help="BATCHxTOKENSxWIDTH")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sublayers", type=int, default=192, help="N_sub of the stack lambda, beta are taken from (k = 2)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    beta = math.sqrt(2.0 / args.sublayers)
    lam = math.sqrt(1.0 - beta * beta)
    print(f"torch {torch.__version__}, {args.threads} thread(s), fp32, median of {args.reps} reps, lambda {lam:.4f}, "
          f"beta {beta:.4f}\n")
    print("| shape | LN | arm | forward + backward (us) | cost over plain |")
    print("|---|---|---|---:|---:|")
    for shape in args.shapes:
        B, N, D = (int(v) for v in shape.lower().split("x"))
        for placement, fns in arms(D, lam, beta).items():
            x = torch.randn(B, N, D, requires_grad=True)
            y = torch.randn(B, N, D, requires_grad=True)
            times: dict[str, list[float]] = {k: [] for k in fns}
            for rep in range(args.reps + 5):
                for k, fn in fns.items():
                    t = time.perf_counter()
                    fn(x, y).sum().backward()
                    dt = time.perf_counter() - t
                    x.grad = y.grad = None
                    if rep >= 5:  # warm-up
                        times[k].append(dt)
            med = {k: statistics.median(v) for k, v in times.items()}
            for k, t in med.items():
                print(f"| {shape} | {placement} | {k} | {t * 1e6:.0f} | {t / med['plain'] - 1:+.1%} |")


if __name__ == "__main__":
    main()
