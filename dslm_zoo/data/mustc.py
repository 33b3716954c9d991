"""A reader for the MuST-C layout as released (Di Gangi et al. 2019), read the way fairseq's
``examples/speech_to_text/prep_mustc_data.py`` reads it (../shared/spec/evals.md section 2.1):

    <root>/<src>-<tgt>/data/<split>/wav/<talk>.wav        one long WAV per talk
    <root>/<src>-<tgt>/data/<split>/txt/<split>.yaml      one segment per entry: {duration, offset, speaker_id, wav}
    <root>/<src>-<tgt>/data/<split>/txt/<split>.<src>     line-aligned transcript
    <root>/<src>-<tgt>/data/<split>/txt/<split>.<tgt>     line-aligned translation

The yaml is read with ``yaml.BaseLoader`` (every value a string, as fairseq does); segments are grouped by WAV
and sorted by offset; the id of the i-th segment of ``talk.wav`` is ``talk_i``; audio is sliced at
``int(offset * sr)`` for ``int(duration * sr)`` samples. WAV files are read with soundfile. The same reader
serves real MuST-C and the synthesized corpus of ``dslm-zoo data prepare st-en-de``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MustcError", "Segment", "read_split", "load_audio", "n_fbank_frames", "filter_segments"]


class MustcError(ValueError):
    """A MuST-C tree that cannot be read as released; the message names the file and the line or segment."""


@dataclass(frozen=True)
class Segment:
    id: str
    wav: Path
    offset: float  # seconds
    duration: float  # seconds
    src: str
    tgt: str
    speaker: str
    line: int  # 1-based line of the yaml / text files


def _split_dir(root: str | os.PathLike, pair: str, split: str) -> Path:
    d = Path(root).expanduser() / pair / "data" / split
    if not d.is_dir():
        raise MustcError(f"no MuST-C split at {str(d)!r} (expected <root>/<src>-<tgt>/data/<split>/)")
    return d


def read_split(root: str | os.PathLike, pair: str = "en-de", split: str = "tst-COMMON") -> list[Segment]:
    """Every segment of a split, grouped by talk and sorted by offset within it (fairseq's order and ids)."""
    import yaml

    src, _, tgt = pair.partition("-")
    d = _split_dir(root, pair, split)
    ypath, spath, tpath = d / "txt" / f"{split}.yaml", d / "txt" / f"{split}.{src}", d / "txt" / f"{split}.{tgt}"
    for p in (ypath, spath, tpath):
        if not p.is_file():
            raise MustcError(f"missing {str(p)!r}")
    try:
        entries = yaml.load(ypath.read_text(encoding="utf-8"), Loader=yaml.BaseLoader) or []
    except yaml.YAMLError as e:
        raise MustcError(f"{ypath}: not valid YAML ({e})") from None
    src_lines = spath.read_text(encoding="utf-8").split("\n")
    tgt_lines = tpath.read_text(encoding="utf-8").split("\n")
    for lines in (src_lines, tgt_lines):
        if lines and lines[-1] == "":
            lines.pop()
    if not (len(entries) == len(src_lines) == len(tgt_lines)):
        raise MustcError(f"{ypath} has {len(entries)} segments but {spath.name} has {len(src_lines)} lines and "
                         f"{tpath.name} {len(tgt_lines)}: the three files must be line-aligned")
    rows = []
    for i, (e, s, t) in enumerate(zip(entries, src_lines, tgt_lines), start=1):
        if not isinstance(e, dict) or not {"offset", "duration", "wav"} <= set(e):
            raise MustcError(f"{ypath}: segment {i} needs offset, duration and wav, got {e!r}")
        try:
            off, dur = float(e["offset"]), float(e["duration"])
        except ValueError:
            raise MustcError(f"{ypath}: segment {i} has a non-numeric offset or duration: {e!r}") from None
        if off < 0 or dur <= 0:
            raise MustcError(f"{ypath}: segment {i} has offset {off} and duration {dur}")
        rows.append((e["wav"], off, dur, s, t, e.get("speaker_id", ""), i))
    out: list[Segment] = []
    for wav in sorted({r[0] for r in rows}):
        talk = sorted((r for r in rows if r[0] == wav), key=lambda r: r[1])
        stem = Path(wav).stem
        for k, (w, off, dur, s, t, spk, line) in enumerate(talk):
            out.append(Segment(f"{stem}_{k}", d / "wav" / w, off, dur, s, t, spk, line))
    return out


def load_audio(seg: Segment, sample_rate: int = 16000, resample: bool = True) -> np.ndarray:
    """The segment's samples (float32 in [-1, 1], mono). A WAV at another rate is resampled (torchaudio) or,
    with ``resample=False``, refused; a segment past the end of its WAV is an error naming both."""
    import soundfile as sf

    if not seg.wav.is_file():
        raise MustcError(f"segment {seg.id} (line {seg.line}): missing WAV {str(seg.wav)!r}")
    info = sf.info(str(seg.wav))
    sr = info.samplerate
    start, n = int(seg.offset * sr), int(seg.duration * sr)
    if start + n > info.frames:
        raise MustcError(f"segment {seg.id} (line {seg.line}) ends at {(start + n) / sr:.3f} s, past the end of "
                         f"{seg.wav.name} ({info.frames / sr:.3f} s)")
    x, _ = sf.read(str(seg.wav), start=start, frames=n, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if sr != sample_rate:
        if not resample:
            raise MustcError(f"{seg.wav.name} is sampled at {sr} Hz, the model expects {sample_rate} Hz")
        import torch
        import torchaudio.functional as AF

        x = AF.resample(torch.from_numpy(x), sr, sample_rate).numpy()
    return x


def n_fbank_frames(duration_s: float) -> int:
    """fairseq's frame count for 25 ms windows every 10 ms: ``int(1 + (duration_ms - 25) / 10)``."""
    return int(1 + (duration_s * 1000 - 25) / 10)


def filter_segments(segments: list[Segment], train: bool, max_frames: int = 3000) -> tuple[list[Segment], dict[str, Any]]:
    """fairseq's ``filter_manifest_df``: drop segments under 5 frames and empty targets; in train also those
    over ``max_frames``. Returns the kept segments and the count dropped per reason."""
    dropped = {"too_short": 0, "empty_target": 0, "too_long": 0}
    kept = []
    for s in segments:
        frames = n_fbank_frames(s.duration)
        if frames < 5:
            dropped["too_short"] += 1
        elif not s.tgt.strip():
            dropped["empty_target"] += 1
        elif train and frames > max_frames:
            dropped["too_long"] += 1
        else:
            kept.append(s)
    return kept, dropped
