"""dslm_zoo: a timm-style zoo of DeepScaleLM transformers (Kedia et al., ICML 2024, arXiv:2403.09635).

    >>> import dslm_zoo
    >>> dslm_zoo.list_models("dslm_bert*")
    >>> model = dslm_zoo.create_model("dslm_bert_192L", device="meta")
"""
from ._builder import build_model_with_cfg, create_model, get_tokenizer, load_checkpoint, load_state_dict
from ._hub import ChecksumMismatchError, WeightsNotFoundError, push_to_hub, render_model_card, save_pretrained, sha256_file
from ._registry import (
    PretrainedCfg,
    get_pretrained_cfg,
    is_model,
    list_models,
    list_pretrained,
    model_entrypoint,
    register_model,
    register_pretrained,
)
from . import models  # noqa: E402  (registers the families)
from .init import SCHEMES, init_model

__version__ = "0.1.0"

__all__ = [
    "create_model", "get_tokenizer", "build_model_with_cfg", "load_checkpoint", "load_state_dict", "save_pretrained", "push_to_hub",
    "render_model_card", "sha256_file", "WeightsNotFoundError", "ChecksumMismatchError", "PretrainedCfg",
    "get_pretrained_cfg", "is_model", "list_models", "list_pretrained", "model_entrypoint", "register_model",
    "register_pretrained", "models", "SCHEMES", "init_model", "__version__",
]
