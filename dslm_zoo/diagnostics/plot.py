"""The authors' whole-model figure (Kedia et al. 2024): forward variance and per-layer gradient norm against
depth, Xavier vs DSLM, Pre-LN and Post-LN; theory as lines, measurements as markers."""
from __future__ import annotations

import math
import os
from typing import Mapping

from ..theory.signal import SignalTable

__all__ = ["per_layer", "plot_signal_figure"]

_COLORS = {"xavier": "tab:red", "dslm": "tab:blue", "deepnorm": "tab:green", "megatron": "tab:purple", "timm": "tab:orange"}
_MARKERS = {"xavier": "o", "dslm": "s", "deepnorm": "^", "megatron": "v", "timm": "D"}


def per_layer(t: SignalTable, stack: int | None = None) -> tuple[list[int], list[float], list[float]]:
    """(layer numbers 1..n, residual-stream variance after each layer, per-layer gradient norm) of one stack.

    The per-layer gradient norm is sqrt(|dW_O|^2 + |dW_2|^2) over the layer's sub-layers (the authors plot the
    gradient norm of each layer's weights; the output projections are the ones the theory predicts)."""
    s = t.stack[-1] if stack is None else stack
    blocks: dict[int, list[int]] = {}
    for i in t.sublayer_rows(s):
        blocks.setdefault(t.block[i], []).append(i)
    layers, var, gn = [], [], []
    for b in sorted(blocks):
        rows = blocks[b]
        layers.append(b + 1)
        var.append(t.fwd_var[rows[-1]])
        sq = [t.wgrad_norm[i] ** 2 for i in rows if math.isfinite(t.wgrad_norm[i])]
        gn.append(math.sqrt(sum(sq)) if sq else float("nan"))
    return layers, var, gn


def _thin(n: int, k: int = 40) -> int:
    return max(1, n // k)


def plot_signal_figure(
    results: Mapping[tuple[str, bool], tuple[SignalTable | None, SignalTable | None]],
    path: str | os.PathLike,
    title: str | None = None,
) -> str:
    """Write a 2 x 2 PNG: columns Pre-LN / Post-LN, rows forward variance / per-layer gradient norm.

    ``results[(init, norm_first)] = (prediction, measurement)``; either may be None.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex="col")
    for col, norm_first in enumerate((True, False)):
        ax_v, ax_g = axes[0][col], axes[1][col]
        for (init, nf), (pred, meas) in sorted(results.items()):
            if nf != norm_first:
                continue
            color = _COLORS.get(init, None)
            label = init if init != "dslm" else "DSLM"
            label = label.capitalize() if init == "xavier" else label
            if pred is not None:
                x, v, g = per_layer(pred)
                ax_v.plot(x, v, "-", color=color, lw=1.8, label=f"{label} (theory)")
                ax_g.plot(x, g, "-", color=color, lw=1.8, label=f"{label} (theory)")
            if meas is not None:
                x, v, g = per_layer(meas)
                k = _thin(len(x))
                mk = _MARKERS.get(init, "o")
                ax_v.plot(x[::k], v[::k], mk, color=color, ms=4.5, mfc="none", label=f"{label} (measured)")
                ax_g.plot(x[::k], g[::k], mk, color=color, ms=4.5, mfc="none", label=f"{label} (measured)")
        name = "Pre-LN" if norm_first else "Post-LN"
        ax_v.set_title(f"{name}: forward variance after each layer")
        ax_g.set_title(f"{name}: per-layer weight-gradient norm")
        ax_g.set_xlabel("layer")
        ax_v.set_ylabel("Var(hidden state)")
        ax_g.set_ylabel("|dW_O|, |dW_2| (Frobenius, combined)")
        for ax in (ax_v, ax_g):
            ys = [y for line in ax.get_lines() for y in line.get_ydata() if math.isfinite(y) and y > 0]
            if ys and max(ys) / min(ys) > 30:
                ax.set_yscale("log")
            elif ys and max(ys) / min(ys) < 1.2:  # flat (Post-LN variance is 1): no 1e-5 offset axis
                ax.set_ylim(0.0, 1.5 * max(ys))
                ax.ticklabel_format(axis="y", style="plain", useOffset=False)
            ax.grid(alpha=0.3, which="both")
            if ax.get_lines():
                ax.legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
