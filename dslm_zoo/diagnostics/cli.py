"""``dslm-zoo signal``: predicted vs measured signal propagation per layer, and the authors' figure.

    dslm-zoo signal dslm_bert_96L_64D --init xavier --seeds 2 --out runs/signal

prints a compact per-layer table (theory vs measurement: forward variance, token correlation, gradient variance,
output-projection weight-gradient norm) for the requested init and LayerNorm placement, then writes
``signal_<name>.png``: forward variance and per-layer gradient norm against depth, Xavier vs DSLM, Pre-LN and
Post-LN (theory as lines, measurements as markers), as in Kedia et al. 2024's whole-model figure; plus the
prediction and measurement as JSON and CSV. ``timm:<name>`` measures a timm VisionTransformer as built by
``timm.create_model(name, pretrained=False, ...)`` (no download).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

__all__ = ["add_signal_parser", "cmd_signal", "make_batch", "run_signal"]

_INITS = ("dslm", "xavier", "deepnorm", "megatron", "dslm_init_only", "dslm_scales_only")


def add_signal_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "signal",
        help="per-layer signal propagation: theory vs measurement, and the Xavier-vs-DSLM figure",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("name", help="a registered model name, local-dir:/path or hf-hub:org/name (their config; fresh "
                                "weights), or timm:<vit name> for a timm VisionTransformer")
    p.add_argument("--init", default="dslm", choices=_INITS, help="init scheme of the table (default dslm)")
    from .._argtypes import positive_int

    p.add_argument("--depth", type=positive_int, default=None, help="override the number of layers")
    p.add_argument("--embed-dim", type=positive_int, default=None, help="override the width (keeps runs fast on CPU)")
    p.add_argument("--num-heads", type=positive_int, default=None, help="override the number of heads")
    p.add_argument("--post-ln", action="store_true", help="Post-LN instead of Pre-LN for the table")
    p.add_argument("--seq-len", type=positive_int, default=64, help="tokens per sequence for text models (default 64)")
    p.add_argument("--batch", type=positive_int, default=4, help="sequences / images per batch (default 4)")
    p.add_argument("--seeds", type=positive_int, default=8, help="fresh initialisations averaged (default 8)")
    p.add_argument("--every", type=int, default=0, help="print every k-th sub-layer (default: about 24 rows)")
    p.add_argument("--out", default="signal_out", help="output directory (default ./signal_out)")
    p.add_argument("--no-figure", action="store_true", help="skip the 2x2 Xavier/DSLM x Pre/Post-LN figure")
    p.set_defaults(fn=cmd_signal)


# ---------------------------------------------------------------------------------------------------------------


def make_batch(model: Any, batch: int, seq_len: int, seed: int = 0) -> Any:
    """A synthetic batch for ``model``: Zipf-distributed token ids (p_v ~ 1/(v + 10), like word frequencies) for
    text models, N(0, 1) images (normalised pixels) for ViTs."""
    import torch

    g = torch.Generator().manual_seed(seed)
    cfg = getattr(model, "cfg", None)
    if cfg is not None and hasattr(cfg, "vocab_size") and hasattr(cfg, "max_seq_len"):
        L = min(seq_len, cfg.max_seq_len)
        w = 1.0 / (torch.arange(cfg.vocab_size, dtype=torch.float64) + 10.0)
        return torch.multinomial(w, batch * L, replacement=True, generator=g).view(batch, L)
    if cfg is not None and hasattr(cfg, "img_size"):
        return torch.randn(batch, cfg.in_chans, cfg.img_size, cfg.img_size, generator=g)
    pe = getattr(model, "patch_embed", None)  # timm ViT
    if pe is not None:
        size = pe.img_size if isinstance(pe.img_size, tuple) else (pe.img_size, pe.img_size)
        return torch.randn(batch, pe.proj.in_channels, *size, generator=g)
    raise ValueError(f"no synthetic batch for {type(model).__name__}; use dslm_zoo.diagnostics.measure with real data")


def _build(name: str, init: str | None, norm_first: bool | None, args: argparse.Namespace, seed: int) -> Any:
    import torch

    torch.manual_seed(seed)
    over: dict[str, Any] = {}
    if args.depth is not None:
        over["depth"] = args.depth
    if args.embed_dim is not None:
        over["embed_dim"] = args.embed_dim
    if args.num_heads is not None:
        over["num_heads"] = args.num_heads
    if name.startswith("timm:"):
        import timm

        return timm.create_model(name[5:], pretrained=False, **over)
    from .. import create_model

    from .._builder import SOURCE_PREFIXES

    if norm_first is not None:
        over["norm_first"] = norm_first
    if name.startswith(SOURCE_PREFIXES):  # the saved config, freshly initialised: signal propagation at init
        over["pretrained"] = False
    return create_model(name, init=init, **over)


def _stem(name: str) -> str:
    """A file-name-safe label: the directory's name for local-dir:, org_name for hf-hub: and timm:."""
    if name.startswith("local-dir:"):
        name = os.path.basename(os.path.normpath(name[len("local-dir:"):])) or "local"
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def run_signal(name: str, init: str | None, norm_first: bool | None, args: argparse.Namespace):
    """(mean prediction, mean measurement) over ``args.seeds`` fresh models on one synthetic batch."""
    from .compare import predict_vs_measure

    first = _build(name, init, norm_first, args, seed=0)
    batch = make_batch(first, args.batch, args.seq_len)
    seq_len = _tokens(first, batch)
    del first
    p, m, _ = predict_vs_measure(lambda s: _build(name, init, norm_first, args, seed=s), batch, args.seeds, seq_len=seq_len)
    label = f"{name} {init or ''} {'Pre' if p.meta.get('norm_first', True) else 'Post'}-LN"
    p.meta["label"] = m.meta["label"] = label
    return p, m


