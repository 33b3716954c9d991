"""Text families: BERT-style encoder (masked LM, QA span, sequence classification) and GPT-style causal decoder.

Kedia et al. 2024 (arXiv:2403.09635) train both with DeepScaleLM (Sec. 4) and report encoder-only (BERT) and
decoder-only (GPT) results; the authors' measured BERT embedding correlation on Wikipedia is r_emb = 0.221.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .._builder import build_model_with_cfg
from .._registry import register_model
from ..init import StackPlan
from ..layers import LMHead, MLMHead, QAHead, SequenceClassificationHead, TokenEmbedding, Transformer
from ._common import StackModel, TransformerConfig

__all__ = ["BertConfig", "GPTConfig", "Bert", "GPT"]

_BERT_HEADS = ("mlm", "qa", "cls", "none")
_DEFAULT_NUM_CLASSES = 2


@dataclass(frozen=True)
class BertConfig(TransformerConfig):
    vocab_size: int = 30522
    max_seq_len: int = 512
    type_vocab_size: int = 2
    pos_embed: str = "learned"
    head: str = "mlm"  # 'mlm' | 'qa' | 'cls' | 'none'
    num_classes: int = _DEFAULT_NUM_CLASSES  # head='cls' only
    dslm_r_emb: float = 0.221  # authors' measurement, BERT tokens on Wikipedia

    bounds: ClassVar[dict[str, tuple[Any, Any]]] = {
        "vocab_size": (1, None), "max_seq_len": (1, None), "type_vocab_size": (0, None), "num_classes": (0, None),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.head not in _BERT_HEADS:
            raise ValueError(f"head must be one of {_BERT_HEADS}, got {self.head!r}")
        if self.head != "cls" and self.num_classes != _DEFAULT_NUM_CLASSES:
            raise ValueError(f"num_classes={self.num_classes} needs the classification head (head='cls'); this config "
                             f"has head={self.head!r}")


@dataclass(frozen=True)
class GPTConfig(TransformerConfig):
    vocab_size: int = 50304
    max_seq_len: int = 1024
    pos_embed: str = "learned"
    tie_embeddings: bool = True
    # word + position tables: r_emb = sum_v p_v^2 / 2 ~ 0.01 for English BPE; measure for your data
    dslm_r_emb: float = 0.01

    bounds: ClassVar[dict[str, tuple[Any, Any]]] = {"vocab_size": (1, None), "max_seq_len": (1, None)}


class _TextModel(StackModel):
    """Token embedding -> one Transformer stack -> head."""

    def _build_trunk(self, cfg: TransformerConfig, causal: bool, type_vocab_size: int, fk: dict[str, Any]) -> None:
        self.embed = TokenEmbedding(
            cfg.vocab_size, cfg.embed_dim, cfg.max_seq_len, cfg.pos_embed, type_vocab_size, cfg.drop_rate, **fk
        )
        pos_bias = cfg.pos_embed if cfg.pos_embed in ("alibi", "relative") else None
        self.encoder = Transformer(
            cfg.depth, causal=causal, pos_bias=pos_bias, seq_len=cfg.dslm_seq_len or cfg.max_seq_len,
            **cfg.stack_kwargs(), **fk,
        )

    def stack_plans(self) -> list[StackPlan]:
        role = "decoder" if self.encoder.causal else "encoder"
        return [StackPlan(self.encoder, self.cfg.dslm_r_emb * (1.0 - self.cfg.drop_rate), role=role)]

    def forward_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, N) token ids -> (B, N, D) final hidden states. ``attention_mask``: 1 = real token, 0 = padding."""
        return self.encoder(self.embed(input_ids, token_type_ids), attention_mask)

    def residual_stream(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final hidden states and the residual stream entering the stack and after every block."""
        x = self.embed(input_ids, token_type_ids)
        out, inter = self.encoder.forward_intermediates(x, attention_mask)
        return out, [x] + inter

    forward_intermediates = residual_stream  # text models have no timm convention to follow

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None) -> Any:
        return self.forward_head(self.forward_features(input_ids, attention_mask, token_type_ids))


class Bert(_TextModel):
    """BERT-style bidirectional encoder with a masked-LM, QA-span or sequence-classification head.

    ``forward`` returns MLM logits (B, N, V), QA (start, end) logits, or class logits (B, C) by ``cfg.head``.
    """

    config_class = BertConfig

    def __init__(self, cfg: BertConfig, *, device=None, dtype=None):
        super().__init__()
        self.cfg = cfg
        fk = dict(device=device, dtype=dtype)
        self._build_trunk(cfg, causal=False, type_vocab_size=cfg.type_vocab_size, fk=fk)
        self.head: nn.Module
        if cfg.head == "mlm":
            self.head = MLMHead(cfg.embed_dim, cfg.vocab_size, self.embed.word, act=cfg.act, **fk)
        elif cfg.head == "qa":
            self.head = QAHead(cfg.embed_dim, **fk)
        elif cfg.head == "cls":
            self.head = SequenceClassificationHead(cfg.embed_dim, cfg.num_classes, cfg.drop_rate, **fk)
        else:
            self.head = nn.Identity()
        self._post_init(device)

    def forward_head(self, x: torch.Tensor) -> Any:
        return self.head(x)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        masked_positions: torch.Tensor | None = None,
    ) -> Any:
        """Head output for ``input_ids`` (B, N). With the MLM head, ``masked_positions`` (B, N) bool returns the
        logits of those positions only, (K, V) in row-major order: the vocabulary projection is then paid for
        the masked tokens alone (BERT's ``gather_indexes`` in run_pretraining.py does the same)."""
        x = self.forward_features(input_ids, attention_mask, token_type_ids)
        if masked_positions is not None:
            if self.cfg.head != "mlm":
                raise ValueError(f"masked_positions needs head='mlm'; this model has head={self.cfg.head!r}")
            if masked_positions.shape != input_ids.shape or masked_positions.dtype != torch.bool:
                raise ValueError(f"masked_positions must be a bool tensor of shape {tuple(input_ids.shape)}, got "
                                 f"{masked_positions.dtype} {tuple(masked_positions.shape)}")
            x = x[masked_positions]
        return self.forward_head(x)

    @property
    def num_classes(self) -> int | None:
        return self.cfg.num_classes if self.cfg.head == "cls" else None

    def reset_classifier(self, num_classes: int) -> None:
        if self.cfg.head != "cls":
            raise ValueError(f"reset_classifier needs head='cls'; this model has head={self.cfg.head!r}")
        w = self.head.pooler.weight
        self.head.fc = nn.Linear(self.cfg.embed_dim, num_classes, device=w.device, dtype=w.dtype) if num_classes else nn.Identity()
        if num_classes:
            nn.init.normal_(self.head.fc.weight, std=self.cfg.embed_dim**-0.5)
            nn.init.zeros_(self.head.fc.bias)
        self.head.fc.train(self.training)  # a new module follows the model's mode
        self.cfg = self.cfg.replace(num_classes=num_classes)


class GPT(_TextModel):
    """GPT-style causal decoder with a (by default tied) LM head; ``forward`` returns logits (B, N, V)."""

    config_class = GPTConfig

    def __init__(self, cfg: GPTConfig, *, device=None, dtype=None):
        super().__init__()
        self.cfg = cfg
        fk = dict(device=device, dtype=dtype)
        self._build_trunk(cfg, causal=True, type_vocab_size=0, fk=fk)
        tied = self.embed.word if cfg.tie_embeddings else None
        self.head = LMHead(cfg.embed_dim, cfg.vocab_size, tied, bias=False, **fk)
        self._post_init(device)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue ``input_ids`` (B, N) by ``max_new_tokens`` tokens, sampling from the softmax of the logits /
        ``temperature`` restricted to the ``top_k`` most likely (``temperature=0``: greedy). The context is cut to
        the last ``max_seq_len`` tokens (learned positions end there). Returns (B, N + max_new_tokens)."""
        if input_ids.dim() != 2 or input_ids.shape[1] < 1:
            raise ValueError(f"input_ids must be (batch, tokens) with at least one token, got {tuple(input_ids.shape)}")
        if max_new_tokens < 0 or temperature < 0 or (top_k is not None and top_k < 1):
            raise ValueError(f"need max_new_tokens >= 0, temperature >= 0, top_k >= 1; got {max_new_tokens}, "
                             f"{temperature}, {top_k}")
        was = self.training
        self.eval()
        ids = input_ids
        try:
            for _ in range(max_new_tokens):
                logits = self(ids[:, -self.cfg.max_seq_len :])[:, -1].float()
                if temperature == 0:
                    nxt = logits.argmax(-1, keepdim=True)
                else:
                    logits = logits / temperature
                    if top_k is not None:
                        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
                        logits = logits.masked_fill(logits < kth, float("-inf"))
                    nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
                ids = torch.cat([ids, nxt.to(ids.dtype)], dim=1)
        finally:
            self.train(was)
        return ids


# ---------------------------------------------------------------------------------------------------------------
# Registered variants. The 12L-1024D / 48L-512D / 192L-256D / 768L-128D ladder keeps 12 n d^2 (the block
# parameters) fixed at 151M, in the spirit of the paper's iso-parameter comparisons.

_BERT_CFG = dict(tokenizer="bert-base-uncased", classifier="head")
_GPT_CFG = dict(tokenizer="gpt2")


def _bert(variant: str, pretrained: bool, model_args: dict[str, Any], **kwargs: Any) -> Bert:
    if "num_classes" in kwargs and "head" not in kwargs:
        kwargs["head"] = "cls"  # timm's meaning: num_classes asks for a classifier
    return build_model_with_cfg(Bert, variant, pretrained, model_args, **kwargs)


def _gpt(variant: str, pretrained: bool, model_args: dict[str, Any], **kwargs: Any) -> GPT:
    return build_model_with_cfg(GPT, variant, pretrained, model_args, **kwargs)


@register_model(default_cfg=_BERT_CFG)
def dslm_bert_tiny(pretrained: bool = False, **kwargs: Any) -> Bert:
    """BERT encoder, 4 layers x d=64 (2 heads), 512-token context, MLM head; 2.22M parameters. CPU-sized."""
    return _bert("dslm_bert_tiny", pretrained, dict(depth=4, embed_dim=64, num_heads=2), **kwargs)


@register_model(default_cfg=_BERT_CFG)
def dslm_bert_96L_64D(pretrained: bool = False, **kwargs: Any) -> Bert:
    """BERT encoder, 96 layers x d=64 (2 heads), MLM head; 6.82M parameters. Deep but CPU-trainable."""
    return _bert("dslm_bert_96L_64D", pretrained, dict(depth=96, embed_dim=64, num_heads=2), **kwargs)


@register_model(default_cfg=_BERT_CFG)
def dslm_bert_6L_256D(pretrained: bool = False, **kwargs: Any) -> Bert:
    """BERT encoder, 6 layers x d=256 (4 heads), MLM head; 12.78M parameters. The shallow-wide control of
    dslm_bert_96L_64D (equal block parameters 12 n d^2 = 4.72M)."""
    return _bert("dslm_bert_6L_256D", pretrained, dict(depth=6, embed_dim=256, num_heads=4), **kwargs)


@register_model(default_cfg=_BERT_CFG)
def dslm_bert_12L(pretrained: bool = False, **kwargs: Any) -> Bert:
    """BERT encoder, 12 layers x d=1024 (16 heads), MLM head; 184.02M parameters (iso-parameter ladder)."""
    return _bert("dslm_bert_12L", pretrained, dict(depth=12, embed_dim=1024, num_heads=16), **kwargs)


@register_model(default_cfg=_BERT_CFG)
def dslm_bert_48L(pretrained: bool = False, **kwargs: Any) -> Bert:
    """BERT encoder, 48 layers x d=512 (8 heads), MLM head; 167.50M parameters (iso-parameter ladder)."""
    return _bert("dslm_bert_48L", pretrained, dict(depth=48, embed_dim=512, num_heads=8), **kwargs)


@register_model(default_cfg=_BERT_CFG)
def dslm_bert_192L(pretrained: bool = False, **kwargs: Any) -> Bert:
    """BERT encoder, 192 layers x d=256 (4 heads), MLM head; 159.68M parameters (iso-parameter ladder)."""
    return _bert("dslm_bert_192L", pretrained, dict(depth=192, embed_dim=256, num_heads=4), **kwargs)


@register_model(default_cfg=_BERT_CFG)
def dslm_bert_768L(pretrained: bool = False, **kwargs: Any) -> Bert:
    """BERT encoder, 768 layers x d=128 (2 heads), MLM head; 156.29M parameters (iso-parameter ladder)."""
    return _bert("dslm_bert_768L", pretrained, dict(depth=768, embed_dim=128, num_heads=2), **kwargs)


@register_model(default_cfg=_BERT_CFG)
def dslm_bert_1000L(pretrained: bool = False, **kwargs: Any) -> Bert:
    """BERT encoder, 1000 layers x d=128 (2 heads), MLM head; 202.29M parameters."""
    return _bert("dslm_bert_1000L", pretrained, dict(depth=1000, embed_dim=128, num_heads=2), **kwargs)


@register_model(default_cfg=_GPT_CFG)
def dslm_gpt_tiny(pretrained: bool = False, **kwargs: Any) -> GPT:
    """GPT decoder, 4 layers x d=64 (2 heads), 1024-token context, tied LM head; 3.49M parameters. CPU-sized."""
    return _gpt("dslm_gpt_tiny", pretrained, dict(depth=4, embed_dim=64, num_heads=2), **kwargs)


@register_model(default_cfg=_GPT_CFG)
def dslm_gpt_96L_64D(pretrained: bool = False, **kwargs: Any) -> GPT:
    """GPT decoder, 96 layers x d=64 (2 heads), tied LM head; 8.08M parameters. Deep but CPU-trainable."""
    return _gpt("dslm_gpt_96L_64D", pretrained, dict(depth=96, embed_dim=64, num_heads=2), **kwargs)


@register_model(default_cfg=_GPT_CFG)
def dslm_gpt_6L_256D(pretrained: bool = False, **kwargs: Any) -> GPT:
    """GPT decoder, 6 layers x d=256 (4 heads), tied LM head; 17.88M parameters. The shallow-wide control of
    dslm_gpt_96L_64D (equal block parameters 12 n d^2 = 4.72M)."""
    return _gpt("dslm_gpt_6L_256D", pretrained, dict(depth=6, embed_dim=256, num_heads=4), **kwargs)


@register_model(default_cfg=_GPT_CFG)
def dslm_gpt_12L(pretrained: bool = False, **kwargs: Any) -> GPT:
    """GPT decoder, 12 layers x d=1024 (16 heads), tied LM head; 203.72M parameters (iso-parameter ladder)."""
    return _gpt("dslm_gpt_12L", pretrained, dict(depth=12, embed_dim=1024, num_heads=16), **kwargs)


@register_model(default_cfg=_GPT_CFG)
def dslm_gpt_48L(pretrained: bool = False, **kwargs: Any) -> GPT:
    """GPT decoder, 48 layers x d=512 (8 heads), tied LM head; 177.60M parameters (iso-parameter ladder)."""
    return _gpt("dslm_gpt_48L", pretrained, dict(depth=48, embed_dim=512, num_heads=8), **kwargs)


@register_model(default_cfg=_GPT_CFG)
def dslm_gpt_192L(pretrained: bool = False, **kwargs: Any) -> GPT:
    """GPT decoder, 192 layers x d=256 (4 heads), tied LM head; 164.77M parameters (iso-parameter ladder)."""
    return _gpt("dslm_gpt_192L", pretrained, dict(depth=192, embed_dim=256, num_heads=4), **kwargs)


@register_model(default_cfg=_GPT_CFG)
def dslm_gpt_768L(pretrained: bool = False, **kwargs: Any) -> GPT:
    """GPT decoder, 768 layers x d=128 (2 heads), tied LM head; 158.84M parameters (iso-parameter ladder)."""
    return _gpt("dslm_gpt_768L", pretrained, dict(depth=768, embed_dim=128, num_heads=2), **kwargs)


@register_model(default_cfg=_GPT_CFG)
def dslm_gpt_1000L(pretrained: bool = False, **kwargs: Any) -> GPT:
    """GPT decoder, 1000 layers x d=128 (2 heads), tied LM head; 204.84M parameters."""
    return _gpt("dslm_gpt_1000L", pretrained, dict(depth=1000, embed_dim=128, num_heads=2), **kwargs)
