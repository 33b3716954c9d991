"""The one training loop of the zoo: any registered model, any registered task, single process, DDP or FSDP2.

    trainer = Trainer(load_recipe("recipes/tiny_mlm.yaml"), "runs/tiny")
    result = trainer.run()

A run directory holds ``recipe.json`` (the resolved recipe), ``run.json`` (hardware, world size, learning-rate
plan, data), ``metrics.jsonl`` (one JSON object per logged step and per evaluation), ``checkpoints/`` (see
:mod:`.checkpoint`), ``loss.png`` and ``export/`` (``save_pretrained`` layout with a generated card).

Determinism: the global batch of step s is a fixed function of (seed, s) (:class:`GlobalSampler`); each process
takes its contiguous share and splits it into micro batches; losses are summed and divided by the global number
of loss units, so any world size and accumulation gives the same gradient. On CPU in fp32 with one process, a
run resumed from a checkpoint logs bitwise the losses of an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .checkpoint import CheckpointManager, latest_checkpoint
from .config import Recipe, RecipeError, apply_overrides, recipe_diff
from .distributed import DistEnv, all_reduce_sum, setup_distributed, wrap_model
from .optim import build_optimizer, build_scheduler, lr_factor
from .rundir import read_metrics
from .tasks import Task, build_task

__all__ = ["Trainer", "TrainResult", "NonFiniteError", "RunDirError", "GlobalSampler", "read_metrics"]


class NonFiniteError(RuntimeError):
    """The loss or the gradients went non-finite; the message names the step and the first sub-layer."""


class RunDirError(RuntimeError):
    """The run directory cannot hold this run (not writable, too little free disk, a run already there)."""


class GlobalSampler:
    """Sample indices of every optimizer step: a fresh permutation of the data set per epoch, seeded.

    ``draws(step, batch)`` returns ``(global draw position, sample index)`` pairs; the position seeds the
    per-sample randomness of a task (MLM masks), so a sample is treated alike under any parallel layout.

    With ``lengths`` and ``bucket`` = N > 0 (and the global ``batch``), each run of N batches of the epoch's
    permutation is sorted by length, cut into batches and the batches shuffled: every batch holds samples of
    similar length (little padding), the epoch still visits every sample once, and the order stays a function of
    (seed, epoch), so a resumed run draws the same batches.
    """

    def __init__(self, n: int, seed: int, *, lengths: Sequence[int] | None = None, bucket: int = 0, batch: int = 1):
        if n < 1:
            raise ValueError("the training set is empty")
        if bucket and (lengths is None or len(lengths) != n):
            raise ValueError(f"bucketing needs one length per sample ({n}), got "
                             f"{'none' if lengths is None else len(lengths)}")
        self.n, self.seed, self.bucket, self.batch = n, seed, bucket, batch
        self.lengths = torch.as_tensor(lengths, dtype=torch.float64) if bucket else None
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            g = torch.Generator().manual_seed(self.seed * 7_919 + epoch)
            perm = torch.randperm(self.n, generator=g)
            self._perms[epoch] = self._bucketed(perm, g) if self.bucket else perm
        return self._perms[epoch]

    def _bucketed(self, perm: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        span = self.batch * self.bucket
        out = []
        for c in range(0, self.n, span):
            chunk = perm[c : c + span]
            chunk = chunk[torch.argsort(self.lengths[chunk], stable=True)]  # ties keep the random order
            batches = list(torch.split(chunk, self.batch))
            out += [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        return torch.cat(out)

    def draws(self, step: int, batch: int) -> list[tuple[int, int]]:
        out = []
        for pos in range(step * batch, (step + 1) * batch):
            epoch, j = divmod(pos, self.n)
            out.append((pos, int(self._perm(epoch)[j])))
        return out


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    steps: int
    final_loss: float | None
    eval: dict[str, float]
    wall_time_s: float
    export_dir: Path | None


def _hardware(env: DistEnv) -> str:
    if env.device.type == "cuda":
        return f"{env.world} x {torch.cuda.get_device_name(env.device)}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{env.world} process(es) on {os.cpu_count()} CPU cores ({cpu})"


def _peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: the accelerator's allocator peak on CUDA, the process's peak resident set on CPU
    (model, optimizer state, activations and the data loader together: what a user's machine must hold)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # not on Windows
        return float("nan")
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kb / (2**20 if sys.platform == "darwin" else 2**10)


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


class Trainer:
    """Build model, task, optimizer and schedule from a recipe, then ``run()`` to ``train.steps``.

    ``resume=True`` continues the run in ``run_dir`` from its newest checkpoint; ``recipe`` (or ``overrides``
    on the stored one) may only differ from the stored recipe with ``force=True``.
    """

    def __init__(
        self,
        recipe: Recipe | None,
        run_dir: str | os.PathLike,
        *,
        resume: bool = False,
        overrides: tuple[str, ...] | list[str] = (),
        force: bool = False,
    ):
        self.run_dir = Path(run_dir)
        self.recipe_changes: list[str] = []
        recipe = self._resolve_recipe(recipe, resume, list(overrides), force)
        self.recipe = recipe
        t = recipe.train
        self.env = env = setup_distributed(t.device)
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        elif env.device.type == "cpu" and env.distributed:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", env.world))))
        if t.precision == "fp16" and env.device.type != "cuda":
            raise RecipeError(f"{recipe.source}: train.precision='fp16' needs a GPU; use 'bf16' on CPU")
        per_rank, rem = divmod(t.batch_size, env.world)
        if rem:
            raise RecipeError(f"{recipe.source}: train.batch_size={t.batch_size} is not divisible by the {env.world} processes")
        self.per_rank = per_rank
        self.micro = t.micro_batch_size or per_rank
        if per_rank % self.micro:
            raise RecipeError(f"{recipe.source}: train.micro_batch_size={self.micro} does not divide the per-process "
                              f"batch {per_rank} (batch_size {t.batch_size} over {env.world} processes)")

        # task and data first: a missing data set fails before any model is built
        self.task: Task = build_task(recipe.task.name, dict(recipe.task.kwargs), recipe.source)
        implied = self.task.setup(recipe.data, dict(recipe.model.kwargs))

        from .. import create_model

        torch.manual_seed(t.seed)  # the same initial weights on every rank (FSDP2 shards each rank's copy)
        self.bare: nn.Module = create_model(recipe.model.name, pretrained=recipe.model.pretrained,
                                            **{**dict(recipe.model.kwargs), **implied})
        self.task.check_model(self.bare)
        self.num_params = sum(p.numel() for p in self.bare.parameters())
        self._preflight()
        self.bare.to(env.device)
        if t.grad_checkpointing:
            self.bare.set_grad_checkpointing(True)
        if t.compile:
            self._compile_blocks()
        if t.strategy == "fsdp2":
            # the zoo's losses never modify a model output in place, which is what this warning is about
            warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
        self.model = wrap_model(self.bare, t.strategy, env)
        self.optimizer, self.lr_plan = build_optimizer(self.model, self.bare, recipe.optim)
        self.scheduler = build_scheduler(self.optimizer, recipe.schedule, t.steps)
        self.scaler = torch.amp.GradScaler("cuda") if t.precision == "fp16" else None
        self.sampler = self._sampler()
        self.ckpt = CheckpointManager(self.run_dir, rank=env.rank, world=env.world, keep=t.keep_checkpoints)
        torch.manual_seed(t.seed + 7_919 * env.rank + 1)  # dropout streams differ per rank
        self.step = 0
        self.counters = {"units": 0, "inputs": 0, "skipped": 0}
        self.wall_time = 0.0
        if resume:
            self._restore()
        elif env.is_main:
            self._write_json("recipe.json", {**recipe.to_dict(), "source": recipe.source})
            self._write_json("run.json", self._run_info())
            (self.run_dir / "metrics.jsonl").write_text("")

    # ---------------------------------------------------------------------------------------------- set-up
    def _resolve_recipe(self, recipe: Recipe | None, resume: bool, overrides: list[str], force: bool) -> Recipe:
        stored_path = self.run_dir / "recipe.json"
        if not resume:
            if recipe is None:
                raise RecipeError("a new run needs a recipe")
            if overrides:
                recipe = Recipe.from_dict(apply_overrides(recipe.to_dict(), overrides, f"{recipe.source} --set"), recipe.source)
            if stored_path.exists():
                raise RunDirError(f"{self.run_dir} already holds a run: continue it with `dslm-zoo train --resume "
                                  f"{self.run_dir}` or choose another --out")
            return recipe
        if not stored_path.is_file():
            raise RunDirError(f"{self.run_dir} holds no run to resume (no recipe.json)")
        stored = json.loads(stored_path.read_text())
        source = stored.pop("source", str(stored_path))
        base = recipe.to_dict() if recipe is not None else stored
        wanted = Recipe.from_dict(apply_overrides(base, overrides, "--set") if overrides else base,
                                  recipe.source if recipe is not None else source)
        diff = recipe_diff(stored, wanted.to_dict())
        if diff and not force:
            raise RecipeError(f"resuming {self.run_dir} with a changed recipe is refused (pass --force to accept): "
                              + "; ".join(diff))
        self.recipe_changes = diff
        return wanted

    def _preflight(self) -> None:
        """Fail before training when RUN_DIR cannot be written or cannot hold the checkpoints and the export."""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            probe = self.run_dir / f".write_test.{os.getpid()}"
            probe.write_bytes(b"0")
            probe.unlink()
        except OSError as e:
            raise RunDirError(f"run directory {str(self.run_dir)!r} is not writable: {e}") from None
        t = self.recipe.train
        per_ckpt = self.num_params * 4 * 3  # fp32 weights + two AdamW moments
        need = per_ckpt * (t.keep_checkpoints + 1) + self.num_params * 4 + (64 << 20)
        free = shutil.disk_usage(self.run_dir).free
        if free < need:
            raise RunDirError(f"run directory {str(self.run_dir)!r} has {free / 2**20:.0f} MiB free; this run needs about "
                              f"{need / 2**20:.0f} MiB ({t.keep_checkpoints} + 1 checkpoints of "
                              f"{per_ckpt / 2**20:.0f} MiB and the export)")

    def _compile_blocks(self) -> None:
        # One compiled block serves every layer: identical code, parameters as graph inputs, so compile time
        # does not grow with depth.
        from ..layers import Transformer

        for stack in (m for m in self.bare.modules() if isinstance(m, Transformer)):
            for blk in stack.blocks:
                blk.compile()

    def _run_info(self) -> dict[str, Any]:
        return {
            "model": self.recipe.model.name, "num_params": self.num_params, "init": getattr(self.bare.cfg, "init", None),
            "world_size": self.env.world, "strategy": self.recipe.train.strategy, "device": str(self.env.device),
            "hardware": _hardware(self.env), "torch": torch.__version__, "python": platform.python_version(),
            "lr_plan": self.lr_plan.to_dict(), "data": self.task.describe_data(), "task_unit": self.task.unit,
        }

    def _write_json(self, name: str, obj: Any) -> None:
        from .._hub import atomic_write

        with atomic_write(self.run_dir / name, "w") as f:
            f.write(json.dumps(obj, indent=2, default=str) + "\n")

    def _restore(self) -> None:
        path = latest_checkpoint(self.run_dir)
        if path is None:
            raise RunDirError(f"{self.run_dir} has no complete checkpoint to resume from (train.checkpoint_every=0?)")
        state = self.ckpt.load(path, self.model, self.optimizer)
        self.step = int(state["step"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.counters = dict(state["counters"])
        self.wall_time = float(state["wall_time"])
        if self.env.is_main:  # rows logged after the checkpoint are logged again by this run
            rows = [r for r in read_metrics(self.run_dir) if r["step"] <= self.step]
            from .._hub import atomic_write

            with atomic_write(self.run_dir / "metrics.jsonl", "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
            if self.recipe_changes:
                self._write_json("recipe.json", {**self.recipe.to_dict(), "source": self.recipe.source})

    # ------------------------------------------------------------------------------------------------ loop
    def _autocast(self) -> contextlib.AbstractContextManager:
        p = self.recipe.train.precision
        if p == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.env.device.type, dtype=torch.bfloat16 if p == "bf16" else torch.float16)

    def _no_sync(self, last: bool) -> contextlib.AbstractContextManager:
        if not self.env.distributed:
            return contextlib.nullcontext()
        if hasattr(self.model, "no_sync"):  # DDP
            return contextlib.nullcontext() if last else self.model.no_sync()
        if hasattr(self.model, "set_requires_gradient_sync"):  # FSDP2
            self.model.set_requires_gradient_sync(last)
        return contextlib.nullcontext()

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.env.device, non_blocking=True) for k, v in batch.items()}

    def _sampler(self) -> GlobalSampler:
        t = self.recipe.train
        n = len(self.task.datasets["train"])
        if not t.bucket_batches:
            return GlobalSampler(n, t.seed)
        lengths = self.task.lengths("train")
        if lengths is None:
            raise RecipeError(f"train.bucket_batches needs sample lengths; task {self.task.name!r} has fixed-size samples")
        return GlobalSampler(n, t.seed, lengths=lengths, bucket=t.bucket_batches, batch=t.batch_size)

    def _micro_batches(self, step: int) -> list[dict[str, torch.Tensor]]:
        draws = self.sampler.draws(step, self.recipe.train.batch_size)
        mine = draws[self.env.rank * self.per_rank : (self.env.rank + 1) * self.per_rank]
        ds = self.task.datasets["train"]
        seed = self.recipe.train.seed
        return [
            self.task.collate([(pos, ds[idx]) for pos, idx in mine[i : i + self.micro]], seed)
            for i in range(0, len(mine), self.micro)
        ]

    def _grad_norm(self) -> float:
        clip = self.recipe.optim.clip_grad_norm
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip is not None else float("inf"))
        if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor
            norm = norm.full_tensor()
        return float(norm)

    def _train_step(self, step: int) -> tuple[float, float, int, int, Any]:
        """One optimizer step; returns (loss, grad norm, loss units, input units, non-finite report or None)."""
        micro = self._micro_batches(step)
        units = all_reduce_sum(torch.tensor([sum(self.task.count(b) for b in micro)], dtype=torch.float64), self.env)
        inputs = all_reduce_sum(torch.tensor([sum(self.task.size(b) for b in micro)], dtype=torch.float64), self.env)
        n_units = float(units.item())
        rng_before: list[torch.Tensor] = []
        scale = self.env.world / n_units  # DDP / FSDP2 average over ranks: undo it, then divide by the global units
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.env.device)
        self.model.train()
        for i, b in enumerate(micro):
            rng_before.append(torch.get_rng_state())  # to replay this micro batch's dropout if it fails
            b = self._to_device(b)
            with self._no_sync(i == len(micro) - 1), self._autocast():
                loss = self.task.loss(self.model, b)
            scaled = loss * scale
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            loss_sum += loss.detach().double()
        loss_val = float(all_reduce_sum(loss_sum, self.env).item()) / n_units
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        gnorm = self._grad_norm()
        report = None
        bad = not math.isfinite(loss_val) or (self.scaler is None and not math.isfinite(gnorm))
        if bad:
            report = self._locate(micro, rng_before)
        else:
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return loss_val, gnorm, int(n_units), int(inputs.item()), report if bad else None

    def _locate(self, micro: list[dict[str, torch.Tensor]], rng_before: list[torch.Tensor]) -> Any:
        """Replay the step's micro batches with their dropout RNG and the signal hooks on; the first that
        goes non-finite again names the sub-layer. A cause that does not recur (none has been seen) says so."""
        from ..diagnostics.nonfinite import NonFiniteReport, locate_nonfinite

        rng_now = torch.get_rng_state()
        first = None
        try:
            for batch, rng in zip(micro, rng_before):
                self.optimizer.zero_grad(set_to_none=True)
                torch.set_rng_state(rng)
                b = self._to_device(batch)

                def run(b: dict[str, torch.Tensor] = b) -> torch.Tensor:
                    with self._no_sync(False), self._autocast():  # no gradient all-reduce in a replay
                        return self.task.loss(self.model, b)

                report = locate_nonfinite(self.bare, run)
                first = first or report
                if first is not None and not self.env.distributed:
                    break  # peers replay every micro batch, so their collectives (FSDP2 gathers) stay in step
        finally:
            torch.set_rng_state(rng_now)
        return first or NonFiniteReport("values", "not reproduced when the step's micro batches were replayed")

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss (and the task's metrics) on the first ``eval_batches`` global batches of the validation split."""
        ds = self.task.datasets.get("validation")
        if ds is None:
            return {}
        t = self.recipe.train
        self.model.eval()
        n = min(len(ds), t.eval_batches * t.batch_size) // self.env.world * self.env.world
        idx = list(range(n))[self.env.rank :: self.env.world]  # the same count on every rank (FSDP2 forwards together)
        keys: list[str] = []
        sums = torch.zeros(0, dtype=torch.float64, device=self.env.device)
        units = 0
        for i in range(0, len(idx), self.micro):
            b = self.task.collate([(-1 - j, ds[j]) for j in idx[i : i + self.micro]], t.seed)
            units += self.task.count(b)
            with self._autocast():
                got = self.task.eval_sums(self.model, self._to_device(b))
            if not keys:
                keys = sorted(got)
                sums = torch.zeros(len(keys) + 1, dtype=torch.float64, device=self.env.device)
            sums[:-1] += torch.stack([got[k].detach().double() for k in keys])
        self.model.train()
        if not keys:
            return {}
        sums[-1] = units
        all_reduce_sum(sums, self.env)
        return self.task.metrics({k: float(v) for k, v in zip(keys, sums[:-1])}, int(sums[-1]))

    def _log(self, row: dict[str, Any]) -> None:
        row = {k: _finite_or_none(v) if isinstance(v, float) else v for k, v in row.items()}  # strict JSON: no NaN
        if self.env.is_main:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    def _trainer_state(self) -> dict[str, Any]:
        return {
            "step": self.step, "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "counters": dict(self.counters), "wall_time": self.wall_time,
            # the sampler is a function of (seed, step): the data position is the number of samples drawn
            "data_position": self.step * self.recipe.train.batch_size, "recipe": self.recipe.to_dict(),
        }

    def _progress(self) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=self.recipe.train.steps, initial=self.step, unit="step", dynamic_ncols=True,
                    disable=None if self.env.is_main else True, desc=self.recipe.model.name, file=sys.stderr)

    def run(self) -> TrainResult:
        """Train to ``train.steps`` (from the restored step when resuming); export and plot at the end."""
        t = self.recipe.train
        unit_key = "tokens_per_s" if self.task.unit == "tokens" else "samples_per_s"
        last_eval: dict[str, float] = {}
        loss = float("nan")
        if self.env.is_main and not sys.stderr.isatty():
            print(f"train {self.recipe.model.name} ({self.num_params / 1e6:.2f}M parameters, {self.lr_plan.rule} lr rule) "
                  f"steps {self.step}->{t.steps} on {self.env.world} x {self.env.device.type} -> {self.run_dir}", file=sys.stderr)
        bar = self._progress()
        try:
            while self.step < t.steps:
                t0 = time.perf_counter()
                lr = self.recipe.optim.lr * lr_factor(self.step, t.steps, self.recipe.schedule)  # the base rate
                loss, gnorm, units, inputs, report = self._train_step(self.step)
                self.step += 1
                dt = time.perf_counter() - t0
                self.wall_time += dt
                if report is not None:
                    msg = f"step {self.step}: loss {loss:.4g}, grad norm {gnorm:.4g}; {report}"
                    self._log({"step": self.step, "loss": _finite_or_none(loss), "lr": lr, "nonfinite": str(report),
                               "skipped": t.on_nonfinite == "skip"})
                    if t.on_nonfinite == "stop":
                        last = latest_checkpoint(self.run_dir)
                        raise NonFiniteError(msg + (f"; the last good checkpoint is {last}" if last else "; no checkpoint was written yet"))
                    self.counters["skipped"] += 1
                    if self.env.is_main:
                        bar.write(f"skipped {msg}")
                else:
                    self.counters["units"] += units
                    self.counters["inputs"] += inputs
                    if self.step % t.log_every == 0 or self.step == t.steps:
                        self._log({"step": self.step, "loss": loss, "lr": lr, unit_key: inputs / dt, "grad_norm": gnorm,
                                   "tokens" if self.task.unit == "tokens" else "samples": self.counters["inputs"],
                                   "elapsed_s": round(self.wall_time, 3), "step_s": round(dt, 4),
                                   "peak_mem_mb": round(_peak_memory_mb(self.env.device), 1)})
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", **{unit_key.replace('_per_s', '/s'): f"{inputs / dt:,.0f}"}, refresh=False)
                bar.update(1)
                if t.eval_every and self.step % t.eval_every == 0 and self.step < t.steps:
                    last_eval = self.evaluate()
                    self._log({"step": self.step, "split": "validation", **last_eval})
                if t.checkpoint_every and self.step % t.checkpoint_every == 0 and self.step < t.steps:
                    self.ckpt.save(self.step, self.model, self.optimizer, self._trainer_state())
        finally:
            bar.close()
        last_eval = self.evaluate()
        if last_eval:
            self._log({"step": self.step, "split": "validation", **last_eval})
        self.ckpt.save(self.step, self.model, self.optimizer, self._trainer_state())
        if t.average_last > 1:  # the export holds the mean of the last N checkpoints, evaluated again
            self.bare.load_state_dict(self.ckpt.average(self.model, t.average_last))
            last_eval = self.evaluate()
            self._log({"step": self.step, "split": "validation", "averaged_checkpoints": t.average_last, **last_eval})
        export = self.export()
        if self.env.is_main:
            from .plot import plot_run

            plot_run(self.run_dir)
            ev = ", ".join(f"{k} {v:.4g}" for k, v in last_eval.items())
            print(f"done: step {self.step}, loss {loss:.4f}" + (f", {ev}" if ev else "") + f", {self.wall_time:.1f} s; "
                  f"{self.run_dir / 'loss.png'}, {export}", file=sys.stderr)
        return TrainResult(self.run_dir, self.step, _finite_or_none(loss), last_eval, self.wall_time, export)

    # ---------------------------------------------------------------------------------------------- export
    def export(self) -> Path | None:
        """Write the final weights with ``save_pretrained`` into ``RUN_DIR/export`` (rank 0), with a card that
        names the recipe, data, steps, units seen, wall time and hardware."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        from .. import save_pretrained

        full = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.env.is_main:
            return None
        fresh = type(self.bare)(self.bare.cfg, device="meta")
        fresh.to_empty(device="cpu")
        fresh.init_weights("skip")  # the scheme's fixed scalars (lambda, beta, logit scale); weights come next
        fresh.load_state_dict({k: v.detach().cpu() for k, v in full.items()}, strict=True)
        fresh.pretrained_cfg = self.bare.pretrained_cfg
        rows = read_metrics(self.run_dir)
        ev = [r for r in rows if r.get("split") == "validation"]
        data = self.task.describe_data()
        unit = "tokens" if self.task.unit == "tokens" else "samples"
        notes = (
            f"Trained by `dslm-zoo train {self.recipe.source}` (task `{self.recipe.task.name}`) for {self.step} steps "
            f"of {self.recipe.train.batch_size} samples: {self.counters['inputs']:,} {unit} of `{data.get('name', self.recipe.data.name)}` "
            f"in {self.wall_time / 60:.1f} min on {_hardware(self.env)}, {self.recipe.train.precision}, "
            f"strategy {self.recipe.train.strategy}, learning-rate rule {self.lr_plan.rule}. Skipped steps: "
            f"{self.counters['skipped']}. The recipe is `recipe.json` of the run directory."
            + (f" The weights are the mean of the last {self.recipe.train.average_last} checkpoints."
               if self.recipe.train.average_last > 1 else "")
        )
        metrics = {f"{data.get('name', self.recipe.data.name)}:validation": {k: v for k, v in ev[-1].items() if k.startswith("eval_")}} if ev else {}
        out = self.run_dir / "export"
        extra = self.task.export_files(out)  # e.g. tokenizer.json of the data the model was trained on
        save_pretrained(fresh, out, pretrained_cfg_overlay={
            **extra, "recipe": f"dslm-zoo train {self.recipe.source}", "notes": notes, "metrics": metrics,
            "eval_command": f"validation loss of the last step in `dslm-zoo train {self.recipe.source}`" if metrics else None,
        })
        return out

    def close(self) -> None:
        import torch.distributed as dist

        if self.env.distributed and dist.is_initialized():
            dist.destroy_process_group()

