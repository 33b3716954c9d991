"""Sweeps of training runs for the eval scripts (``eval/lr_sweep.py``, ``eval/depth_stability.py``).

Each run is ``python -m dslm_zoo.train RECIPE --out DIR --set KEY=VALUE ...`` in its own process and run
directory, so runs can go side by side on separate cores and a crash stays in its run. A run that finished (exit
0) or stopped on a non-finite loss (exit 3, the trainer's divergence stop) leaves ``sweep_status.json`` and is
reused; an interrupted run continues from its newest checkpoint (``dslm-zoo train --resume``), or starts again if it
wrote none: an interrupted sweep continues where it was.
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .rundir import read_metrics

__all__ = ["RunSummary", "add_study_arguments", "run_recipe", "summarize_run"]

STATUS = "sweep_status.json"


@dataclass(frozen=True)
class RunSummary:
    """What a sweep reads off a run: the last validation loss (inf when it diverged), whether it diverged (a
    non-finite loss, or a last training loss above the first), the training losses and every metrics row."""

    out: Path
    returncode: int
    eval_loss: float
    diverged: bool
    first_loss: float | None
    last_loss: float | None
    rows: list[dict[str, Any]] = field(repr=False)

    @property
    def train_losses(self) -> list[tuple[int, float]]:
        return _train_losses(self.rows)


def _train_losses(rows: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(step, loss) of the training rows (eval rows carry a ``split``)."""
    return [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None and "split" not in r]


def summarize_run(out: str | Path, returncode: int = 0) -> RunSummary:
    """The summary of a run directory's ``metrics.jsonl``."""
    out = Path(out)
    rows = read_metrics(out)
    evals = [r for r in rows if r.get("split") == "validation"]
    train = [loss for _, loss in _train_losses(rows)]
    nonfinite = returncode == 3 or any("nonfinite" in r for r in rows) or any(not math.isfinite(x) for x in train)
    loss = evals[-1]["eval_loss"] if evals and not nonfinite else float("inf")
    first, last = (train[0], train[-1]) if train else (None, None)
    diverged = nonfinite or not math.isfinite(loss) or (first is not None and last is not None and last > first)
    return RunSummary(out, returncode, loss, diverged, first, last, rows)


def run_recipe(recipe: str | Path, out: str | Path, overrides: Sequence[str] = ()) -> RunSummary:
    """Train ``recipe`` with ``--set`` ``overrides`` into ``out`` (or reuse the finished run there)."""
    out = Path(out)
    status = out / STATUS
    if status.is_file():
        return summarize_run(out, json.loads(status.read_text())["returncode"])
    from .checkpoint import latest_checkpoint

    if out.exists() and latest_checkpoint(out) is not None:
        # an interrupted run with a checkpoint: continue it (the run directory holds the recipe with its overrides)
        cmd = [sys.executable, "-m", "dslm_zoo.train", "--resume", str(out)]
    else:
        if out.exists():
            shutil.rmtree(out)  # an unfinished run without a checkpoint: start it again
        cmd = [sys.executable, "-m", "dslm_zoo.train", str(recipe), "--out", str(out)]
        for o in overrides:
            cmd += ["--set", o]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode not in (0, 3):
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {r.returncode}):\n{r.stderr[-2000:]}")
    status.write_text(json.dumps({"returncode": r.returncode, "command": cmd}) + "\n")
    return summarize_run(out, r.returncode)


def add_study_arguments(parser: Any, *, recipe: Path, runs: Path, md: Path, png: Path) -> None:
    """The arguments every study script under eval/ shares: ``--set`` (repeatable recipe override for every run),
    ``--recipe``, ``--runs`` (the sweep's directory), ``--md`` (the table) and ``--png`` (the plot)."""
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a further recipe override for every run, e.g. optim.lr=3e-4 (use its own --runs directory)")
    parser.add_argument("--recipe", default=str(recipe))
    parser.add_argument("--runs", default=str(runs))
    parser.add_argument("--md", default=str(md))
    parser.add_argument("--png", default=str(png))
