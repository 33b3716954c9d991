"""Multi-head self- and cross-attention on ``F.scaled_dot_product_attention`` (fused QKV projection).

The SDPA kernels keep the softmax running max and sum in fp32 under bf16/fp16 autocast, so attention statistics
stay in fp32 without a manual upcast. Position information that acts on logits (ALiBi, relative buckets)
arrives as an additive ``attn_bias`` computed once per forward by the stack, not per layer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Attention", "CrossAttention", "DecodeCache"]


class DecodeCache:
    """Keys and values of earlier decoding steps, per attention module, for incremental decoding.

    Self-attention appends the new tokens' keys and values and attends over all of them; cross-attention projects
    its memory once and reuses it. Rows are sequences (beams); ``select(index)`` keeps and reorders them when
    beams are re-ranked or finished sequences leave the batch. Only for inference (no autograd through it)."""

    def __init__(self) -> None:
        self._kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self._kv.get(id(module))

    def put(self, module: nn.Module, k: torch.Tensor, v: torch.Tensor) -> None:
        self._kv[id(module)] = (k, v)

    def select(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (in that order) of every cached tensor."""
        self._kv = {m: (k.index_select(0, index), v.index_select(0, index)) for m, (k, v) in self._kv.items()}

    def __len__(self) -> int:
        return len(self._kv)


def _check_heads(dim: int, num_heads: int) -> int:
    if dim % num_heads:
        raise ValueError(f"embed_dim={dim} is not divisible by num_heads={num_heads}")
    return dim // num_heads


class Attention(nn.Module):
    """Self-attention: ``proj(softmax(Q K^T / sqrt(d_k) + bias) V)`` with Q, K, V from one fused ``qkv`` Linear."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        attn_drop: float = 0.0,
        causal: bool = False,
        bias: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = _check_heads(dim, num_heads)
        self.causal = causal
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias, device=device, dtype=dtype)
        self.proj = nn.Linear(dim, dim, bias=bias, device=device, dtype=dtype)

    # Views into the fused weight, so init schemes address W_Q, W_K, W_V by role, not by name.
    def q_weight(self) -> torch.Tensor:
        return self.qkv.weight[: self.proj.in_features]

    def k_weight(self) -> torch.Tensor:
        d = self.proj.in_features
        return self.qkv.weight[d : 2 * d]

    def v_weight(self) -> torch.Tensor:
        return self.qkv.weight[2 * self.proj.in_features :]

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        B, N, _ = t.shape
        return t.view(B, N, self.num_heads, self.head_dim).transpose(1, 2)

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_bias: torch.Tensor | None, causal: bool
    ) -> torch.Tensor:
        B, _, N, _ = q.shape
        Lq, Lk = q.shape[-2], k.shape[-2]
        if causal and (attn_bias is not None or Lq != Lk):
            # SDPA takes either a mask or is_causal (aligned top-left): fold the causal mask, aligned to the last
            # key (queries are the newest tokens when a cache holds earlier ones), into the bias.
            keep = torch.ones(Lq, Lk, dtype=torch.bool, device=q.device).tril(Lk - Lq)
            zero = torch.zeros((), dtype=torch.float32, device=q.device)
            attn_bias = (zero if attn_bias is None else attn_bias).masked_fill(~keep, float("-inf"))
            causal = False
        if attn_bias is not None and attn_bias.dtype != torch.bool:
            attn_bias = attn_bias.to(q.dtype)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_bias, dropout_p=self.attn_drop if self.training else 0.0, is_causal=causal
        )
        return self.proj(out.transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim))  # explicit: B may be 0

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None, cache: DecodeCache | None = None) -> torch.Tensor:
        """``cache``: ``x`` holds only the new tokens; their keys and values are appended to the cached ones."""
        B, N, _ = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if cache is not None:
            past = cache.get(self)
            if past is not None:
                k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
            cache.put(self, k, v)
        return self._attend(q, k, v, attn_bias, self.causal)


class CrossAttention(Attention):
    """Attention from queries of one stream to keys and values of a memory (the encoder output)."""

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0, bias: bool = True, device=None, dtype=None):
        nn.Module.__init__(self)
        self.num_heads = num_heads
        self.head_dim = _check_heads(dim, num_heads)
        self.causal = False
        self.attn_drop = attn_drop
        self.q = nn.Linear(dim, dim, bias=bias, device=device, dtype=dtype)
        self.kv = nn.Linear(dim, 2 * dim, bias=bias, device=device, dtype=dtype)
        self.proj = nn.Linear(dim, dim, bias=bias, device=device, dtype=dtype)

    def q_weight(self) -> torch.Tensor:
        return self.q.weight

    def k_weight(self) -> torch.Tensor:
        return self.kv.weight[: self.proj.in_features]

    def v_weight(self) -> torch.Tensor:
        return self.kv.weight[self.proj.in_features :]

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, memory: torch.Tensor, memory_bias: torch.Tensor | None = None,
        cache: DecodeCache | None = None,
    ) -> torch.Tensor:
        """``cache``: the memory's keys and values are projected at the first call and reused after it."""
        past = None if cache is None else cache.get(self)
        if past is not None:
            k, v = past
        else:
            B, M, _ = memory.shape
            k, v = self.kv(memory).view(B, M, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            if cache is not None:
                cache.put(self, k, v)
        return self._attend(self._split(self.q(x)), k, v, memory_bias, False)
