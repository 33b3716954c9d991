"""Weight resolution, loading, saving and publishing (dslm_zoo._builder and dslm_zoo._hub).

Test-only models are registered under the prefix ``_test_hub_`` by the ``zoo`` fixture and removed from the
registry again on teardown (``unregister_test_models``), so they never leak into other tests' ``list_models()``.
No test touches the network: in-process tests replace ``huggingface_hub.hf_hub_download`` with a stub that
refuses, and the Hugging Face cache tests run in a subprocess with ``HF_HUB_OFFLINE=1`` and a cache they build.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file, save_model
from torch import nn

from dslm_zoo import _registry
from dslm_zoo._builder import build_model_with_cfg, create_model, load_checkpoint
from dslm_zoo._config import ConfigBase
from dslm_zoo._hub import (
    REPO_MIRROR,
    ChecksumMismatchError,
    WeightsNotFoundError,
    atomic_path,
    atomic_write,
    push_to_hub,
    render_model_card,
    save_pretrained,
    sha256_file,
)
from dslm_zoo._registry import PretrainedCfg, register_model, register_pretrained
from dslm_zoo.models._base import ZooModel

REPO_ROOT = Path(__file__).resolve().parent.parent
PREFIX = "_test_hub_"
ARCH = PREFIX + "tiny"
HUB_V1 = "dslm-test/tiny-v1"


# ------------------------------------------------------------------------------------------ test-only model


@dataclass(frozen=True)
class TinyConfig(ConfigBase):
    vocab_size: int = 11
    embed_dim: int = 8
    hidden: tuple[int, ...] = (8, 8)
    num_classes: int = 3
    tie_embeddings: bool = True
    init: str = "normal"


class TinyNet(ZooModel):
    """Embedding tied to an LM head, a couple of Linear layers, a classifier, and both kinds of buffer."""

    config_class = TinyConfig

    def __init__(self, cfg: TinyConfig, *, device: Any = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        fk = {"device": device, "dtype": dtype}
        dims = (cfg.embed_dim, *cfg.hidden)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim, **fk)
        self.blocks = nn.ModuleList(nn.Linear(a, b, **fk) for a, b in zip(dims[:-1], dims[1:]))
        self.lm_head = nn.Linear(dims[-1], cfg.vocab_size, bias=False, **fk)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.head: nn.Module = nn.Linear(dims[-1], cfg.num_classes, **fk) if cfg.num_classes else nn.Identity()
        self.register_buffer("steps", torch.zeros((), dtype=torch.long, device=device))  # persistent
        self.register_buffer("scale", torch.empty((), device=device, dtype=dtype), persistent=False)
        self._post_init(device)

    def init_weights(self, scheme: str | None = None) -> dict[str, str]:
        scheme = scheme or self.cfg.init
        with torch.no_grad():
            self.scale.fill_(0.5)  # stands in for buffers derived from the config (position tables, slopes)
            if scheme == "skip":
                return {}
            if scheme != "normal":
                raise ValueError(f"unknown init scheme {scheme!r}")
            rules = {}
            for name, p in self.named_parameters():
                nn.init.normal_(p, std=0.5)
                rules[name] = "normal(0.5)"
            return rules

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    def reset_classifier(self, num_classes: int) -> None:
        self.cfg = self.cfg.replace(num_classes=num_classes)
        self.head = nn.Linear(self.cfg.hidden[-1], num_classes) if num_classes else nn.Identity()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for blk in self.blocks:
            x = torch.relu(blk(x)) * self.scale
        return self.head(x.mean(1))


def _entrypoint(name: str, model_args: dict[str, Any]):
    def fn(pretrained: bool = False, **kwargs: Any) -> TinyNet:
        return build_model_with_cfg(TinyNet, name, pretrained, model_args, **kwargs)

    fn.__name__ = fn.__qualname__ = name
    return fn


def register_test_models(sha256: str | None) -> None:
    """Register ``_test_hub_tiny`` and its tags; ``sha256`` is the hash of the reference weights."""
    register_model(_entrypoint(ARCH, dict(embed_dim=8, hidden=(8, 8))))
    common = dict(architecture=ARCH, sha256=sha256, num_classes=3, label_names=("a", "b", "c"))
    register_pretrained(PretrainedCfg(tag="v1", hf_hub_id=HUB_V1, classifier="head", **common))
    register_pretrained(PretrainedCfg(tag="nohead", hf_hub_id=HUB_V1, **common))
    register_pretrained(PretrainedCfg(tag="missing", hf_hub_id="dslm-test/not-anywhere", classifier="head", **common))


def unregister_test_models(prefix: str = PREFIX) -> None:
    """Remove every model whose name starts with ``prefix`` from the registry's tables."""
    for table in (_registry._entrypoints, _registry._model_to_module, _registry._pretrained, _registry._default_cfgs):
        for name in [n for n in table if n.startswith(prefix)]:
            del table[name]


