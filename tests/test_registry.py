"""Registry and create_model dispatch: listing, filters, tags, duplicate and unknown names, argument checking.

Test-only models are registered under the prefix ``_test_reg_`` by the ``zoo`` fixture and removed from the
registry again on teardown, so they never leak into other tests' ``list_models()``. Every listing below is
filtered to that prefix, so the assertions hold whatever real model families are registered alongside.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from dslm_zoo import _builder, _registry
from dslm_zoo._builder import build_model_with_cfg, create_model
from dslm_zoo._config import ConfigBase
from dslm_zoo._registry import (
    PretrainedCfg,
    get_pretrained_cfg,
    is_model,
    list_models,
    list_pretrained,
    model_entrypoint,
    register_model,
    register_pretrained,
)
from dslm_zoo.models._base import ZooModel

PREFIX = "_test_reg_"


@dataclass(frozen=True)
class MlpConfig(ConfigBase):
    in_dim: int = 4
    width: int = 8
    num_classes: int = 2
    init: str = "normal"


class Mlp(ZooModel):
    config_class = MlpConfig

    def __init__(self, cfg: MlpConfig, *, device: Any = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.fc = nn.Linear(cfg.in_dim, cfg.width, device=device, dtype=dtype)
        self.head = nn.Linear(cfg.width, cfg.num_classes, device=device, dtype=dtype)
        self._post_init(device)

    def init_weights(self, scheme: str | None = None) -> dict[str, str]:
        if (scheme or self.cfg.init) == "skip":
            return {}
        with torch.no_grad():
            for p in self.parameters():
                nn.init.normal_(p, std=0.1)
        return {n: "normal(0.1)" for n, _ in self.named_parameters()}

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes


def _entrypoint(name: str, model_args: dict[str, Any]):
    def fn(pretrained: bool = False, **kwargs: Any) -> Mlp:
        return build_model_with_cfg(Mlp, name, pretrained, model_args, **kwargs)

    fn.__name__ = fn.__qualname__ = name
    return fn


def register_test_models() -> None:
    register_model(_entrypoint(PREFIX + "alpha", dict(width=8)))
    register_model(_entrypoint(PREFIX + "alpha_big", dict(width=32)))
    register_model(_entrypoint(PREFIX + "beta", dict(width=16, num_classes=5)))
    register_pretrained(PretrainedCfg(architecture=PREFIX + "alpha", tag="a1", hf_hub_id="dslm-test/alpha-a1", num_classes=10, classifier="head"))
    register_pretrained(PretrainedCfg(architecture=PREFIX + "alpha", tag="a2", hf_hub_id="dslm-test/alpha-a2"))


def unregister_test_models(prefix: str = PREFIX) -> None:
    """Remove every model whose name starts with ``prefix`` from the registry's tables."""
    for table in (_registry._entrypoints, _registry._model_to_module, _registry._pretrained, _registry._default_cfgs):
        for name in [n for n in table if n.startswith(prefix)]:
            del table[name]


def registry_snapshot() -> tuple[Any, ...]:
    return (
        dict(_registry._entrypoints),
        dict(_registry._model_to_module),
        {a: dict(t) for a, t in _registry._pretrained.items()},
        dict(_registry._default_cfgs),
    )


@pytest.fixture
def zoo():
    unregister_test_models()
    register_test_models()
    yield
    unregister_test_models()


