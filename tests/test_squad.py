"""SQuAD scoring against the official scripts' test vectors (../shared/spec/evals.md 1.8), both file formats,
and clear errors on bad files (including a hypothesis fuzz test of the loaders)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dslm_zoo.evals.squad import (
    SquadFormatError, evaluate, exact_match, f1_v1, f1_v2, load_dataset, load_predictions, normalize_answer,
)

ROOT = Path(__file__).resolve().parents[1]

PAIRS = [  # prediction, golds, EM, F1 (v1.1)
    ("The Denver Broncos", ["Denver Broncos", "Broncos"], 1, 1.0),
    ("Denver Broncos won", ["Denver Broncos"], 0, 0.8),
    ("in 1976.", ["1976"], 0, 2 / 3),
    ("the the cat", ["a cat sat"], 0, 2 / 3),
    ("Santa Clara, California", ["Levi's Stadium", "Santa Clara"], 0, 0.8),
    ("", ["1976"], 0, 0.0),
    ("Beyoncé", ["Beyoncé and Bruno Mars"], 0, 0.4),
    ("U.S.", ["US"], 1, 1.0),
    ("don't", ["do not"], 0, 0.0),
    ("Brave–New World", ["Brave New World"], 0, 0.4),
    ("The", ["a"], 1, 0.0),
    ("cat cat", ["cat"], 0, 2 / 3),
    ("  Denver   Broncos ", ["denver broncos!"], 1, 1.0),
]


@pytest.mark.parametrize("pred, golds, em, f1", PAIRS)
def test_official_pair_vectors(pred, golds, em, f1):
    assert max(exact_match(pred, g) for g in golds) == em
    assert max(f1_v1(pred, g) for g in golds) == pytest.approx(f1, abs=1e-6)


def test_v2_empty_rule_and_normalisation_details():
    assert f1_v2("The", "a") == 1.0 and f1_v1("The", "a") == 0.0  # the one place v1.1 and v2.0 differ
    assert normalize_answer("the-cat") == "thecat" and normalize_answer("Beyonce") != normalize_answer("Beyoncé")


def _nested(version, items):
    """An official-format file: items = (qid, context, question, [(text, start)])."""
    return {"version": version, "data": [{"title": "t", "paragraphs": [
        {"context": c, "qas": [{"id": q, "question": qu, "answers": [{"text": t, "answer_start": s} for t, s in ans]}
                               for q, c2, qu, ans in items if c2 == c]}
        for c in dict.fromkeys(c for _, c, _, _ in items)]}]}


CTX = "The Denver Broncos beat the Carolina Panthers in 1976 at Santa Clara, California."


def _span(text):
    return (text, CTX.index(text))


def _write(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return p


def test_v1_corpus_vector(tmp_path, capsys):
    data = _write(tmp_path, "d.json", _nested("1.1", [("a", CTX, "who?", [_span("Denver Broncos")]),
                                                     ("b", CTX, "when?", [_span("1976")]),
                                                     ("c", CTX, "where?", [_span("Santa Clara")])]))
    preds = _write(tmp_path, "p.json", {"a": "Denver Broncos", "b": "in 1976"})
    out = evaluate(data, preds)
    assert out == {"exact_match": pytest.approx(33.333333333333336), "f1": pytest.approx(55.55555555555555)}
    assert "Unanswered question c will receive score 0." in capsys.readouterr().err


def _v2_files(tmp_path, flattened=False):
    items = [("q1", [_span("Denver Broncos")]), ("q2", [_span("Santa Clara, California")]), ("q3", []), ("q4", []),
             ("q5", [_span("1976")])]
    if flattened:
        data = [{"id": q, "title": "t", "context": CTX, "question": "?",
                 "answers": {"text": [t for t, _ in a], "answer_start": [s for _, s in a]}} for q, a in items]
    else:
        data = _nested("v2.0", [(q, CTX, "?", a) for q, a in items])
    preds = {"q1": "Denver Broncos", "q2": "Santa Clara", "q3": "", "q4": "Carolina Panthers", "q5": "1977"}
    probs = {"q1": 0.1, "q2": 0.4, "q3": 0.9, "q4": 0.7, "q5": 0.8}
    return _write(tmp_path, "d.json", data), _write(tmp_path, "p.json", preds), _write(tmp_path, "n.json", probs)


@pytest.mark.parametrize("flattened", [False, True])
def test_v2_corpus_vector(tmp_path, flattened):
    d, p, n = _v2_files(tmp_path, flattened)
    out = evaluate(d, p, na_prob=n, version="2.0" if flattened else None)
    want = {"exact": 40.0, "f1": 56.0, "total": 5, "HasAns_exact": 100 / 3, "HasAns_f1": 60.0, "HasAns_total": 3,
            "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2, "best_exact": 60.0, "best_exact_thresh": 0.1,
            "best_f1": 76.0, "best_f1_thresh": 0.4}
    assert out == pytest.approx(want)
    half = evaluate(d, p, na_prob=n, na_prob_thresh=0.5, version="2.0")
    assert half["exact"] == pytest.approx(60.0) and half["f1"] == pytest.approx(76.0)
    assert half["NoAns_exact"] == half["NoAns_f1"] == pytest.approx(100.0)
    assert half["best_f1"] == pytest.approx(76.0) and half["best_exact"] == pytest.approx(60.0)
    assert "best_exact" not in evaluate(d, p, version="2.0")  # as the official script without -n


def test_the_command_prints_the_official_keys(tmp_path):
    d, p, n = _v2_files(tmp_path)
    r = subprocess.run([sys.executable, str(ROOT / "eval" / "squad.py"), "score", str(d), str(p), "-n", str(n)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["best_f1"] == pytest.approx(76.0)
    r = subprocess.run([sys.executable, str(ROOT / "eval" / "squad.py"), "score", str(d), str(p), "--version", "1.1"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "cannot be scored as v1.1" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d["data"][0]["paragraphs"][0]["qas"][0].pop("answers"), r"qas\[0\]: missing field 'answers'"),
    (lambda d: d["data"][0]["paragraphs"][0]["qas"][0]["answers"][0].update(answer_start=3),
     r"answers\[0\] \(id a\): answer 'Denver Broncos' is not at answer_start=3"),
    (lambda d: d["data"][0]["paragraphs"][0].update(context=7), r"field 'context' must be str"),
    (lambda d: d["data"][0]["paragraphs"][0]["qas"].append(dict(d["data"][0]["paragraphs"][0]["qas"][0])),
     r"question id 'a' appears 2 times"),
])
def test_bad_data_files_name_the_record(tmp_path, mutate, match):
    d = _nested("1.1", [("a", CTX, "who?", [_span("Denver Broncos")])])
    mutate(d)
    with pytest.raises(SquadFormatError, match=match):
        load_dataset(_write(tmp_path, "d.json", d))


def test_bad_prediction_files(tmp_path):
    d = _write(tmp_path, "d.json", _nested("1.1", [("a", CTX, "who?", [_span("Denver Broncos")])]))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SquadFormatError, match=r"bad\.json: not valid JSON"):
        evaluate(d, tmp_path / "bad.json")
    with pytest.raises(SquadFormatError, match=r"prediction id\(s\) are not in the data, e\.g\. \['zz'\]"):
        evaluate(d, _write(tmp_path, "p.json", {"a": "x", "zz": "y"}))
    with pytest.raises(SquadFormatError, match=r"prediction for id 'a' must be a string"):
        evaluate(d, _write(tmp_path, "p2.json", {"a": 3}))
    with pytest.raises(SquadFormatError, match="does not exist"):
        evaluate(d, tmp_path / "missing.json")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                           lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.sampled_from(
                               ["version", "data", "paragraphs", "context", "qas", "id", "question", "answers", "text",
                                "answer_start"]), kids, max_size=4), max_leaves=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(obj=json_values)
def test_fuzzed_files_give_clear_errors_or_load(tmp_path, obj):
    path = _write(tmp_path, "fuzz.json", obj)
    try:
        _, qs = load_dataset(path)
        assert all(isinstance(q.qid, str) for q in qs)
    except SquadFormatError as e:
        assert str(path) in str(e)
    try:
        load_predictions(path)
    except SquadFormatError as e:
        assert str(path) in str(e)
