"""SQuAD scoring with the semantics of the official scripts: evaluate-v1.1.py and evaluate-v2.0.py
(Rajpurkar et al. 2016, 2018; ../shared/spec/evals.md section 1 has the facts and the test vectors).

- ``normalize_answer``: lower case, ASCII punctuation removed, the articles a/an/the removed as whole words,
  whitespace collapsed. No Unicode normalisation: an en dash and an accented letter stay as they are.
- v1.1: EM and token F1 as the maximum over the gold answers; every dataset question counts (a missing
  prediction scores 0); F1 has no empty-string rule (``"The"`` vs ``"a"``: EM 1, F1 0).
- v2.0: golds that normalise to ``""`` are dropped (none left: the gold is ``""``); a missing prediction is
  skipped; F1 of two empty token lists is 1; ``na_prob > thresh`` (strict) turns a prediction into "no answer";
  HasAns/NoAns splits; with ``na_probs``, ``best_exact``/``best_f1`` and their thresholds.

Both the official nested format (``{"version", "data": [{"paragraphs": [{"context", "qas": [...]}]}]}``) and
the Hugging Face flattened one (a list of ``{"id", "context", "question", "answers": {"text", "answer_start"}}``,
or ``{"data": [...]}`` of them) are read. Malformed files raise :class:`SquadFormatError` naming the file and
the record.
"""
from __future__ import annotations

import collections
import json
import os
import re
import string
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

__all__ = ["SquadFormatError", "SquadQuestion", "normalize_answer", "exact_match", "f1_v1", "f1_v2", "load_dataset",
           "load_predictions", "load_na_probs", "evaluate_v1", "evaluate_v2", "evaluate"]

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


class SquadFormatError(ValueError):
    """A data, prediction or na-prob file that is not what the official scripts read."""


@dataclass(frozen=True)
class SquadQuestion:
    qid: str
    question: str
    context: str
    answers: tuple[str, ...]  # gold texts, in file order (duplicates kept, as in the dev sets)


