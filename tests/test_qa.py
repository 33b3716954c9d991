"""Extractive QA: windows over long contexts, span decoding, the trainer's QA task and `dslm-zoo eval squad`."""
from __future__ import annotations

import json
import random

import pytest

from dslm_zoo.data.text import train_wordpiece
from dslm_zoo.evals.qa import decode_spans, make_features
from dslm_zoo.evals.squad import SquadQuestion

WORDS = ["alder", "birch", "cedar", "dogwood", "elm", "fir", "ginkgo", "hazel", "ironwood", "juniper", "larch", "maple"]
PLACES = ["Arden", "Brill", "Corin", "Dunmore", "Eskar", "Falmor", "Gilden", "Harrow", "Istar", "Jorvik", "Kestin", "Lorne"]


def toy_squad(n: int, seed: int) -> dict:
    """SQuAD v1.1 records: which tree grows in a place, and which river runs there (answers are context spans)."""
    rng = random.Random(seed)
    paras = []
    for i in range(n):
        place, tree, river = rng.choice(PLACES), rng.choice(WORDS), rng.choice(WORDS).capitalize() + " river"
        ctx = f"In {place} the {tree} tree grows by the {river}. People of {place} like the {river} very much."
        qas = [{"id": f"t{i}", "question": f"Which tree grows in {place}?", "answers": [{"text": tree, "answer_start": ctx.index(tree)}]},
               {"id": f"r{i}", "question": f"Which river runs in {place}?", "answers": [{"text": river, "answer_start": ctx.index(river)}]}]
        paras.append({"context": ctx, "qas": qas})
    return {"version": "1.1", "data": [{"title": "toy", "paragraphs": paras}]}


@pytest.fixture(scope="module")
def tokenizer():
    texts = [p["context"] + " " + " ".join(q["question"] for q in p["qas"]) for p in toy_squad(200, 0)["data"][0]["paragraphs"]]
    return train_wordpiece(texts, 200)


def test_windows_cover_a_long_context_and_carry_the_answer(tokenizer):
    ctx = " ".join(f"The {w} tree." for w in WORDS * 3) + " The answer is Lorne here."
    q = SquadQuestion("q", "Where is the answer?", ctx, ("Lorne",))
    feats = make_features([q], tokenizer, max_len=32, doc_stride=8, with_answers=True)
    assert len(feats) > 3 and all(len(f.input_ids) <= 32 for f in feats)
    hits = [f for f in feats if f.start > 0]
    assert hits and all(ctx[f.context_offsets[f.start][0] : f.context_offsets[f.end][1]].lower() == "lorne" for f in hits)
    assert feats[0].start == 0  # the first windows do not hold the answer: [CLS]
    types = feats[0].token_type_ids
    assert types[0] == 0 and types[-1] == 1


def test_span_decoding_picks_the_best_valid_span_and_the_null_score(tokenizer):
    q = SquadQuestion("q", "Which tree?", "In Arden the elm tree grows.", ("elm",))
    (f,) = make_features([q], tokenizer, max_len=64)
    n = len(f.input_ids)
    elm = next(i for i, o in enumerate(f.context_offsets) if o and q.context[o[0]:o[1]] == "elm")
    start, end = [0.0] * n, [0.0] * n
    start[elm], end[elm] = 5.0, 4.0
    end[elm - 1] = 9.0  # an end before the start is not a span
    start[1], end[1] = 8.0, 8.0  # a question token is not in the context
    preds, na = decode_spans([f], [start], [end], {"q": q.context})
    assert preds == {"q": "elm"} and na["q"] < 0.01  # null score 0 vs span 9
    start[0] = end[0] = 10.0
    preds, na = decode_spans([f], [start], [end], {"q": q.context})
    assert preds == {"q": "elm"} and na["q"] > 0.99  # null 20 vs 9: v2.0 would answer "" past the threshold


