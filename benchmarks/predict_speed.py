"""Speed of the theory's verdict on a config: ``dslm_zoo.diagnostics.predict(name, depth=N)``.

    python benchmarks/predict_speed.py [--depths 12 192 1000] [--models dslm_bert dslm_gpt] [--inits dslm xavier]

Prints a markdown table per (model, init, depth), best of ``--repeat`` runs (caches warm after the first):
``config path`` = ``predict(name, ...)`` as a user calls it (one block built on the meta device, the scheme's
depth-dependent constants from ``init.stack_scales`` / ``init.stack_stds``, the recursion); ``recursion`` = the
forward and backward recursion alone (``theory.signal.predict_specs``); ``full meta build`` = the old path, every
layer built on the meta device and initialised there (``predict(..., _fast=False)``), which gives identical rows.
``exact`` = the config path evaluating every block (``predict(..., exact=True)``), ``max dev`` = the largest
relative deviation of the stepped rows from it (variances, gradients, norms; correlations relative or 1e-3
absolute), ``blocks run`` = stepped sub-layers evaluated / sub-layers. The target for a 1000-layer config is 0.1 s.
"""
from __future__ import annotations

import argparse
import importlib
import time

P = importlib.import_module("dslm_zoo.diagnostics.predict")  # the module: the package re-exports the function by this name
S = importlib.import_module("dslm_zoo.theory.signal")


def _best(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _max_dev(a, b) -> float:
    import numpy as np

    dev = 0.0
    for col, floor in (("fwd_var", 0.0), ("grad_var", 0.0), ("wgrad_norm", 0.0), ("sum_var", 0.0), ("fwd_corr", 1e-3), ("grad_corr", 1e-3)):
        x, y = np.asarray(getattr(a, col), float), np.asarray(getattr(b, col), float)
        m = np.isfinite(x) & np.isfinite(y)
        d = np.abs(x[m] - y[m])
        dev = max(dev, float(np.max(np.where(d <= floor, 0.0, d / np.maximum(np.abs(y[m]), 1e-300)), initial=0.0)))
    return dev


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", type=int, nargs="+", default=[12, 192, 1000])
    ap.add_argument("--models", nargs="+", default=["dslm_bert", "dslm_gpt"], help="family prefixes (NAME_1000L exists)")
    ap.add_argument("--inits", nargs="+", default=["dslm", "xavier"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-full", action="store_true", help="skip the (slow) full meta-build path")
    args = ap.parse_args()
    print("| model | init | depth | config path (s) | recursion (s) | exact (s) | max dev | blocks run | full meta build (s) "
          "| final var | grad ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for fam in args.models:
        name = f"{fam}_1000L"
        for depth in args.depths:
            for init in args.inits:
                t_fast, pred = _best(lambda: P.predict(name, init=init, depth=depth), args.repeat)
                cls, cfg = P._resolve(name, depth=depth)
                stacks, embeds, _, _ = P._spec_stacks(cls, cfg, init, None, None, True, 1.0)
                for st, e in zip(stacks, embeds):  # as predict() sets them, default r_emb and embedding variance
                    st.v_in, st.r_in, st.p_emb = e.var / (1 - e.p), cfg.dslm_r_emb * (1 - e.p), e.p
                t_rec, _ = _best(lambda: S.predict_specs(stacks, 1.0, 0.0, True, 1, {}), args.repeat)
                run = [len(S._run_stack(st, None if st.memory is None else (1.0, 0.0, None))["recs"]) for st in stacks]
                t_exact, ex = _best(lambda: P.predict(name, init=init, depth=depth, exact=True), args.repeat)
                t_full = float("nan") if args.no_full else _best(lambda: P.predict(name, init=init, depth=depth, _fast=False), 1)[0]
                print(f"| {name} | {init} | {depth} | {t_fast:.3f} | {t_rec:.3f} | {t_exact:.3f} | {_max_dev(pred, ex):.2%} | "
                      f"{sum(run)}/{sum(len(st.subs) for st in stacks)} | {t_full:.3f} | {pred.fwd_var[-1]:.4g} | "
                      f"{pred.grad_ratio():.4g} |")


if __name__ == "__main__":
    main()
