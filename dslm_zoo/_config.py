"""Frozen dataclass configs: one per model family, unknown keys are errors (nanoGPT GPTConfig, llama ModelArgs)."""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, TypeVar

__all__ = ["ConfigBase"]

C = TypeVar("C", bound="ConfigBase")


_SCALARS = {"int": int, "float": float, "bool": bool, "str": str}


def _type_error(cls: str, name: str, want: str, value: Any) -> TypeError:
    return TypeError(f"{cls}.{name} must be {want}, got {value!r} ({type(value).__name__})")


@dataclass(frozen=True)
class ConfigBase:
    """Base of every family config. Subclasses add fields and override ``__post_init__`` checks (calling super).

    Every field is checked against its annotation when a config is built (``int`` takes no bool and no float,
    ``float`` takes an int and stores it as a float, ``bool`` takes only True/False, ``X | None`` also None),
    then against ``bounds``: ``{field: (low, high)}`` with None for an open side; a low given as
    ``(">", x)`` is exclusive. Errors name the class, the field and the value.
    """

    bounds: ClassVar[dict[str, tuple[Any, Any]]] = {}

    def __post_init__(self) -> None:
        cls = type(self).__name__
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            ann = str(f.type).replace(" ", "")
            optional = ann.endswith("|None")
            base = ann[: -len("|None")] if optional else ann
            if value is None:
                if not optional:
                    raise _type_error(cls, f.name, f"a {base}", value)
                continue
            if base in _SCALARS:
                want = _SCALARS[base]
                if want is float:
                    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                        raise _type_error(cls, f.name, "a finite number", value)
                    object.__setattr__(self, f.name, float(value))
                elif want is int and (isinstance(value, bool) or not isinstance(value, int)):
                    raise _type_error(cls, f.name, "an integer", value)
                elif not isinstance(value, want):
                    raise _type_error(cls, f.name, {"bool": "True or False", "str": "a string"}.get(base, base), value)
            elif base.startswith("tuple") and not isinstance(value, tuple):
                raise _type_error(cls, f.name, "a tuple", value)
        for cls_ in reversed(type(self).__mro__):
            for name, (lo, hi) in vars(cls_).get("bounds", {}).items():
                value = getattr(self, name)
                if value is None:
                    continue
                strict = isinstance(lo, tuple)
                low = lo[1] if strict else lo
                if low is not None and (value <= low if strict else value < low):
                    raise ValueError(f"{cls}.{name} must be {'>' if strict else '>='} {low}, got {value!r}")
                if hi is not None and value > hi:
                    raise ValueError(f"{cls}.{name} must be <= {hi}, got {value!r}")

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
