"""BLEU/chrF scoring against sacrebleu 2.6.0's test vectors (../shared/spec/evals.md 2.5) and bad files."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dslm_zoo.evals.bleu import TranslationScoreError, score, score_files

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("hyps, refs, bleu", [
    (["the cat sat on the mat", "hello world ."], [["the cat sat on the mat", "hello world ."]], 100.00000000000004),
    (["the cat is on the mat"], [["the cat sat on the mat"]], 37.99178428257963),
    (["the cat is on the mat"], [["the cat sat on the mat"], ["there is a cat on the mat"]], 39.76353643835254),
    (["the dog"], [["the cat sat on the mat"]], 0.0),
    (["Das Haus ist klein .", "Ich habe einen Hund."], [["Das Haus ist klein.", "Ich habe einen Hund."]], 100.0),
    (["Vielen Dank.", "Das ist eine sehr gute Idee!", "Wir müssen jetzt gehen."],
     [["Vielen Dank.", "Das ist eine wirklich gute Idee!", "Wir sollten jetzt gehen."]], 38.24716659380386),
])
def test_sacrebleu_vectors(hyps, refs, bleu):
    out = score(hyps, refs)
    assert out["bleu"] == pytest.approx(bleu, abs=1e-9)
    assert out["signature"].startswith(f"nrefs:{len(refs)}|case:mixed|eff:no|tok:13a|smooth:exp|version:")


def test_vector_f_counts_and_chrf():
    out = score(["Vielen Dank.", "Das ist eine sehr gute Idee!", "Wir müssen jetzt gehen."],
                [["Vielen Dank.", "Das ist eine wirklich gute Idee!", "Wir sollten jetzt gehen."]])
    assert out["bleu_detail"]["counts"] == [13, 8, 4, 0] and out["bleu_detail"]["totals"] == [15, 12, 9, 6]
    assert out["chrf"] == pytest.approx(67.2859, abs=1e-4)


def test_files_and_the_command(tmp_path):
    (tmp_path / "h.txt").write_text("the cat is on the mat\n\n")
    (tmp_path / "r.txt").write_text("the cat sat on the mat\nhello\n")
    (tmp_path / "short.txt").write_text("one line\n")
    out = score_files(tmp_path / "h.txt", [tmp_path / "r.txt"])
    assert out["empty_hypotheses"] == 1
    with pytest.raises(TranslationScoreError, match=r"h\.txt has 2 lines but .*short\.txt has 1"):
        score_files(tmp_path / "h.txt", [tmp_path / "short.txt"])
    with pytest.raises(TranslationScoreError, match="does not exist"):
        score_files(tmp_path / "nope.txt", [tmp_path / "r.txt"])
    cmd = [sys.executable, str(ROOT / "eval" / "speech_translation.py"), "score", "--hyp", str(tmp_path / "h.txt")]
    r = subprocess.run(cmd + ["--ref", str(tmp_path / "r.txt")], capture_output=True, text=True)
    assert r.returncode == 0 and set(json.loads(r.stdout)) >= {"bleu", "chrf", "signature"}
    r = subprocess.run(cmd + ["--ref", str(tmp_path / "short.txt")], capture_output=True, text=True)
    assert r.returncode == 2 and "line-aligned" in r.stderr and "Traceback" not in r.stderr
