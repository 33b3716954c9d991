"""Building blocks shared by every dslm_zoo family."""
from .attention import Attention, CrossAttention, DecodeCache
from .embed import ConvSubsampler, PatchEmbed, SpeechEmbedding, TokenEmbedding, ViTEmbedding
from .heads import LMHead, MLMHead, QAHead, SequenceClassificationHead
from .mlp import Mlp
from .norm import NORMS, DyT, LayerNorm, make_norm
from .position import POS_EMBEDS, AlibiBias, RelativePositionBias, SinusoidalPosition
from .residual import Residual
from .rnn import LocalRNN
from .transformer import Block, Transformer, padding_bias

__all__ = [
    "Attention", "CrossAttention", "DecodeCache", "ConvSubsampler", "PatchEmbed", "TokenEmbedding", "ViTEmbedding", "SpeechEmbedding", "LMHead",
    "MLMHead", "QAHead", "SequenceClassificationHead", "Mlp", "LayerNorm", "POS_EMBEDS", "AlibiBias",
    "RelativePositionBias", "SinusoidalPosition", "Residual", "LocalRNN", "Block", "Transformer", "padding_bias",
]
