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

A classifier of another class count (the zoo's Fashion-MNIST ViTs) reads ``val/`` and a corrupted copy
``fashion-mnist-c/`` (or ``mnist-c/``) in the same ``<corruption>/<severity>/<class>/img`` layout, class folders in
sorted order (``dslm-zoo data corrupt``), with CE normalised by a baseline model's errors instead of AlexNet's.

Writes ``robustness.json`` and ``robustness.png`` (error per data set; error per corruption and severity).
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .data.images import corrupt_array, pad_image
from .evals.robustness import (
    ALL_CORRUPTIONS, BENCHMARK_CORRUPTIONS, HELD_OUT_CORRUPTIONS, check_corruptions, mce, subset_indices, topk_correct,
)

__all__ = ["FolderSet", "ArraySet", "evaluate_folder", "evaluate_images", "image_data_set", "comparison_table",
           "plot_comparison", "evaluate_robustness", "find_benchmarks", "corrupt_image"]

# the released ImageNet-C, or a corrupted copy of another data set (dslm_zoo.data.images.export_corrupted_folder)
_C_TREES = ("imagenet-c", "fashion-mnist-c", "mnist-c")
_IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm")


def _wnids() -> list[str]:
    from timm.data import ImageNetInfo

    return list(ImageNetInfo().label_names())  # the 1000 sorted wnids of ImageNet-1k


@dataclass
class FolderSet:
    """``(path, target)`` pairs of a class-folder tree. ``labels``: ``'wnid'`` (folder names are ImageNet wnids:
    target = index among the 1000, or among ``subset`` when given), ``'int'`` (folders ``0..999``: target =
    int(name), ImageNet-V2), ``'sorted'`` (ImageFolder's rule for any other classifier: target = position of the
    folder in sorted order; the tree must hold exactly ``num_classes`` folders, so that position means the class)."""

    root: Path
    items: list[tuple[Path, int]]

    @property
    def name(self) -> str:
        return self.root.name

    def __len__(self) -> int:
        return len(self.items)

    def head(self, n: int) -> "FolderSet":
        return FolderSet(self.root, self.items[:n])

    def load(self, i: int) -> tuple[Any, int, Path]:
        """(PIL image, target, path); ``OSError`` / ``UnidentifiedImageError`` when unreadable."""
        from PIL import Image

        path, y = self.items[i]
        with Image.open(path) as im:
            im.load()
            return im.copy(), y, path

    @classmethod
    def scan(cls, root: str | Path, labels: str = "wnid", subset: Sequence[int] | None = None,
             num_classes: int | None = None) -> "FolderSet":
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
        elif labels == "sorted":
            if num_classes is not None and len(folders) != num_classes:
                raise ValueError(f"{str(root)!r} has {len(folders)} class folders but the model has {num_classes} classes")
            target = {f.name: i for i, f in enumerate(folders)}
        else:
            raise ValueError(f"labels must be 'wnid', 'int' or 'sorted', got {labels!r}")
        items = [(p, target[f.name]) for f in folders for p in sorted(f.iterdir()) if p.suffix.lower() in _IMG_EXT]
        if not items:
            raise ValueError(f"{str(root)!r}: the class folders hold no images ({', '.join(_IMG_EXT)})")
        return cls(root, items)


@dataclass
class ArraySet:
    """Grey images held as arrays (``images`` (N, H, W) uint8, ``labels`` (N,)), each padded to ``pad_to`` (the
    image-classification task's centred black border) and served as PIL images: the prepared Fashion-MNIST /
    MNIST splits, or a committed ``.npz`` slice of one."""

    name: str
    images: Any
    labels: Any
    pad_to: int | None = None

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels) or len(self.images) == 0:
            raise ValueError(f"{self.name}: {len(self.images)} images and {len(self.labels)} labels")

    @classmethod
    def from_npz(cls, path: str | Path, pad_to: int | None = None) -> "ArraySet":
        """A ``.npz`` with ``images`` (N, H, W) uint8 and ``labels`` (N,)."""
        with np.load(path) as z:
            missing = {"images", "labels"} - set(z.files)
            if missing:
                raise ValueError(f"{str(path)!r} lacks array(s) {sorted(missing)} (has {z.files})")
            return cls(Path(path).name, np.asarray(z["images"]), np.asarray(z["labels"]), pad_to)

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, n: int) -> "ArraySet":
        return ArraySet(self.name, self.images[:n], self.labels[:n], self.pad_to)

    def load(self, i: int) -> tuple[Any, int, str]:
        from PIL import Image

        img = np.asarray(self.images[i])
        return Image.fromarray(pad_image(img, self.pad_to) if self.pad_to else img), int(self.labels[i]), f"{i:05d}.png"


