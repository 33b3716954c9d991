"""The main demo: list the zoo, build one model of every family, and run it on a small batch.

    python -m dslm_zoo.demo        (or: dslm-zoo demo, make demo)
"""
from __future__ import annotations

import time

import torch

from . import create_model, is_model, list_models, list_pretrained

__all__ = ["run_demo"]

# Per family: a CPU-sized variant, built and run for real, and the deepest variant, built on the meta device.
_FAMILIES = [
    ("text encoder", "dslm_bert_tiny", "dslm_bert_1000L"),
    ("text decoder", "dslm_gpt_tiny", "dslm_gpt_1000L"),
    ("vision", "dslm_vit_tiny", "dslm_vit_1000L"),
    ("speech translation", "dslm_st_tiny", "dslm_st_1000L"),
]


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _example(model: torch.nn.Module) -> tuple:
    cfg = model.cfg
    if hasattr(cfg, "img_size"):
        return (torch.randn(2, cfg.in_chans, cfg.img_size, cfg.img_size),)
    if hasattr(cfg, "n_mels"):
        feats = torch.randn(2, 64, cfg.n_mels)
        return (feats, torch.tensor([64, 48]), torch.randint(0, cfg.vocab_size, (2, 8)))
    return (torch.randint(0, cfg.vocab_size, (2, 32)),)


def run_demo() -> None:
    names = list_models()
    print(f"dslm_zoo: {len(names)} registered models, {len(list_pretrained())} with released weights\n")
    rows = []
    for family, small, deep in _FAMILIES:
        if not is_model(small):
            continue
        for name, device in ((small, "cpu"), (deep, "meta")):
            t = time.perf_counter()
            model = create_model(name, device=device)
            build = time.perf_counter() - t
            out = "(meta: not run)"
            if device == "cpu":
                with torch.no_grad():
                    y = model.eval()(*_example(model))
                y = y[0] if isinstance(y, tuple) else y
                out = f"out {tuple(y.shape)}, finite={bool(torch.isfinite(y).all())}"
            n = sum(p.numel() for p in model.parameters())
            rows.append([family, name, f"{n / 1e6:.2f}M", model.depth, model.cfg.init, device, f"{build:.2f}s", out])
    print(_table(rows, ["family", "model", "params", "depth", "init", "device", "build", "forward"]))
    _pretrained_demo()
    _qa_demo()
    _st_demo()
    _signal_demo()
    _train_demo()


# A sentence of the text-en test split (tests/data/text_en_test_janeausten.txt: Emma, chapter 15, public domain).
_HELD_OUT = "Mr. Woodhouse was soon ready for his tea; and when he had drank his tea he was quite ready to go home"


def _pretrained_demo() -> None:
    """The released text models at work on a held-out sentence: masked words filled in, a continuation sampled."""
    from . import get_pretrained_cfg, get_tokenizer
    from .models import GPT, Bert

    qa = _qa_releases()
    names = [n for n in list_pretrained() if get_pretrained_cfg(n).tokenizer and n not in qa]
    if not names:
        print("\nreleased text weights: none yet")
        return
    print(f"\nreleased text weights ({len(names)}), on a held-out sentence of the test split (their cards have the perplexities):")
    for name in names:
        model = create_model(name, pretrained=True).eval()
        tok = get_tokenizer(name)
        if isinstance(model, Bert) and model.cfg.head == "mlm":
            masked = _HELD_OUT.replace("his tea;", "his [MASK];").replace("had drank", "had [MASK]")
            ids = [tok.token_to_id("[CLS]")] + tok.encode(masked, add_special_tokens=False).ids + [tok.token_to_id("[SEP]")]
            x = torch.tensor([ids])
            with torch.no_grad():
                logits = model(x)[0]
            mask = tok.token_to_id("[MASK]")
            fills = [[tok.id_to_token(j) for j in logits[i].topk(3).indices.tolist()] for i, t in enumerate(ids) if t == mask]
            print(f"  {name}: {masked!r}\n    top-3 per [MASK] (true: 'tea', 'drank'): {fills}")
        elif isinstance(model, GPT):
            prompt = " ".join(_HELD_OUT.split()[:7])
            x = torch.tensor([tok.encode(prompt, add_special_tokens=False).ids])
            out = model.generate(x, 24, temperature=0.8, top_k=40, generator=torch.Generator().manual_seed(0))
            print(f"  {name}: {prompt!r} -> {tok.decode(out[0, x.shape[1]:].tolist())!r}")


def _qa_releases() -> list[str]:
    from . import get_pretrained_cfg

    return [n for n in list_pretrained() if (get_pretrained_cfg(n).model_args or {}).get("head") == "qa"]