class Reference(NamedTuple):
    path: Path  # model.safetensors written by safetensors.save_model
    sha256: str
    state_dict: dict[str, torch.Tensor]  # every key, tied names included


def make_reference(directory: Path) -> Reference:
    torch.manual_seed(0)
    model = TinyNet(TinyConfig())
    with torch.no_grad():
        model.steps.fill_(42)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.safetensors"
    save_model(model, str(path))
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return Reference(path, sha256_file(path), sd)


def assert_state_equal(model: nn.Module, sd: dict[str, torch.Tensor], skip: tuple[str, ...] = ()) -> None:
    msd = model.state_dict()
    assert sorted(msd) == sorted(sd)
    for k, v in sd.items():
        if k.split(".")[0] in skip:
            continue
        assert msd[k].dtype == v.dtype, k
        assert torch.equal(msd[k], v), k


def build_hf_cache(cache: Path, repo_id: str, files: dict[str, Path], revision: str) -> None:
    """Lay files out as huggingface_hub does: models--ORG--NAME/{refs/main, snapshots/REV/*, blobs/*}."""
    org, name = repo_id.split("/")
    repo = cache / f"models--{org}--{name}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snap = repo / "snapshots" / revision
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for filename, src in files.items():
        blob = repo / "blobs" / sha256_file(src)
        shutil.copyfile(src, blob)
        (snap / filename).symlink_to(os.path.relpath(blob, snap))


# ------------------------------------------------------------------------------------------------ fixtures


