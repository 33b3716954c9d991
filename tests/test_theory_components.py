"""Moment calculator (dslm_zoo.theory.components) vs closed forms and vs Monte Carlo (reduced grids).

The Monte Carlo bar: every [P50, P90, P99] of our error on a component's reduced grid is at or below the
authors' published number times 1.5 (numbers the authors print as 0.0 are read as < 0.05). Documented
extra slack (see _SLACK) only where the reduced grid is structurally noisier or differently composed than
the authors' full grid. The full grids run in eval/verify_theory.py (docs/theory.md has the table).
"""
from __future__ import annotations

import functools
import math
import time

import numpy as np
import pytest
import torch

from dslm_zoo.theory import components as C
from dslm_zoo.theory import montecarlo as mc
from dslm_zoo.theory.components import Moments


# ----------------------------------------------------------------------------------------------------------
# Closed forms at known values
# ----------------------------------------------------------------------------------------------------------
def test_relu_corr_map_known_values() -> None:
    assert C.relu_corr_map(0.0) == pytest.approx(1.0 / math.pi)
    assert C.relu_corr_map(1.0) == pytest.approx(1.0)
    # the quadratic approximation quoted in the spec, within 0.02 on [0, 1]
    for r in np.linspace(0, 1, 11):
        assert C.relu_corr_map(r) == pytest.approx(1 / math.pi + r / 2 + (0.5 - 1 / math.pi) * r * r, abs=0.02)


def test_relu_moments_unit_variance() -> None:
    out = C.relu(Moments(0.0, 1.0, 0.0, 2.0, 0.5))
    assert out.mean == pytest.approx(1 / math.sqrt(2 * math.pi))
    assert out.var == pytest.approx((math.pi - 1) / (2 * math.pi))
    assert out.cov == pytest.approx((1 - 1) / (2 * math.pi) + 0.0, abs=1e-12)  # r = 0: sqrt(1)-0-1 = 0
    assert out.grad_var == pytest.approx(1.0)  # g2 / 2
    assert out.grad_cov == pytest.approx(2.0 * 0.5 * 0.25)  # rho g2 / 4 at r = 0
    same = C.relu(Moments(0.0, 3.0, 1.0))
    assert same.corr == pytest.approx(1.0)
    # correlation map: out corr relates to f(r) via (E[relu a relu b] - mean^2) / var
    r = 0.4
    o = C.relu(Moments(0.0, 1.0, r))
    assert (o.cov + o.mean**2) / 0.5 == pytest.approx(C.relu_corr_map(r))


def _gauss_expect(f, t: float) -> float:
    """E[f(x)], x ~ N(0, t), by a dense trapezoid rule (float64)."""
    x = torch.linspace(-12.0, 12.0, 400_001, dtype=torch.float64) * math.sqrt(t)
    dens = torch.exp(-x * x / (2 * t)) / math.sqrt(2 * math.pi * t)
    return torch.trapezoid(f(x) * dens, x).item()


def test_gelu_closed_forms_match_quadrature() -> None:
    Phi = lambda x: 0.5 * (1 + torch.special.erf(x / math.sqrt(2)))  # noqa: E731
    phi = lambda x: torch.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    for t in (0.1, 1.0, 10.0):
        mean_q = _gauss_expect(lambda x: x * Phi(x), t)
        var_q = _gauss_expect(lambda x: (x * Phi(x)) ** 2, t) - mean_q**2
        mean, var = C.gelu_moments(t)
        assert mean == pytest.approx(mean_q, rel=1e-7)
        assert var == pytest.approx(var_q, rel=1e-7)
        assert C.gelu_cross_moment(t, 1.0) == pytest.approx(var + mean**2, rel=1e-9)
        assert C.gelu_cross_moment(t, 0.0) == pytest.approx(mean**2, rel=1e-9)
        dsq = _gauss_expect(lambda x: (Phi(x) + x * phi(x)) ** 2, t)
        assert C.gelu(Moments(0.0, t, 0.3, 1.0, 0.0)).grad_var == pytest.approx(dsq, rel=1e-7)


