"""dslm_zoo.diagnostics: SignalMonitor hooks, measurement, and theory (dslm_zoo.diagnostics.predict) vs measurement.

The measurement follows the authors' protocol: a training-mode forward on a batch, loss = sum(out * G) with
G ~ N(0, 1) i.i.d., one backward. Single models fluctuate around the theory by ~2/sqrt(d) per layer (the cross
term 2 lambda beta cov(x, F(x)) random-walks), so the comparisons average fresh initialisations (fixed seeds,
so the tests are deterministic). Accuracy reached with these settings is recorded next to the thresholds.
"""
from __future__ import annotations

import math

import pytest
import torch

import dslm_zoo
from dslm_zoo.diagnostics import (
    SignalMeasurement,
    SignalMonitor,
    SignalPrediction,
    across_models,
    average_pairs,
    compare,
    measure,
    measure_r_emb,
    predict_and_measure,
    predict_vs_measure,
)
from dslm_zoo.diagnostics import predict

torch.set_num_threads(min(2, torch.get_num_threads()))

D, DEPTH, L, B, SEEDS = 256, 4, 32, 16, 16


def _text_maker(family: str, init: str, norm_first: bool, **kw):
    extra = dict(type_vocab_size=0) if "bert" in family else {}

    def make(seed: int):
        torch.manual_seed(seed)
        return dslm_zoo.create_model(
            family, init=init, depth=DEPTH, embed_dim=D, num_heads=2, norm_first=norm_first, vocab_size=1000,
            **extra, **kw,
        )

    return make


