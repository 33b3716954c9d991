"""torch.distributed set-up under ``torchrun`` and the two wrappings the trainer offers: DDP and FSDP2.

Nothing home-made: the process group comes from torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``), gloo on CPU and nccl on GPU; FSDP2 is ``fully_shard`` per
transformer block and then the root, on a 1-D device mesh.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistEnv", "setup_distributed", "wrap_model", "all_reduce_sum"]


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def setup_distributed(device: str = "auto") -> DistEnv:
    """Read torchrun's environment, pick the device and initialise the process group when there are peers."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device='cuda' but no CUDA device is visible")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", device_id=dev if dev.type == "cuda" else None)
    return DistEnv(rank, world, local_rank, dev)


def all_reduce_sum(x: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.distributed:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def wrap_model(model: nn.Module, strategy: str, env: DistEnv) -> nn.Module:
    """``single``: the model itself; ``ddp``: DistributedDataParallel; ``fsdp2``: ``fully_shard`` on every block
    of every stack, then on the root (parameters become sharded DTensors in place)."""
    if strategy == "single" or not env.distributed:
        if strategy == "single" and env.distributed:
            raise RuntimeError(f"train.strategy='single' under torchrun with {env.world} processes: use 'ddp' or 'fsdp2'")
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[env.local_rank] if env.device.type == "cuda" else None)
    if strategy == "fsdp2":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        from ..layers import Transformer

        mesh = init_device_mesh(env.device.type, (env.world,))
        for stack in (m for m in model.modules() if isinstance(m, Transformer)):
            for blk in stack.blocks:
                fully_shard(blk, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    raise ValueError(f"unknown strategy {strategy!r}")
