"""Training checkpoints: torch.distributed.checkpoint (DCP) for model and optimizer under every strategy, plus
per-rank RNG states and the trainer's own state; one directory per step, made visible by an atomic rename.

Layout of ``RUN_DIR/checkpoints/step_000040/``: DCP's ``.metadata`` and ``__<rank>_0.distcp`` shards (model and
AdamW state, sharded under FSDP2, whole otherwise), ``rng_rank<r>.pt`` (CPU and CUDA generators of every rank),
``trainer.pt`` (step, scheduler, gradient scaler, counters, the resolved recipe). Every rank writes into
``.step_000040.tmp``; after a barrier rank 0 fsyncs the files and renames the directory, so a kill at any moment
leaves either the whole checkpoint or none of it.
"""
from __future__ import annotations

import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["CheckpointManager", "latest_checkpoint", "model_weights"]

_STEP_DIR = re.compile(r"^step_(\d{6,})$")


def _fsync_tree(path: Path) -> None:
    from .._hub import _fsync_dir

    for p in sorted(path.rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(path)
    _fsync_dir(path.parent)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint directory of a run, or None."""
    d = Path(run_dir) / "checkpoints"
    if not d.is_dir():
        return None
    steps = [(int(m.group(1)), p) for p in d.iterdir() if (m := _STEP_DIR.match(p.name)) and (p / ".metadata").is_file()]
    return max(steps)[1] if steps else None


def _rng_state() -> dict[str, Any]:
    """Every generator a task may draw from: torch (CPU, CUDA), Python's ``random`` (timm's transforms) and
    NumPy's global one, as tensors and tuples so that ``torch.load(weights_only=True)`` reads them back."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "cpu": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["cpu"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def model_weights(path: str | os.PathLike, model: nn.Module) -> dict[str, torch.Tensor]:
    """The model weights stored in checkpoint directory ``path``, as a state dict shaped like ``model``'s (the
    model itself is not changed; ``model.load_state_dict`` them to look at a run mid-way)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    msd = {k: v.detach().clone() for k, v in get_model_state_dict(model).items()}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load({"model": msd}, checkpoint_id=str(path))
    return msd


class CheckpointManager:
    """Save and restore everything a resume needs; keeps the newest ``keep`` checkpoints."""

    def __init__(self, run_dir: str | os.PathLike, *, rank: int, world: int, keep: int):
        self.dir = Path(run_dir) / "checkpoints"
        self.rank, self.world, self.keep = rank, world, keep

    def _barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def save(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, trainer_state: dict[str, Any]) -> Path:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        final = self.dir / f"step_{step:06d}"
        tmp = self.dir / f".step_{step:06d}.tmp"
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self._barrier()
        msd, osd = get_state_dict(model, optimizer)
        with warnings.catch_warnings():  # one process without a process group is a supported DCP mode
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(tmp))
        torch.save(_rng_state(), tmp / f"rng_rank{self.rank}.pt")
        if self.rank == 0:
            torch.save(trainer_state, tmp / "trainer.pt")
        self._barrier()
        if self.rank == 0:
            _fsync_tree(tmp)
            if final.exists():  # a re-save of the same step (resume of a run that stopped right after it)
                shutil.rmtree(final)
            os.replace(tmp, final)
            self._prune()
        self._barrier()
        return final

    def _prune(self) -> None:
        done = sorted((int(m.group(1)), p) for p in self.dir.iterdir() if (m := _STEP_DIR.match(p.name)))
        for _, p in done[: max(0, len(done) - self.keep)]:
            shutil.rmtree(p, ignore_errors=True)
        for p in self.dir.glob(".step_*.tmp"):  # leftovers of a killed save
            shutil.rmtree(p, ignore_errors=True)

    def steps(self) -> list[tuple[int, Path]]:
        """(step, directory) of every finished checkpoint, oldest first."""
        if not self.dir.is_dir():
            return []
        return sorted((int(m.group(1)), p) for p in self.dir.iterdir() if (m := _STEP_DIR.match(p.name)))

    def average(self, model: nn.Module, n: int) -> dict[str, torch.Tensor]:
        """The element-wise mean of the model weights of the newest ``n`` checkpoints (fp32 accumulation)."""
        paths = [p for _, p in self.steps()[-n:]]
        if len(paths) < n:
            raise RuntimeError(f"checkpoint averaging needs {n} checkpoints, {self.dir} has {len(paths)}")
        total: dict[str, torch.Tensor] = {}
        for path in paths:
            msd = model_weights(path, model)
            for k, v in msd.items():
                total[k] = total.get(k, 0) + v.double()
        return {k: (v / n).to(msd[k].dtype) for k, v in total.items()}

    def load(self, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Restore model, optimizer and this rank's RNG in place; returns the trainer state."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        msd, osd = get_state_dict(model, optimizer)
        state = {"model": msd, "optim": osd}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, checkpoint_id=str(path))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        rng = path / f"rng_rank{self.rank}.pt"
        if not rng.is_file():
            raise RuntimeError(f"{path} was written by fewer processes (no {rng.name}); resume with the same world size")
        _set_rng_state(torch.load(rng, weights_only=True))
        return torch.load(path / "trainer.pt", weights_only=True)
