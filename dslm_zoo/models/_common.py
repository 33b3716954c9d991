"""Config fields and model surface shared by every family (timm names: depth, embed_dim, num_heads, ...)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from .._config import ConfigBase
from ..layers import Transformer, ViTEmbedding
from ..layers.norm import NORMS
from ..layers.position import POS_EMBEDS
from ._base import ZooModel

__all__ = ["TransformerConfig", "StackModel"]

_ACTS = ("relu", "gelu")
_INITS = ("dslm", "xavier", "deepnorm", "megatron", "dslm_init_only", "dslm_scales_only")


@dataclass(frozen=True)
class TransformerConfig(ConfigBase):
    """Fields every family shares. ``norm_first`` = Pre-LN (PyTorch's name).

    ``norm`` ('layernorm' | 'dyt': Dynamic Tanh), ``peri_norm`` (Peri-LN: a norm on each branch's output too) and
    ``ln_scaling`` (LayerNorm Scaling: layer l's norm outputs times 1/sqrt(l)) are the other deep-stability methods
    the depth study compares DSLM with; the last two are Pre-LN variants. The signal theory models LayerNorm,
    with or without LayerNorm Scaling. ``local_rnn`` = M > 0 puts R-Transformer's local RNN over the last M
    positions before every layer's attention (a position variant: use it with ``pos_embed='none'``).

    ``dslm_r_emb`` is the token correlation of the summed embedding tables on the training data (Kedia et al.
    2024, Sec. 4 step 4; measure it with ``dslm_zoo.diagnostics.measure_r_emb``); ``dslm_seq_len`` is the length the
    finite-L rule assumes (default: the model's context length).
    """

    depth: int = 12
    embed_dim: int = 768
    num_heads: int = 12
    mlp_ratio: float = 4.0
    act: str = "relu"
    drop_rate: float = 0.1
    attn_drop_rate: float = 0.0
    norm_first: bool = True
    init: str = "dslm"
    dslm_k: float = 2.0
    dslm_r_emb: float = 0.2
    dslm_seq_len: int | None = None
    norm: str = "layernorm"
    peri_norm: bool = False
    ln_scaling: bool = False
    local_rnn: int = 0

    bounds: ClassVar[dict[str, tuple[Any, Any]]] = {
        "local_rnn": (0, None),
        "depth": (1, None), "embed_dim": (1, None), "num_heads": (1, None), "mlp_ratio": ((">", 0.0), None),
        "drop_rate": (0.0, None), "attn_drop_rate": (0.0, None), "dslm_k": ((">", 0.0), None),
        "dslm_r_emb": (0.0, 1.0), "dslm_seq_len": (1, None),
    }

    def __post_init__(self) -> None:
        super().__post_init__()  # types and bounds
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}")
        if self.act not in _ACTS:
            raise ValueError(f"act must be one of {_ACTS}, got {self.act!r}")
        if self.init not in _INITS:
            raise ValueError(f"init must be one of {_INITS}, got {self.init!r} ('skip' is for init_weights only)")
        if not (0.0 <= self.drop_rate < 1.0 and 0.0 <= self.attn_drop_rate < 1.0):
            raise ValueError("drop_rate and attn_drop_rate must lie in [0, 1)")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if not self.norm_first and (self.peri_norm or self.ln_scaling):
            raise ValueError(f"peri_norm={self.peri_norm} and ln_scaling={self.ln_scaling} are Pre-LN variants: they "
                             "need norm_first=True")
        pos = getattr(self, "pos_embed", None)
        if pos is not None and pos not in POS_EMBEDS:
            raise ValueError(f"pos_embed must be one of {POS_EMBEDS}, got {pos!r}")

    def stack_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``Transformer`` that come straight from the config."""
        return dict(
            dim=self.embed_dim,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            act=self.act,
            drop=self.drop_rate,
            attn_drop=self.attn_drop_rate,
            norm_first=self.norm_first,
            norm=self.norm,
            peri_norm=self.peri_norm,
            ln_scaling=self.ln_scaling,
            local_rnn=self.local_rnn,
        )


class StackModel(ZooModel):
    """timm's model surface over the ``Transformer`` stacks a family holds."""

    # the config fields holding each stack's depth, in ``stack_plans()`` order (the theory's config path reads them)
    stack_depth_fields: ClassVar[tuple[str, ...]] = ("depth",)

    def stacks(self) -> list[Transformer]:
        return [m for m in self.modules() if isinstance(m, Transformer)]

    @property
    def depth(self) -> int:
        return sum(s.depth for s in self.stacks())

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for s in self.stacks():
            s.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        """Names of embedding tables, class tokens, norms and biases (timm convention: a set of names)."""
        skip = {name for name, p in self.named_parameters() if p.ndim < 2}
        for mname, m in self.named_modules():
            prefix = f"{mname}." if mname else ""
            if isinstance(m, (nn.Embedding, nn.LayerNorm)):
                skip.update(prefix + n for n, _ in m.named_parameters(recurse=False))
            elif isinstance(m, ViTEmbedding):
                skip.update(prefix + n for n in ("cls_token", "pos_embed") if getattr(m, n) is not None)
        return skip

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise learning-rate decay (timm's ``group_matcher`` format)."""
        return dict(
            stem=r"^embed",
            blocks=r"^(?:encoder|decoder)\.blocks\.(\d+)" if coarse else [(r"^(?:encoder|decoder)\.blocks\.(\d+)", None), (r"^(?:encoder|decoder)\.norm", (99999,))],
        )

    def extra_repr(self) -> str:
        return f"init={self.cfg.init}, depth={self.depth}"

