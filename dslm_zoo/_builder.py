"""Build models from registered entrypoints and load their weights (timm's ``_builder``/``create_model`` anatomy).

An entrypoint is a few lines::

    @register_model
    def dslm_bert_tiny(pretrained: bool = False, **kwargs) -> BertModel:
        return build_model_with_cfg(BertModel, "dslm_bert_tiny", pretrained, dict(depth=4, embed_dim=64), **kwargs)

:func:`build_model_with_cfg` does everything else: it merges the variant's arguments with the user's into the
family's frozen config (unknown keys fail before any work), resolves the pretrained cfg (``arch`` or
``arch.tag``, plus an overlay), finds and sha256-checks the weights (see :mod:`dslm_zoo._hub`), and loads them
strictly into a model built on the meta device (no wasted initialisation for very deep models). When the
requested ``num_classes`` differs from the weights', the classifier (``pretrained_cfg.classifier``) is dropped
from the checkpoint and initialised afresh; everything else still loads strictly.

:func:`create_model` dispatches ``arch[.tag]`` names to their entrypoints, and also takes ``hf-hub:org/name[@rev]``
and ``local-dir:/path`` names, which read ``config.json`` + ``model.safetensors`` written by ``save_pretrained``.
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple, TypeVar

import torch
from torch import nn

from ._hub import (
    CONFIG_NAME,
    _hf_offline,
    WeightsNotFoundError,
    read_model_config,
    resolve_pretrained_file,
    resolve_repo_file,
    split_repo_id,
)
from ._registry import (
    PretrainedCfg,
    get_architecture_cfg,
    get_pretrained_cfg,
    is_model,
    list_pretrained,
    model_entrypoint,
    split_model_name,
)

__all__ = [
    "IncompatibleKeys",
    "SOURCE_PREFIXES",
    "build_model_with_cfg",
    "create_model",
    "get_tokenizer",
    "resolve_config",
    "ResolvedConfig",
    "load_checkpoint",
    "load_state_dict",
    "load_state_dict_into",
]

_logger = logging.getLogger(__name__)

M = TypeVar("M", bound=nn.Module)

SOURCE_PREFIXES = ("hf-hub:", "local-dir:")
_SAFETENSORS_SUFFIXES = (".safetensors",)
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


class ResolvedConfig(NamedTuple):
    """The model class and frozen config a name resolves to (what :func:`resolve_config` returns)."""

    model_cls: type
    cfg: Any


_CONFIG_ONLY: ContextVar[bool] = ContextVar("dslm_zoo_config_only", default=False)


class IncompatibleKeys(NamedTuple):
    """Keys the model has but the checkpoint lacked, and keys the checkpoint had but the model lacks."""

    missing_keys: list[str]
    unexpected_keys: list[str]


# ------------------------------------------------------------------------------------------------ loading


def load_state_dict(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or (``weights_only=True``) ``.pt``/``.pth``/``.bin``/``.ckpt``.

    Pickle files may hold the raw state dict or ``{'state_dict': sd}`` / ``{'model': sd}``; a ``module.`` prefix
    left by DataParallel/DDP on every key is removed. Arbitrary pickled objects are refused by torch.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {str(path)!r}")
    suffix = path.suffix.lower()
    if suffix in _SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device=str(torch.device(device)))
        except Exception as e:  # SafetensorError, OSError, ...: a truncated or corrupted file
            raise ValueError(f"{str(path)!r} is not a readable safetensors file ({type(e).__name__}: {e}); "
                             "it may be truncated or corrupted: fetch it again") from None
    if suffix not in _PICKLE_SUFFIXES:
        raise ValueError(
            f"unsupported checkpoint format {suffix!r} for {str(path)!r}: use .safetensors, or .pt/.pth/.bin/.ckpt"
        )
    obj = torch.load(path, map_location=device, weights_only=True)
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        raise ValueError(
            f"{str(path)!r} does not hold a state dict (str -> tensor), nor {{'state_dict'|'model': state dict}}"
        )
    sd = dict(obj)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _alias_groups(model: nn.Module) -> list[list[str]]:
    """State-dict names that refer to one tensor object (tied weights), in groups of two or more."""
    groups: dict[int, list[str]] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(t), []).append(name)
    return [g for g in groups.values() if len(g) > 1]


def _format_keys(keys: Iterable[str], limit: int = 50) -> str:
    keys = sorted(keys)
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_dict_into(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    strict: bool = True,
    ignore_missing: Iterable[str] = (),
) -> IncompatibleKeys:
    """Load ``state_dict`` into ``model``; with ``strict``, any missing or unexpected key is a RuntimeError listing them.

    Tied weights may be stored under any one of their names (safetensors ``save_model`` keeps one): the other
    names are filled from it. ``ignore_missing`` names keys allowed to stay missing (a re-initialised head).
    Shape mismatches always raise (torch reports them).
    """
    sd = dict(state_dict)
    for group in _alias_groups(model):
        present = [n for n in group if n in sd]
        if present:
            for n in group:
                sd.setdefault(n, sd[present[0]])
    result = model.load_state_dict(sd, strict=False)
    allowed = set(ignore_missing)
    missing = sorted(k for k in result.missing_keys if k not in allowed)
    unexpected = sorted(result.unexpected_keys)
    if strict and (missing or unexpected):
        msg = f"error(s) loading state dict into {type(model).__name__}:"
        if missing:
            msg += f"\n  missing key(s) ({len(missing)}): {_format_keys(missing)}"
        if unexpected:
            msg += f"\n  unexpected key(s) ({len(unexpected)}): {_format_keys(unexpected)}"
        raise RuntimeError(msg)
    return IncompatibleKeys(missing, unexpected)


def load_checkpoint(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> IncompatibleKeys:
    """Load a ``.safetensors`` or (weights-only) ``.pt``/``.pth``/``.bin`` checkpoint into ``model``.

    Strict by default: missing/unexpected keys raise a RuntimeError listing them. Handles tied weights stored
    once (safetensors ``save_model``). Returns the (possibly empty) missing and unexpected keys.
    """
    return load_state_dict_into(model, load_state_dict(path), strict=strict)


# ------------------------------------------------------------------------------------------------ building


def _materialize(model: nn.Module, device: str | torch.device) -> None:
    """``to_empty`` a meta-device model, re-tying parameters/buffers that were one object before.

    ``to_empty`` allocates a fresh tensor per module slot, which silently unties shared weights.
    """
    shared: dict[int, list[tuple[str, str, str]]] = {}  # id(tensor) -> [(module name, slot, 'p'|'b')]
    for module_name, module in model.named_modules(remove_duplicate=False):
        for kind, slots in (("p", module._parameters), ("b", module._buffers)):
            for slot, t in slots.items():
                if t is not None:
                    shared.setdefault(id(t), []).append((module_name, slot, kind))
    model.to_empty(device=device)
    for refs in shared.values():
        if len(refs) < 2:
            continue
        src_name, src_slot, src_kind = refs[0]
        src = model.get_submodule(src_name)
        tensor = (src._parameters if src_kind == "p" else src._buffers)[src_slot]
        for module_name, slot, kind in refs[1:]:
            dst = model.get_submodule(module_name)
            (dst._parameters if kind == "p" else dst._buffers)[slot] = tensor


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _classifier_prefixes(cfg: PretrainedCfg) -> tuple[str, ...]:
    c: Any = cfg.classifier
    if not c:
        return ()
    return (c,) if isinstance(c, str) else tuple(c)


def _head_differs(probe: nn.Module, sd: Mapping[str, torch.Tensor], heads: tuple[str, ...]) -> bool:
    """Whether the checkpoint's classifier tensors differ in names or shapes from those of ``probe``."""
    mine = {k: tuple(v.shape) for k, v in probe.state_dict().items() if _under(k, heads)}
    theirs = {k: tuple(v.shape) for k, v in sd.items() if _under(k, heads)}
    return mine != theirs


