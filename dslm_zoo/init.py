"""Named initialisation schemes: 'dslm', 'xavier', 'deepnorm', 'megatron', 'skip'.

One function per scheme, a dispatcher (``init_model``) and a walk over typed submodules: every scheme states a
rule per module type, never per parameter-name substring. ``InitRecord`` writes down which rule touched which
tensor (fused Q/K/V slices separately) and refuses a tensor touched twice or left out, so the scope of a scheme
is explicit and tested. Depth-dependent constants come from ``dslm_zoo.theory.recipe``.

A scheme has two parts: the fixed scalars of the architecture (residual lambda/beta, tied-logit scale), which
``'skip'`` also sets (from ``cfg.init``) because they are not stored in checkpoints, and the parameter draws.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from .layers import (
    Attention,
    CrossAttention,
    DyT,
    LMHead,
    LocalRNN,
    Mlp,
    RelativePositionBias,
    SinusoidalPosition,
    SpeechEmbedding,
    TokenEmbedding,
    Transformer,
    ViTEmbedding,
)
from .layers.position import AlibiBias
from .theory.recipe import (
    SublayerSpec,
    deepnorm_constants,
    dslm_attention_schedule,
    dslm_embedding_var,
    dslm_ffn_var,
    dslm_local_rnn_vars,
    dslm_residual_scales,
)

__all__ = ["SCHEMES", "InitRule", "StackPlan", "InitRecord", "init_model", "set_scales", "stack_sublayer_specs",
           "StackContext", "stack_scales", "stack_stds"]

SCHEMES = ("dslm", "xavier", "deepnorm", "megatron", "dslm_init_only", "dslm_scales_only", "skip")
_STD_002 = 0.02  # BERT / Megatron convention


@dataclass(frozen=True)
class InitRule:
    """What a scheme did to one tensor (or one fused slice): a normal draw of ``std`` or a constant ``value``."""

    why: str
    std: float | None = None
    value: float | None = None

    def __str__(self) -> str:
        return f"{self.why}: N(0, {self.std:.6g}^2)" if self.std is not None else f"{self.why}: {self.value:g}"


@dataclass(frozen=True)
class StackPlan:
    """How a family feeds one of its stacks: the input correlation and, for cross-attention, the memory."""

    stack: Transformer
    r_in: float  # token correlation entering the stack (after embedding dropout)
    memory: Transformer | None = None
    role: str = "encoder"  # 'encoder' | 'decoder' (DeepNorm's constants depend on it)


class InitRecord:
    """Applies draws and records ``{tensor name: rule}``; refuses double initialisation."""

    def __init__(self, model: nn.Module):
        self._names = {id(p): n for n, p in model.named_parameters()}
        self._numel = {n: p.numel() for n, p in model.named_parameters()}
        self._covered: dict[str, int] = {}
        self.rules: dict[str, InitRule] = {}

    def _log(self, param: nn.Parameter, view: torch.Tensor, part: str, rule: InitRule) -> None:
        name = self._names[id(param)]
        key = f"{name}[{part}]" if part else name
        if key in self.rules or (not part and name in self._covered):
            raise RuntimeError(f"{key} would be initialised twice")
        self.rules[key] = rule
        self._covered[name] = self._covered.get(name, 0) + view.numel()

    @torch.no_grad()
    def normal(self, param: nn.Parameter, std: float, why: str, view: torch.Tensor | None = None, part: str = "") -> None:
        t = param if view is None else view
        t.normal_(0.0, std)
        self._log(param, t, part, InitRule(why, std=std))

    @torch.no_grad()
    def const(self, param: nn.Parameter | None, value: float, why: str) -> None:
        if param is None:
            return
        param.fill_(value)
        self._log(param, param, "", InitRule(why, value=value))

    def linear(self, lin: nn.Linear | nn.Conv1d | nn.Conv2d, std: float, why: str) -> None:
        self.normal(lin.weight, std, why)
        self.const(lin.bias, 0.0, "bias")

    def check_complete(self) -> None:
        missing = [n for n, k in self._numel.items() if self._covered.get(n, 0) != k]
        if missing:
            raise RuntimeError(f"init left these tensors (partly) untouched: {missing}")


def stack_sublayer_specs(stack: Transformer, memory_corr: float | None = None) -> list[SublayerSpec]:
    """The stack's residual sub-layers as the theory sees them, in forward order."""
    specs = []
    for res in stack.residuals():
        b = res.branch
        if isinstance(b, CrossAttention):
            specs.append(SublayerSpec("cross_attn", stack.dim, seq_len=stack.memory_len, memory_corr=memory_corr))
        elif isinstance(b, Attention):
            specs.append(SublayerSpec("attn", stack.dim, causal=b.causal, seq_len=stack.seq_len))
        elif isinstance(b, LocalRNN):
            specs.append(SublayerSpec("rnn", stack.dim, window=b.window))
        else:
            assert isinstance(b, Mlp)
            specs.append(SublayerSpec("ffn", stack.dim, act=b.act_name, hidden_dim=b.fc1.out_features))
    return specs


