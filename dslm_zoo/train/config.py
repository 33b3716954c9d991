"""Training recipes: one frozen dataclass per section, read from YAML or TOML, unknown keys are errors.

A recipe file has six sections (every one optional except ``model``, ``task`` and ``train.steps``)::

    model:    {name: dslm_bert_tiny, kwargs: {depth: 2}}
    task:     {name: masked_lm, kwargs: {mask_prob: 0.15}}
    data:     {name: toy_text, kwargs: {seq_len: 64}}
    optim:    {lr: 1.0e-3, weight_decay: 0.01, lr_rule: auto}
    schedule: {warmup_steps: 20, decay: cosine}
    train:    {steps: 200, batch_size: 32, precision: fp32, strategy: single, seed: 0}

``--set section.key=value`` (and ``section.kwargs.key=value``) overrides a key with the same checks; values are
parsed as YAML scalars (``1e-3``, ``true``, ``[0.9, 0.98]``).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["RecipeError", "Recipe", "ModelSection", "TaskSection", "DataSection", "OptimSection", "ScheduleSection",
           "TrainSection", "load_recipe", "apply_overrides", "recipe_diff"]


class RecipeError(ValueError):
    """A recipe (or an override) that cannot be used; the message names the key and the file."""


def _check_choice(section: str, key: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise RecipeError(f"{section}.{key} must be one of {list(choices)}, got {value!r}")


def _check_number(section: str, key: str, value: Any, *, lo: float | None = None, hi: float | None = None,
                  integer: bool = False, lo_open: bool = False) -> None:
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise RecipeError(f"{section}.{key} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise RecipeError(f"{section}.{key} must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise RecipeError(f"{section}.{key} must be <= {hi}, got {value!r}")


def _check_named(section: str, name: Any, kwargs: Any) -> None:
    """A section that names a registered thing (``name``) and passes it ``kwargs``."""
    if not isinstance(name, str) or not name:
        raise RecipeError(f"{section}.name must be a registered name, got {name!r}")
    if not isinstance(kwargs, Mapping):
        raise RecipeError(f"{section}.kwargs must be a mapping, got {kwargs!r}")


@dataclass(frozen=True)
class ModelSection:
    """A registered model name (``dslm_zoo.list_models()``) and keyword arguments of its config."""

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    pretrained: bool = False

    def __post_init__(self) -> None:
        _check_named("model", self.name, self.kwargs)
        if not isinstance(self.pretrained, bool):
            raise RecipeError(f"model.pretrained must be true or false, got {self.pretrained!r}")


@dataclass(frozen=True)
class TaskSection:
    """A registered task (``dslm_zoo.train.list_tasks()``) and its keyword arguments."""

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_named("task", self.name, self.kwargs)


@dataclass(frozen=True)
class DataSection:
    """The data set the task reads (``name``) and how (``kwargs``: sequence length, split names, ...)."""

    name: str = "toy_text"
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_named("data", self.name, self.kwargs)


@dataclass(frozen=True)
class OptimSection:
    """AdamW with timm-style groups (no weight decay on ``model.no_weight_decay()``) and the DSLM rate rule.

    ``lr_rule``: ``'auto'`` applies the DSLM rule to models initialised with ``'dslm'`` and nothing otherwise;
    ``'dslm'`` forces it, ``'none'`` turns it off (see :mod:`dslm_zoo.train.optim`).
    """

    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    lr_rule: str = "auto"
    clip_grad_norm: float | None = 1.0

    def __post_init__(self) -> None:
        _check_number("optim", "lr", self.lr, lo=0.0, lo_open=True)
        _check_number("optim", "weight_decay", self.weight_decay, lo=0.0)
        _check_number("optim", "eps", self.eps, lo=0.0, lo_open=True)
        if not (isinstance(self.betas, (tuple, list)) and len(self.betas) == 2):
            raise RecipeError(f"optim.betas must be two numbers, got {self.betas!r}")
        for b in self.betas:
            _check_number("optim", "betas", b, lo=0.0, hi=1.0)
        object.__setattr__(self, "betas", tuple(self.betas))
        _check_choice("optim", "lr_rule", self.lr_rule, ("auto", "dslm", "none"))
        if self.clip_grad_norm is not None:
            _check_number("optim", "clip_grad_norm", self.clip_grad_norm, lo=0.0, lo_open=True)


@dataclass(frozen=True)
class ScheduleSection:
    """Linear warmup from 0 over ``warmup_steps``, then ``decay`` to ``min_lr_ratio`` x lr at the last step."""

    warmup_steps: int = 0
    decay: str = "cosine"
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        _check_number("schedule", "warmup_steps", self.warmup_steps, lo=0, integer=True)
        _check_choice("schedule", "decay", self.decay, ("cosine", "linear", "constant"))
        _check_number("schedule", "min_lr_ratio", self.min_lr_ratio, lo=0.0, hi=1.0)


@dataclass(frozen=True)
class TrainSection:
    """Steps, batch, cadence, precision and parallelism.

    ``batch_size`` is the global batch (samples per optimizer step over all processes); ``micro_batch_size``
    (default: the whole per-process share) sets gradient accumulation. ``precision``: ``fp32``, ``bf16``
    (autocast, fp32 master weights; CPU and GPU) or ``fp16`` (autocast with a gradient scaler; GPU).
    ``strategy``: ``single``, ``ddp`` or ``fsdp2`` (under ``torchrun``; gloo on CPU, nccl on GPU).
    ``on_nonfinite``: ``stop`` (keep the last good checkpoint, exit non-zero) or ``skip`` (drop the step).
    ``average_last``: export the mean of the weights of the last N checkpoints (checkpoint averaging, as fairseq's
    ``average_checkpoints.py``), evaluated again before the export. ``bucket_batches``: N > 0 groups samples of
    similar length into batches (each run of N consecutive batches of an epoch's permutation is sorted by the
    task's sample lengths, cut into batches, and those batches shuffled), for tasks of variable-length samples
    (speech translation); 0 keeps plain random batches.
    """

    steps: int
    batch_size: int = 32
    micro_batch_size: int | None = None
    seed: int = 0
    precision: str = "fp32"
    strategy: str = "single"
    device: str = "auto"
    grad_checkpointing: bool = False
    compile: bool = False
    log_every: int = 1
    eval_every: int = 0
    eval_batches: int = 8
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    average_last: int = 1
    on_nonfinite: str = "stop"
    num_threads: int | None = None
    bucket_batches: int = 0

    def __post_init__(self) -> None:
        _check_number("train", "steps", self.steps, lo=1, integer=True)
        _check_number("train", "batch_size", self.batch_size, lo=1, integer=True)
        if self.micro_batch_size is not None:
            _check_number("train", "micro_batch_size", self.micro_batch_size, lo=1, integer=True)
        _check_number("train", "seed", self.seed, lo=0, integer=True)
        _check_choice("train", "precision", self.precision, ("fp32", "bf16", "fp16"))
        _check_choice("train", "strategy", self.strategy, ("single", "ddp", "fsdp2"))
        _check_choice("train", "device", self.device, ("auto", "cpu", "cuda"))
        for key in ("grad_checkpointing", "compile"):
            if not isinstance(getattr(self, key), bool):
                raise RecipeError(f"train.{key} must be true or false, got {getattr(self, key)!r}")
        for key in ("log_every", "eval_batches", "keep_checkpoints", "average_last"):
            _check_number("train", key, getattr(self, key), lo=1, integer=True)
        for key in ("eval_every", "checkpoint_every", "bucket_batches"):
            _check_number("train", key, getattr(self, key), lo=0, integer=True)
        _check_choice("train", "on_nonfinite", self.on_nonfinite, ("stop", "skip"))
        if self.average_last > 1:
            if self.keep_checkpoints < self.average_last:
                raise RecipeError(f"train.average_last={self.average_last} needs train.keep_checkpoints >= it, got "
                                  f"{self.keep_checkpoints}")
            if self.strategy == "fsdp2":
                raise RecipeError("train.average_last > 1 is not supported with strategy 'fsdp2' (sharded weights)")
        if self.num_threads is not None:
            _check_number("train", "num_threads", self.num_threads, lo=1, integer=True)


_SECTIONS: dict[str, type] = {
    "model": ModelSection,
    "task": TaskSection,
    "data": DataSection,
    "optim": OptimSection,
    "schedule": ScheduleSection,
    "train": TrainSection,
}
_REQUIRED = ("model", "task", "train")


@dataclass(frozen=True)
class Recipe:
    """A whole training recipe; ``source`` is the file it came from (for error messages and the run record)."""

    model: ModelSection
    task: TaskSection
    train: TrainSection
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    source: str = "<dict>"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "<dict>") -> "Recipe":
        """Build and check a recipe; every error names the offending key and ``source``."""
        if not isinstance(d, Mapping):
            raise RecipeError(f"{source}: a recipe is a mapping of sections {list(_SECTIONS)}, got {type(d).__name__}")
        unknown = [k for k in d if k not in _SECTIONS]
        if unknown:
            raise RecipeError(f"{source}: unknown section(s) {_hint(unknown, list(_SECTIONS))}")
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise RecipeError(f"{source}: missing section(s) {missing}")
        built: dict[str, Any] = {}
        for name, section_cls in _SECTIONS.items():
            if name not in d:
                continue
            body = d[name]
            if not isinstance(body, Mapping):
                raise RecipeError(f"{source}: section {name!r} must be a mapping, got {body!r}")
            names = [f.name for f in dataclasses.fields(section_cls)]
            bad = [k for k in body if k not in names]
            if bad:
                raise RecipeError(f"{source}: unknown key(s) in {name!r}: {_hint([f'{k}' for k in bad], names)}")
            try:
                built[name] = section_cls(**{k: _plain(v) for k, v in body.items()})
            except RecipeError as e:
                raise RecipeError(f"{source}: {e}") from None
            except TypeError as e:  # a required key is missing
                raise RecipeError(f"{source}: section {name!r}: {e}") from None
        return cls(**built, source=source)

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain JSON-able data (``source`` left out: it does not change the run)."""
        return {name: _jsonable(dataclasses.asdict(getattr(self, name))) for name in _SECTIONS}


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v, default=list))