@pytest.mark.parametrize("act", [C.relu, C.gelu])
def test_nonzero_mean_path_agrees_with_closed_form_at_zero_mean(act) -> None:
    m = Moments(0.0, 1.3, 0.4, 2.0, 0.3)
    a, b = act(m), act(m.replace(mean=1e-9))
    for f in ("mean", "var", "corr", "grad_var", "grad_corr"):
        assert getattr(b, f) == pytest.approx(getattr(a, f), rel=1e-6, abs=1e-9)
    neg = act(Moments(0.0, 1.0, -0.3)), act(Moments(1e-9, 1.0, -0.3))
    assert neg[1].cov == pytest.approx(neg[0].cov, rel=1e-5)


def test_relu_nonzero_mean_known_value() -> None:
    mu = 1.0  # E[relu(x)], x ~ N(1, 1): Phi(1) + phi(1)
    out = C.relu(Moments(mu, 1.0, 0.0))
    assert out.mean == pytest.approx(C._Phi(1.0) + C._phi(1.0))
    assert out.grad_var == pytest.approx(C._Phi(1.0))  # P(x > 0) g2


def test_linear_dropout_identities() -> None:
    m = Moments(0.5, 2.0, 0.25, 3.0, 0.2)
    lin = C.linear(m, 100, 300, 0.01)
    assert lin.mean == 0.0
    assert lin.var == pytest.approx(100 * 0.01 * (2.0 + 0.25))
    assert lin.cov == pytest.approx(100 * 0.01 * (0.25 + 0.5))
    assert lin.grad_var == pytest.approx(300 * 0.01 * 3.0) and lin.grad_corr == pytest.approx(0.2)
    assert C.dropout(m, 0.0) == m
    dr = C.dropout(Moments(0.0, 2.0, 0.5, 1.0, 0.4), 0.25)
    assert dr.mean == 0.0 and dr.var == pytest.approx(2.0 / 0.75)
    assert dr.corr == pytest.approx(0.5 * 0.75) and dr.cov == pytest.approx(1.0)
    assert dr.grad_var == pytest.approx(1 / 0.75) and dr.grad_corr == pytest.approx(0.4 * 0.75)
    assert C.dropout(m, 0.5).var == pytest.approx((2.0 + 0.5 * 0.25) / 0.5)
    assert C.dropout(m, 0.5).mean == 0.5


def test_layernorm_identities() -> None:
    m = Moments(-3.0, 4.0, 0.6, 2.0, 0.3)
    paper = C.layernorm(m, 100, finite_d=False)
    assert (paper.mean, paper.var) == (0.0, 1.0)
    assert paper.corr == pytest.approx(0.6 * (1 - 1 / 100))
    assert paper.grad_var == pytest.approx(2.0 / 4.0) and paper.grad_corr == pytest.approx(0.3)
    fin = C.layernorm(m, 100)
    assert fin.var == 1.0
    assert fin.grad_var == pytest.approx(2.0 * 98 / (97 * 4.0))
    assert C.layernorm_feature_corr(100) == pytest.approx(-1 / 99)
    assert C._cos_angle_mean(1.0, 50) == pytest.approx(1.0, abs=1e-9)
    assert C._cos_angle_mean(0.0, 50) == 0.0
    for r in (0.2, 0.8):  # ~ r (1 - (1 - r^2)/(2n)); -> r for large d
        assert C._cos_angle_mean(r, 999) == pytest.approx(r * (1 - (1 - r * r) / 1998), rel=1e-5)
    assert C.layernorm(m, 10**6).corr == pytest.approx(0.6, rel=1e-5)
    # the input mean and scale drop out
    assert C.layernorm(m.replace(mean=7.0, var=9.0), 100).corr == pytest.approx(fin.corr)


def test_layernorm_corr_matches_torch() -> None:
    g = torch.Generator().manual_seed(3)
    d, r = 20, 0.5
    z0, Z = torch.randn(20000, 1, d, generator=g), torch.randn(20000, 2, d, generator=g)
    y = torch.nn.functional.layer_norm(math.sqrt(r) * z0 + math.sqrt(1 - r) * Z, (d,))
    cos = (y[:, 0] * y[:, 1]).sum(-1) / d
    assert cos.mean().item() == pytest.approx(C.layernorm(Moments(0, 1, r), d).corr, abs=0.004)
    assert abs(cos.mean().item() - r * (1 - 1 / d)) > 0.01  # the paper's r (1 - 1/d) is off at small d