# ---------------------------------------------------------------------------------------------------------------
# Each scheme's depth-dependent constants, from specs alone: the module walk below and the theory's config path
# (``dslm_zoo.diagnostics.predict``, which never builds the 1000 layers) both read them here.

StdFn = Callable[[int, str, int, int], float]  # (sub-layer index, role, fan_in, fan_out) -> std
_RNN_ROLES = ("rnn_ih", "rnn_hh", "rnn_out")  # in dslm_local_rnn_vars' order


@dataclass(frozen=True)
class StackContext:
    """What a scheme sees of one stack: its sub-layers in forward order, its depth and role, the depths of the
    model's encoder and decoder stacks (DeepNorm) and the token correlation entering it (DSLM)."""

    specs: tuple[SublayerSpec, ...]
    depth: int
    role: str
    norm_first: bool
    r_in: float
    n_enc: int
    n_dec: int

    @property
    def num_sublayers(self) -> int:
        return len(self.specs)


def stack_scales(scheme: str, ctx: StackContext, dslm_k: float) -> tuple[float, float]:
    """The scheme's residual (lambda, beta) of a stack: DSLM beta^2 = k / N_sub, DeepNorm (alpha, 1), else (1, 1)."""
    if scheme in ("dslm", "dslm_scales_only"):
        return dslm_residual_scales(ctx.num_sublayers, dslm_k)
    if scheme == "deepnorm":
        if ctx.norm_first:
            raise ValueError("'deepnorm' is defined for Post-LN stacks: build the model with norm_first=False")
        return deepnorm_constants(ctx.n_enc, ctx.n_dec, ctx.role)[0], 1.0
    return 1.0, 1.0


def stack_stds(scheme: str, ctx: StackContext, *, dslm_k: float, drop: float, attn_drop: float) -> tuple[StdFn, float]:
    """The scheme's projection std per (sub-layer, role in q k v o fc1 fc2, fans) of a stack, and the stream
    correlation leaving the stack (DSLM: from the forward recursion; it feeds the cross-attention of a decoder
    reading this stack; other schemes return nan)."""
    if scheme in ("dslm", "dslm_init_only"):
        gains, corrs = dslm_attention_schedule(list(ctx.specs), ctx.r_in, ctx.num_sublayers, dslm_k, drop, attn_drop)
        d = ctx.specs[0].dim
        specs = ctx.specs

        def dslm_std(i: int, role: str, fan_in: int, fan_out: int) -> float:
            if role in ("q", "k"):
                return 1.0 / math.sqrt(d)
            if role in ("v", "o"):
                return math.sqrt(math.sqrt(gains[i]) / d)
            if role.startswith("rnn_"):
                return math.sqrt(dslm_local_rnn_vars(d, specs[i].window, drop)[_RNN_ROLES.index(role)])
            return math.sqrt(dslm_ffn_var(d, specs[i].hidden_dim, drop, specs[i].act))

        return dslm_std, corrs[-1]
    if scheme in ("xavier", "dslm_scales_only"):
        return (lambda i, role, fi, fo: _xavier(fi, fo)), float("nan")
    if scheme == "deepnorm":
        beta = deepnorm_constants(ctx.n_enc, ctx.n_dec, ctx.role)[1]
        scaled = ("v", "o", "fc1", "fc2", "rnn_ih", "rnn_out")  # the branch's value path; not W_Q, W_K, W_hh
        return (lambda i, role, fi, fo: _xavier(fi, fo, beta if role in scaled else 1.0)), float("nan")
    if scheme == "megatron":
        out_std = _STD_002 / math.sqrt(2 * ctx.depth)
        return (lambda i, role, fi, fo: out_std if role in ("o", "fc2", "rnn_out") else _STD_002), float("nan")
    raise ValueError(f"scheme {scheme!r} draws no projections")