def test_qa_task_trains_and_eval_squad_scores_it(tmp_path, tokenizer):
    from dslm_zoo.cli import main
    from dslm_zoo.train import Trainer, load_recipe

    (tmp_path / "train.json").write_text(json.dumps(toy_squad(400, 1)))
    (tmp_path / "dev.json").write_text(json.dumps(toy_squad(40, 2)))
    (tmp_path / "test.json").write_text(json.dumps(toy_squad(30, 3)))
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    recipe = {
        "model": {"name": "dslm_bert_tiny", "kwargs": {"depth": 2, "embed_dim": 64, "num_heads": 2, "drop_rate": 0.0}},
        "task": {"name": "extractive_qa", "kwargs": {"max_len": 48, "doc_stride": 16}},
        "data": {"name": "squad", "kwargs": {"train": str(tmp_path / "train.json"), "validation": str(tmp_path / "dev.json"),
                                             "test": str(tmp_path / "test.json"), "tokenizer": str(tmp_path / "tokenizer.json")}},
        "optim": {"lr": 3e-3}, "schedule": {"warmup_steps": 10},
        "train": {"steps": 150, "batch_size": 32, "eval_every": 0, "checkpoint_every": 0},
    }
    (tmp_path / "qa.json").write_text(json.dumps(recipe))
    res = Trainer(load_recipe(tmp_path / "qa.json"), tmp_path / "run").run()
    assert res.eval["eval_loss"] < 2.0  # ln(48) = 3.9 at chance
    assert (tmp_path / "run" / "export" / "tokenizer.json").is_file()
    out = tmp_path / "squad"
    assert main(["eval", "squad", f"local-dir:{tmp_path / 'run' / 'export'}", str(tmp_path / "dev.json"), "--out", str(out),
                 "--max-len", "48", "--doc-stride", "16"]) == 0
    scores = json.loads((out / "scores.json").read_text())
    preds = json.loads((out / "predictions.json").read_text())
    assert set(scores) == {"exact_match", "f1"} and len(preds) == 80
    assert scores["f1"] > 50.0, scores  # the toy facts are read off the context

    # released: scored on the recipe's held-out test file and on the committed qa-facts slice
    from dslm_zoo.release import QA_SLICE, release_run

    rel = release_run(tmp_path / "run", "toy_qa", repo_root=tmp_path / "repo", progress=False)
    entry, = json.loads((tmp_path / "repo" / "dslm_zoo" / "models" / "releases.json").read_text())
    test, sliced = entry["metrics"][f"{tmp_path.name}:test"], entry["metrics"]["qa-facts:test-slice"]
    assert set(test) == {"exact_match", "f1"} and test["f1"] > 50.0  # the toy test file is v1.1: the v1.1 script
    assert sliced["total"] == 180 and sliced["NoAns_total"] == 60  # the slice is v2.0
    assert 0 <= sliced["exact"] <= sliced["f1"] <= 100 and (rel / "tokenizer.json").is_file()
    card = (rel / "README.md").read_text()
    assert f"dslm-zoo eval squad dslm_bert_tiny.toy_qa {QA_SLICE} --max-len 48 --doc-stride 16" in card


def test_eval_squad_threshold_from_a_dev_file(tmp_path, capsys):
    """--thresh-from DEV: the best-F1 no-answer threshold of DEV scores DATA; with DATA as its own dev file the F1
    is the official best_f1 (same semantics: no answer where na_prob > threshold); a v1.1 dev file is refused."""
    import dslm_zoo
    from dslm_zoo.cli import main
    from dslm_zoo.release import QA_SLICE, REPO_ROOT

    name = "dslm_bert_96L_64D.en20m_qafacts"
    if name not in dslm_zoo.list_pretrained():
        pytest.skip(f"{name} is not released")
    full = json.loads((REPO_ROOT / QA_SLICE).read_text())
    paras = [p for art in full["data"] for p in art["paragraphs"]][:12]  # 36 questions keep the test short
    (tmp_path / "slice.json").write_text(json.dumps({"version": full["version"], "data": [{"title": "s", "paragraphs": paras}]}))
    data = str(tmp_path / "slice.json")
    assert main(["eval", "squad", name, data, "--thresh-from", data, "--out", str(tmp_path / "b")]) == 0
    captured = capsys.readouterr()
    chosen = json.loads(captured.out)
    from dslm_zoo.evals.squad import evaluate  # the same answers at the default threshold 1.0

    plain = evaluate(data, tmp_path / "b" / "predictions.json", na_prob=tmp_path / "b" / "na_prob.json")
    assert f"the best-F1 threshold on {data}" in captured.err
    assert chosen["f1"] == pytest.approx(plain["best_f1"]) and chosen["exact"] >= 0
    assert chosen["NoAns_exact"] > plain["NoAns_exact"] == 0  # the default threshold 1.0 never abstains
    (tmp_path / "v1.json").write_text(json.dumps(toy_squad(3, 0)))
    assert main(["eval", "squad", name, data, "--thresh-from", str(tmp_path / "v1.json"), "--out", str(tmp_path / "c")]) != 0
    assert "needs a SQuAD v2.0 file" in capsys.readouterr().err
