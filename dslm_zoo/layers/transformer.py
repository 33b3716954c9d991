"""Transformer blocks and stacks shared by every family (encoder, causal decoder, decoder with cross-attention).

A block is three residual sub-layers written like the equations of Kedia et al. 2024 (Sec. 4, step 1):
    x <- Res_attn(x);  [x <- Res_cross(x, memory)];  x <- Res_ffn(x)
with Res(x) = lambda x + beta Dropout(Branch(LN(x))) (Pre-LN) or LN(lambda x + beta Dropout(Branch(x))) (Post-LN).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import Attention, CrossAttention, DecodeCache
from .mlp import Mlp
from .norm import make_norm  # raises, naming the choices, for an unknown norm
from .position import AlibiBias, RelativePositionBias
from .residual import Residual
from .rnn import LocalRNN

__all__ = ["Block", "Transformer", "padding_bias"]


def padding_bias(mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, N) key mask with True = keep -> additive (B, 1, 1, N) bias with -inf on padded keys."""
    if mask is None:
        return None
    if mask.dtype != torch.bool:
        mask = mask.bool()
    return torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill(~mask, float("-inf"))[:, None, None]


def _check_mask(mask: torch.Tensor | None, x: torch.Tensor, name: str) -> None:
    """A key mask must be (batch, tokens) of the stream it masks: broadcasting would silently mask the wrong keys."""
    if mask is not None and tuple(mask.shape) != tuple(x.shape[:2]):
        raise ValueError(f"{name} must have shape (batch, tokens) = {tuple(x.shape[:2])}, got {tuple(mask.shape)}")


