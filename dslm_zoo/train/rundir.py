"""What a run directory holds, read back: the rows of ``metrics.jsonl`` (written by the trainer, read by
``plot``, the export card and the demo)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["read_metrics"]


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
