"""Task heads. Language-model heads may tie their output matrix to the word embedding; DSLM then rescales the
final hidden state by 1/sqrt(d var_emb) so the logits start at unit variance (Kedia et al. 2024, Sec. 4 step 6).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .norm import LayerNorm

__all__ = ["LMHead", "MLMHead", "QAHead", "SequenceClassificationHead"]


class LMHead(nn.Module):
    """Logits ``(logit_scale * x) W^T + b``; ``W`` is the word-embedding table (tied) or an own (vocab, dim) matrix.

    The tie is functional: the head reads the embedding's current ``weight`` at every call instead of sharing a
    Parameter object, so ``to_empty``, ``load_state_dict`` and safetensors (which refuses shared tensors) cannot
    silently untie it, and the state dict holds the table once.
    """

    def __init__(
        self, dim: int, vocab_size: int, tied_embedding: nn.Embedding | None, bias: bool = True, device=None, dtype=None
    ):
        super().__init__()
        self.dim, self.vocab_size = dim, vocab_size
        self._tied = [tied_embedding] if tied_embedding is not None else []  # a list keeps it out of the module tree
        self.weight = None if tied_embedding is not None else nn.Parameter(torch.empty(vocab_size, dim, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(vocab_size, device=device, dtype=dtype)) if bias else None
        self.logit_scale = 1.0  # set by the init scheme

    @property
    def tied(self) -> bool:
        return bool(self._tied)

    @property
    def tied_embedding(self) -> nn.Embedding | None:
        return self._tied[0] if self._tied else None

    def output_weight(self) -> torch.Tensor:
        return self._tied[0].weight if self._tied else self.weight

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x * self.logit_scale if self.logit_scale != 1.0 else x, self.output_weight(), self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)


class MLMHead(LMHead):
    """BERT's masked-LM head: dense -> activation -> LayerNorm -> tied vocabulary projection."""

    def __init__(self, dim: int, vocab_size: int, tied_embedding: nn.Embedding | None, act: str = "gelu", device=None, dtype=None):
        super().__init__(dim, vocab_size, tied_embedding, device=device, dtype=dtype)
        self.dense = nn.Linear(dim, dim, device=device, dtype=dtype)
        self.act = F.gelu if act == "gelu" else F.relu
        self.norm = LayerNorm(dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.norm(self.act(self.dense(x))))


class QAHead(nn.Module):
    """Extractive QA span head: start and end logits per token (SQuAD)."""

    def __init__(self, dim: int, device=None, dtype=None):
        super().__init__()
        self.qa_outputs = nn.Linear(dim, 2, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = self.qa_outputs(x).unbind(-1)
        return start, end


class SequenceClassificationHead(nn.Module):
    """BERT pooler (first token -> dense -> tanh) then dropout and a linear classifier."""

    def __init__(self, dim: int, num_classes: int, drop: float = 0.0, device=None, dtype=None):
        super().__init__()
        self.pooler = nn.Linear(dim, dim, device=device, dtype=dtype)
        self.drop = nn.Dropout(drop)
        self.fc = nn.Linear(dim, num_classes, device=device, dtype=dtype) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(torch.tanh(self.pooler(x[:, 0]))))
