"""``st-en-de``: a synthesized English-to-German speech-translation corpus in the MuST-C layout.

Real sentence pairs: the LibreOffice help pages in English and German (Debian ``libreoffice-help-en-us`` and
``-de``, MPL-2.0), aligned by file path and paragraph id (``par_id...`` / ``hd_id...``); identical pairs,
empty ones and pairs of fewer than ``min_words`` English words are dropped; of each OS-specific variant (the
``switchinline`` spans) only the default, non-Mac one is kept, so "Tools - Options" does not run into
"LibreOffice - Preferences". Speech: espeak-ng speaks the English side with a voice per help page (its
"speaker"), sox resamples to 16 kHz mono 16-bit; each help page is one "talk": one WAV with 0.3 s of silence
between segments and its segments in ``txt/<split>.yaml``. Talks go to train / dev / tst-COMMON by a hash of
the page path. Deterministic: espeak-ng is byte-deterministic for a voice and text.

Synthesized speech is real audio but not human speech: every number trained on it says so.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .._hub import sha256_file
from .corpus import Package, split_of

__all__ = ["align_help", "synthesize", "prepare_st_en_de", "VOICES"]

HELP_EN = Package("libreoffice-help-en-us", "debian")
HELP_DE = Package("libreoffice-help-de", "debian")
VOICES = ("en-us", "en-gb", "en-us+m3", "en-gb-x-rp", "en-us+f2", "en-gb+f3")
SR = 16000
GAP_S = 0.3


class _Paragraphs(HTMLParser):
    """Text of every element whose id starts with ``par_id`` or ``hd_id``; Mac variants of switchinline spans
    and hidden helper text skipped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, str | None, bool]] = []  # (tag, paragraph id it opened, skip)
        self.current: str | None = None
        self.skip = 0
        self.buf: list[str] = []
        self.out: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        pid = a.get("id") or ""
        opens = None
        if self.current is None and (pid.startswith("par_id") or pid.startswith("hd_id")):
            self.current, opens, self.buf = pid, pid, []
        skip = a.get("class") == "MAC" or (a.get("id") or "").startswith("MAC")
        self.skip += skip
        if tag not in ("br", "img", "input", "meta", "link"):
            self.stack.append((tag, opens, skip))

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            t, opens, skip = self.stack.pop()
            self.skip -= skip
            if opens is not None:
                text = " ".join("".join(self.buf).split())
                if text:
                    self.out.setdefault(opens, text)
                self.current = None
            if t == tag:
                break

    def handle_data(self, data: str) -> None:
        if self.current is not None and not self.skip:
            self.buf.append(data)


def _page_paragraphs(path: Path) -> dict[str, str]:
    p = _Paragraphs()
    p.feed(path.read_text(encoding="utf-8", errors="replace"))
    return p.out


def align_help(help_root: Path, min_words: int = 3) -> Iterator[tuple[str, str, str, str]]:
    """``(page, paragraph id, English, German)`` for every paragraph id present in both languages' page."""
    en_root, de_root = help_root / "en-US", help_root / "de"
    for en_page in sorted(en_root.rglob("*.html")):
        rel = en_page.relative_to(en_root)
        de_page = de_root / rel
        if not de_page.is_file():
            continue
        en, de = _page_paragraphs(en_page), _page_paragraphs(de_page)
        for pid, e in en.items():
            g = de.get(pid)
            if g and g != e and len(e.split()) >= min_words:
                yield str(rel.with_suffix("")), pid, e, g


def _need_tools() -> None:
    missing = [t for t in ("espeak-ng", "sox") if shutil.which(t) is None]
    if missing:
        raise RuntimeError(f"st-en-de needs {' and '.join(missing)}: install with `sudo apt-get install espeak-ng sox` "
                           f"(Debian/Ubuntu) or your system's package manager")


def synthesize(text: str, voice: str, workdir: Path) -> np.ndarray:
    """English speech for ``text``: espeak-ng (22.05 kHz) resampled by sox to 16 kHz mono int16."""
    raw, wav = workdir / "espeak.wav", workdir / "16k.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), "--", text], check=True, capture_output=True)
    # -R: repeatable (fixed seed), -D: no dither; sox otherwise dithers randomly when it requantises to 16 bits
    subprocess.run(["sox", "-R", "-D", str(raw), "-r", str(SR), "-c", "1", "-b", "16", str(wav)], check=True, capture_output=True)
    import soundfile as sf

    x, sr = sf.read(str(wav), dtype="int16")
    assert sr == SR
    return x


_MUSTC_SPLIT = {"test": "tst-COMMON", "validation": "dev", "train": "train"}


def _split_of_talk(page: str) -> str:
    """MuST-C's split names over the corpus's hash split: 4 % tst-COMMON, 4 % dev."""
    return _MUSTC_SPLIT[split_of(page, validation_pct=4, test_pct=4)]


