"""Translation scores: sacrebleu corpus BLEU with its defaults (13a tokenizer, mixed case, exp smoothing) and
chrF, on detokenised text, reported with the signature (../shared/spec/evals.md section 2.3; the canonical
metric of MuST-C speech translation, which fairseq's ``--scoring sacrebleu`` reproduces).

``score_files(hyp, refs)`` reads line-aligned files (one segment per line; several reference files are
several reference streams) and refuses mismatched line counts, naming the files.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

__all__ = ["TranslationScoreError", "score", "score_files", "read_lines"]


class TranslationScoreError(ValueError):
    """Hypothesis and reference files that cannot be scored together; the message names the files."""


def read_lines(path: str | os.PathLike) -> list[str]:
    """One segment per line (a final newline does not add an empty segment); UTF-8."""
    p = Path(path)
    if not p.is_file():
        raise TranslationScoreError(f"{str(p)!r} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TranslationScoreError(f"{p}: not UTF-8 text ({e})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def score(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> dict[str, object]:
    """``{"bleu", "chrf", "signature", "bleu_detail"}`` of hypotheses against reference streams."""
    from sacrebleu.metrics import BLEU, CHRF

    for i, r in enumerate(refs):
        if len(r) != len(hyps):
            raise TranslationScoreError(f"reference stream {i} has {len(r)} segments, the hypotheses {len(hyps)}")
    if not hyps:
        raise TranslationScoreError("no segments to score")
    bleu, chrf = BLEU(), CHRF()
    b = bleu.corpus_score(list(hyps), [list(r) for r in refs])
    c = chrf.corpus_score(list(hyps), [list(r) for r in refs])
    return {"bleu": b.score, "chrf": c.score, "signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature()),
            "bleu_detail": {"counts": list(b.counts), "totals": list(b.totals), "bp": b.bp, "sys_len": b.sys_len, "ref_len": b.ref_len}}


def score_files(hyp: str | os.PathLike, refs: Sequence[str | os.PathLike]) -> dict[str, object]:
    if not refs:
        raise TranslationScoreError("at least one reference file is needed")
    h = read_lines(hyp)
    streams = []
    for r in refs:
        lines = read_lines(r)
        if len(lines) != len(h):
            raise TranslationScoreError(f"{hyp} has {len(h)} lines but {r} has {len(lines)}: the files must be line-aligned")
        streams.append(lines)
    empty = [i + 1 for i, x in enumerate(h) if not x.strip()]
    out = score(h, streams)
    out["empty_hypotheses"] = len(empty)  # scored as empty (they lower BLEU), reported so they are not silent
    return out
