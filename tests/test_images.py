"""Image data: IDX files read from a Debian package the test builds, the image_classification task, a ViT run."""
from __future__ import annotations

import gzip
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dslm_zoo.data.images import load_image_data, prepare_images, read_idx

ROOT = Path(__file__).resolve().parent.parent


def _idx(arr: np.ndarray) -> bytes:
    return gzip.compress(bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes())


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """A Fashion-MNIST-layout package whose class is readable from the image: class k = a bright k-th row band."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("needs dpkg-deb")
    tmp_path = tmp_path_factory.mktemp("fashion")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DSLM_ZOO_DATA", str(tmp_path / "cache"))
        yield _build_fashion(tmp_path)


def _build_fashion(tmp_path):
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


@pytest.fixture(scope="module")
def vit_run(fashion):
    from dslm_zoo.train import Trainer
    from dslm_zoo.train.config import Recipe

    recipe = Recipe.from_dict({
        "model": {"name": "dslm_vit_tiny", "kwargs": {"depth": 2, "embed_dim": 64, "num_heads": 2, "patch_size": 4, "drop_rate": 0.0}},
        "task": {"name": "image_classification", "kwargs": {"augment": False}},  # a crop would move the class band
        "data": {"name": "fashion-mnist", "kwargs": {"img_size": 32}},
        "optim": {"lr": 2e-3}, "schedule": {"warmup_steps": 5},
        "train": {"steps": 80, "batch_size": 32, "eval_every": 40, "checkpoint_every": 0},
    }, "test")
    t = Trainer(recipe, fashion / "run")
    return t, t.run()


def test_vit_learns_the_toy_classes_and_exports_its_preprocessing(fashion, vit_run):
    import dslm_zoo
    from dslm_zoo.robustness import evaluate_images, image_data_set

    t, res = vit_run
    assert res.eval["eval_acc"] > 0.5, res.eval  # 10 classes: chance is 0.1
    m = dslm_zoo.create_model(f"local-dir:{fashion / 'run' / 'export'}")
    assert m.pretrained_cfg.input_size == (1, 32, 32) and m.pretrained_cfg.label_names[0] == "T-shirt/top"
    b = t.task.collate([(-1, t.task.datasets["validation"][0])], 0)
    assert b["images"].shape == (1, 1, 32, 32)
    t.task.augment = True
    a1 = t.task.collate([(7, t.task.datasets["train"][0])], 0)["images"]
    a2 = t.task.collate([(7, t.task.datasets["train"][0])], 0)["images"]
    assert torch.equal(a1, a2)  # augmentation is a function of the draw: exact resume

    # a user scoring the export through its pretrained cfg (timm's transform) gets the trainer's own eval accuracy:
    # same padding, same normalisation
    user = evaluate_images(m, image_data_set("fashion-mnist", m, "test"))
    assert user["images"] == 100 and user["top1"] == pytest.approx(res.eval["eval_acc"], abs=1e-9)


def test_corrupted_copy_and_robustness_against_a_baseline(fashion, vit_run, tmp_path):
    import json

    from PIL import Image

    import dslm_zoo
    from dslm_zoo.data.images import export_corrupted_folder
    from dslm_zoo.robustness import evaluate_robustness

    data = load_image_data("fashion-mnist")
    root = export_corrupted_folder(data, tmp_path / "fmc", corruptions=["gaussian_noise", "contrast"], seed=3,
                                   progress=False)
    man = json.loads((root / "manifest.json").read_text())
    assert man["images"] == 100 and man["seed"] == 3 and man["img_size"] == 32
    first = next((root / "fashion-mnist-c/gaussian_noise/5").glob("*/00000.png"))
    assert first.parent.name.startswith(f"{int(data.labels['test'][0]):02d}_")  # class folders in index order
    a = np.asarray(Image.open(first))
    assert a.shape == (32, 32) and a[:2].any()  # the noise reaches the padded border
    (root / "imagenet-a").mkdir()  # a 1000-way benchmark next to it: skipped for a 10-class model, not an error
    m = dslm_zoo.create_model(f"local-dir:{fashion / 'run' / 'export'}")
    r = evaluate_robustness(m, root, corruptions=["gaussian_noise", "contrast"], out_dir=tmp_path / "out")
    assert r["skipped"] == ["imagenet-a"] and "mce" not in r  # no AlexNet normalisation off ImageNet
    assert set(r["corruption_errors"]) == {"gaussian_noise", "contrast"} and r["sets"]["clean"]["images"] == 100
    assert (tmp_path / "out" / "robustness.png").stat().st_size > 0
    # normalised by its own errors, a model's CE is 100 for every corruption
    self_ref = evaluate_robustness(m, root, corruptions=["gaussian_noise", "contrast"], baseline=r,
                                   out_dir=tmp_path / "self")
    assert self_ref["mce"]["mCE"] == pytest.approx(100.0)
    assert set(self_ref["mce"]["corruptions"]) == {"gaussian_noise", "contrast"}
    out = subprocess.run([sys.executable, str(ROOT / "eval" / "imagenet_robustness.py"), "compare",
                          str(tmp_path / "out" / "robustness.json"), str(tmp_path / "self" / "robustness.json"),
                          "--plot", str(tmp_path / "cmp.png")], capture_output=True, text=True, check=True).stdout
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| dslm_vit_tiny")]
    assert len(rows) == 2 and rows[0][4] == "-" and rows[1][4] == "100.0"  # mCE: only the one with a baseline
    assert rows[0][2] == rows[1][2] == f"{r['mean_error']:.2f}" and (tmp_path / "cmp.png").stat().st_size > 0
    # a tree whose class folders are not the model's classes is refused
    shutil.rmtree(next((root / "val").iterdir()))
    with pytest.raises(ValueError, match="9 class folders but the model has 10 classes"):
        evaluate_robustness(m, root, corruptions=["contrast"], severities=[1])
    with pytest.raises(ValueError, match="unknown corruption"):
        evaluate_robustness(m, root, corruptions=["gaussian_nois"])
    with pytest.raises(ValueError, match="imagecorruptions refuses"):
        export_corrupted_folder(data, tmp_path / "x", img_size=28)


def test_image_release_records_test_and_slice_accuracy(fashion, vit_run, tmp_path):
    import json

    from dslm_zoo.release import release_run

    out = release_run(fashion / "run", "toy_fm", repo_root=tmp_path, progress=False)
    entry, = json.loads((tmp_path / "dslm_zoo" / "models" / "releases.json").read_text())
    test, sliced = entry["metrics"]["fashion-mnist:test"], entry["metrics"]["fashion-mnist:test-slice"]
    assert test["images"] == 100 and sliced["images"] == 256 and 0 <= sliced["top1"] <= 1
    assert test["top1"] == pytest.approx(vit_run[1].eval["eval_acc"], abs=0.02)  # bf16-stored weights
    card = (out / "README.md").read_text()
    assert "dslm-zoo eval classify dslm_vit_tiny.toy_fm --data tests/data/fashion_mnist_test_first256.npz" in card
    gold = json.loads((tmp_path / "tests" / "golden" / "dslm_vit_tiny.toy_fm.json").read_text())
    assert gold["logits"] == "[:, :8] of the output" and len(gold["values"]) == 2
