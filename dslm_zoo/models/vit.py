"""Vision Transformer (Dosovitskiy et al. 2021) with DeepScaleLM init and residual scaling (Kedia et al. 2024).

The surface follows timm's VisionTransformer (forward_features, forward_head(pre_logits=), reset_classifier,
num_features, num_prefix_tokens, pretrained_cfg mean/std/input_size), and the entrypoints are registered into
timm's registry as well, so ``timm.create_model('dslm_vit_deep')`` works after ``import dslm_zoo``.
Patch-embedding init is derived in ``dslm_zoo.init.init_dslm`` (the authors' code has no ViT).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .._builder import build_model_with_cfg
from .._registry import PretrainedCfg, register_model
from ..init import StackPlan
from ..layers import Transformer, ViTEmbedding
from ._common import StackModel, TransformerConfig

__all__ = ["ViTConfig", "VisionTransformer"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ViTConfig(TransformerConfig):
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    class_token: bool = True
    global_pool: str = "token"  # 'token' | 'avg'
    # measured on normalised natural-image patches at init (dslm_zoo.diagnostics.measure_r_emb); data dependent
    dslm_r_emb: float = 0.2

    bounds: ClassVar[dict[str, tuple[Any, Any]]] = {
        "img_size": (1, None), "patch_size": (1, None), "in_chans": (1, None), "num_classes": (0, None),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', got {self.global_pool!r}")
        if self.global_pool == "token" and not self.class_token:
            raise ValueError("global_pool='token' needs class_token=True")


def timm_cfg(cfg: PretrainedCfg) -> dict[str, Any]:
    """Our pretrained cfg in timm's vocabulary (the fields timm's filters and data config read)."""
    d = {"input_size": cfg.input_size, "mean": cfg.mean, "std": cfg.std, "num_classes": cfg.num_classes,
         "classifier": cfg.classifier or "head", "first_conv": "embed.patch_embed.proj",
         "interpolation": cfg.interpolation, "crop_pct": cfg.crop_pct, "license": cfg.license, "paper_ids": ", ".join(cfg.paper_ids or ()),
         "hf_hub_id": cfg.hf_hub_id, "custom_load": True, "fixed_input_size": True}  # weights load through our entrypoint (sha256, layout)
    if cfg.label_names:
        d["label_names"] = list(cfg.label_names)
    if cfg.sha256 and not cfg.hf_hub_id:
        d["file"] = cfg.filename  # marks the tag as having weights for timm's list_models(pretrained=True)
    return {k: v for k, v in d.items() if v is not None}


class VisionTransformer(StackModel):
    """ViT classifier: patch embedding -> Transformer encoder -> pooled token -> linear head."""

    config_class = ViTConfig

    def __init__(self, cfg: ViTConfig, *, device=None, dtype=None):
        super().__init__()
        self.cfg = cfg
        fk = dict(device=device, dtype=dtype)
        self.embed = ViTEmbedding(cfg.img_size, cfg.patch_size, cfg.in_chans, cfg.embed_dim, cfg.class_token, cfg.drop_rate, **fk)
        self.num_prefix_tokens = self.embed.num_prefix_tokens
        self.in_chans = cfg.in_chans
        self.encoder = Transformer(cfg.depth, seq_len=cfg.dslm_seq_len or self.embed.num_tokens, **cfg.stack_kwargs(), **fk)
        self.num_features = self.embed_dim = self.head_hidden_size = cfg.embed_dim
        self.global_pool = cfg.global_pool
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head: nn.Module = nn.Linear(cfg.embed_dim, cfg.num_classes, **fk) if cfg.num_classes > 0 else nn.Identity()
        # timm's feature metadata: every block's output, at the patch stride
        self.feature_info = [dict(module=f"encoder.blocks.{i}", num_chs=cfg.embed_dim, reduction=cfg.patch_size)
                             for i in range(cfg.depth)]
        self._post_init(device)

    def stack_plans(self) -> list[StackPlan]:
        return [StackPlan(self.encoder, self.cfg.dslm_r_emb * (1.0 - self.cfg.drop_rate))]

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    @property
    def default_cfg(self) -> dict[str, Any]:
        """timm's view of the pretrained cfg (``first_conv``, ``classifier``, ``fixed_input_size``, ...), as timm's
        own models carry it; ``pretrained_cfg`` keeps the zoo's full record."""
        return timm_cfg(self.pretrained_cfg)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New zero-bias head of std 1/sqrt(d) (the DSLM head rule), optionally a new pooling."""
        if global_pool is not None:
            self.cfg = self.cfg.replace(global_pool=global_pool)
            self.global_pool = global_pool
        w = self.embed.pos_embed
        self.head = nn.Linear(self.embed_dim, num_classes, device=w.device, dtype=w.dtype) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.normal_(self.head.weight, std=self.embed_dim**-0.5)
            nn.init.zeros_(self.head.bias)
        self.head.train(self.training)  # a new module must not flip an eval model back to training mode
        self.cfg = self.cfg.replace(num_classes=num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) normalised images -> (B, prefix + patches, D) tokens after the final norm."""
        return self.encoder(self.embed(x))

    def residual_stream(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final tokens and the residual stream entering the encoder and after every block, each (B, N, D) (the
        zoo's per-layer tap, the same for every family)."""
        h = self.embed(x)
        out, inter = self.encoder.forward_intermediates(h)
        return out, [h] + inter

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Any:
        """timm's ``forward_intermediates``: the outputs of the blocks ``indices`` (last n if an int, all if
        None), optionally through the final norm, as (B, D, H, W) maps (``'NCHW'``) or (B, N, D) tokens
        (``'NLC'``) without the prefix tokens (with them as a second element if ``return_prefix_tokens``)."""
        from timm.models._features import feature_take_indices

        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take, max_index = feature_take_indices(self.encoder.depth, indices)
        h = self.embed(x)
        blocks = self.encoder.blocks[: max_index + 1] if stop_early else self.encoder.blocks
        grid = self.embed.patch_embed.grid_size
        inter: list[Any] = []
        for i, blk in enumerate(blocks):
            h = self.encoder._run(blk, h, None, None, None)
            if i in take:
                y = self.encoder.norm(h) if norm else h
                prefix, tokens = y[:, : self.num_prefix_tokens], y[:, self.num_prefix_tokens :]
                if output_fmt == "NCHW":
                    tokens = tokens.reshape(y.shape[0], grid, grid, -1).permute(0, 3, 1, 2).contiguous()
                inter.append((tokens, prefix) if return_prefix_tokens else tokens)
        if intermediates_only:
            return inter
        for blk in self.encoder.blocks[len(blocks):]:
            h = self.encoder._run(blk, h, None, None, None)
        return self.encoder.norm(h), inter

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """timm's: drop the blocks after the last wanted index (and the final norm and head if asked)."""
        from timm.models._features import feature_take_indices

        take, max_index = feature_take_indices(self.encoder.depth, indices)
        self.encoder.blocks = self.encoder.blocks[: max_index + 1]
        self.encoder.depth = max_index + 1
        if prune_norm:
            self.encoder.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0)
        return take

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0] if self.global_pool == "token" else x[:, self.num_prefix_tokens :].mean(1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.pool(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------------------------------------------------------
# Registered variants (also registered into timm's registry, see ``dslm_zoo/models/__init__.py``).

def _vit_cfg(img_size: int, num_classes: int = 1000) -> dict[str, Any]:
    # timm's ViT conventions: bicubic, crop_pct 0.9 at 224; small images are used whole (crop_pct 1)
    return dict(input_size=(3, img_size, img_size), mean=IMAGENET_MEAN, std=IMAGENET_STD, classifier="head",
                num_classes=num_classes, crop_pct=0.9 if img_size >= 224 else 1.0, interpolation="bicubic")


def _vit(variant: str, pretrained: bool, model_args: dict[str, Any], **kwargs: Any) -> nn.Module:
    features_only = kwargs.pop("features_only", False)
    out_indices = kwargs.pop("out_indices", 3)
    feature_cfg = dict(kwargs.pop("feature_cfg", None) or {})
    feature_cls = kwargs.pop("feature_cls", "getter")
    model = build_model_with_cfg(VisionTransformer, variant, pretrained, model_args, **kwargs)
    if features_only:  # timm.create_model(..., features_only=True): timm's getter wrapper over forward_intermediates
        from timm.models._features import FeatureGetterNet

        getter = FeatureGetterNet if feature_cls == "getter" else feature_cls
        if not (isinstance(getter, type) and issubclass(getter, FeatureGetterNet)):
            raise ValueError(f"{variant}: features_only supports feature_cls='getter' (or FeatureGetterNet), got {feature_cls!r}")
        net = getter(model, out_indices=out_indices, output_fmt=feature_cfg.get("output_fmt", "NCHW"),
                               norm=feature_cfg.get("norm", False), prune=feature_cfg.get("prune", True))
        net.pretrained_cfg, net.default_cfg = model.pretrained_cfg, model.default_cfg  # as timm's builder sets them
        return net
    return model


@register_model(default_cfg=_vit_cfg(32, 10))
def dslm_vit_tiny(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT, 32x32 images, patch 4, 4 layers x d=64 (2 heads), 10 classes; 0.21M parameters. CPU-sized."""
    return _vit("dslm_vit_tiny", pretrained, dict(img_size=32, patch_size=4, depth=4, embed_dim=64, num_heads=2, num_classes=10), **kwargs)


@register_model(default_cfg=_vit_cfg(32, 10))
def dslm_vit_deep_tiny(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT, 32x32 images, patch 4, 96 layers x d=64 (2 heads), 10 classes; 4.81M parameters. Deep, CPU-sized."""
    return _vit("dslm_vit_deep_tiny", pretrained, dict(img_size=32, patch_size=4, depth=96, embed_dim=64, num_heads=2, num_classes=10), **kwargs)


# Fashion-MNIST pair (issue 11): equal block parameters 12 n d^2 = 2.36M, deep-narrow vs shallow-wide; grey 28x28
# images padded to 32x32. Their mean/std are the data's, set by the training recipe's export.
_FM_ARGS = dict(img_size=32, patch_size=4, in_chans=1, num_classes=10)


@register_model(default_cfg=dict(input_size=(1, 32, 32), classifier="head", num_classes=10, crop_pct=1.0, interpolation="bicubic"))
def dslm_vit_fm_48L_64D(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT for Fashion-MNIST: 1x32x32, patch 4, 48 layers x d=64 (2 heads), 10 classes; 2.41M parameters. Deep-narrow."""
    return _vit("dslm_vit_fm_48L_64D", pretrained, dict(depth=48, embed_dim=64, num_heads=2, **_FM_ARGS), **kwargs)


@register_model(default_cfg=dict(input_size=(1, 32, 32), classifier="head", num_classes=10, crop_pct=1.0, interpolation="bicubic"))
def dslm_vit_fm_12L_128D(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT for Fashion-MNIST: 1x32x32, patch 4, 12 layers x d=128 (2 heads), 10 classes; 2.39M parameters. The
    shallow-wide control of dslm_vit_fm_48L_64D (equal block parameters)."""
    return _vit("dslm_vit_fm_12L_128D", pretrained, dict(depth=12, embed_dim=128, num_heads=2, **_FM_ARGS), **kwargs)


@register_model(default_cfg=_vit_cfg(224))
def dslm_vit_base(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT-B/16 shape: 224x224, patch 16, 12 layers x d=768 (12 heads), 1000 classes; 86.57M parameters."""
    return _vit("dslm_vit_base", pretrained, dict(depth=12, embed_dim=768, num_heads=12), **kwargs)


@register_model(default_cfg=_vit_cfg(224))
def dslm_vit_deep(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """Deep-narrow ViT at ViT-B/16's block budget: 224x224, patch 16, 192 layers x d=192 (3 heads); 85.79M parameters."""
    return _vit("dslm_vit_deep", pretrained, dict(depth=192, embed_dim=192, num_heads=3), **kwargs)


@register_model(default_cfg=_vit_cfg(224))
def dslm_vit_1000L(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT, 224x224, patch 16, 1000 layers x d=128 (2 heads), 1000 classes; 198.53M parameters."""
    return _vit("dslm_vit_1000L", pretrained, dict(depth=1000, embed_dim=128, num_heads=2), **kwargs)
