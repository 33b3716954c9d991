"""Registry-parametrized model tests: every variant builds, runs, back-propagates and matches its metadata."""
from __future__ import annotations

import inspect
import re

import pytest
import torch

import dslm_zoo
from dslm_zoo.models import StackModel

from _inputs import example_inputs, output_tensor

CPU_PARAM_CAP = 8_000_000  # variants above this are checked on the meta device only


def _meta_params(name: str) -> int:
    m = dslm_zoo.create_model(name, device="meta")
    return sum(p.numel() for p in m.parameters())


ALL = dslm_zoo.list_models()
SMALL = [n for n in ALL if _meta_params(n) <= CPU_PARAM_CAP]


def test_registry_has_every_family_and_the_design_names():
    for name in ("dslm_bert_192L", "dslm_bert_1000L", "dslm_vit_deep", "dslm_gpt_1000L"):
        assert dslm_zoo.is_model(name)
    for rung in ("12L", "48L", "192L", "768L"):  # iso-parameter ladder
        assert dslm_zoo.is_model(f"dslm_bert_{rung}") and dslm_zoo.is_model(f"dslm_gpt_{rung}")
    assert len(SMALL) >= 4


@pytest.mark.parametrize("name", ALL)
def test_docstring_states_shape_and_exact_param_count(name):
    doc = inspect.getdoc(dslm_zoo.model_entrypoint(name))
    m = dslm_zoo.create_model(name, device="meta")
    stated = float(re.search(r"([\d.]+)M parameters", doc).group(1))
    assert stated == pytest.approx(sum(p.numel() for p in m.parameters()) / 1e6, abs=0.005)
    assert f"{m.depth} layers" in doc or f"{m.cfg.depth} layers" in doc
    assert f"d={m.cfg.embed_dim}" in doc


@pytest.mark.parametrize("name", SMALL)
def test_forward_backward_every_parameter_gets_a_finite_gradient(name):
    model = dslm_zoo.create_model(name)
    model.train()
    out = model(*example_inputs(model))
    output_tensor(out).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"


@pytest.mark.parametrize("name", SMALL)
def test_metadata_matches_the_model(name):
    model = dslm_zoo.create_model(name)
    pcfg = model.pretrained_cfg
    assert pcfg.architecture == name
    if pcfg.input_size is not None:
        assert pcfg.input_size == (model.cfg.in_chans, model.cfg.img_size, model.cfg.img_size)
    if pcfg.classifier is not None and model.num_classes is not None:
        head = model.get_submodule(pcfg.classifier)
        out_features = head.fc.out_features if hasattr(head, "fc") else head.out_features
        assert out_features == model.num_classes
    if pcfg.num_params is not None:
        assert pcfg.num_params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", SMALL)
def test_intermediates_are_the_residual_stream(name):
    model = dslm_zoo.create_model(name).eval()
    if not hasattr(model, "forward_features"):
        pytest.skip("no single-stack features")
    inputs = example_inputs(model)
    final, inter = model.residual_stream(*inputs)
    assert len(inter) >= model.cfg.depth + 1
    assert all(h.shape[-1] == model.cfg.embed_dim for h in inter)


@pytest.mark.parametrize("name", ["dslm_bert_1000L", "dslm_gpt_1000L", "dslm_vit_1000L"])
def test_thousand_layer_models_build_on_meta_and_initialise_after_to_empty(name):
    model = dslm_zoo.create_model(name, device="meta", embed_dim=32, num_heads=1)
    assert all(p.is_meta for p in model.parameters())
    model.to_empty(device="cpu")
    rules = model.init_weights("dslm")
    assert len(rules) > 1000
    assert all(torch.isfinite(p).all() for p in model.parameters())
    lam, beta = model.encoder.blocks[0].attn.lam, model.encoder.blocks[0].attn.beta
    assert lam**2 + beta**2 == pytest.approx(1.0)
    assert beta**2 == pytest.approx(2.0 / model.encoder.num_sublayers)


