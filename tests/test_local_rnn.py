"""LocalRNN (R-Transformer's local recurrence, dslm_zoo/layers/rnn.py): the layer, its closed-form moments against
Monte Carlo, and the model option ``local_rnn`` with the DSLM init built from those moments."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import dslm_zoo
from dslm_zoo.diagnostics import across_models, average_pairs, predict, predict_and_measure
from dslm_zoo.layers import LocalRNN
from dslm_zoo.theory import components as C
from dslm_zoo.theory.recipe import dslm_local_rnn_vars, local_rnn_corr_map


def _correlated(B: int, N: int, d: int, r: float, gen: torch.Generator) -> torch.Tensor:
    """Unit-variance tokens whose pairs correlate by r (a shared part per sequence)."""
    shared = torch.randn(B, 1, d, generator=gen, dtype=torch.float64)
    own = torch.randn(B, N, d, generator=gen, dtype=torch.float64)
    return math.sqrt(r) * shared + math.sqrt(1.0 - r) * own


def _pair_stats(x: torch.Tensor) -> tuple[float, float]:
    """(second moment, mean cross moment over distinct token pairs) of (B, N, D), per feature."""
    B, N, D = x.shape
    tot = x.sum(1)
    diag = (x * x).sum()
    return float(diag / (B * N * D)), float(((tot * tot).sum() - diag) / (B * N * (N - 1) * D))


def test_local_rnn_reads_only_its_window_and_matches_an_unfolded_rnn():
    torch.manual_seed(0)
    m = LocalRNN(8, window=3).double()
    x = torch.randn(2, 7, 8, dtype=torch.float64)
    y = m(x)
    # reference: nn.RNN semantics on each zero-padded window, last hidden state
    xp = torch.cat([torch.zeros(2, 2, 8, dtype=torch.float64), x], 1)
    for t in range(7):
        h = torch.zeros(2, 8, dtype=torch.float64)
        for k in range(3):
            h = torch.relu(m.ih(xp[:, t + k]) + m.hh(h))
        torch.testing.assert_close(y[:, t], m.proj(h))
    x2 = x.clone()
    x2[:, 5:] += 1.0  # positions >= 5 change: outputs before 5 do not (causal), 5..6 do
    y2 = m(x2)
    torch.testing.assert_close(y2[:, :5], y[:, :5])
    assert not torch.allclose(y2[:, 5:], y[:, 5:])
    with pytest.raises(ValueError, match="window must be >= 1"):
        LocalRNN(8, window=0)


@pytest.mark.parametrize("window,r,rho,s_hh", [(1, 0.0, 0.0, 1.0), (4, 0.0, 0.3, 1.0), (4, 0.5, 0.0, 1.0),
                                                (8, 0.2, 0.5, 1.5), (8, 0.8, 0.8, 0.5), (8, 0.1, 0.3, 2.0)])
def test_local_rnn_moments_match_monte_carlo(window, r, rho, s_hh):
    """Forward var/cov and input-gradient var/cov of interior positions, d = 256, 8 weight draws (fixed seeds):
    within 6% (covariances: 6% of the variance)."""
    d, B, N, R = 256, 4, 48, 8
    s_ih, s_out = 1.0, 1.3
    theory = C.local_rnn(C.Moments(0.0, 1.0, r, 1.0, rho), d=d, window=window, sigma_ih2=s_ih / d,
                         sigma_hh2=s_hh / d, sigma_out2=s_out / d)
    fv = fc = gv = gc = 0.0
    for seed in range(R):
        gen = torch.Generator().manual_seed(seed)
        m = LocalRNN(d, window).double()
        with torch.no_grad():
            for lin, s2 in ((m.ih, s_ih), (m.hh, s_hh), (m.proj, s_out)):
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen, dtype=torch.float64) * math.sqrt(s2 / d))
                if lin.bias is not None:
                    lin.bias.zero_()
        x = _correlated(B, N, d, r, gen).requires_grad_(True)
        y = m(x)
        g = _correlated(B, N, d, rho, gen)
        (y * g).sum().backward()
        a, b = _pair_stats(y[:, window - 1 :].detach())  # positions with a whole window
        fv, fc = fv + a / R, fc + b / R
        a, b = _pair_stats(x.grad[:, window - 1 : N - window + 1])  # tokens read by every window
        gv, gc = gv + a / R, gc + b / R
    print(f"\nwindow {window} r {r} rho {rho} d*s_hh^2 {s_hh}: forward var {fv / theory.var - 1:+.1%}, input grad var "
          f"{gv / theory.grad_var - 1:+.1%}")
    assert fv == pytest.approx(theory.var, rel=0.06)
    assert abs(fc - theory.cov) < 0.06 * theory.var
    assert gv == pytest.approx(theory.grad_var, rel=0.06)
    assert abs(gc - theory.grad_cov) < 0.06 * theory.grad_var


# ---------------------------------------------------------------------------------------------------------------
# The model option and its DSLM init.


@pytest.mark.parametrize("name", ["dslm_bert_tiny", "dslm_gpt_tiny", "dslm_vit_tiny", "dslm_st_tiny"])
@pytest.mark.parametrize("init,norm_first", [("dslm", True), ("dslm", False), ("xavier", True), ("megatron", True),
                                             ("deepnorm", False)])
def test_every_family_takes_a_local_rnn_and_every_scheme_draws_it(name, init, norm_first):
    m = dslm_zoo.create_model(name, local_rnn=3, init=init, norm_first=norm_first)  # init_model checks every tensor
    for st in m.stacks():
        assert st.local_rnn == 3 and st.num_sublayers == st.depth * len(st.blocks[0].residuals())
        assert [type(r.branch).__name__ for r in st.blocks[0].residuals()][0] == "LocalRNN"
    rnn = m.stacks()[0].blocks[0].rnn.branch
    if init == "dslm":
        d = rnn.ih.in_features
        want = dslm_local_rnn_vars(d, 3, m.cfg.drop_rate)
        got = [float(lin.weight.detach().var()) for lin in (rnn.ih, rnn.hh, rnn.proj)]
        np.testing.assert_allclose(got, want, rtol=0.2)  # d^2 draws: a few percent of sampling spread


def test_local_rnn_config_is_validated_and_decoding_caches_refuse_it():
    with pytest.raises(ValueError, match="local_rnn must be >= 0"):
        dslm_zoo.create_model("dslm_gpt_tiny", local_rnn=-1)
    with pytest.raises(TypeError, match="local_rnn must be an integer"):
        dslm_zoo.create_model("dslm_gpt_tiny", local_rnn=2.5)
    from dslm_zoo.layers import DecodeCache

    m = dslm_zoo.create_model("dslm_st_tiny", local_rnn=2)
    with pytest.raises(ValueError, match="nor a local RNN"):
        m.decoder(torch.randn(1, 3, m.cfg.embed_dim), memory=torch.randn(1, 4, m.cfg.embed_dim), cache=DecodeCache())


def test_dslm_local_rnn_branch_has_unit_gain_and_its_correlation_map():
    """At the DSLM variances the branch's forward gain is 1 after dropout, and the correlation map the init's
    attention schedule uses is the theory's output correlation."""
    for window in (1, 4, 16):
        for r in (0.0, 0.3, 0.9):
            s_ih, s_hh, s_out = dslm_local_rnn_vars(64, window, 0.1)
            out = C.local_rnn(C.Moments(0.0, 1.0, r), d=64, window=window, sigma_ih2=s_ih, sigma_hh2=s_hh, sigma_out2=s_out)
            assert out.var == pytest.approx(0.9)
            assert out.corr == pytest.approx(local_rnn_corr_map(r, window))


