"""ImageNet-robustness evaluation of an image classifier: every benchmark present under a root, in one command
(``dslm-zoo eval robustness MODEL ROOT``), with the reference code's semantics (metrics in
:mod:`dslm_zoo.evals.robustness`).

Under ROOT, each of these that exists is evaluated (names as the data sets are released):

- ``val/`` (or ``imagenet/val``): clean ImageNet, ``<wnid>/img``, top-1/top-5 with the model's own preprocessing
  (its pretrained cfg through timm's data config);
- ``imagenet-c/``: the released tree ``<corruption>/<severity>/<wnid>/img`` (images already 224x224: centre crop,
  no resize, as ``ImageNet-C/test.py``); or, with ``generate_c=True``, corruptions made on the fly from the clean
  folder with ``imagecorruptions`` (the maintained ``imagecorruptions-imaug`` fork): resize and centre crop to the
  model's input as ``make_imagenet_c.py`` does, corrupt, JPEG quality 85, then the model's transform; the global
  NumPy generator is seeded per image from (seed, corruption, severity, file name), so a run is reproducible;
- ``imagenet-a/``, ``imagenet-r/``: 200-class subsets, the 1000-way logits masked to the subset's columns;
- ``imagenet-sketch/`` (or ``sketch/``): plain 1000-way;
- ``imagenetv2*/``: folders ``0..999`` mapped by their integer value (not ImageFolder's string order).

Writes ``robustness.json`` and ``robustness.png`` (error per data set; error per corruption and severity).
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .evals.robustness import ALL_CORRUPTIONS, BENCHMARK_CORRUPTIONS, mce, subset_indices, topk_correct

__all__ = ["FolderSet", "evaluate_folder", "evaluate_robustness", "find_benchmarks", "corrupt_image"]

_IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm")


def _wnids() -> list[str]:
    from timm.data import ImageNetInfo

    return list(ImageNetInfo().label_names())  # the 1000 sorted wnids of ImageNet-1k


@dataclass
class FolderSet:
    """``(path, target)`` pairs of a class-folder tree. ``labels``: ``'wnid'`` (folder names are ImageNet wnids:
    target = index among the 1000, or among ``subset`` when given), ``'int'`` (folders ``0..999``: target =
    int(name), ImageNet-V2)."""

    root: Path
    items: list[tuple[Path, int]]

    @classmethod
    def scan(cls, root: str | Path, labels: str = "wnid", subset: Sequence[int] | None = None) -> "FolderSet":
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{str(root)!r} is not a directory")
        folders = sorted(p for p in root.iterdir() if p.is_dir())
        if not folders:
            raise ValueError(f"{str(root)!r} has no class folders")
        if labels == "wnid":
            index = {w: i for i, w in enumerate(_wnids())}
            unknown = [f.name for f in folders if f.name not in index]
            if unknown:
                raise ValueError(f"{str(root)!r}: folder(s) {unknown[:5]}{' ...' if len(unknown) > 5 else ''} are not "
                                 "ImageNet-1k wnids")
            target = {f.name: index[f.name] for f in folders}
            if subset is not None:
                pos = {c: j for j, c in enumerate(subset)}
                outside = [n for n, t in target.items() if t not in pos]
                if outside:
                    raise ValueError(f"{str(root)!r}: folder(s) {outside[:5]} are outside the 200-class subset")
                target = {n: pos[t] for n, t in target.items()}
        elif labels == "int":
            bad = [f.name for f in folders if not f.name.isdigit() or int(f.name) >= 1000]
            if bad:
                raise ValueError(f"{str(root)!r}: ImageNet-V2 folders are 0..999, found {bad[:5]}")
            target = {f.name: int(f.name) for f in folders}
        else:
            raise ValueError(f"labels must be 'wnid' or 'int', got {labels!r}")
        items = [(p, target[f.name]) for f in folders for p in sorted(f.iterdir()) if p.suffix.lower() in _IMG_EXT]
        if not items:
            raise ValueError(f"{str(root)!r}: the class folders hold no images ({', '.join(_IMG_EXT)})")
        return cls(root, items)


def corrupt_image(img: Any, corruption: str, severity: int, seed: int, key: str) -> Any:
    """``img`` (PIL, the model's input size) corrupted by ``imagecorruptions``, seeded from (seed, corruption,
    severity, key), saved and re-read as JPEG quality 85 (``make_imagenet_c.py``). The library refuses images
    under 32x32."""
    from imagecorruptions import corrupt
    from PIL import Image

    if corruption not in ALL_CORRUPTIONS or not 1 <= severity <= 5:
        raise ValueError(f"unknown corruption {corruption!r} or severity {severity} (1..5)")
    h = int(hashlib.sha256(f"{seed}/{corruption}/{severity}/{key}".encode()).hexdigest()[:8], 16)
    np.random.seed(h)  # the library draws from the global NumPy generator
    arr = corrupt(np.asarray(img.convert("RGB")), corruption_name=corruption, severity=severity)
    buf = io.BytesIO()
    Image.fromarray(np.uint8(arr)).save(buf, format="JPEG", quality=85, optimize=True)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _transforms(model: nn.Module, *, released_c: bool = False) -> tuple[Callable, Callable]:
    """(transform for clean images, the geometric part alone: resize + centre crop to the input size)."""
    from timm.data import create_transform, resolve_model_data_config
    from torchvision import transforms as T

    cfg = resolve_model_data_config(model)
    full = create_transform(**cfg, is_training=False)
    size = cfg["input_size"][-1]
    geo = T.Compose([T.Resize(int(size / cfg.get("crop_pct", 1.0))), T.CenterCrop(size)])
    if released_c:  # the released ImageNet-C images are already cropped: centre crop + normalise only
        tail = [t for t in full.transforms if not isinstance(t, (T.Resize,))]
        return T.Compose(tail), geo
    return full, geo


@torch.no_grad()
def evaluate_folder(model: nn.Module, data: FolderSet, *, transform: Callable, class_subset: Sequence[int] | None = None,
                    image_fn: Callable[[Any, Path], Any] | None = None, batch_size: int = 64, skip_bad: bool = False,
                    desc: str = "") -> dict[str, float]:
    """Top-1 / top-5 accuracy and error of ``model`` on ``data`` (images through ``image_fn`` then ``transform``).
    An unreadable image raises naming the file, or is skipped and counted with ``skip_bad``."""
    from PIL import Image, UnidentifiedImageError
    from tqdm.auto import tqdm

    model.eval()
    hits = {1: 0, 5: 0}
    n = skipped = 0
    for i in tqdm(range(0, len(data.items), batch_size), desc=desc or str(data.root.name), disable=None):
        xs, ys = [], []
        for path, y in data.items[i : i + batch_size]:
            try:
                with Image.open(path) as im:
                    img = im.convert("RGB")
            except (OSError, UnidentifiedImageError) as e:
                if skip_bad:
                    skipped += 1
                    continue
                raise ValueError(f"unreadable image {str(path)!r}: {e}") from None
            if image_fn is not None:
                img = image_fn(img, path)
            xs.append(transform(img))
            ys.append(y)
        if not xs:
            continue
        logits = model(torch.stack(xs)).float()
        got = topk_correct(logits, torch.tensor(ys), ks=(1, 5), class_subset=class_subset)
        hits[1] += got[1]
        hits[5] += got[5]
        n += len(ys)
    if n == 0:
        raise ValueError(f"{str(data.root)!r}: no readable image ({skipped} skipped)")
    return {"top1": hits[1] / n, "top5": hits[5] / n, "top1_err": 1 - hits[1] / n, "top5_err": 1 - hits[5] / n,
            "images": n, "skipped": skipped}


def find_benchmarks(root: str | Path) -> dict[str, Path]:
    """The benchmark folders present under ``root`` (see the module docstring for the names)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{str(root)!r} is not a directory")
    found: dict[str, Path] = {}
    for key, names in (("clean", ("val", "imagenet/val")), ("imagenet-c", ("imagenet-c",)), ("imagenet-a", ("imagenet-a",)),
                       ("imagenet-r", ("imagenet-r",)), ("imagenet-sketch", ("imagenet-sketch", "sketch"))):
        for n in names:
            if (root / n).is_dir():
                found[key] = root / n
                break
    for p in sorted(root.glob("imagenetv2*")):
        if p.is_dir():
            found[f"imagenet-v2:{p.name}"] = p
    return found


