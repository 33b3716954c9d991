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
    """Logits ``logit_scale * x W^T + b``; ``W`` is the tied word-embedding table or an own (vocab, dim) matrix."""

    def __init__(self, dim: int, vocab_size: int, tied_weight: nn.Parameter | None, bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.decoder = nn.Linear(dim, vocab_size, bias=bias, device=device, dtype=dtype)
        if tied_weight is not None:
            self.decoder.weight = tied_weight
        self.tied = tied_weight is not None
        self.logit_scale = 1.0  # set by the init scheme

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(x * self.logit_scale if self.logit_scale != 1.0 else x)


class MLMHead(LMHead):
    """BERT's masked-LM head: dense -> activation -> LayerNorm -> tied vocabulary projection."""

    def __init__(self, dim: int, vocab_size: int, tied_weight: nn.Parameter | None, act: str = "gelu", device=None, dtype=None):
        super().__init__(dim, vocab_size, tied_weight, device=device, dtype=dtype)
        self.dense = nn.Linear(dim, dim, device=device, dtype=dtype)
        self.act = F.gelu if act == "gelu" else F.relu
        self.norm = LayerNorm(dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.norm(self.act(self.dense(x))))


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