@pytest.mark.parametrize("name", ["dslm_bert_tiny", "dslm_gpt_tiny"])
def test_the_config_path_reads_the_local_rnn_exactly(name):
    kw = dict(depth=3, init="dslm", local_rnn=4, pos_embed="none")
    fast, full = predict(name, **kw), predict(name, _fast=False, **kw)
    assert fast.kind == full.kind and fast.kind[1:4] == ["rnn", "attn", "ffn"]
    for col in ("fwd_var", "fwd_corr", "grad_var", "grad_corr", "wgrad_norm"):
        np.testing.assert_array_equal(getattr(fast, col), getattr(full, col), err_msg=col)


@pytest.mark.parametrize("family,norm_first", [("dslm_gpt_tiny", True), ("dslm_bert_tiny", False)])
def test_prediction_matches_measurement_with_a_local_rnn(family, norm_first):
    """DSLM with local_rnn=4 and no position embedding, d = 256, 4 layers, 32 tokens x 16 sequences, 8 seeds.
    Reached: GPT Pre-LN forward max 4.6%, gradient ratio x0.966; BERT Post-LN sums max 3.3%, x0.917 (the first
    window - 1 positions read zero padding, which the theory leaves out)."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    extra = dict(type_vocab_size=0) if "bert" in family else {}

    def make(seed: int):
        torch.manual_seed(seed)
        return dslm_zoo.create_model(family, init="dslm", depth=4, embed_dim=256, num_heads=2, norm_first=norm_first,
                                     vocab_size=1000, local_rnn=4, pos_embed="none", **extra)

    tokens = torch.randint(0, 1000, (16, 32), generator=torch.Generator().manual_seed(0))
    pairs = list(predict_and_measure(make, tokens, 8, seq_len=32))
    _, m, c = average_pairs(pairs)
    s, a = c.summary, across_models(pairs)
    print(f"\n{family} local_rnn=4 {'Pre' if norm_first else 'Post'}-LN: fwd max {100 * s['fwd_var_max_err']:.2f}%, "
          f"sums max {100 * s['sum_var_max_err']:.2f}%, grad ratio x{s['grad_ratio_rel']:.3f}")
    assert m.kind[1] == "rnn"
    assert s["fwd_var_max_err"] < 0.06 and s["sum_var_max_err"] < 0.06
    assert abs(s["grad_ratio_rel"] - 1.0) < 0.15
    assert s["grad_var_median_err"] < 0.10 and s["fwd_corr_median_err"] < 0.10
    assert abs(a["factor_bias"]) < 0.02


def test_speech_decoding_with_a_local_rnn_runs_whole_prefixes():
    torch.manual_seed(0)
    m = dslm_zoo.create_model("dslm_st_tiny", local_rnn=2).eval()
    feats = torch.randn(2, 40, m.cfg.n_mels)
    a = m.greedy_decode(feats, max_len=5)
    assert a == m.greedy_decode(feats, max_len=5, use_cache=False) and all(1 <= len(h) <= 5 for h in a)
    assert len(m.beam_search(feats, beam_size=2, max_len=4)) == 2
