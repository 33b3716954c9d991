"""ImageNet robustness metrics with the semantics of the reference code (Hendrycks & Dietterich 2019, ICLR:
``hendrycks/robustness`` ``ImageNet-C/test.py``; Hendrycks et al. 2021 for ImageNet-A / -R; Recht et al. 2019 for
ImageNet-V2). Pure functions: no model, no images.

- Corruption error ``CE_c = sum_s E_{s,c} / sum_s E^AlexNet_{s,c}`` over severities 1..5; ``mCE`` the mean over the
  15 benchmark corruptions, in percent; relative mCE subtracts the clean errors first. AlexNet's published
  errors are data (``data/alexnet_imagenet_c.json``, with their source).
- ImageNet-A and -R hold 200 of the 1000 classes: the 1000-way logits are masked to the subset's columns (sorted
  wnids, so masked column j is ImageFolder target j), from the index files that ship in the timm wheel.
- ImageNet-V2 names its folders ``0..999``: ImageFolder sorts them as strings, so folder position k holds class
  ``int(sorted(str(i) for i in range(1000))[k])``.
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

if TYPE_CHECKING:
    import torch

__all__ = [
    "BENCHMARK_CORRUPTIONS", "HELD_OUT_CORRUPTIONS", "ALL_CORRUPTIONS", "alexnet_errors", "alexnet_clean_error",
    "corruption_errors", "mce", "subset_indices", "v2_folder_to_class", "topk_correct", "check_corruptions",
]

BENCHMARK_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "snow",
    "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
HELD_OUT_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS = BENCHMARK_CORRUPTIONS + HELD_OUT_CORRUPTIONS
_ALEXNET = Path(__file__).with_name("data") / "alexnet_imagenet_c.json"


@lru_cache(maxsize=1)
def _alexnet() -> dict:
    return json.loads(_ALEXNET.read_text(encoding="utf-8"))


def alexnet_errors() -> dict[str, list[float]]:
    """AlexNet's top-1 error (fraction) per benchmark corruption and severity 1..5."""
    return {c: list(v) for c, v in _alexnet()["errors"].items()}


def alexnet_clean_error() -> float:
    return float(_alexnet()["clean_error"])


def check_corruptions(corruptions: Sequence[str], severities: Sequence[int] = (1, 2, 3, 4, 5)) -> None:
    """Refuse corruption names outside the 19 of ImageNet-C and severities outside 1..5, naming them."""
    bad = [c for c in corruptions if c not in ALL_CORRUPTIONS] + [str(s) for s in severities if s not in range(1, 6)]
    if bad:
        raise ValueError(f"unknown corruption(s) or severity(ies) {bad}; corruptions: {list(ALL_CORRUPTIONS)}, "
                         "severities 1..5")


def _check_errors(errors: Mapping[str, Sequence[float]], need: Sequence[str]) -> None:
    missing = [c for c in need if c not in errors]
    if missing:
        raise ValueError(f"errors lack corruption(s) {missing}; mCE needs all 15 benchmark corruptions {list(need)}")
    for c, v in errors.items():
        if c not in ALL_CORRUPTIONS:
            raise ValueError(f"unknown corruption {c!r}; known: {list(ALL_CORRUPTIONS)}")
        if not isinstance(v, (list, tuple)) or len(v) != 5:
            raise ValueError(f"{c}: expected the top-1 errors of severities 1..5 (5 numbers), got {v!r}")
        for e in v:
            if isinstance(e, bool) or not isinstance(e, (int, float)) or not 0.0 <= e <= 1.0 or math.isnan(e):
                raise ValueError(f"{c}: errors are fractions in [0, 1], got {e!r} (percent? divide by 100)")


def corruption_errors(errors: Mapping[str, Sequence[float]], *, clean_error: float | None = None,
                      baseline: Mapping[str, Sequence[float]] | None = None,
                      baseline_clean_error: float | None = None) -> dict[str, dict[str, float]]:
    """Per corruption: ``CE`` (percent, normalised by ``baseline``, default AlexNet), the unnormalised mean error
    (percent) and, with ``clean_error``, the relative CE (percent). Corruptions the baseline lacks (the held-out
    four, for AlexNet) get the mean error only."""
    base = dict(baseline) if baseline is not None else alexnet_errors()
    _check_errors(errors, ())
    b_clean = baseline_clean_error if baseline_clean_error is not None else (alexnet_clean_error() if baseline is None else None)
    out: dict[str, dict[str, float]] = {}
    for c, e in errors.items():
        row = {"mean_error": 100.0 * sum(e) / 5.0}
        if c in base:
            row["CE"] = 100.0 * sum(e) / sum(base[c])
            if clean_error is not None and b_clean is not None:
                den = sum(x - b_clean for x in base[c])
                if den > 0:  # relative CE is undefined where the baseline does not degrade (its errors sum to its clean)
                    row["relative_CE"] = 100.0 * sum(x - clean_error for x in e) / den
        out[c] = row
    return out