def test_softmax_variants() -> None:
    m = Moments(0.0, 0.5, 0.2, 2.0, 0.0)
    L = 1000
    s = 0.8 * 0.5
    assert C.softmax(m, L).mean == pytest.approx(1 / L)
    assert C.softmax(m, L, variant="approx").var == pytest.approx((math.exp(s) - 1) / L**2)
    big = math.exp(s * L / (L - 1))
    assert C.softmax(m, L).var == pytest.approx((big - 1) * big**2 / ((L - 1) * math.exp(s) + 1) ** 2)
    assert C.softmax(m, L).grad_var == pytest.approx(2.0 * (C.softmax(m, L).var + 1 / L**2))
    tiny = Moments(0.0, 1e-6, 0.0)
    assert C.softmax(tiny, 300, variant="improved").var == pytest.approx(1e-6 * (1 - 1 / 300) / 300**2, rel=1e-4)
    assert C.softmax(m.replace(grad_corr=1.0), L).grad_var == 0.0  # a shared gradient is annihilated
    assert C.softmax(m, L).corr == pytest.approx(-1 / (L - 1))
    with pytest.raises(ValueError):
        C.softmax(m, L, variant="nope")


def test_softmax_weight_moments_match_sampling() -> None:
    g = torch.Generator().manual_seed(0)
    for s, L, causal in ((1.0, 5, False), (0.5, 32, True), (1.0, 64, False)):
        if causal:
            x = torch.randn(4000, L, L, generator=g, dtype=torch.float64) * math.sqrt(s)
            x = x.masked_fill(torch.ones(L, L, dtype=torch.bool).triu(1), float("-inf"))
        else:
            x = torch.randn(100_000, L, generator=g, dtype=torch.float64) * math.sqrt(s)
        P = torch.softmax(x, -1)
        S2 = (P**2).sum(-1)
        got = C._weight_moments(s, L, causal)
        assert got[0] == pytest.approx(S2.mean().item(), rel=0.01)
        assert got[1] == pytest.approx((P**3).sum(-1).mean().item(), rel=0.03)
        assert got[3] == pytest.approx((S2**2 - (P**4).sum(-1)).mean().item(), rel=0.03)
    assert C._weight_moments(1.0, 1, True)[0] == 1.0


def test_causal_structure_constants() -> None:
    L = 50
    st = C.causal_structure(L)
    H = sum(1 / n for n in range(1, L + 1))
    assert st.h1 == pytest.approx(H / L)
    assert st.a1 == pytest.approx(2 * (L - H) / (L * (L - 1)))
    # brute force over the causal pattern: query i sees keys 0..i
    S = [sum(1 / (i + 1) for i in range(j, L)) for j in range(L)]
    assert st.c2 == pytest.approx(sum(v * v for v in S) / L)
    assert st.c11 == pytest.approx((sum(S) ** 2 - sum(v * v for v in S)) / (L * (L - 1)))
    assert C.causal_structure(20000).c2 == pytest.approx(2.0, abs=0.01)  # -> int_0^1 ln^2 x dx
    full = C.causal_structure(L, causal=False)
    assert (full.h1, full.c2, full.c11) == (1 / L, 1.0, 1.0)


def _attn(m: Moments, **kw) -> Moments:
    d = kw.pop("d", 100)
    base = dict(d=d, d_k=32, seq_len=300, sigma_q2=0.36 / d, sigma_k2=0.36 / d, sigma_v2=1.0 / d)
    base.update(kw)
    return C.attention(m, **base)


def test_attention_paper_variant_is_section_2() -> None:
    d, dk, L, p = 100, 32, 300, 1 / 3
    sq2 = sk2 = 0.36 / d
    sv2 = 2.0 / d
    r, rho, g2 = 1 / 3, 0.2, 1.5
    ss2 = d * d * sq2 * sk2
    q = 1 - r
    var = d * sv2 * (r + (q * q * (L - 1) * ss2 / d + math.exp(q * ss2) / (1 - p) * (q + 4 * q * q * ss2 / d)) / L)
    cov = d * sv2 * (r + (q + 2 * q * q * ss2 / d) / L)
    gv = g2 * dk * sv2 * (1 + (L - 1) * rho * (1 - p)) / (L * (1 - p))
    gc = g2 * dk * sv2 * (1 + (L - 1) * rho) / L
    out = C.attention(Moments(0, 1, r, g2, rho), d=d, d_k=dk, seq_len=L, sigma_q2=sq2, sigma_k2=sk2, sigma_v2=sv2, attn_drop=p, variant="paper")
    assert (out.var, out.cov, out.grad_var, out.grad_cov) == pytest.approx((var, cov, gv, gc))
    with pytest.raises(ValueError):
        _attn(Moments(), variant="paper", causal=True)


