"""The position-wise feed-forward branch (Vaswani et al. 2017), ReLU or exact-erf GeLU."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Mlp"]

_ACTS = {"relu": F.relu, "gelu": F.gelu}


class Mlp(nn.Module):
    """``fc2(act(fc1(x)))``. Dropout and scaling belong to the enclosing ``Residual``."""

    def __init__(self, dim: int, hidden_dim: int, act: str = "relu", bias: bool = True, device=None, dtype=None):
        super().__init__()
        if act not in _ACTS:
            raise ValueError(f"unknown activation {act!r}; expected one of {sorted(_ACTS)}")
        self.act_name = act
        self.act = _ACTS[act]
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias, device=device, dtype=dtype)
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))