def mce(errors: Mapping[str, Sequence[float]], *, clean_error: float | None = None,
        baseline: Mapping[str, Sequence[float]] | None = None, baseline_clean_error: float | None = None) -> dict:
    """``{"mCE", "relative_mCE" (with clean_error), "mean_error", "per_corruption"}``, in percent, over the corruptions
    the baseline has (AlexNet: the 15 benchmark ones, all required); ``mean_error`` is ``test.py``'s "mCE
    (unnormalized by AlexNet errors)" over the same corruptions."""
    if clean_error is not None and not 0.0 <= clean_error <= 1.0:
        raise ValueError(f"clean_error is a fraction in [0, 1], got {clean_error!r}")
    names = list(BENCHMARK_CORRUPTIONS) if baseline is None else [c for c in baseline if c in errors]
    _check_errors(errors, names if baseline is None else ())
    if not names:
        raise ValueError("no corruption is shared by the errors and the baseline")
    per = corruption_errors(errors, clean_error=clean_error, baseline=baseline, baseline_clean_error=baseline_clean_error)
    out: dict = {
        "mCE": sum(per[c]["CE"] for c in names) / len(names),
        "mean_error": sum(per[c]["mean_error"] for c in names) / len(names),
        "corruptions": names,
        "per_corruption": per,
    }
    rel = [c for c in names if "relative_CE" in per[c]]
    if rel:
        out["relative_mCE"] = sum(per[c]["relative_CE"] for c in rel) / len(rel)
        if len(rel) < len(names):  # a baseline that does not degrade under some corruption: relative CE undefined there
            out["relative_mCE_corruptions"] = rel
    return out


def subset_indices(name: str) -> list[int]:
    """Indices into the 1000 ImageNet classes of ImageNet-A (``'a'``) or -R (``'r'``): read from the index files that
    ship in the timm wheel (``timm/data/_info/imagenet_{a,r}_indices.txt``), sorted, 200 each."""
    import pkgutil

    if name not in ("a", "r"):
        raise ValueError(f"subset must be 'a' or 'r', got {name!r}")
    raw = pkgutil.get_data("timm", f"data/_info/imagenet_{name}_indices.txt")
    if raw is None:
        raise FileNotFoundError(f"timm ships no data/_info/imagenet_{name}_indices.txt")
    idx = [int(x) for x in raw.decode().split()]
    if len(idx) != 200 or idx != sorted(idx):
        raise ValueError(f"timm's imagenet_{name}_indices.txt is not 200 sorted indices")
    return idx


def v2_folder_to_class(num_classes: int = 1000) -> list[int]:
    """ImageNet-V2's trap: position k of ImageFolder's (string-sorted) folders ``0..999`` is class ``[k]``."""
    return [int(s) for s in sorted(str(i) for i in range(num_classes))]


def topk_correct(logits: "torch.Tensor", targets: "torch.Tensor", ks: Sequence[int] = (1, 5),
                 class_subset: Sequence[int] | None = None) -> dict[int, int]:
    """How many of ``targets`` are in the top-k of ``logits`` (N, C), for each k. With ``class_subset`` (sorted
    indices into C, e.g. :func:`subset_indices`) the logits are masked to those columns first and ``targets`` index
    the subset (ImageFolder order of the subset's sorted wnids), as timm's ``validate.py --valid-labels`` does."""
    import torch

    if logits.dim() != 2 or targets.dim() != 1 or len(logits) != len(targets):
        raise ValueError(f"expected logits (N, C) and targets (N,), got {tuple(logits.shape)} and {tuple(targets.shape)}")
    if class_subset is not None:
        sub = torch.as_tensor(list(class_subset), dtype=torch.long)
        if sub.numel() and int(sub.max()) >= logits.shape[1]:
            raise ValueError(f"class subset index {int(sub.max())} >= the model's {logits.shape[1]} classes")
        logits = logits[:, sub]
    if targets.numel() and int(targets.max()) >= logits.shape[1]:
        raise ValueError(f"target {int(targets.max())} >= {logits.shape[1]} scored classes")
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hit = top == targets[:, None]
    return {k: int(hit[:, :k].any(1).sum()) for k in ks}

