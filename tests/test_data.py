"""Text sources: the toy language, token windows, and the python-docs prep run on a Debian package the test builds."""
from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch

from dslm_zoo.data import DataNotFoundError, TokenBlocks, load_text_data, prepare
from dslm_zoo.data.text import _clean_rst

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
    paras = _clean_rst(RST)
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
    out = prepare("python-docs", deb=str(deb), vocab_size=300)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["packages"][0]["version"] == "9.9-test" and len(manifest["packages"][0]["sha256"]) == 64
    assert sum(m["documents"] for m in manifest["splits"].values()) == 60
    assert manifest["duplicate_paragraphs_dropped"] > 0  # the shared paragraphs of the 60 copies
    data = load_text_data("python-docs")
    assert data.vocab_size <= 300 and len(data.split("train")) == manifest["splits"]["train"]["tokens"]
    words = data.tokenizer.decode(list(data.split("train")[:40]))
    assert "sort" in words


def test_data_list_command(capsys, tmp_path, monkeypatch):
    from dslm_zoo.cli import main

    monkeypatch.setenv("DSLM_ZOO_DATA", str(tmp_path))
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "toy_text" in out and "python-docs" in out and "not prepared" in out and str(tmp_path) in out
