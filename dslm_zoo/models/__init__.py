"""Model families. Importing this package registers every variant (and the ViTs into timm's registry)."""
from . import speech, text, vit
from ._base import ZooModel
from ._common import StackModel, TransformerConfig
from .speech import SpeechTranslationConfig, SpeechTranslationModel
from .text import GPT, Bert, BertConfig, GPTConfig
from .vit import VisionTransformer, ViTConfig


def _register_into_timm() -> None:
    """Make ``timm.create_model('dslm_vit_*')`` find our ViTs; timm's own registry warns on re-registration."""
    import timm.models

    from .._registry import list_models, model_entrypoint

    for name in list_models("dslm_vit*"):
        if not timm.models.is_model(name):
            timm.models.register_model(model_entrypoint(name))


_register_into_timm()

__all__ = ["ZooModel", "StackModel", "TransformerConfig", "Bert", "BertConfig", "GPT", "GPTConfig", "VisionTransformer", "ViTConfig",
           "SpeechTranslationModel", "SpeechTranslationConfig"]
