"""dslm_zoo.diagnostics.predict over dslm_zoo.theory.signal: the whole-model signal-propagation recursion (no measurement here; the comparison
with real forward/backward passes is in tests/test_diagnostics.py)."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

import dslm_zoo
from dslm_zoo.models.text import BertConfig
from dslm_zoo.diagnostics import predict
from dslm_zoo.theory.signal import (
    SignalPrediction,
    SignalTable,
    attention_moments,
    attention_variance_and_cov,
    softmax_sq_mass,
    token_correlation,
)

TINY = dict(depth=4, embed_dim=64, num_heads=2)


def test_softmax_sq_mass_matches_monte_carlo():
    rng = np.random.default_rng(0)
    for s in (0.3, 1.0, 3.0):
        for n in (1, 2, 5, 32, 128):
            x = rng.normal(size=(max(2000, 200_000 // n), n)) * math.sqrt(s)
            p = np.exp(x - x.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            mc = float((p * p).sum(1).mean())
            assert softmax_sq_mass(n, s) == pytest.approx(mc, rel=0.02), (s, n)


def test_attention_moments_limits():
    # the paper's large-L limit, and one token (a softmax over one key passes its value through)
    assert attention_moments(0.3, None, 64, 1.0) == (0.3, 0.3, 0.0, 1.0)
    assert attention_moments(0.3, 1, 64, 1.0)[0] == 1.0
    A, C, S, K2 = attention_moments(0.0, 128, 1024, 1.0)
    assert S == pytest.approx(softmax_sq_mass(128, 1.0))
    assert 0 < C <= A < 0.05
    Ac = attention_moments(0.0, 128, 1024, 1.0, causal=True)[0]
    assert Ac > A  # short prefixes average fewer tokens


@pytest.mark.parametrize("causal", [False, True])
def test_attention_variance_and_cov_is_attention_moments(causal):
    """The scalar path of the DSLM init schedule gives attention_moments' (A, C) up to rounding."""
    for L in (2, 17, 128, 1024):
        for d, pa, s in ((32, 0.0, 1.0), (1024, 0.1, 0.3), (64, 0.0, 4.0)):
            for r in (0.0, 0.013, 0.3, 0.77, 0.999, 1.0):
                want = attention_moments(r, L, d, s, pa, causal)[:2]
                assert attention_variance_and_cov(r, L, d, s, pa, causal) == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_token_correlation():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, 1, 512, generator=g)
    e = torch.randn(8, 64, 512, generator=g)
    for r in (0.0, 0.3, 0.8):
        x = math.sqrt(r) * z + math.sqrt(1 - r) * e
        assert token_correlation(x) == pytest.approx(r, abs=0.03)


