"""The DSLM learning-rate rule, tested: a base-rate sweep on real text at two depths (docs/lr_rule.md).

    .venv/bin/python eval/lr_sweep.py --depths 12 48 --workers 2        # about 70 min on 2 CPU cores

Arms: Xavier init without a rule (the baseline a practitioner tunes), DSLM with the rule
(``optim.lr_rule=dslm``, the default for DSLM models) and DSLM without it (a coarser grid, by default at the
shallow depth only). Every run is
``python -m dslm_zoo.train recipes/lr_sweep_mlm.yaml`` with ``--set`` overrides, in its own run directory under
``--runs`` (finished runs are reused, so an interrupted sweep continues). The table reports the final
validation loss of every (arm, depth, base rate), the best base rate per arm and depth, and the ratios the
issue asks about; the figure plots loss against base rate.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARMS = {"xavier": ("xavier", "none"), "dslm+rule": ("dslm", "dslm"), "dslm-no-rule": ("dslm", "none")}


def run_one(runs: Path, recipe: Path, arm: str, depth: int, lr: float, steps: int) -> dict:
    from dslm_zoo.train.sweep import run_recipe

    init, rule = ARMS[arm]
    r = run_recipe(recipe, runs / f"{arm}_d{depth}_lr{lr:g}", [f"model.kwargs.depth={depth}", f"model.kwargs.init={init}",
                                                               f"optim.lr_rule={rule}", f"optim.lr={lr}", f"train.steps={steps}"])
    nonfinite = r.returncode == 3 or not math.isfinite(r.eval_loss)
    return {"arm": arm, "depth": depth, "lr": lr, "eval_loss": r.eval_loss, "diverged": nonfinite,
            "train_loss_last": r.last_loss}


def unigram_baseline(data: str = "python-docs") -> float:
    """Cross-entropy of the validation tokens under the training split's token frequencies."""
    import numpy as np

    from dslm_zoo.data import load_text_data

    d = load_text_data(data)
    counts = np.bincount(np.asarray(d.splits["train"]), minlength=d.vocab_size).astype(np.float64)
    p = counts / counts.sum()
    v = np.asarray(d.splits["validation"])
    return float(-np.log(np.maximum(p[v], 1e-12)).mean())


def best(results: list[dict], arm: str, depth: int) -> dict:
    rows = [r for r in results if r["arm"] == arm and r["depth"] == depth]
    return min(rows, key=lambda r: r["eval_loss"])