def corrupt_image(img: Any, corruption: str, severity: int, seed: int, key: str) -> Any:
    """``img`` (PIL, the model's input size) corrupted by ``imagecorruptions``, seeded from (seed, corruption,
    severity, key), saved and re-read as JPEG quality 85 (``make_imagenet_c.py``). The library refuses images
    under 32x32."""
    from PIL import Image

    arr = corrupt_array(np.asarray(img.convert("RGB")), corruption, severity, seed, key)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=85, optimize=True)
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
def evaluate_folder(model: nn.Module, data: FolderSet | ArraySet, *, transform: Callable,
                    class_subset: Sequence[int] | None = None, image_fn: Callable[[Any, Any], Any] | None = None,
                    batch_size: int = 64, skip_bad: bool = False, desc: str = "") -> dict[str, float]:
    """Top-1 / top-5 accuracy and error of ``model`` on ``data`` (images through ``image_fn`` then ``transform``,
    in the model's colour mode: grey for ``in_chans == 1``). An unreadable image raises naming the file, or is
    skipped and counted with ``skip_bad``."""
    from PIL import UnidentifiedImageError
    from tqdm.auto import tqdm

    model.eval()
    mode = "L" if getattr(model, "in_chans", 3) == 1 else "RGB"
    ks = (1, min(5, getattr(model, "num_classes", 5) or 5))
    hits = dict.fromkeys(ks, 0)
    n = skipped = 0
    for i in tqdm(range(0, len(data), batch_size), desc=desc or data.name, disable=None):
        xs, ys = [], []
        for j in range(i, min(i + batch_size, len(data))):
            try:
                img, y, key = data.load(j)
            except (OSError, UnidentifiedImageError) as e:
                if skip_bad:
                    skipped += 1
                    continue
                path = data.items[j][0] if isinstance(data, FolderSet) else f"{data.name}[{j}]"
                raise ValueError(f"unreadable image {str(path)!r}: {e}") from None
            img = img.convert("RGB" if image_fn is not None else mode)  # the corruption library works in RGB
            if image_fn is not None:
                img = image_fn(img, key).convert(mode)
            xs.append(transform(img))
            ys.append(y)
        if not xs:
            continue
        logits = model(torch.stack(xs)).float()
        got = topk_correct(logits, torch.tensor(ys), ks=ks, class_subset=class_subset)
        for k in ks:
            hits[k] += got[k]
        n += len(ys)
    if n == 0:
        raise ValueError(f"{data.name!r}: no readable image ({skipped} skipped)")
    top5 = hits[ks[1]] / n
    return {"top1": hits[1] / n, "top5": top5, "top1_err": 1 - hits[1] / n, "top5_err": 1 - top5,
            "images": n, "skipped": skipped}


def evaluate_images(model: nn.Module, data: FolderSet | ArraySet, *, batch_size: int = 256, desc: str = "") -> dict[str, float]:
    """Clean top-1 / top-5 of ``model`` on ``data`` with its own preprocessing (pretrained cfg -> timm transform)."""
    return evaluate_folder(model, data, transform=_transforms(model)[0], batch_size=batch_size, desc=desc)


def image_data_set(source: str, model: nn.Module, split: str = "test") -> ArraySet:
    """``source``: a prepared image data set (``fashion-mnist``, ``mnist``: its ``split``) or a ``.npz`` slice;
    the images padded to the model's input size."""
    from .data.images import IMAGE_SETS, load_image_data

    size = int(getattr(model, "pretrained_cfg").input_size[-1])
    if source in IMAGE_SETS:
        d = load_image_data(source)
        if split not in d.images:
            raise ValueError(f"{source} has splits {sorted(d.images)}, not {split!r}")
        return ArraySet(f"{source}:{split}", d.images[split], d.labels[split], pad_to=size)
    if source.endswith(".npz"):
        return ArraySet.from_npz(source, pad_to=size)
    raise ValueError(f"unknown image source {source!r}: a prepared data set ({', '.join(IMAGE_SETS)}) or a .npz file")