def _as_dtype(dtype: torch.dtype | str | None) -> torch.dtype | str | None:
    """A torch.dtype from a dtype or its name; ``'auto'`` is kept (resolved from the weights file later)."""
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    d = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(d, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r} (use a torch.dtype, its name, or 'auto')")
    return d


_SAFETENSORS_FLOAT = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def _weights_float_dtype(path: Path | None) -> torch.dtype | None:
    """The one floating dtype of a .safetensors file's tensors (read from its header), else None."""
    if path is None or path.suffix.lower() not in _SAFETENSORS_SUFFIXES:
        return None
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    dtypes = {v["dtype"] for k, v in header.items() if k != "__metadata__" and v["dtype"].startswith(("F", "BF"))}
    return _SAFETENSORS_FLOAT.get(dtypes.pop()) if len(dtypes) == 1 else None


def _cfg_for(name: str, pretrained: bool) -> PretrainedCfg:
    """The cfg a build of registered ``name`` carries: a release's when it is asked for (``pretrained=True``: the
    named or default tag; an explicit tag even untrained), else the architecture's own (no weights)."""
    return get_pretrained_cfg(name) if (pretrained or split_model_name(name)[1]) else get_architecture_cfg(name)


def _resolve_pretrained_cfg(
    variant: str,
    pretrained_cfg: str | PretrainedCfg | Mapping[str, Any] | None,
    overlay: Mapping[str, Any] | None,
    pretrained: bool = False,
) -> tuple[PretrainedCfg, str | None]:
    """The pretrained cfg to use (``variant``'s unless one is given: its default weights' when ``pretrained``, else
    the architecture's own) with ``overlay`` applied, and overlay ``file``."""
    if pretrained_cfg is None:
        arch, tag = split_model_name(variant)
        try:
            cfg = _cfg_for(variant, pretrained)
        except ValueError:
            if tag:  # a known arch with an unknown tag: the registry's message lists the tags
                raise
            cfg = PretrainedCfg(architecture=arch)  # an unregistered variant built directly
    elif isinstance(pretrained_cfg, str):
        # timm.create_model('arch.tag') passes the tag alone (timm's pretrained_tag); a full 'arch.tag' works too
        tagged = "." in pretrained_cfg or is_model(pretrained_cfg)
        cfg = get_pretrained_cfg(pretrained_cfg if tagged else f"{split_model_name(variant)[0]}.{pretrained_cfg}")
    elif isinstance(pretrained_cfg, PretrainedCfg):
        cfg = pretrained_cfg
    elif isinstance(pretrained_cfg, Mapping):
        cfg = PretrainedCfg.from_dict(pretrained_cfg)
    else:
        raise TypeError(f"pretrained_cfg must be a name, PretrainedCfg or dict, got {type(pretrained_cfg).__name__}")
    ov = dict(overlay or {})
    file = ov.pop("file", None)
    return (cfg.replace(**ov) if ov else cfg), file


