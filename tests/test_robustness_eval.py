"""``dslm-zoo eval robustness``: the benchmark folders found under a root, their label mappings (wnids, 200-class
subsets, ImageNet-V2 integers), released and generated ImageNet-C, and the bad inputs. Trees of a few 32x32 PNGs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import dslm_zoo
from dslm_zoo.evals.robustness import ALL_CORRUPTIONS, subset_indices
from dslm_zoo.robustness import FolderSet, corrupt_image, evaluate_folder, evaluate_robustness, find_benchmarks


def _wnids() -> list[str]:
    from timm.data import ImageNetInfo

    return list(ImageNetInfo().label_names())


def _tree(root, folders, per=2, seed=0):
    rng = np.random.default_rng(seed)
    for f in folders:
        d = root / f
        d.mkdir(parents=True, exist_ok=True)
        for k in range(per):
            Image.fromarray((rng.random((32, 32, 3)) * 255).astype("uint8")).save(d / f"img{k}.png")
    return root


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return dslm_zoo.create_model("dslm_vit_tiny", num_classes=1000, drop_rate=0.0).eval()


def test_finds_every_benchmark_and_maps_labels(tmp_path, model):
    w = _wnids()
    _tree(tmp_path / "val", w[:3])
    _tree(tmp_path / "imagenet-r", [w[i] for i in subset_indices("r")[:2]])
    _tree(tmp_path / "imagenet-sketch", w[5:7])
    _tree(tmp_path / "imagenetv2-matched-frequency-format-val", ["0", "10", "100", "2"])
    _tree(tmp_path / "imagenet-c" / "fog" / "3", w[:2])
    found = find_benchmarks(tmp_path)
    assert set(found) == {"clean", "imagenet-r", "imagenet-sketch", "imagenet-c",
                          "imagenet-v2:imagenetv2-matched-frequency-format-val"}
    v2 = FolderSet.scan(found["imagenet-v2:imagenetv2-matched-frequency-format-val"], labels="int")
    assert sorted({t for _, t in v2.items}) == [0, 2, 10, 100]  # by integer value, not string order
    r = FolderSet.scan(found["imagenet-r"], subset=subset_indices("r"))
    assert sorted({t for _, t in r.items}) == [0, 1]  # targets index the 200-class subset
    res = evaluate_robustness(model, tmp_path, corruptions=["fog"], severities=[3], out_dir=tmp_path / "out")
    assert set(res["sets"]) == {"clean", "imagenet-r", "imagenet-sketch", "imagenet-v2:imagenetv2-matched-frequency-format-val",
                                "imagenet-c:fog:3"}
    assert res["sets"]["clean"]["images"] == 6 and res["corruption_errors"] == {"fog": [res["sets"]["imagenet-c:fog:3"]["top1_err"]]}
    assert "mce" not in res  # 1 of the 15 corruptions: no mCE is claimed
    assert json.loads((tmp_path / "out" / "robustness.json").read_text())["sets"]["clean"]["images"] == 6
    assert (tmp_path / "out" / "robustness.png").stat().st_size > 1000


def test_generated_corruptions_are_reproducible(tmp_path, model):
    img = Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype("uint8"))
    a = np.asarray(corrupt_image(img, "gaussian_noise", 3, seed=0, key="x.png"))
    b = np.asarray(corrupt_image(img, "gaussian_noise", 3, seed=0, key="x.png"))
    c = np.asarray(corrupt_image(img, "gaussian_noise", 3, seed=1, key="x.png"))
    assert a.shape == (32, 32, 3) and np.array_equal(a, b) and not np.array_equal(a, c)
    for name in ALL_CORRUPTIONS:  # every corruption, including those that keep their own generator
        twice = [np.asarray(corrupt_image(img, name, 3, seed=0, key="x.png")) for _ in range(2)]
        assert np.array_equal(*twice), name
    _tree(tmp_path / "val", _wnids()[:2])
    r1 = evaluate_robustness(model, tmp_path, generate_c=True, corruptions=["contrast"], severities=[1, 5])
    r2 = evaluate_robustness(model, tmp_path, generate_c=True, corruptions=["contrast"], severities=[1, 5])
    assert r1["corruption_errors"] == r2["corruption_errors"] and len(r1["corruption_errors"]["contrast"]) == 2


def test_bad_inputs_get_clear_errors(tmp_path, model):
    _tree(tmp_path / "a" / "val", ["n99999999"])
    with pytest.raises(ValueError, match="not ImageNet-1k wnids"):
        evaluate_robustness(model, tmp_path / "a")
    (tmp_path / "b" / "val" / _wnids()[0]).mkdir(parents=True)
    with pytest.raises(ValueError, match="hold no images"):
        evaluate_robustness(model, tmp_path / "b")
    (tmp_path / "c").mkdir()
    with pytest.raises(FileNotFoundError, match="no benchmark"):
        evaluate_robustness(model, tmp_path / "c")
    _tree(tmp_path / "d" / "imagenet-a", [_wnids()[1]])  # tench's neighbour is no ImageNet-A class
    with pytest.raises(ValueError, match="outside the 200-class subset"):
        evaluate_robustness(model, tmp_path / "d")
    ten = dslm_zoo.create_model("dslm_vit_tiny")  # a 10-class model: ImageNet-A means nothing to it
    with pytest.raises(FileNotFoundError, match="no benchmark for a 10-class model"):
        evaluate_robustness(ten, tmp_path / "d")
    bad = _tree(tmp_path / "e" / "val", [_wnids()[0]])
    with pytest.raises(ValueError, match="1 class folders but the model has 10 classes"):
        evaluate_robustness(ten, tmp_path / "e")
    (bad / _wnids()[0] / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png"):
        evaluate_robustness(model, tmp_path / "e")
    res = evaluate_robustness(model, tmp_path / "e", skip_bad=True)
    assert res["sets"]["clean"]["skipped"] == 1 and res["sets"]["clean"]["images"] == 2


def test_folder_eval_counts_top1_and_top5(tmp_path, model):
    w = _wnids()
    data = FolderSet.scan(_tree(tmp_path, w[:2], per=3))
    r = evaluate_folder(model, data, transform=lambda im: torch.zeros(3, 32, 32), batch_size=4)
    assert r["images"] == 6 and 0 <= r["top1"] <= r["top5"] <= 1 and r["top1_err"] == pytest.approx(1 - r["top1"])
