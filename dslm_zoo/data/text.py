"""Text sources as token streams: a registry, an in-memory toy language and a prepared real-text corpus.

Every source yields a :class:`TextData`: one 1-D token-id stream per split (documents joined by the separator
token) and the Hugging Face ``tokenizers`` tokenizer that made it. :class:`TokenBlocks` cuts a stream into
fixed-length windows for the trainer. Prepared corpora (:mod:`.corpus`) live under :func:`data_root`/NAME as
``manifest.json`` (package versions and sha256, words per source and split) and, per tokenizer,
``<tokenizer>/tokenizer.json`` and ``<tokenizer>/<split>.bin`` (np.memmap, uint16 or uint32).
"""
from __future__ import annotations

import json
import os
import random
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


# ---------------------------------------------------------------------------------- prepared corpora


def load_prepared(name: str, root: str | None = None, tokenizer: str = "wordpiece") -> TextData:
    """A prepared corpus from ``root`` (default: the cache root's ``name`` folder), memory-mapped token streams
    of one of its tokenizers (``'wordpiece'`` for encoders, ``'bpe'``, byte-level, for decoders)."""
    from tokenizers import Tokenizer

    d = Path(root) if root else data_root() / name
    manifest_path = d / "manifest.json"
    if not manifest_path.is_file():
        raise DataNotFoundError(f"data set {name!r} is not prepared in {str(d)!r}: run `dslm-zoo data prepare {name}` "
                                f"(or set DSLM_ZOO_DATA to where it was prepared)")
    manifest = json.loads(manifest_path.read_text())
    if "splits" in manifest and tokenizer == "wordpiece":  # the first layout (commit 70a0f9c): one tokenizer, top level
        splits = {s: np.memmap(d / f"{s}.bin", dtype=np.dtype(m["dtype"]), mode="r")
                  for s, m in manifest["splits"].items() if m["tokens"] > 0}
        return TextData(name, splits, Tokenizer.from_file(str(d / "tokenizer.json")), {**manifest, "tokenizer": tokenizer})
    if tokenizer not in manifest.get("tokenizers", {}):
        raise DataNotFoundError(f"data set {name!r} was prepared without the {tokenizer!r} tokenizer (it has "
                                f"{sorted(manifest.get('tokenizers', {}))}): run `dslm-zoo data prepare {name} "
                                f"--tokenizers {tokenizer}`")
    info = manifest["tokenizers"][tokenizer]
    splits = {s: np.memmap(d / tokenizer / f"{s}.bin", dtype=np.dtype(m["dtype"]), mode="r")
              for s, m in info["splits"].items() if m["tokens"] > 0}  # an empty file cannot be mapped
    return TextData(name, splits, Tokenizer.from_file(str(d / tokenizer / "tokenizer.json")), {**manifest, "tokenizer": tokenizer})


def describe(data: TextData) -> Mapping[str, Any]:
    """Tokens per split and vocabulary size, for run records and cards."""
    return {"name": data.name, "vocab_size": data.vocab_size, "tokens": {k: int(len(v)) for k, v in data.splits.items()},
            **({"packages": data.manifest["packages"]} if "packages" in data.manifest else {})}