def test_attention_limits() -> None:
    m = Moments(0.0, 1.0, 0.5, 1.0, 0.0)
    big = _attn(m, seq_len=10**6)
    assert big.var == pytest.approx(0.5, rel=1e-3) and big.corr == pytest.approx(1.0, abs=2e-3)  # averages tokens
    one = _attn(m, seq_len=1, causal=True, attn_drop=0.25, sigma_q2=1e-12, sigma_k2=1e-12)
    assert one.var == pytest.approx(1.0 / 0.75, rel=1e-6)  # one key: y = D v_0
    # improved and paper agree where the extra terms vanish (no dropout, small logits, rho = 0)
    a = _attn(m, sigma_q2=1e-4 / 100, sigma_k2=1e-4 / 100, variant="improved")
    b = _attn(m, sigma_q2=1e-4 / 100, sigma_k2=1e-4 / 100, variant="paper")
    assert a.var == pytest.approx(b.var, rel=1e-3) and a.grad_var == pytest.approx(b.grad_var, rel=1e-2)
    # the Q/K paths: at r = 0, ss2 = 1, L = 1000, d = 100 the softmax path is several times the value path
    m0 = Moments(0.0, 1.0, 0.0, 1.0, 0.0)
    imp = _attn(m0, seq_len=1000, sigma_q2=1 / 100, sigma_k2=1 / 100)
    pap = _attn(m0, seq_len=1000, sigma_q2=1 / 100, sigma_k2=1 / 100, variant="paper")
    assert imp.grad_var > 3 * pap.grad_var


def test_attention_forward_brackets_kept_and_fixed() -> None:
    assert C.attention_forward_brackets(0.3, None, 1.0, 64) == (0.3, 0.3)
    r, L, s, dk, d, p = 0.2, 256, 1.0, 64, 512, 0.1
    A, Cc = C.attention_forward_brackets(r, L, s, dk, p, model_dim=d)
    q = 1 - r
    assert A == pytest.approx(r + (q * q * (L - 1) * s / d + math.exp(q * s) / (1 - p) * (q + r * p + 4 * q * q * s / d)) / L)
    assert Cc == pytest.approx(r + (q + 2 * q * q * s / d) / L)
    A_old, _ = C.attention_forward_brackets(r, L, s, dk, p)  # without model_dim the head width divides
    assert A_old > A


