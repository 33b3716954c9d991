"""Where pretrained weights come from, and how models are saved and published (Hugging Face hub layout).

Weight resolution for ``pretrained=True`` tries, in order, and stops at the first hit:

1. an explicit file: ``checkpoint_path=`` or ``pretrained_cfg_overlay={'file': ...}``;
2. local mirrors in Hugging Face repo layout, ``<root>/<org>/<name>/<filename>`` (plus ``config.json`` and
   ``README.md`` beside it, exactly what :func:`save_pretrained` writes), with ``<root>`` taken from
   ``$DSLM_ZOO_HUB`` (one or more directories separated by ``os.pathsep``) and then ``<repo root>/hub_mirror``;
3. the Hugging Face cache / hub through ``huggingface_hub.hf_hub_download`` (``cache_dir=`` or
   ``$HF_HUB_CACHE``; ``HF_HUB_OFFLINE=1`` keeps it to the cache). This is the one download cache.

Whatever the source, the file's sha256 is checked against ``pretrained_cfg.sha256`` before anything is loaded.
When nothing is found, :class:`WeightsNotFoundError` lists every place that was searched and how to supply
the file.

Every save goes through :func:`atomic_path` / :func:`atomic_write`: data is written to a hidden temporary
file in the target directory and moved into place with ``os.replace``, so an interrupted save never leaves a
file under the real name. :func:`save_pretrained` writes the weights before ``config.json`` (which records
their sha256), so a save interrupted between the two is refused at load time rather than loaded wrongly.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterator, Mapping

from ._registry import PretrainedCfg

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "format_metric",
    "HUB_ENV_VAR",
    "REPO_MIRROR",
    "WEIGHTS_NAME",
    "CONFIG_NAME",
    "CARD_NAME",
    "WeightsNotFoundError",
    "ChecksumMismatchError",
    "sha256_file",
    "verify_sha256",
    "atomic_path",
    "atomic_write",
    "mirror_roots",
    "split_repo_id",
    "resolve_repo_file",
    "resolve_pretrained_file",
    "read_model_config",
    "render_model_card",
    "save_pretrained",
    "push_to_hub",
]

HUB_ENV_VAR = "DSLM_ZOO_HUB"
REPO_MIRROR = Path(__file__).resolve().parent.parent / "hub_mirror"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"

PAPER_ID = "arXiv:2403.09635"
PAPER_BIBTEX = """@inproceedings{kedia2024transformers,
  title     = {Transformers Get Stable: An End-to-End Signal Propagation Theory for Language Models},
  author    = {Kedia, Akhil and Zaidi, Mohd Abbas and Khyalia, Sushil and Jung, Jungho and Goka, Harshith and Lee, Haejun},
  booktitle = {Proceedings of the 41st International Conference on Machine Learning},
  series    = {Proceedings of Machine Learning Research},
  volume    = {235},
  pages     = {23449--23531},
  year      = {2024},
  eprint    = {2403.09635},
  archivePrefix = {arXiv},
  url       = {https://arxiv.org/abs/2403.09635}
}"""


class WeightsNotFoundError(FileNotFoundError):
    """No weights file in any of the places searched (the message lists them and how to supply one)."""


class ChecksumMismatchError(RuntimeError):
    """A weights file whose sha256 differs from the one recorded in its pretrained cfg."""


# --------------------------------------------------------------------------------------------------- hashing


def sha256_file(path: str | os.PathLike, *, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large checkpoints do not need to fit in memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str | None, *, what: str = "") -> str:
    """Return the file's sha256; raise :class:`ChecksumMismatchError` naming both hashes if it is not ``expected``.

    ``expected=None`` skips the comparison (weights without a recorded hash).
    """
    actual = sha256_file(path)
    if expected is not None and actual.lower() != expected.lower():
        raise ChecksumMismatchError(
            f"sha256 mismatch for {what + ' ' if what else ''}weights file {str(path)!r}: expected {expected}, "
            f"got {actual}. The file is corrupt, truncated or a different release; delete it and fetch it again, "
            "or, for a file you trust, pass pretrained_cfg_overlay={'sha256': None}."
        )
    return actual


# ----------------------------------------------------------------------------------------------- atomic I/O


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path`` with ``os.replace``.

    The writer creates the temporary file itself (for libraries that only take a file name). If the body
    raises, the temporary file is removed and ``path`` keeps whatever it held before.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory: os.replace is only atomic within one file system. Hidden + .tmp: never taken for the real file.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"atomic write of {str(path)!r}: the writer did not create {str(tmp)!r}")
        with open(tmp, "rb+") as f:  # data reaches the disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; it replaces ``path`` only if the body completes."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_write only writes; got mode {mode!r}")
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding) as f:
            yield f


def _fsync_dir(directory: Path) -> None:
    # Make the rename itself durable; not every platform lets a directory be opened, so this is best effort.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------- resolution


def mirror_roots() -> list[Path]:
    """Local mirror roots in search order: each entry of ``$DSLM_ZOO_HUB``, then ``<repo root>/hub_mirror``.

    Read on every call (not at import), so changing the environment takes effect immediately.
    """
    roots = [Path(p).expanduser() for p in os.environ.get(HUB_ENV_VAR, "").split(os.pathsep) if p]
    return roots + [REPO_MIRROR]


def split_repo_id(repo: str) -> tuple[str, str | None]:
    """``'org/name@rev'`` -> ``('org/name', 'rev')``; ``'org/name'`` -> ``('org/name', None)``."""
    repo_id, _, revision = repo.partition("@")
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or any(p in (".", "..") for p in parts):
        raise ValueError(f"invalid Hugging Face repo id {repo!r}: expected 'org/name' or 'org/name@revision'")
    return repo_id, (revision or None)


def _hf_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


_REACHABLE: dict[str, tuple[bool, str]] = {}


def hub_reachable(timeout: float = 3.0) -> tuple[bool, str]:
    """Whether the Hugging Face endpoint accepts a TCP connection, and why not; asked once per process.

    Without it, a machine with no route to the hub spends about 24 s in the hub client's retries before the
    same cache lookup that ``local_files_only`` does at once."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    key = f"{host}:{port}"
    if key not in _REACHABLE:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            _REACHABLE[key] = (True, "")
        except OSError as e:
            _REACHABLE[key] = (False, f"{key}: {type(e).__name__}: {e}")
    return _REACHABLE[key]


def _hf_mode(cache_dir: str | os.PathLike | None) -> tuple[bool, str]:
    """(cache only?, description of the HF cache and why it is or is not online)."""
    from huggingface_hub import constants

    where = str(cache_dir) if cache_dir is not None else f"{constants.HF_HUB_CACHE} (HF_HUB_CACHE)"
    if _hf_offline():
        return True, f"{where}, HF_HUB_OFFLINE=1: cache only"
    ok, why = hub_reachable()
    if not ok:
        return True, f"{where}, cache only: the hub is unreachable ({why})"
    return False, f"{where}, online: download into the cache"


def resolve_repo_file(
    repo: str,
    filename: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    looked: list[str] | None = None,
) -> Path | None:
    """Find ``filename`` of hub repo ``repo`` (``'org/name[@rev]'``): local mirrors first, then the HF cache/hub.

    A revision skips the mirrors (they hold one unversioned copy) and is honoured by the HF cache and hub. When
    HF_HUB_OFFLINE is set or the hub is unreachable, only the cache is read (no retries). Returns ``None`` when
    the file is nowhere; each place tried is appended to ``looked`` (with why it failed), so the caller can build
    one error that lists them all.
    """
    looked = looked if looked is not None else []
    repo_id, revision = split_repo_id(repo)
    org, name = repo_id.split("/")
    if revision is not None:
        looked.append(f"mirrors: skipped, revision {revision!r} was asked for and a mirror holds one unversioned copy")
    else:
        for root in mirror_roots():
            candidate = root / org / name / filename
            if candidate.is_file():
                return candidate
            label = f"${HUB_ENV_VAR} mirror" if root != REPO_MIRROR else "repository mirror"
            looked.append(f"{label}: {candidate} (not found)")
    cache_only, mode = _hf_mode(cache_dir)
    try:
        # Imported here: huggingface_hub reads HF_HUB_OFFLINE / HF_HOME / HF_HUB_CACHE once, at import.
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id=repo_id, filename=filename, revision=revision, cache_dir=cache_dir,
                                    local_files_only=cache_only))
    except Exception as e:  # offline, unreachable, missing repo/file, gated, ...: all mean "not available"
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        looked.append(f"Hugging Face hub {repo}/{filename} via cache {mode} ({type(e).__name__}: {msg})")
        return None