def find_benchmarks(root: str | Path) -> dict[str, Path]:
    """The benchmark folders present under ``root`` (see the module docstring for the names)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{str(root)!r} is not a directory")
    found: dict[str, Path] = {}
    for key, names in (("clean", ("val", "imagenet/val")), ("imagenet-c", _C_TREES), ("imagenet-a", ("imagenet-a",)),
                       ("imagenet-r", ("imagenet-r",)), ("imagenet-sketch", ("imagenet-sketch", "sketch"))):
        for n in names:
            if (root / n).is_dir():
                found[key] = root / n
                break
    for p in sorted(root.glob("imagenetv2*")):
        if p.is_dir():
            found[f"imagenet-v2:{p.name}"] = p
    return found


def _baseline_errors(baseline: Mapping[str, Any]) -> tuple[dict[str, list[float]], float | None]:
    """(corruption -> 5 errors, clean error) of a reference model's ``robustness.json``, benchmark corruptions only."""
    errs = baseline.get("corruption_errors")
    if not isinstance(errs, Mapping) or not errs:
        raise ValueError("the baseline results hold no corruption_errors: pass the robustness.json of a C evaluation")
    errs = {c: list(e) for c, e in errs.items() if c in BENCHMARK_CORRUPTIONS and len(e) == 5}
    return errs, _clean_error(baseline)


def _clean_error(res: Mapping[str, Any]) -> float | None:
    """The clean top-1 error of a ``robustness.json`` result, if it has a clean set."""
    return res.get("sets", {}).get("clean", {}).get("top1_err")