def _contexts(model: nn.Module, memory_corr: dict[int, float] | None = None) -> Iterator[tuple[StackPlan, StackContext]]:
    """Every stack of a model with its :class:`StackContext`, in plan order. ``memory_corr`` maps id(memory stack)
    to the correlation leaving it, for cross-attention specs: the caller fills it while iterating (a memory stack
    comes before the stack that reads it)."""
    plans: list[StackPlan] = model.stack_plans()
    n_enc = sum(p.stack.depth for p in plans if p.role == "encoder")
    n_dec = sum(p.stack.depth for p in plans if p.role == "decoder")
    for plan in plans:
        mem = None if plan.memory is None or memory_corr is None else memory_corr.get(id(plan.memory))
        specs = tuple(stack_sublayer_specs(plan.stack, mem))
        yield plan, StackContext(specs, plan.stack.depth, plan.role, plan.stack.norm_first, plan.r_in, n_enc, n_dec)


# ---------------------------------------------------------------------------------------------------------------
# Fixed scalars: residual lambda/beta and the tied-logit scale.


_DSLM_DRAWS = ("dslm", "dslm_init_only")  # schemes drawing DSLM's weights (embeddings, logit scale included)


def set_scales(model: nn.Module, scheme: str) -> None:
    """Set the scheme's fixed scalars: every ``Residual``'s (lambda, beta), every LM head's logit scale and the
    scale of fixed sinusoidal position tables."""
    for plan, ctx in _contexts(model):
        lam, beta = stack_scales(scheme, ctx, model.cfg.dslm_k)
        for res in plan.stack.residuals():
            res.set_scales(lam, beta)
    p = model.cfg.drop_rate
    for m in model.modules():
        if isinstance(m, LMHead):
            m.logit_scale = 1.0
            if scheme in _DSLM_DRAWS and m.tied:
                (emb,) = [e for e in model.modules() if isinstance(e, TokenEmbedding) and e.word is m.tied_embedding]
                var_emb = dslm_embedding_var(emb.num_tables, p)
                m.logit_scale = 1.0 / math.sqrt(m.dim * var_emb)
        elif isinstance(m, (TokenEmbedding, SpeechEmbedding)) and isinstance(m.pos, SinusoidalPosition):
            # a fixed table is a summed table too (DSLM: variance (1-p)/n_t); its scale is not in the state dict,
            # so 'skip' (weight loading) must restore it like lambda and beta
            m.pos.variance = dslm_embedding_var(m.num_tables, p) if scheme in _DSLM_DRAWS else 0.5


def _reset_buffers(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (SinusoidalPosition, AlibiBias)):
            m.reset_buffers()


# ---------------------------------------------------------------------------------------------------------------
# The walk: handlers by module type, most specific first; a handled module's children are not visited again.

Handler = Callable[[nn.Module], None]


def _walk(module: nn.Module, handlers: list[tuple[type, Handler]]) -> None:
    for cls, fn in handlers:
        if isinstance(module, cls):
            fn(module)
            return
    for child in module.children():
        _walk(child, handlers)


def _norm(rec: InitRecord) -> tuple[type, Handler]:
    def fn(m: nn.Module) -> None:
        rec.const(m.weight, 1.0, "LayerNorm gain")
        rec.const(m.bias, 0.0, "LayerNorm bias")

    return (nn.LayerNorm, fn)


def _dyt(rec: InitRecord) -> tuple[type, Handler]:
    def fn(m: nn.Module) -> None:  # the DyT paper's init in every scheme: alpha 0.5, gain 1, bias 0
        rec.const(m.alpha, m.alpha_init, "DyT alpha")
        rec.const(m.weight, 1.0, "DyT gain")
        rec.const(m.bias, 0.0, "DyT bias")

    return (DyT, fn)


