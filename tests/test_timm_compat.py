"""timm treats our ViTs as its own: pretrained cfgs in its registry, its data config and transforms, its names."""
from __future__ import annotations

import pytest
import timm
import torch

import dslm_zoo  # noqa: F401  (registers the ViTs into timm)


@pytest.mark.parametrize("name", ["dslm_vit_tiny", "dslm_vit_fm_48L_64D", "dslm_vit_base"])
def test_pretrained_cfg_is_in_timms_registry(name):
    cfg = timm.models.get_pretrained_cfg(name)
    ours = dslm_zoo.get_pretrained_cfg(name)
    assert cfg is not None and cfg.input_size == ours.input_size and cfg.num_classes == ours.num_classes
    assert cfg.first_conv == "embed.patch_embed.proj" and cfg.classifier == "head"
    assert name in timm.list_models("dslm_vit*")


def test_timm_data_config_and_transform_from_the_model():
    m = timm.create_model("dslm_vit_tiny")
    cfg = timm.data.resolve_model_data_config(m)
    assert cfg["input_size"] == (3, 32, 32) and cfg["crop_pct"] == 1.0 and cfg["interpolation"] == "bicubic"
    t = timm.data.create_transform(**cfg)
    from PIL import Image

    x = t(Image.new("RGB", (40, 48), (120, 30, 200)))
    assert x.shape == (3, 32, 32) and m(x[None]).shape == (1, 10)
    base = timm.data.resolve_data_config(model=timm.create_model("dslm_vit_base", pretrained=False, depth=1))
    assert base["crop_pct"] == 0.9 and base["input_size"] == (3, 224, 224)


def test_timm_model_attributes():
    m = dslm_zoo.create_model("dslm_vit_tiny", depth=1)
    assert m.default_cfg["input_size"] == (3, 32, 32) and m.default_cfg["first_conv"] == "embed.patch_embed.proj"
    assert m.get_classifier() is m.head and m.in_chans == 3
    m.eval().reset_classifier(4)
    assert not m.head.training  # a new head follows the model's mode (timm's contract)
    assert m.pretrained_cfg["num_classes"] == 10 and "mean" in m.pretrained_cfg and m.pretrained_cfg.get("nope", 3) == 3
    assert m.head_hidden_size == m.num_features == 64
    assert m.forward_head(m.forward_features(torch.randn(2, 3, 32, 32)), pre_logits=True).shape == (2, 64)


def test_forward_intermediates_with_timms_signature_and_features_only():
    m = dslm_zoo.create_model("dslm_vit_tiny", depth=4).eval()
    x = torch.randn(2, 3, 32, 32)
    final, inter = m.forward_intermediates(x)
    assert len(inter) == 4 and inter[0].shape == (2, 64, 8, 8)
    torch.testing.assert_close(final, m.forward_features(x))
    _, stream = m.residual_stream(x)  # the zoo's tap: the block outputs are the same tensors
    torch.testing.assert_close(inter[-1], stream[-1][:, 1:].reshape(2, 8, 8, 64).permute(0, 3, 1, 2))
    last2 = m.forward_intermediates(x, indices=2, output_fmt="NLC", intermediates_only=True, norm=True)
    assert len(last2) == 2 and last2[0].shape == (2, 64, 64)
    assert [f["module"] for f in m.feature_info][-1] == "encoder.blocks.3" and m.feature_info[0]["reduction"] == 4
    feats = timm.create_model("dslm_vit_tiny", features_only=True, out_indices=(1, 3), depth=4)
    outs = feats(x)
    assert [o.shape for o in outs] == [(2, 64, 8, 8), (2, 64, 8, 8)]
    pruned = dslm_zoo.create_model("dslm_vit_tiny", depth=4)
    assert pruned.prune_intermediate_layers(indices=(1,)) == [1] and pruned.encoder.depth == 2


def test_vit_is_fx_traceable_and_declares_a_fixed_input_size():
    from torch.fx import symbolic_trace

    m = dslm_zoo.create_model("dslm_vit_tiny", depth=2).eval()
    g = symbolic_trace(m)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(g(x), m(x))
    assert timm.models.get_pretrained_cfg("dslm_vit_tiny").fixed_input_size is True  # a learned position table
    with pytest.raises(ValueError, match="expected 32x32 images"):
        m(torch.randn(1, 3, 40, 40))  # eager checks stay


@pytest.mark.slow
def test_timm_own_model_tests():
    """timm's tests/test_models.py (from the sdist of the pinned timm) on our small ViTs, routed as timm routes
    its vit_* models: ``python eval/timm_model_tests.py`` (about 10 minutes on 2 cores; needs PyPI for the sdist)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "eval" / "timm_model_tests.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and " failed" not in out.stdout