def normalize_answer(s: str) -> str:
    """The official normalisation: lower, drop ASCII punctuation, drop articles, collapse whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def _f1_tokens(pred: list[str], gold: list[str]) -> float:
    common = collections.Counter(pred) & collections.Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    p, r = same / len(pred), same / len(gold)
    return 2 * p * r / (p + r)


def f1_v1(prediction: str, gold: str) -> float:
    """v1.1 token F1 (no empty-string rule)."""
    return _f1_tokens(normalize_answer(prediction).split(), normalize_answer(gold).split())


def f1_v2(prediction: str, gold: str) -> float:
    """v2.0 token F1: two empty token lists score 1, one empty list 0."""
    p = normalize_answer(prediction).split() if prediction else []
    g = normalize_answer(gold).split() if gold else []
    if not p or not g:
        return float(p == g)
    return _f1_tokens(p, g)


# ------------------------------------------------------------------------------------------------- files


def _read_json(path: str | os.PathLike, what: str) -> Any:
    p = Path(path)
    if not p.is_file():
        raise SquadFormatError(f"{what} file {str(p)!r} does not exist")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SquadFormatError(f"{p}: not valid JSON ({e})") from None
    except UnicodeDecodeError as e:
        raise SquadFormatError(f"{p}: not UTF-8 text ({e})") from None


def _need(rec: Any, key: str, typ: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(rec, Mapping):
        raise SquadFormatError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    if key not in rec:
        raise SquadFormatError(f"{where}: missing field {key!r}")
    v = rec[key]
    if not isinstance(v, typ) or isinstance(v, bool):
        names = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise SquadFormatError(f"{where}: field {key!r} must be {names}, got {type(v).__name__}")
    return v


def _check_span(context: str, text: str, start: Any, where: str) -> None:
    if isinstance(start, bool) or not isinstance(start, int):
        raise SquadFormatError(f"{where}: answer_start must be an integer, got {start!r}")
    if context[start : start + len(text)] != text:
        raise SquadFormatError(f"{where}: answer {text!r} is not at answer_start={start} of the context "
                               f"(found {context[start:start + len(text)]!r})")


def load_dataset(path: str | os.PathLike, *, check_spans: bool = True) -> tuple[str | None, list[SquadQuestion]]:
    """(version, questions) of an official nested or HF flattened SQuAD file; spans checked against contexts."""
    data = _read_json(path, "dataset")
    version = data.get("version") if isinstance(data, Mapping) else None
    if isinstance(version, (int, float)) and not isinstance(version, bool):
        version = str(version)
    records = data.get("data") if isinstance(data, Mapping) else data
    if not isinstance(records, list):
        raise SquadFormatError(f"{path}: expected {{'data': [...]}} or a list of records, got {type(records).__name__}")
    out: list[SquadQuestion] = []
    for i, art in enumerate(records):
        where = f"{path}: data[{i}]"
        if isinstance(art, Mapping) and "paragraphs" in art:  # official nested
            for j, par in enumerate(_need(art, "paragraphs", list, where)):
                w = f"{where}.paragraphs[{j}]"
                ctx = _need(par, "context", str, w)
                for k, qa in enumerate(_need(par, "qas", list, w)):
                    wq = f"{w}.qas[{k}]"
                    qid = _need(qa, "id", (str, int), wq)
                    answers = _need(qa, "answers", list, wq)
                    texts = []
                    for m, a in enumerate(answers):
                        wa = f"{wq}.answers[{m}] (id {qid})"
                        t = _need(a, "text", str, wa)
                        if check_spans:
                            _check_span(ctx, t, _need(a, "answer_start", int, wa), wa)
                        texts.append(t)
                    out.append(SquadQuestion(str(qid), _need(qa, "question", str, wq), ctx, tuple(texts)))
        else:  # HF flattened
            qid = _need(art, "id", (str, int), where)
            ctx = _need(art, "context", str, where)
            ans = _need(art, "answers", Mapping, where)
            texts = _need(ans, "text", list, f"{where}.answers")
            starts = _need(ans, "answer_start", list, f"{where}.answers")
            if len(texts) != len(starts):
                raise SquadFormatError(f"{where}.answers (id {qid}): {len(texts)} texts but {len(starts)} answer_start values")
            for m, (t, s) in enumerate(zip(texts, starts)):
                if not isinstance(t, str):
                    raise SquadFormatError(f"{where}.answers.text[{m}] (id {qid}): must be str, got {type(t).__name__}")
                if check_spans:
                    _check_span(ctx, t, s, f"{where}.answers[{m}] (id {qid})")
            out.append(SquadQuestion(str(qid), _need(art, "question", str, where), ctx, tuple(texts)))
    dup = [qid for qid, n in collections.Counter(q.qid for q in out).items() if n > 1]
    if dup:
        raise SquadFormatError(f"{path}: question id {dup[0]!r} appears {sum(q.qid == dup[0] for q in out)} times")
    return version, out


def load_predictions(path: str | os.PathLike, questions: list[SquadQuestion] | None = None) -> dict[str, str]:
    """``{qid: answer text}``; ids not in ``questions`` are an error (the official scripts would ignore them
    silently, which hides a predictions file made for another data set)."""
    preds = _read_json(path, "predictions")
    if not isinstance(preds, Mapping):
        raise SquadFormatError(f"{path}: predictions must be a JSON object {{id: answer text}}, got {type(preds).__name__}")
    for k, v in preds.items():
        if not isinstance(v, str):
            raise SquadFormatError(f"{path}: prediction for id {k!r} must be a string, got {type(v).__name__}")
    if questions is not None:
        known = {q.qid for q in questions}
        extra = [k for k in preds if k not in known]
        if extra:
            raise SquadFormatError(f"{path}: {len(extra)} prediction id(s) are not in the data, e.g. {extra[:3]}")
    return dict(preds)


def load_na_probs(path: str | os.PathLike) -> dict[str, float]:
    probs = _read_json(path, "na-prob")
    if not isinstance(probs, Mapping):
        raise SquadFormatError(f"{path}: na probabilities must be a JSON object {{id: probability}}")
    for k, v in probs.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise SquadFormatError(f"{path}: na probability for id {k!r} must be a number, got {v!r}")
    return {k: float(v) for k, v in probs.items()}


# ------------------------------------------------------------------------------------------------ scoring


def evaluate_v1(questions: list[SquadQuestion], preds: Mapping[str, str]) -> dict[str, float]:
    """evaluate-v1.1.py: ``{"exact_match", "f1"}`` over every dataset question (missing: 0, with a warning)."""
    em = f1 = 0.0
    for q in questions:
        if q.qid not in preds:
            print(f"Unanswered question {q.qid} will receive score 0.", file=sys.stderr)
            continue
        p = preds[q.qid]
        em += max((exact_match(p, g) for g in q.answers), default=0.0)
        f1 += max((f1_v1(p, g) for g in q.answers), default=0.0)
    n = len(questions)
    return {"exact_match": 100.0 * em / n if n else 0.0, "f1": 100.0 * f1 / n if n else 0.0}


def _best_thresh(preds: Mapping[str, str], scores: Mapping[str, float], na_probs: Mapping[str, float],
                 has_ans: Mapping[str, bool]) -> tuple[float, float]:
    num_no_ans = sum(1 for k in scores if not has_ans[k])
    cur = best = float(num_no_ans)
    best_thresh = 0.0
    for qid in sorted(scores, key=lambda k: na_probs[k]):
        if has_ans[qid]:
            cur += scores[qid]
        elif preds[qid]:
            cur -= 1
        if cur > best:
            best, best_thresh = cur, na_probs[qid]
    return 100.0 * best / len(scores), best_thresh


def evaluate_v2(questions: list[SquadQuestion], preds: Mapping[str, str], na_probs: Mapping[str, float] | None = None,
                na_prob_thresh: float = 1.0) -> dict[str, float]:
    """evaluate-v2.0.py's output keys; ``best_*`` only when ``na_probs`` is given (as ``-n`` does)."""
    has_ans = {q.qid: bool(q.answers) for q in questions}
    exact_raw: dict[str, float] = {}
    f1_raw: dict[str, float] = {}
    for q in questions:
        if q.qid not in preds:
            print(f"Missing prediction for {q.qid}", file=sys.stderr)
            continue
        golds = [a for a in q.answers if normalize_answer(a)] or [""]
        p = preds[q.qid]
        exact_raw[q.qid] = max(exact_match(p, g) for g in golds)
        f1_raw[q.qid] = max(f1_v2(p, g) for g in golds)
    probs = dict(na_probs) if na_probs is not None else {k: 0.0 for k in preds}
    missing = [k for k in exact_raw if k not in probs]
    if missing:
        raise SquadFormatError(f"na probabilities lack {len(missing)} predicted id(s), e.g. {missing[:3]}")

    def thresholded(raw: dict[str, float]) -> dict[str, float]:
        return {k: float(not has_ans[k]) if probs[k] > na_prob_thresh else v for k, v in raw.items()}

    ex, f1 = thresholded(exact_raw), thresholded(f1_raw)

    def block(keys: list[str]) -> dict[str, float]:
        n = len(keys)
        return {"exact": 100.0 * sum(ex[k] for k in keys) / n, "f1": 100.0 * sum(f1[k] for k in keys) / n, "total": n}

    keys = list(ex)
    out: dict[str, float] = block(keys) if keys else {"exact": 0.0, "f1": 0.0, "total": 0}
    for label, want in (("HasAns", True), ("NoAns", False)):
        sub = [k for k in keys if has_ans[k] == want]
        if sub:
            out.update({f"{label}_{m}": v for m, v in block(sub).items()})
    if na_probs is not None and keys:
        out["best_exact"], out["best_exact_thresh"] = _best_thresh(preds, exact_raw, probs, has_ans)
        out["best_f1"], out["best_f1_thresh"] = _best_thresh(preds, f1_raw, probs, has_ans)
    return out