def _hint(keys: Sequence[str], names: Sequence[str]) -> str:
    out = []
    for k in keys:
        close = difflib.get_close_matches(k.split(".")[-1], names, n=1)
        out.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ", ".join(out)


def _yaml_loader() -> type:
    """PyYAML's safe loader, also reading ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``; users write both)."""
    import re

    import yaml

    class RecipeLoader(yaml.SafeLoader):
        pass

    RecipeLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
                   r"|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
        list("-+0123456789."),
    )
    return RecipeLoader


def _yaml_load(text: str) -> Any:
    import yaml

    return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 (a SafeLoader subclass)


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RecipeError(f"recipe file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            data = _yaml_load(text)
        elif suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise RecipeError(f"{path}: recipes are .yaml, .yml, .toml or .json files")
    except RecipeError:
        raise
    except Exception as e:  # yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError
        raise RecipeError(f"{path}: not a valid {suffix[1:].upper()} file: {e}") from None
    return data if data is not None else {}


def _parse_value(text: str) -> Any:
    import yaml

    try:
        return _yaml_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(d: Mapping[str, Any], overrides: Sequence[str], source: str = "--set") -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to a recipe dict (a deep copy); keys are checked like the file's."""
    out = json.loads(json.dumps(d, default=list))
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"{source} {item!r}: expected section.key=value")
        key, _, raw = item.partition("=")
        parts = key.strip().split(".")
        if len(parts) < 2 or parts[0] not in _SECTIONS:
            raise RecipeError(f"{source} {item!r}: the key must start with a section, one of {list(_SECTIONS)}")
        section_cls = _SECTIONS[parts[0]]
        names = [f.name for f in dataclasses.fields(section_cls)]
        if parts[1] not in names:
            raise RecipeError(f"{source} {item!r}: unknown key in {parts[0]!r}: {_hint([parts[1]], names)}")
        if len(parts) > 2 and parts[1] != "kwargs":
            raise RecipeError(f"{source} {item!r}: only kwargs take nested keys")
        node = out.setdefault(parts[0], {})
        for p in parts[1:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise RecipeError(f"{source} {item!r}: {p!r} is not a mapping")
        node[parts[-1]] = _parse_value(raw)
    return out


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read a recipe file (YAML, TOML or JSON), apply ``--set`` overrides, check every key and value."""
    path = Path(path)
    d = _read_file(path)
    if overrides:
        d = apply_overrides(d, overrides, source=f"{path} --set")
    return Recipe.from_dict(d, source=str(path))


def recipe_diff(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved recipe dicts, with both values."""
    out: list[str] = []
    for k in sorted(set(a) | set(b)):
        key = f"{prefix}{k}"
        va, vb = a.get(k, "<unset>"), b.get(k, "<unset>")
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += recipe_diff(va, vb, key + ".")
        elif va != vb:
            out.append(f"{key}: {va!r} -> {vb!r}")
    return out
