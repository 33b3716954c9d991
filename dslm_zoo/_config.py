"""Frozen dataclass configs: one per model family, unknown keys are errors (nanoGPT GPTConfig, llama ModelArgs)."""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Mapping, TypeVar

__all__ = ["ConfigBase"]

C = TypeVar("C", bound="ConfigBase")


@dataclass(frozen=True)
class ConfigBase:
    """Base of every family config. Subclasses add fields and override ``__post_init__`` checks."""

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def check_keys(cls, kwargs: Mapping[str, Any]) -> None:
        """Raise TypeError naming every key that is not a field of this config."""
        names = cls.field_names()
        unknown = [k for k in kwargs if k not in names]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, names, n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise TypeError(f"{cls.__name__} got unexpected keyword argument(s): {', '.join(hints)}")

    @classmethod
    def from_kwargs(cls: type[C], **kwargs: Any) -> C:
        cls.check_keys(kwargs)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for k, v in list(kwargs.items()):  # JSON round trips turn tuples into lists
            if isinstance(v, list) and "tuple" in str(fields[k].type):
                kwargs[k] = tuple(v)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self: C, **kwargs: Any) -> C:
        self.check_keys(kwargs)
        return dataclasses.replace(self, **kwargs)
