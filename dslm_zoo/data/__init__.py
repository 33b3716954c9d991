"""Data sets of the zoo: one cache root, one registry of text sources, token streams the trainer reads.

Cache root: ``$DSLM_ZOO_DATA`` (default ``~/.cache/dslm_zoo``), one place for every prepared data set. A source
either builds itself in memory in seconds (``toy_text``) or is prepared once on disk by
``dslm-zoo data prepare NAME`` (``python-docs``); loading an unprepared source raises
:class:`DataNotFoundError` naming that command.
"""
from __future__ import annotations

from .text import (
    DataNotFoundError,
    TextData,
    TokenBlocks,
    data_root,
    list_text_sources,
    load_text_data,
    prepare,
    register_text_source,
)
from . import catalog  # noqa: E402,F401  (registers the prepared data sets)

__all__ = ["DataNotFoundError", "TextData", "TokenBlocks", "data_root", "list_text_sources", "load_text_data",
           "prepare", "register_text_source"]
