"""Signal-propagation prediction of a model, a registered name or a config: the theory's front door.

:func:`predict` reads every sub-layer of a dslm_zoo model (or a timm ``VisionTransformer``) into the specs of
:mod:`dslm_zoo.theory.signal` (Kedia et al. 2024, arXiv:2403.09635, Sec. 3) and runs the recursion there:
real weights are read empirically (mean squares, fused Q/K/V by row slice), a model on the meta device, a name
or a config through the ``InitRule`` standard deviations its init scheme returns, so a 1000-layer prediction
allocates nothing. :func:`measure_embedding` / :func:`measure_r_emb` measure the embedding statistics the
recursion starts from on real batches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ..theory.signal import (
    SignalPrediction,
    StackSpec,
    SubSpec,
    check_predict_args,
    predict_specs,
    token_correlation,
)

__all__ = ["predict", "measure_embedding", "measure_r_emb", "token_correlation"]


def _ms_tensor(t: Any) -> float:
    return float(t.detach().float().pow(2).mean())


class _Reader:
    """Mean squares of parameters: from ``InitRule`` stds (meta models) or from the tensors themselves."""

    def __init__(self, model: Any, rules: dict[str, Any] | None):
        self.rules = rules
        self.names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)} if rules is not None else {}

    def __call__(self, param: Any, part: str = "", view: Any = None) -> float:
        if param is None:
            return 0.0
        if self.rules is not None:
            name = self.names[id(param)]
            rule = self.rules.get(f"{name}[{part}]" if part else name)
            if rule is None:
                raise KeyError(f"no init rule for {name}[{part}]" if part else f"no init rule for {name}")
            return rule.std**2 if rule.std is not None else float(rule.value) ** 2
        return _ms_tensor(param if view is None else view)


def _drop_p(m: Any) -> float:
    from torch import nn

    return float(m.p) if isinstance(m, nn.Dropout) else 0.0


def _ln_stats(norm: Any, ms: _Reader) -> tuple[float, float, float]:
    from torch import nn

    if isinstance(norm, nn.LayerNorm):
        g = ms(norm.weight) if norm.weight is not None else 1.0
        b = ms(norm.bias) if norm.bias is not None else 0.0
        return g, b, float(norm.eps)
    return 1.0, 0.0, 0.0


def _zoo_stacks(model: Any, ms: _Reader, seq_len: int | None, memory_len: int | None, train: bool) -> list[StackSpec]:
    from ..layers import Attention, CrossAttention, LocalRNN, Mlp

    plans = model.stack_plans()
    index = {id(p.stack): i for i, p in enumerate(plans)}
    memories = {id(p.memory) for p in plans if p.memory is not None}

    def length(stack: Any) -> int | None:  # seq_len is the loss stack's length, memory_len the memory's
        given = memory_len if id(stack) in memories else seq_len
        return given or stack.seq_len

    out = []
    for plan in plans:
        st = plan.stack
        subs = []
        per_block = len(st.blocks[0].residuals())
        for i, res in enumerate(st.residuals()):
            b = res.branch
            g, bb, eps = _ln_stats(res.norm, ms)
            g, bb = g * res.in_scale**2, bb * res.in_scale**2  # LayerNorm Scaling: the norm's output times in_scale
            common = dict(
                block=i // per_block, d=st.dim, norm_first=res.norm_first,
                lam2=res.lam**2, beta2=res.beta**2, p=_drop_p(res.drop) if train else 0.0, ln_g=g, ln_b=bb, eps=eps,
            )
            if isinstance(b, Attention):
                cross = isinstance(b, CrossAttention)
                q_owner = b.q.weight if cross else b.qkv.weight
                kv_owner = b.kv.weight if cross else b.qkv.weight
                L = (memory_len or st.memory_len) if cross else length(st)
                subs.append(SubSpec(
                    kind="cross_attn" if cross else "attn", **common,
                    sq2=ms(q_owner, "q", b.q_weight()), sk2=ms(kv_owner, "k", b.k_weight()),
                    sv2=ms(kv_owner, "v", b.v_weight()), so2=ms(b.proj.weight),
                    pa=float(b.attn_drop) if train else 0.0, causal=bool(b.causal) and not cross, L=L,
                    b_out=ms(b.proj.bias),
                ))
            elif isinstance(b, LocalRNN):
                subs.append(SubSpec(
                    kind="rnn", **common, s1=ms(b.ih.weight), shh2=ms(b.hh.weight), s2=ms(b.proj.weight),
                    window=b.window, b_out=ms(b.proj.bias),
                ))
            else:
                assert isinstance(b, Mlp), type(b)
                subs.append(SubSpec(
                    kind="ffn", **common, s1=ms(b.fc1.weight), s2=ms(b.fc2.weight), dff=b.fc1.out_features,
                    act=b.act_name, b_out=ms(b.fc2.bias),
                ))
        fg, fb, feps = _ln_stats(st.norm, ms)
        from torch import nn

        out.append(StackSpec(
            subs=subs, d=st.dim, norm_first=st.norm_first, final_g=fg, final_b=fb, final_eps=feps,
            final_identity=not isinstance(st.norm, nn.LayerNorm), seq_len=length(st),
            v_in=float("nan"), r_in=float("nan"),
            memory=None if plan.memory is None else index[id(plan.memory)], role=plan.role,
        ))
    return out


@dataclass
class _Emb:
    """An input embedding as the recursion sees it: mean output variance before dropout, dropout p, and for
    ViTs the prefix (class / register) tokens, whose variance differs from the patch tokens'."""

    module: Any
    var: float
    p: float
    n_prefix: int = 0
    v_prefix: float = 0.0
    n_tokens: int = 0

    def profile(self, mean_var: float) -> Any:
        """Per-position variances with mean ``mean_var`` (the prefix tokens keep their own), or a float."""
        if self.n_prefix == 0 or self.n_tokens <= self.n_prefix:
            return float(mean_var)
        import numpy as np

        rest = (mean_var * self.n_tokens - self.n_prefix * self.v_prefix) / (self.n_tokens - self.n_prefix)
        v = np.full(self.n_tokens, max(rest, 0.0))
        v[: self.n_prefix] = self.v_prefix
        return v


