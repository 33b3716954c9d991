"""Speech-translation scoring: sacrebleu corpus BLEU (13a, mixed case, exp smoothing) and chrF with signatures.

    python eval/speech_translation.py score --hyp HYP.txt --ref REF.txt [--ref REF2.txt ...]

prints JSON {"bleu", "chrf", "signature", ...} for line-aligned, detokenised files. The library behind it is
``dslm_zoo.evals.bleu``.
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    from dslm_zoo.evals.bleu import TranslationScoreError, score_files

    p = argparse.ArgumentParser(prog="eval/speech_translation.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("score", help="score a hypothesis file against reference files")
    s.add_argument("--hyp", required=True, help="hypotheses, one detokenised segment per line")
    s.add_argument("--ref", required=True, action="append", help="references, line-aligned (repeat for more streams)")
    args = p.parse_args(argv)
    try:
        out = score_files(args.hyp, args.ref)
    except TranslationScoreError as e:
        print(f"eval/speech_translation.py: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
