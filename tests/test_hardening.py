"""Bad input gets a clear error that names the field, the argument or the file (one test per class of problem)."""
from __future__ import annotations

import warnings

import pytest
import torch
from safetensors.torch import save_model

import dslm_zoo
from _inputs import example_inputs, output_tensor


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(norm_first="no"), TypeError, r"BertConfig\.norm_first must be True or False, got 'no'"),
        (dict(depth=True), TypeError, r"BertConfig\.depth must be an integer, got True \(bool\)"),
        (dict(depth="x"), TypeError, r"BertConfig\.depth must be an integer, got 'x'"),
        (dict(depth=2.5), TypeError, r"BertConfig\.depth must be an integer, got 2\.5"),
        (dict(depth=0), ValueError, r"BertConfig\.depth must be >= 1, got 0"),
        (dict(vocab_size=0), ValueError, r"BertConfig\.vocab_size must be >= 1, got 0"),
        (dict(mlp_ratio=0), ValueError, r"BertConfig\.mlp_ratio must be > 0\.0, got 0\.0"),
        (dict(dslm_r_emb=2.0), ValueError, r"BertConfig\.dslm_r_emb must be <= 1\.0"),
        (dict(drop_rate=float("nan")), TypeError, r"drop_rate must be a finite number"),
        (dict(act=3), TypeError, r"BertConfig\.act must be a string"),
        (dict(dslm_seq_len=0), ValueError, r"dslm_seq_len must be >= 1"),
    ],
)
def test_config_fields_are_type_and_range_checked(kwargs, error, match):
    with pytest.raises(error, match=match):
        dslm_zoo.create_model("dslm_bert_tiny", device="meta", **kwargs)


@pytest.mark.parametrize("name, field, value", [
    ("dslm_vit_tiny", "patch_size", 0), ("dslm_vit_tiny", "num_classes", -1), ("dslm_gpt_tiny", "max_seq_len", 0),
    ("dslm_st_tiny", "decoder_depth", 0), ("dslm_st_tiny", "frame_shift", 0.0),
])
def test_every_family_checks_its_own_fields(name, field, value):
    with pytest.raises(ValueError, match=rf"\.{field} must be"):
        dslm_zoo.create_model(name, device="meta", **{field: value})


def test_int_fields_accept_ints_and_float_fields_store_floats():
    m = dslm_zoo.create_model("dslm_bert_tiny", device="meta", mlp_ratio=2, dslm_k=1)
    assert isinstance(m.cfg.mlp_ratio, float) and m.cfg.mlp_ratio == 2.0 and isinstance(m.cfg.dslm_k, float)


def test_bert_num_classes_builds_a_classifier_or_is_refused():
    m = dslm_zoo.create_model("dslm_bert_tiny", num_classes=5)
    assert m.cfg.head == "cls" and m(torch.randint(0, 100, (2, 6))).shape == (2, 5)
    with pytest.raises(ValueError, match=r"num_classes=5 needs the classification head \(head='cls'\).*head='mlm'"):
        dslm_zoo.create_model("dslm_bert_tiny", head="mlm", num_classes=5)


@pytest.mark.parametrize("name", ["dslm_bert_tiny", "dslm_gpt_tiny", "dslm_vit_tiny", "dslm_st_tiny"])
def test_empty_batch_gives_an_empty_output(name):
    m = dslm_zoo.create_model(name).eval()
    full = example_inputs(m, batch=2, seq_len=8)
    empty = tuple(t[:0] for t in full)
    out = m(*empty)
    outs = out if isinstance(out, tuple) else (out,)
    ref = m(*full)
    refs = ref if isinstance(ref, tuple) else (ref,)
    assert all(o.shape[0] == 0 and o.shape[1:] == r.shape[1:] for o, r in zip(outs, refs))
    output_tensor(m.train()(*empty)).backward()  # and the backward runs


def test_token_inputs_are_checked():
    m = dslm_zoo.create_model("dslm_bert_tiny", depth=1).eval()
    V = m.cfg.vocab_size
    with pytest.raises(ValueError, match=rf"input_ids must lie in \[0, {V}\).*\[1, {V}\]"):
        m(torch.tensor([[1, V]]))
    with pytest.raises(ValueError, match=r"shape \(batch, seq_len\), got \(3,\) \(add a batch dimension"):
        m(torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="integer token ids"):
        m(torch.rand(2, 3))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(batch, tokens\) = \(2, 4\), got \(4,\)"):
        m(torch.ones(2, 4, dtype=torch.long), attention_mask=torch.ones(4))
    with pytest.raises(ValueError, match=r"token_type_ids must lie in \[0, 2\)"):
        m(torch.ones(2, 4, dtype=torch.long), token_type_ids=torch.full((2, 4), 2))
    g = dslm_zoo.create_model("dslm_gpt_tiny", depth=1)
    with pytest.raises(ValueError, match="token_type_ids given, but this model has no segment embedding"):
        g(torch.ones(1, 4, dtype=torch.long), token_type_ids=torch.zeros(1, 4, dtype=torch.long))


