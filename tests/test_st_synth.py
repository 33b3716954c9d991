"""st-en-de: paragraph alignment of the LibreOffice help, and (with espeak-ng and sox) a synthesized MuST-C tree
that the MuST-C reader reads, byte-identical on a rerun."""
from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest

from dslm_zoo.data.mustc import load_audio, read_split
from dslm_zoo.data.st_synth import align_help

EN = """<html><body><div id="DisplayArea">
<h1 id="hd_id1" dir="auto">Load/Save options</h1>
<p id="par_id2" class="paragraph">Specifies general <span class="emph">Load/Save</span> settings for documents.</p>
<p id="par_id3">Choose <span class="switchinline"><span hidden="true" id="MACx" class="MAC"><span class="emph">LibreOffice - Preferences</span></span><span hidden="true" id="defaultx"><span class="emph">Tools - Options</span></span></span> - Load/Save now.</p>
<p id="par_id4">Same text in both languages here.</p>
<p id="par_id5">Only in English, this paragraph.</p>
</div></body></html>"""
DE = """<html><body><div id="DisplayArea">
<h1 id="hd_id1" dir="auto">Optionen Laden/Speichern</h1>
<p id="par_id2" class="paragraph">Legt allgemeine <span class="emph">Laden/Speichern</span>-Einstellungen für Dokumente fest.</p>
<p id="par_id3">Wählen Sie <span class="switchinline"><span hidden="true" id="MACy" class="MAC">LibreOffice - Einstellungen</span><span hidden="true" id="defaulty">Extras - Optionen</span></span> - Laden/Speichern.</p>
<p id="par_id4">Same text in both languages here.</p>
</div></body></html>"""


def _help_tree(root, pages=1):
    for lang, html in (("en-US", EN), ("de", DE)):
        for i in range(pages):
            p = root / "usr/share/libreoffice/help" / lang / "text/shared" / f"page{i}.html"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(html)
    return root


def test_alignment_by_page_and_paragraph_id(tmp_path):
    pairs = list(align_help(_help_tree(tmp_path) / "usr/share/libreoffice/help"))
    assert [(p[1], p[2], p[3]) for p in pairs] == [  # hd_id1 has 2 English words: under min_words=3
        ("par_id2", "Specifies general Load/Save settings for documents.",
         "Legt allgemeine Laden/Speichern-Einstellungen für Dokumente fest."),
        ("par_id3", "Choose Tools - Options - Load/Save now.", "Wählen Sie Extras - Optionen - Laden/Speichern."),
    ]  # identical and one-sided paragraphs dropped; the Mac variant of the menu path left out


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="needs espeak-ng and sox")
def test_synthesized_tree_reads_as_mustc_and_is_deterministic(tmp_path, monkeypatch):
    from dslm_zoo.data.st_synth import prepare_st_en_de

    _help_tree(tmp_path / "tree", pages=3)
    debs = {}
    for name, lang in (("libreoffice-help-en-us", "en-US"), ("libreoffice-help-de", "de")):
        pkg = tmp_path / name
        src = tmp_path / "tree" / "usr/share/libreoffice/help" / lang
        shutil.copytree(src, pkg / "usr/share/libreoffice/help" / lang)
        (pkg / "DEBIAN").mkdir()
        (pkg / "DEBIAN/control").write_text(f"Package: {name}\nVersion: 1-test\nArchitecture: all\nMaintainer: t <t@e.org>\nDescription: t\n")
        debs[name] = str(tmp_path / f"{name}.deb")
        subprocess.run(["dpkg-deb", "--build", str(pkg), debs[name]], check=True, capture_output=True)
    out = prepare_st_en_de(local=debs, out=str(tmp_path / "st"), workers=1)
    segs = [s for split in ("train", "dev", "tst-COMMON") if (out / "en-de/data" / split).is_dir()
            for s in read_split(out, "en-de", split)]
    assert len(segs) == 6 and all(s.speaker.startswith("espeak.") for s in segs)
    x = load_audio(segs[0])
    assert 0.3 < len(x) / 16000 < 5 and abs(x).max() > 0.05  # speech, not silence
    digest = lambda: sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*.wav"))  # noqa: E731
    first = digest()
    prepare_st_en_de(local=debs, out=str(tmp_path / "st"), workers=3)  # threads finish out of order; bytes agree
    assert digest() == first