def build_model_with_cfg(
    model_cls: type[M],
    variant: str,
    pretrained: bool = False,
    model_args: Mapping[str, Any] | None = None,
    *,
    pretrained_cfg: str | PretrainedCfg | Mapping[str, Any] | None = None,
    pretrained_cfg_overlay: Mapping[str, Any] | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    **kwargs: Any,
) -> M:
    """Build ``model_cls`` for ``variant`` from ``model_args`` updated with ``kwargs``, optionally with weights.

    - Config: ``model_cls.config_class.from_kwargs(**{**model_args, **kwargs})``, with the pretrained cfg's
      ``model_args`` in between (a release's architecture: with ``pretrained=True`` or a named tag); an unknown key
      is a TypeError naming it, raised before any file is touched. ``num_classes`` defaults to the pretrained cfg's.
    - Pretrained cfg: ``pretrained_cfg`` (a name ``arch.tag``, a PretrainedCfg or its dict) or ``variant``'s
      default, then ``pretrained_cfg_overlay`` (its ``file`` key names an explicit weights file).
    - ``pretrained=True``: weights from ``checkpoint_path`` / overlay ``file`` / mirrors / HF cache (sha256-checked),
      loaded strictly into a model built on the meta device, materialised on ``device`` (default CPU) and given
      ``init_weights('skip')`` (non-persistent buffers only). If ``num_classes`` differs from the weights', the
      model is initialised in full and every checkpoint tensor except the classifier's is loaded strictly.
    - ``pretrained=False`` with ``checkpoint_path``: that file (no hash check) is loaded strictly, timm style.
    - ``dtype``: a torch.dtype or its name; ``'auto'`` takes the floating dtype of a .safetensors weights file
      (when all its floating tensors share one), else the default dtype.

    Sets ``model.pretrained_cfg``; after a head change its ``num_classes`` is the new one and ``label_names`` None.
    """
    pcfg, overlay_file = _resolve_pretrained_cfg(variant, pretrained_cfg, pretrained_cfg_overlay, bool(pretrained))
    # Released weights carry the arguments they were trained with (vocabulary, context, r_emb): a build for them
    # (pretrained=True, or a tag named explicitly) has their architecture; a bare untrained arch has the variant's.
    args = {**dict(model_args or {}), **dict(pcfg.model_args or {}), **kwargs}
    config_class = model_cls.config_class  # type: ignore[attr-defined]
    has_num_classes = "num_classes" in config_class.field_names()
    if has_num_classes and pcfg.num_classes is not None and "num_classes" not in kwargs:
        args["num_classes"] = pcfg.num_classes  # the weights define the head unless the user asks otherwise
    cfg = config_class.from_kwargs(**args)  # TypeError naming unknown keys, before any work
    if _CONFIG_ONLY.get():
        return ResolvedConfig(model_cls, cfg)  # type: ignore[return-value]  (resolve_config: no module is built)
    dtype = _as_dtype(dtype)

    weights_nc = pcfg.num_classes
    new_head = bool(pretrained) and has_num_classes and weights_nc is not None and cfg.num_classes != weights_nc
    heads = _classifier_prefixes(pcfg)
    if new_head and not heads:
        raise ValueError(
            f"cannot change num_classes of {pcfg.name!r} from {weights_nc} to {cfg.num_classes}: its pretrained cfg "
            "names no classifier (PretrainedCfg.classifier)"
        )

    target = torch.device(device if device is not None else "cpu")
    if (pretrained or checkpoint_path is not None) and target.type == "meta":
        raise ValueError("weights cannot be loaded onto the meta device: pass a real device, or pretrained=False")

    weights: Path | None = None
    if pretrained:
        weights = resolve_pretrained_file(pcfg, file=checkpoint_path or overlay_file, cache_dir=cache_dir)
    elif checkpoint_path is not None:
        weights = Path(checkpoint_path)
    if dtype == "auto":
        dtype = _weights_float_dtype(weights)

    sd = load_state_dict(weights) if weights is not None else None
    asked_head = (has_num_classes and "num_classes" in kwargs) or "head" in kwargs
    if sd is not None and not new_head and heads and asked_head:
        # weights without a recorded num_classes (a user's checkpoint), or another head type asked for (an MLM
        # encoder fine-tuned for QA): compare the head tensors themselves
        new_head = _head_differs(model_cls(cfg, device="meta", dtype=dtype), sd, heads)  # type: ignore[call-arg]
    if sd is None:
        model = model_cls(cfg, device=device, dtype=dtype)  # type: ignore[call-arg]
    elif new_head:
        # Full init gives the new head its scheme's initialisation; all other tensors are overwritten strictly.
        model = model_cls(cfg, device=device, dtype=dtype)  # type: ignore[call-arg]
        dropped = sorted(k for k in sd if _under(k, heads))
        head_keys = [k for k in model.state_dict() if _under(k, heads)]
        load_state_dict_into(model, {k: v for k, v in sd.items() if k not in dropped}, strict=True, ignore_missing=head_keys)
        what = f"head={cfg.head!r}" if getattr(cfg, "head", None) not in (None, "cls") else f"num_classes={cfg.num_classes}"
        warnings.warn(
            f"{pcfg.name}: classifier re-initialised for {what}; dropped from the checkpoint: "
            f"{_format_keys(dropped) or '(no classifier tensors)'}; every other tensor loaded strictly",
            stacklevel=3,
        )
        pcfg = pcfg.replace(num_classes=cfg.num_classes, label_names=None)
    else:
        model = model_cls(cfg, device="meta", dtype=dtype)  # type: ignore[call-arg]
        _materialize(model, target)
        model.init_weights("skip")  # type: ignore[operator]
        load_state_dict_into(model, sd, strict=True)
    if weights is not None:
        _logger.info("loaded weights for %s from %s", pcfg.name, weights)
    model.pretrained_cfg = pcfg  # type: ignore[assignment]
    return model