def _qa_demo() -> None:
    """The released QA models on held-out questions of the committed qa-facts test slice, with the official
    SQuAD v2.0 scores over the whole slice (the cards' ``qa-facts:test-slice`` rows)."""
    import json
    import tempfile
    from pathlib import Path

    from . import get_tokenizer
    from .evals.qa import answer_and_score
    from .evals.squad import load_dataset
    from .release import QA_SLICE, REPO_ROOT

    names = _qa_releases()
    path = REPO_ROOT / QA_SLICE
    if not names or not path.is_file():
        return
    _, questions = load_dataset(path)
    shown = [q for q in questions if q.answers][:3]
    print(f"\nreleased QA weights ({len(names)}), on held-out qa-facts questions ({QA_SLICE}; templated facts: reading, "
          "not comprehension):")
    for name in names:
        model = create_model(name, pretrained=True).eval()
        with tempfile.TemporaryDirectory() as tmp:  # the whole slice answered once: its predictions and its scores
            sc = answer_and_score(model, path, get_tokenizer(name), tmp, progress=False)
            preds = json.loads((Path(tmp) / "predictions.json").read_text())
        print(f"  {name}:")
        for q in shown:
            print(f"    {q.question!r} -> {preds[q.qid]!r} (gold {q.answers[0]!r})")
        print(f"    whole slice ({sc['total']} questions, v2.0 script): EM {sc['exact']:.1f}, F1 {sc['f1']:.1f}; "
              f"at the best na threshold EM {sc['best_exact']:.1f}, F1 {sc['best_f1']:.1f}")


def _st_demo(n: int = 2) -> None:
    """The released speech-translation models on the first ``n`` held-out utterances of the committed st-en-de slice
    (synthesized English speech of LibreOffice help text): hypothesis beside the reference."""
    from . import get_pretrained_cfg, get_tokenizer
    from .data.mustc import read_split
    from .translation import translate
    from .release import REPO_ROOT, ST_SLICE

    names = [n_ for n_ in list_pretrained() if get_pretrained_cfg(n_).fbank is not None]
    root = REPO_ROOT / ST_SLICE
    if not names or not root.is_dir():
        return
    segs = read_split(root, "en-de", "tst-COMMON")[:n]
    print(f"\nreleased speech-translation weights ({len(names)}), on held-out utterances ({ST_SLICE}; espeak-ng speech, "
          "beam 5):")
    for name in names:
        hyps = translate(create_model(name, pretrained=True), segs, get_tokenizer(name), progress=False)
        print(f"  {name}:")
        for s, h in zip(segs, hyps):
            print(f"    heard {s.src!r}\n      -> {h!r}\n      reference {s.tgt!r}")


def _signal_demo() -> None:
    """"Will my 1000-layer config train?": the theory's answer for Xavier vs DSLM, Pre-LN and Post-LN."""
    from .diagnostics import predict

    print("\nsignal propagation at init, predicted (dslm_bert_1000L, seq 128): last-layer forward variance and")
    print("input/output gradient-variance ratio; `dslm-zoo signal NAME` measures it and draws the figure")
    rows = []
    for init, norm_first in (("xavier", True), ("dslm", True), ("xavier", False), ("dslm", False)):
        t = time.perf_counter()
        p = predict("dslm_bert_1000L", seq_len=128, init=init, norm_first=norm_first)
        rows.append([init, "Pre-LN" if norm_first else "Post-LN", f"{p.fwd_var[-1]:.3g}", f"{p.grad_ratio():.3g}", f"{time.perf_counter() - t:.2f}s"])
    print(_table(rows, ["init", "LN", "fwd var (last)", "grad ratio", "time"]))


def _train_demo(steps: int = 100) -> None:
    """A few seconds of the trainer: recipes/tiny_mlm.yaml (toy language, built in memory), shortened."""
    import shutil
    from pathlib import Path

    from .train import Trainer, load_recipe, read_metrics

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "tiny_mlm.yaml"
    if not recipe.is_file():  # an installed wheel carries no recipes/
        print("\ntraining: recipes/tiny_mlm.yaml not found (run the demo from a checkout)")
        return
    out = Path("out") / "demo_tiny_mlm"
    shutil.rmtree(out, ignore_errors=True)
    print(f"\ntraining: {steps} steps of recipes/tiny_mlm.yaml (`dslm-zoo train recipes/tiny_mlm.yaml --out DIR` runs all 600)")
    t = time.perf_counter()
    Trainer(load_recipe(recipe, [f"train.steps={steps}", "train.eval_every=50", "train.checkpoint_every=0"]), out).run()
    rows = read_metrics(out)
    train = [r for r in rows if "split" not in r]
    evals = [r for r in rows if r.get("split") == "validation"]
    print(f"masked-LM loss {train[0]['loss']:.3f} -> {train[-1]['loss']:.3f} (validation "
          + " -> ".join(f"{r['eval_loss']:.3f}" for r in evals) + f") in {time.perf_counter() - t:.1f} s; "
          f"curves in {out / 'loss.png'}, weights in {out / 'export'}")


if __name__ == "__main__":
    run_demo()
