"""Input embeddings: summed token tables, ViT patch embedding, and a strided-conv speech subsampler.

Each reports ``num_tables`` (n_t of Kedia et al. 2024, Sec. 4 step 2), the number of independent summed sources,
so that the DSLM scheme can give every table variance (1-p)/n_t.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .position import SinusoidalPosition

__all__ = ["TokenEmbedding", "PatchEmbed", "ViTEmbedding", "ConvSubsampler", "SpeechEmbedding", "length_mask"]


def length_mask(lengths: torch.Tensor, n: int) -> torch.Tensor:
    """(B,) lengths -> (B, n) bool mask, True on the first ``lengths[b]`` positions."""
    return torch.arange(n, device=lengths.device)[None, :] < lengths[:, None]


def check_ids(ids: torch.Tensor, vocab: int, name: str, shape: tuple[int, ...] | None = None) -> None:
    """A (batch, seq_len) integer tensor of ids in [0, vocab), or a ValueError/TypeError saying what was expected.

    The range is checked on CPU tensors (a host sync on an accelerator; CUDA's own index assert covers it there)."""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(ids).__name__}")
    if ids.dtype == torch.bool or ids.dtype.is_floating_point or ids.dtype.is_complex:
        raise TypeError(f"{name} must hold integer token ids (torch.long), got dtype {ids.dtype}")
    if ids.dim() != 2:
        raise ValueError(f"{name} must have shape (batch, seq_len), got {tuple(ids.shape)}"
                         + (" (add a batch dimension: ids[None])" if ids.dim() == 1 else ""))
    if shape is not None and tuple(ids.shape) != shape:
        raise ValueError(f"{name} must have the shape of input_ids {shape}, got {tuple(ids.shape)}")
    if ids.numel() and ids.device.type == "cpu":
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab:
            raise ValueError(f"{name} must lie in [0, {vocab}) (the vocabulary size), got values in [{lo}, {hi}]")


class TokenEmbedding(nn.Module):
    """word [+ absolute position] [+ segment] tables, summed, then dropout."""

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        max_len: int,
        pos_embed: str = "learned",
        type_vocab_size: int = 0,
        drop: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.word = nn.Embedding(vocab_size, dim, device=device, dtype=dtype)
        self.pos: nn.Module | None
        if pos_embed == "learned":
            self.pos = nn.Embedding(max_len, dim, device=device, dtype=dtype)
        elif pos_embed == "sinusoidal":
            self.pos = SinusoidalPosition(max_len, dim, device=device, dtype=dtype)
        else:  # alibi / relative / none act on logits, not here
            self.pos = None
        self.segment = nn.Embedding(type_vocab_size, dim, device=device, dtype=dtype) if type_vocab_size else None
        self.drop = nn.Dropout(drop)
        self.max_len = max_len

    @property
    def num_tables(self) -> int:
        return 1 + (self.pos is not None) + (self.segment is not None)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None, start: int = 0) -> torch.Tensor:
        """``start``: the position of the first token (incremental decoding feeds one new token at a time)."""
        check_ids(input_ids, self.word.num_embeddings, "input_ids")
        if token_type_ids is not None:
            if self.segment is None:
                raise ValueError("token_type_ids given, but this model has no segment embedding")
            check_ids(token_type_ids, self.segment.num_embeddings, "token_type_ids", shape=tuple(input_ids.shape))
        N = input_ids.shape[1]
        if start + N > self.max_len and self.pos is not None:
            raise ValueError(f"sequence length {start + N} exceeds the model's maximum of {self.max_len}")
        x = self.word(input_ids)
        if self.pos is not None:
            x = x + self.pos(torch.arange(start, start + N, device=input_ids.device))
        if self.segment is not None:
            tt = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
            x = x + self.segment(tt)
        return self.drop(x)


