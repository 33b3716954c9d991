"""Releases: ``dslm-zoo release`` mechanics, and every released weight of the zoo checked on a fresh clone.

The registry tests are parametrized over ``list_pretrained()``: each release loads offline by name and through
torch.hub, reproduces its golden logits, and its eval reproduces the card's metric on the committed slice of
its test split. The size test keeps the zoo inside the repository's weight budget.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dslm_zoo
from dslm_zoo import _registry
from dslm_zoo._hub import REPO_MIRROR, sha256_file
from dslm_zoo.release import IMAGE_SLICES, LM_SLICE, QA_SLICE, golden_logits, release_run

REPO_ROOT = Path(__file__).resolve().parent.parent
GOLDEN = REPO_ROOT / "tests" / "golden"
RELEASED = dslm_zoo.list_pretrained()
MB = 1 << 20


# ------------------------------------------------------------------------------------------- the zoo's weights


def test_weights_fit_the_repository_budget():
    files = [p for p in REPO_MIRROR.rglob("*") if p.is_file()] if REPO_MIRROR.is_dir() else []
    big = [(str(p), p.stat().st_size) for p in files if p.stat().st_size > 25 * MB]
    assert not big, f"weights files over 25 MB: {big}"
    assert sum(p.stat().st_size for p in files) <= 100 * MB


def test_every_release_has_its_files():
    for name in RELEASED:
        cfg = dslm_zoo.get_pretrained_cfg(name)
        repo = REPO_MIRROR / cfg.hf_hub_id
        assert sha256_file(repo / cfg.filename) == cfg.sha256, name
        assert (REPO_ROOT / "model_cards" / f"{name}.md").read_text() == (repo / "README.md").read_text()
        assert (GOLDEN / f"{name}.json").is_file(), name
        assert cfg.metrics and cfg.eval_command and cfg.recipe, name
        if cfg.tokenizer:
            assert (repo / cfg.tokenizer).is_file()


@pytest.mark.parametrize("name", RELEASED)
def test_release_loads_by_name_and_matches_golden_logits(name):
    model = dslm_zoo.create_model(name, pretrained=True)
    gold = json.loads((GOLDEN / f"{name}.json").read_text())
    assert gold["sha256"] == model.pretrained_cfg.sha256
    got, which = golden_logits(model)
    assert gold["logits"] == which
    torch.testing.assert_close(got, torch.tensor(gold["values"]), rtol=1e-4, atol=1e-4)


def _is_qa(name: str) -> bool:
    return (dslm_zoo.get_pretrained_cfg(name).model_args or {}).get("head") == "qa"


def _is_st(name: str) -> bool:
    return dslm_zoo.get_pretrained_cfg(name).fbank is not None


@pytest.mark.parametrize("name", [n for n in RELEASED if dslm_zoo.get_pretrained_cfg(n).tokenizer and not _is_qa(n)
                                  and not _is_st(n)])
def test_release_reproduces_its_card_metric_on_the_committed_slice(name):
    from dslm_zoo.train.lm_eval import evaluate_lm, text_file_data

    cfg = dslm_zoo.get_pretrained_cfg(name)
    (key, want), = [(k, v) for k, v in cfg.metrics.items() if k.endswith(":test-slice")]
    model = dslm_zoo.create_model(name, pretrained=True)
    data = text_file_data(str(REPO_ROOT / LM_SLICE), dslm_zoo.get_tokenizer(name))
    got = evaluate_lm(model, data, "test", seq_len=model.cfg.max_seq_len)
    assert got.targets == want["targets"] and got.windows == want["windows"]
    assert got.loss == pytest.approx(want["loss"], rel=1e-4), key


@pytest.mark.parametrize("name", [n for n in RELEASED if dslm_zoo.get_pretrained_cfg(n).label_names])
def test_image_release_reproduces_its_card_accuracy_on_the_committed_slice(name):
    from dslm_zoo.robustness import evaluate_images, image_data_set

    cfg = dslm_zoo.get_pretrained_cfg(name)
    (key, want), = [(k, v) for k, v in cfg.metrics.items() if k.endswith(":test-slice")]
    model = dslm_zoo.create_model(name, pretrained=True)
    got = evaluate_images(model, image_data_set(str(REPO_ROOT / IMAGE_SLICES[key.split(":")[0]]), model))
    assert got["images"] == want["images"] == 256
    assert got["top1"] == pytest.approx(want["top1"], abs=1e-9), key  # a count over 256 images: exact


@pytest.mark.parametrize("name", [n for n in RELEASED if dslm_zoo.get_pretrained_cfg(n).label_names])
def test_image_release_loads_through_timm_with_its_own_transform(name, monkeypatch):
    import timm
    from PIL import Image
    from timm.data import create_transform, resolve_model_data_config

    from dslm_zoo.data.images import pad_image

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = dslm_zoo.get_pretrained_cfg(name)
    ours = dslm_zoo.create_model(name, pretrained=True).eval()
    theirs = timm.create_model(name, pretrained=True).eval()
    data_cfg = resolve_model_data_config(theirs)
    assert data_cfg["input_size"] == tuple(cfg.input_size) and data_cfg["mean"] == tuple(cfg.mean)
    tf = create_transform(**data_cfg, is_training=False)
    grey = (torch.arange(28 * 28).reshape(28, 28) % 251).to(torch.uint8).numpy()
    x = tf(Image.fromarray(pad_image(grey, cfg.input_size[-1])))
    assert x.shape == tuple(cfg.input_size)
    # the transform is the trainer's: pad, /255, (x - mean) / std
    want = (torch.from_numpy(pad_image(grey, cfg.input_size[-1])).float() / 255 - cfg.mean[0]) / cfg.std[0]
    torch.testing.assert_close(x[0], want, rtol=0, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x[None]), ours(x[None]))


@pytest.mark.parametrize("name", [n for n in RELEASED if _is_qa(n)])
def test_qa_release_reproduces_its_card_scores_on_the_committed_slice(name, tmp_path):
    from dslm_zoo.evals.qa import answer_and_score

    cfg = dslm_zoo.get_pretrained_cfg(name)
    want = cfg.metrics["qa-facts:test-slice"]
    model = dslm_zoo.create_model(name, pretrained=True)
    flags = cfg.eval_command.split(QA_SLICE)[1].split()  # the card's own window settings
    win = {"max_len": int(flags[flags.index("--max-len") + 1]), "doc_stride": int(flags[flags.index("--doc-stride") + 1])}
    got = answer_and_score(model, REPO_ROOT / QA_SLICE, dslm_zoo.get_tokenizer(name), tmp_path, progress=False, **win)
    assert got["total"] == want["total"] == 180
    assert got["exact"] == pytest.approx(want["exact"]) and got["f1"] == pytest.approx(want["f1"])


@pytest.mark.parametrize("name", [n for n in RELEASED if _is_st(n)])
def test_st_release_reproduces_its_card_scores_and_golden_tokens_on_the_committed_slice(name):
    from dslm_zoo.translation import evaluate_st
    from dslm_zoo.release import ST_SLICE, golden_tokens

    cfg = dslm_zoo.get_pretrained_cfg(name)
    (key, want), = [(k, v) for k, v in cfg.metrics.items() if k.endswith(":test-slice")]
    model = dslm_zoo.create_model(name, pretrained=True)
    gold = json.loads((GOLDEN / f"{name}.json").read_text())
    assert golden_tokens(model) == gold["greedy_tokens"]  # greedy ids of the slice's first utterance
    _, _, got = evaluate_st(model, REPO_ROOT / ST_SLICE, dslm_zoo.get_tokenizer(name), progress=False)
    assert got["segments"] == want["segments"]
    assert got["bleu"] == pytest.approx(want["bleu"], abs=1e-6) and got["chrf"] == pytest.approx(want["chrf"], abs=1e-6)


# one release per family (the part of the name before the shape): torch.hub runs a fresh interpreter per call
HUB_CASES = sorted({n.split("_")[1]: n for n in sorted(RELEASED, reverse=True)}.values())


@pytest.mark.parametrize("name", HUB_CASES)
def test_release_loads_through_torch_hub_offline(name, tmp_path):
    arch = name.split(".")[0]
    code = (f"import torch; m = torch.hub.load({str(REPO_ROOT)!r}, {arch!r}, source='local', pretrained=True); "
            f"print(m.pretrained_cfg.name)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TORCH_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == dslm_zoo.get_pretrained_cfg(arch).name


# ------------------------------------------------------------------------------------------ release mechanics


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from dslm_zoo.train import Trainer, load_recipe

    out = tmp_path_factory.mktemp("run") / "tiny"
    recipe = load_recipe(REPO_ROOT / "recipes" / "tiny_mlm.yaml", ["train.steps=8", "train.eval_every=8",
                                                                   "train.checkpoint_every=8"])
    Trainer(recipe, out).run()
    return out


def _released(root: Path, tag: str, run: Path) -> Path:
    return release_run(run, tag, repo_root=root, windows=8, progress=False)


def test_release_writes_the_hub_layout_card_golden_and_registry_entry(tiny_run, tmp_path, monkeypatch):
    out = _released(tmp_path, "toy_mlm", tiny_run)
    name = "dslm_bert_tiny.toy_mlm"
    assert out == tmp_path / "hub_mirror" / "dslm-zoo" / name
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors", "tokenizer.json"]
    entry, = json.loads((tmp_path / "dslm_zoo" / "models" / "releases.json").read_text())
    assert entry["sha256"] == sha256_file(out / "model.safetensors")
    assert set(entry["metrics"]) == {"toy_text:test", "toy_text:test-slice"}
    assert entry["metrics"]["toy_text:test"]["unigram_ppl"] > 1
    assert entry["model_args"]["vocab_size"] == dslm_zoo.get_tokenizer(f"local-dir:{out}").get_vocab_size()
    card = (tmp_path / "model_cards" / f"{name}.md").read_text()
    assert "dslm-zoo eval lm dslm_bert_tiny.toy_mlm --text tests/data/text_en_test_janeausten.txt" in card
    assert "bf16" in card and "recipes/tiny_mlm.yaml" in card
    assert "| toy_text:test | unigram_ppl |" in card and "| toy_text:test-slice | loss |" in card

    # the tag loads by name from a mirror, with the release's own architecture arguments
    cfg = dslm_zoo.PretrainedCfg.from_dict({**entry, "tag": "toy_mlm_loadtest"})
    monkeypatch.setenv("DSLM_ZOO_HUB", str(tmp_path / "hub_mirror"))
    dslm_zoo.register_pretrained(cfg)
    try:
        model = dslm_zoo.create_model("dslm_bert_tiny.toy_mlm_loadtest", pretrained=True)
        assert model.cfg.vocab_size == entry["model_args"]["vocab_size"] and model.cfg.max_seq_len == 64
        gold = json.loads((tmp_path / "tests" / "golden" / f"{name}.json").read_text())
        torch.testing.assert_close(golden_logits(model)[0], torch.tensor(gold["values"]))
        # fine-tuning for another task: the MLM head is dropped and the QA head initialised, the trunk loads strictly
        with pytest.warns(UserWarning, match=r"head='qa'.*'head.dense.weight'"):
            qa = dslm_zoo.create_model("dslm_bert_tiny.toy_mlm_loadtest", pretrained=True, head="qa")
        assert qa.cfg.head == "qa" and torch.equal(qa.embed.word.weight, model.embed.word.weight)
        # a named tag builds the release's architecture even untrained; the bare arch stays the variant's
        assert dslm_zoo.create_model("dslm_bert_tiny.toy_mlm_loadtest", device="meta").cfg.max_seq_len == 64
        bare = dslm_zoo.create_model("dslm_bert_tiny", device="meta")
        assert bare.cfg.max_seq_len == 512 and bare.pretrained_cfg.tag == "" and bare.pretrained_cfg.num_params is None
    finally:
        del _registry._pretrained["dslm_bert_tiny"]["toy_mlm_loadtest"]


def test_release_is_reproducible_and_replaces_its_entry(tiny_run, tmp_path):
    first = sha256_file(_released(tmp_path, "toy_mlm", tiny_run) / "model.safetensors")
    shutil.rmtree(tmp_path / "model_cards")
    second = sha256_file(_released(tmp_path, "toy_mlm", tiny_run) / "model.safetensors")
    assert first == second
    entries = json.loads((tmp_path / "dslm_zoo" / "models" / "releases.json").read_text())
    assert [e["tag"] for e in entries] == ["toy_mlm"]


def test_eval_lm_command_reproduces_the_release_metrics(tiny_run, tmp_path, capsys):
    from dslm_zoo.cli import main

    out = _released(tmp_path, "toy_mlm", tiny_run)
    entry, = json.loads((tmp_path / "dslm_zoo" / "models" / "releases.json").read_text())
    assert main(["eval", "lm", f"local-dir:{out}", "--text", str(REPO_ROOT / LM_SLICE), "--seq-len", "64"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["loss"] == pytest.approx(entry["metrics"]["toy_text:test-slice"]["loss"], rel=1e-6)
    assert main(["eval", "lm", f"local-dir:{out}", "--data", "toy_text", "--windows", "8", "--seq-len", "64"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = entry["metrics"]["toy_text:test"]
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-6) and got["unigram_ppl"] == pytest.approx(want["unigram_ppl"])
    # a model without a language-model head is refused before any data is read
    from dslm_zoo.train.lm_eval import lm_task_for

    with pytest.raises(ValueError, match="language-model head|head='mlm'"):
        lm_task_for(dslm_zoo.create_model("dslm_vit_tiny", device="meta"))


def test_release_refuses_bad_input(tiny_run, tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished export"):
        release_run(tmp_path, "x", repo_root=tmp_path)
    with pytest.raises(ValueError, match="tag must be"):
        release_run(tiny_run, "bad tag!", repo_root=tmp_path)
    with pytest.raises(ValueError, match="store_dtype"):
        release_run(tiny_run, "ok", repo_root=tmp_path, store_dtype="int8")


def test_get_tokenizer_errors_name_the_model():
    with pytest.raises(ValueError, match="no released tokenizer"):
        dslm_zoo.get_tokenizer("dslm_vit_tiny")
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        dslm_zoo.get_tokenizer("local-dir:/nonexistent/dir")


@pytest.mark.skipif(not RELEASED, reason="no weights released yet")
def test_list_pretrained_metrics_prints_every_card_metric(capsys):
    from dslm_zoo.cli import main

    assert main(["list", "--pretrained", "--metrics"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| weights | parameters | data:split |")
    rows = [ln for ln in lines[2:] if ln.startswith("| `")]
    assert len(rows) == sum(len(dslm_zoo.get_pretrained_cfg(n).metrics) for n in RELEASED)