def _zero_rel_bias(rec: InitRecord) -> tuple[type, Handler]:
    # zero relative bias = position-free logits at init, which is what every scheme's logit variance assumes
    return (RelativePositionBias, lambda m: rec.const(m.bias.weight, 0.0, "relative position bias"))


def _init_stack(rec: InitRecord, stack: Transformer, std_of: StdFn, why: str) -> None:
    """Draw every projection of a stack with ``std_of``; roles q, k, v, o (attention), fc1, fc2 (FFN) and rnn_ih,
    rnn_hh, rnn_out (LocalRNN).

    Q, K and V are drawn as separate (d, d) matrices, also where one fused Linear holds them.
    """
    for i, res in enumerate(stack.residuals()):
        b = res.branch
        if isinstance(b, Attention):
            d = b.proj.in_features
            cross = isinstance(b, CrossAttention)
            for role, view in (("q", b.q_weight()), ("k", b.k_weight()), ("v", b.v_weight())):
                owner = (b.q.weight if role == "q" else b.kv.weight) if cross else b.qkv.weight
                rec.normal(owner, std_of(i, role, d, d), f"{why} W_{role.upper()}", view=view, part=role)
            for bias in (b.q.bias, b.kv.bias) if cross else (b.qkv.bias,):
                rec.const(bias, 0.0, "bias")
            rec.linear(b.proj, std_of(i, "o", d, d), f"{why} W_O")
        elif isinstance(b, LocalRNN):
            d = b.ih.in_features
            rec.linear(b.ih, std_of(i, "rnn_ih", d, d), f"{why} LocalRNN W_ih")
            rec.normal(b.hh.weight, std_of(i, "rnn_hh", d, d), f"{why} LocalRNN W_hh")
            rec.linear(b.proj, std_of(i, "rnn_out", d, d), f"{why} LocalRNN W_out")
        else:
            assert isinstance(b, Mlp)
            d, h = b.fc1.in_features, b.fc1.out_features
            rec.linear(b.fc1, std_of(i, "fc1", d, h), f"{why} FFN W1")
            rec.linear(b.fc2, std_of(i, "fc2", h, d), f"{why} FFN W2")
    _walk(stack, [_norm(rec), _dyt(rec), _zero_rel_bias(rec)])


def _xavier(fan_in: int, fan_out: int, gain: float = 1.0) -> float:
    return gain * math.sqrt(2.0 / (fan_in + fan_out))


def _xavier_std(lin: nn.Module) -> float:
    """Xavier-normal std of a Linear or Conv weight (fans include the kernel size)."""
    w = lin.weight
    rf = w[0, 0].numel()
    return _xavier(w.shape[1] * rf, w.shape[0] * rf)


def _baseline_inputs_and_heads(rec: InitRecord, std_of: Callable[[nn.Module], float], why: str) -> list[tuple[type, Handler]]:
    """Embedding tables at 0.02, convs/linears at ``std_of`` (the Xavier and Megatron baselines)."""

    def tokens(m: TokenEmbedding) -> None:
        for t in (m.word, m.pos, m.segment):
            if isinstance(t, nn.Embedding):
                rec.normal(t.weight, _STD_002, f"{why} embedding")

    def vit(m: ViTEmbedding) -> None:
        rec.linear(m.patch_embed.proj, std_of(m.patch_embed.proj), f"{why} patch projection")
        if m.cls_token is not None:
            rec.normal(m.cls_token, _STD_002, f"{why} class token")
        rec.normal(m.pos_embed, _STD_002, f"{why} position table")

    def speech(m: SpeechEmbedding) -> None:
        rec.linear(m.subsample.conv1, std_of(m.subsample.conv1), f"{why} subsampler conv1")
        rec.linear(m.subsample.conv2, std_of(m.subsample.conv2), f"{why} subsampler conv2")

    def lm_head(m: LMHead) -> None:
        _walk_head_rest(rec, m, lambda lin: std_of(lin), why)

    return [
        (TokenEmbedding, tokens),
        (ViTEmbedding, vit),
        (SpeechEmbedding, speech),
        (LMHead, lm_head),
        _norm(rec),
        (nn.Linear, lambda m: rec.linear(m, std_of(m), f"{why} head")),
    ]


