"""The trainer's speech_translation task on a generated MuST-C tree: tones that say their own (German) names."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from dslm_zoo.train import Trainer
from dslm_zoo.train.config import Recipe

WORDS = {220: "tief und ruhig", 440: "mittel und klar", 880: "hoch und hell"}


def _tree(root, split, talks, seed):
    rng = np.random.default_rng(seed)
    d = root / "en-de" / "data" / split
    (d / "wav").mkdir(parents=True)
    (d / "txt").mkdir()
    yaml, en, de = [], [], []
    for t in range(talks):
        chunks, off = [], 0.0
        for _ in range(6):
            f = int(rng.choice(list(WORDS)))
            dur = float(rng.uniform(0.4, 0.8))
            tt = np.arange(int(dur * 16000)) / 16000
            chunks += [0.3 * np.sin(2 * np.pi * f * tt), np.zeros(1600)]
            yaml.append(f"- {{duration: {dur:.6f}, offset: {off:.6f}, speaker_id: s, wav: talk{t}.wav}}")
            en.append(f"tone {f}")
            de.append(WORDS[f])
            off += dur + 0.1
        sf.write(d / "wav" / f"talk{t}.wav", np.concatenate(chunks).astype(np.float32), 16000, subtype="PCM_16")
    (d / "txt" / f"{split}.yaml").write_text("\n".join(yaml) + "\n")
    (d / "txt" / f"{split}.en").write_text("\n".join(en) + "\n")
    (d / "txt" / f"{split}.de").write_text("\n".join(de) + "\n")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny speech model trained for 40 steps on the tone tree: (tree root, trainer, evaluation before, result)."""
    tmp_path = tmp_path_factory.mktemp("st")
    _tree(tmp_path, "train", talks=10, seed=0)
    _tree(tmp_path, "dev", talks=2, seed=1)
    _tree(tmp_path, "tst-COMMON", talks=1, seed=2)  # never trained on: what a release scores as held out
    recipe = Recipe.from_dict({
        "model": {"name": "dslm_st_tiny", "kwargs": {"depth": 2, "decoder_depth": 1, "embed_dim": 64, "num_heads": 2,
                                                      "conv_channels": 64, "drop_rate": 0.0}},
        "task": {"name": "speech_translation", "kwargs": {"label_smoothing": 0.1, "specaugment": "LB"}},
        "data": {"name": "mustc", "kwargs": {"root": str(tmp_path), "vocab_size": 40}},
        "optim": {"lr": 3e-3}, "schedule": {"warmup_steps": 5},
        "train": {"steps": 40, "batch_size": 12, "eval_every": 0, "checkpoint_every": 0, "bucket_batches": 5},
    }, "test")
    t = Trainer(recipe, tmp_path / "run")
    before = t.evaluate()
    return tmp_path, t, before, t.run()


def test_speech_translation_task_trains_and_exports_its_front_end(trained):
    tmp_path, t, before, res = trained
    assert res.eval["eval_loss"] < before["eval_loss"] - 0.5, (before, res.eval)
    b1 = t.task.collate([(3, t.task.datasets["train"][0])], 0)
    b2 = t.task.collate([(3, t.task.datasets["train"][0])], 0)
    assert b1["feats"].shape[-1] == 80 and (b1["feats"] == b2["feats"]).all()  # SpecAugment seeded by the draw
    assert b1["tgt_in"][0, 0] == 0 and (b1["tgt_out"][0] == 2).any()
    import dslm_zoo

    m = dslm_zoo.create_model(f"local-dir:{tmp_path / 'run' / 'export'}")
    assert m.pretrained_cfg.sample_rate == 16000 and m.pretrained_cfg.fbank["num_mel_bins"] == 80
    assert (tmp_path / "run" / "export" / "tokenizer.json").is_file()


def test_eval_st_decodes_and_scores(trained):
    import json

    from dslm_zoo.cli import main

    tmp_path = trained[0]
    out = tmp_path / "st"
    assert main(["eval", "st", f"local-dir:{tmp_path / 'run' / 'export'}", str(tmp_path), "--split", "dev", "--beam", "2",
                 "--out", str(out)]) == 0
    scores = json.loads((out / "scores.json").read_text())
    assert scores["segments"] == 12 and scores["signature"].startswith("nrefs:1|case:mixed")
    assert len((out / "hyp.txt").read_text().splitlines()) == 12


