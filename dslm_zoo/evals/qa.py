"""Extractive QA with a span head: question + context windows, span decoding, predictions for SQuAD scoring.

Follows BERT's SQuAD recipe (Devlin et al. 2019; google-research/bert run_squad.py): ``[CLS] question [SEP]
context window [SEP]`` with token types 0 / 1; contexts longer than the model's window are cut into windows
that start every ``doc_stride`` tokens; a question's answer is the best span over all its windows (n-best
start and end logits, end >= start, at most ``max_answer_len`` tokens, inside the context), mapped back to
the context's characters through the tokenizer's offsets. The null score (v2.0) is start + end logit at [CLS]
in the window where it is lowest; ``na_prob = sigmoid(null score - best span score)``.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from .squad import SquadQuestion

__all__ = ["QAFeature", "make_features", "decode_spans", "predict_answers", "answer_and_score", "dev_threshold"]


@dataclass(frozen=True)
class QAFeature:
    """One window of one question: model inputs, where the context tokens sit, and (training) the answer span."""

    qid: str
    input_ids: tuple[int, ...]
    token_type_ids: tuple[int, ...]
    context_offsets: tuple[tuple[int, int] | None, ...]  # per input token: character span in the context, or None
    start: int = 0  # answer start/end token (training); 0 = [CLS] = no answer in this window
    end: int = 0


def make_features(
    questions: Iterable[SquadQuestion],
    tokenizer: Any,
    max_len: int = 128,
    doc_stride: int = 64,
    max_query_len: int = 32,
    with_answers: bool = False,
) -> list[QAFeature]:
    """Windows of every question (a ``tokenizers.Tokenizer`` with [CLS]/[SEP]). With ``with_answers``, each
    window carries the first gold answer's token span, or [CLS] if the answer is not wholly inside it."""
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    if cls is None or sep is None:
        raise ValueError("the tokenizer has no [CLS]/[SEP] tokens: QA needs a BERT-style (WordPiece) tokenizer")
    if doc_stride < 1:
        raise ValueError(f"doc_stride must be >= 1, got {doc_stride}")
    out: list[QAFeature] = []
    for q in questions:
        q_ids = tokenizer.encode(q.question, add_special_tokens=False).ids[:max_query_len]
        ctx = tokenizer.encode(q.context, add_special_tokens=False)
        room = max_len - len(q_ids) - 3
        if room < 1:
            raise ValueError(f"max_len={max_len} leaves no room for context after a {len(q_ids)}-token question")
        a_start = a_end = None
        if with_answers and q.answers:
            text = q.answers[0]
            c0 = q.context.find(text)
            if c0 >= 0:
                c1 = c0 + len(text)
                toks = [i for i, (s, e) in enumerate(ctx.offsets) if s < c1 and e > c0]
                if toks:
                    a_start, a_end = toks[0], toks[-1]
        n = len(ctx.ids)
        start = 0
        while True:
            span = range(start, min(start + room, n))
            ids = [cls, *q_ids, sep, *(ctx.ids[i] for i in span), sep]
            types = [0] * (len(q_ids) + 2) + [1] * (len(span) + 1)
            offs: list[tuple[int, int] | None] = [None] * (len(q_ids) + 2) + [tuple(ctx.offsets[i]) for i in span] + [None]
            s = e = 0
            if a_start is not None and span and span.start <= a_start and a_end < span.stop:
                base = len(q_ids) + 2 - span.start
                s, e = a_start + base, a_end + base
            out.append(QAFeature(q.qid, tuple(ids), tuple(types), tuple(offs), s, e))
            if span.stop >= n:
                break
            start += doc_stride
    return out


def collate_features(feats: Sequence[QAFeature], pad_id: int = 0) -> dict[str, torch.Tensor]:
    L = max(len(f.input_ids) for f in feats)
    ids = torch.full((len(feats), L), pad_id, dtype=torch.long)
    types = torch.zeros((len(feats), L), dtype=torch.long)
    mask = torch.zeros((len(feats), L), dtype=torch.bool)
    for i, f in enumerate(feats):
        n = len(f.input_ids)
        ids[i, :n] = torch.tensor(f.input_ids)
        types[i, :n] = torch.tensor(f.token_type_ids)
        mask[i, :n] = True
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask,
            "start_positions": torch.tensor([f.start for f in feats]), "end_positions": torch.tensor([f.end for f in feats])}