def evaluate_robustness(model: nn.Module, root: str | Path, *, generate_c: bool = False,
                        corruptions: Sequence[str] = BENCHMARK_CORRUPTIONS, severities: Sequence[int] = (1, 2, 3, 4, 5),
                        limit: int | None = None, seed: int = 0, batch_size: int = 64, skip_bad: bool = False,
                        out_dir: str | Path | None = None) -> dict[str, Any]:
    """Evaluate ``model`` on every benchmark under ``root``; ``limit`` keeps the first N images of each set (a
    fixed slice). Returns (and with ``out_dir`` writes) the results; mCE when all 15 benchmark corruptions ran."""
    n_cls = getattr(model, "num_classes", None)
    if n_cls != 1000:
        raise ValueError(f"the model has {n_cls} classes; the ImageNet benchmarks score 1000-way outputs")
    found = find_benchmarks(root)
    if not found:
        raise FileNotFoundError(f"no benchmark under {str(root)!r}: expected any of val/, imagenet-c/, imagenet-a/, "
                                "imagenet-r/, imagenet-sketch/, imagenetv2*/")
    if generate_c and "clean" not in found:
        raise FileNotFoundError(f"generate_c needs the clean images under {str(Path(root) / 'val')!r}")
    clean_tf, geo = _transforms(model)
    res: dict[str, Any] = {"sets": {}}

    def run(name: str, data: FolderSet, **kw: Any) -> dict[str, float]:
        if limit is not None:
            data = FolderSet(data.root, data.items[:limit])
        r = evaluate_folder(model, data, batch_size=batch_size, skip_bad=skip_bad, desc=name, **kw)
        res["sets"][name] = r
        return r

    clean = FolderSet.scan(found["clean"]) if "clean" in found else None  # scanned once: clean set and generated C
    if clean is not None:
        run("clean", clean, transform=clean_tf)
    for key in ("imagenet-a", "imagenet-r"):
        if key in found:
            sub = subset_indices(key[-1])
            run(key, FolderSet.scan(found[key], subset=sub), transform=clean_tf, class_subset=sub)
    if "imagenet-sketch" in found:
        run("imagenet-sketch", FolderSet.scan(found["imagenet-sketch"]), transform=clean_tf)
    for key in [k for k in found if k.startswith("imagenet-v2:")]:
        run(key, FolderSet.scan(found[key], labels="int"), transform=clean_tf)
    errors: dict[str, list[float]] = {}
    if "imagenet-c" in found and not generate_c:
        c_tf, _ = _transforms(model, released_c=True)
        for c in corruptions:
            for s in severities:
                d = found["imagenet-c"] / c / str(s)
                if d.is_dir():
                    errors.setdefault(c, []).append(run(f"imagenet-c:{c}:{s}", FolderSet.scan(d), transform=c_tf)["top1_err"])
    elif generate_c and clean is not None:  # checked above: generate_c needs the clean images
        for c in corruptions:
            for s in severities:
                fn = lambda img, path, c=c, s=s: corrupt_image(geo(img), c, s, seed, path.name)  # noqa: E731
                errors.setdefault(c, []).append(run(f"generated-c:{c}:{s}", clean, transform=clean_tf, image_fn=fn)["top1_err"])
    if errors:
        res["corruption_errors"] = errors
        complete = {c: e for c, e in errors.items() if len(e) == 5}
        clean_err = res["sets"].get("clean", {}).get("top1_err")
        if all(c in complete for c in BENCHMARK_CORRUPTIONS):
            res["mce"] = mce(complete, clean_error=clean_err)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "robustness.json").write_text(json.dumps(res, indent=1) + "\n")
        plot_robustness(res, out / "robustness.png")
    return res


def plot_robustness(res: dict[str, Any], path: str | Path) -> Path:
    """Bars: top-1 error per data set; top-1 error per corruption, one bar per severity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = {k: v["top1_err"] for k, v in res["sets"].items() if ":" not in k or k.startswith("imagenet-v2:")}
    errs = res.get("corruption_errors", {})
    fig, axes = plt.subplots(1, 2 if errs else 1, figsize=(13 if errs else 6, 4), squeeze=False)
    ax = axes[0][0]
    ax.bar(list(sets), [100 * v for v in sets.values()], color="tab:blue")
    ax.set_ylabel("top-1 error (%)")
    ax.set_title("error per data set")
    ax.tick_params(axis="x", rotation=30)
    if errs:
        ax = axes[0][1]
        names = list(errs)
        width = 0.8 / 5
        for s in range(5):
            ax.bar([i + (s - 2) * width for i in range(len(names))],
                   [100 * e[s] if len(e) > s else 0 for e in errs.values()], width, label=f"severity {s + 1}")
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("top-1 error (%)")
        ax.set_title("error per corruption and severity")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