def test_bucketed_batches_hold_similar_lengths_and_cover_the_epoch(trained):
    from dslm_zoo.train.trainer import GlobalSampler

    t = trained[1]
    lengths = t.task.lengths("train")
    n, batch = len(lengths), 12
    assert isinstance(t.sampler, GlobalSampler) and t.sampler.bucket == 5
    plain = GlobalSampler(n, 0)

    def spread(sampler):  # mean over the epoch's batches of (longest - shortest) segment, in ms
        steps = n // batch
        return sum(max(lengths[i] for _, i in b) - min(lengths[i] for _, i in b)
                   for b in (sampler.draws(s, batch) for s in range(steps))) / steps

    assert spread(t.sampler) < 0.4 * spread(plain)  # the epoch (5 batches) sorted as one run
    epoch = [i for s in range(n // batch) for _, i in t.sampler.draws(s, batch)]
    assert sorted(epoch) == list(range(n))  # every segment once per epoch (60 segments = 5 batches)
    again = GlobalSampler(n, 0, lengths=lengths, bucket=5, batch=batch)
    assert again.draws(7, batch) == t.sampler.draws(7, batch)  # a function of (seed, step): exact resume


def test_shuffled_order_is_a_seeded_derangement():
    from dslm_zoo.translation import shuffled_order

    for n in (2, 3, 17, 500):
        order = shuffled_order(n, seed=0)
        assert sorted(order) == list(range(n)) and all(j != i for i, j in enumerate(order))
        assert order == shuffled_order(n, seed=0)
    assert shuffled_order(50, 0) != shuffled_order(50, 1)
    with pytest.raises(ValueError, match="at least 2"):
        shuffled_order(1, 0)


def test_shuffled_audio_control_drops_the_score(trained):
    """The tone model reads its audio: pairing each reference with another segment's tone lowers chrF."""
    from dslm_zoo import create_model, get_tokenizer
    from dslm_zoo.translation import evaluate_st

    tmp_path = trained[0]
    name = f"local-dir:{tmp_path / 'run' / 'export'}"
    model, tok = create_model(name), get_tokenizer(name)
    hyps, refs, real = evaluate_st(model, tmp_path, tok, split="train", limit=36, beam=1, progress=False)
    shuf_hyps, shuf_refs, shuf = evaluate_st(model, tmp_path, tok, split="train", limit=36, beam=1, shuffle_audio=0,
                                             progress=False)
    assert shuf_refs == refs and shuf["shuffle_audio"] == 0 and real["shuffle_audio"] is None
    assert sorted(shuf_hyps) != hyps or shuf_hyps != hyps  # other audio, other outputs
    assert shuf["chrf"] < real["chrf"] - 10, (real["chrf"], shuf["chrf"])


def test_st_slice_writer_round_trips_segments(trained, tmp_path):
    import runpy
    import sys

    from dslm_zoo.data.mustc import filter_segments, load_audio, read_split

    root = trained[0]
    argv = sys.argv
    sys.argv = ["make_st_slice.py", "--root", str(root), "--split", "dev", "--segments", "5", "--out", str(tmp_path / "s")]
    try:
        with pytest.raises(SystemExit) as e:
            runpy.run_path(str(__import__("pathlib").Path(__file__).parents[1] / "eval" / "make_st_slice.py"),
                           run_name="__main__")
        assert e.value.code == 0
    finally:
        sys.argv = argv
    src, _ = filter_segments(read_split(root, "en-de", "dev"), train=False)
    got = read_split(tmp_path / "s", "en-de", "tst-COMMON")
    assert [s.tgt for s in got] == [s.tgt for s in src[:5]] and [s.src for s in got] == [s.src for s in src[:5]]
    for a, b in zip(got, src[:5]):
        np.testing.assert_array_equal(load_audio(a), load_audio(b))  # int16 samples, bit-exact


def test_release_of_a_speech_run_scores_its_splits_the_control_and_records_golden_tokens(trained, tmp_path):
    import json

    import dslm_zoo
    from dslm_zoo.release import golden_tokens, release_run

    run = trained[0] / "run"
    out = release_run(run, "tones", repo_root=tmp_path, windows=8, progress=False)
    cfg = json.loads((out / "config.json").read_text())["pretrained_cfg"]
    data = trained[0].name
    assert set(cfg["metrics"]) == {f"{data}:tst-COMMON", f"{data}:train-first8", f"{data}:tst-COMMON-shuffled-audio",
                                   f"{data}:test-slice"}
    assert cfg["metrics"][f"{data}:tst-COMMON"]["segments"] == 6 and cfg["metrics"][f"{data}:train-first8"]["segments"] == 8
    assert "--shuffle-audio 0" in cfg["eval_command"] and "BLEU signature: `nrefs:1|case:mixed" in cfg["notes"]
    gold = json.loads((tmp_path / "tests" / "golden" / f"{cfg['architecture']}.tones.json").read_text())
    model = dslm_zoo.create_model(f"local-dir:{out}")
    assert gold["greedy_tokens"] == golden_tokens(model) and len(gold["greedy_tokens"]) >= 1
