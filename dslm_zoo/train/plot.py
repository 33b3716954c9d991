"""Loss curves of a run directory: ``loss.png`` (training loss, its moving average, validation loss, base lr).

Written by the trainer at the end of a run and on demand by ``dslm-zoo plot RUN_DIR``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["plot_run", "save_figure"]


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Lay out ``fig``, write it to ``path`` (parents created) and close it; the study scripts under eval/ share it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _ema(xs: list[float], span: int) -> list[float]:
    a = 2.0 / (span + 1)
    out, m = [], None
    for x in xs:
        m = x if m is None else a * x + (1 - a) * m
        out.append(m)
    return out


def plot_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Draw the run's loss curves into ``out`` (default ``RUN_DIR/loss.png``); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .rundir import read_metrics

    run_dir = Path(run_dir)
    if not (run_dir / "metrics.jsonl").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no metrics.jsonl)")
    rows = read_metrics(run_dir)
    train = [r for r in rows if "split" not in r and r.get("loss") is not None]
    evals = [r for r in rows if r.get("split") == "validation" and "eval_loss" in r]
    if not train:
        raise ValueError(f"{run_dir}/metrics.jsonl has no training rows to plot")
    title = run_dir.name
    recipe = run_dir / "recipe.json"
    if recipe.is_file():
        r = json.loads(recipe.read_text())
        title = f"{r['model']['name']} / {r['task']['name']} ({run_dir.name})"
    steps = [r["step"] for r in train]
    losses = [r["loss"] for r in train]
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=110)
    ax.plot(steps, losses, color="tab:blue", alpha=0.3, lw=0.8, label="train loss")
    ax.plot(steps, _ema(losses, max(2, len(losses) // 30)), color="tab:blue", lw=1.8, label="train loss (moving average)")
    if evals:
        ax.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", color="tab:red", ms=4, label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats per target)")
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(steps, [r["lr"] for r in train], color="tab:gray", ls="--", lw=1.0, label="base learning rate")
    ax2.set_ylabel("base learning rate", color="tab:gray")
    ax2.tick_params(axis="y", colors="tab:gray")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper right", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(out) if out else run_dir / "loss.png"
    fig.savefig(path)
    plt.close(fig)
    return path