def _add_bias(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None:
        return b
    return a if b is None else a + b


class Block(nn.Module):
    """One transformer layer: an optional local RNN (R-Transformer), self-attention, optional cross-attention, FFN;
    each a ``Residual``."""

    def __init__(self, attn: Residual, mlp: Residual, cross_attn: Residual | None = None, rnn: Residual | None = None):
        super().__init__()
        self.rnn = rnn
        self.attn = attn
        self.cross_attn = cross_attn
        self.mlp = mlp

    def forward(
        self,
        x: torch.Tensor,
        attn_bias: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_bias: torch.Tensor | None = None,
        cache: DecodeCache | None = None,
    ) -> torch.Tensor:
        if self.rnn is not None:
            x = self.rnn(x)
        x = self.attn(x, attn_bias, cache=cache)
        if self.cross_attn is not None:
            x = self.cross_attn(x, memory, memory_bias, cache=cache)
        return self.mlp(x)

    def residuals(self) -> list[Residual]:
        """The residual sub-layers in forward order."""
        return [r for r in (self.rnn, self.attn, self.cross_attn, self.mlp) if r is not None]


class Transformer(nn.Module):
    """A stack of ``depth`` blocks plus the final LayerNorm that Pre-LN needs (Identity for Post-LN).

    ``seq_len`` (and ``memory_len`` for cross-attention) are the lengths the stack is built for; the DSLM
    scheme's finite-L rule and the theory read them. ``pos_bias`` ('alibi' | 'relative' | None) adds position
    information to the logits. ``norm`` ('layernorm' | 'dyt') is every norm of the stack; ``peri_norm`` and
    ``ln_scaling`` are the Pre-LN variants of :mod:`dslm_zoo.layers.residual` (Peri-LN, LayerNorm Scaling).
    ``local_rnn`` = M > 0 puts a :class:`~dslm_zoo.layers.LocalRNN` residual (R-Transformer) over the last M
    positions before each layer's attention.
    """

    def __init__(
        self,
        depth: int,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        act: str = "relu",
        drop: float = 0.0,
        attn_drop: float = 0.0,
        norm_first: bool = True,
        causal: bool = False,
        cross_attn: bool = False,
        pos_bias: str | None = None,
        seq_len: int | None = None,
        memory_len: int | None = None,
        norm: str = "layernorm",
        peri_norm: bool = False,
        ln_scaling: bool = False,
        local_rnn: int = 0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if local_rnn < 0:
            raise ValueError(f"local_rnn (the LocalRNN window, 0 = none) must be >= 0, got {local_rnn}")
        self.depth, self.dim, self.norm_first, self.causal = depth, dim, norm_first, causal
        self.seq_len, self.memory_len = seq_len, memory_len
        self.grad_checkpointing = False
        hidden = int(dim * mlp_ratio)
        fk = dict(device=device, dtype=dtype)

        def res(branch: nn.Module, layer: int) -> Residual:
            return Residual(branch, make_norm(norm, dim, **fk), norm_first, drop,
                            out_norm=make_norm(norm, dim, **fk) if peri_norm else None,
                            in_scale=layer ** -0.5 if ln_scaling else 1.0)

        self.blocks = nn.ModuleList(
            Block(
                attn=res(Attention(dim, num_heads, attn_drop, causal=causal, **fk), layer),
                cross_attn=res(CrossAttention(dim, num_heads, attn_drop, **fk), layer) if cross_attn else None,
                mlp=res(Mlp(dim, hidden, act, **fk), layer),
                rnn=res(LocalRNN(dim, local_rnn, **fk), layer) if local_rnn else None,
            )
            for layer in range(1, depth + 1)
        )
        self.norm = make_norm(norm, dim, **fk) if norm_first else nn.Identity()
        self.pos_bias: nn.Module | None
        if pos_bias == "alibi":
            self.pos_bias = AlibiBias(num_heads, device=device)
        elif pos_bias == "relative":
            self.pos_bias = RelativePositionBias(num_heads, bidirectional=not causal, **fk)
        elif pos_bias is None:
            self.pos_bias = None
        else:
            raise ValueError(f"unknown pos_bias {pos_bias!r}; expected 'alibi', 'relative' or None")

    @property
    def has_cross_attn(self) -> bool:
        return self.blocks[0].cross_attn is not None

    @property
    def local_rnn(self) -> int:
        """The LocalRNN window of every layer (0: none)."""
        rnn = self.blocks[0].rnn
        return 0 if rnn is None else rnn.branch.window

    @property
    def num_sublayers(self) -> int:
        """N_sub: residual sub-layers in the stack (2 per layer, plus cross-attention and the local RNN)."""
        return self.depth * len(self.blocks[0].residuals())

    def residuals(self) -> list[Residual]:
        return [r for blk in self.blocks for r in blk.residuals()]

    def _attn_bias(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
        N = x.shape[1]
        _check_mask(mask, x, "attention_mask")
        bias = None if self.pos_bias is None else self.pos_bias(N, N)[None]
        return _add_bias(bias, padding_bias(mask))

    def _run(self, blk: Callable[..., torch.Tensor], *args: torch.Tensor | None, **kwargs: object) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(blk, *args, use_reentrant=False, **kwargs)
        return blk(*args, **kwargs)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        cache: DecodeCache | None = None,
    ) -> torch.Tensor:
        """x (B, N, D); ``mask`` (B, N) True = real token; ``memory`` (B, M, D) for cross-attention. ``cache``
        (incremental decoding, inference only): ``x`` holds the new tokens, the earlier ones' keys and values are
        in the cache; no padding mask and no logit position bias."""
        x, _ = self.forward_intermediates(x, mask, memory, memory_mask, return_intermediates=False, cache=cache)
        return x

    def forward_intermediates(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        return_intermediates: bool = True,
        cache: DecodeCache | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final output (after the final norm) and the residual stream after every block (``cache``: see ``forward``)."""
        if self.has_cross_attn and memory is None:
            raise ValueError("this stack has cross-attention: pass memory=")
        if cache is not None and (mask is not None or self.pos_bias is not None or self.local_rnn):
            raise ValueError("incremental decoding (cache=) supports neither a padding mask, ALiBi/relative "
                             "position biases nor a local RNN; run the whole prefix without a cache")
        attn_bias = self._attn_bias(x, mask)
        if memory is not None:
            _check_mask(memory_mask, memory, "memory_mask")
        memory_bias = padding_bias(memory_mask)
        inter: list[torch.Tensor] = []
        for blk in self.blocks:
            x = self._run(blk, x, attn_bias, memory, memory_bias, cache=cache)
            if return_intermediates:
                inter.append(x)
        return self.norm(x), inter