def _how_to_supply(cfg: PretrainedCfg, repo: str | None) -> str:
    fn = cfg.filename
    lines = [
        "Supply the weights in one of these ways:",
        f"  - pass the file: create_model({cfg.name!r}, pretrained=True, checkpoint_path='/path/to/{fn}')",
    ]
    if repo:
        repo_id, _ = split_repo_id(repo)
        lines += [
            f"  - put it in a local mirror: ${HUB_ENV_VAR}=/mirror with /mirror/{repo_id}/{fn} (or {REPO_MIRROR / repo_id / fn})",
            f"  - download it once while online into the HF cache (cache_dir= or HF_HUB_CACHE), e.g. "
            f"`hf download {repo_id} {fn}`, then use it offline",
        ]
        if _hf_offline():
            lines.append("  - HF_HUB_OFFLINE=1 is set: if the hub is reachable, unset it to let the file download")
    return "\n".join(lines)


def resolve_pretrained_file(
    cfg: PretrainedCfg,
    *,
    file: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Path of the weights of ``cfg``, sha256-checked: ``file`` > local mirrors > HF cache/hub.

    Raises :class:`WeightsNotFoundError` listing everything searched, or :class:`ChecksumMismatchError`.
    """
    looked: list[str] = []
    path: Path | None = None
    if file is not None:
        path = Path(file).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(
                f"weights file for {cfg.name!r} given explicitly (checkpoint_path= or pretrained_cfg_overlay "
                f"'file') does not exist: {str(path)!r}"
            )
    else:
        looked.append("explicit file: none given (checkpoint_path= / pretrained_cfg_overlay={'file': ...})")
        if cfg.hf_hub_id:
            path = resolve_repo_file(cfg.hf_hub_id, cfg.filename, cache_dir=cache_dir, looked=looked)
        else:
            looked.append(f"hub: {cfg.name!r} has no hf_hub_id, so no mirror or hub location to search")
    if path is None:
        places = "\n".join(f"  {i}. {p}" for i, p in enumerate(looked, 1))
        raise WeightsNotFoundError(
            f"no weights found for {cfg.name!r} (file {cfg.filename!r}, hf_hub_id {cfg.hf_hub_id!r}). Looked in:\n"
            f"{places}\n{_how_to_supply(cfg, cfg.hf_hub_id)}"
        )
    verify_sha256(path, cfg.sha256, what=repr(cfg.name))
    return path


def read_model_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a ``config.json`` written by :func:`save_pretrained`."""
    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"no {CONFIG_NAME} at {str(path)!r}: not a dslm_zoo model directory") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(path)!r} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{str(path)!r} must hold a JSON object, got {type(config).__name__}")
    missing = [k for k in ("architecture", "model_args", "pretrained_cfg") if k not in config]
    if missing:
        raise ValueError(f"{str(path)!r} lacks key(s) {missing}; expected {{architecture, model_args, pretrained_cfg}}")
    if not isinstance(config["model_args"], dict) or not isinstance(config["pretrained_cfg"], dict):
        raise ValueError(f"{str(path)!r}: 'model_args' and 'pretrained_cfg' must be JSON objects")
    return config