def _walk_head_rest(rec: InitRecord, m: LMHead, std_of: Callable[[nn.Linear], float], why: str) -> None:
    """An LM head: its own dense layers and norm; a tied output matrix belongs to the embedding."""
    if m.weight is not None:
        rec.normal(m.weight, std_of(m), f"{why} LM output matrix")
    rec.const(m.bias, 0.0, "LM output bias")
    for child in m.children():
        _walk(child, [_norm(rec), (nn.Linear, lambda lin: rec.linear(lin, std_of(lin), f"{why} LM head dense"))])


# ---------------------------------------------------------------------------------------------------------------
# The schemes.


def init_dslm(model: nn.Module, rec: InitRecord) -> None:
    """Kedia et al. 2024, Sec. 4: unit forward gain for every block after dropout, fixed lambda/beta.

    - W_Q, W_K: variance 1/d (unit logit variance at unit input variance).
    - W_V, W_O of sub-layer l: variance sqrt(g_l)/d each, g_l = (1-p)/A(r_l, L) from the correlation recursion
      (``dslm_attention_schedule``); the paper's large-L limit is A = r_l.
    - FFN W1, W2: ``dslm_ffn_var`` (ReLU closed form; GeLU solved from the GeLU moments).
    - Embedding tables: variance (1-p)/n_t each; ViT patch projection: fan_in sigma^2 E[pixel^2] = (1-p)/n_t with
      normalised pixels (E[pixel^2] ~ 1); speech subsampler: conv1 keeps unit variance (sigma^2 = 1/fan_in),
      conv2 after ReLU (second moment 1/2) gives (1-p)/n_t: sigma^2 = 2 (1-p) / (n_t fan_in).
    - Heads: std 1/sqrt(fan_in); LayerNorm gain 1, all biases 0.
    """
    cfg = model.cfg
    p = cfg.drop_rate
    out_corr: dict[int, float] = {}
    for plan, ctx in _contexts(model, out_corr):  # plan order: a memory stack comes before its reader
        std_of, out_corr[id(plan.stack)] = stack_stds("dslm", ctx, dslm_k=cfg.dslm_k, drop=p, attn_drop=cfg.attn_drop_rate)
        _init_stack(rec, plan.stack, std_of, "dslm")

    def tokens(m: TokenEmbedding) -> None:
        std = math.sqrt(dslm_embedding_var(m.num_tables, p))
        for t in (m.word, m.pos, m.segment):
            if isinstance(t, nn.Embedding):
                rec.normal(t.weight, std, "dslm embedding (1-p)/n_t")

    def vit(m: ViTEmbedding) -> None:
        var = dslm_embedding_var(m.num_tables, p)
        proj = m.patch_embed.proj
        rec.linear(proj, math.sqrt(var / proj.weight[0].numel()), "dslm patch projection")
        if m.cls_token is not None:
            rec.normal(m.cls_token, math.sqrt(var), "dslm class token")
        rec.normal(m.pos_embed, math.sqrt(var), "dslm position table")

    def speech(m: SpeechEmbedding) -> None:
        var = dslm_embedding_var(m.num_tables, p)
        c1, c2 = m.subsample.conv1, m.subsample.conv2
        rec.linear(c1, math.sqrt(1.0 / c1.weight[0].numel()), "dslm subsampler conv1")
        rec.linear(c2, math.sqrt(2.0 * var / c2.weight[0].numel()), "dslm subsampler conv2")

    def fan_in_std(lin: nn.Module) -> float:
        return 1.0 / math.sqrt(lin.weight[0].numel())

    _walk(
        model,
        [
            (Transformer, lambda m: None),  # done above, in plan order
            (TokenEmbedding, tokens),
            (ViTEmbedding, vit),
            (SpeechEmbedding, speech),
            (LMHead, lambda m: _walk_head_rest(rec, m, fan_in_std, "dslm")),
            _norm(rec),
            (nn.Linear, lambda m: rec.linear(m, fan_in_std(m), "dslm head 1/sqrt(fan_in)")),
        ],
    )


