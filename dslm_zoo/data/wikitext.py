"""WikiText-103 from the Hugging Face hub: the online text source (``dslm-zoo data prepare text-en --source
wikitext-103``, or ``dslm-zoo data prepare wikitext-103``).

Merity et al. 2016, "Pointer Sentinel Mixture Models" (arXiv:1609.07843): 28,475 Good and Featured Wikipedia
articles, about 103M words, CC BY-SA 4.0. The hub serves the raw configuration as parquet shards
(``Salesforce/wikitext``, folder ``wikitext-103-raw-v1``, one ``text`` column, one row per paragraph or heading
line). This module downloads them with ``huggingface_hub.snapshot_download`` into the Hugging Face cache (cache
only when ``HF_HUB_OFFLINE=1`` or the hub is unreachable, with no retries) or reads a folder given with
``--local wikitext-103=DIR``, and builds the same layout as every prepared corpus of the zoo
(:func:`dslm_zoo.data.corpus.write_corpus`).

What it does to the text, and why:
- Articles are the documents: a line `` = Title = `` (one ``=`` each side) starts one, `` = = Section = = ``
  lines are dropped (headings are not prose), every other non-empty line is a paragraph.
- The published train / validation / test split is kept (results stay comparable with the literature), not the
  zoo's hash split.
- The raw release writes a hyphen, thousands separator and decimal point inside a number as `` @-@ ``, `` @,@ ``
  and `` @.@ ``; they are joined back. The space-before-punctuation of the original tokenisation stays: both
  tokenizers split punctuation anyway.
- Exact-duplicate paragraphs are dropped as in the package corpus, test first, then validation, then train, so
  the published evaluation text is kept whole and nothing of it is also trained on.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from .._hub import sha256_file
from .corpus import SPLITS, ParagraphFilter, check_tokenizers, write_corpus
from .text import DataNotFoundError, data_root

__all__ = ["REPO_ID", "CONFIG", "detokenize", "read_articles", "fetch_wikitext", "prepare_wikitext"]

REPO_ID = "Salesforce/wikitext"
CONFIG = "wikitext-103-raw-v1"
LICENCE = "CC-BY-SA-4.0"
NAME = "wikitext-103"

_TITLE = re.compile(r"^ = ([^=].*[^=]|[^=]) = $")
_HEADING = re.compile(r"^ (= )+.*( =)+ $")
_AT = {" @-@ ": "-", " @,@ ": ",", " @.@ ": "."}


def detokenize(line: str) -> str:
    """Undo WikiText's number markers: ``1 @,@ 000`` -> ``1,000``, ``state @-@ of`` -> ``state-of``."""
    for k, v in _AT.items():
        line = line.replace(k, v)
    return " ".join(line.split())


def read_articles(lines: Iterable[str]) -> Iterator[tuple[str, list[str]]]:
    """``(title, paragraphs)`` per article of WikiText rows (headings dropped, number markers joined).

    Lines before the first title belong to no article and are dropped."""
    title: str | None = None
    paras: list[str] = []
    for raw in lines:
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        m = _TITLE.match(line)
        if m:
            if title is not None and paras:
                yield title, paras
            title, paras = m.group(1).strip(), []
            continue
        if _HEADING.match(line) or title is None:
            continue
        paras.append(detokenize(line))
    if title is not None and paras:
        yield title, paras


def _split_files(folder: Path) -> dict[str, list[Path]]:
    """The parquet shards of each split under ``folder`` (itself or its ``wikitext-103-raw-v1/``)."""
    base = folder / CONFIG if (folder / CONFIG).is_dir() else folder
    files = {s: sorted(base.glob(f"{s}-*.parquet")) for s in SPLITS}
    missing = [s for s, f in files.items() if not f]
    if missing:
        raise DataNotFoundError(f"{base}: no parquet shard for split(s) {missing} (expected {CONFIG}/<split>-*.parquet, "
                                f"as {REPO_ID} on the Hugging Face hub lays them out)")
    return files