# ------------------------------------------------------------------------------------------------ create_model


def _create_from_source(
    model_name: str,
    pretrained: bool,
    checkpoint_path: str | os.PathLike | None,
    pretrained_cfg_overlay: Mapping[str, Any] | None,
    cache_dir: str | os.PathLike | None,
    kwargs: dict[str, Any],
) -> nn.Module:
    overlay = dict(pretrained_cfg_overlay or {})
    if model_name.startswith("local-dir:"):
        directory = Path(model_name[len("local-dir:"):]).expanduser()
        if not directory.is_dir():
            raise FileNotFoundError(f"{model_name!r}: no such directory {str(directory)!r}")
        config = read_model_config(directory / CONFIG_NAME)
        source = f"{str(directory)!r}"
    else:
        repo = model_name[len("hf-hub:"):]
        split_repo_id(repo)  # ValueError on a malformed id
        looked: list[str] = []
        path = resolve_repo_file(repo, CONFIG_NAME, cache_dir=cache_dir, looked=looked)
        if path is None:
            places = "\n".join(f"  {i}. {p}" for i, p in enumerate(looked, 1))
            raise WeightsNotFoundError(
                f"{model_name!r}: {CONFIG_NAME} not found. Looked in:\n{places}\n"
                f"Put the repo (config.json + model.safetensors) in a mirror ($DSLM_ZOO_HUB/{split_repo_id(repo)[0]}/), "
                f"download it once online into the HF cache (cache_dir= or HF_HUB_CACHE), or use "
                f"'local-dir:/path' for a saved directory."
                + (" HF_HUB_OFFLINE=1 is set: unset it if the hub is reachable." if _hf_offline() else "")
            )
        config = read_model_config(path)
        source = f"hub repo {repo!r}"

    arch = config["architecture"]
    entry = model_entrypoint(arch)  # ValueError with close names if this install lacks the architecture
    try:
        pcfg = PretrainedCfg.from_dict(config["pretrained_cfg"])
    except TypeError as e:
        raise ValueError(f"{source}: bad pretrained_cfg in {CONFIG_NAME}: {e}") from None
    if pcfg.architecture != arch:
        raise ValueError(f"{source}: {CONFIG_NAME} architecture {arch!r} != pretrained_cfg.architecture {pcfg.architecture!r}")
    if model_name.startswith("hf-hub:"):
        pcfg = pcfg.replace(hf_hub_id=model_name[len("hf-hub:"):])  # weights come from the same repo and revision
    elif pretrained and checkpoint_path is None and "file" not in overlay:
        weights = directory / pcfg.filename
        if not weights.is_file():
            raise WeightsNotFoundError(
                f"{model_name!r}: {str(directory)!r} holds {CONFIG_NAME} but not its weights file {pcfg.filename!r}; "
                f"save the model there with save_pretrained, or pass pretrained=False to build it untrained"
            )
        overlay["file"] = str(weights)
    extra: dict[str, Any] = {}
    if checkpoint_path is not None:
        extra["checkpoint_path"] = checkpoint_path
    if cache_dir is not None:
        extra["cache_dir"] = cache_dir
    kwargs = {"dtype": "auto", **kwargs}  # a saved bf16 model comes back as bf16: the round trip is exact
    return entry(
        pretrained=pretrained,
        pretrained_cfg=pcfg,
        pretrained_cfg_overlay=overlay,
        **extra,
        **{**config["model_args"], **kwargs},
    )