def _stack_handler(rec: InitRecord, model: nn.Module, scheme: str) -> tuple[type, Handler]:
    """Walk handler drawing each stack with the scheme's :func:`stack_stds` (schemes without a memory coupling;
    stacks are drawn where the walk meets them, so the draw order is the module order)."""
    cfg = model.cfg
    stds = {id(plan.stack): stack_stds(scheme, ctx, dslm_k=cfg.dslm_k, drop=cfg.drop_rate, attn_drop=cfg.attn_drop_rate)[0]
            for plan, ctx in _contexts(model)}
    return (Transformer, lambda s: _init_stack(rec, s, stds[id(s)], scheme))


def init_xavier(model: nn.Module, rec: InitRecord) -> None:
    """The authors' baseline: Xavier-normal for every projection (W_Q, W_K, W_V as separate d x d matrices),
    embedding tables N(0, 0.02^2), LayerNorm 1/0, biases 0, lambda = beta = 1."""
    _walk(model, [_stack_handler(rec, model, "xavier")] + _baseline_inputs_and_heads(rec, _xavier_std, "xavier"))


def init_deepnorm(model: nn.Module, rec: InitRecord) -> None:
    """DeepNet (Wang et al. 2022): Post-LN x <- LN(alpha x + F(x)); Xavier-normal everywhere, with W_V, W_O, FFN
    W1 and W2 scaled by the stack's beta (cross-attention's too). Embeddings and heads are not scaled."""
    _walk(model, [_stack_handler(rec, model, "deepnorm")] + _baseline_inputs_and_heads(rec, _xavier_std, "deepnorm"))


def init_megatron(model: nn.Module, rec: InitRecord) -> None:
    """Megatron-LM / GPT-2 scaled init: N(0, 0.02^2) everywhere, output projections (W_O, FFN W2) of a stack of n
    layers N(0, (0.02/sqrt(2n))^2); LayerNorm 1/0, biases 0."""
    _walk(model, [_stack_handler(rec, model, "megatron")] + _baseline_inputs_and_heads(rec, lambda lin: _STD_002, "megatron"))


def init_dslm_init_only(model: nn.Module, rec: InitRecord) -> None:
    """Ablation (issue 13): DSLM's weight draws (:func:`init_dslm`, the same per-layer stds, embedding variances and
    logit scale) without its residual scaling: lambda = beta = 1."""
    init_dslm(model, rec)


def init_dslm_scales_only(model: nn.Module, rec: InitRecord) -> None:
    """Ablation (issue 13): DSLM's residual scaling (lambda^2 = 1 - k/N, beta^2 = k/N) on the Xavier baseline's
    weight draws (:func:`init_xavier`)."""
    init_xavier(model, rec)


def init_skip(model: nn.Module, rec: InitRecord) -> None:
    """Touch no parameter (pretrained weights will overwrite them)."""


_SCHEME_FNS: dict[str, Callable[[nn.Module, InitRecord], None]] = {
    "dslm": init_dslm,
    "xavier": init_xavier,
    "deepnorm": init_deepnorm,
    "megatron": init_megatron,
    "dslm_init_only": init_dslm_init_only,
    "dslm_scales_only": init_dslm_scales_only,
    "skip": init_skip,
}


def init_model(model: nn.Module, scheme: str) -> dict[str, InitRule]:
    """Initialise ``model`` with ``scheme``; returns ``{tensor name: rule}`` (empty for 'skip').

    Works on the meta device too (draws are no-ops there), which is how the theory reads a scheme's standard
    deviations for a 1000-layer config without allocating it. Fused Q/K/V slices are named ``weight[q]`` etc.

    The model's config records the scheme (``cfg.init``) so that saving and rebuilding give the same scalars.
    """
    if scheme not in _SCHEME_FNS:
        raise ValueError(f"unknown init scheme {scheme!r}; expected one of {list(_SCHEME_FNS)}")
    arch_scheme = model.cfg.init if scheme == "skip" else scheme
    set_scales(model, arch_scheme)  # first: it validates (e.g. deepnorm needs Post-LN) before any draw
    rec = InitRecord(model)
    _SCHEME_FNS[scheme](model, rec)
    _reset_buffers(model)
    if scheme != "skip":
        rec.check_complete()
        if model.cfg.init != scheme:
            model.cfg = model.cfg.replace(init=scheme)
    return rec.rules
