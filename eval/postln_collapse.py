"""Why Post-LN DSLM collapses in training (issue 13, docs/depth.md): the signal theory read on the weights of a
run as it trains, next to measurements on the same weights.

    .venv/bin/python eval/postln_collapse.py                       # 48 layers, 200 steps, Post- and Pre-LN DSLM
    .venv/bin/python eval/postln_collapse.py --set optim.lr=1e-4 --runs out/postln_collapse_lr1e-4

Trains ``recipes/depth_stability_mlm.yaml`` (the stability study's recipe: BERT d = 64 on text-en) under DSLM init,
Post-LN and Pre-LN, with a checkpoint every ``--every`` steps (through :mod:`dslm_zoo.train.sweep`: finished runs
are reused). At init (the trainer's own draw) and at every checkpoint, on 8 validation windows, in eval mode:

* measured (:func:`dslm_zoo.diagnostics.measure`): the input/output gradient-variance ratio, the output token
  correlation, and per sub-layer the **branch gain** (Var(lambda x + beta F) - lambda^2 Var(x)) / (beta^2 Var(x)):
  how much larger the branch output is than its input (DSLM's init makes it 1, which is what lets beta^2 = k/N
  keep the skip's share of every residual sum at 1 - k/N), and the **skip share** lambda^2 Var(x) / Var(sum).
  In a Post-LN stack the gradient that reaches the input along the skip path is the product of the skip shares
  over the stack (each LayerNorm divides by the sum's standard deviation).
* predicted (:func:`dslm_zoo.diagnostics.predict` on the same weights: it reads the weight variances and the norm
  gains and assumes weights independent of the data): the gradient ratio and the output token correlation.

Writes a Markdown table (``--md``) and a plot over training steps (``--png``).
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _state_rows(model: Any, ids: Any) -> dict[str, Any]:
    """Measured and predicted statistics of ``model`` at its current weights."""
    import torch

    from dslm_zoo.diagnostics import measure, predict
    from dslm_zoo.layers.residual import Residual

    res = [m for m in model.modules() if isinstance(m, Residual)]
    m = measure(model, ids, train=False)
    rows = m.sublayer_rows()
    if len(rows) != len(res):
        raise RuntimeError(f"{len(rows)} measured sub-layers but {len(res)} residual modules")
    gains, shares = [], []
    for i, r in zip(rows, res):
        v_in, s = m.fwd_var[i - 1], m.sum_var[i]  # the stream entering sub-layer i, and its residual sum
        # Pre-LN: the branch reads LN(x), so its gain is taken against the unit-variance norm output
        ref = 1.0 if r.norm_first else v_in
        gains.append((s - r.lam**2 * v_in) / (r.beta**2 * ref))
        shares.append(r.lam**2 * v_in / s)
    with torch.no_grad():
        p = predict(model, ids.shape[1], train=False)
    return {
        "grad_ratio": m.grad_ratio(), "out_corr": m.fwd_corr[m.output_row()],
        "pred_grad_ratio": p.grad_ratio(), "pred_out_corr": p.fwd_corr[p.output_row()],
        "branch_gain_median": statistics.median(gains), "branch_gain_max": max(gains),
        "skip_share_product": math.exp(sum(math.log(max(x, 1e-300)) for x in shares)),
        "beta2": res[0].beta ** 2,
    }


def analyse(out: Path) -> list[dict[str, Any]]:
    """One row per checkpoint (and the init) of the run in ``out``."""
    import tempfile

    import torch

    from dslm_zoo.train import Trainer, build_task
    from dslm_zoo.train.checkpoint import CheckpointManager, model_weights
    from dslm_zoo.train.rundir import read_recipe

    recipe = read_recipe(out)
    task = build_task(recipe.task.name, dict(recipe.task.kwargs))
    task.setup(recipe.data, dict(recipe.model.kwargs))
    ds = task.datasets["validation"]
    ids = task.collate([(-1 - j, ds[j]) for j in range(min(8, len(ds)))], recipe.train.seed)["input_ids"]
    with tempfile.TemporaryDirectory() as tmp:  # the trainer's own init draw, the run's step 0
        model = Trainer(recipe, Path(tmp) / "init").bare
    model.eval()
    rows = [{"step": 0, **_state_rows(model, ids)}]
    for step, path in CheckpointManager(out, rank=0, world=1, keep=0).steps():
        model.load_state_dict(model_weights(path, model))
        rows.append({"step": step, **_state_rows(model, ids)})
    torch.set_grad_enabled(True)
    return rows


def _fmt(x: float, spec: str) -> str:
    return "-" if not math.isfinite(x) else format(x, spec)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depth", type=int, default=48)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--every", type=int, default=20, help="checkpoint (and analysis) every N steps")
    p.add_argument("--placements", nargs="+", default=["post", "pre"], choices=["pre", "post"])
    from dslm_zoo.train.sweep import add_study_arguments, run_recipe

    add_study_arguments(p, recipe=ROOT / "recipes" / "depth_stability_mlm.yaml", runs=ROOT / "out" / "postln_collapse",
                        md=ROOT / "eval" / "results" / "postln_collapse.md", png=ROOT / "docs" / "postln_collapse.png")
    args = p.parse_args(argv)
    if args.every < 1 or args.steps < args.every:
        p.error("--every must be at least 1 and at most --steps")

    results: dict[str, list[dict[str, Any]]] = {}
    losses: dict[str, float | None] = {}
    for pl in args.placements:
        out = Path(args.runs) / f"dslm_d{args.depth}_{pl}"
        sets = ["model.kwargs.init=dslm", f"model.kwargs.depth={args.depth}", f"model.kwargs.norm_first={pl == 'pre'}",
                f"train.steps={args.steps}", f"train.checkpoint_every={args.every}",
                f"train.keep_checkpoints={args.steps // args.every + 1}"] + args.extra
        print(f"training {out.name} ...", file=sys.stderr)
        summary = run_recipe(Path(args.recipe), out, sets)
        results[pl] = analyse(out)
        losses[pl] = summary.eval_loss
    cmd = ("python eval/postln_collapse.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    lines = [f"Command: `{cmd}`", "",
             "| LN | step | grad in/out, measured | predicted | output token corr, measured | predicted "
             "| branch gain, median | max | skip-share product |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for pl, rows in results.items():
        for r in rows:
            lines.append(f"| {pl} | {r['step']} | {_fmt(r['grad_ratio'], '.3g')} | {_fmt(r['pred_grad_ratio'], '.3g')} | "
                         f"{_fmt(r['out_corr'], '.3f')} | {_fmt(r['pred_out_corr'], '.3f')} | "
                         f"{_fmt(r['branch_gain_median'], '.3g')} | {_fmt(r['branch_gain_max'], '.3g')} | "
                         f"{_fmt(r['skip_share_product'], '.3g')} |")
    lines += ["", "Final validation loss: " + ", ".join(f"{pl}-LN {_fmt(v if v is not None else math.nan, '.3f')}"
                                                    for pl, v in losses.items())]
    text = "\n".join(lines) + "\n"
    Path(args.md).parent.mkdir(parents=True, exist_ok=True)
    Path(args.md).write_text(text)
    _plot(results, Path(args.png), args.depth)
    print(text)
    return 0


def _plot(results: dict[str, list[dict[str, Any]]], png: Path, depth: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dslm_zoo.train.plot import save_figure

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for k, (pl, rows) in enumerate(results.items()):
        st = [r["step"] for r in rows]
        c = f"C{k}"
        axes[0].semilogy(st, [r["grad_ratio"] for r in rows], "-o", color=c, ms=3, label=f"{pl}-LN measured")
        axes[0].semilogy(st, [r["pred_grad_ratio"] for r in rows], "--", color=c, label=f"{pl}-LN theory on the weights")
        if pl == "post":  # what the skip path passes down a Post-LN stack
            axes[0].semilogy(st, [r["skip_share_product"] for r in rows], ":", color=c, lw=2,
                             label="post-LN product of skip shares")
        axes[1].plot(st, [r["out_corr"] for r in rows], "-o", color=c, ms=3, label=f"{pl}-LN measured")
        axes[1].plot(st, [r["pred_out_corr"] for r in rows], "--", color=c, label=f"{pl}-LN theory on the weights")
        axes[2].semilogy(st, [r["branch_gain_median"] for r in rows], "-o", color=c, ms=3, label=f"{pl}-LN median")
        axes[2].semilogy(st, [r["branch_gain_max"] for r in rows], ":", color=c, label=f"{pl}-LN max")
    axes[0].set_ylabel("gradient variance, input / output")
    axes[1].set_ylabel("output token correlation")
    axes[2].set_ylabel("branch gain Var(F) / Var(x)")
    for ax in axes:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"DSLM BERT, {depth} layers, d = 64, text-en: what training does to the signal", fontsize=10)
    save_figure(fig, png)


if __name__ == "__main__":
    sys.exit(main())