def _tokens(batch: int = B, length: int = L) -> torch.Tensor:
    return torch.randint(0, 1000, (batch, length), generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------------------------------------------
# Theory vs measurement at init (d = 256, 4 layers, 32 tokens x 16 sequences, 16 seeds). Thresholds: forward
# variance within 5% at every sub-layer (Post-LN: 1 by construction) and the input/output gradient-variance ratio
# within 15%. Reached (pred/meas of the ratio; max forward error):
#   bert xavier Pre-LN 0.991, 3.2%  | Post-LN 0.944     bert dslm Pre-LN 0.974, 2.4% | Post-LN 0.968
#   gpt  xavier Pre-LN 1.020, 2.6%  | Post-LN 1.037     gpt  dslm Pre-LN 1.022, 2.4% | Post-LN 1.014
#   (Post-LN residual sums, the LayerNorm inputs, within 2.6%. GPT uses per-pair causal covariances forward and
#   backward, see _PairCov: with pair-mean correlations only, the GPT sums missed by up to 5.8%)
#   dslm_vit_tiny dslm Pre-LN 0.994, 2.6%; timm ViT 0.983 (no LayerScale), 1.014 (LayerScale 0.1)
# The Xavier cases run with the slow marker (`make test-slow`), to keep the default run under 10 minutes on 2 cores:
# the DSLM cases exercise the same recursion, and Xavier is also checked at 48 layers there
CASES = [pytest.param(f, i, nf, marks=[pytest.mark.slow] if i == "xavier" else [])
         for f in ("dslm_bert_tiny", "dslm_gpt_tiny") for i in ("xavier", "dslm") for nf in (True, False)]


@pytest.mark.parametrize("family,init,norm_first", CASES)
def test_prediction_matches_measurement(family, init, norm_first):
    pairs = list(predict_and_measure(_text_maker(family, init, norm_first), _tokens(), SEEDS, seq_len=L))
    _, m, c = average_pairs(pairs)
    s, a = c.summary, across_models(pairs)
    print(f"\n{family} {init} {'Pre' if norm_first else 'Post'}-LN: fwd max {100 * s['fwd_var_max_err']:.2f}%, "
          f"sums max {100 * s['sum_var_max_err']:.2f}%, "
          f"grad ratio pred {s['grad_ratio_pred']:.4g} meas {s['grad_ratio_meas']:.4g} (x{s['grad_ratio_rel']:.3f}), "
          f"per-sub-layer factor bias {100 * a['factor_bias']:.2f}% +- {100 * a['factor_bias_se']:.2f}%")
    assert s["var_rows_beyond_5pct_3se"] == 0
    assert abs(a["factor_bias"]) < 0.02
    assert s["fwd_var_max_err"] < 0.05
    assert s["sum_var_max_err"] < 0.05  # Post-LN: the LayerNorm inputs (the stream itself is 1 by construction)
    rows = m.sublayer_rows()
    if norm_first:
        assert [m.sum_var[i] for i in rows] == [m.fwd_var[i] for i in rows]
    else:  # hooked at every LayerNorm input
        assert all(math.isfinite(m.sum_var[i]) for i in rows) and m.sum_var != m.fwd_var
    assert abs(s["grad_ratio_rel"] - 1.0) < 0.15
    assert s["grad_var_median_err"] < 0.10
    assert s["fwd_corr_median_err"] < 0.10


def test_dslm_vit_prediction():
    def make(seed):
        torch.manual_seed(seed)
        return dslm_zoo.create_model("dslm_vit_tiny", init="dslm", depth=DEPTH, embed_dim=D, num_heads=2)

    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    _, _, c = predict_vs_measure(make, images, 6)
    s = c.summary
    print(f"\ndslm_vit_tiny dslm: fwd max {100 * s['fwd_var_max_err']:.2f}%, grad ratio x{s['grad_ratio_rel']:.3f}")
    assert s["fwd_var_max_err"] < 0.05  # reached 2.6%
    assert abs(s["grad_ratio_rel"] - 1.0) < 0.15  # reached 0.994


@pytest.mark.parametrize("init_values", [None, 0.1])
def test_timm_vit_prediction(init_values):
    """A timm ViT as timm builds it (no download): Pre-LN, GELU, LayerScale gamma as beta, class token whose
    tiny init variance (1e-6^2 + pos) makes its LayerNorm gradient dominate the input gradient."""
    timm = pytest.importorskip("timm")

    def make(seed):
        torch.manual_seed(seed)
        return timm.create_model(
            "vit_tiny_patch16_224", pretrained=False, depth=DEPTH, img_size=32, patch_size=8, init_values=init_values,
            proj_drop_rate=0.1,
        )

    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    _, _, c = predict_vs_measure(make, images, 4)
    s = c.summary
    print(f"\ntimm vit ls={init_values}: fwd max {100 * s['fwd_var_max_err']:.2f}%, grad ratio x{s['grad_ratio_rel']:.3f}")
    assert s["fwd_var_max_err"] < 0.05
    assert abs(s["grad_ratio_rel"] - 1.0) < 0.15


# ---------------------------------------------------------------------------------------------------------------
# The monitor itself.


@pytest.mark.parametrize("name", ["dslm_bert_tiny", "dslm_gpt_tiny", "dslm_vit_tiny"])
def test_monitor_rows_match_prediction(name):
    torch.manual_seed(0)
    m = dslm_zoo.create_model(name, depth=2, embed_dim=32, num_heads=2)
    x = torch.randn(2, 3, 32, 32) if "vit" in name else torch.randint(0, 100, (2, 16))
    meas = measure(m, x)
    pred = predict(m, None if "vit" in name else 16)
    assert meas.kind == pred.kind and meas.block == pred.block and meas.sublayer == pred.sublayer
    assert all(math.isfinite(v) for v in meas.fwd_var + meas.grad_var)
    assert all(math.isfinite(v) for v in meas.wgrad_norm[1:]) and math.isnan(meas.wgrad_norm[0])
    assert all(w >= o for w, o in zip(meas.wgrad_branch[1:], meas.wgrad_norm[1:]))
    assert not any(p.grad is not None for p in m.parameters())  # measure() clears what it made


def test_monitor_during_training_and_disabled():
    torch.manual_seed(0)
    m = dslm_zoo.create_model("dslm_gpt_tiny", depth=2, embed_dim=32, num_heads=2)
    opt = torch.optim.SGD(m.parameters(), lr=1e-3)
    x = torch.randint(0, 100, (2, 16))
    mon = SignalMonitor(m)
    for step in range(3):
        mon.enabled = step != 1
        mon.reset()
        loss = m(x).float().logsumexp(-1).mean()
        loss.backward()
        t = mon.table()
        if step == 1:
            assert all(math.isnan(v) for v in t.fwd_var + t.grad_var)
        else:
            assert all(math.isfinite(v) for v in t.fwd_var + t.grad_var)
        opt.step()
        opt.zero_grad()
    # the monitor keeps statistics only, never activations or graphs
    for s in mon._fwd + mon._grad:
        assert s is None or all(v.dim() == 0 and not v.requires_grad for v in s)
    mon.remove()
    n_hooks = sum(len(mod._forward_hooks) + len(mod._forward_pre_hooks) for mod in m.modules())
    assert n_hooks == 0


def test_monitor_without_grad():
    torch.manual_seed(0)
    m = dslm_zoo.create_model("dslm_bert_tiny", depth=2, embed_dim=32, num_heads=2)
    with SignalMonitor(m, grad=False) as mon, torch.no_grad():
        m.forward_features(torch.randint(0, 100, (2, 8)))
    t = mon.table()
    assert all(math.isfinite(v) for v in t.fwd_var) and all(math.isnan(v) for v in t.grad_var)


def test_measure_r_emb():
    """Identical tokens, word + position tables of equal variance: r_emb = var_word / (var_word + var_pos)."""
    torch.manual_seed(0)
    m = dslm_zoo.create_model("dslm_bert_tiny", depth=1, embed_dim=512, num_heads=2, type_vocab_size=0)
    same = torch.full((4, 64), 7)
    assert measure_r_emb(m, same) == pytest.approx(0.5, abs=0.08)
    rand = torch.randint(0, 30000, (4, 64), generator=torch.Generator().manual_seed(0))
    assert abs(measure_r_emb(m, rand)) < 0.03
    assert m.training  # the mode is restored


def test_average_and_compare_layout_checks():
    torch.manual_seed(0)
    a = measure(dslm_zoo.create_model("dslm_bert_tiny", depth=1, embed_dim=32, num_heads=2), torch.randint(0, 50, (2, 8)))
    b = measure(dslm_zoo.create_model("dslm_bert_tiny", depth=2, embed_dim=32, num_heads=2), torch.randint(0, 50, (2, 8)))
    avg = SignalMeasurement.average([a, a])
    assert avg.fwd_var == pytest.approx(a.fwd_var) and avg.n_models == 2
    with pytest.raises(ValueError):
        SignalMeasurement.average([a, b])
    with pytest.raises(ValueError):
        compare(a, b)
    assert "forward variance rel. error" in str(compare(a, a))


def _fake_average(fwd: list[float], sd: float, n: int) -> SignalMeasurement:
    rows = len(fwd)
    m = SignalMeasurement(
        stack=[0] * rows, sublayer=list(range(-1, rows - 1)), block=[-1] + [i // 2 for i in range(rows - 1)],
        kind=["input"] + ["attn", "ffn"] * ((rows - 1) // 2), fwd_var=list(fwd), fwd_corr=[0.0] * rows,
        grad_var=[1.0] * rows, grad_corr=[0.0] * rows, wgrad_norm=[1.0] * rows, sum_var=list(fwd),
    )
    m.spread = {c: [sd] * rows for c in ("fwd_var", "fwd_corr", "grad_var", "grad_corr", "wgrad_norm", "sum_var")}
    m.n_models = n
    return m


def test_compare_counts_misses_beyond_noise():
    pred = _fake_average([1.0] * 5, 0.0, 1)
    # a 10% miss at one layer: within 5% + 3 se when the models spread by sd 0.2 (se 0.05), not when by 0.02
    off = [1.0, 1.0, 1.0 / 1.1, 1.0, 1.0]
    assert compare(pred, _fake_average(off, 0.2, 16)).summary["var_rows_beyond_5pct_3se"] == 0
    assert compare(pred, _fake_average(off, 0.02, 16)).summary["var_rows_beyond_5pct_3se"] == 1
    assert math.isnan(compare(pred, _fake_average(off, 0.02, 1)).summary["var_rows_beyond_5pct_3se"])
    assert compare(pred, _fake_average(off, 0.0, 1)).summary["sum_var_bias"] == pytest.approx(0.1 / 4)


def test_across_models():
    torch.manual_seed(0)
    tok = torch.randint(0, 50, (2, 8))
    meas = [measure(dslm_zoo.create_model("dslm_bert_tiny", depth=2, embed_dim=32, num_heads=2), tok) for _ in range(4)]
    n_rows = len(meas[0])
    # predictions that are the measurements with every sub-layer's factor g_in / g_out 1% too large
    preds = []
    for m in meas:
        p = SignalPrediction.from_dict(m.to_dict())
        p.grad_var = [g * 1.01 ** (n_rows - 1 - i) for i, g in enumerate(m.grad_var)]
        preds.append(p)
    a = across_models(list(zip(preds, meas)))
    assert a["n_sub"] == n_rows - 1 == 4
    assert a["factor_bias"] == pytest.approx(math.log(1.01)) and a["factor_bias_se"] == pytest.approx(0.0, abs=1e-12)
    ratios = [math.log(m.grad_ratio()) for m in meas]
    mean = sum(ratios) / 4
    var = sum((r - mean) ** 2 for r in ratios) / 3
    assert a["log_ratio_var"] == pytest.approx(var)
    assert a["models_for_5pct"] == pytest.approx(math.expm1(var) / 0.05**2)
    with pytest.raises(ValueError, match="two models"):
        across_models(list(zip(preds, meas))[:1])


def test_cli_signal(tmp_path, capsys):
    from dslm_zoo.cli import main

    rc = main([
        "signal", "dslm_bert_tiny", "--init", "xavier", "--depth", "2", "--embed-dim", "32", "--num-heads", "2",
        "--seq-len", "16", "--batch", "2", "--seeds", "1", "--out", str(tmp_path),
    ])
    assert rc == 0
    out = capsys.readouterr().out
    assert "grad ratio input/output" in out
    png = tmp_path / "signal_dslm_bert_tiny.png"
    assert png.stat().st_size > 10_000
    assert (tmp_path / "signal_dslm_bert_tiny_xavier_pre_pred.json").exists()


# ---------------------------------------------------------------------------------------------------------------
# Slow: deeper and wider.


@pytest.mark.slow
@pytest.mark.parametrize(
    "init,norm_first,seeds",
    [
        ("xavier", True, 6),  # reached 1.002 (fwd max 4.7%)
        # Xavier Post-LN: the ratio is about log-normal across models (cv 0.84), so the seed mean needs many
        # models: 6 gave 1.72, 16 gave 1.46, 64 give 1.157 here (1.136 on eval/signal_vs_depth.py's batch)
        ("xavier", False, 64),
        ("dslm", True, 6),  # reached 0.988 (fwd max 3.7%)
        ("dslm", False, 6),  # reached 1.003
    ],
)
def test_prediction_matches_measurement_deep(init, norm_first, seeds):
    def make(seed):
        torch.manual_seed(seed)
        return dslm_zoo.create_model(
            "dslm_bert_tiny", init=init, depth=48, embed_dim=256, num_heads=4, norm_first=norm_first,
            vocab_size=2000, type_vocab_size=0,
        )

    pairs = list(predict_and_measure(make, _tokens(8, 64), seeds, seq_len=64))
    _, m, c = average_pairs(pairs)
    s = c.summary
    a = across_models(pairs)
    i = m.input_row()
    se = m.spread["grad_var"][i] / m.grad_var[i] / math.sqrt(seeds)  # standard error of the measured seed mean
    print(f"\n48 layers d=256 {init} {'Pre' if norm_first else 'Post'}-LN: fwd max {100 * s['fwd_var_max_err']:.2f}% "
          f"median {100 * s['fwd_var_median_err']:.2f}%, grad ratio x{s['grad_ratio_rel']:.3f} (measurement se {se:.3f}), "
          f"per-sub-layer factor bias {100 * a['factor_bias']:.3f}% +- {100 * a['factor_bias_se']:.3f}%")
    assert s["fwd_var_max_err"] < 0.05 and s["sum_var_max_err"] < 0.05
    # 15%, or two standard errors where the measurement itself is less certain than that (Xavier Post-LN: 0.21)
    assert abs(s["grad_ratio_rel"] - 1.0) < max(0.15, 2.0 * se)
    # each sub-layer's gradient factor, which a few models pin even where the whole ratio is log-normal
    # (reached: xavier Pre 0.026 +- 0.109%, Post 0.246 +- 0.101%; dslm Pre -0.012 +- 0.009%, Post 0.003 +- 0.019%)
    assert abs(a["factor_bias"]) < max(0.003, 3.0 * a["factor_bias_se"])


@pytest.mark.slow
def test_dslm_1000_layers_measured():
    """A real 1000-layer DSLM stack (narrow): the variance stays at 1 and matches the theory."""
    def make(seed):
        torch.manual_seed(seed)
        return dslm_zoo.create_model("dslm_bert_tiny", init="dslm", depth=1000, embed_dim=64, num_heads=2, vocab_size=1000)

    p, m, c = predict_vs_measure(make, _tokens(2, 32), 1, seq_len=32)
    s = c.summary
    print(f"\n1000 layers d=64 dslm Pre-LN, one model: fwd max {100 * s['fwd_var_max_err']:.2f}% median "
          f"{100 * s['fwd_var_median_err']:.2f}%, grad ratio pred {s['grad_ratio_pred']:.4g} meas {s['grad_ratio_meas']:.4g}")
    rows = m.sublayer_rows()
    assert all(0.7 < m.fwd_var[i] < 1.4 for i in rows)
    assert c.summary["fwd_var_median_err"] < 0.10
    assert abs(c.summary["grad_ratio_rel"] - 1.0) < 0.3
