"""What a run directory holds, read back: the rows of ``metrics.jsonl`` (written by the trainer, read by
``plot``, the export card and the demo) and the resolved recipe of ``recipe.json``."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Recipe

__all__ = ["read_metrics", "read_recipe"]


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_recipe(run_dir: str | os.PathLike) -> "Recipe":
    """The resolved recipe a run trained with (``recipe.json``, overrides applied), checked like any recipe."""
    from .config import Recipe

    path = Path(run_dir) / "recipe.json"
    if not path.is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} holds no run (no recipe.json)")
    stored = json.loads(path.read_text())
    return Recipe.from_dict({k: v for k, v in stored.items() if k != "source"}, stored.get("source", str(path)))