def _vit_emb(
    module: Any, patch: float, prefix: list[tuple[int, float]], pos: float, pos_on_prefix: bool, n_patch: int, p: float
) -> _Emb:
    n_pre = sum(n for n, _ in prefix)
    v_pre = (sum(n * v for n, v in prefix) / n_pre if n_pre else 0.0) + (pos if pos_on_prefix else 0.0)
    v_patch = patch + pos
    n = n_patch + n_pre
    return _Emb(module, (n_patch * v_patch + n_pre * v_pre) / n, p, n_pre, v_pre, n)


def _embedding_stats(model: Any, ms: _Reader, pixel_var: float) -> list[_Emb]:
    """Every input embedding of a dslm_zoo model, in module order."""
    from ..layers import SpeechEmbedding, TokenEmbedding, ViTEmbedding
    from ..layers.position import SinusoidalPosition

    found = []
    for m in model.modules():
        if isinstance(m, TokenEmbedding):
            v = ms(m.word.weight)
            if isinstance(m.pos, SinusoidalPosition):
                v += m.pos.variance
            elif m.pos is not None:
                v += ms(m.pos.weight)
            if m.segment is not None:
                v += ms(m.segment.weight)
            found.append(_Emb(m, v, _drop_p(m.drop)))
        elif isinstance(m, ViTEmbedding):
            w = m.patch_embed.proj.weight
            patch = w[0].numel() * ms(w) * pixel_var + ms(m.patch_embed.proj.bias)
            prefix = [(1, ms(m.cls_token))] if m.cls_token is not None else []
            found.append(_vit_emb(m, patch, prefix, ms(m.pos_embed), True, m.patch_embed.num_patches, _drop_p(m.drop)))
        elif isinstance(m, SpeechEmbedding):
            c1, c2 = m.subsample.conv1, m.subsample.conv2
            h = c1.weight[0].numel() * ms(c1.weight) * pixel_var
            v = c2.weight[0].numel() * ms(c2.weight) * h / 2.0 + m.pos.variance
            found.append(_Emb(m, v, _drop_p(m.drop)))
    return found


