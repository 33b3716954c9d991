"""Text sources as token streams: a registry, an in-memory toy language and a prepared real-text corpus.

Every source yields a :class:`TextData`: one 1-D token-id stream per split (documents joined by the separator
token) and the Hugging Face ``tokenizers`` tokenizer that made it. :class:`TokenBlocks` cuts a stream into
fixed-length windows for the trainer. Prepared sources live under :func:`data_root` as ``<split>.bin``
(np.memmap, uint16 or uint32), ``tokenizer.json`` and ``manifest.json`` (package version and sha256, words and
tokens per split).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["DataNotFoundError", "TextData", "TokenBlocks", "data_root", "register_text_source", "list_text_sources",
           "load_text_data", "prepare", "SPECIAL_TOKENS"]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
SPLITS = ("train", "validation", "test")


class DataNotFoundError(FileNotFoundError):
    """A data set that has not been prepared; the message names the command that prepares it."""


def data_root() -> Path:
    """The zoo's one data cache: ``$DSLM_ZOO_DATA``, default ``~/.cache/dslm_zoo``."""
    return Path(os.environ.get("DSLM_ZOO_DATA") or Path.home() / ".cache" / "dslm_zoo").expanduser()


@dataclass
class TextData:
    """Token streams per split and the tokenizer; ``special`` maps the BERT special tokens to ids."""

    name: str
    splits: dict[str, np.ndarray]
    tokenizer: Any  # tokenizers.Tokenizer
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def special(self) -> dict[str, int]:
        return {t: self.tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}

    def split(self, name: str) -> np.ndarray:
        if name not in self.splits:
            raise KeyError(f"data set {self.name!r} has no split {name!r}; it has {sorted(self.splits)}")
        return self.splits[name]


class TokenBlocks(Dataset):
    """Non-overlapping windows of ``block_len`` tokens over a 1-D token stream (the tail is dropped)."""

    def __init__(self, stream: np.ndarray, block_len: int):
        if block_len < 2:
            raise ValueError(f"block_len must be >= 2, got {block_len}")
        if len(stream) < block_len:
            raise ValueError(f"a stream of {len(stream)} tokens holds no window of {block_len}")
        self.stream, self.block_len = stream, block_len

    def __len__(self) -> int:
        return len(self.stream) // self.block_len

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < len(self):
            raise IndexError(f"window {i} out of range [0, {len(self)})")
        s = i * self.block_len
        return torch.from_numpy(np.asarray(self.stream[s : s + self.block_len], dtype=np.int64))


# ---------------------------------------------------------------------------------------------------- registry

Loader = Callable[..., TextData]
Preparer = Callable[..., Path]
_SOURCES: dict[str, tuple[Loader, Preparer | None, str]] = {}


def register_text_source(name: str, loader: Loader, preparer: Preparer | None = None, doc: str = "") -> None:
    if name in _SOURCES:
        raise ValueError(f"text source {name!r} is already registered")
    _SOURCES[name] = (loader, preparer, doc)


def list_text_sources() -> dict[str, str]:
    """``{name: one-line description}`` of every text source."""
    return {k: v[2] for k, v in _SOURCES.items()}


def load_text_data(name: str, **kwargs: Any) -> TextData:
    """Load a text source by name; unprepared on-disk sources raise :class:`DataNotFoundError`."""
    if name not in _SOURCES:
        raise ValueError(f"unknown text data set {name!r}; known: {sorted(_SOURCES)}")
    return _SOURCES[name][0](**kwargs)


def prepare(name: str, **kwargs: Any) -> Path:
    """Build an on-disk source into the cache root (``dslm-zoo data prepare NAME``); returns its directory."""
    if name not in _SOURCES:
        raise ValueError(f"unknown data set {name!r}; known: {sorted(_SOURCES)}")
    preparer = _SOURCES[name][1]
    if preparer is None:
        raise ValueError(f"{name!r} is built in memory when a recipe uses it: nothing to prepare")
    return preparer(**kwargs)


