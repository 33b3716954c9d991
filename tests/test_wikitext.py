"""WikiText-103, the online text source (dslm_zoo/data/wikitext.py): article reading, the Hugging Face cache path
and the --local path, on parquet shards these tests write (the hub itself is unreachable here and in CI)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pq = pytest.importorskip("pyarrow.parquet")
import pyarrow as pa  # noqa: E402

from dslm_zoo import _hub  # noqa: E402
from dslm_zoo.cli import main  # noqa: E402
from dslm_zoo.data import DataNotFoundError, load_text_data  # noqa: E402
from dslm_zoo.data.wikitext import CONFIG, REPO_ID, detokenize, prepare_wikitext, read_articles  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _article(title: str, n: int, shared: str | None = None) -> list[str]:
    rows = ["", f" = {title} = \n", ""]
    for i in range(n):
        rows += [f" The {title.lower()} paragraph {i} is about 1 @,@ 500 state @-@ of @-@ the @-@ art words and 2 @.@ 5 "
                 f"more , with words {' '.join(f'w{(i * 7 + k) % 50}' for k in range(20))} . \n", ""]
        if i == 1:
            rows += [f" = = Section of {title} = = \n", ""]
    if shared:
        rows += [shared, ""]
    return rows


def _write_shards(base: Path) -> None:
    base.mkdir(parents=True)
    shared = " This paragraph appears in the test split and again in the training split , word for word . \n"
    shards = {
        "train-00000-of-00002.parquet": _article("Alpha", 6) + _article("Beta", 5, shared),
        "train-00001-of-00002.parquet": _article("Gamma", 6) + _article("Delta", 4),
        "validation-00000-of-00001.parquet": _article("Epsilon", 3),
        "test-00000-of-00001.parquet": _article("Zeta", 3, shared),
    }
    for name, rows in shards.items():
        pq.write_table(pa.table({"text": rows}), base / name)


def test_read_articles_splits_on_titles_drops_headings_and_joins_number_markers():
    rows = ["", " = A = \n", " = = Intro = = \n", " x @-@ y cost 1 @,@ 000 or 2 @.@ 5 . \n", "", " = B = \n", " second \n"]
    arts = list(read_articles(rows))
    assert arts == [("A", ["x-y cost 1,000 or 2.5 ."]), ("B", ["second"])]
    assert detokenize(" a @-@ b ") == "a-b"
    assert list(read_articles([" orphan line before any title \n"])) == []


def _cache(tmp_path: Path) -> Path:
    """A Hugging Face cache holding the dataset repo at one commit, as snapshot_download leaves it."""
    repo = tmp_path / "hf" / f"datasets--{REPO_ID.replace('/', '--')}"
    _write_shards(repo / "snapshots" / COMMIT / CONFIG)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return tmp_path / "hf"


def test_prepare_from_the_hugging_face_cache(tmp_path, monkeypatch):
    monkeypatch.setitem(_hub._REACHABLE, "huggingface.co:443", (False, "test: no network"))
    out = prepare_wikitext(cache_dir=_cache(tmp_path), out=str(tmp_path / "wt"), vocab_size=300)
    m = json.loads((out / "manifest.json").read_text())
    assert m["origin"].startswith(f"Hugging Face {REPO_ID}@{COMMIT}") and "cache only" in m["origin"]
    assert m["documents"] == {"train": 4, "validation": 1, "test": 1}  # articles, the published split kept
    assert {f["name"] for f in m["files"]} == {"train-00000-of-00002.parquet", "train-00001-of-00002.parquet",
                                                "validation-00000-of-00001.parquet", "test-00000-of-00001.parquet"}
    assert all(len(f["sha256"]) == 64 for f in m["files"])
    assert m["duplicate_paragraphs_dropped"] == 1  # the training copy of the test paragraph, not the test's
    def norm(text: str) -> str:
        return "".join(text.lower().split())

    for tok in ("wordpiece", "bpe"):
        d = load_text_data("wikitext-103", root=str(out), tokenizer=tok)
        assert set(d.splits) == {"train", "validation", "test"} and d.vocab_size <= 300
        test_text, train_text = (norm(d.tokenizer.decode(list(map(int, d.split(s))))) for s in ("test", "train"))
        assert norm("appears in the test split") in test_text and norm("appears in the test split") not in train_text
        assert norm("section of") not in train_text and "@" not in train_text and "1,500" in train_text


def test_text_en_source_wikitext_from_a_local_folder_through_the_cli(tmp_path, capsys):
    _write_shards(tmp_path / "shards" / CONFIG)
    rc = main(["data", "prepare", "text-en", "--source", "wikitext-103", "--local", f"wikitext-103={tmp_path / 'shards'}",
               "--out", str(tmp_path / "wt"), "--vocab-size", "300", "--tokenizers", "wordpiece"])
    assert rc == 0
    m = json.loads((tmp_path / "wt" / "manifest.json").read_text())
    assert m["name"] == "wikitext-103" and m["origin"].startswith("local folder") and list(m["tokenizers"]) == ["wordpiece"]
    assert "preparing the data set 'wikitext-103'" in capsys.readouterr().err


def test_missing_wikitext_fails_fast_and_says_how_to_supply_it(tmp_path, monkeypatch):
    monkeypatch.setitem(_hub._REACHABLE, "huggingface.co:443", (False, "test: no network"))
    t = time.perf_counter()
    with pytest.raises(DataNotFoundError, match=r"hf download Salesforce/wikitext --repo-type dataset.*--local wikitext-103=DIR"):
        prepare_wikitext(cache_dir=tmp_path / "empty_cache", out=str(tmp_path / "wt"))
    assert time.perf_counter() - t < 5.0  # the cache lookup, no retries
    with pytest.raises(DataNotFoundError, match="no parquet shard for split"):
        prepare_wikitext(local=str(tmp_path), out=str(tmp_path / "wt"))
    assert not (tmp_path / "wt").exists()


def test_source_applies_to_text_en_only(capsys):
    assert main(["data", "prepare", "python-docs", "--source", "wikitext-103"]) != 0
    assert "applies to text-en only" in capsys.readouterr().err