class PatchEmbed(nn.Module):
    """Image to patch tokens with a stride-``patch_size`` convolution (Dosovitskiy et al. 2021)."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, dim: int, device=None, dtype=None):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size={img_size} is not divisible by patch_size={patch_size}")
        self.img_size, self.patch_size = img_size, patch_size
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size**2
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.fx._symbolic_trace.is_fx_symbolic_tracing():  # shape checks are Python control flow, which fx cannot trace
            in_chans = self.proj.in_channels
            if x.dim() != 4 or x.shape[1] != in_chans or not x.dtype.is_floating_point:
                raise ValueError(f"expected float images of shape (batch, {in_chans}, {self.img_size}, {self.img_size}), "
                                 f"got {x.dtype} {tuple(x.shape)}")
            if x.shape[-2:] != (self.img_size, self.img_size):
                raise ValueError(f"expected {self.img_size}x{self.img_size} images, got {tuple(x.shape[-2:])}")
        return self.proj(x).flatten(2).transpose(1, 2)


class ConvSubsampler(nn.Module):
    """Two stride-2 1-D convolutions with a ReLU between: fbank frames (B, T, n_mels) -> (B, ~T/4, dim)."""

    def __init__(self, in_dim: int, channels: int, dim: int, kernel_size: int = 5, device=None, dtype=None):
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv1d(in_dim, channels, kernel_size, stride=2, padding=pad, device=device, dtype=dtype)
        self.conv2 = nn.Conv1d(channels, dim, kernel_size, stride=2, padding=pad, device=device, dtype=dtype)

    @staticmethod
    def _conv_lengths(conv: nn.Conv1d, lengths: torch.Tensor) -> torch.Tensor:
        k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        return torch.div(lengths + 2 * p - k, s, rounding_mode="floor") + 1

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for conv in (self.conv1, self.conv2):
            lengths = self._conv_lengths(conv, lengths)
        return lengths

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, in_dim) -> (B, T', dim). With ``lengths``, frames past each utterance's end are zeroed before
        each convolution, so an utterance's output does not depend on the padding of the batch it is in."""
        x = x.transpose(1, 2)
        for conv in (self.conv1, self.conv2):
            if lengths is not None:
                x = x.masked_fill(~length_mask(lengths, x.shape[-1])[:, None, :], 0.0)
                lengths = self._conv_lengths(conv, lengths)
            x = conv(x)
            if conv is self.conv1:
                x = F.relu(x)
        return x.transpose(1, 2)


class ViTEmbedding(nn.Module):
    """Patch tokens [+ class token] + learned absolute positions, then dropout (timm VisionTransformer layout)."""

    def __init__(
        self,
        img_size: int,
        patch_size: int,
        in_chans: int,
        dim: int,
        class_token: bool = True,
        drop: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, dim, device=device, dtype=dtype)
        self.num_prefix_tokens = int(class_token)
        self.cls_token = nn.Parameter(torch.empty(1, 1, dim, device=device, dtype=dtype)) if class_token else None
        self.num_tokens = self.patch_embed.num_patches + self.num_prefix_tokens
        self.pos_embed = nn.Parameter(torch.empty(1, self.num_tokens, dim, device=device, dtype=dtype))
        self.drop = nn.Dropout(drop)

    @property
    def num_tables(self) -> int:
        return 2  # patch projection (or class token) + position

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.drop(x + self.pos_embed)


class SpeechEmbedding(nn.Module):
    """Fbank frames -> conv subsampler -> + sinusoidal positions -> dropout (speech encoder input)."""

    def __init__(self, n_mels: int, channels: int, dim: int, max_len: int, drop: float = 0.0, device=None, dtype=None):
        super().__init__()
        self.subsample = ConvSubsampler(n_mels, channels, dim, device=device, dtype=dtype)
        self.pos = SinusoidalPosition(max_len, dim, device=device, dtype=dtype)
        self.drop = nn.Dropout(drop)
        self.max_len = max_len

    @property
    def num_tables(self) -> int:
        return 2  # subsampled features + positions

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        n_mels = self.subsample.conv1.in_channels
        if feats.dim() != 3 or feats.shape[-1] != n_mels or not feats.dtype.is_floating_point:
            raise ValueError(f"expected float fbank features of shape (batch, frames, {n_mels}), got "
                             f"{feats.dtype} {tuple(feats.shape)}")
        if lengths is not None and tuple(lengths.shape) != (feats.shape[0],):
            raise ValueError(f"feat_lengths must have shape ({feats.shape[0]},), got {tuple(lengths.shape)}")
        x = self.subsample(feats, lengths)
        if x.shape[1] > self.max_len:
            raise ValueError(f"{x.shape[1]} subsampled frames exceed the model's maximum of {self.max_len}")
        return self.drop(x + self.pos(torch.arange(x.shape[1], device=x.device)))