def create_model(
    model_name: str,
    pretrained: bool | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    pretrained_cfg_overlay: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Create a model by name: ``arch``, ``arch.tag``, ``hf-hub:org/name[@revision]`` or ``local-dir:/path``.

    Args:
        model_name: a registered architecture, optionally with a weights tag (unknown names raise ValueError
            suggesting close ones; unknown tags list the existing ones), or a source prefix followed by a hub repo
            or a directory written by ``save_pretrained`` (config.json + model.safetensors).
        pretrained: load released weights. Defaults to False for registered names and True for source names
            (``pretrained=False`` there builds the architecture from config.json with fresh initialisation).
        checkpoint_path: with ``pretrained=True`` the weights file to use instead of searching (its sha256 is still
            checked against the pretrained cfg); with ``pretrained=False`` a checkpoint loaded strictly, unchecked.
        pretrained_cfg_overlay: fields replacing the pretrained cfg's (``file`` = explicit weights file,
            ``sha256=None`` to accept a file with another hash).
        cache_dir: Hugging Face cache directory (default ``$HF_HUB_CACHE``).
        **kwargs: model config fields (``num_classes``, ``depth``, ...) plus ``device`` and ``dtype``
            (``dtype`` defaults to ``'auto'``, the weights file's dtype, for source names; else the default dtype).
    """
    if not isinstance(model_name, str) or not model_name:
        raise ValueError(f"model_name must be a non-empty string, got {model_name!r}")
    if model_name.startswith(SOURCE_PREFIXES):
        return _create_from_source(
            model_name,
            True if pretrained is None else bool(pretrained),
            checkpoint_path,
            pretrained_cfg_overlay,
            cache_dir,
            kwargs,
        )
    entry = model_entrypoint(model_name)  # ValueError with close names
    kwargs.setdefault("pretrained_cfg", _cfg_for(model_name, bool(pretrained)))  # ValueError listing the tags
    if pretrained_cfg_overlay is not None:
        kwargs["pretrained_cfg_overlay"] = pretrained_cfg_overlay
    if checkpoint_path is not None:
        kwargs["checkpoint_path"] = checkpoint_path
    if cache_dir is not None:
        kwargs["cache_dir"] = cache_dir
    return entry(pretrained=bool(pretrained), **kwargs)


def get_tokenizer(model_name: str, *, cache_dir: str | os.PathLike | None = None) -> Any:
    """The Hugging Face ``tokenizers.Tokenizer`` a text model was trained with, from beside its weights.

    ``model_name`` is ``arch[.tag]`` (the released weights' ``pretrained_cfg.tokenizer`` file, found where the
    weights are: mirrors, then the HF cache/hub), ``hf-hub:org/name[@rev]`` or ``local-dir:/path`` (its
    ``tokenizer.json``). Raises ValueError for a model released without one, WeightsNotFoundError when the file
    is nowhere (listing where it looked).
    """
    from tokenizers import Tokenizer

    looked: list[str] = []
    filename = "tokenizer.json"
    if model_name.startswith("local-dir:"):
        path: Path | None = Path(model_name[len("local-dir:"):]).expanduser() / filename
        if not path.is_file():
            raise WeightsNotFoundError(f"{model_name!r}: no {filename} at {str(path)!r}")
    else:
        if model_name.startswith("hf-hub:"):
            repo = model_name[len("hf-hub:"):]
        else:
            cfg = get_pretrained_cfg(model_name)
            if not cfg.tokenizer or not cfg.hf_hub_id:
                raise ValueError(f"{cfg.name!r} has no released tokenizer (pretrained_cfg.tokenizer is {cfg.tokenizer!r}); "
                                 f"released text models: {[n for n in list_pretrained() if get_pretrained_cfg(n).tokenizer]}")
            repo, filename = cfg.hf_hub_id, cfg.tokenizer
        path = resolve_repo_file(repo, filename, cache_dir=cache_dir, looked=looked)
        if path is None:
            places = "\n".join(f"  {i}. {p}" for i, p in enumerate(looked, 1))
            raise WeightsNotFoundError(f"{model_name!r}: {filename} not found. Looked in:\n{places}")
    return Tokenizer.from_file(str(path))


def resolve_config(model_name: str, **kwargs: Any) -> ResolvedConfig:
    """The model class and frozen config ``create_model(model_name, **kwargs)`` would build, without building it
    (the variant's arguments merged with ``kwargs`` and checked; no module, no weights). Milliseconds for any depth."""
    token = _CONFIG_ONLY.set(True)
    try:
        out = create_model(model_name, **kwargs)
    finally:
        _CONFIG_ONLY.reset(token)
    if not isinstance(out, ResolvedConfig):  # an entrypoint that does not go through build_model_with_cfg
        raise TypeError(f"{model_name!r}: its entrypoint built a {type(out).__name__} instead of resolving its config")
    return out
