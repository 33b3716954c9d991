"""Position information: sinusoidal tables (Vaswani et al. 2017), ALiBi (Press et al. 2022) and T5-style
relative position buckets (Raffel et al. 2020). Learned absolute tables are plain ``nn.Embedding`` in
``TokenEmbedding``. Logit biases are built once per forward by the stack and shared by all its layers.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SinusoidalPosition", "AlibiBias", "RelativePositionBias", "POS_EMBEDS"]

POS_EMBEDS = ("learned", "sinusoidal", "alibi", "relative", "none")


class SinusoidalPosition(nn.Module):
    """Fixed sin/cos table, scaled so each element has mean square ``variance`` (an init scheme sets it)."""

    def __init__(self, max_len: int, dim: int, device=None, dtype=None):
        super().__init__()
        self.max_len, self.dim = max_len, dim
        self.variance = 0.5  # mean square of an unscaled sin/cos table
        self.register_buffer("table", torch.empty(max_len, dim, device=device, dtype=dtype), persistent=False)
        if self.table.device.type != "meta":
            self.reset_buffers()

    def reset_buffers(self) -> None:
        pos = torch.arange(self.max_len, dtype=torch.float64, device=self.table.device)[:, None]
        freq = torch.exp(
            torch.arange(0, self.dim, 2, dtype=torch.float64, device=self.table.device) * (-math.log(10000.0) / self.dim)
        )
        t = torch.zeros(self.max_len, self.dim, dtype=torch.float64, device=self.table.device)
        t[:, 0::2] = torch.sin(pos * freq)
        t[:, 1::2] = torch.cos(pos * freq[: self.dim // 2])
        self.table.copy_(t * math.sqrt(self.variance / 0.5))

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.table[positions]


class AlibiBias(nn.Module):
    """ALiBi: a per-head linear penalty ``-m_h |i - j|`` on the logits, with the paper's geometric slopes."""

    def __init__(self, num_heads: int, device=None):
        super().__init__()
        self.num_heads = num_heads
        self.register_buffer("slopes", torch.empty(num_heads, device=device), persistent=False)
        if self.slopes.device.type != "meta":
            self.reset_buffers()

    @staticmethod
    def _slopes(n: int) -> list[float]:
        def pow2(n: int) -> list[float]:
            start = 2 ** (-(2 ** -(math.log2(n) - 3)))
            return [start * start**i for i in range(n)]

        if math.log2(n).is_integer():
            return pow2(n)
        closest = 2 ** math.floor(math.log2(n))
        return pow2(closest) + AlibiBias._slopes(2 * closest)[0::2][: n - closest]

    def reset_buffers(self) -> None:
        self.slopes.copy_(torch.tensor(self._slopes(self.num_heads), device=self.slopes.device))

    def forward(self, q_len: int, k_len: int) -> torch.Tensor:
        i = torch.arange(q_len, device=self.slopes.device)[:, None] + (k_len - q_len)
        j = torch.arange(k_len, device=self.slopes.device)[None, :]
        return -self.slopes[:, None, None] * (i - j).abs().float()[None]


class RelativePositionBias(nn.Module):
    """T5 relative attention bias: log-spaced distance buckets, one learned scalar per (bucket, head)."""

    def __init__(
        self, num_heads: int, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128, device=None, dtype=None
    ):
        super().__init__()
        self.bidirectional, self.num_buckets, self.max_distance = bidirectional, num_buckets, max_distance
        self.bias = nn.Embedding(num_buckets, num_heads, device=device, dtype=dtype)

    def _bucket(self, rel: torch.Tensor) -> torch.Tensor:
        n, out = self.num_buckets, torch.zeros_like(rel)
        if self.bidirectional:
            n //= 2
            out += (rel > 0).long() * n
            rel = rel.abs()
        else:
            rel = (-rel).clamp(min=0)
        exact = n // 2
        large = exact + (
            torch.log(rel.float().clamp(min=1) / exact) / math.log(self.max_distance / exact) * (n - exact)
        ).long()
        return out + torch.where(rel < exact, rel, large.clamp(max=n - 1))

    def forward(self, q_len: int, k_len: int) -> torch.Tensor:
        dev = self.bias.weight.device
        rel = torch.arange(k_len, device=dev)[None, :] - (torch.arange(q_len, device=dev)[:, None] + k_len - q_len)
        return self.bias(self._bucket(rel)).permute(2, 0, 1).float()
