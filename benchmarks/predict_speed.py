"""Speed of ``dslm_zoo.theory.predict`` from a config: build on the meta device, read the init scheme's rules,
run the recursion.

    python benchmarks/predict_speed.py [--depths 12 192 1000] [--models dslm_bert dslm_gpt] [--inits dslm xavier]

Prints a markdown table per (model, init, depth): ``build`` = ``create_model(..., device='meta')``;
``init rules`` = ``init_model`` on meta (draws skipped; DSLM's own schedule included); ``predict`` = reading
the per-sub-layer constants plus the forward and backward recursion; ``total`` = what ``predict(name, ...)``
costs after the build. Best of ``--repeat`` runs (caches warm after the first).
"""
from __future__ import annotations

import argparse
import importlib
import time

import dslm_zoo
from dslm_zoo.init import init_model
P = importlib.import_module("dslm_zoo.theory.predict")  # the module: the package re-exports the function by this name


def _best(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", type=int, nargs="+", default=[12, 192, 1000])
    ap.add_argument("--models", nargs="+", default=["dslm_bert", "dslm_gpt"], help="family prefixes")
    ap.add_argument("--inits", nargs="+", default=["dslm", "xavier"])
    ap.add_argument("--seq-len", type=int, default=None, help="default: the model's context length")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print("| model | init | depth | d | seq | build on meta (s) | init rules (s) | predict (s) | total after build (s) | final var | grad ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for fam in args.models:
        for depth in args.depths:
            name = f"{fam}_1000L" if depth > 192 else f"{fam}_12L"
            for init in args.inits:
                t_build, model = _best(lambda: dslm_zoo.create_model(name, device="meta", depth=depth), 1)
                seq = args.seq_len or model.encoder.seq_len

                def rules():
                    with P._SkipMetaDraws():
                        return init_model(model, init)

                t_rules, r = _best(rules, args.repeat)
                def core():
                    return P.predict(model, seq, init=init, _rules=r)

                t_core, _ = _best(core, args.repeat)
                t_total, pred = _best(lambda: P.predict(model, seq, init=init), args.repeat)
                print(
                    f"| {name} | {init} | {depth} | {model.encoder.dim} | {seq} | {t_build:.3f} | {t_rules:.3f} | "
                    f"{t_core:.3f} | {t_total:.3f} | {pred.fwd_var[-1]:.4g} | {pred.grad_ratio():.4g} |"
                )


if __name__ == "__main__":
    main()
