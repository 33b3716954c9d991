"""Example inputs per family, for registry-parametrized tests."""
from __future__ import annotations

import torch

from dslm_zoo.models import Bert, GPT, VisionTransformer


def example_inputs(model: torch.nn.Module, batch: int = 2, seq_len: int = 16) -> tuple:
    """Positional arguments of ``model.forward`` for a small random batch."""
    cfg = model.cfg
    if isinstance(model, (Bert, GPT)):
        return (torch.randint(0, cfg.vocab_size, (batch, seq_len)),)
    if isinstance(model, VisionTransformer):
        return (torch.randn(batch, cfg.in_chans, cfg.img_size, cfg.img_size),)
    from dslm_zoo.models.speech import SpeechTranslationModel

    if isinstance(model, SpeechTranslationModel):
        frames = 4 * seq_len
        feats = torch.randn(batch, frames, cfg.n_mels)
        lengths = torch.full((batch,), frames, dtype=torch.long)
        lengths[-1] = frames - 8
        tgt = torch.randint(0, cfg.vocab_size, (batch, seq_len))
        return (feats, lengths, tgt)
    raise TypeError(f"no example inputs for {type(model).__name__}")


def output_tensor(out) -> torch.Tensor:
    """A scalar-reducible tensor from any head's output (QA heads return a pair)."""
    if isinstance(out, (tuple, list)):
        return sum(o.float().sum() for o in out)
    return out.float().sum()