# ----------------------------------------------------------------------------------------- tokenizers


def _word_level_tokenizer(words: Iterable[str]) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


def train_wordpiece(texts: Iterable[str], vocab_size: int) -> Any:
    """A BERT-style (lower-cased) WordPiece tokenizer trained with Hugging Face ``tokenizers``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _encode_docs(tok: Any, docs: list[str]) -> np.ndarray:
    sep = tok.token_to_id("[SEP]")
    ids: list[int] = []
    for enc in tok.encode_batch(docs, add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(sep)
    dtype = np.uint16 if tok.get_vocab_size() < 2**16 else np.uint32
    return np.asarray(ids, dtype=dtype)


# ------------------------------------------------------------------------------------ toy_text (in memory)

_TOPICS = {
    "farm": (["cow", "horse", "farmer", "dog", "goat", "hen"], ["barn", "field", "fence", "cart"]),
    "sea": (["sailor", "fish", "gull", "captain", "whale", "crab"], ["boat", "wave", "net", "harbour"]),
    "city": (["driver", "clerk", "baker", "guard", "student", "cat"], ["bus", "shop", "street", "bridge"]),
    "forest": (["wolf", "fox", "owl", "hunter", "bear", "deer"], ["tree", "river", "path", "cave"]),
}
_ADJ = ["big", "small", "old", "young", "quiet", "loud", "red", "brown", "tired", "happy"]
_VERBS = [("sees", "see"), ("likes", "like"), ("follows", "follow"), ("finds", "find"), ("watches", "watch"), ("helps", "help")]
_PREP = ["near", "behind", "under", "beside"]


def _plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("s", "sh", "ch", "x")) else "s")


def _toy_documents(n_docs: int, rng: random.Random) -> list[str]:
    """A seeded toy language with topic coherence and subject-verb agreement (what MLM can learn quickly)."""
    docs = []
    topics = sorted(_TOPICS)
    for _ in range(n_docs):
        agents, places = _TOPICS[rng.choice(topics)]
        sents = []
        for _ in range(rng.randint(4, 9)):
            plural = rng.random() < 0.4
            subj = rng.choice(agents)
            words = ["the"] + ([rng.choice(_ADJ)] if rng.random() < 0.5 else []) + [_plural(subj) if plural else subj]
            verb = rng.choice(_VERBS)
            words.append(verb[1] if plural else verb[0])
            obj = rng.choice(agents)
            words += ["the"] + ([rng.choice(_ADJ)] if rng.random() < 0.3 else []) + [_plural(obj) if rng.random() < 0.4 else obj]
            if rng.random() < 0.6:
                words += [rng.choice(_PREP), "the", rng.choice(places)]
            sents.append(" ".join(words) + " .")
        docs.append(" ".join(sents))
    return docs


def _toy_vocab() -> list[str]:
    words = ["the", ".", *(_ADJ), *_PREP, *(v for pair in _VERBS for v in pair)]
    for agents, places in _TOPICS.values():
        for n in agents:
            words += [n, _plural(n)]
        words += places
    return words


def load_toy_text(num_docs: int = 4000, seed: int = 1234) -> TextData:
    """The toy language, built in memory in about a second: 90/5/5 % of the documents per split."""
    docs = _toy_documents(num_docs, random.Random(seed))
    tok = _word_level_tokenizer(_toy_vocab())
    n_val = max(1, num_docs // 20)
    parts = {"train": docs[: num_docs - 2 * n_val], "validation": docs[num_docs - 2 * n_val : num_docs - n_val],
             "test": docs[num_docs - n_val :]}
    splits = {k: _encode_docs(tok, v) for k, v in parts.items()}
    return TextData("toy_text", splits, tok, {"source": "toy_text", "num_docs": num_docs, "seed": seed})


register_text_source("toy_text", load_toy_text, None, "a seeded toy language built in memory (no download), for tests and demos")


# ------------------------------------------------------------------------------ python-docs (prepared)

_PYDOC_PACKAGE = "python3.11-doc"
_PYDOC_SOURCES = "usr/share/doc/python3.11/html/_sources"
_RST_ROLE = re.compile(r":[a-zA-Z:]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")
_RST_LINK = re.compile(r"`([^`<]+?)\s*<[^>]*>`_+")
_RST_MARKUP = re.compile(r"[`*]{1,2}|\|")
_RST_CODE_DIRECTIVES = {"code-block", "code", "sourcecode", "doctest", "testcode", "testoutput", "testsetup",
                        "testcleanup", "literalinclude", "productionlist", "toctree", "image", "figure", "raw",
                        "highlight", "csv-table", "list-table", "table", "literal", "parsed-literal", "include"}


def _clean_rst(text: str) -> list[str]:
    """Prose paragraphs of a reStructuredText file: directives, literal blocks, tables and headings dropped."""
    paragraphs: list[str] = []
    current: list[str] = []
    in_literal = False
    literal_indent = 0

    def flush() -> None:
        if current:
            p = " ".join(current).strip()
            if len(p.split()) >= 4:
                paragraphs.append(p)
            current.clear()

    for raw in text.splitlines():
        line = raw.rstrip()
        indent = len(line) - len(line.lstrip())
        if in_literal:
            if line and indent <= literal_indent:
                in_literal = False
            else:
                continue
        stripped = line.strip()
        if not stripped:
            flush()
            continue
        if stripped.startswith(".."):
            flush()
            directive = re.match(r"\.\.\s+([\w:-]+)::", stripped)
            if directive is None or directive.group(1) in _RST_CODE_DIRECTIVES:  # a comment, code or a table of contents
                in_literal, literal_indent = True, indent
            continue  # a description directive (function, class, note, ...): its indented body is prose
        if re.fullmatch(r"[=\-~^\"'`#*+.:_]{3,}", stripped) or stripped.startswith(("+-", "|", ">>>", "...")):
            flush()
            continue
        if stripped.startswith(":") and stripped.count(":") >= 2 and stripped.split(":")[1].isidentifier():
            flush()  # field list (":param x:" / ":synopsis:")
            continue
        if stripped.endswith("::"):
            stripped = stripped[:-1]
            in_literal, literal_indent = True, indent
        stripped = _RST_LINK.sub(r"\1", stripped)
        stripped = _RST_ROLE.sub(r"\1", stripped)
        stripped = _RST_MARKUP.sub("", stripped)
        current.append(stripped)
        if in_literal:
            flush()
    flush()
    return paragraphs


def _split_of(rel: str) -> str:
    h = int(hashlib.sha256(rel.encode()).hexdigest()[:8], 16) % 100
    return "test" if h < 5 else "validation" if h < 10 else "train"


def _fetch_deb(package: str, workdir: Path) -> Path:
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"apt-get is not available: download the Debian package {package!r} yourself and pass --deb")
    r = subprocess.run(["apt-get", "download", package], cwd=workdir, capture_output=True, text=True)
    debs = sorted(workdir.glob(f"{package}_*.deb"))
    if r.returncode != 0 or not debs:
        raise RuntimeError(f"'apt-get download {package}' failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    return debs[0]


def prepare_python_docs(deb: str | None = None, vocab_size: int = 8192, out: str | None = None) -> Path:
    """Build ``python-docs``: the prose of the Python 3.11 documentation (Debian ``python3.11-doc``, PSF licence,
    about 1.4M words) split by whole documents (5 % validation, 5 % test by a hash of the file path), exact
    duplicate paragraphs removed, a WordPiece tokenizer trained on the train split, token streams as np.memmap."""
    from tqdm import tqdm

    dest = Path(out) if out else data_root() / "python-docs"
    with tempfile.TemporaryDirectory(prefix="dslm_zoo_pydoc_") as tmp:
        tmpd = Path(tmp)
        deb_path = Path(deb) if deb else _fetch_deb(_PYDOC_PACKAGE, tmpd)
        if not deb_path.is_file():
            raise FileNotFoundError(f"--deb {str(deb_path)!r} does not exist")
        subprocess.run(["dpkg-deb", "-x", str(deb_path), str(tmpd / "x")], check=True)
        version = subprocess.run(["dpkg-deb", "-f", str(deb_path), "Version"], capture_output=True, text=True).stdout.strip()
        src = tmpd / "x" / _PYDOC_SOURCES
        files = sorted(src.rglob("*.rst.txt"))
        if not files:
            raise RuntimeError(f"{deb_path}: no .rst.txt sources under {_PYDOC_SOURCES}")
        docs: dict[str, list[str]] = {s: [] for s in SPLITS}
        seen: set[str] = set()
        dropped = 0
        for f in tqdm(files, desc="python-docs: cleaning", disable=None):
            rel = str(f.relative_to(src))
            paras = []
            for p in _clean_rst(f.read_text(encoding="utf-8", errors="replace")):
                key = hashlib.sha1(" ".join(p.split()).lower().encode()).hexdigest()
                if key in seen:
                    dropped += 1
                    continue
                seen.add(key)
                paras.append(p)
            if paras:
                docs[_split_of(rel)].append("\n".join(paras))
        deb_sha = hashlib.sha256(deb_path.read_bytes()).hexdigest()
    tok = train_wordpiece(docs["train"], vocab_size)
    tmp_dest = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp_dest, ignore_errors=True)
    tmp_dest.mkdir(parents=True)
    manifest: dict[str, Any] = {
        "name": "python-docs", "packages": [{"name": _PYDOC_PACKAGE, "version": version, "sha256": deb_sha, "registry": "debian"}],
        "licence": "PSF-2.0 (Python documentation)", "tokenizer": {"type": "wordpiece", "vocab_size": tok.get_vocab_size()},
        "duplicate_paragraphs_dropped": dropped, "splits": {},
    }
    for split, ds in docs.items():
        ids = _encode_docs(tok, ds)
        ids.tofile(tmp_dest / f"{split}.bin")
        manifest["splits"][split] = {"documents": len(ds), "words": sum(len(d.split()) for d in ds), "tokens": int(len(ids)),
                                     "dtype": str(ids.dtype)}
    tok.save(str(tmp_dest / "tokenizer.json"))
    (tmp_dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp_dest, dest)
    return dest


def load_prepared(name: str, root: str | None = None) -> TextData:
    """A prepared source from ``root`` (default: the cache root's ``name`` folder), memory-mapped."""
    from tokenizers import Tokenizer

    d = Path(root) if root else data_root() / name
    manifest_path = d / "manifest.json"
    if not manifest_path.is_file():
        raise DataNotFoundError(f"data set {name!r} is not prepared in {str(d)!r}: run `dslm-zoo data prepare {name}` "
                                f"(or set DSLM_ZOO_DATA to where it was prepared)")
    manifest = json.loads(manifest_path.read_text())
    splits = {s: np.memmap(d / f"{s}.bin", dtype=np.dtype(m["dtype"]), mode="r")
              for s, m in manifest["splits"].items() if m["tokens"] > 0}  # an empty file cannot be mapped
    return TextData(name, splits, Tokenizer.from_file(str(d / "tokenizer.json")), manifest)


def _load_python_docs(root: str | None = None) -> TextData:
    return load_prepared("python-docs", root)


register_text_source("python-docs", _load_python_docs, prepare_python_docs,
                     "prose of the Python 3.11 docs (Debian python3.11-doc, PSF licence, ~1.4M words)")


def describe(data: TextData) -> Mapping[str, Any]:
    """Tokens per split and vocabulary size, for run records and cards."""
    return {"name": data.name, "vocab_size": data.vocab_size, "tokens": {k: int(len(v)) for k, v in data.splits.items()},
            **({"packages": data.manifest["packages"]} if "packages" in data.manifest else {})}
