"""ImageNet robustness metrics: mCE test vectors (shared/spec/evals.md 3.1), the 200-class masks from timm's files,
the ImageNet-V2 folder trap, and the scoring command's bad inputs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dslm_zoo.evals.robustness import (
    BENCHMARK_CORRUPTIONS,
    alexnet_errors,
    mce,
    subset_indices,
    topk_correct,
    v2_folder_to_class,
)

ROOT = Path(__file__).resolve().parent.parent


def _uniform(e: float) -> dict:
    return {c: [e] * 5 for c in BENCHMARK_CORRUPTIONS}


def test_alexnet_table_is_complete_and_its_means_match_the_published_normalisers():
    t = alexnet_errors()
    assert list(t) == list(BENCHMARK_CORRUPTIONS)
    assert sum(sum(v) / 5 for v in t.values()) / 15 == pytest.approx(0.788993, abs=1e-6)


@pytest.mark.parametrize("errors, want", [
    (alexnet_errors(), 100.0),
    ({c: [x / 2 for x in v] for c, v in alexnet_errors().items()}, 50.0),
    (_uniform(0.40), 51.738058399354735),
])
def test_mce_vectors(errors, want):
    assert mce(errors)["mCE"] == pytest.approx(want, rel=1e-12)


def test_relative_mce_vector_and_unnormalised_mean():
    out = mce(_uniform(0.40), clean_error=0.25)
    assert out["relative_mCE"] == pytest.approx(48.84257353029084, rel=1e-12)
    assert out["mean_error"] == pytest.approx(40.0)


def test_held_out_corruptions_are_reported_but_not_averaged():
    errors = {**_uniform(0.40), "spatter": [0.9] * 5}
    out = mce(errors)
    assert out["mCE"] == pytest.approx(51.738058399354735) and out["per_corruption"]["spatter"] == {"mean_error": 90.0}


def test_a_control_model_can_be_the_normaliser():
    """Fashion-MNIST-C: CE of the deep model normalised by the shallow control's errors (< 100 = more robust)."""
    control = {"fog": [0.2, 0.3, 0.4, 0.5, 0.6], "contrast": [0.1] * 5}
    deep = {"fog": [0.1, 0.15, 0.2, 0.25, 0.3], "contrast": [0.1] * 5}
    out = mce(deep, baseline=control)
    assert out["per_corruption"]["fog"]["CE"] == pytest.approx(50.0) and out["mCE"] == pytest.approx(75.0)
    # the control's contrast errors equal its clean error: relative CE is undefined there, not a division by zero
    rel = mce(deep, clean_error=0.1, baseline=control, baseline_clean_error=0.1)
    assert "relative_CE" not in rel["per_corruption"]["contrast"] and rel["relative_mCE_corruptions"] == ["fog"]
    assert rel["relative_mCE"] == pytest.approx(100.0 * (0.0 + 0.05 + 0.1 + 0.15 + 0.2) / (0.1 + 0.2 + 0.3 + 0.4 + 0.5))


@pytest.mark.parametrize("bad, match", [
    ({c: [0.4] * 5 for c in BENCHMARK_CORRUPTIONS[:-1]}, "lack corruption"),
    ({**_uniform(0.4), "rain": [0.4] * 5}, "unknown corruption 'rain'"),
    ({**_uniform(0.4), "fog": [0.4] * 4}, "5 numbers"),
    ({**_uniform(0.4), "fog": [40.0] * 5}, "percent"),
])
def test_bad_errors_are_refused_clearly(bad, match):
    with pytest.raises(ValueError, match=match):
        mce(bad)


def test_subset_masks_come_from_timm_and_index_the_sorted_wnids():
    a, r = subset_indices("a"), subset_indices("r")
    assert (len(a), len(r)) == (200, 200) and a[:2] == [6, 11] and r[:2] == [1, 2]
    assert len(set(a) & set(r)) == 86


def test_masked_accuracy_equals_plain_accuracy_when_every_class_is_in_the_subset():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 1000, generator=g)
    targets = torch.randint(0, 1000, (64,), generator=g)
    logits[torch.arange(32), targets[:32]] += 10.0  # half of them right
    assert topk_correct(logits, targets, class_subset=range(1000)) == topk_correct(logits, targets)
    # a 200-class subset: targets index the subset; the masked columns are the subset's, in order
    sub = subset_indices("r")
    t_sub = torch.randint(0, 200, (64,), generator=g)
    logits2 = torch.randn(64, 1000, generator=g)
    logits2[torch.arange(64), torch.tensor(sub)[t_sub]] += 10.0
    assert topk_correct(logits2, t_sub, ks=(1,), class_subset=sub) == {1: 64}
    with pytest.raises(ValueError, match="classes"):
        topk_correct(torch.randn(2, 100), torch.tensor([0, 1]), class_subset=sub)


def test_v2_folder_trap():
    m = v2_folder_to_class()
    folders = sorted(str(i) for i in range(1000))  # what ImageFolder does with folders 0..999
    assert folders[:4] == ["0", "1", "10", "100"] and m[:4] == [0, 1, 10, 100]
    assert all(m[k] == int(folders[k]) for k in range(1000)) and sorted(m) == list(range(1000))


def test_scoring_command_prints_json_and_names_the_file_on_errors(tmp_path):
    good = tmp_path / "errors.json"
    good.write_text(json.dumps(_uniform(0.40)))
    run = lambda *a: subprocess.run([sys.executable, str(ROOT / "eval" / "imagenet_robustness.py"), *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    out = run("mce", str(good), "--clean-error", "0.25")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["mCE"] == pytest.approx(51.738058399354735) and got["relative_mCE"] == pytest.approx(48.84257353029084)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    out = run("mce", str(bad))
    assert out.returncode == 2 and "bad.json" in out.stderr and "Traceback" not in out.stderr