def test_unknown_kwarg_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="embed_dimm"):
        dslm_zoo.create_model("dslm_bert_tiny", embed_dimm=8)


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        (dict(embed_dim=65), "divisible"),
        (dict(init="kaiming"), "init must be"),
        (dict(drop_rate=1.0), "drop_rate"),
        (dict(act="swish"), "act must be"),
        (dict(pos_embed="rope"), "pos_embed"),
    ],
)
def test_bad_config_values_are_clear_errors(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        dslm_zoo.create_model("dslm_bert_tiny", **kwargs)


def test_ecosystem_override_names_work():
    m = dslm_zoo.create_model(
        "dslm_vit_tiny", depth=3, embed_dim=32, num_heads=4, mlp_ratio=2.0, drop_rate=0.0, attn_drop_rate=0.1,
        num_classes=7, img_size=16, patch_size=4, norm_first=False, init="xavier", dslm_k=1.0,
    )
    assert m.depth == 3 and m.num_classes == 7 and m.embed.patch_embed.num_patches == 16
    assert m(torch.randn(1, 3, 16, 16)).shape == (1, 7)


@pytest.mark.parametrize("pos_embed", ["learned", "sinusoidal", "alibi", "relative", "none"])
@pytest.mark.parametrize("family", ["dslm_bert_tiny", "dslm_gpt_tiny"])
def test_position_options(family, pos_embed):
    m = dslm_zoo.create_model(family, pos_embed=pos_embed, max_seq_len=32)
    x = torch.randint(0, m.cfg.vocab_size, (2, 12))
    out = output_tensor(m(x))
    out.backward()
    assert torch.isfinite(out)


def test_causal_model_does_not_see_the_future():
    m = dslm_zoo.create_model("dslm_gpt_tiny", pos_embed="alibi").eval()
    x = torch.randint(0, m.cfg.vocab_size, (1, 10))
    y = x.clone()
    y[0, 7:] = (y[0, 7:] + 1) % m.cfg.vocab_size
    torch.testing.assert_close(m(x)[0, :7], m(y)[0, :7])


def test_padding_mask_hides_padded_keys():
    m = dslm_zoo.create_model("dslm_bert_tiny", head="none").eval()
    x = torch.randint(0, m.cfg.vocab_size, (1, 8))
    padded = torch.cat([x, torch.randint(0, m.cfg.vocab_size, (1, 4))], 1)
    mask = torch.tensor([[1] * 8 + [0] * 4])
    torch.testing.assert_close(m(x), m(padded, mask)[:, :8], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("head", ["mlm", "qa", "cls", "none"])
def test_bert_heads(head):
    m = dslm_zoo.create_model("dslm_bert_tiny", head=head, **({"num_classes": 3} if head == "cls" else {}))
    out = m(torch.randint(0, 100, (2, 9)))
    expect = {"mlm": (2, 9, m.cfg.vocab_size), "cls": (2, 3), "none": (2, 9, 64)}
    if head == "qa":
        assert out[0].shape == out[1].shape == (2, 9)
    else:
        assert out.shape == expect[head]


def test_reset_classifier():
    m = dslm_zoo.create_model("dslm_vit_tiny")
    m.reset_classifier(3)
    assert m.num_classes == 3 and m(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    b = dslm_zoo.create_model("dslm_bert_tiny", head="cls", num_classes=2)
    b.reset_classifier(5)
    assert b(torch.randint(0, 10, (1, 4))).shape == (1, 5)
    with pytest.raises(ValueError, match="head='cls'"):
        dslm_zoo.create_model("dslm_bert_tiny").reset_classifier(2)


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(1)
    a = dslm_zoo.create_model("dslm_gpt_tiny", drop_rate=0.0)
    b = dslm_zoo.create_model("dslm_gpt_tiny", drop_rate=0.0)
    b.load_state_dict(a.state_dict())
    b.set_grad_checkpointing(True)
    x = torch.randint(0, 100, (2, 8))
    a(x).sum().backward()
    b(x).sum().backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=n)


def test_no_weight_decay_and_group_matcher():
    m = dslm_zoo.create_model("dslm_vit_tiny")
    nwd = m.no_weight_decay()
    assert {"embed.cls_token", "embed.pos_embed"} <= nwd
    assert "encoder.blocks.0.attn.branch.qkv.weight" not in nwd
    assert all(n in dict(m.named_parameters()) for n in nwd)
    gm = m.group_matcher()
    assert re.match(gm["stem"], "embed.patch_embed.proj.weight")


def test_bf16_deep_model_stays_finite_and_close_to_fp32():
    m = dslm_zoo.create_model("dslm_bert_96L_64D", head="none").eval()
    x = torch.randint(0, 1000, (2, 32))
    ref = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
    assert out.dtype == torch.float32  # the final LayerNorm runs in fp32
    assert torch.isfinite(out).all()
    rel = (out - ref).norm() / ref.norm()
    assert rel < 0.1
    m16 = dslm_zoo.create_model("dslm_bert_96L_64D", head="none", dtype=torch.bfloat16).eval()
    assert torch.isfinite(m16(x).float()).all()


def test_timm_finds_dslm_vits():
    import timm

    m = timm.create_model("dslm_vit_tiny", num_classes=4)
    assert isinstance(m, StackModel) and m(torch.randn(1, 3, 32, 32)).shape == (1, 4)
    assert "dslm_vit_deep" in timm.list_models("dslm_vit*")


def test_bert_masked_positions_gives_the_same_logits_as_the_full_head():
    m = dslm_zoo.create_model("dslm_bert_tiny", depth=2).eval()
    x = torch.randint(5, m.cfg.vocab_size, (2, 12))
    sel = torch.zeros(2, 12, dtype=torch.bool)
    sel[0, 3] = sel[1, 0] = sel[1, 7] = True
    torch.testing.assert_close(m(x, masked_positions=sel), m(x)[sel])
    with pytest.raises(ValueError, match="bool tensor of shape"):
        m(x, masked_positions=sel.long())
    with pytest.raises(ValueError, match="needs head='mlm'"):
        dslm_zoo.create_model("dslm_bert_tiny", depth=1, head="qa")(x, masked_positions=sel)


def test_gpt_generate_greedy_top_k_and_bad_arguments():
    torch.manual_seed(0)
    m = dslm_zoo.create_model("dslm_gpt_tiny", drop_rate=0.0, max_seq_len=16).train()
    x = torch.randint(5, m.cfg.vocab_size, (2, 6))
    greedy = m.generate(x, 20, temperature=0)  # runs past max_seq_len: the context is cut to the last 16 tokens
    assert greedy.shape == (2, 26) and torch.equal(greedy[:, :6], x)
    assert m.training  # generate() leaves the mode as it found it
    logits = m.eval()(greedy[:, -17:-1])[:, -1]
    assert torch.equal(greedy[:, -1], logits.argmax(-1))
    g = torch.Generator().manual_seed(1)
    assert torch.equal(m.generate(x, 5, top_k=1, generator=g), greedy[:, :11])  # top-1 sampling is greedy
    a = m.generate(x, 5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, m.generate(x, 5, generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="batch, tokens"):
        m.generate(x[0], 3)
    with pytest.raises(ValueError, match="top_k"):
        m.generate(x, 3, top_k=0)


def test_post_ln_residual_folds_lambda_into_the_norm_exactly(monkeypatch):
    """Post-LN DSLM computes LN_{eps/lam^2}(x + (beta/lam) F) (one add) for LN_eps(lam x + beta F): the same
    outputs, gradients and measured residual sums as the literal formula, to the rounding of the fp32 norm."""
    from dslm_zoo.diagnostics import measure
    from dslm_zoo.layers.residual import Residual

    torch.manual_seed(0)
    model = dslm_zoo.create_model("dslm_bert_tiny", depth=3, norm_first=False, init="dslm", vocab_size=200).double().eval()
    ids = torch.randint(5, 200, (2, 16))
    res = [r for s in model.stacks() for r in s.residuals()]
    assert all(r._folds() and r.norm_input_scale == r.lam < 1 for r in res)

    def run():
        out = model(ids)
        out.sum().backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters()}
        model.zero_grad(set_to_none=True)
        return out.detach(), grads, measure(model, ids, train=False).sum_var

    folded = run()
    monkeypatch.setattr(Residual, "_folds", lambda self: False)
    literal = run()
    torch.testing.assert_close(folded[0], literal[0], rtol=1e-5, atol=1e-5)  # LayerNorm runs in fp32
    for k in folded[1]:
        torch.testing.assert_close(folded[1][k], literal[1][k], rtol=1e-4, atol=1e-5, msg=k)
    assert folded[2] == pytest.approx(literal[2], rel=1e-5, nan_ok=True)