class HubCalls(list):
    """Records calls to the stubbed ``hf_hub_download``."""


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> HubCalls:
    """Any in-process hub download is recorded and refused the way an offline cache miss is."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    calls = HubCalls()

    def refuse(*args: Any, **kwargs: Any) -> str:
        calls.append(kwargs)
        raise LocalEntryNotFoundError("network disabled in tests, and the file is not in the cache")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.delenv("DSLM_ZOO_HUB", raising=False)
    return calls


@pytest.fixture
def zoo(tmp_path: Path):
    ref = make_reference(tmp_path / "ref")
    unregister_test_models()
    register_test_models(ref.sha256)
    yield ref
    unregister_test_models()


# ------------------------------------------------------------------------------------------------ loading


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    p = tmp_path / "x.bin"
    p.write_bytes(os.urandom(3 << 20))
    assert sha256_file(p) == hashlib.sha256(p.read_bytes()).hexdigest()


def test_explicit_file_loads_on_meta_with_skip_init(zoo: Reference, no_network: HubCalls, monkeypatch) -> None:
    schemes: list[str | None] = []
    original = TinyNet.init_weights
    monkeypatch.setattr(TinyNet, "init_weights", lambda self, s=None: schemes.append(s) or original(self, s))

    model = create_model(ARCH + ".v1", pretrained=True, checkpoint_path=zoo.path)
    assert schemes == ["skip"]  # built on meta: no initialisation spent on weights that get overwritten
    assert_state_equal(model, zoo.state_dict)
    assert model.lm_head.weight is model.embed.weight  # ties survive to_empty
    assert model.scale.item() == 0.5  # non-persistent buffer recomputed by init_weights('skip')
    assert model.pretrained_cfg == _registry.get_pretrained_cfg(ARCH + ".v1")
    assert not no_network

    via_overlay = create_model(ARCH + ".v1", pretrained=True, pretrained_cfg_overlay={"file": str(zoo.path)})
    assert_state_equal(via_overlay, zoo.state_dict)


def test_explicit_file_dtype(zoo: Reference) -> None:
    model = create_model(ARCH + ".v1", pretrained=True, checkpoint_path=zoo.path, dtype="bfloat16")
    assert model.embed.weight.dtype == torch.bfloat16
    assert torch.equal(model.blocks[0].weight, zoo.state_dict["blocks.0.weight"].to(torch.bfloat16))


def test_missing_explicit_file_is_clear(zoo: Reference, tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        create_model(ARCH + ".v1", pretrained=True, checkpoint_path=tmp_path / "nope.safetensors")


def test_sha256_mismatch_refused(zoo: Reference, tmp_path: Path) -> None:
    wrong = "0" * 64
    with pytest.raises(ChecksumMismatchError) as e:
        create_model(ARCH + ".v1", pretrained=True, checkpoint_path=zoo.path, pretrained_cfg_overlay={"sha256": wrong})
    assert wrong in str(e.value) and zoo.sha256 in str(e.value)

    corrupt = tmp_path / "corrupt.safetensors"
    data = bytearray(zoo.path.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last tensor: still a valid safetensors file
    corrupt.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError) as e:
        create_model(ARCH + ".v1", pretrained=True, checkpoint_path=corrupt)
    assert zoo.sha256 in str(e.value) and sha256_file(corrupt) in str(e.value)

    # A file the user vouches for is accepted when the recorded hash is cleared.
    model = create_model(ARCH + ".v1", pretrained=True, checkpoint_path=corrupt, pretrained_cfg_overlay={"sha256": None})
    assert model.pretrained_cfg.sha256 is None


class _Payload:  # any non-tensor object: weights_only unpickling must refuse it
    def __init__(self) -> None:
        self.x = 1


@pytest.mark.parametrize("wrap", ["raw", "state_dict", "model", "module_prefix"])
def test_pt_checkpoints_load_weights_only(zoo: Reference, tmp_path: Path, wrap: str) -> None:
    sd = {k: v for k, v in zoo.state_dict.items() if k != "lm_head.weight"}  # tied name may be absent
    obj: Any = {
        "raw": sd,
        "state_dict": {"state_dict": sd, "epoch": 3},
        "model": {"model": sd, "optimizer": {}},
        "module_prefix": {"module." + k: v for k, v in sd.items()},
    }[wrap]
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)
    model = create_model(ARCH, num_classes=3)
    assert load_checkpoint(model, path) == ([], [])
    assert_state_equal(model, zoo.state_dict)

    # timm semantics: pretrained=False + checkpoint_path loads that file strictly (no hash check).
    assert_state_equal(create_model(ARCH, checkpoint_path=path), zoo.state_dict)


def test_pt_with_arbitrary_objects_refused(zoo: Reference, tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": dict(zoo.state_dict), "payload": _Payload()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(create_model(ARCH), path)


def test_unsupported_checkpoint_format(zoo: Reference, tmp_path: Path) -> None:
    path = tmp_path / "weights.npz"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"\.npz"):
        load_checkpoint(create_model(ARCH), path)


def test_strict_loading_lists_missing_and_unexpected(zoo: Reference, tmp_path: Path) -> None:
    sd = {k: v for k, v in zoo.state_dict.items() if k not in ("blocks.1.bias", "lm_head.weight")}
    sd["bogus.weight"] = torch.zeros(2)
    path = tmp_path / "bad.safetensors"
    save_file(sd, str(path))
    with pytest.raises(RuntimeError) as e:
        create_model(ARCH + ".v1", pretrained=True, checkpoint_path=path, pretrained_cfg_overlay={"sha256": None})
    assert "'blocks.1.bias'" in str(e.value) and "'bogus.weight'" in str(e.value)
    assert "lm_head" not in str(e.value)  # a tied name is filled from its twin, never reported

    model = create_model(ARCH)
    missing, unexpected = load_checkpoint(model, path, strict=False)
    assert missing == ["blocks.1.bias"] and unexpected == ["bogus.weight"]


def test_shape_mismatch_raises(zoo: Reference, tmp_path: Path) -> None:
    sd = dict(zoo.state_dict)
    sd["blocks.0.weight"] = torch.zeros(4, 4)
    path = tmp_path / "shape.safetensors"
    save_model_sd = {k: v for k, v in sd.items() if k != "lm_head.weight"}
    save_file(save_model_sd, str(path))
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_checkpoint(create_model(ARCH), path)


def test_num_classes_change_reinitialises_head_only(zoo: Reference, monkeypatch) -> None:
    model = create_model(ARCH + ".v1", pretrained=True, checkpoint_path=zoo.path, num_classes=7)
    assert model.head.weight.shape == (7, 8)
    assert_state_equal_except_head(model, zoo.state_dict)
    assert model.head.weight.std() > 0.1  # the scheme's init (std 0.5), not zeros or leftovers
    assert model.lm_head.weight is model.embed.weight
    assert model.pretrained_cfg.num_classes == 7 and model.pretrained_cfg.label_names is None

    headless = create_model(ARCH + ".v1", pretrained=True, checkpoint_path=zoo.path, num_classes=0)
    assert isinstance(headless.head, nn.Identity)
    assert_state_equal_except_head(headless, zoo.state_dict)

    # Unchanged num_classes loads the head too; the default comes from the pretrained cfg.
    same = create_model(ARCH + ".v1", pretrained=True, checkpoint_path=zoo.path)
    assert same.num_classes == 3 and torch.equal(same.head.weight, zoo.state_dict["head.weight"])

    with pytest.raises(ValueError, match="classifier"):
        create_model(ARCH + ".nohead", pretrained=True, checkpoint_path=zoo.path, num_classes=7)


def assert_state_equal_except_head(model: nn.Module, sd: dict[str, torch.Tensor]) -> None:
    msd = model.state_dict()
    body = {k for k in sd if not k.startswith("head.")}
    assert body == {k for k in msd if not k.startswith("head.")}
    for k in body:
        assert torch.equal(msd[k], sd[k]), k


# ----------------------------------------------------------------------------------- save / local-dir


def _trained_model(zoo: Reference, dtype: torch.dtype | None = None) -> TinyNet:
    model = create_model(ARCH + ".v1", pretrained=True, checkpoint_path=zoo.path, dtype=dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))  # no longer the registered weights
        model.steps.fill_(7)
    return model


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_local_dir_round_trip_bit_exact(zoo: Reference, tmp_path: Path, dtype) -> None:
    model = _trained_model(zoo, dtype)
    model.pretrained_cfg = model.pretrained_cfg.replace(metrics={"glue/sst2": {"accuracy": 0.91}}, recipe="make train")
    out = save_pretrained(model, tmp_path / "saved")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]

    config = json.loads((out / "config.json").read_text())
    assert set(config) == {"architecture", "model_args", "pretrained_cfg"}
    assert config["architecture"] == ARCH
    assert config["model_args"] == json.loads(json.dumps(model.cfg.to_dict()))
    pcfg = config["pretrained_cfg"]
    assert pcfg["sha256"] == sha256_file(out / "model.safetensors") != zoo.sha256
    assert pcfg["num_params"] == sum(p.numel() for p in model.parameters())
    assert pcfg["num_classes"] == 3 and pcfg["tag"] == "v1"

    card = (out / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["library_name"] == "dslm_zoo" and header["license"] == "apache-2.0"
    assert ARCH in header["tags"] and header["datasets"] == ["glue/sst2"] and header["metrics"] == ["accuracy"]
    assert "arXiv:2403.09635" in card and "| glue/sst2 | accuracy | 0.91 |" in card and "make train" in card

    loaded = create_model("local-dir:" + str(out))
    assert_state_equal(loaded, model.state_dict())
    assert loaded.cfg == model.cfg  # tuples restored from JSON lists
    assert loaded.lm_head.weight is loaded.embed.weight
    assert loaded.pretrained_cfg.sha256 == pcfg["sha256"]
    assert loaded.pretrained_cfg.metrics == {"glue/sst2": {"accuracy": 0.91}}

    # pretrained=False takes only the architecture; kwargs still override config.json.
    fresh = create_model("local-dir:" + str(out), pretrained=False)
    assert fresh.cfg == model.cfg and not torch.equal(fresh.blocks[0].weight, loaded.blocks[0].weight)
    seven = create_model("local-dir:" + str(out), num_classes=7)
    assert seven.head.weight.shape[0] == 7 and torch.equal(seven.blocks[0].weight, loaded.blocks[0].weight)


def test_local_dir_detects_tampered_weights(zoo: Reference, tmp_path: Path) -> None:
    out = save_pretrained(_trained_model(zoo), tmp_path / "saved")
    other = save_pretrained(_trained_model(zoo), tmp_path / "other")
    shutil.copyfile(other / "model.safetensors", out / "model.safetensors")
    with pytest.raises(ChecksumMismatchError):
        create_model("local-dir:" + str(out))


def test_local_dir_bad_input(zoo: Reference, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such directory"):
        create_model("local-dir:" + str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        create_model("local-dir:" + str(tmp_path / "empty"))

    out = save_pretrained(_trained_model(zoo), tmp_path / "saved")
    config = json.loads((out / "config.json").read_text())
    config["architecture"] = config["pretrained_cfg"]["architecture"] = ARCH + "y"
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"Did you mean: {ARCH}"):
        create_model("local-dir:" + str(out))

    (out / "config.json").write_text(json.dumps({"architecture": ARCH}))
    with pytest.raises(ValueError, match="model_args"):
        create_model("local-dir:" + str(out))

    out2 = save_pretrained(_trained_model(zoo), tmp_path / "saved2")
    with pytest.raises(TypeError, match="bogus"):
        create_model("local-dir:" + str(out2), bogus=1)


def test_save_pretrained_needs_a_zoo_model(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="pretrained_cfg"):
        save_pretrained(nn.Linear(2, 2), tmp_path / "x")
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------------- mirrors / offline


def test_mirror_resolution(zoo: Reference, tmp_path: Path, monkeypatch, no_network: HubCalls) -> None:
    mirror = tmp_path / "mirror"
    (mirror / HUB_V1).mkdir(parents=True)
    shutil.copyfile(zoo.path, mirror / HUB_V1 / "model.safetensors")
    saved = _trained_model(zoo)
    save_pretrained(saved, mirror / "dslm-test" / "tiny-saved")
    monkeypatch.setenv("DSLM_ZOO_HUB", os.pathsep.join([str(tmp_path / "empty-root"), str(mirror)]))

    assert_state_equal(create_model(ARCH + ".v1", pretrained=True), zoo.state_dict)
    loaded = create_model("hf-hub:dslm-test/tiny-saved")
    assert_state_equal(loaded, saved.state_dict())
    assert loaded.pretrained_cfg.hf_hub_id == "dslm-test/tiny-saved"
    assert not no_network  # the mirror answered; the hub was never asked


def test_nothing_local_offline_error_lists_every_place(zoo: Reference, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DSLM_ZOO_HUB", str(tmp_path / "mirror"))
    cache = tmp_path / "cache"
    with pytest.raises(WeightsNotFoundError) as e:
        create_model(ARCH + ".missing", pretrained=True, cache_dir=cache)
    msg = str(e.value)
    for needle in (
        str(tmp_path / "mirror" / "dslm-test" / "not-anywhere" / "model.safetensors"),
        str(REPO_MIRROR / "dslm-test" / "not-anywhere" / "model.safetensors"),
        str(cache),
        "LocalEntryNotFoundError",
        "checkpoint_path=",
        "DSLM_ZOO_HUB",
        "cache_dir=",
        "HF_HUB_OFFLINE",
    ):
        assert needle in msg, needle
    assert not cache.exists()


_SUBPROCESS = textwrap.dedent(
    """
    import importlib.util, json, sys
    spec = importlib.util.spec_from_file_location("dslm_zoo_test_hub", sys.argv[1])
    mod = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    print(json.dumps(mod.offline_scenarios(*sys.argv[2:])))
    """
)


def offline_scenarios(sha256: str, ref_path: str, saved_dir: str, revision: str) -> dict[str, Any]:
    """Run in a fresh interpreter whose huggingface_hub was imported with HF_HUB_OFFLINE=1 and a test cache."""
    from huggingface_hub import constants

    from dslm_zoo._builder import create_model as create

    register_test_models(sha256)
    out: dict[str, Any] = {"offline": constants.HF_HUB_OFFLINE, "cache": str(constants.HF_HUB_CACHE)}
    ref = load_file(ref_path)
    model = create(ARCH + ".v1", pretrained=True)
    msd = model.state_dict()
    out["tag_equal"] = all(torch.equal(msd[k], v) for k, v in ref.items()) and set(ref) <= set(msd)
    out["tied"] = model.lm_head.weight is model.embed.weight
    saved = load_file(str(Path(saved_dir) / "model.safetensors"))
    for name in ("hf-hub:dslm-test/tiny-saved", f"hf-hub:dslm-test/tiny-saved@{revision}"):
        m = create(name).state_dict()
        out[name] = all(torch.equal(m[k], v) for k, v in saved.items())
    for key, name in (("missing_error", ARCH + ".missing"), ("missing_repo_error", "hf-hub:dslm-test/absent")):
        try:
            create(name, pretrained=True)
            out[key] = None
        except Exception as e:  # noqa: BLE001 - the type and text are what the test checks
            out[key] = f"{type(e).__name__}: {e}"
    return out


def test_hf_cache_offline_in_subprocess(zoo: Reference, tmp_path: Path) -> None:
    saved_dir = save_pretrained(_trained_model(zoo), tmp_path / "saved")
    cache = tmp_path / "hf_home" / "hub"
    rev = "0123456789abcdef0123456789abcdef01234567"
    build_hf_cache(cache, HUB_V1, {"model.safetensors": zoo.path}, rev)
    build_hf_cache(cache, "dslm-test/tiny-saved", {f: saved_dir / f for f in ("config.json", "model.safetensors", "README.md")}, rev)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "DSLM_ZOO_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf_home"),
        HF_HUB_CACHE=str(cache),
        DSLM_ZOO_HUB=str(tmp_path / "empty-mirror"),
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]),
    )
    proc = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS, __file__, zoo.sha256, str(zoo.path), str(saved_dir), rev],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["offline"] is True and out["cache"] == str(cache)
    assert out["tag_equal"] and out["tied"]
    assert out["hf-hub:dslm-test/tiny-saved"] and out[f"hf-hub:dslm-test/tiny-saved@{rev}"]

    err = out["missing_error"]
    assert err.startswith("WeightsNotFoundError")
    for needle in ("empty-mirror", str(REPO_MIRROR), str(cache), "HF_HUB_OFFLINE=1", "checkpoint_path=", "DSLM_ZOO_HUB", "cache_dir="):
        assert needle in err, needle
    assert out["missing_repo_error"].startswith("WeightsNotFoundError") and "config.json" in out["missing_repo_error"]


# --------------------------------------------------------------------------------------------- atomic I/O


def test_atomic_write_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    with pytest.raises(OSError, match="disk full"):
        with atomic_write(target) as f:
            f.write(b"half a file")
            raise OSError("disk full")
    assert list(tmp_path.iterdir()) == []

    target.write_bytes(b"old and good")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target) as f:
            f.write(b"new but cut")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old and good"
    assert list(tmp_path.iterdir()) == [target]

    with atomic_write(tmp_path / "sub" / "card.md", "w") as f:
        f.write("ok")
    assert (tmp_path / "sub" / "card.md").read_text() == "ok"

    with pytest.raises(RuntimeError, match="did not create"):
        with atomic_path(tmp_path / "never.bin"):
            pass
    assert not (tmp_path / "never.bin").exists()


def test_interrupted_save_pretrained_keeps_previous_save(zoo: Reference, tmp_path: Path, monkeypatch) -> None:
    import safetensors.torch

    model = _trained_model(zoo)
    out = save_pretrained(model, tmp_path / "saved")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def crash(module: nn.Module, filename: str, metadata: Any = None, **kw: Any) -> None:
        Path(filename).write_bytes(b"partial")
        raise OSError("killed mid-write")

    with monkeypatch.context() as m:
        m.setattr(safetensors.torch, "save_model", crash)
        with pytest.raises(OSError, match="mid-write"):
            save_pretrained(_trained_model(zoo), out)
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing half-written, no temp files
        with pytest.raises(OSError):
            save_pretrained(model, tmp_path / "fresh")
        assert list((tmp_path / "fresh").iterdir()) == []
    assert_state_equal(create_model("local-dir:" + str(out)), model.state_dict())


# ----------------------------------------------------------------------------------------- push_to_hub


def test_push_to_hub_with_mocked_api(zoo: Reference, monkeypatch) -> None:
    import huggingface_hub

    calls: list[tuple[str, Any]] = []

    class FakeApi:
        def __init__(self, token: str | None = None) -> None:
            calls.append(("init", token))

        def create_repo(self, repo_id: str, **kw: Any) -> str:
            calls.append(("create_repo", (repo_id, kw)))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, **kw: Any) -> str:
            folder = Path(kw["folder_path"])
            files = {p.name: p.read_bytes() for p in folder.iterdir()}
            calls.append(("upload_folder", (kw, files)))
            return "commit-info"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    model = _trained_model(zoo)
    result = push_to_hub(model, "someone/tiny", token="tok", private=True, commit_message="msg")
    assert result == "commit-info"
    assert [c[0] for c in calls] == ["init", "create_repo", "upload_folder"]
    repo_id, kw = calls[1][1]
    assert repo_id == "someone/tiny" and kw["exist_ok"] is True and kw["private"] is True and kw["token"] == "tok"
    upload_kw, files = calls[2][1]
    assert upload_kw["repo_id"] == "someone/tiny" and upload_kw["commit_message"] == "msg"
    assert not Path(upload_kw["folder_path"]).exists()  # the temporary folder is cleaned up
    assert sorted(files) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads(files["config.json"])
    assert config["pretrained_cfg"]["hf_hub_id"] == "someone/tiny"
    assert config["pretrained_cfg"]["sha256"] == hashlib.sha256(files["model.safetensors"]).hexdigest()
    assert b'create_model("hf-hub:someone/tiny")' in files["README.md"]

    calls.clear()
    with pytest.raises(ValueError, match="repo id"):
        push_to_hub(model, "not-a-repo-id")
    assert calls == []


def test_render_model_card_from_cfg() -> None:
    cfg = PretrainedCfg(
        architecture="dslm_x", tag="t", hf_hub_id="org/x", num_params=1234, license="mit",
        metrics={"wmt14:en-de": {"bleu": 27.3}}, eval_command="python eval/x.py", input_size=(3, 224, 224),
    )
    card = render_model_card(cfg)
    header = yaml.safe_load(card.split("---")[1])
    assert header == {
        "library_name": "dslm_zoo", "license": "mit",
        "tags": ["dslm_zoo", "pytorch", "safetensors", "deepscalelm", "dslm_x", "arxiv:2403.09635"],
        "datasets": ["wmt14"], "metrics": ["bleu"],
    }
    for needle in ("# dslm_x.t", "## Usage", "## Model details", "## Metrics", "## Citation", "| wmt14:en-de | bleu | 27.3 |",
                   "1,234", "(3, 224, 224)", "python eval/x.py", "2403.09635"):
        assert needle in card, needle
