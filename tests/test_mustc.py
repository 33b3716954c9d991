"""The MuST-C reader on a generated multi-talk, multi-segment tree, and its errors."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from dslm_zoo.data.mustc import MustcError, filter_segments, load_audio, n_fbank_frames, read_split


def _tree(root, sr=16000, talks=2):
    d = root / "en-de" / "data" / "tst-COMMON"
    (d / "wav").mkdir(parents=True)
    (d / "txt").mkdir()
    yaml_lines, en, de = [], [], []
    for t in range(talks):
        t_sec = np.arange(int(4.0 * sr)) / sr
        wave = 0.1 * np.sin(2 * np.pi * (220 + 110 * t) * t_sec)
        wave[int(2.0 * sr):] *= -1  # the second half differs, so slices are checkable
        sf.write(d / "wav" / f"ted_{t}.wav", wave.astype(np.float32), sr, subtype="PCM_16")
        # listed out of order: the reader sorts each talk by offset
        for off, dur, text in ((2.0, 1.5, "second"), (0.5, 1.0, "first"), (3.99, 0.001, "tiny")):
            yaml_lines.append(f"- {{duration: {dur:.6f}, offset: {off:.6f}, rW: 2, uW: 0, speaker_id: spk.{t}, wav: ted_{t}.wav}}")
            en.append(f"{text} words of talk {t}")
            de.append(f"{text} Worte von Vortrag {t}" if text != "tiny" else "")
    (d / "txt" / "tst-COMMON.yaml").write_text("\n".join(yaml_lines) + "\n")
    (d / "txt" / "tst-COMMON.en").write_text("\n".join(en) + "\n")
    (d / "txt" / "tst-COMMON.de").write_text("\n".join(de) + "\n")
    return d


def test_segments_are_grouped_sorted_and_sliced(tmp_path):
    _tree(tmp_path)
    segs = read_split(tmp_path, "en-de", "tst-COMMON")
    assert [s.id for s in segs] == ["ted_0_0", "ted_0_1", "ted_0_2", "ted_1_0", "ted_1_1", "ted_1_2"]
    assert [s.src.split()[0] for s in segs[:3]] == ["first", "second", "tiny"] and segs[0].speaker == "spk.0"
    x = load_audio(segs[1])
    assert x.shape == (int(1.5 * 16000),)
    full, _ = sf.read(segs[1].wav, dtype="float32")
    np.testing.assert_allclose(x, full[32000:56000])
    kept, dropped = filter_segments(segs, train=True)
    assert dropped == {"too_short": 2, "empty_target": 0, "too_long": 0} and len(kept) == 4
    assert n_fbank_frames(2.28) == 226 and filter_segments(segs, train=False, max_frames=10)[1]["too_long"] == 0


def test_resampling_and_bad_trees(tmp_path):
    d = _tree(tmp_path, sr=8000, talks=1)
    segs = read_split(tmp_path, "en-de", "tst-COMMON")
    assert load_audio(segs[0]).shape[0] == pytest.approx(16000, abs=2)  # 1.0 s at 8 kHz resampled to 16 kHz
    with pytest.raises(MustcError, match="sampled at 8000 Hz, the model expects 16000 Hz"):
        load_audio(segs[0], resample=False)
    (d / "txt" / "tst-COMMON.de").write_text("only one line\n")
    with pytest.raises(MustcError, match=r"has 3 segments but tst-COMMON\.en has 3 lines and tst-COMMON\.de 1"):
        read_split(tmp_path, "en-de", "tst-COMMON")
    (d / "txt" / "tst-COMMON.de").write_text("a\nb\nc\n")
    (d / "txt" / "tst-COMMON.yaml").write_text(
        "- {duration: 9.0, offset: 1.0, wav: ted_0.wav}\n- {duration: 1.0, offset: 0.0, wav: ted_0.wav}\n"
        "- {duration: x, offset: 0.0, wav: ted_0.wav}\n")
    with pytest.raises(MustcError, match="segment 3 has a non-numeric offset or duration"):
        read_split(tmp_path, "en-de", "tst-COMMON")
    (d / "txt" / "tst-COMMON.yaml").write_text(
        "- {duration: 9.0, offset: 1.0, wav: ted_0.wav}\n- {duration: 1.0, offset: 0.0, wav: ted_0.wav}\n"
        "- {duration: 1.0, offset: 0.5, wav: ted_0.wav}\n")
    segs = read_split(tmp_path, "en-de", "tst-COMMON")
    with pytest.raises(MustcError, match=r"ted_0_2 \(line 1\) ends at 10\.000 s, past the end of ted_0\.wav \(4\.000 s\)"):
        load_audio(segs[2])
    with pytest.raises(MustcError, match="no MuST-C split"):
        read_split(tmp_path, "en-fr", "dev")