def _timm_vit_stack(model: Any, ms: _Reader, seq_len: int | None, train: bool, pixel_var: float) -> tuple[list[StackSpec], _Emb]:
    """A timm ``VisionTransformer`` as one Pre-LN stack (blocks of norm1/attn/ls1/norm2/mlp/ls2)."""
    from torch import nn

    blocks = list(model.blocks)
    subs = []
    d = model.embed_dim
    for bi, blk in enumerate(blocks):
        if not all(hasattr(blk, a) for a in ("norm1", "attn", "ls1", "norm2", "mlp", "ls2")):
            raise TypeError(f"unsupported timm block {type(blk).__name__}: expected timm's Pre-LN Block")
        at, mlp = blk.attn, blk.mlp
        if not hasattr(at, "qkv") or not isinstance(at.q_norm, nn.Identity) or getattr(at, "gate", None) is not None:
            raise TypeError("unsupported timm attention (needs a fused qkv, no qk-norm, no gate)")
        if not isinstance(getattr(mlp, "norm", nn.Identity()), nn.Identity):
            raise TypeError("unsupported timm Mlp with a hidden norm")
        act = mlp.act
        if isinstance(act, nn.GELU):
            if act.approximate != "none":
                raise TypeError("tanh-approximate GELU is not modelled; use the exact GELU")
            act_name = "gelu"
        elif isinstance(act, nn.ReLU):
            act_name = "relu"
        else:
            raise TypeError(f"unsupported activation {type(act).__name__} (GELU, ReLU)")
        a_dim = at.qkv.out_features // 3
        W = at.qkv.weight
        for key, ls, norm in (("attn", blk.ls1, blk.norm1), ("ffn", blk.ls2, blk.norm2)):
            beta2 = ms(ls.gamma) if hasattr(ls, "gamma") else 1.0
            g, bb, eps = _ln_stats(norm, ms)
            common = dict(block=bi, d=d, norm_first=True, lam2=1.0, beta2=beta2, ln_g=g, ln_b=bb, eps=eps)
            if key == "attn":
                subs.append(SubSpec(
                    kind="attn", **common, p=_drop_p(at.proj_drop) if train else 0.0,
                    sq2=ms(W, "", W[:a_dim]), sk2=ms(W, "", W[a_dim : 2 * a_dim]), sv2=ms(W, "", W[2 * a_dim :]),
                    so2=ms(at.proj.weight), pa=_drop_p(at.attn_drop) if train else 0.0, L=seq_len,
                    b_out=ms(at.proj.bias),
                ))
            else:
                subs.append(SubSpec(
                    kind="ffn", **common, p=_drop_p(mlp.drop2) if train else 0.0, s1=ms(mlp.fc1.weight),
                    s2=ms(mlp.fc2.weight), dff=mlp.fc1.out_features, act=act_name,
                    p1=_drop_p(mlp.drop1) if train else 0.0, b_out=ms(mlp.fc2.bias),
                ))
    fg, fb, feps = _ln_stats(model.norm, ms)
    stack = StackSpec(
        subs=subs, d=d, norm_first=True, final_g=fg, final_b=fb, final_eps=feps,
        final_identity=not isinstance(model.norm, nn.LayerNorm), seq_len=seq_len, v_in=float("nan"), r_in=float("nan"),
    )
    # embedding: patch projection of pixels of mean square pixel_var, class/register tokens, position table
    pe = model.patch_embed.proj
    patch = pe.weight[0].numel() * ms(pe.weight) * pixel_var + ms(pe.bias)
    pre = [(t.shape[1], ms(t)) for t in (getattr(model, "cls_token", None), getattr(model, "reg_token", None)) if t is not None]
    pos = getattr(model, "pos_embed", None)
    emb = _vit_emb(
        None, patch, pre, ms(pos) if pos is not None else 0.0, not getattr(model, "no_embed_class", False),
        model.patch_embed.num_patches, _drop_p(getattr(model, "pos_drop", None)),
    )
    return [stack], emb


# ---------------------------------------------------------------------------------------------------------------
# Public entry point.


