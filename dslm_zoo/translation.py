"""Speech-translation evaluation: decode a MuST-C split with a speech model and score it with sacrebleu
(:mod:`dslm_zoo.evals.bleu`; ../shared/spec/evals.md section 2.3).

The audio goes through the model's own front-end settings (its pretrained cfg: sample rate, 80-dim kaldi fbank,
utterance CMVN), the same path the trainer's speech-translation task uses for evaluation (no SpecAugment, the
evaluation length filter of fairseq). ``shuffle_audio`` is the control the cards report beside the real score: each
reference is paired with the audio of another utterance of the split (a seeded permutation), so a model that
reads its audio drops to near-zero BLEU while a decoder that only learned the target language's n-grams does not.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .evals.bleu import score

__all__ = ["translate", "evaluate_st", "shuffled_order"]


def shuffled_order(n: int, seed: int) -> list[int]:
    """A seeded permutation of ``range(n)`` with no fixed point (n >= 2): position i reads the audio of
    ``order[i]``, never its own. A random permutation rotated where it would keep an index in place."""
    if n < 2:
        raise ValueError(f"shuffling audio across utterances needs at least 2 segments, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    # a derangement: compose with a cyclic shift of the permutation's own order, i -> perm[(k + 1) % n]
    inv = np.empty(n, dtype=np.int64)
    inv[perm] = np.arange(n)
    return [int(perm[(inv[i] + 1) % n]) for i in range(n)]


def translate(
    model: nn.Module,
    segments: Sequence[Any],
    tokenizer: Any,
    *,
    beam: int = 5,
    length_penalty: float = 1.0,
    batch_size: int = 16,
    progress: bool | Callable[[int], None] = True,
    desc: str = "st",
) -> list[str]:
    """Detokenised translations of ``segments`` (:class:`dslm_zoo.data.mustc.Segment`), in order.

    ``beam=1`` is greedy decoding; otherwise batched beam search with ``length_penalty`` (fairseq's
    score / length^penalty). Special tokens (ids 0-3: pad, unk, bos, eos) are dropped before decoding."""
    from tqdm.auto import tqdm

    from .data.mustc import load_audio
    from .models.speech import collate_fbank, compute_fbank

    if beam < 1 or batch_size < 1:
        raise ValueError(f"beam and batch_size must be >= 1, got beam={beam}, batch_size={batch_size}")
    pcfg = model.pretrained_cfg
    sr = pcfg.sample_rate or model.cfg.sample_rate
    model.eval()
    hyps: list[str] = []
    bar = tqdm(total=len(segments), desc=desc, disable=None if progress is True else True)
    with torch.no_grad():
        for i in range(0, len(segments), batch_size):
            chunk = segments[i : i + batch_size]
            feats = [compute_fbank(torch.from_numpy(load_audio(s, sr)), sr, pcfg) for s in chunk]
            f, lengths = collate_fbank(feats)
            if beam == 1:
                out = model.greedy_decode(f, lengths)
            else:
                out = model.beam_search(f, lengths, beam_size=beam, length_penalty=length_penalty)
            hyps += [tokenizer.decode([t for t in ids if t > 3]).strip() for ids in out]
            bar.update(len(chunk))
            if callable(progress):
                progress(len(hyps))
    bar.close()
    return hyps


def evaluate_st(
    model: nn.Module,
    root: str | os.PathLike,
    tokenizer: Any,
    *,
    pair: str = "en-de",
    split: str = "tst-COMMON",
    limit: int | None = None,
    shuffle_audio: int | None = None,
    beam: int = 5,
    length_penalty: float = 1.0,
    batch_size: int = 16,
    progress: bool = True,
) -> tuple[list[str], list[str], dict[str, Any]]:
    """(hypotheses, references, scores) of ``model`` on a MuST-C split: the evaluation length filter, the first
    ``limit`` segments, and with ``shuffle_audio=SEED`` the audio permuted across them (:func:`shuffled_order`).
    Scores: sacrebleu BLEU and chrF with signatures, plus segments, split, beam and the shuffle seed."""
    from .data.mustc import filter_segments, read_split

    segs, _ = filter_segments(read_split(root, pair, split), train=False)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        segs = segs[:limit]
    if not segs:
        raise ValueError(f"{root}: split {split!r} of {pair} has no segments after the length filter")
    refs = [s.tgt for s in segs]
    audio = segs if shuffle_audio is None else [segs[j] for j in shuffled_order(len(segs), shuffle_audio)]
    desc = f"st {split}" + ("" if shuffle_audio is None else " (shuffled audio)")
    hyps = translate(model, audio, tokenizer, beam=beam, length_penalty=length_penalty, batch_size=batch_size,
                     progress=progress, desc=desc)
    result = {**score(hyps, [refs]), "segments": len(segs), "split": split, "beam": beam,
              "length_penalty": length_penalty, "shuffle_audio": shuffle_audio,
              "empty_hypotheses": sum(1 for h in hyps if not h)}
    return hyps, refs, result