def _speak_talk(segs: list[tuple[str, str, str]], voice: str, tmp: Path) -> list[np.ndarray]:
    """The segments of one talk, spoken in order, in a work directory of the calling thread's own (espeak-ng and
    sox write files)."""
    import threading

    workdir = tmp / f"thread{threading.get_ident()}"
    workdir.mkdir(parents=True, exist_ok=True)
    return [synthesize(en, voice, workdir) for _, en, _ in segs]


def prepare_st_en_de(local: dict[str, str] | None = None, out: str | None = None, max_pairs: int | None = None,
                     min_words: int = 3, workers: int | None = None, **_: Any) -> Path:
    """Build the MuST-C tree ``<out>/en-de/data/{train,dev,tst-COMMON}/{wav,txt}`` (default
    ``$DSLM_ZOO_DATA/st-en-de``); ``max_pairs`` keeps the first pairs of the aligned order (for quick builds).

    Talks are spoken by ``workers`` threads (default: the CPU count); the work is in the espeak-ng and sox
    processes, so threads suffice, and results are consumed in talk order, so the tree is the same bytes for
    any number of workers."""
    from concurrent.futures import ThreadPoolExecutor

    import soundfile as sf
    from tqdm import tqdm

    from .text import data_root

    _need_tools()
    dest = Path(out) if out else data_root() / "st-en-de"
    local = dict(local or {})
    with tempfile.TemporaryDirectory(prefix="dslm_zoo_st_") as tmp:
        tmpd = Path(tmp)
        packages = []
        for pkg in (HELP_EN, HELP_DE):
            path = Path(local[pkg.name]) if pkg.name in local else pkg.fetch(tmpd)
            version = pkg.extract(path, tmpd / "x")
            packages.append({"name": pkg.name, "version": version, "sha256": sha256_file(path), "licence": "MPL-2.0"})
        pairs = list(align_help(tmpd / "x" / "usr/share/libreoffice/help", min_words))
        if max_pairs is not None:
            pairs = pairs[:max_pairs]
        talks: dict[str, list[tuple[str, str, str]]] = {}
        for page, pid, en, de in pairs:
            talks.setdefault(page, []).append((pid, en, de))
        tmp_dest = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp_dest, ignore_errors=True)
        split_rows: dict[str, list[tuple[dict[str, Any], str, str]]] = {}
        gap = np.zeros(int(GAP_S * SR), dtype=np.int16)
        ordered = sorted(talks.items())
        voices = [VOICES[int(hashlib.sha256(page.encode()).hexdigest()[:8], 16) % len(VOICES)] for page, _ in ordered]
        n_workers = max(1, workers or os.cpu_count() or 1)
        pool = ThreadPoolExecutor(n_workers)
        spoken = pool.map(_speak_talk, [segs for _, segs in ordered], voices, [tmpd] * len(ordered))
        for k, ((page, segs), voice, audio) in enumerate(tqdm(zip(ordered, voices, spoken), total=len(ordered),
                                                              desc="st-en-de: speaking", disable=None)):
            split = _split_of_talk(page)
            talk_id = f"lohelp_{k:05d}"
            chunks, offset = [], GAP_S
            for (_, en, de), x in zip(segs, audio):
                meta = {"duration": f"{len(x) / SR:.6f}", "offset": f"{offset:.6f}", "speaker_id": f"espeak.{voice}",
                        "wav": f"{talk_id}.wav"}
                split_rows.setdefault(split, []).append((meta, en, de))
                chunks += [gap if not chunks else np.zeros(0, np.int16), x, gap]
                offset += len(x) / SR + GAP_S
            wav_dir = tmp_dest / "en-de" / "data" / split / "wav"
            wav_dir.mkdir(parents=True, exist_ok=True)
            sf.write(str(wav_dir / f"{talk_id}.wav"), np.concatenate(chunks), SR, subtype="PCM_16")
        for split, rows in split_rows.items():
            txt = tmp_dest / "en-de" / "data" / split / "txt"
            txt.mkdir(parents=True, exist_ok=True)
            (txt / f"{split}.yaml").write_text("".join(
                "- {" + ", ".join(f"{k}: {v}" for k, v in m.items()) + "}\n" for m, _, _ in rows))
            (txt / f"{split}.en").write_text("".join(e + "\n" for _, e, _ in rows), encoding="utf-8")
            (txt / f"{split}.de").write_text("".join(g + "\n" for _, _, g in rows), encoding="utf-8")
        import json

        (tmp_dest / "manifest.json").write_text(json.dumps({
            "name": "st-en-de", "note": "synthesized speech (espeak-ng), not human speech", "packages": packages,
            "voices": list(VOICES), "sample_rate": SR, "pairs": len(pairs),
            "splits": {s: {"segments": len(r), "talks": len({m["wav"] for m, _, _ in r})} for s, r in split_rows.items()},
            "espeak-ng": subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip(),
        }, indent=2) + "\n")
        pool.shutdown()
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp_dest, dest)
    return dest
