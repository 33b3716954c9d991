"""Training-step throughput of dslm_zoo models against what a user would pick instead, at equal shape, in one
process: dslm ViT vs timm's ``VisionTransformer``; dslm text encoder vs Hugging Face ``BertForMaskedLM`` with SDPA;
and the cost of DSLM itself (the same model with and without its residual scales lambda, beta).

    pip install -e '.[bench]'      # transformers, the dev-only peer
    python benchmarks/train_step.py [--shapes 12x192 96x64] [--batch 32] [--seq 128] [--img 32] [--steps 10]

A step is forward, backward and an AdamW step, in fp32 on the CPU (``--dtype bf16``: autocast). Each row is the
median over ``--steps`` timed steps after ``--warmup`` untimed ones, the peers interleaved round by round so that
machine load hits them alike. Prints a markdown table: samples/s of each model and the ratio ours / peer (goal:
>= 1.0). Peers get the same width, depth, heads, MLP ratio, activation, dropout 0 and Pre-LN (ViT) / Post-LN (BERT,
as Hugging Face builds it; our text model is run Post-LN too for the comparison).
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from typing import Callable

import torch
from torch import nn


def _step_fn(model: nn.Module, batch: Callable[[], tuple], loss_of: Callable[[nn.Module, tuple], torch.Tensor],
             dtype: str) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    data = batch()

    def step() -> None:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
        with ctx:
            loss = loss_of(model, data)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _race(steps: dict[str, Callable[[], None]], n: int, warmup: int) -> dict[str, float]:
    """Median seconds per step of each contender, interleaved step by step."""
    for _ in range(warmup):
        for fn in steps.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(n):
        for k, fn in steps.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def vit_pair(depth: int, dim: int, heads: int, img: int, patch: int, batch: int) -> tuple[dict, Callable]:
    import timm
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    import dslm_zoo

    kw = dict(depth=depth, embed_dim=dim, num_heads=heads, mlp_ratio=4.0)
    ours = dslm_zoo.create_model("dslm_vit_tiny", img_size=img, patch_size=patch, num_classes=10, drop_rate=0.0, act="gelu", **kw)
    nolam = dslm_zoo.create_model("dslm_vit_tiny", img_size=img, patch_size=patch, num_classes=10, drop_rate=0.0, act="gelu", **kw)
    for r in (r for s in nolam.stacks() for r in s.residuals()):
        r.set_scales(1.0, 1.0)  # the same model without DSLM's residual scales: what DSLM costs
    peer = TimmViT(img_size=img, patch_size=patch, num_classes=10, class_token=True, global_pool="token", **kw)
    assert timm is not None
    x = lambda: (torch.randn(batch, 3, img, img), torch.randint(0, 10, (batch,)))  # noqa: E731

    def loss(m: nn.Module, b: tuple) -> torch.Tensor:
        return nn.functional.cross_entropy(m(b[0]), b[1])

    return {"dslm": ours, "dslm w/o lambda,beta": nolam, "timm": peer}, (x, loss)


def bert_pair(depth: int, dim: int, heads: int, seq: int, batch: int, vocab: int = 8192) -> tuple[dict, Callable]:
    from transformers import BertConfig, BertForMaskedLM

    import dslm_zoo

    kw = dict(depth=depth, embed_dim=dim, num_heads=heads, mlp_ratio=4.0, act="gelu", drop_rate=0.0, norm_first=False,
              vocab_size=vocab, max_seq_len=seq)
    ours = dslm_zoo.create_model("dslm_bert_tiny", **kw)
    nolam = dslm_zoo.create_model("dslm_bert_tiny", **kw)
    for r in (r for s in nolam.stacks() for r in s.residuals()):
        r.set_scales(1.0, 1.0)
    hf_cfg = BertConfig(vocab_size=vocab, hidden_size=dim, num_hidden_layers=depth, num_attention_heads=heads,
                        intermediate_size=4 * dim, hidden_act="gelu", hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, max_position_embeddings=seq, attn_implementation="sdpa")
    peer = BertForMaskedLM(hf_cfg)

    def data() -> tuple:
        ids = torch.randint(5, vocab, (batch, seq))
        labels = torch.full_like(ids, -100)
        chosen = torch.rand(batch, seq) < 0.15
        labels[chosen] = ids[chosen]
        return ids, labels

    def loss(m: nn.Module, b: tuple) -> torch.Tensor:
        ids, labels = b
        if isinstance(m, BertForMaskedLM):
            return m(input_ids=ids, labels=labels).loss
        logits = m(ids)
        return nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())

    return {"dslm": ours, "dslm w/o lambda,beta": nolam, "HF BertForMaskedLM (sdpa)": peer}, (data, loss)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=["12x192", "96x64"], help="DEPTHxWIDTH (heads = width / 64, >= 1)")
    ap.add_argument("--families", nargs="+", default=["vit", "bert"], choices=["vit", "bert"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128, help="text tokens per sample")
    ap.add_argument("--img", type=int, default=32, help="image side (patch 4)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, {args.dtype}, median of "
          f"{args.steps} steps\n")
    print("| family | shape | model | samples/s | ours / this |")
    print("|---|---|---|---:|---:|")
    for fam in args.families:
        for shape in args.shapes:
            depth, dim = (int(x) for x in shape.lower().split("x"))
            heads = max(dim // 64, 1)
            torch.manual_seed(0)
            models, (data, loss) = (vit_pair(depth, dim, heads, args.img, 4, args.batch) if fam == "vit"
                                    else bert_pair(depth, dim, heads, args.seq, args.batch))
            steps = {k: _step_fn(m, data, loss, args.dtype) for k, m in models.items()}
            sec = _race(steps, args.steps, args.warmup)
            for k, s in sec.items():
                print(f"| {fam} | {depth}L-{dim}D | {k} | {args.batch / s:.1f} | {s / sec['dslm']:.3f} |")


if __name__ == "__main__":
    main()