def evaluate(data: str | os.PathLike, predictions: str | os.PathLike, *, na_prob: str | os.PathLike | None = None,
             na_prob_thresh: float = 1.0, version: str | None = None) -> dict[str, float]:
    """Score a predictions file against a SQuAD file with the official script of its version (``version``
    overrides: ``'1.1'`` or ``'2.0'``). A v2.0 file (unanswerable questions) scored as v1.1 is refused."""
    file_version, questions = load_dataset(data)
    preds = load_predictions(predictions, questions)
    v = version or file_version or "1.1"
    v = {"v2.0": "2.0", "2.0": "2.0", "v1.1": "1.1", "1.1": "1.1"}.get(str(v))
    if v is None:
        raise SquadFormatError(f"{data}: unknown SQuAD version {version or file_version!r}; pass --version 1.1 or 2.0")
    if v == "1.1":
        if na_prob is not None:
            raise SquadFormatError("-n/--na-prob applies to SQuAD v2.0 only")
        unanswerable = [q.qid for q in questions if not q.answers]
        if unanswerable:
            raise SquadFormatError(f"{data}: {len(unanswerable)} question(s) have no answer (e.g. {unanswerable[0]!r}): a "
                                   f"v2.0 file cannot be scored as v1.1; pass --version 2.0")
        return evaluate_v1(questions, preds)
    return evaluate_v2(questions, preds, load_na_probs(na_prob) if na_prob is not None else None, na_prob_thresh)
