"""torch.hub entry points: one callable per registered dslm_zoo model, plus the zoo helpers.

    torch.hub.load("/path/to/dslm_zoo", "dslm_bert_192L", source="local", pretrained=False)
    torch.hub.load("/path/to/dslm_zoo", "dslm_bert_96L_64D", source="local", pretrained=True)  # released weights (hub_mirror/)
"""
dependencies = ["torch", "timm", "huggingface_hub", "safetensors", "torchaudio", "sacrebleu", "tokenizers"]

from dslm_zoo import create_model, list_models, list_pretrained  # noqa: E402
from dslm_zoo._registry import model_entrypoint as _entrypoint  # noqa: E402

for _name in list_models():
    globals()[_name] = _entrypoint(_name)
del _name