def test_image_and_audio_inputs_are_checked():
    v = dslm_zoo.create_model("dslm_vit_tiny", depth=1)
    with pytest.raises(ValueError, match=r"float images of shape \(batch, 3, 32, 32\), got torch.float32 \(3, 32, 32\)"):
        v(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match=r"got torch.uint8"):
        v(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    s = dslm_zoo.create_model("dslm_st_tiny", depth=1, decoder_depth=1)
    n = s.cfg.n_mels
    with pytest.raises(ValueError, match=rf"fbank features of shape \(batch, frames, {n}\)"):
        s(torch.rand(2, 40, n + 1), torch.tensor([40, 30]), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"feat_lengths must have shape \(2,\)"):
        s(torch.rand(2, 40, n), torch.tensor([40]), torch.zeros(2, 3, dtype=torch.long))


def test_fine_tuning_a_registered_name_on_new_classes(tmp_path):
    src = dslm_zoo.create_model("dslm_vit_tiny", depth=2, num_classes=10)
    path = tmp_path / "w.safetensors"
    save_model(src, str(path))
    with pytest.warns(UserWarning, match=r"classifier re-initialised for num_classes=3; dropped from the checkpoint: 'head\.bias', 'head\.weight'"):
        m = dslm_zoo.create_model("dslm_vit_tiny", depth=2, pretrained=True, checkpoint_path=path, num_classes=3)
    assert m.head.weight.shape == (3, 64)
    for (k, a), b in zip(src.state_dict().items(), m.state_dict().values()):
        if not k.startswith("head."):
            assert torch.equal(a, b), k
    with warnings.catch_warnings():  # same classes: everything loads, nothing is reported
        warnings.simplefilter("error")
        same = dslm_zoo.create_model("dslm_vit_tiny", depth=2, pretrained=True, checkpoint_path=path, num_classes=10)
    assert torch.equal(same.head.weight, src.head.weight)


def test_corrupted_weights_without_a_hash_name_the_file(tmp_path):
    path = tmp_path / "model.safetensors"
    save_model(dslm_zoo.create_model("dslm_vit_tiny", depth=1), str(path))
    path.write_bytes(path.read_bytes()[:-100])  # truncated
    with pytest.raises(ValueError, match=rf"{path}' is not a readable safetensors file.*truncated or corrupted"):
        dslm_zoo.create_model("dslm_vit_tiny", depth=1, pretrained=True, checkpoint_path=path,
                              pretrained_cfg_overlay={"sha256": None})


def test_local_dir_without_weights_names_the_missing_file(tmp_path):
    m = dslm_zoo.create_model("dslm_vit_tiny", depth=1)
    dslm_zoo.save_pretrained(m, tmp_path / "saved")
    (tmp_path / "saved" / "model.safetensors").unlink()
    with pytest.raises(dslm_zoo.WeightsNotFoundError, match=r"holds config\.json but not its weights file 'model\.safetensors'"):
        dslm_zoo.create_model(f"local-dir:{tmp_path / 'saved'}")
    assert dslm_zoo.create_model(f"local-dir:{tmp_path / 'saved'}", pretrained=False).depth == 1


def test_hub_unreachable_fails_fast_with_the_true_reason(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    from dslm_zoo import _hub

    calls = []

    def cache_only(**kw):
        calls.append(kw)
        raise LocalEntryNotFoundError("not in the cache")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", cache_only)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(_hub, "hub_reachable", lambda timeout=3.0: (False, "huggingface.co:443: OSError: no route"))
    with pytest.raises(dslm_zoo.WeightsNotFoundError) as e:
        dslm_zoo.create_model("hf-hub:someone/absent", cache_dir=tmp_path)
    msg = str(e.value)
    assert calls and calls[0]["local_files_only"] is True  # no online attempt, so no retries
    assert "the hub is unreachable (huggingface.co:443: OSError: no route)" in msg
    assert "unset HF_HUB_OFFLINE" not in msg


def test_hub_revision_skips_the_unversioned_mirror(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    mirror = tmp_path / "mirror"
    dslm_zoo.save_pretrained(dslm_zoo.create_model("dslm_vit_tiny", depth=1), mirror / "org" / "vit")
    monkeypatch.setenv("DSLM_ZOO_HUB", str(mirror))
    asked = []

    def cache_only(**kw):
        asked.append(kw)
        raise LocalEntryNotFoundError("not in the cache")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", cache_only)
    assert dslm_zoo.create_model("hf-hub:org/vit").depth == 1 and not asked  # the mirror serves the unversioned name
    with pytest.raises(dslm_zoo.WeightsNotFoundError, match=r"mirrors: skipped, revision 'v2' was asked for"):
        dslm_zoo.create_model("hf-hub:org/vit@v2")
    assert asked[0]["revision"] == "v2"


def test_cli_accepts_saved_directories_and_leaves_nothing_behind(tmp_path, capsys, monkeypatch):
    from dslm_zoo.cli import main

    dslm_zoo.save_pretrained(dslm_zoo.create_model("dslm_bert_tiny", depth=2), tmp_path / "saved")
    assert main(["info", f"local-dir:{tmp_path / 'saved'}", "--json"]) == 0
    assert '"depth": 2' in capsys.readouterr().out
    monkeypatch.chdir(tmp_path)
    assert main(["signal", "no_such_model", "--out", "sig"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'no_such_model'" in err and "Traceback" not in err
    assert not (tmp_path / "sig").exists()  # a failed run leaves no empty output directory
    assert main(["signal", f"local-dir:{tmp_path / 'saved'}", "--seeds", "1", "--seq-len", "8", "--no-figure", "--out", "sig"]) == 0
    assert sorted(p.name for p in (tmp_path / "sig").iterdir())[0] == "signal_saved_dslm_pre_meas.csv"
    with pytest.raises(SystemExit) as e:
        main(["signal", "dslm_bert_tiny", "--seq-len", "0"])
    assert e.value.code == 2 and "expected a positive integer, got 0" in capsys.readouterr().err


def test_cli_is_quiet_when_its_reader_goes_away(monkeypatch, capsys):
    """`dslm-zoo list | head -1`: the pipe closes under the writer; the command ends quietly with exit 0."""
    import os
    import sys

    from dslm_zoo.cli import main

    r, w = os.pipe()
    os.close(r)  # the reader is gone: every write raises BrokenPipeError
    closed = os.fdopen(w, "w", buffering=1)
    monkeypatch.setattr(sys, "stdout", closed)
    try:
        assert main(["list"]) == 0
    finally:
        closed.close()
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("kwargs, match", [
    (dict(seq_len=-5), r"seq_len must be a positive integer, got -5"),
    (dict(seq_len=2.5), r"seq_len must be a positive integer"),
    (dict(r_emb=2.0), r"r_emb must lie in \[-1, 1\], got 2\.0"),
    (dict(r_emb=[0.2, -1.5]), r"r_emb must lie in \[-1, 1\], got -1\.5"),
    (dict(grad_var=0.0), r"grad_var must be a positive finite number"),
    (dict(batch_size=0), r"batch_size must be a positive integer"),
])
def test_predict_validates_its_arguments(kwargs, match):
    from dslm_zoo.diagnostics import predict

    with pytest.raises(ValueError, match=match):
        predict("dslm_bert_tiny", **kwargs)


def test_prediction_verdict_and_the_predict_command(capsys):
    from dslm_zoo.cli import main
    from dslm_zoo.diagnostics import predict

    good = predict("dslm_bert_tiny", 64, depth=48, init="dslm", norm_first=False)
    bad = predict("dslm_bert_tiny", 64, depth=48, init="xavier", norm_first=False)
    assert good.verdict()["trainable"] and not bad.verdict()["trainable"]
    assert "FAIL stack 0: grad_ratio" in bad.summary() and "Xiong et al. 2020" in bad.summary()
    assert main(["predict", "dslm_bert_tiny", "--depth", "48", "--post-ln", "--seq-len", "64"]) == 0
    assert "trainable at init" in capsys.readouterr().out
    assert main(["predict", "dslm_bert_tiny", "--depth", "48", "--post-ln", "--init", "xavier", "--json"]) == 1
    import json

    assert json.loads(capsys.readouterr().out)["trainable"] is False


def test_predict_command_built_for_another_length(capsys):
    """--built-for L: the DSLM init derived for L, the theory run at --seq-len (issue 13's length ablation)."""
    import json

    from dslm_zoo.cli import main
    from dslm_zoo.diagnostics import predict

    ratios = {}
    for built in (32, 128):
        assert main(["predict", "dslm_gpt_tiny", "--depth", "24", "--seq-len", "128", "--built-for", str(built), "--json"]) == 0
        ratios[built] = json.loads(capsys.readouterr().out)["stack 0: grad_ratio"]["value"]
        want = predict("dslm_gpt_tiny", 128, depth=24, dslm_seq_len=built).grad_ratio()
        assert ratios[built] == pytest.approx(want)
    assert ratios[32] != ratios[128]  # the init depends on the length it was derived for