def write_report(results: list[dict], depths: list[int], lrs: list[float], out_md: Path, out_png: Path, cmd: str) -> str:
    lines = [f"Command: `{cmd}`", "", "Final validation loss (masked-LM, nats per masked token) per base learning rate:", ""]
    head = "| arm | depth | " + " | ".join(f"{lr:g}" for lr in lrs) + " | best base lr |"
    lines += [head, "|" + "---|" * (len(lrs) + 3)]
    for arm in ARMS:
        for d in depths:
            rows = {r["lr"]: r for r in results if r["arm"] == arm and r["depth"] == d}
            if not rows:
                continue
            b = best(results, arm, d)
            cells = []
            for lr in lrs:
                r = rows.get(lr)
                cells.append("-" if r is None else "diverged" if r["diverged"] else
                             (f"**{r['eval_loss']:.3f}**" if r is b else f"{r['eval_loss']:.3f}"))
            lines.append(f"| {arm} | {d} | " + " | ".join(cells) + f" | {b['lr']:g} |")
    lines += ["", f"Unigram cross-entropy of the validation split (the loss of predicting every masked token by its "
              f"training-set frequency): {unigram_baseline():.3f}. Runs that end above it have learned nothing of the "
              f"context.", "", "Ratios of best base rates (the rule's bar: within 2x):", ""]
    for d in depths:
        have = {a: best(results, a, d)["lr"] for a in ARMS if any(r["arm"] == a and r["depth"] == d for r in results)}
        if "xavier" in have:
            parts = [f"{a} / xavier = {have[a] / have['xavier']:g}" for a in ("dslm+rule", "dslm-no-rule") if a in have]
            if parts:
                lines.append(f"- depth {d}: " + "; ".join(parts))
    if len(depths) == 2 and all(any(r["arm"] == "dslm+rule" and r["depth"] == d for r in results) for d in depths):
        a, b2 = (best(results, "dslm+rule", d)["lr"] for d in depths)
        lines.append(f"- dslm+rule, depth {depths[1]} / depth {depths[0]} = {b2 / a:g}")
    text = "\n".join(lines) + "\n"
    out_md.write_text(text)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(depths), figsize=(5 * len(depths), 3.8), dpi=110, sharey=True)
    for ax, d in zip(axes if len(depths) > 1 else [axes], depths):
        for arm, style in zip(ARMS, ("o-", "s-", "^--")):
            rows = sorted((r for r in results if r["arm"] == arm and r["depth"] == d), key=lambda r: r["lr"])
            ok = [r for r in rows if not r["diverged"]]
            ax.plot([r["lr"] for r in ok], [r["eval_loss"] for r in ok], style, label=arm)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("base learning rate")
        ax.set_title(f"{d} layers x d=64")
        ax.grid(alpha=0.3)
    (axes[0] if len(depths) > 1 else axes).set_ylabel("validation loss")
    (axes[0] if len(depths) > 1 else axes).legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depths", type=int, nargs="+", default=[12, 48])
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2],
                   help="base rates of the xavier and dslm+rule arms")
    p.add_argument("--no-rule-lrs", type=float, nargs="+", default=[2e-3, 8e-3, 3.2e-2],
                   help="base rates of the dslm-no-rule arm (a coarser grid: it shows where DSLM wants its rate)")
    p.add_argument("--no-rule-depths", type=int, nargs="*", default=[12], help="depths of the dslm-no-rule arm")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS),
                   help="arms to run (the report shows every finished run under --runs)")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--recipe", default=str(ROOT / "recipes" / "lr_sweep_mlm.yaml"))
    p.add_argument("--runs", default=str(ROOT / "out" / "lr_sweep"))
    p.add_argument("--md", default=str(ROOT / "eval" / "results" / "lr_sweep.md"))
    p.add_argument("--png", default=str(ROOT / "docs" / "lr_sweep.png"))
    args = p.parse_args()
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    main_arms = [a for a in args.arms if a != "dslm-no-rule"]
    jobs = [(a, d, lr) for d in sorted(args.depths, reverse=True) for a in main_arms for lr in args.lrs]
    if "dslm-no-rule" in args.arms:
        jobs += [("dslm-no-rule", d, lr) for d in sorted(args.no_rule_depths, reverse=True) for lr in args.no_rule_lrs]
    from tqdm import tqdm

    results = []
    with ThreadPoolExecutor(args.workers) as pool, tqdm(total=len(jobs), desc="lr sweep", disable=None) as bar:
        futs = [pool.submit(run_one, runs, Path(args.recipe), a, d, lr, args.steps) for a, d, lr in jobs]
        for f in futs:
            results.append(f.result())
            bar.update(1)
    # the report covers every finished run under --runs (earlier invocations with other grids included)
    done = {(r["arm"], r["depth"], r["lr"]) for r in results}
    for d in sorted(runs.iterdir()):
        arm, _, rest = d.name.partition("_d")
        depth, _, lr = rest.partition("_lr")
        if arm in ARMS and (d / "sweep_status.json").is_file() and (arm, int(depth), float(lr)) not in done:
            results.append(run_one(runs, Path(args.recipe), arm, int(depth), float(lr), args.steps))
    (runs / "results.json").write_text(json.dumps(results, indent=2))
    cmd = "python eval/lr_sweep.py " + " ".join(sys.argv[1:])
    all_lrs = sorted({r["lr"] for r in results})
    print(write_report(results, sorted(args.depths), all_lrs, Path(args.md), Path(args.png), cmd.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