def _tokens(model: Any, batch: Any) -> int:
    if hasattr(model, "patch_embed"):  # timm ViT
        return model.patch_embed.num_patches + model.num_prefix_tokens
    emb = getattr(model, "embed", None)
    if emb is not None and hasattr(emb, "num_tokens"):
        return emb.num_tokens
    return int(batch.shape[1])


def cmd_signal(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    created = not os.path.isdir(args.out)
    try:
        return _signal(args)
    except BaseException:
        if created and os.path.isdir(args.out) and not os.listdir(args.out):
            os.rmdir(args.out)  # nothing is left behind by a failed run
        raise


def _signal(args: argparse.Namespace) -> int:
    from .compare import compare
    from .plot import plot_signal_figure

    _build(args.name, None if args.name.startswith("timm:") else args.init, None, args, seed=0)  # a bad name fails now
    is_timm = args.name.startswith("timm:")
    norm_first = None if is_timm else not args.post_ln
    init = None if is_timm else args.init
    if init == "deepnorm" and norm_first:
        print("note: deepnorm is a Post-LN scheme; using --post-ln", file=sys.stderr)
        norm_first = False
    t0 = time.time()
    pred, meas = run_signal(args.name, init, norm_first, args)
    cmp = compare(pred, meas)
    n_sub = len(pred.sublayer_rows())
    every = args.every or max(1, round(n_sub / 24))
    print(f"{pred.meta['label']}: depth {pred.meta['depth']}, d {pred.meta['dim']}, {args.seeds} seed(s), "
          f"batch {args.batch} x {pred.meta['seq_len']} tokens, r_emb {pred.meta['r_emb'][0]:.4f}"
          f"  ({time.time() - t0:.1f}s)")
    print(cmp.table(every=every))
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"signal_{_stem(args.name)}_{init or 'timm'}_{'pre' if norm_first in (None, True) else 'post'}")
    pred.to_json(stem + "_pred.json")
    meas.to_json(stem + "_meas.json")
    pred.to_csv(stem + "_pred.csv")
    meas.to_csv(stem + "_meas.csv")
    print(f"wrote {stem}_{{pred,meas}}.{{json,csv}}")
    if args.no_figure:
        return 0
    path = os.path.join(args.out, f"signal_{_stem(args.name)}.png")
    if is_timm:
        fig_results = {("timm", True): (pred, meas)}
    else:
        fig_results = {(init, norm_first): (pred, meas)}
        for sc in ("xavier", "dslm"):
            for nf in (True, False):
                if (sc, nf) not in fig_results:
                    fig_results[(sc, nf)] = run_signal(args.name, sc, nf, args)
        for (sc, nf), (p, m) in sorted(fig_results.items()):
            s = compare(p, m).summary
            print(f"  figure {sc:>8} {'Pre' if nf else 'Post'}-LN: forward-variance error max {100 * s['fwd_var_max_err']:.1f}%"
                  f", grad ratio pred/meas {s['grad_ratio_rel']:.3f}")
    d = pred.meta["dim"]
    title = f"{args.name}: {pred.meta['depth']} layers, d = {d}, batch {args.batch} x {pred.meta['seq_len']}, " \
            f"{args.seeds} seed(s); lines theory, markers measured"
    plot_signal_figure(fig_results, path, title=title)
    print(f"wrote {path}  ({time.time() - t0:.1f}s)")
    return 0
