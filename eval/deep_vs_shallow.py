"""Deep-thin vs shallow-wide at equal non-embedding parameters and equal training tokens, several seeds (issue 13,
docs/depth.md): validation perplexity with its spread at token milestones, and where (if anywhere) the deep model
crosses the shallow one.

    .venv/bin/python eval/deep_vs_shallow.py                                     # 3 shapes x 3 seeds x 1000 steps
    .venv/bin/python eval/deep_vs_shallow.py --steps 300 --seeds 0 1 --workers 2     # what ~1 hour of 2 cores gives
    .venv/bin/python eval/deep_vs_shallow.py --steps 12000 --set train.precision=bf16 --set train.compile=true \\
        --workers 1                                                              # a GPU's budget (50M tokens a model)

Shapes ``LxD`` (default 6x256, 24x128, 96x64: 12 L D^2 = 4.7M block parameters each) train
``recipes/deep_vs_shallow_mlm.yaml`` (BERT masked LM on text-en, 32 x 128 tokens a step) with heads max(2, D/64)
and the embedding token correlation measured for that width (``R_EMB``). Validation every ``--steps / --evals``
steps, with a checkpoint there: runs are reused when finished and continued from their newest checkpoint when
interrupted (:mod:`dslm_zoo.train.sweep`), so the study can be stopped and resumed, or extended by a later call.
Writes a Markdown table (``--md``) and perplexity-vs-tokens curves with the seed range (``--png``).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# dslm_r_emb by width, from `dslm-zoo data r-emb text-en --model ...`: 0.32 at d = 64 (bert_96L_64D_en20m_mlm.yaml),
# 0.33 at d = 256 (bert_6L_256D_en20m_mlm.yaml); d = 128 takes 0.32 (not measured; the two measured widths differ
# by 0.01). Other widths keep the recipe's value.
R_EMB = {64: 0.32, 128: 0.32, 256: 0.33}


def parse_shape(s: str) -> tuple[int, int]:
    try:
        depth, dim = (int(x) for x in s.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is DEPTHxWIDTH, e.g. 96x64; got {s!r}") from None
    if depth < 1 or dim < 2 or dim % 2:
        raise argparse.ArgumentTypeError(f"depth >= 1 and an even width >= 2, got {s!r}")
    return depth, dim


def heads(dim: int) -> int:
    """Attention heads of a width: max(2, D / 64), as the released pair (64D: 2 heads, 256D: 4)."""
    return max(2, dim // 64)


def run_one(runs: Path, recipe: Path, shape: tuple[int, int], seed: int, steps: int, evals: int,
            extra: list[str]) -> dict[str, Any]:
    from dslm_zoo.train.sweep import run_recipe

    depth, dim = shape
    every = max(1, steps // evals)
    sets = [f"model.kwargs.depth={depth}", f"model.kwargs.embed_dim={dim}", f"model.kwargs.num_heads={heads(dim)}",
            f"train.seed={seed}", f"train.steps={steps}", f"train.eval_every={every}",
            f"train.checkpoint_every={every}"]
    if dim in R_EMB:
        sets.append(f"model.kwargs.dslm_r_emb={R_EMB[dim]}")
    out = runs / f"{depth}x{dim}_seed{seed}_steps{steps}"
    r = run_recipe(recipe, out, sets + list(extra))
    info = json.loads((out / "run.json").read_text())
    evals_rows = [x for x in r.rows if x.get("split") == "validation" and "averaged_checkpoints" not in x]
    toks = {x["step"]: x.get("tokens") for x in r.rows if "split" not in x and x.get("tokens")}
    per_step = next(iter(toks.values())) / next(iter(toks)) if toks else float("nan")
    speed = [x.get("tokens_per_s") or x.get("samples_per_s") for x in r.rows if "split" not in x]
    return {"shape": f"{depth}x{dim}", "depth": depth, "dim": dim, "seed": seed, "params": info["num_params"],
            "block_params": 12 * depth * dim * dim, "diverged": r.diverged,
            "curve": [(x["step"] * per_step, x["eval_ppl"]) for x in evals_rows],
            "units_per_s": statistics.median([s for s in speed if s]) if any(speed) else float("nan")}


def _mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def report(rows: list[dict[str, Any]], cmd: str) -> str:
    shapes = sorted({r["shape"] for r in rows}, key=lambda s: -int(s.split("x")[0]))
    by = {s: [r for r in rows if r["shape"] == s] for s in shapes}
    lines = [f"Command: `{cmd}`", "", "| shape | block params | seeds | tokens | final val ppl (mean +- sd) | min - max "
             "| tokens/s | diverged |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in shapes:
        rs = by[s]
        finals = [r["curve"][-1][1] for r in rs if r["curve"]]
        m, sd = _mean_sd(finals) if finals else (math.nan, math.nan)
        lines.append(f"| {s} | {rs[0]['block_params'] / 1e6:.2f}M | {len(rs)} | {rs[0]['curve'][-1][0] / 1e6:.2f}M | "
                     f"{m:.1f} +- {sd:.1f} | {min(finals, default=math.nan):.1f} - {max(finals, default=math.nan):.1f} | "
                     f"{statistics.fmean(r['units_per_s'] for r in rs):.0f} | {sum(r['diverged'] for r in rs)} |")
    # milestones: every evaluation step the runs share
    common = sorted(set.intersection(*[{round(t) for t, _ in r["curve"]} for r in rows])) if rows else []
    lines += ["", "Validation perplexity at token milestones (mean +- sd over seeds):", "",
              "| tokens | " + " | ".join(shapes) + " |", "|---:|" + "---:|" * len(shapes)]
    means: dict[str, dict[int, float]] = {s: {} for s in shapes}
    for t in common:
        cells = []
        for s in shapes:
            vals = [p for r in by[s] for tt, p in r["curve"] if round(tt) == t]
            m, sd = _mean_sd(vals)
            means[s][t] = m
            cells.append(f"{m:.1f} +- {sd:.1f}")
        lines.append(f"| {t / 1e6:.3f}M | " + " | ".join(cells) + " |")
    deep, shallow = shapes[0], shapes[-1]
    cross = next((t for t in common if means[deep][t] < means[shallow][t]), None)
    lines += ["", f"Deepest ({deep}) vs shallowest ({shallow}): " + (
        f"the deep model's mean perplexity is lower from {cross / 1e6:.3f}M tokens on" if cross is not None
        else "the deep model's mean perplexity stays above the shallow one's at every milestone")]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dslm_zoo.train.plot import save_figure

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    shapes = sorted({r["shape"] for r in rows}, key=lambda s: -int(s.split("x")[0]))
    for k, s in enumerate(shapes):
        rs = [r for r in rows if r["shape"] == s and r["curve"]]
        ts = [t for t, _ in rs[0]["curve"]]
        ys = [[c[i][1] for r in rs for c in [r["curve"]] if i < len(c)] for i in range(len(ts))]
        ax.plot(ts, [statistics.fmean(y) for y in ys], "-o", ms=3, color=f"C{k}", label=f"{s} ({len(rs)} seeds)")
        ax.fill_between(ts, [min(y) for y in ys], [max(y) for y in ys], color=f"C{k}", alpha=0.2)
    ax.set_xlabel("training tokens")
    ax.set_ylabel("validation perplexity (masked LM)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("equal block parameters: deep-thin vs shallow-wide (band: seed range)", fontsize=9)
    save_figure(fig, png)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", type=parse_shape, nargs="+", default=[(6, 256), (24, 128), (96, 64)])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--evals", type=int, default=10, help="validation milestones per run")
    p.add_argument("--workers", type=int, default=2)
    from dslm_zoo.train.sweep import add_study_arguments

    add_study_arguments(p, recipe=ROOT / "recipes" / "deep_vs_shallow_mlm.yaml", runs=ROOT / "out" / "deep_vs_shallow",
                        md=ROOT / "eval" / "results" / "deep_vs_shallow.md", png=ROOT / "docs" / "deep_vs_shallow.png")
    args = p.parse_args(argv)
    if args.steps < 1 or args.evals < 1 or args.workers < 1:
        p.error("--steps, --evals and --workers must be at least 1")
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    jobs = [(shape, seed) for seed in args.seeds for shape in args.shapes]
    from tqdm import tqdm

    rows = []
    with ThreadPoolExecutor(args.workers) as pool, tqdm(total=len(jobs), desc="deep vs shallow", disable=None) as bar:
        futs = [pool.submit(run_one, runs, Path(args.recipe), shape, seed, args.steps, args.evals, args.extra)
                for shape, seed in jobs]
        for f in futs:
            rows.append(f.result())
            bar.update(1)
    (runs / "results.json").write_text(json.dumps(rows, indent=1))
    cmd = ("python eval/deep_vs_shallow.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    text = report(rows, cmd)
    Path(args.md).parent.mkdir(parents=True, exist_ok=True)
    Path(args.md).write_text(text)
    plot(rows, Path(args.png))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
