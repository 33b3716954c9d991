"""Stability with depth (issue 13): the same narrow text model trained for a fixed budget under DSLM and the
methods a practitioner would try instead, at several depths, both LayerNorm placements and two precisions.

    .venv/bin/python eval/depth_stability.py --depths 48 192 --workers 2          # the CPU study (hours)
    .venv/bin/python eval/depth_stability.py --depths 48 192 1000 --precisions fp32 bf16   # with a GPU

Methods: the init schemes ``dslm``, ``xavier``, ``deepnorm``, ``megatron``, and on Xavier init the norm variants
``peri_ln`` (Peri-LN), ``ln_scaling`` (LayerNorm Scaling) and ``dyt`` (Dynamic Tanh) (Pre-LN variants are not
run Post-LN); and DSLM's ablations ``dslm_init_only`` (its draws, lambda = beta = 1) and ``dslm_scales_only`` (its
lambda, beta on Xavier draws), under DSLM's learning-rate rule like ``dslm``. Every run is ``python -m dslm_zoo.train recipes/depth_stability_mlm.yaml`` with ``--set``
overrides in its own directory under ``--runs`` (:mod:`dslm_zoo.train.sweep`: finished runs are reused).

Per run: the final validation loss; divergence (a non-finite loss, or a last training loss above the first);
then, on the exported weights and a batch of validation windows, the gradient profile over depth (one backward
of a random output gradient, :func:`dslm_zoo.diagnostics.measure`), the token correlation of the output (rank
collapse when it nears 1) and the attention entropy of the last layer (:func:`dslm_zoo.diagnostics.attention_entropy`).
Writes a Markdown table (``--md``), loss curves (``--png``) and gradient profiles (``--grad-png``).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
METHODS: dict[str, list[str]] = {
    "dslm": ["model.kwargs.init=dslm"],
    "xavier": ["model.kwargs.init=xavier"],
    "deepnorm": ["model.kwargs.init=deepnorm"],
    "megatron": ["model.kwargs.init=megatron"],
    "peri_ln": ["model.kwargs.init=xavier", "model.kwargs.peri_norm=true"],
    "ln_scaling": ["model.kwargs.init=xavier", "model.kwargs.ln_scaling=true"],
    "dyt": ["model.kwargs.init=xavier", "model.kwargs.norm=dyt"],
    # ablations of DSLM (its weight draws alone, its residual scaling alone), trained under DSLM's learning-rate
    # rule like the full scheme, so that only the init differs
    "dslm_init_only": ["model.kwargs.init=dslm_init_only", "optim.lr_rule=dslm"],
    "dslm_scales_only": ["model.kwargs.init=dslm_scales_only", "optim.lr_rule=dslm"],
}
PRE_LN_ONLY = {"peri_ln", "ln_scaling"}


def run_name(method: str, depth: int, placement: str, precision: str) -> str:
    return f"{method}_d{depth}_{placement}_{precision}"


def analyse(out: Path) -> dict[str, Any]:
    """Gradient profile, output token correlation and last-layer attention entropy of a run's export."""
    import torch

    import dslm_zoo
    from dslm_zoo.diagnostics import attention_entropy, measure
    from dslm_zoo.train import build_task
    from dslm_zoo.train.rundir import read_recipe

    recipe = read_recipe(out)
    task = build_task(recipe.task.name, dict(recipe.task.kwargs))
    task.setup(recipe.data, dict(recipe.model.kwargs))
    ds = task.datasets["validation"]
    ids = task.collate([(-1 - j, ds[j]) for j in range(min(8, len(ds)))], recipe.train.seed)["input_ids"]
    model = dslm_zoo.create_model(f"local-dir:{out / 'export'}", dtype=torch.float32)
    m = measure(model, ids, train=False)
    rows = m.sublayer_rows()
    grad = [m.grad_var[i] for i in rows]
    ent = attention_entropy(model, ids)
    return {"grad_profile": grad, "grad_ratio": m.grad_ratio(), "out_corr": m.fwd_corr[m.output_row()],
            "attn_entropy_last": ent[-1], "attn_entropy_first": ent[0]}


