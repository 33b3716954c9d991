"""Write the committed speech-translation test slice: the first segments of a MuST-C split as a small MuST-C tree.

    python eval/make_st_slice.py [--root $DSLM_ZOO_DATA/st-en-de] [--split tst-COMMON] [--segments 16]
                                 [--out tests/data/st_en_de_tst_slice]

Reads the split with the zoo's MuST-C reader (its evaluation length filter), keeps the first ``--segments``
segments in reader order, and writes them as one talk (``<out>/en-de/data/tst-COMMON/wav/slice.wav``, 16 kHz
16-bit, 0.3 s of silence between segments, segments in ``txt/tst-COMMON.yaml``) with the transcript and
translation files, so ``dslm-zoo eval st MODEL <out>`` and the release tests read it like any MuST-C tree. For
st-en-de the text is LibreOffice help (MPL-2.0) and the speech espeak-ng's. Deterministic.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

GAP_S = 0.3
SR = 16000


def main(argv: list[str] | None = None) -> int:
    import soundfile as sf

    from dslm_zoo.data.mustc import filter_segments, load_audio, read_split
    from dslm_zoo.data.text import data_root

    p = argparse.ArgumentParser(prog="eval/make_st_slice.py", description=__doc__.splitlines()[0])
    p.add_argument("--root", default=None, help="MuST-C root (default: $DSLM_ZOO_DATA/st-en-de)")
    p.add_argument("--pair", default="en-de")
    p.add_argument("--split", default="tst-COMMON")
    p.add_argument("--segments", type=int, default=16)
    p.add_argument("--out", default="tests/data/st_en_de_tst_slice")
    args = p.parse_args(argv)
    if args.segments < 1:
        p.error(f"--segments must be >= 1, got {args.segments}")
    root = Path(args.root) if args.root else data_root() / "st-en-de"
    segs, _ = filter_segments(read_split(root, args.pair, args.split), train=False)
    segs = segs[: args.segments]
    src, _, tgt = args.pair.partition("-")
    d = Path(args.out) / args.pair / "data" / "tst-COMMON"
    (d / "wav").mkdir(parents=True, exist_ok=True)
    (d / "txt").mkdir(parents=True, exist_ok=True)
    gap = np.zeros(int(GAP_S * SR), dtype=np.int16)
    chunks, rows, start = [gap], [], len(gap)
    for s in segs:
        x = np.round(load_audio(s, SR) * 32768.0).clip(-32768, 32767).astype(np.int16)  # the int16 samples back
        # times half a sample past the boundary: the reader's int(seconds * sr) then lands on the exact sample
        # whatever the decimal rounding of the yaml (6 decimals = 1/60 of a sample)
        rows.append({"duration": f"{(len(x) + 0.5) / SR:.6f}", "offset": f"{(start + 0.5) / SR:.6f}",
                     "speaker_id": s.speaker, "wav": "slice.wav"})
        chunks += [x, gap]
        start += len(x) + len(gap)
    offset = start / SR
    sf.write(str(d / "wav" / "slice.wav"), np.concatenate(chunks), SR, subtype="PCM_16")
    (d / "txt" / "tst-COMMON.yaml").write_text(
        "".join("- {" + ", ".join(f"{k}: {v}" for k, v in r.items()) + "}\n" for r in rows))
    (d / "txt" / f"tst-COMMON.{src}").write_text("".join(s.src + "\n" for s in segs), encoding="utf-8")
    (d / "txt" / f"tst-COMMON.{tgt}").write_text("".join(s.tgt + "\n" for s in segs), encoding="utf-8")
    print(json.dumps({"out": str(args.out), "segments": len(segs), "seconds": round(offset, 3),
                      "from": [f"{s.wav.name}:{s.id}" for s in segs]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
