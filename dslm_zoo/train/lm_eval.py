"""Language-model evaluation: masked-LM and causal-LM loss and perplexity of a text model on a token stream.

The windows and masks are those of the trainer's tasks (:mod:`dslm_zoo.train.tasks`): non-overlapping windows
over the stream, MLM masks drawn from a generator seeded by the window's index (the trainer's validation
draws), so ``dslm-zoo eval lm`` on a split repeats the trainer's eval numbers on that split. Beside the
model's perplexity it reports the unigram baseline a model must beat to have learned anything of the context:
the cross-entropy of the same targets under the training split's token frequencies (add-one smoothed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..data.text import TextData, TokenBlocks
from .tasks import CausalLM, MaskedLM, Task

__all__ = ["LMResult", "lm_task_for", "evaluate_lm", "unigram_log_probs", "text_file_data", "corpus_r_emb"]


@dataclass(frozen=True)
class LMResult:
    """Mean target-token cross-entropy (nats), its perplexity, and what they were measured on."""

    loss: float
    ppl: float
    targets: int
    windows: int
    unigram_loss: float | None = None

    def to_dict(self) -> dict[str, float]:
        d: dict[str, float] = {"loss": self.loss, "ppl": self.ppl, "targets": self.targets, "windows": self.windows}
        if self.unigram_loss is not None:
            d["unigram_loss"] = self.unigram_loss
            d["unigram_ppl"] = math.exp(self.unigram_loss)
        return d


def lm_task_for(model: nn.Module, mask_prob: float = 0.15) -> Task:
    """The trainer task a text model is scored with: ``masked_lm`` for an MLM encoder, ``causal_lm`` for a decoder."""
    if getattr(getattr(model, "encoder", None), "causal", False):
        return CausalLM()
    if getattr(getattr(model, "cfg", None), "head", None) == "mlm":
        return MaskedLM(mask_prob=mask_prob)
    raise ValueError(f"{type(model).__name__} is neither a causal decoder nor a text encoder with head='mlm': "
                     "it has no language-model loss to evaluate")


def unigram_log_probs(train_stream: np.ndarray, vocab_size: int) -> torch.Tensor:
    """Add-one smoothed log-frequencies of the tokens of ``train_stream`` (the baseline that ignores context)."""
    counts = np.bincount(np.asarray(train_stream, dtype=np.int64), minlength=vocab_size)[:vocab_size].astype(np.float64) + 1.0
    return torch.from_numpy(np.log(counts / counts.sum()))


@torch.no_grad()
def evaluate_lm(
    model: nn.Module,
    data: TextData,
    split: str = "test",
    *,
    seq_len: int = 128,
    batch_size: int = 32,
    max_windows: int | None = None,
    seed: int = 0,
    mask_prob: float = 0.15,
    unigram: torch.Tensor | None = None,
    progress: Callable[[int], Any] | None = None,
) -> LMResult:
    """Loss and perplexity of ``model`` on the first ``max_windows`` windows of ``data``'s ``split``.

    ``seed`` seeds the MLM masks (the trainer's ``train.seed`` gives its eval masks); ``unigram`` (from
    :func:`unigram_log_probs`) adds the context-free baseline on the same targets. ``progress`` is called with
    the number of windows done after each batch.
    """
    if seq_len < 4 or batch_size < 1 or (max_windows is not None and max_windows < 1):
        raise ValueError(f"need seq_len >= 4, batch_size >= 1, max_windows >= 1; got {seq_len}, {batch_size}, {max_windows}")
    vocab = getattr(getattr(model, "cfg", None), "vocab_size", None)
    if vocab is not None and vocab != data.vocab_size:
        raise ValueError(f"the model's vocabulary ({vocab}) is not the tokenizer's of {data.name!r} ({data.vocab_size}): "
                         "evaluate with the data prepared by the tokenizer the model was trained with")
    task = lm_task_for(model, mask_prob)
    task.text, task.seq_len = data, seq_len  # the task's windows and masks, without its data loading
    stream = data.split(split)
    blocks = TokenBlocks(stream, task._window())
    n = len(blocks) if max_windows is None else min(max_windows, len(blocks))
    was = model.training
    model.eval()
    total, targets, uni = 0.0, 0, 0.0
    try:
        for i in range(0, n, batch_size):
            batch = task.collate([(-1 - j, blocks[j]) for j in range(i, min(i + batch_size, n))], seed)
            total += float(task.loss(model, batch))
            targets += task.count(batch)
            if unigram is not None:
                labels = batch["labels"]
                uni -= float(unigram[labels[labels != -100]].sum())
            if progress is not None:
                progress(min(i + batch_size, n))
    finally:
        model.train(was)
    loss = total / max(targets, 1)
    return LMResult(loss, math.exp(min(loss, 50.0)), targets, n, uni / max(targets, 1) if unigram is not None else None)


def text_file_data(path: str, tokenizer: Any, split: str = "test") -> TextData:
    """A one-document :class:`TextData` from a UTF-8 text file (one paragraph per line), encoded the way the
    prepared corpora are (paragraphs joined by newlines, the document closed by [SEP])."""
    from ..data.text import _encode_docs

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"text file {str(p)!r} does not exist") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{str(p)!r} is not UTF-8 text ({e})") from None
    paras = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    if not paras:
        raise ValueError(f"{str(p)!r} holds no text")
    return TextData(p.name, {split: _encode_docs(tokenizer, ["\n".join(paras)])}, tokenizer)



def corpus_r_emb(model_name: str, data: TextData, *, seeds: int = 10, windows: int = 32, seq_len: int = 128,
                 **model_kwargs: Any) -> tuple[float, list[float]]:
    """The embedding token correlation ``dslm_r_emb`` of ``model_name`` on ``data``'s train split (Kedia et al.
    2024, Sec. 4 step 4): the mean over ``seeds`` fresh initialisations of the token correlation at the first
    layer's input, each on ``windows`` windows drawn at random (seeded) from the train split. Returns the mean
    and the per-seed values. The embedding tables' own draw makes the per-seed values spread (a shared token-type
    row adds a constant vector to every token), hence the mean."""
    from .. import create_model
    from ..diagnostics import measure_r_emb

    if seeds < 1 or windows < 1 or seq_len < 2:
        raise ValueError(f"need seeds, windows >= 1 and seq_len >= 2; got {seeds}, {windows}, {seq_len}")
    stream = data.split("train")
    if len(stream) <= seq_len:
        raise ValueError(f"{data.name!r} train split has {len(stream)} tokens, fewer than one window of {seq_len}")
    rng = np.random.default_rng(0)
    values = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        model = create_model(model_name, vocab_size=data.vocab_size, **model_kwargs)
        starts = rng.integers(0, len(stream) - seq_len, windows)
        x = torch.from_numpy(np.stack([np.asarray(stream[s : s + seq_len], dtype=np.int64) for s in starts]))
        values.append(float(measure_r_emb(model, x)))
    return float(np.mean(values)), values