def fetch_wikitext(local: str | None = None, *, revision: str | None = None,
                   cache_dir: str | Path | None = None) -> tuple[dict[str, list[Path]], str]:
    """The parquet shards of each split and where they came from: ``local`` as given, or the Hugging Face cache,
    downloading into it when the hub is reachable and ``HF_HUB_OFFLINE`` is not set."""
    if local is not None:
        folder = Path(local).expanduser()
        if not folder.is_dir():
            raise DataNotFoundError(f"--local {NAME}={local}: not a directory")
        return _split_files(folder), f"local folder {folder}"
    from .._hub import _hf_mode

    cache_only, mode = _hf_mode(cache_dir)
    try:
        from huggingface_hub import snapshot_download

        snap = snapshot_download(REPO_ID, repo_type="dataset", revision=revision, cache_dir=cache_dir,
                                 allow_patterns=[f"{CONFIG}/*.parquet"], local_files_only=cache_only)
    except Exception as e:  # offline and not cached, unreachable, unknown revision: all mean "not available"
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataNotFoundError(
            f"WikiText-103 ({REPO_ID}, {CONFIG}) is not available: Hugging Face cache {mode}: {type(e).__name__}: {msg}\n"
            f"  - on a machine with the hub: `hf download {REPO_ID} --repo-type dataset --include '{CONFIG}/*'`, then "
            f"copy the cache here (HF_HUB_CACHE) or pass the folder: dslm-zoo data prepare {NAME} --local {NAME}=DIR"
        ) from None
    folder = Path(snap)
    return _split_files(folder), f"Hugging Face {REPO_ID}@{folder.name} ({mode})"


def _rows(path: Path) -> list[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("reading WikiText's parquet shards needs pyarrow: pip install 'dslm_zoo[wikitext]'") from None
    table = pq.read_table(path, columns=["text"])
    return [t or "" for t in table.column("text").to_pylist()]


def prepare_wikitext(local: Any = None, vocab_size: int = 8192, out: str | None = None,
                     tokenizers: Sequence[str] = ("wordpiece", "bpe"), *, revision: str | None = None,
                     cache_dir: str | Path | None = None) -> Path:
    """Build WikiText-103 into ``$DSLM_ZOO_DATA/wikitext-103`` (or ``out``): download or read the shards, read
    articles, drop duplicate paragraphs, train the tokenizers on train, encode. ``local`` is a folder, or the
    ``--local`` mapping of ``dslm-zoo data prepare`` with a ``wikitext-103`` entry."""
    from tqdm import tqdm

    check_tokenizers(tokenizers)  # before any download
    if isinstance(local, dict):
        unknown = set(local) - {NAME}
        if unknown:
            raise ValueError(f"--local for {NAME}: only {NAME}=DIR is read, got {sorted(unknown)}")
        local = local.get(NAME)
    files, origin = fetch_wikitext(local, revision=revision, cache_dir=cache_dir)
    dedup = ParagraphFilter()
    docs: dict[str, list[str]] = {s: [] for s in SPLITS}
    words = {s: 0 for s in SPLITS}
    for split in ("test", "validation", "train"):  # the evaluation text first: it is kept whole
        for path in tqdm(files[split], desc=f"{NAME}: {split}", disable=None):
            for _title, paras in read_articles(_rows(path)):
                kept = dedup.keep(paras)
                if kept:
                    text = "\n".join(kept)
                    docs[split].append(text)
                    words[split] += len(text.split())
    empty = [s for s in SPLITS if not docs[s]]
    if empty:
        raise RuntimeError(f"{origin}: split(s) {empty} yielded no article (is this WikiText's raw layout?)")
    manifest = {
        "name": NAME, "licence": LICENCE, "origin": origin, "repo_id": REPO_ID, "config": CONFIG,
        "files": [{"split": s, "name": p.name, "sha256": sha256_file(p)} for s in SPLITS for p in files[s]],
        "duplicate_paragraphs_dropped": dedup.dropped, "words": {"per_source": {NAME: words}, **words},
    }
    dest = Path(out) if out else data_root() / NAME
    return write_corpus({s: docs[s] for s in SPLITS}, dest, manifest, tokenizers=tokenizers, vocab_size=vocab_size)
