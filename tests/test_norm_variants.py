"""The deep-stability methods the depth study compares DSLM with, as model options of every family:
DyT (``norm='dyt'``), Peri-LN (``peri_norm=True``) and LayerNorm Scaling (``ln_scaling=True``)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import dslm_zoo
from dslm_zoo.diagnostics import average_pairs, predict, predict_and_measure
from dslm_zoo.layers import DyT

from _inputs import example_inputs, output_tensor

TINY = ["dslm_bert_tiny", "dslm_gpt_tiny", "dslm_vit_tiny", "dslm_st_tiny"]
OPTIONS = [dict(norm="dyt"), dict(peri_norm=True), dict(ln_scaling=True), dict(norm="dyt", peri_norm=True, ln_scaling=True)]


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "+".join(f"{k}={v}" for k, v in o.items()))
def test_every_family_builds_trains_and_round_trips_with_each_option(name, opts, tmp_path):
    torch.manual_seed(0)
    model = dslm_zoo.create_model(name, **opts).train()
    output_tensor(model(*example_inputs(model))).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    stack = model.stack_plans()[0].stack
    res = stack.residuals()
    assert all(isinstance(r.norm, DyT) == (opts.get("norm") == "dyt") for r in res)
    assert all((r.out_norm is not None) == opts.get("peri_norm", False) for r in res)
    per = len(stack.blocks[0].residuals())
    assert [r.in_scale for r in res] == ([(i // per + 1) ** -0.5 for i in range(len(res))] if opts.get("ln_scaling")
                                        else [1.0] * len(res))
    dslm_zoo.save_pretrained(model, tmp_path)
    back = dslm_zoo.create_model(f"local-dir:{tmp_path}").eval()
    model.eval()
    x = example_inputs(model)
    with torch.no_grad():
        torch.testing.assert_close(output_tensor(back(*x)), output_tensor(model(*x)))


def test_dyt_is_the_papers_formula_and_init():
    m = dslm_zoo.create_model("dslm_bert_tiny", norm="dyt")
    n = m.encoder.blocks[0].attn.norm
    assert float(n.alpha.detach()) == 0.5 and bool((n.weight == 1).all()) and bool((n.bias == 0).all())
    with torch.no_grad():
        n.alpha.fill_(0.7), n.weight.uniform_(), n.bias.uniform_()
    x = torch.randn(2, 5, n.weight.shape[0], dtype=torch.bfloat16)
    want = (torch.tanh(0.7 * x.float()) * n.weight + n.bias).to(torch.bfloat16)
    torch.testing.assert_close(n(x), want)


def test_peri_ln_normalises_each_branch_output():
    torch.manual_seed(0)
    m = dslm_zoo.create_model("dslm_bert_tiny", peri_norm=True, drop_rate=0.0).eval()
    got = []
    hooks = [r.out_norm.register_forward_hook(lambda mod, i, o: got.append(o)) for r in m.encoder.residuals()]
    with torch.no_grad():
        m(torch.randint(5, 100, (2, 16)))
    for h in hooks:
        h.remove()
    assert len(got) == 8 and all(torch.allclose(o.var(-1, unbiased=False), torch.ones(2, 16), atol=1e-3) for o in got)


@pytest.mark.parametrize("kwargs,msg", [
    (dict(norm="rms"), "norm must be one of"),
    (dict(peri_norm=True, norm_first=False), "Pre-LN variants"),
    (dict(ln_scaling=True, norm_first=False), "Pre-LN variants"),
])
def test_bad_options_are_clear_errors(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        dslm_zoo.create_model("dslm_bert_tiny", **kwargs)


@pytest.mark.parametrize("opts", [dict(norm="dyt"), dict(peri_norm=True)])
def test_predict_refuses_what_the_theory_does_not_model(opts):
    with pytest.raises(ValueError, match="not modelled"):
        predict("dslm_bert_tiny", **opts)
    with pytest.raises(ValueError, match="not modelled"):
        predict(dslm_zoo.create_model("dslm_bert_tiny", device="meta", **opts))


@pytest.mark.parametrize("name", ["dslm_bert_tiny", "dslm_gpt_tiny", "dslm_st_tiny"])
@pytest.mark.parametrize("init", ["dslm", "xavier"])
def test_ln_scaling_config_path_equals_the_full_meta_build(name, init):
    kw = dict(depth=3, init=init, ln_scaling=True, **({"decoder_depth": 2} if name == "dslm_st_tiny" else {}))
    fast, full = predict(name, **kw), predict(name, _fast=False, **kw)
    for col in ("fwd_var", "fwd_corr", "grad_var", "grad_corr"):
        np.testing.assert_array_equal(getattr(fast, col), getattr(full, col), err_msg=col)
    plain = predict(name, **{**kw, "ln_scaling": False})
    assert fast.fwd_var != plain.fwd_var  # the scaling reaches the prediction


def test_ln_scaling_prediction_matches_measurement():
    """Xavier Pre-LN with LayerNorm Scaling (the Curse-of-Depth setting), d = 256, 8 layers, 12 seeds: the same
    tolerances as the plain stacks of tests/test_diagnostics.py."""
    def make(seed):
        torch.manual_seed(seed)
        return dslm_zoo.create_model("dslm_bert_tiny", init="xavier", depth=8, embed_dim=256, num_heads=2,
                                     vocab_size=1000, type_vocab_size=0, ln_scaling=True)

    tokens = torch.randint(0, 1000, (16, 32), generator=torch.Generator().manual_seed(0))
    _, m, c = average_pairs(list(predict_and_measure(make, tokens, 12, seq_len=32)))
    s = c.summary
    print(f"\nbert xavier Pre-LN + LN scaling: fwd max {100 * s['fwd_var_max_err']:.2f}%, "
          f"grad ratio x{s['grad_ratio_rel']:.3f}")
    assert s["fwd_var_max_err"] < 0.05
    assert abs(s["grad_ratio_rel"] - 1.0) < 0.15
    assert all(math.isfinite(v) for v in m.fwd_var)