# ------------------------------------------------------------------------------------------- model cards


def _yaml_str(s: Any) -> str:
    return json.dumps(str(s), ensure_ascii=False)  # a JSON string is a valid YAML scalar, whatever it contains


def _dataset_name(key: str) -> str:
    return key.split(":", 1)[0]


def format_metric(value: Any) -> str:
    """A card metric as the cards and ``dslm-zoo list --metrics`` print it: counts (targets, images) in full,
    measurements to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render_model_card(
    model_or_cfg: "nn.Module | PretrainedCfg",
    *,
    model_args: Mapping[str, Any] | None = None,
    pretrained_cfg: PretrainedCfg | None = None,
    repo_id: str | None = None,
) -> str:
    """The README.md model card of a model (or of a bare :class:`PretrainedCfg`), Hugging Face style.

    YAML header: ``library_name: dslm_zoo``, license, tags, datasets and metrics (from ``pretrained_cfg.metrics``);
    body: usage, details (parameters, preprocessing, weights hash, recipe, eval command), model arguments,
    metrics table and citation of arXiv:2403.09635. ``pretrained_cfg``/``model_args`` override what is read off
    the model; ``repo_id`` (default ``hf_hub_id``) is used in the usage snippet.
    """
    if isinstance(model_or_cfg, PretrainedCfg):
        cfg = pretrained_cfg or model_or_cfg
        num_params = cfg.num_params
    else:
        cfg = pretrained_cfg or getattr(model_or_cfg, "pretrained_cfg", None)
        if cfg is None:
            raise ValueError("render_model_card needs model.pretrained_cfg (build the model with create_model)")
        if model_args is None and getattr(model_or_cfg, "cfg", None) is not None:
            model_args = model_or_cfg.cfg.to_dict()
        num_params = cfg.num_params or sum(p.numel() for p in model_or_cfg.parameters())
    repo = repo_id or cfg.hf_hub_id
    metrics = {d: dict(m) for d, m in (cfg.metrics or {}).items()}
    datasets = sorted({_dataset_name(d) for d in metrics})
    metric_names = sorted({m for ms in metrics.values() for m in ms})
    tags = ["dslm_zoo", "pytorch", "safetensors", "deepscalelm", cfg.architecture]
    papers = list(cfg.paper_ids or ())
    tags += [p.replace("arXiv:", "arxiv:") for p in papers]

    y = ["---", "library_name: dslm_zoo", f"license: {_yaml_str(cfg.license)}", "tags:"]
    y += [f"- {_yaml_str(t)}" for t in dict.fromkeys(tags)]
    if datasets:
        y += ["datasets:"] + [f"- {_yaml_str(d)}" for d in datasets]
    if metric_names:
        y += ["metrics:"] + [f"- {_yaml_str(m)}" for m in metric_names]
    y.append("---")

    b: list[str] = [f"# {cfg.name}", ""]
    b.append(
        f"`{cfg.architecture}` from **dslm_zoo**, a timm-style zoo of DeepScaleLM (DSLM) transformers that stay "
        f"trainable hundreds to a thousand layers deep, following *Transformers Get Stable: An End-to-End Signal "
        f"Propagation Theory for Language Models* ({PAPER_ID})."
    )
    if cfg.notes:
        b += ["", str(cfg.notes)]
    b += ["", "## Usage", "", "```python", "import dslm_zoo", ""]
    if repo:
        b.append(f'model = dslm_zoo.create_model("hf-hub:{repo}")  # config.json + model.safetensors from the hub')
    b.append(f'model = dslm_zoo.create_model("{cfg.name}", pretrained=True)  # by registered name')
    b += ["model.eval()", "```", ""]
    b.append(
        "Offline: set `HF_HUB_OFFLINE=1` once the file is in the Hugging Face cache (`cache_dir=` or "
        f"`HF_HUB_CACHE`), or point `{HUB_ENV_VAR}` at a mirror holding `<org>/<name>/model.safetensors`, or pass "
        "`checkpoint_path=`. The file's sha256 is checked before loading."
    )

    rows: list[tuple[str, str]] = [("Architecture", f"`{cfg.architecture}`")]
    if cfg.tag:
        rows.append(("Tag", f"`{cfg.tag}`"))
    if num_params is not None:
        rows.append(("Parameters", f"{num_params:,} ({num_params / 1e6:.2f} M)"))
    if cfg.num_classes is not None:
        rows.append(("Classes", str(cfg.num_classes)))
    if cfg.label_names:
        rows.append(("Labels", ", ".join(f"`{x}`" for x in cfg.label_names)))
    for label, value in (
        ("Input size", cfg.input_size),
        ("Mean", cfg.mean),
        ("Std", cfg.std),
        ("Sample rate (Hz)", cfg.sample_rate),
        ("Filterbank", json.dumps(dict(cfg.fbank), sort_keys=True) if cfg.fbank else None),
        ("Tokenizer", cfg.tokenizer),
    ):
        if value is not None:
            rows.append((label, f"`{value}`"))
    rows.append(("Weights", f"`{cfg.filename}`" + (f", sha256 `{cfg.sha256}`" if cfg.sha256 else "")))
    if repo:
        rows.append(("Hub repo", f"`{repo}`"))
    rows.append(("License", f"`{cfg.license}`"))
    if papers:
        rows.append(("Papers", ", ".join(papers)))
    if cfg.recipe:
        rows.append(("Training recipe", f"`{cfg.recipe}`"))
    if cfg.eval_command:
        rows.append(("Evaluation", f"`{cfg.eval_command}`"))
    b += ["", "## Model details", "", "| | |", "|---|---|"]
    b += [f"| {k} | {v.replace('|', chr(92) + '|')} |" for k, v in rows]

    if model_args:
        b += ["", "## Model arguments", "", "```json", json.dumps(dict(model_args), indent=2, default=str), "```"]

    b += ["", "## Metrics", ""]
    if metrics:
        b += ["| Dataset | Metric | Value |", "|---|---|---|"]
        for d, ms in metrics.items():
            for m, v in ms.items():
                b.append(f"| {d} | {m} | {format_metric(v)} |")
        if cfg.eval_command:
            b += ["", f"Measured with `{cfg.eval_command}`."]
    else:
        b.append("No metrics have been measured for these weights yet.")

    b += ["", "## Citation", "", "```bibtex", PAPER_BIBTEX, "```", ""]
    return "\n".join(y + [""] + b)


# ------------------------------------------------------------------------------------------ save / publish


def _json_dumps(obj: Any) -> str:
    try:
        return json.dumps(obj, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:
        raise TypeError(f"model config is not JSON-serialisable: {e}") from None


def save_pretrained(
    model: "nn.Module",
    save_directory: str | os.PathLike,
    *,
    model_card: str | None = None,
    pretrained_cfg_overlay: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model.safetensors``, ``config.json`` and ``README.md`` (the hub layout) into ``save_directory``.

    ``config.json`` is ``{"architecture", "model_args", "pretrained_cfg"}`` with the pretrained cfg's ``sha256``,
    ``num_params``, ``filename`` and ``num_classes`` taken from the files and model just written;
    ``pretrained_cfg_overlay`` edits the rest (e.g. ``hf_hub_id``). ``model_card`` replaces the generated
    README. Tied weights are stored once (safetensors ``save_model``). Every file is written atomically, the
    weights first. ``create_model('local-dir:' + save_directory)`` rebuilds the model bit-exactly.
    """
    from safetensors.torch import save_model

    pcfg = getattr(model, "pretrained_cfg", None)
    mcfg = getattr(model, "cfg", None)
    if not isinstance(pcfg, PretrainedCfg) or mcfg is None or not hasattr(mcfg, "to_dict"):
        raise TypeError(
            "save_pretrained needs a dslm_zoo model with .cfg (a ConfigBase) and .pretrained_cfg "
            "(build it with dslm_zoo.create_model or an entrypoint)"
        )
    num_classes = getattr(model, "num_classes", None)
    updates: dict[str, Any] = {
        "filename": WEIGHTS_NAME,
        "num_params": sum(p.numel() for p in model.parameters()),
    }
    if isinstance(num_classes, int):
        updates["num_classes"] = num_classes
    # Validate everything that can fail before the first byte is written.
    pcfg = pcfg.replace(**updates).replace(**dict(pretrained_cfg_overlay or {}))
    model_args = mcfg.to_dict()
    _json_dumps({"architecture": pcfg.architecture, "model_args": model_args, "pretrained_cfg": pcfg.to_dict()})

    out = Path(save_directory)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHTS_NAME
    with atomic_path(weights) as tmp:
        # One metadata key: safetensors writes its metadata map in hash order, so two keys would make the bytes
        # (and the sha256 recorded in config.json) differ between two saves of the same weights.
        save_model(model, str(tmp), metadata={"format": "pt"})
        sha = sha256_file(tmp)
    pcfg = pcfg.replace(sha256=sha)
    config = {"architecture": pcfg.architecture, "model_args": model_args, "pretrained_cfg": pcfg.to_dict()}
    with atomic_write(out / CONFIG_NAME, "w") as f:
        f.write(_json_dumps(config))
    card = model_card if model_card is not None else render_model_card(model, model_args=model_args, pretrained_cfg=pcfg)
    with atomic_write(out / CARD_NAME, "w") as f:
        f.write(card)
    return out


def push_to_hub(
    model: "nn.Module",
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload dslm_zoo model",
    revision: str | None = None,
    model_card: str | None = None,
) -> Any:
    """``save_pretrained`` into a temporary directory, then create the hub repo (if needed) and upload it.

    The uploaded ``config.json`` records ``hf_hub_id=repo_id``. Returns ``HfApi.upload_folder``'s commit info.
    """
    from huggingface_hub import HfApi

    split_repo_id(repo_id)  # fail on a malformed id before writing anything
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="dslm_zoo_push_") as tmp:
        save_pretrained(model, tmp, model_card=model_card, pretrained_cfg_overlay={"hf_hub_id": repo_id})
        api.create_repo(repo_id, token=token, private=private, exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=tmp,
            commit_message=commit_message,
            token=token,
            revision=revision,
        )
