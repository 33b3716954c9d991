"""Speech translation: a DeepScaleLM encoder-decoder over log-mel filterbank features.

Kedia et al. 2024 (arXiv:2403.09635) report deep-and-narrow DSLM encoder-decoders beating shallow ones on speech
translation. The layout here is fairseq's S2T Transformer (Wang et al. 2020, arXiv:2010.05171): 80-dim Kaldi fbank
with per-utterance CMVN -> two stride-2 1-D convolutions (4x subsampling) -> + sinusoidal positions -> encoder;
target tokens (word + position tables) -> causal decoder with cross-attention -> LM head tied to the target word
table. The DSLM pieces the authors' code lacks are derived in ``dslm_zoo.init`` / ``dslm_zoo.theory.recipe``:
cross-attention uses the encoder output's correlation, and a decoder layer counts 3 sub-layers.

Embedding correlations (Sec. 4 steps 2 and 4; measure with ``SpeechTranslationModel.measure_r_emb``):

- Source. After per-utterance CMVN every mel bin of an utterance has exactly zero mean over its T frames, so the
  mean off-diagonal entry of the frames' token Gram matrix is exactly -1/(T-1) times the diagonal: the fbank
  frames *are* uncorrelated in the theory's sense. The encoder does not see the fbank, though: conv1 -> ReLU ->
  conv2 gives every token the ReLU's positive mean, which alone makes a correlation of 1/pi = 0.32 (the ReLU
  correlation map at 0; measured 0.33-0.36 after conv2, adjacent frames adding a little), and the sinusoidal
  position table (half of the DSLM embedding variance) is itself strongly correlated across positions (0.57 over
  125 positions, 0.49 over 250, 0.34 over 1024, nearly independent of d). Measured at DSLM init without dropout on
  ``synthetic_utterance`` speech, 10 seeds, d = 64 / 128 / 256: r_emb = 0.48 (3 s, 75 encoder tokens),
  0.45 (5 s, 125 tokens), 0.42-0.43 (10 s, 250 tokens), seed spread +-0.02-0.03. Default: 0.45.
- Target. Word + learned position tables, each of variance (1-p)/2: r_emb = sum_v p_v^2 / 2 (the word collision
  probability, halved; a learned position table adds nothing). Zipf(1)-distributed ids measure 0.015 (1k vocab)
  and 0.011 (8k); the default is 0.01, as for the GPT family. With ``pos_embed='sinusoidal'`` the table's own
  correlation (0.70 over 32 positions, 0.56 over 125) adds about half of itself: pass ``dslm_r_emb_target`` then.

Length used by the finite-L rule (dslm.md Sec. 4 caution). The target correlation is tiny, so the causal decoder's
self-attention gain depends on the number of tokens attended over: a rule computed for L = max_target_positions
(1024) over-amplifies short sequences. At init ('dslm', Pre-LN, encoder 48 + decoder 24 layers x d=64, 8 seeds,
32-token targets) the seed-averaged decoder stream variance peaks at 1.15 with L = 1024 (1.28 for 12-token
targets), but stays in 0.95-1.04 with L = 32, the default ``dslm_target_seq_len`` (0.90-1.02 when the
targets are 100 tokens long). The encoder (r ~ 0.4-0.7) is insensitive to its L.

Decoding: ``greedy_decode`` and ``beam_search`` run the encoder once and re-run the decoder on the whole prefix at
every step (no KV cache), batched over utterances and beams. Hypotheses include the EOS token when they have one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F

from .._builder import build_model_with_cfg
from .._registry import PretrainedCfg, register_model
from ..init import StackPlan
from ..layers import DecodeCache, LMHead, SpeechEmbedding, TokenEmbedding, Transformer
from ..layers.embed import length_mask
from ._common import StackModel, TransformerConfig

__all__ = [
    "SpeechTranslationConfig",
    "SpeechTranslationModel",
    "Hypothesis",
    "compute_fbank",
    "collate_fbank",
    "collate_targets",
    "synthetic_utterance",
    "token_correlation",
]


@dataclass(frozen=True)
class SpeechTranslationConfig(TransformerConfig):
    """Encoder-decoder speech translation config. ``depth`` is the encoder's, ``decoder_depth`` the decoder's.

    Lengths: ``max_source_positions`` counts encoder tokens *after* the 4x conv subsampling (1500 = 6000 fbank
    frames = 60 s at a 10 ms shift, fairseq's default); ``max_target_positions`` counts decoder input tokens
    (BOS + prefix). ``dslm_seq_len`` / ``dslm_target_seq_len`` are the lengths the DSLM finite-L rule assumes for
    the encoder (and the memory of cross-attention) and for the decoder; they default to typical utterance
    lengths (125 encoder tokens = 5 s; 32 target tokens), not the maxima, because the attention gain at small
    correlation depends on the length actually attended over.
    """

    depth: int = 12
    decoder_depth: int = 6
    embed_dim: int = 256
    num_heads: int = 4
    # front end
    n_mels: int = 80
    conv_channels: int = 1024
    sample_rate: int = 16000
    frame_length: float = 25.0  # ms
    frame_shift: float = 10.0  # ms
    max_source_positions: int = 1500
    # target side
    vocab_size: int = 8000
    max_target_positions: int = 1024
    pos_embed: str = "learned"
    tie_embeddings: bool = True
    bos_id: int = 0
    pad_id: int = 1
    eos_id: int = 2
    # DSLM
    dslm_r_emb: float = 0.45  # source; measured, see the module docstring
    dslm_r_emb_target: float = 0.01  # word + learned position tables: sum_v p_v^2 / 2
    dslm_seq_len: int | None = 125
    dslm_target_seq_len: int | None = 32

    bounds: ClassVar[dict[str, tuple[Any, Any]]] = {
        "decoder_depth": (1, None), "n_mels": (1, None), "conv_channels": (1, None), "max_source_positions": (1, None),
        "vocab_size": (1, None), "max_target_positions": (2, None), "dslm_r_emb_target": (0.0, 1.0),
        "dslm_target_seq_len": (1, None), "sample_rate": (1, None), "frame_length": ((">", 0.0), None),
        "frame_shift": ((">", 0.0), None),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.decoder_depth < 1:
            raise ValueError(f"decoder_depth must be >= 1, got {self.decoder_depth}")
        if min(self.n_mels, self.conv_channels, self.max_source_positions, self.vocab_size) < 1:
            raise ValueError("n_mels, conv_channels, max_source_positions and vocab_size must be positive")
        if self.max_target_positions < 2:
            raise ValueError(f"max_target_positions must be >= 2, got {self.max_target_positions}")
        for name in ("bos_id", "pad_id", "eos_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ValueError(f"{name}={getattr(self, name)} lies outside the vocabulary [0, {self.vocab_size})")
        if self.pad_id in (self.bos_id, self.eos_id):
            raise ValueError("pad_id must differ from bos_id and eos_id")
        if not 0.0 <= self.dslm_r_emb_target <= 1.0:
            raise ValueError(f"dslm_r_emb_target must lie in [0, 1], got {self.dslm_r_emb_target}")
        for name in ("dslm_seq_len", "dslm_target_seq_len"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be positive or None, got {v}")
        if self.sample_rate < 1 or self.frame_length <= 0 or self.frame_shift <= 0:
            raise ValueError("sample_rate, frame_length and frame_shift must be positive")

    @property
    def num_mel_bins(self) -> int:
        return self.n_mels

    def fbank_options(self) -> dict[str, Any]:
        """The front end's settings, as stored in ``pretrained_cfg.fbank`` (plus the sample rate)."""
        return dict(num_mel_bins=self.n_mels, frame_length=self.frame_length, frame_shift=self.frame_shift, dither=0.0, cmvn="utterance")


# ---------------------------------------------------------------------------------------------------------------
# Front end


def _fbank_settings(cfg: Any) -> dict[str, Any]:
    out: dict[str, Any] = dict(sample_rate=16000, num_mel_bins=80, frame_length=25.0, frame_shift=10.0, dither=0.0, cmvn="utterance")
    if isinstance(cfg, SpeechTranslationConfig):
        out.update(cfg.fbank_options(), sample_rate=cfg.sample_rate)
    elif isinstance(cfg, PretrainedCfg):
        out.update(cfg.fbank or {})
        if cfg.sample_rate is not None:
            out["sample_rate"] = cfg.sample_rate
    elif isinstance(cfg, Mapping):
        fb = cfg.get("fbank")
        out.update({k: v for k, v in cfg.items() if k in out})
        if isinstance(fb, Mapping):  # a pretrained cfg as a dict: {sample_rate, fbank: {...}}
            out.update({k: v for k, v in fb.items() if k in out})
    elif cfg is not None:
        raise TypeError(f"cfg must be a SpeechTranslationConfig, a PretrainedCfg or a mapping, got {type(cfg).__name__}")
    if out["cmvn"] not in ("utterance", "none", None):
        raise ValueError(f"cmvn must be 'utterance' or 'none', got {out['cmvn']!r}")
    return out


def compute_fbank(waveform: torch.Tensor, sample_rate: int, cfg: Any = None) -> torch.Tensor:
    """Waveform -> (T, n_mels) log-mel filterbank with per-utterance CMVN (fairseq S2T's front end).

    ``waveform``: (N,) or (C, N) float in [-1, 1] (channels are averaged), at ``sample_rate`` (resampled to the
    config's rate when different). ``cfg``: a ``SpeechTranslationConfig``, a model's ``pretrained_cfg`` (or its
    dict), or a plain ``{num_mel_bins, frame_length, frame_shift, sample_rate, cmvn}`` mapping; default 80 bins,
    25 ms / 10 ms at 16 kHz, utterance CMVN. T = 1 + (N - window) // shift frames (Kaldi's snip_edges).
    Uses ``torchaudio.compliance.kaldi.fbank`` on the waveform scaled to the 16-bit range (as fairseq does; the
    scale only shifts each log-mel bin by a constant, which CMVN removes), no dither. CMVN: every mel bin gets
    zero mean and unit variance over the utterance's frames. Read audio with ``soundfile`` (``torchaudio.load``
    needs torchcodec + FFmpeg since torchaudio 2.9).
    """
    import torchaudio

    s = _fbank_settings(cfg)
    w = torch.as_tensor(waveform, dtype=torch.float32)
    if w.ndim == 2:
        w = w.mean(0)
    if w.ndim != 1:
        raise ValueError(f"waveform must be (N,) or (C, N), got shape {tuple(waveform.shape)}")
    if int(sample_rate) != int(s["sample_rate"]):
        w = torchaudio.functional.resample(w, int(sample_rate), int(s["sample_rate"]))
    feats = torchaudio.compliance.kaldi.fbank(
        w[None] * 32768.0,
        sample_frequency=float(s["sample_rate"]),
        num_mel_bins=int(s["num_mel_bins"]),
        frame_length=float(s["frame_length"]),
        frame_shift=float(s["frame_shift"]),
        dither=float(s["dither"]),
    )
    return utterance_cmvn(feats) if s["cmvn"] == "utterance" else feats


def utterance_cmvn(feats: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """(T, F) -> per-bin zero mean, unit variance over the T frames (fairseq's UtteranceCMVN)."""
    mean = feats.mean(0, keepdim=True)
    x = feats - mean
    std = x.pow(2).mean(0, keepdim=True).clamp_min(eps).sqrt()
    return x / std


def collate_fbank(features: Sequence[torch.Tensor], pad_value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """List of (T_i, F) -> (B, max T_i, F) right-padded with ``pad_value`` (0 = the CMVN mean) and (B,) lengths."""
    if not features:
        raise ValueError("collate_fbank needs at least one utterance")
    lengths = torch.tensor([f.shape[0] for f in features], dtype=torch.long)
    out = features[0].new_full((len(features), int(lengths.max()), features[0].shape[1]), pad_value)
    for i, f in enumerate(features):
        out[i, : f.shape[0]] = f
    return out, lengths


def collate_targets(
    targets: Sequence[Sequence[int]], cfg: SpeechTranslationConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token lists (without BOS/EOS) -> teacher-forcing ``(tgt_in, tgt_out, tgt_mask)``, each (B, max len + 1).

    ``tgt_in`` = BOS + y, ``tgt_out`` = y + EOS, right-padded with ``pad_id``; ``tgt_mask`` True on real tokens.
    Use ``F.cross_entropy(logits.transpose(1, 2), tgt_out, ignore_index=cfg.pad_id)``.
    """
    n = max(len(t) for t in targets) + 1
    tgt_in = torch.full((len(targets), n), cfg.pad_id, dtype=torch.long)
    tgt_out = tgt_in.clone()
    for i, t in enumerate(targets):
        t = torch.as_tensor(list(t), dtype=torch.long)
        tgt_in[i, 0] = cfg.bos_id
        tgt_in[i, 1 : len(t) + 1] = t
        tgt_out[i, : len(t)] = t
        tgt_out[i, len(t)] = cfg.eos_id
    return tgt_in, tgt_out, tgt_out != cfg.pad_id


def synthetic_utterance(seconds: float = 5.0, sample_rate: int = 16000, seed: int = 0) -> torch.Tensor:
    """A deterministic speech-like waveform (N,) in [-1, 1]: a stand-in where no speech data is bundled.

    Syllables of 120-300 ms: voiced ones are a glottal pulse train (f0 90-220 Hz, drifting) through three
    formant resonators whose frequencies move within a syllable; unvoiced ones are high-passed noise
    (fricatives); 10-40% of the gaps are silences with faint background noise. Good enough to exercise the front
    end and to measure the source embedding correlation; not a substitute for real speech in training.
    """
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * sample_rate)
    out = torch.zeros(n, dtype=torch.float64)
    t0 = 0

    def rnd(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))

    while t0 < n:
        dur = int(rnd(0.12, 0.30) * sample_rate)
        seg = torch.arange(min(dur, n - t0), dtype=torch.float64)
        kind = rnd(0, 1)
        if kind < 0.65:  # voiced: pulse train through formant resonators
            f0 = rnd(90, 220) * (1 + 0.1 * (seg / max(dur, 1)) * rnd(-1, 1))
            phase = torch.cumsum(f0 / sample_rate, 0)
            src = torch.frac(phase) ** 8 - 1.0 / 9.0  # glottal-ish pulses, zero mean
            sig = torch.zeros_like(seg)
            for lo, hi, bw in ((300, 900, 80), (900, 2300, 100), (2300, 3200, 150)):
                fa, fb = rnd(lo, hi), rnd(lo, hi)
                fr = fa + (fb - fa) * seg / max(len(seg), 1)
                # a resonator approximated by amplitude-modulating the source with the formant carrier
                sig += torch.cos(2 * math.pi * torch.cumsum(fr / sample_rate, 0)) * src * math.exp(-bw / 400)
        elif kind < 0.85:  # unvoiced: high-passed noise
            w = torch.randn(len(seg), generator=g, dtype=torch.float64)
            sig = torch.diff(w, prepend=w[:1]) * 0.5
        else:  # pause
            sig = torch.zeros_like(seg)
        env = torch.sin(math.pi * (seg + 0.5) / len(seg)) ** 2  # syllable envelope
        out[t0 : t0 + len(seg)] = sig * env * rnd(0.3, 1.0)
        t0 += len(seg)
    out += 1e-3 * torch.randn(n, generator=g, dtype=torch.float64)  # background noise
    return (0.9 * out / out.abs().max()).float()


def token_correlation(x: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """The theory's token correlation of a (B, N, D) batch: per sequence, the mean off-diagonal entry of the token
    Gram matrix ``x x^T / D`` over the valid tokens divided by its mean diagonal entry; averaged over sequences.

    This is the quantity attention responds to (its output variance is a quadratic form in this Gram matrix), with
    the mean included, as the recursion of Sec. 4 step 4 uses it.
    """
    vals = []
    for b in range(x.shape[0]):
        h = x[b] if mask is None else x[b, mask[b].bool()]
        n = h.shape[0]
        if n < 2:
            continue
        G = h.double() @ h.double().T / h.shape[1]
        diag = G.diagonal().sum()
        vals.append(float((G.sum() - diag) / (n * (n - 1)) / (diag / n)))
    return sum(vals) / len(vals)


# ---------------------------------------------------------------------------------------------------------------
# Model


class Hypothesis(NamedTuple):
    """One beam-search result: generated ids (EOS included when generated), length-normalised score, log-prob."""

    tokens: list[int]
    score: float
    log_prob: float


class SpeechTranslationModel(StackModel):
    """Fbank (B, T, n_mels) -> conv subsampler -> DSLM encoder; target ids -> causal DSLM decoder with
    cross-attention -> tied LM head. ``forward`` gives teacher-forced logits (B, N, vocab_size).

    ``reset_classifier`` does not apply (no classifier; the output layer is the tied target vocabulary).
    """

    config_class = SpeechTranslationConfig
    stack_depth_fields = ("depth", "decoder_depth")  # encoder, decoder (stack_plans order)

    def __init__(self, cfg: SpeechTranslationConfig, *, device=None, dtype=None):
        super().__init__()
        self.cfg = cfg
        fk = dict(device=device, dtype=dtype)
        d = cfg.embed_dim
        src_len = cfg.dslm_seq_len or cfg.max_source_positions
        tgt_len = cfg.dslm_target_seq_len or cfg.max_target_positions
        self.embed = SpeechEmbedding(cfg.n_mels, cfg.conv_channels, d, cfg.max_source_positions, cfg.drop_rate, **fk)
        self.encoder = Transformer(cfg.depth, seq_len=src_len, **cfg.stack_kwargs(), **fk)
        self.tgt_embed = TokenEmbedding(cfg.vocab_size, d, cfg.max_target_positions, cfg.pos_embed, 0, cfg.drop_rate, **fk)
        pos_bias = cfg.pos_embed if cfg.pos_embed in ("alibi", "relative") else None
        self.decoder = Transformer(
            cfg.decoder_depth, causal=True, cross_attn=True, pos_bias=pos_bias, seq_len=tgt_len, memory_len=src_len,
            **cfg.stack_kwargs(), **fk,
        )
        tied = self.tgt_embed.word if cfg.tie_embeddings else None
        self.head = LMHead(d, cfg.vocab_size, tied, bias=False, **fk)
        self.num_features = self.embed_dim = d
        self._post_init(device)

    def stack_plans(self) -> list[StackPlan]:
        keep = 1.0 - self.cfg.drop_rate
        return [
            StackPlan(self.encoder, self.cfg.dslm_r_emb * keep, role="encoder"),
            StackPlan(self.decoder, self.cfg.dslm_r_emb_target * keep, memory=self.encoder, role="decoder"),
        ]

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        gm = super().group_matcher(coarse)
        gm["stem"] = r"^(?:embed|tgt_embed)"
        return gm

    # ---- shapes and masks

    def source_lengths(self, feat_lengths: torch.Tensor) -> torch.Tensor:
        """Encoder tokens per utterance for ``feat_lengths`` fbank frames (``ConvSubsampler.output_lengths``)."""
        return self.embed.subsample.output_lengths(feat_lengths)

    def _embed_source(self, feats: torch.Tensor, feat_lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        feats = feats.to(self.embed.subsample.conv1.weight.dtype)
        if feat_lengths is None:
            return self.embed(feats), None
        feat_lengths = torch.as_tensor(feat_lengths, device=feats.device).long()
        if (feat_lengths < 1).any() or (feat_lengths > feats.shape[1]).any():
            raise ValueError(f"feat_lengths must lie in [1, {feats.shape[1]}], got {feat_lengths.tolist()}")
        x = self.embed(feats, feat_lengths)
        return x, length_mask(self.source_lengths(feat_lengths), x.shape[1])

    # ---- forward passes

    def forward_features(
        self, feats: torch.Tensor, feat_lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Encoder: fbank (B, T, n_mels) + lengths (B,) -> memory (B, M, D), M = ~T/4, and its mask (B, M) (True =
        real frame; None when ``feat_lengths`` is None, i.e. no padding)."""
        x, mask = self._embed_source(feats, feat_lengths)
        return self.encoder(x, mask), mask

    def decode(
        self,
        tgt_in: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None = None,
        tgt_mask: torch.Tensor | None = None,
        cache: DecodeCache | None = None,
        start: int = 0,
    ) -> torch.Tensor:
        """Decoder: target ids (B, N) (BOS first) over an encoder memory -> final hidden states (B, N, D).

        Incremental decoding: ``cache`` holds the keys and values of the first ``start`` tokens, ``tgt_in`` the
        tokens from position ``start`` on (see ``greedy_decode``)."""
        return self.decoder(self.tgt_embed(tgt_in, start=start), tgt_mask, memory, memory_mask, cache=cache)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def forward(
        self,
        feats: torch.Tensor,
        feat_lengths: torch.Tensor | None,
        tgt_in: torch.Tensor,
        tgt_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher forcing: fbank (B, T, n_mels), lengths (B,), decoder input ids (B, N) -> logits (B, N, V).

        ``tgt_mask`` (B, N), True = real token, is only needed for left padding: with right padding the causal mask
        already hides the padded positions from the real ones.
        """
        return self.forward_head(self.forward_hidden(feats, feat_lengths, tgt_in, tgt_mask))

    def forward_hidden(
        self,
        feats: torch.Tensor,
        feat_lengths: torch.Tensor | None,
        tgt_in: torch.Tensor,
        tgt_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher forcing without the head: final decoder hidden states (B, N, D), the output of the last stack
        (where ``dslm_zoo.diagnostics`` injects its gradient, so the encoder is reached through cross-attention)."""
        memory, memory_mask = self.forward_features(feats, feat_lengths)
        return self.decode(tgt_in, memory, memory_mask, tgt_mask)

    def residual_stream(
        self,
        feats: torch.Tensor,
        feat_lengths: torch.Tensor | None,
        tgt_in: torch.Tensor,
        tgt_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final decoder hidden states (B, N, D) and the residual streams: the list holds the encoder input and the
        encoder stream after each of its ``cfg.depth`` blocks (each (B, M, D)), then the decoder input and the
        decoder stream after each of its ``cfg.decoder_depth`` blocks (each (B, N, D)). Padded positions are
        included; mask them with ``source_lengths(feat_lengths)`` / ``tgt_mask``."""
        x, mask = self._embed_source(feats, feat_lengths)
        memory, enc = self.encoder.forward_intermediates(x, mask)
        y = self.tgt_embed(tgt_in)
        out, dec = self.decoder.forward_intermediates(y, tgt_mask, memory, mask)
        return out, [x] + enc + [y] + dec

    forward_intermediates = residual_stream  # no timm convention for speech models

    @torch.no_grad()
    def measure_r_emb(
        self, feats: torch.Tensor, feat_lengths: torch.Tensor | None = None, tgt_in: torch.Tensor | None = None
    ) -> dict[str, float]:
        """Token correlation of the source (and, given ``tgt_in``, target) embedding at the current weights, without
        dropout: the numbers ``dslm_r_emb`` / ``dslm_r_emb_target`` stand for (measure at 'dslm' init)."""
        was = self.training
        self.eval()
        try:
            x, mask = self._embed_source(feats, feat_lengths)
            out = {"source": token_correlation(x, mask)}
            if tgt_in is not None:
                out["target"] = token_correlation(self.tgt_embed(tgt_in), tgt_in != self.cfg.pad_id)
        finally:
            self.train(was)
        return out

    # ---- decoding

    def _check_max_len(self, max_len: int | None) -> int:
        limit = self.cfg.max_target_positions if self.tgt_embed.pos is not None else None
        if max_len is None:
            return limit or 200
        if max_len < 1 or (limit is not None and max_len > limit):
            raise ValueError(f"max_len must lie in [1, {limit}] (max_target_positions), got {max_len}")
        return max_len

    def _next_log_probs(self, prefix: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None,
                        cache: DecodeCache | None = None) -> torch.Tensor:
        """(R, t) prefixes -> (R, V) fp32 log-probabilities of the next token; PAD (and BOS unless it is EOS) banned.
        With a ``cache`` holding the first t - 1 tokens of every row, only the last token runs through the decoder."""
        if cache is None:
            h = self.decode(prefix, memory, memory_mask)[:, -1]
        else:
            start = prefix.shape[1] - 1 if len(cache) else 0  # the first call fills the cache with the whole prefix
            h = self.decode(prefix[:, start:], memory, memory_mask, cache=cache, start=start)[:, -1]
        logits = self.forward_head(h).float()
        logits[:, self.cfg.pad_id] = float("-inf")
        if self.cfg.bos_id != self.cfg.eos_id:
            logits[:, self.cfg.bos_id] = float("-inf")
        return F.log_softmax(logits, dim=-1)

    def _decode_cache(self, use_cache: bool) -> DecodeCache | None:
        """A key/value cache for incremental decoding, or None where the decoder needs more than the earlier keys
        and values (logit position biases over the whole prefix; a local RNN re-reading its window of earlier
        inputs at every layer): it then decodes whole prefixes."""
        return DecodeCache() if use_cache and self.decoder.pos_bias is None and not self.decoder.local_rnn else None

    @torch.no_grad()
    def greedy_decode(
        self, feats: torch.Tensor, feat_lengths: torch.Tensor | None = None, max_len: int | None = None,
        use_cache: bool = True,
    ) -> list[list[int]]:
        """Greedy search: per utterance the argmax ids until EOS (included) or ``max_len`` generated tokens.

        ``max_len`` defaults to ``max_target_positions`` (200 without a position table). Batched: the encoder runs
        once; each step runs the decoder on the newest token of the unfinished utterances, with the keys and values
        of the earlier ones and the memory's projections cached (:class:`~dslm_zoo.layers.DecodeCache`;
        ``use_cache=False`` re-runs whole prefixes, the same tokens up to float rounding). Call ``model.eval()``
        first (decoding respects the current train/eval mode).
        """
        max_len = self._check_max_len(max_len)
        memory, memory_mask = self.forward_features(feats, feat_lengths)
        B = memory.shape[0]
        tokens = torch.full((B, 1), self.cfg.bos_id, dtype=torch.long, device=memory.device)
        out: list[list[int]] = [[] for _ in range(B)]
        active = torch.arange(B, device=memory.device)
        cache = self._decode_cache(use_cache)
        for _ in range(max_len):
            mm = None if memory_mask is None else memory_mask[active]
            nxt = self._next_log_probs(tokens, memory[active], mm, cache).argmax(-1)
            for b, tok in zip(active.tolist(), nxt.tolist()):
                out[b].append(tok)
            keep = nxt != self.cfg.eos_id
            tokens = torch.cat([tokens, nxt[:, None]], 1)[keep]
            active = active[keep]
            if cache is not None:
                cache.select(keep.nonzero().flatten())
            if active.numel() == 0:
                break
        return out

    @torch.no_grad()
    def beam_search_nbest(
        self,
        feats: torch.Tensor,
        feat_lengths: torch.Tensor | None = None,
        beam_size: int = 5,
        max_len: int | None = None,
        length_penalty: float = 1.0,
        use_cache: bool = True,
    ) -> list[list[Hypothesis]]:
        """Beam search; per utterance the ``beam_size`` best hypotheses, best first.

        fairseq's SequenceGenerator conventions: every step scores the 2K best (beam, token) extensions of the K
        live beams; those ending in EOS *among the first K* are finalised, the K best others live on; an utterance
        is done once it has K finished hypotheses, and at ``max_len`` generated tokens the live beams are finalised
        as they are (no EOS). Score = sum of log-probs / len^length_penalty, len = generated tokens including EOS
        (fairseq's ``lenpen``, plain len^alpha; not GNMT's ((5 + len)/6)^alpha); ``length_penalty=0`` ranks by the
        raw log-probability. All live beams of all unfinished utterances run as one decoder batch, on their newest
        token with a key/value cache that follows the beams (``use_cache=False``: whole prefixes, as a check).
        """
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        max_len = self._check_max_len(max_len)
        V = self.cfg.vocab_size
        if V < 2 * beam_size + 2:
            raise ValueError(f"beam_size={beam_size} is too large for a vocabulary of {V}")
        memory, memory_mask = self.forward_features(feats, feat_lengths)
        B, K, dev = memory.shape[0], beam_size, memory.device
        memory = memory.repeat_interleave(K, 0)
        memory_mask = None if memory_mask is None else memory_mask.repeat_interleave(K, 0)
        tokens = torch.full((B * K, 1), self.cfg.bos_id, dtype=torch.long, device=dev)
        scores = torch.zeros(B, K, dtype=torch.float32, device=dev)
        scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
        finished: list[list[Hypothesis]] = [[] for _ in range(B)]
        active = torch.arange(B, device=dev)  # utterances still searching
        offs = torch.arange(K, device=dev)
        cache = self._decode_cache(use_cache)

        def norm(logp: float, length: int) -> float:
            return logp / (length**length_penalty) if length_penalty else logp

        for step in range(max_len):
            rows = (active[:, None] * K + offs).flatten()
            nA = active.numel()
            lp = self._next_log_probs(tokens[rows], memory[rows], None if memory_mask is None else memory_mask[rows], cache)
            cand = (scores[active][..., None] + lp.view(nA, K, V)).view(nA, K * V)
            top_s, top_i = cand.topk(2 * K, dim=1)  # (nA, 2K), sorted
            beam, tok = top_i // V, top_i % V
            is_eos = tok == self.cfg.eos_id
            length = step + 1
            prefixes = tokens[rows].view(nA, K, -1)[:, :, 1:]  # generated so far, without BOS
            top_s_l, beam_l, tok_l, eos_l = top_s.tolist(), beam.tolist(), tok.tolist(), is_eos.tolist()
            # live beams for the next step: the K best non-EOS candidates (there are at least K among 2K)
            order = torch.where(is_eos, 2 * K + torch.arange(2 * K, device=dev), torch.arange(2 * K, device=dev))
            live = order.argsort(dim=1)[:, :K]
            new_beam, new_tok, new_score = beam.gather(1, live), tok.gather(1, live), top_s.gather(1, live)
            still = []
            for a, b in enumerate(active.tolist()):
                need = K - len(finished[b])
                for j in range(K):  # EOS among the first K candidates
                    if need and eos_l[a][j] and math.isfinite(top_s_l[a][j]):
                        seq = prefixes[a, beam_l[a][j]].tolist() + [tok_l[a][j]]
                        finished[b].append(Hypothesis(seq, norm(top_s_l[a][j], length), top_s_l[a][j]))
                        need -= 1
                if need and step == max_len - 1:  # out of length: finalise the live beams as they stand
                    for j in range(K):
                        s = float(new_score[a, j])
                        if need and math.isfinite(s):
                            seq = prefixes[a, int(new_beam[a, j])].tolist() + [int(new_tok[a, j])]
                            finished[b].append(Hypothesis(seq, norm(s, length), s))
                            need -= 1
                still.append(need > 0)
            # advance every searched utterance's beams (rows of utterances that are done are simply dropped later)
            src = (active[:, None] * K + new_beam).flatten()
            grown = torch.full((B * K, tokens.shape[1] + 1), self.cfg.pad_id, dtype=torch.long, device=dev)
            grown[rows] = torch.cat([tokens[src], new_tok.flatten()[:, None]], 1)
            tokens = grown
            scores[active] = new_score
            keep = torch.tensor(still, dtype=torch.bool, device=dev)
            if cache is not None:  # the cache rows follow this step's `rows`: carry each surviving beam's source
                a_idx = torch.arange(nA, device=dev)[keep]
                cache.select((a_idx[:, None] * K + new_beam[keep]).flatten())
            active = active[keep]
            if active.numel() == 0:
                break
        return [sorted(f, key=lambda h: h.score, reverse=True)[:K] for f in finished]

    def beam_search(
        self,
        feats: torch.Tensor,
        feat_lengths: torch.Tensor | None = None,
        beam_size: int = 5,
        max_len: int | None = None,
        length_penalty: float = 1.0,
        use_cache: bool = True,
    ) -> list[list[int]]:
        """Beam search; per utterance the best hypothesis's ids (EOS included when generated). See
        ``beam_search_nbest`` for the conventions (fairseq's; length penalty len^alpha)."""
        nbest = self.beam_search_nbest(feats, feat_lengths, beam_size, max_len, length_penalty, use_cache)
        return [h[0].tokens for h in nbest]


# ---------------------------------------------------------------------------------------------------------------
# Registered variants. The fairseq S2T Transformer-M shape (12 + 6 layers x d=512) is the shallow reference;
# dslm_st_encdec keeps its block parameters (12 n d^2) at half the width and four times the depth.


def _st_cfg(tokenizer: str) -> dict[str, Any]:
    return dict(
        sample_rate=16000,
        fbank=dict(num_mel_bins=80, frame_length=25.0, frame_shift=10.0, dither=0.0, cmvn="utterance"),
        tokenizer=tokenizer,
    )


def _st(variant: str, pretrained: bool, model_args: dict[str, Any], **kwargs: Any) -> SpeechTranslationModel:
    return build_model_with_cfg(SpeechTranslationModel, variant, pretrained, model_args, **kwargs)


@register_model(default_cfg=_st_cfg("sentencepiece-unigram-1000"))
def dslm_st_tiny(pretrained: bool = False, **kwargs: Any) -> SpeechTranslationModel:
    """Speech translation, encoder 4 layers + decoder 2 layers x d=64 (2 heads), 80-dim fbank, 128 conv channels,
    1000-token target vocabulary (tied); input (B, T, 80) fbank, output (B, N, 1000) logits; 0.50M parameters.
    CPU-sized."""
    args = dict(depth=4, decoder_depth=2, embed_dim=64, num_heads=2, conv_channels=128, vocab_size=1000,
                max_source_positions=512, max_target_positions=128)
    return _st("dslm_st_tiny", pretrained, args, **kwargs)


# The CPU pair of issue 12: equal block parameters (12 d^2 per encoder layer, 16 d^2 per decoder layer: 5.11M vs
# 5.24M), deep-narrow vs shallow-wide, on st-en-de.
_ST_CPU = dict(conv_channels=256, vocab_size=8000, max_source_positions=1500, max_target_positions=256)


@register_model(default_cfg=_st_cfg("unigram-8000"))
def dslm_st_18L6L_128D(pretrained: bool = False, **kwargs: Any) -> SpeechTranslationModel:
    """Speech translation, encoder 18 layers + decoder 6 layers x d=128 (2 heads), 80-dim fbank, 256 conv channels,
    8000-token target vocabulary (tied); 6.48M parameters. Deep-narrow, CPU-trainable."""
    return _st("dslm_st_18L6L_128D", pretrained, dict(depth=18, decoder_depth=6, embed_dim=128, num_heads=2, **_ST_CPU), **kwargs)


@register_model(default_cfg=_st_cfg("unigram-8000"))
def dslm_st_4L2L_256D(pretrained: bool = False, **kwargs: Any) -> SpeechTranslationModel:
    """Speech translation, encoder 4 layers + decoder 2 layers x d=256 (4 heads), 80-dim fbank, 256 conv channels,
    8000-token target vocabulary (tied); 7.81M parameters. The shallow-wide control of dslm_st_18L6L_128D."""
    return _st("dslm_st_4L2L_256D", pretrained, dict(depth=4, decoder_depth=2, embed_dim=256, num_heads=4, **_ST_CPU), **kwargs)


@register_model(default_cfg=_st_cfg("sentencepiece-unigram-8000"))
def dslm_st_encdec(pretrained: bool = False, **kwargs: Any) -> SpeechTranslationModel:
    """Deep DSLM speech translation, encoder 48 layers + decoder 24 layers x d=256 (4 heads), 80-dim fbank,
    1024 conv channels, 8000-token target vocabulary (tied); input (B, T, 80), output (B, N, 8000); 67.22M parameters.
    Same block parameters as fairseq's S2T Transformer-M (12 + 6 layers x d=512), four times deeper."""
    args = dict(depth=48, decoder_depth=24, embed_dim=256, num_heads=4, conv_channels=1024, vocab_size=8000)
    return _st("dslm_st_encdec", pretrained, args, **kwargs)


@register_model(default_cfg=_st_cfg("sentencepiece-unigram-8000"))
def dslm_st_1000L(pretrained: bool = False, **kwargs: Any) -> SpeechTranslationModel:
    """1000-layer-class speech translation, encoder 1000 layers + decoder 500 layers x d=128 (2 heads), 80-dim
    fbank, 1024 conv channels, 8000-token target vocabulary (tied); input (B, T, 80), output (B, N, 8000);
    332.78M parameters. Build on device='meta', materialise, then ``init_weights``."""
    args = dict(depth=1000, decoder_depth=500, embed_dim=128, num_heads=2, conv_channels=1024, vocab_size=8000)
    return _st("dslm_st_1000L", pretrained, args, **kwargs)