@pytest.fixture(autouse=True)
def no_weight_lookups(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """These tests never need weights: any attempt to resolve a file is recorded and refused."""
    calls: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Path:
        calls.append((args, kwargs))
        raise AssertionError("weights resolution attempted")

    monkeypatch.setattr(_builder, "resolve_pretrained_file", refuse)
    return calls


# ------------------------------------------------------------------------------------------------ listing


def test_list_models_filters(zoo) -> None:
    assert list_models(PREFIX + "*") == [PREFIX + "alpha", PREFIX + "alpha_big", PREFIX + "beta"]
    assert list_models(PREFIX + "alpha*") == [PREFIX + "alpha", PREFIX + "alpha_big"]
    assert list_models([PREFIX + "beta", PREFIX + "alpha"]) == [PREFIX + "alpha", PREFIX + "beta"]
    assert list_models(PREFIX + "*", exclude_filters="*big") == [PREFIX + "alpha", PREFIX + "beta"]
    assert list_models(PREFIX + "*", exclude_filters=["*big", "*beta"]) == [PREFIX + "alpha"]
    assert list_models(PREFIX + "gamma*") == []
    assert set(list_models(PREFIX + "*")) <= set(list_models())


def test_list_pretrained(zoo) -> None:
    tags = [PREFIX + "alpha.a1", PREFIX + "alpha.a2"]
    assert list_models(PREFIX + "*", pretrained=True) == tags
    assert list_models(PREFIX + "alpha.a2", pretrained=True) == tags[1:]
    assert list_models(PREFIX + "*", exclude_filters="*.a1", pretrained=True) == tags[1:]
    assert list_pretrained(PREFIX + "*") == tags
    assert set(tags) <= set(list_pretrained())


def test_is_model(zoo) -> None:
    assert is_model(PREFIX + "alpha") and is_model(PREFIX + "alpha.a2") and is_model(PREFIX + "beta")
    assert not is_model(PREFIX + "alpha.zz")
    assert not is_model(PREFIX + "gamma")


def test_default_tag_is_first_with_weights(zoo) -> None:
    assert get_pretrained_cfg(PREFIX + "alpha").tag == "a1"
    assert get_pretrained_cfg(PREFIX + "alpha.a2").tag == "a2"
    assert get_pretrained_cfg(PREFIX + "beta") == PretrainedCfg(architecture=PREFIX + "beta")  # no weights
    # an untrained bare arch carries its architecture's cfg (the metadata describes the model it is attached to);
    # a named tag, or pretrained=True, carries that release's
    assert create_model(PREFIX + "alpha").pretrained_cfg.tag == ""
    assert create_model(PREFIX + "alpha.a2").pretrained_cfg.tag == "a2"


def test_fixture_teardown_leaves_no_test_models() -> None:
    register_test_models()
    unregister_test_models()
    assert list_models(PREFIX + "*") == [] and list_pretrained(PREFIX + "*") == []
    assert not any(n.startswith(PREFIX) for n in _registry._default_cfgs)


# ------------------------------------------------------------------------------------------------ errors


def test_duplicate_registration_raises(zoo) -> None:
    before = registry_snapshot()
    with pytest.raises(ValueError, match="already registered"):
        register_model(_entrypoint(PREFIX + "alpha", dict(width=99)))
    with pytest.raises(ValueError, match="already registered"):
        register_pretrained(PretrainedCfg(architecture=PREFIX + "alpha", tag="a1"))
    with pytest.raises(ValueError, match="unknown architecture"):
        register_pretrained(PretrainedCfg(architecture=PREFIX + "gamma", tag="x"))
    assert registry_snapshot() == before
    assert create_model(PREFIX + "alpha").cfg.width == 8  # the original entrypoint still answers


def test_unknown_architecture_suggests_close_names(zoo) -> None:
    with pytest.raises(ValueError) as e:
        create_model(PREFIX + "alpah")
    assert repr(PREFIX + "alpah") in str(e.value) and PREFIX + "alpha" in str(e.value)
    with pytest.raises(ValueError, match="list_models"):
        model_entrypoint("zzzzzzzzzzzzzzzz")
    with pytest.raises(ValueError):
        create_model("")


def test_unknown_tag_lists_existing_tags(zoo) -> None:
    with pytest.raises(ValueError) as e:
        create_model(PREFIX + "alpha.zz")
    msg = str(e.value)
    assert "'zz'" in msg and "'a1'" in msg and "'a2'" in msg
    with pytest.raises(ValueError, match="none"):
        create_model(PREFIX + "beta.zz")


def test_unknown_kwarg_raises_typeerror_and_changes_nothing(zoo, tmp_path: Path, no_weight_lookups: list) -> None:
    before = registry_snapshot()
    kwargs = {"widht": 3, "depth": 2}
    kept = copy.deepcopy(kwargs)
    cache = tmp_path / "cache"
    with pytest.raises(TypeError) as e:
        create_model(PREFIX + "alpha.a1", pretrained=True, cache_dir=cache, **kwargs)
    msg = str(e.value)
    assert "'widht'" in msg and "did you mean 'width'" in msg and "'depth'" in msg
    assert registry_snapshot() == before
    assert kwargs == kept
    assert no_weight_lookups == []  # raised before looking for any file
    assert not cache.exists()

    with pytest.raises(TypeError, match="bogus"):
        create_model(PREFIX + "alpha", pretrained_cfg_overlay={"bogus": 1})
    assert registry_snapshot() == before


# ------------------------------------------------------------------------------------------------ building


def test_kwargs_override_variant_args(zoo) -> None:
    assert create_model(PREFIX + "alpha_big").cfg.width == 32
    model = create_model(PREFIX + "alpha_big", width=12, in_dim=3)
    assert (model.cfg.width, model.cfg.in_dim) == (12, 3) and model.fc.weight.shape == (12, 3)
    direct = model_entrypoint(PREFIX + "alpha_big")(width=12, in_dim=3)
    assert direct.cfg == model.cfg


def test_num_classes_defaults_to_pretrained_cfg(zoo) -> None:
    assert create_model(PREFIX + "alpha.a1").num_classes == 10  # the weights define the head
    assert create_model(PREFIX + "alpha.a1", num_classes=4).num_classes == 4
    assert create_model(PREFIX + "alpha.a2").num_classes == 2  # no num_classes recorded: config default
    assert create_model(PREFIX + "beta").num_classes == 5  # variant args


def test_device_and_dtype_pass_through(zoo) -> None:
    model = create_model(PREFIX + "alpha", dtype=torch.float64)
    assert model.fc.weight.dtype == torch.float64 and model.fc.weight.std() > 0
    meta = create_model(PREFIX + "alpha", device="meta")
    assert meta.fc.weight.is_meta
    with pytest.raises(ValueError, match="dtype"):
        create_model(PREFIX + "alpha", dtype="float-ish")
    with pytest.raises(ValueError, match="meta device"):  # refused before any weights are looked for
        create_model(PREFIX + "alpha", pretrained=True, device="meta")


def test_pretrained_cfg_overlay_applies(zoo) -> None:
    model = create_model(PREFIX + "alpha.a2", pretrained_cfg_overlay={"license": "mit", "num_classes": 6})
    assert model.pretrained_cfg.license == "mit" and model.num_classes == 6
    assert get_pretrained_cfg(PREFIX + "alpha.a2").license == "apache-2.0"  # the registered cfg is untouched