def test_multi_head_is_linear_of_heads() -> None:
    d, H, L = 256, 8, 128
    m = Moments(0.0, 1.0, 0.3, 2.0, 0.1)
    kw = dict(seq_len=L, sigma_q2=1 / d, sigma_k2=1 / d, sigma_v2=1 / d)
    mh = C.multi_head_attention(m, d=d, n_heads=H, sigma_o2=1 / d, **kw)
    head = C.attention(m.with_grad(0, 0), d=d, d_k=d // H, **kw)
    assert mh.var == pytest.approx(d * (1 / d) * head.var)
    back = C.attention(m.with_grad(d * (1 / d) * 2.0, 0.1), d=d, d_k=d // H, **kw)
    assert mh.grad_var == pytest.approx(H * back.grad_var)


def test_embedding_and_collisions() -> None:
    assert C.collision_probability([1] * 50) == pytest.approx(1 / 50)
    assert C.collision_probability([3, 1]) == pytest.approx(0.75**2 + 0.25**2)
    e = C.embedding([0.5, 0.3, 0.2], [0.1, 0.0, 0.5])
    assert e.var == pytest.approx(1.0) and e.corr == pytest.approx(0.05 + 0.1)
    e2 = C.embedding([0.3, 0.3, 0.3], [0.1, 0.0, 0.5], p=0.1)
    assert e2.var == pytest.approx(1.0) and e2.corr == pytest.approx((0.03 + 0.15) / 0.9 * 0.9)
    with pytest.raises(ValueError):
        C.embedding([1.0], [0.1, 0.2])


def test_residual_chain_and_layers() -> None:
    m = Moments(0.0, 1.0, 0.4, 1.0, 0.2)
    same = C.combine_independent(m, m, math.sqrt(0.3), math.sqrt(0.7))
    assert same.var == pytest.approx(1.0) and same.corr == pytest.approx(0.4) and same.grad_var == pytest.approx(1.0)
    # chain runs the backward pass in reverse at each stage's forward input
    lin = functools.partial(C.linear, d_in=10, d_out=20, sigma2=0.1)
    ch = C.chain(m, lin, C.relu)
    assert ch.grad_var == pytest.approx(20 * 0.1 * 0.5 * 1.0)  # relu halves, then linear backward
    # Post-LN keeps the variance at 1; Pre-LN grows it
    ff = functools.partial(C.ffn, d=64, d_ff=256, sigma1_2=2 / 64, sigma2_2=1 / 256)
    assert C.post_ln(m, ff, 64).var == pytest.approx(1.0)
    assert C.pre_ln(m, ff, 64).var == pytest.approx(2.0, rel=0.05)
    with pytest.raises(ValueError):
        C.ffn(m, d=8, d_ff=32, sigma1_2=1, sigma2_2=1, activation="tanh")


def test_thousand_layer_recursion_is_fast() -> None:
    d, N, p = 1024, 1000, 0.1
    lam, beta = math.sqrt(1 - 1 / N), math.sqrt(1 / N)
    att = functools.partial(C.multi_head_attention, d=d, n_heads=16, seq_len=256, sigma_q2=1 / d, sigma_k2=1 / d, sigma_v2=1 / d, sigma_o2=1 / d)
    ff = functools.partial(C.ffn, d=d, d_ff=4 * d, sigma1_2=math.sqrt(0.45) / d, sigma2_2=math.sqrt(0.45) / d, p=p)

    def layer(x: Moments) -> Moments:
        return C.pre_ln(C.pre_ln(x, lambda y: C.dropout(att(y), p), d, lam, beta), ff, d, lam, beta)

    t = time.process_time()
    res = C.propagate(Moments(0, 1, 0.2, 1, 0), [layer] * N)
    assert time.process_time() - t < 1.0
    assert len(res) == N + 1 and all(math.isfinite(r.var) and math.isfinite(r.grad_var) for r in res)


# ----------------------------------------------------------------------------------------------------------
# Monte Carlo machinery
# ----------------------------------------------------------------------------------------------------------
def test_calc_err_and_percentiles() -> None:
    assert mc.calc_err(2.0, 1.0) == pytest.approx(0.5)
    assert mc.calc_err(0.02, 0.0, 0.5) == pytest.approx(0.02)  # min(|a|, |a / pred_var|)
    assert mc.calc_err(2.0, 1.0, 10.0) == pytest.approx(0.1)  # min(0.5, 1/10)
    assert mc.percentiles([0.01] * 50 + [0.02] * 49 + [1.0]) == pytest.approx((2.0, 2.0, 100.0))


def test_linear_accumulator_matches_torch_cov() -> None:
    g = torch.Generator().manual_seed(1)
    comps = [torch.randn(7, 1, 5, generator=g) + 3.0, torch.randn(7, 11, 5, generator=g)]
    a = [2.0, 0.7]
    acc = mc._LinAcc(2, 11)
    acc.add([c[:3] for c in comps])
    acc.add([c[3:] for c in comps])
    y = (a[0] * comps[0] + a[1] * comps[1]).double()
    mean, var, cov = acc.stats(a)
    cm = torch.cov(y.transpose(0, 1).reshape(11, -1))
    cm.fill_diagonal_(0)
    assert mean == pytest.approx(y.mean().item(), rel=1e-6)
    assert var == pytest.approx((y * y).mean().item() - y.mean().item() ** 2, rel=1e-5)
    assert cov == pytest.approx(cm.mean().item() * 11 / 10, rel=1e-4)


def test_width_divisor_is_model_width() -> None:
    for row in mc.check_width_divisor(runs=32, configs=((316, 32, 600), (200, 64, 600))):
        assert row["pred_model_width"] == pytest.approx(row["measured"], rel=0.08)
        assert abs(row["pred_head_width"] / row["measured"] - 1) > 0.5


# ----------------------------------------------------------------------------------------------------------
# Theory vs Monte Carlo on the reduced grids
# ----------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _reduced(component: str) -> mc.SuiteResult:
    return mc.run_component(component, "reduced", seed=0)


# (component, quantity) -> extra factor on the P99 bar, with the reason.
_SLACK = {
    # GeLU: the reduced grid keeps only L = 100 (10x fewer samples per configuration than the L = 1000
    # half of the authors' grid) and 15 independent draws, so P99 is the maximum of few noisy draws.
    ("gelu", "g var"): 1.5,
    ("gelu", "g cov"): 1.5,
    # Paper softmax formulas: an O(1/L) bias concentrated at L = 300, s2 = 1; the 40-point sub-sample
    # contains that corner, which the authors' 625-point grid pushes beyond its 99th percentile.
    ("softmax", "g var full"): 2.0,
    ("softmax", "g var approx"): 2.0,
}

_BARS = [(c, q) for c in mc.PAPER_COMPONENTS for q in mc.AUTHORS_ERRORS[c] if not (c == "attention" and q == "g var")]


@pytest.mark.parametrize("component,quantity", _BARS)
def test_reduced_grid_within_authors_errors(component: str, quantity: str) -> None:
    res = _reduced(component)
    ours = mc.percentiles(res.errors[quantity])
    ref = mc.AUTHORS_ERRORS[component][quantity]
    slack = (1.0, 1.0, _SLACK.get((component, quantity), 1.0))
    for q, o, a, s in zip(mc.PERCENTILES, ours, ref, slack):
        bar = 1.5 * max(a, 0.05) * s
        assert o <= bar, f"{component} {quantity} P{q}: {o:.2f}% > {bar:.2f}% (authors {a})"


def test_attention_gradient_improved_beats_paper() -> None:
    res = _reduced("attention")
    imp = mc.percentiles(res.errors["g var"])
    pap = mc.percentiles(res.errors["g var (paper)"])
    assert imp[2] <= 10.0, imp  # the target: P99 <= 10 %
    assert imp[1] <= 1.5 * 4.1  # at the level of the forward variance
    # negative control: the paper's value-path formula fails the same bar (the test can fail)
    assert pap[2] > 20.0 and pap[1] > 8.0, pap


def test_softmax_improved_variant() -> None:
    res = _reduced("softmax")
    for q, ref in (("x var improved", "x var full"), ("g var improved", "g var full")):
        ours, authors = mc.percentiles(res.errors[q]), mc.AUTHORS_ERRORS["softmax"][ref]
        assert all(o <= 1.5 * max(a, 0.05) for o, a in zip(ours, authors)), (q, ours)


def test_layernorm_finite_d_beats_paper() -> None:
    res = _reduced("layernorm")
    assert np.median(res.errors["x cov"]) < np.median(res.errors["x cov (paper)"])
    assert np.median(res.errors["g var"]) < np.median(res.errors["g var (paper)"])


# Our own suites: no published numbers; bars at the level of their Monte Carlo noise (batch 16-64, one
# weight draw per configuration, logit variance ss2 up to 1, head widths down to 16 in "mha").
# (outer points kept, runs, [P50, P90, P99] bars in percent); sub-sampled to keep the default run short.
_EXTRA_BARS = {
    "causal_attention": (12, 64, (5.0, 10.0, 16.0)),
    "cross_attention": (24, 32, (6.0, 12.0, 18.0)),
    "mha": (16, 32, (6.0, 15.0, 20.0)),
    "ffn": (24, 64, (6.0, 12.0, 16.0)),
    "embedding": (8, 48, (3.0, 4.0, 4.0)),
    "activation_mean": (18, 10_000, (2.0, 6.0, 10.0)),
}


@pytest.mark.parametrize("component", sorted(_EXTRA_BARS))
def test_extra_suites(component: str) -> None:
    sample, runs, bars = _EXTRA_BARS[component]
    base = mc.EXTRA_GRIDS[component]
    spec = mc.GridSpec(base.axes, base.outer, runs, base.replicas, base.note, sample)
    res = mc.run_component(component, spec, seed=0)
    for q, e in res.errors.items():
        p = mc.percentiles(e)
        for v, b in zip(p, bars):
            assert v <= b, f"{component} {q}: {p}"


@pytest.mark.slow
@pytest.mark.parametrize("component", list(mc.EXTRA_COMPONENTS))
def test_extra_suites_full(component: str) -> None:
    res = mc.run_component(component, "reduced", seed=0)
    tol = (30.0, 30.0, 30.0) if component == "residual_layers" else (6.0, 17.0, 25.0)
    for q, e in res.errors.items():
        assert all(v <= t for v, t in zip(mc.percentiles(e), tol)), (component, q, mc.percentiles(e))