def test_name_config_and_meta_model_agree():
    a = predict("dslm_bert_tiny", 64, init="dslm", **TINY)
    cfg = BertConfig(**TINY)
    b = predict(cfg, 64, init="dslm")
    c = predict(dslm_zoo.create_model("dslm_bert_tiny", device="meta", **TINY), 64, init="dslm")
    assert a.fwd_var == b.fwd_var == c.fwd_var
    assert a.grad_var == b.grad_var == c.grad_var
    assert a.kind == ["input"] + ["attn", "ffn"] * 4
    assert a.block == [-1] + [i // 2 for i in range(8)]


def test_real_weights_match_the_rules():
    """Read empirically from a real model, the weight variances reproduce the scheme's own stds."""
    torch.manual_seed(0)
    kw = dict(depth=4, embed_dim=256, num_heads=4)
    real = predict(dslm_zoo.create_model("dslm_bert_tiny", init="xavier", **kw), 64)
    rules = predict("dslm_bert_tiny", 64, init="xavier", **kw)
    for a, b in zip(real.fwd_var, rules.fwd_var):
        assert a == pytest.approx(b, rel=0.03)
    assert real.grad_ratio() == pytest.approx(rules.grad_ratio(), rel=0.05)


def test_schemes_behave_as_the_paper_says():
    """Xavier Pre-LN: variance grows ~linearly; DSLM: flat at 1, gradient drift bounded by ~e^{-k/2}."""
    x = predict("dslm_bert_tiny", 128, init="xavier", depth=48, embed_dim=256, num_heads=4)
    v = [x.fwd_var[i] for i in x.sublayer_rows()]
    assert v[-1] > 20 and v[-1] / v[len(v) // 2] == pytest.approx(2.0, rel=0.15)
    for nf in (True, False):
        d = predict("dslm_bert_tiny", 128, init="dslm", depth=48, embed_dim=256, num_heads=4, norm_first=nf)
        assert all(0.85 < d.fwd_var[i] < 1.2 for i in d.sublayer_rows())
        assert math.exp(-2) < d.grad_ratio() < 1.0


def _small(name: str) -> dict:
    cls, _ = dslm_zoo._builder.resolve_config(name, device="meta")
    return {f: 2 + i for i, f in enumerate(cls.stack_depth_fields)}  # depth 2 (and decoder depth 3): fast to build


@pytest.mark.parametrize("name", dslm_zoo.list_models())
@pytest.mark.parametrize("init", ["dslm", "xavier", "megatron", "deepnorm"])
def test_the_config_path_equals_the_full_meta_build(name, init):
    """predict(name) reads one block and repeats it with the scheme's depth-dependent constants; the rows are
    those of building every layer on the meta device and reading its init rules, exactly."""
    kw = dict(_small(name), init=init, **({"norm_first": False} if init == "deepnorm" else {}))
    fast, full = predict(name, **kw), predict(name, _fast=False, **kw)
    assert fast.meta == full.meta and fast.kind == full.kind and fast.block == full.block
    for col in ("fwd_var", "fwd_corr", "grad_var", "grad_corr", "wgrad_norm", "sum_var"):
        np.testing.assert_array_equal(getattr(fast, col), getattr(full, col), err_msg=col)


def test_the_config_path_builds_one_block_per_stack(monkeypatch):
    from dslm_zoo.layers import Transformer

    built = []
    orig = Transformer.__init__

    def spy(self, depth, *a, **k):
        built.append(depth)
        orig(self, depth, *a, **k)

    monkeypatch.setattr(Transformer, "__init__", spy)
    p = predict("dslm_st_tiny", depth=300, decoder_depth=100)
    assert built == [1, 1] and p.meta["depth"] == 400


def test_1000_layers_from_a_config_is_fast():
    """A benchmark print, not a timing assertion (benchmarks/predict_speed.py has the full table)."""
    model = dslm_zoo.create_model("dslm_gpt_1000L", device="meta")
    t = time.perf_counter()
    p = predict(model, 1024, init="dslm")
    dt = time.perf_counter() - t
    print(f"\npredict dslm_gpt_1000L (meta, dslm rules, causal L=1024): {dt:.3f} s incl. init_model on meta")
    assert len(p) == 2001
    assert all(0.8 < p.fwd_var[i] < 1.3 for i in p.sublayer_rows())
    assert all(math.isfinite(g) for g in p.grad_var)


@pytest.mark.parametrize("name,kw", [
    ("dslm_gpt_1000L", dict(depth=400, init="dslm", seq_len=256)),
    ("dslm_gpt_1000L", dict(depth=400, init="xavier", seq_len=256)),
    ("dslm_bert_1000L", dict(depth=300, init="dslm")),
    ("dslm_bert_1000L", dict(depth=300, init="deepnorm", norm_first=False)),
    ("dslm_gpt_1000L", dict(depth=300, init="dslm", norm_first=False, seq_len=256)),
    ("dslm_vit_deep", dict(depth=200, init="dslm")),
])
def test_depth_stepping_stays_within_one_percent_of_every_block(name, kw, monkeypatch):
    """Runs of identical blocks are stepped over (theory.signal.STEP_TOL); the rows stay within 1% of running every
    block (correlations within 1% or 1e-3), with far fewer blocks evaluated."""
    from dslm_zoo.theory import signal as S

    evaluated = []
    run = S._run_stack

    def spy(st, mem, step=True):
        out = run(st, mem, step)
        evaluated.append(len(out["recs"]))
        return out

    monkeypatch.setattr(S, "_run_stack", spy)
    exact = predict(name, exact=True, **kw)
    stepped = predict(name, **kw)
    n_exact, n_stepped = evaluated[: len(evaluated) // 2], evaluated[len(evaluated) // 2 :]
    assert len(stepped) == len(exact) and stepped.kind == exact.kind
    if kw["init"] == "dslm":
        assert sum(n_stepped) < 0.6 * sum(n_exact), (n_stepped, n_exact)
    for col in ("fwd_var", "grad_var", "wgrad_norm", "sum_var"):
        a, b = np.asarray(getattr(stepped, col)), np.asarray(getattr(exact, col))
        np.testing.assert_allclose(a, b, rtol=0.01, err_msg=col)
    for col in ("fwd_corr", "grad_corr"):
        a, b = np.asarray(getattr(stepped, col)), np.asarray(getattr(exact, col))
        np.testing.assert_allclose(a, b, rtol=0.01, atol=1e-3, err_msg=col)
    assert stepped.verdict()["trainable"] == exact.verdict()["trainable"]


def test_timm_vit_is_read_as_it_is():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=3, img_size=32, patch_size=8, init_values=0.1)
    p = predict(m)
    assert p.meta["seq_len"] == 17 and len(p) == 7
    # LayerScale gamma = 0.1: beta^2 = 0.01, the stream barely moves
    assert p.fwd_var[-1] == pytest.approx(p.fwd_var[0], rel=0.05)


def test_export_round_trips(tmp_path):
    p = predict("dslm_gpt_tiny", 32, init="xavier", depth=2, embed_dim=32, num_heads=2)
    assert math.isnan(p.wgrad_norm[0])
    q = SignalPrediction.from_json(p.to_json(tmp_path / "p.json"))
    assert q.kind == p.kind and q.meta["seq_len"] == 32
    for c in ("fwd_var", "fwd_corr", "grad_var", "grad_corr"):
        assert getattr(q, c) == getattr(p, c)
    assert math.isnan(q.wgrad_norm[0]) and q.wgrad_norm[1:] == p.wgrad_norm[1:]
    p.to_csv(tmp_path / "p.csv")
    r = SignalPrediction.from_csv(tmp_path / "p.csv")
    assert r.rows()[1:] == p.rows()[1:] and r.kind == p.kind
    assert SignalPrediction.from_dict(p.to_dict()).grad_var == p.grad_var
    m = SignalTable.mean([p, p])
    assert m.fwd_var == pytest.approx(p.fwd_var)


def test_plot_writes_png(tmp_path):
    p = predict("dslm_bert_tiny", 32, init="dslm", depth=3, embed_dim=32, num_heads=2)
    out = p.plot(tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 5000 and str(out).endswith("p.png")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    p.plot(ax, label="dslm")
    plt.close(fig)


def test_rejects_what_it_cannot_read():
    with pytest.raises(TypeError):
        predict(torch.nn.Linear(3, 3))
    with pytest.raises(TypeError):
        predict(dslm_zoo.create_model("dslm_bert_tiny", device="meta", **TINY), depth=3)


@pytest.mark.parametrize("L", [2, 8, 64, 300, 1024])
def test_pair_bins_keep_the_causal_pair_sums(L):
    """Per-pair bins (one per position up to 64, geometric beyond) must reproduce the exact pair means."""
    import importlib

    P = importlib.import_module("dslm_zoo.theory.signal")
    pc = P._PairCov(L)
    assert pc.n.sum() == L and len(pc.n) <= 64
    assert pc.w.sum() == pytest.approx(1.0)
    assert pc.mean(pc.ov) == pytest.approx(P._causal_consts(L)["pair"], rel=1e-12)  # mean of 1/max(i, k)
    uniform = pc.uniform(0.3)
    assert pc.prefix_mean(uniform) == pytest.approx(uniform)
    # a LayerNorm over equal variances changes no correlation
    assert pc.mean(pc.scaled(uniform, [2.0] * L)) == pytest.approx(0.6)


def test_logit_position_biases_are_named_as_outside_the_theory():
    with pytest.warns(UserWarning, match="does not model position biases"):
        a = predict("dslm_bert_tiny", 32, depth=3, pos_embed="alibi")
    b = predict("dslm_bert_tiny", 32, depth=3)
    assert a.grad_ratio() == pytest.approx(b.grad_ratio())