def _model_class_for(cfg: Any) -> Any:
    from ..models._base import ZooModel

    todo, seen = [ZooModel], []
    while todo:
        c = todo.pop()
        todo.extend(c.__subclasses__())
        if getattr(c, "config_class", None) is type(cfg):
            seen.append(c)
    if not seen:
        raise TypeError(f"no dslm_zoo model family uses {type(cfg).__name__}")
    return seen[0]


def _is_timm_vit(model: Any) -> bool:
    try:
        from timm.models.vision_transformer import VisionTransformer as TimmViT
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, TimmViT)


def predict(
    model_or_cfg: Any,
    seq_len: int | None = None,
    *,
    init: str | None = None,
    r_emb: float | Sequence[float] | None = None,
    emb_var: float | Sequence[float] | None = None,
    grad_corr: float = 0.0,
    grad_var: float = 1.0,
    batch_size: int = 1,
    train: bool = True,
    qk_path: bool = True,
    memory_len: int | None = None,
    pixel_var: float = 1.0,
    exact: bool = False,
    _rules: dict[str, Any] | None = None,
    _fast: bool = True,
    **model_kwargs: Any,
) -> SignalPrediction:
    """Predict per-sub-layer signal statistics of a model at its current weights.

    Args:
        model_or_cfg: a dslm_zoo model (any family; real weights are read empirically, a meta-device model
            through its init scheme's rules), a registered model name or a family config (built on the meta
            device and initialised there with ``init``, default ``cfg.init``; ``model_kwargs`` override config
            fields, e.g. ``depth=1000, norm_first=False``), or a timm ``VisionTransformer``.
        seq_len: tokens per sequence of the stack the loss sits on (the decoder of an encoder-decoder; default:
            the length the stack was built for; timm: its token count).
        memory_len: tokens of a memory stack (the encoder of an encoder-decoder): its self-attention length and
            what cross-attention reads (default: the length it was built for).
        init: init scheme for names, configs and meta models.
        r_emb: token correlation of the embedding output before dropout (default ``cfg.dslm_r_emb``; timm 0.2);
            one value for every stack or one per stack. Measure it with :func:`measure_r_emb`.
        emb_var: variance of the embedding output before dropout (default: from the embedding weights, with
            pixel / filterbank inputs of mean square ``pixel_var``).
        grad_corr, grad_var: token correlation and variance of the gradient G at the output (loss = sum(out G)).
        batch_size: sequences per batch (only scales the weight-gradient norms).
        train: dropout active (the authors' protocol: a training-mode forward and backward at lr 0).
        qk_path: include the (derived) attention gradient through Q, K and the softmax; False is the paper's
            value-path-only formula.
        pixel_var: mean square of the pixels / filterbank features entering a patch or conv embedding.
        exact: run every block. By default a run of at least 64 blocks of the same structure is stepped over where
            each block changes the signal by little (``dslm_zoo.theory.signal.STEP_TOL``: within 1% of the
            block-by-block rows on the zoo's 1000-layer configs, several times faster; tests/test_predict.py).
    """
    from torch import nn

    check_predict_args(seq_len=seq_len, memory_len=memory_len, r_emb=r_emb, emb_var=emb_var, grad_corr=grad_corr,
                        grad_var=grad_var, batch_size=batch_size, pixel_var=pixel_var)
    rules = None
    model = model_or_cfg
    fast = None
    if isinstance(model_or_cfg, str) or not isinstance(model_or_cfg, nn.Module):
        if _fast:
            cls, cfg = _resolve(model_or_cfg, **model_kwargs)
            fast = _spec_stacks(cls, cfg, init or cfg.init, seq_len, memory_len, train, pixel_var)
        else:
            model = _build_meta(model_or_cfg, **model_kwargs)
    elif model_kwargs:
        raise TypeError(f"config overrides {sorted(model_kwargs)} need a model name or config, not a built model")
    cfg_seen = fast[2] if fast is not None else getattr(model, "cfg", None)
    if getattr(cfg_seen, "pos_embed", None) in ("alibi", "relative"):
        import warnings

        warnings.warn(f"pos_embed={cfg_seen.pos_embed!r}: the theory does not model position biases on the attention "
                      "logits; the prediction is that of the same model without them", stacklevel=2)
    if getattr(cfg_seen, "norm", "layernorm") != "layernorm" or getattr(cfg_seen, "peri_norm", False):
        raise ValueError(f"the signal theory models LayerNorm stacks (Pre-/Post-LN, with or without ln_scaling); "
                         f"norm={cfg_seen.norm!r}, peri_norm={cfg_seen.peri_norm} are not modelled")
    if fast is not None:
        stacks, embeds, cfg, cls = fast
        r_default = [float(cfg.dslm_r_emb)] * len(stacks)
        name, scheme = cls.__name__, init or cfg.init
    elif _is_timm_vit(model):
        is_meta = next(model.parameters()).device.type == "meta"
        if is_meta:
            raise ValueError("a timm model on the meta device has no weights to read")
        ms = _Reader(model, None)
        L = seq_len or (model.patch_embed.num_patches + model.num_prefix_tokens)
        stacks, emb = _timm_vit_stack(model, ms, L, train, pixel_var)
        embeds = [emb]
        r_default = [0.2]
        name = type(model).__name__
        scheme = "timm"
    else:
        if not hasattr(model, "stack_plans"):
            raise TypeError(f"{type(model).__name__} is neither a dslm_zoo model nor a timm VisionTransformer")
        is_meta = next(model.parameters()).device.type == "meta"
        if is_meta and _rules is not None:  # benchmarks: rules computed (and timed) separately
            rules = _rules
        elif is_meta:
            from ..init import init_model

            with _SkipMetaDraws():
                rules = init_model(model, init or model.cfg.init)
        elif init is not None:
            raise ValueError("init= applies to names, configs and meta models; initialise a real model yourself")
        ms = _Reader(model, rules)
        stacks = _zoo_stacks(model, ms, seq_len, memory_len, train)
        embeds = _match_embeddings(model, stacks, _embedding_stats(model, ms, pixel_var))
        r_default = [float(getattr(model.cfg, "dslm_r_emb", 0.2))] * len(stacks)
        name = type(model).__name__
        scheme = model.cfg.init if rules is None else (init or model.cfg.init)
    n = len(stacks)
    r_list = _per_stack(r_emb, n, r_default)
    v_list = _per_stack(emb_var, n, [e.var for e in embeds])
    for st, r0, v0, e in zip(stacks, r_list, v_list, embeds):
        pe = e.p if train else 0.0
        prof = e.profile(v0) if st.seq_len == e.n_tokens else float(v0)
        st.v_in = prof / (1.0 - pe)
        st.r_in = r0 * (1.0 - pe)
        st.p_emb = pe
    meta = dict(
        model=name, init=scheme, seq_len=stacks[-1].seq_len, batch_size=batch_size, train=train, qk_path=qk_path,
        norm_first=stacks[-1].norm_first, dim=stacks[-1].d, depth=sum(len({s.block for s in st.subs}) for st in stacks),
        r_emb=r_list, emb_var=v_list, grad_corr=grad_corr, label=f"{name} {scheme} {'Pre' if stacks[-1].norm_first else 'Post'}-LN",
    )
    return predict_specs(stacks, grad_var, grad_corr, qk_path, batch_size, meta, step=not exact)



