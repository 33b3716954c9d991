"""SQuAD evaluation with the official scripts' semantics (evaluate-v1.1.py / evaluate-v2.0.py).

    python eval/squad.py score DATA.json PREDS.json [-n NA_PROB.json] [-t THRESH] [--version 1.1|2.0]

prints the JSON the official script of the data's version prints: ``{"exact_match", "f1"}`` for v1.1;
``exact, f1, total, HasAns_*, NoAns_*`` (and ``best_*`` with ``-n``) for v2.0. The library behind it is
``dslm_zoo.evals.squad``; ``dslm-zoo eval squad`` runs the same scoring.
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    from dslm_zoo.evals.squad import SquadFormatError, evaluate

    p = argparse.ArgumentParser(prog="eval/squad.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("score", help="score a predictions file")
    s.add_argument("data", help="SQuAD JSON: official nested or Hugging Face flattened format")
    s.add_argument("predictions", help="JSON object {question id: answer text}")
    s.add_argument("-n", "--na-prob", help="v2.0: JSON object {question id: probability of no answer}")
    s.add_argument("-t", "--na-prob-thresh", type=float, default=1.0, help="v2.0: predict no answer if na_prob > this (default 1.0)")
    s.add_argument("--version", choices=["1.1", "2.0"], help="score with this version's script (default: the file's)")
    args = p.parse_args(argv)
    try:
        out = evaluate(args.data, args.predictions, na_prob=args.na_prob, na_prob_thresh=args.na_prob_thresh,
                       version=args.version)
    except SquadFormatError as e:
        print(f"eval/squad.py: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