def evaluate_robustness(model: nn.Module, root: str | Path, *, generate_c: bool = False,
                        corruptions: Sequence[str] = BENCHMARK_CORRUPTIONS, severities: Sequence[int] = (1, 2, 3, 4, 5),
                        limit: int | None = None, seed: int = 0, batch_size: int = 64, skip_bad: bool = False,
                        baseline: Mapping[str, Any] | None = None, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Evaluate ``model`` on every benchmark under ``root``; ``limit`` keeps the first N images of each set (a
    fixed slice). Returns (and with ``out_dir`` writes) the results.

    A 1000-way model reads ImageNet trees (wnid folders) and gets mCE against AlexNet once all 15 benchmark
    corruptions ran. Any other classifier reads ``val/`` and a ``*-c/`` tree whose class folders, in sorted order,
    are its classes (:func:`dslm_zoo.data.images.export_corrupted_folder` writes one); ImageNet-A/R/Sketch/V2
    need 1000-way outputs and are listed under ``"skipped"``. AlexNet normalisation means nothing off ImageNet:
    there, pass ``baseline`` (another model's results) to get CE and mCE normalised by that model's errors."""
    check_corruptions(corruptions, severities)
    n_cls = getattr(model, "num_classes", None)
    if not isinstance(n_cls, int) or n_cls < 2:
        raise ValueError(f"the model has {n_cls!r} classes: expected a classifier (model.num_classes >= 2)")
    imagenet = n_cls == 1000
    found = find_benchmarks(root)
    res: dict[str, Any] = {"model": getattr(getattr(model, "pretrained_cfg", None), "name", None), "sets": {}}
    if not imagenet:
        res["skipped"] = sorted(k for k in found if k not in ("clean", "imagenet-c"))
        found = {k: v for k, v in found.items() if k in ("clean", "imagenet-c")}
    if not found:
        want = ("val/, a -c/ tree (" + ", ".join(_C_TREES) + ")" if not imagenet else
                "any of val/, imagenet-c/, imagenet-a/, imagenet-r/, imagenet-sketch/, imagenetv2*/")
        raise FileNotFoundError(f"no benchmark for a {n_cls}-class model under {str(root)!r}: expected {want}")
    if generate_c and "clean" not in found:
        raise FileNotFoundError(f"generate_c needs the clean images under {str(Path(root) / 'val')!r}")
    labels = "wnid" if imagenet else "sorted"
    scan = lambda d, **kw: FolderSet.scan(d, labels=labels, num_classes=None if imagenet else n_cls, **kw)  # noqa: E731
    clean_tf, geo = _transforms(model)

    def run(name: str, data: FolderSet, **kw: Any) -> dict[str, float]:
        if limit is not None:
            data = data.head(limit)
        r = evaluate_folder(model, data, batch_size=batch_size, skip_bad=skip_bad, desc=name, **kw)
        res["sets"][name] = r
        return r

    clean = scan(found["clean"]) if "clean" in found else None  # scanned once: clean set and generated C
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
    c_name = found["imagenet-c"].name if "imagenet-c" in found else "imagenet-c"
    if "imagenet-c" in found and not generate_c:
        c_tf, _ = _transforms(model, released_c=True)
        for c in corruptions:
            for s in severities:
                d = found["imagenet-c"] / c / str(s)
                if d.is_dir():
                    errors.setdefault(c, []).append(run(f"{c_name}:{c}:{s}", scan(d), transform=c_tf)["top1_err"])
    elif generate_c and clean is not None:  # checked above: generate_c needs the clean images
        for c in corruptions:
            for s in severities:
                fn = lambda img, key, c=c, s=s: corrupt_image(geo(img), c, s, seed, Path(key).name)  # noqa: E731
                errors.setdefault(c, []).append(run(f"generated-c:{c}:{s}", clean, transform=clean_tf, image_fn=fn)["top1_err"])
    if errors:
        res["corruption_errors"] = errors
        complete = {c: e for c, e in errors.items() if len(e) == 5}
        clean_err = _clean_error(res)
        mean = _mean_error({"corruption_errors": complete}, BENCHMARK_CORRUPTIONS)
        if mean is not None:  # test.py's "mCE (unnormalized)": the mean top-1 error over corruptions and severities, percent
            res["mean_error"] = mean
        if baseline is not None:
            b_errs, b_clean = _baseline_errors(baseline)
            res["mce"] = mce(complete, clean_error=clean_err, baseline=b_errs, baseline_clean_error=b_clean)
            res["mce"]["baseline"] = baseline.get("model")
        elif imagenet and all(c in complete for c in BENCHMARK_CORRUPTIONS):
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
        _grouped_bars(axes[0][1], list(errs), {f"severity {s + 1}": [100 * e[s] if len(e) > s else 0 for e in errs.values()]
                                               for s in range(5)}, "top-1 error (%)", "error per corruption and severity")
    return _save(fig, path)


def _grouped_bars(ax: Any, names: Sequence[str], series: Mapping[str, Sequence[float]], ylabel: str, title: str) -> None:
    """One group of bars per name, one bar per series, names slanted under the axis."""
    width = 0.8 / max(len(series), 1)
    for k, (label, values) in enumerate(series.items()):
        ax.bar([i + (k - (len(series) - 1) / 2) * width for i in range(len(names))], values, width, label=label)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)


def _save(fig: Any, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def _label(res: Mapping[str, Any], i: int) -> str:
    return str(res.get("model") or f"model {i}")


def _pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _mean_error(res: Mapping[str, Any], names: Sequence[str]) -> float | None:
    """Mean top-1 error (percent) over ``names`` x the severities present."""
    errs = res.get("corruption_errors", {})
    got = [sum(errs[c]) / len(errs[c]) for c in names if errs.get(c)]
    return 100.0 * sum(got) / len(got) if got else None


def comparison_table(results: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table of several ``robustness.json`` results: clean error, mean corruption error over the
    benchmark corruptions and over the held-out ones (percent, severities 1..5), and mCE / relative mCE against
    the baseline each was scored with (``--baseline``), where it was."""
    rows = ["| model | clean error (%) | mean C error, 15 benchmark (%) | mean C error, 4 held out (%) | "
            "mCE vs baseline | relative mCE | baseline |", "|---|---:|---:|---:|---:|---:|---|"]
    for i, r in enumerate(results):
        m = r.get("mce", {})
        clean = _clean_error(r)
        cells = [_label(r, i), _pct(None if clean is None else 100.0 * clean),
                 _pct(_mean_error(r, BENCHMARK_CORRUPTIONS)), _pct(_mean_error(r, HELD_OUT_CORRUPTIONS)),
                 _pct(m.get("mCE"), 1), _pct(m.get("relative_mCE"), 1), str(m.get("baseline") or "-")]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot_comparison(results: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Left: mean top-1 error per corruption (over severities), one bar per model. Right: mean error over the
    15 benchmark corruptions against severity, clean error at severity 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c for c in ALL_CORRUPTIONS if any(c in r.get("corruption_errors", {}) for r in results)]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(14, 4.2), gridspec_kw={"width_ratios": [3, 1]})
    series = {}
    for i, r in enumerate(results):
        errs = r.get("corruption_errors", {})
        series[_label(r, i)] = [_mean_error(r, [c]) or 0 for c in names]
        bench = [errs[c] for c in BENCHMARK_CORRUPTIONS if len(errs.get(c, ())) == 5]
        if bench:
            clean = _clean_error(r)
            xs, ys = list(range(1, 6)), [100 * sum(e[s] for e in bench) / len(bench) for s in range(5)]
            if clean is not None:
                xs, ys = [0] + xs, [100 * clean] + ys
            ax2.plot(xs, ys, marker="o", label=_label(r, i))
    _grouped_bars(ax, names, series, "top-1 error (%), mean over severities", "error per corruption")
    ax2.set_xlabel("severity (0 = clean)")
    ax2.set_ylabel("mean top-1 error (%), 15 corruptions")
    ax2.set_title("error against severity")
    ax2.legend(fontsize=7)
    return _save(fig, path)