def decode_spans(
    feats: Sequence[QAFeature], start_logits: Sequence[Sequence[float]], end_logits: Sequence[Sequence[float]],
    contexts: dict[str, str], n_best: int = 20, max_answer_len: int = 30,
) -> tuple[dict[str, str], dict[str, float]]:
    """Best answer text and na_prob per question from the windows' logits (module docstring)."""
    best: dict[str, tuple[float, str]] = {}
    null: dict[str, float] = {}
    for f, sl, el in zip(feats, start_logits, end_logits):
        sl, el = list(sl)[: len(f.input_ids)], list(el)[: len(f.input_ids)]
        null[f.qid] = min(null.get(f.qid, math.inf), sl[0] + el[0])
        starts = sorted(range(len(sl)), key=lambda i: -sl[i])[:n_best]
        ends = sorted(range(len(el)), key=lambda i: -el[i])[:n_best]
        for s in starts:
            for e in ends:
                if f.context_offsets[s] is None or f.context_offsets[e] is None or e < s or e - s + 1 > max_answer_len:
                    continue
                score = sl[s] + el[e]
                if f.qid not in best or score > best[f.qid][0]:
                    text = contexts[f.qid][f.context_offsets[s][0] : f.context_offsets[e][1]]
                    best[f.qid] = (score, text)
    preds, na = {}, {}
    for qid in null:
        score, text = best.get(qid, (-math.inf, ""))
        preds[qid] = text
        diff = null[qid] - score
        na[qid] = 1.0 / (1.0 + math.exp(-diff)) if math.isfinite(diff) else 1.0
    return preds, na


@torch.no_grad()
def predict_answers(
    model: nn.Module, questions: Sequence[SquadQuestion], tokenizer: Any, *, max_len: int = 128, doc_stride: int = 64,
    batch_size: int = 32, n_best: int = 20, max_answer_len: int = 30, progress: bool = True,
) -> tuple[dict[str, str], dict[str, float]]:
    """Predictions ``{qid: text}`` and ``{qid: na_prob}`` of a QA-head model for SQuAD questions."""
    from tqdm.auto import tqdm

    model.eval()
    feats = make_features(questions, tokenizer, max_len=max_len, doc_stride=doc_stride)
    device = next(model.parameters()).device
    starts: list[list[float]] = []
    ends: list[list[float]] = []
    for i in tqdm(range(0, len(feats), batch_size), desc="squad", disable=None if progress else True):
        b = collate_features(feats[i : i + batch_size], pad_id=tokenizer.token_to_id("[PAD]") or 0)
        s, e = model(b["input_ids"].to(device), b["attention_mask"].to(device), b["token_type_ids"].to(device))
        starts += s.float().cpu().tolist()
        ends += e.float().cpu().tolist()
    return decode_spans(feats, starts, ends, {q.qid: q.context for q in questions}, n_best, max_answer_len)


def answer_and_score(model: nn.Module, data: str | os.PathLike, tokenizer: Any, out_dir: str | os.PathLike, *,
                     max_len: int = 128, doc_stride: int = 64, max_answer_len: int = 30, batch_size: int = 32,
                     version: str | None = None, na_prob_thresh: float = 1.0, progress: bool = True) -> dict[str, float]:
    """Answer every question of the SQuAD file ``data``, write ``predictions.json``, ``na_prob.json`` and
    ``scores.json`` to ``out_dir``, and return the official script's scores (v2.0 with the null probabilities)."""
    from .squad import evaluate, load_dataset

    file_version, questions = load_dataset(data)
    if getattr(getattr(model, "cfg", None), "head", None) != "qa":
        raise ValueError(f"the model has head={getattr(getattr(model, 'cfg', None), 'head', None)!r}; SQuAD needs a QA "
                         "model (head='qa')")
    preds, na = predict_answers(model, questions, tokenizer, max_len=max_len, doc_stride=doc_stride,
                                batch_size=batch_size, max_answer_len=max_answer_len, progress=progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "predictions.json").write_text(json.dumps(preds, indent=1, ensure_ascii=False) + "\n")
    (out / "na_prob.json").write_text(json.dumps(na, indent=1) + "\n")
    v2 = (version or file_version or "1.1") in ("2.0", "v2.0")
    scores = evaluate(data, out / "predictions.json", na_prob=out / "na_prob.json" if v2 else None,
                      na_prob_thresh=na_prob_thresh, version=version)
    (out / "scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    return scores


def dev_threshold(model: nn.Module, dev: str | os.PathLike, tokenizer: Any, out_dir: str | os.PathLike,
                  **kwargs: Any) -> tuple[float, dict[str, float]]:
    """The no-answer threshold chosen on a development file: answer ``dev`` (a SQuAD v2.0 file) and return the
    official script's ``best_f1_thresh`` there, with the dev scores. Scoring a test file with this threshold
    (``answer_and_score(..., na_prob_thresh=t)``) is the honest v2.0 number: the test file's own best threshold is
    an oracle. ``kwargs`` go to :func:`answer_and_score` (windows, batch, progress)."""
    from .squad import load_dataset

    version, _ = load_dataset(dev)
    if version not in ("2.0", "v2.0"):
        raise ValueError(f"{dev}: a no-answer threshold needs a SQuAD v2.0 file with unanswerable questions, "
                         f"got version {version!r}")
    scores = answer_and_score(model, dev, tokenizer, out_dir, **kwargs)
    return float(scores["best_f1_thresh"]), scores
