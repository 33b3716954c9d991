"""Model registry and pretrained-weight metadata (timm's registry anatomy, torchvision's Weights.meta).

A model name is ``arch`` or ``arch.tag``: ``arch`` names an ``@register_model`` entrypoint, ``tag`` one set of
released weights for it. The first tag registered with weights is the architecture's default.
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

__all__ = [
    "PretrainedCfg",
    "register_model",
    "register_pretrained",
    "list_models",
    "list_pretrained",
    "is_model",
    "model_entrypoint",
    "get_pretrained_cfg",
    "get_architecture_cfg",
    "split_model_name",
]


@dataclass(frozen=True)
class PretrainedCfg:
    """Everything that travels with one set of released weights.

    ``metrics`` is ``{dataset: {metric: value}}`` as measured by ``eval_command`` on the named data; ``recipe`` is
    the command in this repository that trained the weights. ``sha256`` is checked before any load.
    """

    architecture: str
    tag: str = ""
    hf_hub_id: str | None = None
    filename: str = "model.safetensors"
    sha256: str | None = None
    num_params: int | None = None
    # preprocessing
    input_size: tuple[int, int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    crop_pct: float | None = None  # timm's eval transform: resize to size / crop_pct, centre-crop size
    interpolation: str | None = None
    sample_rate: int | None = None
    fbank: Mapping[str, Any] | None = None
    tokenizer: str | None = None  # file name of the tokenizer.json beside the weights (text models)
    # the architecture arguments the weights were trained with, over the variant's defaults (vocabulary, context)
    model_args: Mapping[str, Any] | None = None
    # task
    num_classes: int | None = None
    label_names: tuple[str, ...] | None = None
    classifier: str | None = None  # module path of the head that num_classes re-initialises
    # provenance
    license: str = "apache-2.0"
    paper_ids: tuple[str, ...] = ("arXiv:2403.09635",)
    recipe: str | None = None
    eval_command: str | None = None
    metrics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    notes: str | None = None

    @property
    def name(self) -> str:
        return f"{self.architecture}.{self.tag}" if self.tag else self.architecture

    @property
    def has_weights(self) -> bool:
        return self.hf_hub_id is not None or self.sha256 is not None

    def to_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            if isinstance(v, Mapping):
                return {k: plain(x) for k, x in v.items()}
            if isinstance(v, tuple):
                return [plain(x) for x in v]
            return v

        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PretrainedCfg":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise TypeError(f"PretrainedCfg got unknown keys: {unknown}")
        kw = dict(d)
        for k in ("input_size", "mean", "std", "label_names", "paper_ids"):
            if kw.get(k) is not None:
                kw[k] = tuple(kw[k])
        return cls(**kw)

    # Read-only mapping access, as timm reads ``model.pretrained_cfg`` (``resolve_data_config`` calls ``.get``).
    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default) if key in self.keys() else default

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]

    def replace(self, **overlay: Any) -> "PretrainedCfg":
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overlay) - names)
        if unknown:
            raise TypeError(f"pretrained_cfg_overlay has unknown keys: {unknown}")
        return dataclasses.replace(self, **overlay)


_entrypoints: dict[str, Callable[..., Any]] = {}
_model_to_module: dict[str, str] = {}
_pretrained: dict[str, dict[str, PretrainedCfg]] = {}  # arch -> tag -> cfg, insertion-ordered
_default_cfgs: dict[str, PretrainedCfg] = {}  # arch -> cfg used when no weights exist


def split_model_name(name: str) -> tuple[str, str]:
    """``'arch.tag'`` -> ``('arch', 'tag')``; ``'arch'`` -> ``('arch', '')``."""
    arch, _, tag = name.partition(".")
    return arch, tag


def register_model(fn: Callable[..., Any] | None = None, *, default_cfg: Mapping[str, Any] | None = None):
    """Register a model entrypoint under its function name. A second registration of a name raises.

    ``default_cfg`` holds the PretrainedCfg fields (preprocessing, tokenizer, classifier...) that apply to the
    architecture when no released weights exist; ``architecture`` is filled in from the function name.
    """

    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        name = f.__name__
        if name in _entrypoints:
            raise ValueError(f"model {name!r} is already registered (by {_model_to_module[name]})")
        cfg = PretrainedCfg.from_dict({"architecture": name, **(default_cfg or {})})
        _entrypoints[name] = f
        _model_to_module[name] = f.__module__
        _default_cfgs[name] = cfg
        _pretrained.setdefault(name, {})
        return f

    return deco(fn) if fn is not None else deco


def register_pretrained(cfg: PretrainedCfg) -> PretrainedCfg:
    """Register one set of released weights for an architecture (call after ``register_model``)."""
    if cfg.architecture not in _entrypoints:
        raise ValueError(f"cannot register weights for unknown architecture {cfg.architecture!r}")
    tags = _pretrained[cfg.architecture]
    if cfg.tag in tags:
        raise ValueError(f"pretrained tag {cfg.name!r} is already registered")
    tags[cfg.tag] = cfg
    return cfg


def _close_names(name: str, n: int = 5) -> list[str]:
    return difflib.get_close_matches(name, list(_entrypoints), n=n, cutoff=0.5)


def _as_list(x: str | Sequence[str]) -> list[str]:
    if not x:
        return []
    return [x] if isinstance(x, str) else list(x)


def list_models(
    filter: str | Sequence[str] = "",
    exclude_filters: str | Sequence[str] = "",
    pretrained: bool = False,
) -> list[str]:
    """Registered model names matching any fnmatch ``filter`` and none of ``exclude_filters``.

    With ``pretrained=True`` the result lists ``arch.tag`` names of released weights instead of architectures.
    """
    names: Iterable[str] = list_pretrained() if pretrained else sorted(_entrypoints)
    includes, excludes = _as_list(filter), _as_list(exclude_filters)
    out = []
    for n in names:
        if includes and not any(fnmatch.fnmatchcase(n, f) or fnmatch.fnmatchcase(split_model_name(n)[0], f) for f in includes):
            continue
        if any(fnmatch.fnmatchcase(n, f) for f in excludes):
            continue
        out.append(n)
    return out


def list_pretrained(filter: str = "") -> list[str]:
    """``arch.tag`` names of every registered set of weights."""
    out = [c.name for arch in sorted(_pretrained) for c in _pretrained[arch].values()]
    return [n for n in out if not filter or fnmatch.fnmatchcase(n, filter)]


def is_model(name: str) -> bool:
    arch, tag = split_model_name(name)
    return arch in _entrypoints and (not tag or tag in _pretrained[arch])


def model_entrypoint(name: str) -> Callable[..., Any]:
    arch, _ = split_model_name(name)
    if arch not in _entrypoints:
        close = _close_names(arch)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {arch!r}.{hint} See dslm_zoo.list_models().")
    return _entrypoints[arch]


def get_pretrained_cfg(name: str) -> PretrainedCfg:
    """The cfg for ``arch.tag``; for a bare ``arch``, its default (first) tag with weights, else its plain cfg."""
    model_entrypoint(name)  # raises for unknown architectures
    arch, tag = split_model_name(name)
    tags = _pretrained[arch]
    if tag:
        if tag not in tags:
            known = ", ".join(repr(t) for t in tags) or "none"
            raise ValueError(f"unknown pretrained tag {tag!r} for {arch!r}; tags with weights: {known}")
        return tags[tag]
    if tags:
        return next(iter(tags.values()))
    return _default_cfgs[arch]


def get_architecture_cfg(name: str) -> PretrainedCfg:
    """The cfg of ``name``'s architecture without weights (preprocessing, tokenizer, classifier): what an untrained
    ``create_model(arch)`` carries, whatever releases the architecture has."""
    model_entrypoint(name)
    return _default_cfgs[split_model_name(name)[0]]
