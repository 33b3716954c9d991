"""Model families. Importing this package registers every variant (and the ViTs into timm's registry)."""
import json
import sys
from pathlib import Path

from . import speech, text, vit
from ._base import ZooModel
from ._common import StackModel, TransformerConfig
from .speech import SpeechTranslationConfig, SpeechTranslationModel
from .text import GPT, Bert, BertConfig, GPTConfig
from .vit import VisionTransformer, ViTConfig, timm_cfg
from .._registry import PretrainedCfg, register_pretrained


def _register_into_timm() -> None:
    """Make ``timm.create_model('dslm_vit_*')`` find our ViTs, with their pretrained cfgs in timm's registry (so
    ``timm.models.get_pretrained_cfg``, ``list_models(pretrained=True)`` and ``resolve_data_config`` see them)."""
    import collections

    import timm.models
    from timm.models import PretrainedCfg as TimmCfg
    from timm.models._pretrained import DefaultCfg

    from .._registry import get_pretrained_cfg, list_models, list_pretrained, model_entrypoint

    for name in list_models("dslm_vit*"):
        if timm.models.is_model(name):
            continue
        fn = model_entrypoint(name)
        tags = [t.split(".", 1)[1] for t in list_pretrained(f"{name}.*")]
        cfgs = {t: TimmCfg(**timm_cfg(get_pretrained_cfg(f"{name}.{t}"))) for t in tags}
        if not cfgs:
            cfgs = {"": TimmCfg(**timm_cfg(get_pretrained_cfg(name)))}
        default_cfgs = vars(sys.modules[fn.__module__]).setdefault("default_cfgs", {})
        default_cfgs[name] = DefaultCfg(tags=collections.deque(cfgs), cfgs=cfgs)
        timm.models.register_model(fn)


RELEASES = Path(__file__).with_name("releases.json")


def _register_releases() -> None:
    """Register the zoo's released weights: ``releases.json`` holds one pretrained cfg per ``arch.tag``, written by
    ``dslm-zoo release`` from the run and the eval that produced it (sha256, model_args, metrics, commands)."""
    if not RELEASES.is_file():
        return
    for entry in json.loads(RELEASES.read_text(encoding="utf-8")):
        register_pretrained(PretrainedCfg.from_dict(entry))


_register_releases()
_register_into_timm()

__all__ = ["ZooModel", "StackModel", "TransformerConfig", "Bert", "BertConfig", "GPT", "GPTConfig", "VisionTransformer", "ViTConfig",
           "SpeechTranslationModel", "SpeechTranslationConfig"]
