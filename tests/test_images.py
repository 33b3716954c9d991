"""Image data: IDX files read from a Debian package the test builds, the image_classification task, a ViT run."""
from __future__ import annotations

import gzip
import shutil
import struct
import subprocess

import numpy as np
import pytest
import torch

from dslm_zoo.data.images import load_image_data, prepare_images, read_idx


def _idx(arr: np.ndarray) -> bytes:
    return gzip.compress(bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes())


@pytest.fixture
def fashion(tmp_path, monkeypatch):
    """A Fashion-MNIST-layout package whose class is readable from the image: class k = a bright k-th row band."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("needs dpkg-deb")
    rng = np.random.default_rng(0)
    pkg = tmp_path / "pkg"
    d = pkg / "usr/share/datasets/fashion-mnist"
    d.mkdir(parents=True)
    for stem, n in (("train", 600), ("t10k", 100)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            images[i, 2 + 2 * k : 4 + 2 * k, 4:24] = 250
        (d / f"{stem}-images-idx3-ubyte.gz").write_bytes(_idx(images))
        (d / f"{stem}-labels-idx1-ubyte.gz").write_bytes(_idx(labels))
    (pkg / "DEBIAN").mkdir()
    (pkg / "DEBIAN/control").write_text("Package: dataset-fashion-mnist\nVersion: 1.0-test\nArchitecture: all\n"
                                        "Maintainer: t <t@example.org>\nDescription: test\n")
    deb = tmp_path / "fm.deb"
    subprocess.run(["dpkg-deb", "--build", str(pkg), str(deb)], check=True, capture_output=True)
    monkeypatch.setenv("DSLM_ZOO_DATA", str(tmp_path / "cache"))
    prepare_images("fashion-mnist", local={"dataset-fashion-mnist": str(deb)})
    return tmp_path


def test_idx_reader_and_prepared_arrays(fashion):
    data = load_image_data("fashion-mnist")
    assert data.images["train"].shape == (600, 28, 28) and data.labels["test"].shape == (100,)
    assert data.classes[9] == "Ankle boot" and 0 < data.mean_std[0] < 1
    assert data.manifest["packages"][0]["version"] == "1.0-test"
    bad = fashion / "bad.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + b"\x00" * 8))
    with pytest.raises(ValueError, match="not an IDX file of uint8"):
        read_idx(bad)


def test_vit_learns_the_toy_classes_and_exports_its_preprocessing(fashion):
    import dslm_zoo
    from dslm_zoo.train import Trainer, load_recipe
    from dslm_zoo.train.config import Recipe

    recipe = Recipe.from_dict({
        "model": {"name": "dslm_vit_tiny", "kwargs": {"depth": 2, "embed_dim": 64, "num_heads": 2, "patch_size": 4, "drop_rate": 0.0}},
        "task": {"name": "image_classification", "kwargs": {"augment": False}},  # a crop would move the class band
        "data": {"name": "fashion-mnist", "kwargs": {"img_size": 32}},
        "optim": {"lr": 2e-3}, "schedule": {"warmup_steps": 5},
        "train": {"steps": 80, "batch_size": 32, "eval_every": 40, "checkpoint_every": 0},
    }, "test")
    t = Trainer(recipe, fashion / "run")
    res = t.run()
    assert res.eval["eval_acc"] > 0.5, res.eval  # 10 classes: chance is 0.1
    m = dslm_zoo.create_model(f"local-dir:{fashion / 'run' / 'export'}")
    assert m.pretrained_cfg.input_size == (1, 32, 32) and m.pretrained_cfg.label_names[0] == "T-shirt/top"
    b = t.task.collate([(-1, t.task.datasets["validation"][0])], 0)
    assert b["images"].shape == (1, 1, 32, 32)
    t.task.augment = True
    a1 = t.task.collate([(7, t.task.datasets["train"][0])], 0)["images"]
    a2 = t.task.collate([(7, t.task.datasets["train"][0])], 0)["images"]
    assert torch.equal(a1, a2)  # augmentation is a function of the draw: exact resume