def _per_stack(value: Any, n: int, default: list[float]) -> list[float]:
    if value is None:
        return [float(x) for x in default]
    if isinstance(value, (int, float)):
        return [float(value)] * n
    vals = [float(x) for x in value]
    if len(vals) != n:
        raise ValueError(f"expected {n} values (one per stack), got {len(vals)}")
    return vals


def _match_embeddings(model: Any, stacks: list[StackSpec], found: list[_Emb]) -> list[_Emb]:
    """Pair input embeddings with stacks: decoders take token tables, encoders the other inputs first."""
    from ..layers import TokenEmbedding

    if len(found) == len(stacks) == 1:
        return found
    left = list(found)
    out = []
    for st in stacks:
        want_tokens = st.role == "decoder"
        pick = next((e for e in left if isinstance(e.module, TokenEmbedding) == want_tokens), None)
        if pick is None and left:
            pick = left[0]
        if pick is None:
            out.append(_Emb(None, 1.0, 0.0))
        else:
            left.remove(pick)
            out.append(pick)
    return out


def _resolve(name_or_cfg: Any, **overrides: Any) -> tuple[type, Any]:
    """(model class, config) of a registered name or a family config, plus overrides; nothing is built."""
    if isinstance(name_or_cfg, str):
        from .._builder import resolve_config

        return tuple(resolve_config(name_or_cfg, device="meta", **overrides))  # type: ignore[return-value]
    from .._config import ConfigBase

    if not isinstance(name_or_cfg, ConfigBase):
        raise TypeError(f"expected a model, a model name or a config, got {type(name_or_cfg).__name__}")
    cfg = name_or_cfg.replace(**overrides) if overrides else name_or_cfg
    return _model_class_for(cfg), cfg