def run_one(runs: Path, recipe: Path, method: str, depth: int, placement: str, precision: str, steps: int,
            extra: list[str] | None = None) -> dict:
    from dslm_zoo.train.sweep import run_recipe

    out = runs / run_name(method, depth, placement, precision)
    sets = METHODS[method] + [f"model.kwargs.depth={depth}", f"model.kwargs.norm_first={placement == 'pre'}",
                              f"train.precision={precision}", f"train.steps={steps}"] + list(extra or [])
    row: dict[str, Any] = {"method": method, "depth": depth, "placement": placement, "precision": precision}
    try:
        r = run_recipe(recipe, out, sets)
    except RuntimeError as e:  # a configuration the zoo refuses (or a crash): reported, not hidden
        return {**row, "error": str(e).strip().splitlines()[-1][:200]}
    row.update(eval_loss=r.eval_loss, diverged=r.diverged, first_loss=r.first_loss, last_loss=r.last_loss,
               curve=r.train_losses)
    if (out / "export" / "config.json").is_file():
        cache = out / "analysis.json"
        if not cache.is_file():
            cache.write_text(json.dumps(analyse(out)))
        row.update(json.loads(cache.read_text()))
    return row


def _fmt(x: Any, spec: str = ".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def write_report(rows: list[dict], md: Path, png: Path, grad_png: Path, cmd: str) -> str:
    lines = [f"Command: `{cmd}`", "",
             "| depth | LN | precision | method | final val loss | diverged | grad in/out | output token corr | "
             "attn entropy, last layer |", "|---:|---|---|---|---:|---|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["depth"], r["placement"], r["precision"], list(METHODS).index(r["method"]))):
        if "error" in r:
            lines.append(f"| {r['depth']} | {r['placement']} | {r['precision']} | {r['method']} | error: {r['error']} "
                         "| | | | |")
            continue
        lines.append(f"| {r['depth']} | {r['placement']} | {r['precision']} | {r['method']} | {_fmt(r['eval_loss'])} | "
                     f"{'yes' if r['diverged'] else 'no'} | {_fmt(r.get('grad_ratio'), '.3g')} | "
                     f"{_fmt(r.get('out_corr'))} | {_fmt(r.get('attn_entropy_last'))} |")
    text = "\n".join(lines) + "\n"
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text)
    _plot(rows, png, grad_png)
    return text


def _plot(rows: list[dict], png: Path, grad_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dslm_zoo.train.plot import save_figure

    groups = sorted({(r["depth"], r["placement"], r["precision"]) for r in rows})
    for path, key in ((png, "curve"), (grad_png, "grad_profile")):
        fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.6), squeeze=False)
        for ax, g in zip(axes[0], groups):
            for r in (r for r in rows if (r["depth"], r["placement"], r["precision"]) == g and r.get(key)):
                style = dict(label=r["method"], lw=1, color=f"C{list(METHODS).index(r['method'])}")  # one colour per method
                if key == "curve":
                    ax.plot([s for s, _ in r[key]], [min(v, 20.0) for _, v in r[key]], **style)
                else:
                    ax.semilogy(range(len(r[key])), r[key], **style)
            ax.set_title(f"{g[0]} layers, {g[1]}-LN, {g[2]}", fontsize=9)
            ax.set_xlabel("step" if key == "curve" else "sub-layer")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        axes[0][0].set_ylabel("training loss (clipped at 20)" if key == "curve" else "gradient variance")
        save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depths", type=int, nargs="+", default=[48, 192])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--placements", nargs="+", default=["pre", "post"], choices=["pre", "post"])
    p.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--workers", type=int, default=2)
    from dslm_zoo.train.sweep import add_study_arguments

    add_study_arguments(p, recipe=ROOT / "recipes" / "depth_stability_mlm.yaml", runs=ROOT / "out" / "depth_stability",
                        md=ROOT / "eval" / "results" / "depth_stability.md", png=ROOT / "docs" / "depth_stability_loss.png")
    p.add_argument("--grad-png", default=str(ROOT / "docs" / "depth_stability_grad.png"))
    args = p.parse_args(argv)
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    jobs = [(m, d, pl, pr) for d in sorted(args.depths, reverse=True) for pl in args.placements
            for pr in args.precisions for m in args.methods if not (pl == "post" and m in PRE_LN_ONLY)]
    from tqdm import tqdm

    rows = []
    with ThreadPoolExecutor(args.workers) as pool, tqdm(total=len(jobs), desc="depth stability", disable=None) as bar:
        futs = [pool.submit(run_one, runs, Path(args.recipe), *job, args.steps, args.extra) for job in jobs]
        for f in futs:
            rows.append(f.result())
            bar.update(1)
    (runs / "results.json").write_text(json.dumps(rows, indent=1))
    cmd = ("python eval/depth_stability.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    print(write_report(rows, Path(args.md), Path(args.png), Path(args.grad_png), cmd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
