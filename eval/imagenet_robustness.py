"""ImageNet robustness scoring: CE and mCE normalised by AlexNet's published ImageNet-C errors, relative mCE.

    python eval/imagenet_robustness.py mce ERRORS.json [--clean-error E]
    python eval/imagenet_robustness.py compare RESULTS.json [RESULTS.json ...] [--plot PNG]

ERRORS.json maps each corruption to the top-1 errors (fractions) of severities 1..5; the 15 benchmark corruptions
are required, the 4 held-out ones are reported without normalisation. Prints JSON with per-corruption ``CE``
(percent), ``mCE``, the unnormalised mean error and, with ``--clean-error``, ``relative_mCE`` (percent). The
library behind it is ``dslm_zoo.evals.robustness`` (AlexNet's errors, with their source, in its data/).

``compare`` sets the ``robustness.json`` files of ``dslm-zoo eval robustness`` side by side: a Markdown table
(clean error, mean corruption error, mCE against each one's ``--baseline``) and, with ``--plot``, a PNG.
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    from dslm_zoo.evals.robustness import mce

    p = argparse.ArgumentParser(prog="eval/imagenet_robustness.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("mce", help="CE / mCE / relative mCE of existing per-corruption errors")
    m.add_argument("errors", help="JSON: {corruption: [error at severity 1, ..., 5]} (fractions)")
    m.add_argument("--clean-error", type=float, help="the model's clean top-1 error (fraction): adds relative mCE")
    c = sub.add_parser("compare", help="a Markdown table (and plot) of several robustness.json results")
    c.add_argument("results", nargs="+", help="robustness.json files of `dslm-zoo eval robustness`")
    c.add_argument("--plot", help="write the comparison plot here (PNG)")
    args = p.parse_args(argv)
    if args.command == "compare":
        return _compare(args.results, args.plot)
    try:
        with open(args.errors, encoding="utf-8") as f:
            errors = json.load(f)
        if not isinstance(errors, dict):
            raise ValueError(f"expected a JSON object {{corruption: [5 errors]}}, got {type(errors).__name__}")
        out = mce(errors, clean_error=args.clean_error)
    except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        print(f"eval/imagenet_robustness.py: error: {args.errors}: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


def _compare(paths: list[str], plot: str | None) -> int:
    from dslm_zoo.robustness import comparison_table, plot_comparison

    results = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                results.append(json.load(f))
        except (OSError, ValueError) as e:
            print(f"eval/imagenet_robustness.py: error: {path}: {e}", file=sys.stderr)
            return 2
    print(comparison_table(results))
    if plot:
        print(f"plot: {plot_comparison(results, plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