def _spec_stacks(cls: type, cfg: Any, scheme: str, seq_len: int | None, memory_len: int | None, train: bool,
                 pixel_var: float) -> tuple[list[StackSpec], list[_Emb], Any, type]:
    """The specs of a config's stacks without building them: one block per stack is built on the meta device
    and read (norms, dropouts, lengths, widths, embeddings: nothing there depends on depth), its sub-layers are
    repeated to the config's depth, and the scheme's depth-dependent constants (lambda, beta, the projection
    stds) come from :func:`dslm_zoo.init.stack_scales` / :func:`dslm_zoo.init.stack_stds`, the functions the
    module walk of ``init_model`` draws with. Milliseconds where building 1000 layers takes seconds."""
    import dataclasses

    from ..init import StackContext, init_model, stack_scales, stack_stds, stack_sublayer_specs

    fields = cls.stack_depth_fields
    depths = [getattr(cfg, f) for f in fields]
    probe = cls(cfg.replace(**{f: 1 for f in fields}), device="meta")
    with _SkipMetaDraws():
        rules = init_model(probe, scheme)
    ms = _Reader(probe, rules)
    block_stacks = _zoo_stacks(probe, ms, seq_len, memory_len, train)
    embeds = _match_embeddings(probe, block_stacks, _embedding_stats(probe, ms, pixel_var))
    plans = probe.stack_plans()
    n_enc = sum(D for D, plan in zip(depths, plans) if plan.role == "encoder")
    n_dec = sum(D for D, plan in zip(depths, plans) if plan.role == "decoder")
    out_corr: dict[int, float] = {}
    stacks = []
    for k, (plan, D, blk) in enumerate(zip(plans, depths, block_stacks)):
        mem = None if plan.memory is None else out_corr[id(plan.memory)]
        specs = tuple(stack_sublayer_specs(plan.stack, mem)) * D
        ctx = StackContext(specs, D, plan.role, plan.stack.norm_first, plan.r_in, n_enc, n_dec)
        lam, beta = stack_scales(scheme, ctx, cfg.dslm_k)
        std_of, out_corr[id(plan.stack)] = stack_stds(scheme, ctx, dslm_k=cfg.dslm_k, drop=cfg.drop_rate,
                                                      attn_drop=cfg.attn_drop_rate)
        per_block = len(blk.subs)
        subs = []
        for i in range(D * per_block):
            s = blk.subs[i % per_block]
            d = s.d
            upd: dict[str, Any] = dict(block=i // per_block, lam2=lam * lam, beta2=beta * beta)
            if cfg.ln_scaling:  # layer l's norm outputs times 1/sqrt(l), as Transformer builds it (the probe has l = 1)
                sc2 = ((i // per_block + 1) ** -0.5) ** 2
                upd.update(ln_g=s.ln_g * sc2, ln_b=s.ln_b * sc2)
            if s.kind == "ffn":
                upd.update(s1=std_of(i, "fc1", d, s.dff) ** 2, s2=std_of(i, "fc2", s.dff, d) ** 2)
            elif s.kind == "rnn":
                upd.update(s1=std_of(i, "rnn_ih", d, d) ** 2, shh2=std_of(i, "rnn_hh", d, d) ** 2,
                           s2=std_of(i, "rnn_out", d, d) ** 2)
            else:
                upd.update(sq2=std_of(i, "q", d, d) ** 2, sk2=std_of(i, "k", d, d) ** 2, sv2=std_of(i, "v", d, d) ** 2,
                           so2=std_of(i, "o", d, d) ** 2)
            subs.append(s.evolve(**upd))
        stacks.append(dataclasses.replace(blk, subs=subs))
    return stacks, embeds, cfg, cls


def _skip_meta_draws_mode() -> Any:
    import torch
    from torch.overrides import TorchFunctionMode

    inplace = {torch.Tensor.normal_, torch.Tensor.fill_, torch.Tensor.zero_, torch.Tensor.copy_, torch.Tensor.uniform_}

    class SkipMetaDraws(TorchFunctionMode):
        """In-place draws on meta tensors are no-ops anyway; skipping them avoids torch's slow Python
        decomposition (about 1 ms per tensor, 6 s for a 1000-layer model)."""

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in inplace and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
                return args[0]
            return func(*args, **(kwargs or {}))

    return SkipMetaDraws


def _SkipMetaDraws() -> Any:  # noqa: N802 (a context manager factory)
    return _skip_meta_draws_mode()()


def _build_meta(name_or_cfg: Any, **overrides: Any) -> Any:
    """A model on the meta device from a registered name or a family config (plus config overrides)."""
    if isinstance(name_or_cfg, str):
        from .._builder import create_model

        return create_model(name_or_cfg, device="meta", **overrides)
    from .._config import ConfigBase

    if not isinstance(name_or_cfg, ConfigBase):
        raise TypeError(f"expected a model, a model name or a config, got {type(name_or_cfg).__name__}")
    cfg = name_or_cfg.replace(**overrides) if overrides else name_or_cfg
    return _model_class_for(cfg)(cfg, device="meta")




def _stack_inputs(model: Any) -> list[Any]:
    """Modules whose forward input is each stack's residual-stream input (first residual / first block)."""
    if _is_timm_vit(model):
        return [model.blocks[0]]
    return [plan.stack.residuals()[0] for plan in model.stack_plans()]


def _call(model: Any, batch: Any) -> Any:
    """The output of a model's last stack: ``forward_hidden`` (encoder-decoders) or ``forward_features``."""
    fwd = getattr(model, "forward_hidden", None) or getattr(model, "forward_features", None) or model
    if isinstance(batch, dict):
        return fwd(**batch)
    if isinstance(batch, (tuple, list)):
        return fwd(*batch)
    return fwd(batch)


class _Captured(Exception):
    """Raised by a hook once every stack input is captured: the rest of the forward pass is not needed."""


def measure_embedding(model: Any, batch: Any, train: bool = False) -> list[tuple[float, float]]:
    """(variance, token correlation) of every stack's input on a real batch; dropout off unless ``train``.

    The forward pass stops as soon as the last stack input has been seen."""
    import torch

    got: dict[int, tuple[float, float]] = {}
    mods = _stack_inputs(model)
    hooks = []
    for k, m in enumerate(mods):
        def pre(mod: Any, args: tuple, k: int = k) -> None:
            if k not in got:
                x = args[0]
                got[k] = (float(x.detach().float().var()), token_correlation(x))
            if len(got) == len(mods):
                raise _Captured

        hooks.append(m.register_forward_pre_hook(pre))
    was = model.training
    model.train(train)
    try:
        with torch.no_grad():
            _call(model, batch)
    except _Captured:
        pass
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    missing = [k for k in range(len(mods)) if k not in got]
    if missing:
        raise RuntimeError(f"the forward pass did not reach stack(s) {missing}")
    return [got[k] for k in range(len(mods))]


def measure_r_emb(model: Any, batch: Any) -> float:
    """Token correlation of the embedding output on real inputs, before dropout: the recipe's r_emb.

    For a model with several stacks the first stack's (the encoder's) is returned; use
    :func:`measure_embedding` for all of them.
    """
    return measure_embedding(model, batch, train=False)[0][1]
