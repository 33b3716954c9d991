"""Tasks plug into the one trainer: data sets, collate, loss and eval metrics. The loop knows no family.

A task's ``loss`` returns the *sum* of its per-unit losses (units: target tokens, or samples) and ``count`` the
number of units of a batch before any forward; the trainer divides by the global count of the optimizer step,
so gradient accumulation and any number of processes give the gradient of the same global mean.

Randomness that belongs to the data (which tokens an MLM batch masks) is drawn from a generator seeded by the
sample's global draw position, so it is identical for any world size, micro-batch split and resume point.
"""
from __future__ import annotations

import inspect
import math
from pathlib import Path
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from .config import DataSection, RecipeError

__all__ = ["Task", "register_task", "list_tasks", "build_task", "MaskedLM", "CausalLM", "ExtractiveQA", "ImageClassification", "SpeechTranslation", "load_tokenizer", "train_target_tokenizer"]

_TASKS: dict[str, type["Task"]] = {}


def register_task(cls: type["Task"]) -> type["Task"]:
    """Class decorator: make a task available to recipes by its ``name``; duplicate names raise."""
    if cls.name in _TASKS:
        raise ValueError(f"task {cls.name!r} is already registered")
    _TASKS[cls.name] = cls
    return cls


def list_tasks() -> list[str]:
    return sorted(_TASKS)


def build_task(name: str, kwargs: dict[str, Any], source: str = "<recipe>") -> "Task":
    """Instantiate a registered task; unknown names and unknown keyword arguments raise ``RecipeError``."""
    if name not in _TASKS:
        raise RecipeError(f"{source}: unknown task {name!r}; known tasks: {list_tasks()}")
    cls = _TASKS[name]
    params = inspect.signature(cls.__init__).parameters
    bad = [k for k in kwargs if k not in params or k == "self"]
    if bad:
        raise RecipeError(f"{source}: task {name!r} has no option(s) {bad}; it takes {[p for p in params if p != 'self']}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise RecipeError(f"{source}: task {name!r}: {e}") from None


def _check_implied(implied: dict[str, Any], model_kwargs: dict[str, Any], what: str = "the data") -> dict[str, Any]:
    """Model kwargs a task's data imply; a recipe that sets one of them differently is refused."""
    for k, v in implied.items():
        if k in model_kwargs and model_kwargs[k] != v:
            raise RecipeError(f"model.kwargs.{k}={model_kwargs[k]!r} disagrees with {what} ({k}={v!r})")
    return implied


def _sample_generator(seed: int, draw: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + draw) % (2**63 - 1))


class Task(ABC):
    """What a task supplies to the trainer.

    ``setup(data, model_kwargs)`` builds the data sets and returns the model keyword arguments the data implies
    (vocabulary size, context length); ``collate`` turns ``(draw position, sample)`` pairs into a batch dict.
    """

    name: ClassVar[str]
    unit: ClassVar[str] = "tokens"  # what count() counts: throughput is reported per unit

    datasets: dict[str, Dataset]

    @abstractmethod
    def setup(self, data: DataSection, model_kwargs: dict[str, Any]) -> dict[str, Any]:
        """Build ``self.datasets`` ('train', 'validation', ...) and return model kwargs the data implies."""

    def check_model(self, model: nn.Module) -> None:
        """Raise ``RecipeError`` if the model cannot do this task (wrong head, wrong family)."""

    @abstractmethod
    def collate(self, items: Sequence[tuple[int, Any]], seed: int) -> dict[str, torch.Tensor]:
        """A batch from ``(global draw position, sample)`` pairs; ``seed`` is the recipe's."""

    @abstractmethod
    def count(self, batch: dict[str, torch.Tensor]) -> int:
        """Loss units in the batch (target tokens, samples), known before the forward."""

    def size(self, batch: dict[str, torch.Tensor]) -> int:
        """Throughput units of the batch (input tokens, samples); default: ``count``."""
        return self.count(batch)

    @abstractmethod
    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The summed loss over the batch's units (fp32 scalar)."""

    def eval_sums(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Sums over a validation batch that :meth:`metrics` turns into numbers (default: the loss)."""
        return {"loss": self.loss(model, batch)}

    def metrics(self, sums: dict[str, float], units: int) -> dict[str, float]:
        """Eval metrics from the validation sums (default: mean loss and its perplexity)."""
        mean = sums["loss"] / max(units, 1)
        return {"eval_loss": mean, "eval_ppl": math.exp(min(mean, 50.0))}

    def describe_data(self) -> dict[str, Any]:
        return {}

    def lengths(self, split: str) -> Sequence[int] | None:
        """The size of each sample of ``split`` (what ``train.bucket_batches`` sorts by); ``None`` for tasks of
        fixed-size samples."""
        return None

    def export_files(self, out_dir: Path) -> dict[str, Any]:
        """Write what the exported model needs beside its weights (a tokenizer); return pretrained-cfg fields."""
        return {}


class _TextTask(Task):
    """Shared by the language-model tasks: a text source cut into fixed windows."""

    def __init__(self) -> None:
        self.text: Any = None
        self.seq_len = 0

    def _load(self, data: DataSection, default_seq_len: int) -> Any:
        from ..data import TokenBlocks, load_text_data

        kwargs = dict(data.kwargs)
        self.seq_len = int(kwargs.pop("seq_len", default_seq_len))
        if self.seq_len < 4:
            raise RecipeError(f"data.kwargs.seq_len must be >= 4, got {self.seq_len}")
        self.text = load_text_data(data.name, **kwargs)
        self.datasets = {k: TokenBlocks(v, self._window()) for k, v in self.text.splits.items() if len(v) >= self._window()}
        if "train" not in self.datasets:
            raise RecipeError(f"data set {data.name!r} has no train split long enough for seq_len={self.seq_len}")
        return self.text

    def _window(self) -> int:
        return self.seq_len

    def _implied(self, model_kwargs: dict[str, Any]) -> dict[str, Any]:
        implied = _check_implied({"vocab_size": self.text.vocab_size}, model_kwargs)
        max_len = model_kwargs.get("max_seq_len")
        if max_len is not None and max_len < self.seq_len:
            raise RecipeError(f"model.kwargs.max_seq_len={max_len} is shorter than data.kwargs.seq_len={self.seq_len}")
        if max_len is None:
            implied["max_seq_len"] = self.seq_len
        return implied

    def size(self, batch: dict[str, torch.Tensor]) -> int:
        return batch["input_ids"].numel()

    def export_files(self, out_dir: Path) -> dict[str, Any]:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.text.tokenizer.save(str(out_dir / "tokenizer.json"))
        return {"tokenizer": "tokenizer.json"}

    def describe_data(self) -> dict[str, Any]:
        from ..data.text import describe

        return {**describe(self.text), "seq_len": self.seq_len}


@register_task
class MaskedLM(_TextTask):
    """BERT masked-language modelling: ``[CLS] w_1 .. w_{L-2} [SEP]``, ``mask_prob`` of the words chosen, of
    those 80 % replaced by [MASK], 10 % by a random token, 10 % kept (Devlin et al. 2019)."""

    name = "masked_lm"

    def __init__(self, mask_prob: float = 0.15):
        super().__init__()
        if not 0.0 < mask_prob < 1.0:
            raise ValueError(f"mask_prob must lie in (0, 1), got {mask_prob}")
        self.mask_prob = mask_prob

    def setup(self, data: DataSection, model_kwargs: dict[str, Any]) -> dict[str, Any]:
        self._load(data, default_seq_len=128)
        return self._implied(model_kwargs)

    def _window(self) -> int:
        return self.seq_len - 2

    def check_model(self, model: nn.Module) -> None:
        if getattr(model.cfg, "head", None) != "mlm":
            raise RecipeError(f"task 'masked_lm' needs a text encoder with head='mlm'; {type(model).__name__} has "
                              f"head={getattr(model.cfg, 'head', None)!r}")

    def collate(self, items: Sequence[tuple[int, torch.Tensor]], seed: int) -> dict[str, torch.Tensor]:
        sp = self.text.special
        V = self.text.vocab_size
        n_special = len(sp)
        ids, labels = [], []
        for draw, words in items:
            g = _sample_generator(seed, draw)
            chosen = torch.rand(words.shape, generator=g) < self.mask_prob
            if not chosen.any():  # at least one target per sequence keeps every sample in the loss
                chosen[torch.randint(len(words), (1,), generator=g)] = True
            roll = torch.rand(words.shape, generator=g)
            rand_tok = torch.randint(n_special, V, words.shape, generator=g)
            inp = words.clone()
            inp[chosen & (roll < 0.8)] = sp["[MASK]"]
            swap = chosen & (roll >= 0.8) & (roll < 0.9)
            inp[swap] = rand_tok[swap]
            lab = torch.where(chosen, words, torch.full_like(words, -100))
            cls, sep = torch.tensor([sp["[CLS]"]]), torch.tensor([sp["[SEP]"]])
            ignore = torch.tensor([-100])
            ids.append(torch.cat([cls, inp, sep]))
            labels.append(torch.cat([ignore, lab, ignore]))
        return {"input_ids": torch.stack(ids), "labels": torch.stack(labels)}

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"] != -100).sum())

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # through forward() (DDP and FSDP2 hook it), logits at the masked positions only; the loss in fp32
        labels = batch["labels"]
        chosen = labels != -100
        logits = model(batch["input_ids"], masked_positions=chosen)
        return F.cross_entropy(logits.float(), labels[chosen], reduction="sum")


@register_task
class CausalLM(_TextTask):
    """Next-token prediction over windows of ``seq_len + 1`` tokens (GPT-style decoders)."""

    name = "causal_lm"

    def __init__(self) -> None:
        super().__init__()

    def setup(self, data: DataSection, model_kwargs: dict[str, Any]) -> dict[str, Any]:
        self._load(data, default_seq_len=128)
        return self._implied(model_kwargs)

    def _window(self) -> int:
        return self.seq_len + 1

    def check_model(self, model: nn.Module) -> None:
        if not getattr(getattr(model, "encoder", None), "causal", False):
            raise RecipeError(f"task 'causal_lm' needs a causal decoder (dslm_gpt_*), got {type(model).__name__}")

    def collate(self, items: Sequence[tuple[int, torch.Tensor]], seed: int) -> dict[str, torch.Tensor]:
        x = torch.stack([w for _, w in items])
        return {"input_ids": x[:, :-1].contiguous(), "labels": x[:, 1:].contiguous()}

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        return batch["labels"].numel()

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(batch["input_ids"])
        return F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), reduction="sum")


def resolve_data_file(spec: str) -> Path:
    """A data file named in a recipe: a path (``~`` expanded), else the same path under the data cache root
    (``qa-facts/train-v2.0.json`` = ``$DSLM_ZOO_DATA/qa-facts/train-v2.0.json``)."""
    from ..data import data_root

    p = Path(spec).expanduser()
    if not p.exists() and not p.is_absolute() and (data_root() / p).exists():
        return data_root() / p
    return p


def load_tokenizer(spec: str) -> Any:
    """A ``tokenizers.Tokenizer`` from a tokenizer.json file, a directory holding one (a model export), a released
    model (``arch.tag``, ``hf-hub:``, ``local-dir:``: the tokenizer beside its weights), or the name of a prepared
    text data set (its WordPiece tokenizer)."""
    from tokenizers import Tokenizer

    from .. import get_tokenizer, is_model

    p = Path(spec).expanduser()
    if p.is_dir() and (p / "tokenizer.json").is_file():
        p = p / "tokenizer.json"
    if p.is_file():
        return Tokenizer.from_file(str(p))
    if spec.startswith(("hf-hub:", "local-dir:")) or ("." in spec and is_model(spec)):
        return get_tokenizer(spec)
    from ..data import load_text_data

    try:
        return load_text_data(spec).tokenizer
    except ValueError:
        raise RecipeError(f"tokenizer {spec!r} is neither a tokenizer.json, a directory with one, nor a data set") from None


@register_task
class ExtractiveQA(Task):
    """SQuAD-style span extraction: a BERT with ``head='qa'``, windows of ``[CLS] question [SEP] context [SEP]``
    (:func:`dslm_zoo.evals.qa.make_features`), loss = mean of the start and end cross-entropies; a window
    without the whole answer points at [CLS] (SQuAD v2.0's no-answer target).

    Data: ``data: {name: squad, kwargs: {train: TRAIN.json, validation: DEV.json, test: TEST.json, tokenizer:
    SPEC}}`` with files in the official or the Hugging Face format and SPEC as in :func:`load_tokenizer`; ``test``
    (optional) is never read in training: ``dslm-zoo release`` scores the finished model on it.
    """

    name = "extractive_qa"
    unit = "samples"

    def __init__(self, max_len: int = 128, doc_stride: int = 64, max_query_len: int = 32):
        if not (max_len >= 8 and doc_stride >= 1 and 1 <= max_query_len < max_len):
            raise ValueError(f"need max_len >= 8, doc_stride >= 1 and 1 <= max_query_len < max_len, got "
                             f"{max_len}, {doc_stride}, {max_query_len}")
        self.max_len, self.doc_stride, self.max_query_len = max_len, doc_stride, max_query_len
        self.tokenizer: Any = None
        self.sources: dict[str, str] = {}

    def setup(self, data: DataSection, model_kwargs: dict[str, Any]) -> dict[str, Any]:
        from ..evals.qa import make_features
        from ..evals.squad import load_dataset

        if data.name != "squad":
            raise RecipeError(f"task 'extractive_qa' reads data.name='squad' (SQuAD files), got {data.name!r}")
        kw = dict(data.kwargs)
        unknown = sorted(set(kw) - {"train", "validation", "test", "tokenizer"})
        if unknown or "train" not in kw or "tokenizer" not in kw:
            raise RecipeError(f"data.kwargs for squad: train (file), tokenizer (required), validation and test "
                              f"(optional); got {sorted(kw)}")
        if "test" in kw:
            self.sources["test"] = str(resolve_data_file(str(kw["test"])))
        self.tokenizer = load_tokenizer(str(kw["tokenizer"]))
        self.datasets = {}
        for split in ("train", "validation"):
            if split in kw:
                path = resolve_data_file(str(kw[split]))
                self.sources[split] = str(path)
                _, qs = load_dataset(path)
                self.datasets[split] = make_features(qs, self.tokenizer, self.max_len, self.doc_stride, self.max_query_len,
                                                     with_answers=True)
        implied = _check_implied({"vocab_size": self.tokenizer.get_vocab_size(), "head": "qa"}, model_kwargs, "the task")
        if model_kwargs.get("max_seq_len", self.max_len) < self.max_len:
            raise RecipeError(f"model.kwargs.max_seq_len={model_kwargs['max_seq_len']} < task max_len={self.max_len}")
        return implied

    def check_model(self, model: nn.Module) -> None:
        if getattr(model.cfg, "head", None) != "qa":
            raise RecipeError(f"task 'extractive_qa' needs a text encoder with head='qa'; got {type(model).__name__}")

    def collate(self, items: Sequence[tuple[int, Any]], seed: int) -> dict[str, torch.Tensor]:
        from ..evals.qa import collate_features

        return collate_features([f for _, f in items], pad_id=self.tokenizer.token_to_id("[PAD]") or 0)

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["input_ids"].shape[0])

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        start, end = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        ce = F.cross_entropy(start.float(), batch["start_positions"], reduction="sum")
        return (ce + F.cross_entropy(end.float(), batch["end_positions"], reduction="sum")) / 2

    def describe_data(self) -> dict[str, Any]:
        return {"name": "squad", "files": dict(self.sources), "windows": {k: len(v) for k, v in self.datasets.items()},
                "max_len": self.max_len, "doc_stride": self.doc_stride}

    def export_files(self, out_dir: Path) -> dict[str, Any]:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(out_dir / "tokenizer.json"))
        return {"tokenizer": "tokenizer.json"}


class _Images(Dataset):
    """(N, H, W) uint8 images and labels as ``(image, label)`` pairs; the task collates and augments."""

    def __init__(self, images: Any, labels: Any):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        import numpy as np

        return torch.from_numpy(np.array(self.images[i])), int(self.labels[i])


@register_task
class ImageClassification(Task):
    """Image classification for ViTs: grey images padded with a black border to ``img_size`` (centred), then
    normalised with the training set's pixel mean and std; training batches get ``augment`` (random crop after ``crop_pad`` pixels
    of padding, and horizontal flips), drawn from the sample's own seeded generator (exact resume).

    Data: ``data: {name: fashion-mnist | mnist, kwargs: {img_size: 32}}`` (``dslm-zoo data prepare NAME``).
    """

    name = "image_classification"
    unit = "samples"

    def __init__(self, augment: bool = True, crop_pad: int = 4, hflip: bool = True, label_smoothing: float = 0.0):
        if crop_pad < 0 or not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"crop_pad must be >= 0 and label_smoothing in [0, 1), got {crop_pad}, {label_smoothing}")
        self.augment, self.crop_pad, self.hflip, self.label_smoothing = augment, crop_pad, hflip, label_smoothing
        self.img_size = 0
        self.mean = self.std = 0.0
        self.data: Any = None

    def setup(self, data: DataSection, model_kwargs: dict[str, Any]) -> dict[str, Any]:
        from ..data.images import IMAGE_SETS, load_image_data

        if data.name not in IMAGE_SETS:
            raise RecipeError(f"task 'image_classification' reads an image data set {sorted(IMAGE_SETS)}, got {data.name!r}")
        kw = dict(data.kwargs)
        self.img_size = int(kw.pop("img_size", 32))
        if kw:
            raise RecipeError(f"data.kwargs for {data.name}: img_size only; got {sorted(kw)}")
        self.data = load_image_data(data.name)
        h = self.data.images["train"].shape[1]
        if self.img_size < h:
            raise RecipeError(f"data.kwargs.img_size={self.img_size} is smaller than the {h}x{h} images")
        self.mean, self.std = self.data.mean_std
        self.datasets = {("validation" if s == "test" else s): _Images(self.data.images[s], self.data.labels[s])
                         for s in self.data.images}
        return _check_implied({"img_size": self.img_size, "in_chans": 1, "num_classes": len(self.data.classes)}, model_kwargs)

    def check_model(self, model: nn.Module) -> None:
        if not hasattr(model.cfg, "img_size"):
            raise RecipeError(f"task 'image_classification' needs a ViT, got {type(model).__name__}")

    def _pad(self, x: torch.Tensor, p: int) -> torch.Tensor:
        return F.pad(x, (p, p, p, p))

    def collate(self, items: Sequence[tuple[int, Any]], seed: int) -> dict[str, torch.Tensor]:
        imgs, labels = [], []
        for draw, (img, label) in items:
            x = img.float()[None] / 255.0
            d = self.img_size - x.shape[-1]
            x = F.pad(x, (d // 2, d - d // 2, d // 2, d - d // 2))  # black border, like the images' own background
            if self.augment and draw >= 0:  # eval draws are negative: no augmentation
                g = _sample_generator(seed, draw)
                if self.crop_pad:
                    p = self.crop_pad
                    i, j = torch.randint(0, 2 * p + 1, (2,), generator=g).tolist()
                    x = self._pad(x, p)[:, i : i + self.img_size, j : j + self.img_size]
                if self.hflip and torch.rand((), generator=g) < 0.5:
                    x = x.flip(-1)
            imgs.append((x - self.mean) / self.std)
            labels.append(label)
        return {"images": torch.stack(imgs), "labels": torch.tensor(labels)}

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["labels"].numel())

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(batch["images"])
        return F.cross_entropy(logits.float(), batch["labels"], reduction="sum", label_smoothing=self.label_smoothing)

    def eval_sums(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = model(batch["images"]).float()
        return {"loss": F.cross_entropy(logits, batch["labels"], reduction="sum"),
                "correct": (logits.argmax(-1) == batch["labels"]).sum().double()}

    def metrics(self, sums: dict[str, float], units: int) -> dict[str, float]:
        return {"eval_loss": sums["loss"] / max(units, 1), "eval_acc": sums["correct"] / max(units, 1)}

    def describe_data(self) -> dict[str, Any]:
        return {"name": self.data.name, "images": {k: len(v) for k, v in self.datasets.items()}, "img_size": self.img_size,
                "padding": "black border to img_size, centred, then normalised", "mean": self.mean, "std": self.std}

    def export_files(self, out_dir: Path) -> dict[str, Any]:
        return {"input_size": (1, self.img_size, self.img_size), "mean": (self.mean,), "std": (self.std,),
                "num_classes": len(self.data.classes), "label_names": tuple(self.data.classes)}


# SpecAugment policies of fairseq's S2TDataConfigWriter: (freq masks, F, time masks, T); time warp 0, p = 1.0
SPECAUGMENT = {"LB": (1, 27, 1, 100), "LD": (2, 27, 2, 100), "none": (0, 0, 0, 0)}
ST_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0..3, fairseq's (and the speech config's bos/pad/eos)


def train_target_tokenizer(texts: Sequence[str], vocab_size: int) -> Any:
    """A unigram subword tokenizer (SentencePiece's model, as fairseq's MuST-C recipe uses) trained with
    Hugging Face ``tokenizers``; ``<s> <pad> </s> <unk>`` get ids 0-3."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=list(ST_SPECIALS), unk_token="<unk>",
                                      show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


@register_task
class SpeechTranslation(Task):
    """Speech translation on a MuST-C tree (:mod:`dslm_zoo.data.mustc`; real MuST-C or ``st-en-de``): 80-dim
    fbank with utterance CMVN computed per utterance, SpecAugment on training batches (fairseq's LB policy by
    default, masks drawn from the sample's seeded generator), targets tokenized by a unigram model trained on
    the training targets, label-smoothed cross-entropy over target tokens (padding ignored).

    Data: ``data: {name: mustc, kwargs: {root: DIR, pair: en-de, train: train, validation: dev,
    vocab_size: 8000}}`` (or ``tokenizer: tokenizer.json`` instead of training one).
    """

    name = "speech_translation"
    unit = "tokens"

    def __init__(self, label_smoothing: float = 0.1, specaugment: str = "LB", max_frames: int = 3000):
        if not 0.0 <= label_smoothing < 1.0 or specaugment not in SPECAUGMENT or max_frames < 5:
            raise ValueError(f"label_smoothing in [0, 1), specaugment in {sorted(SPECAUGMENT)}, max_frames >= 5; got "
                             f"{label_smoothing}, {specaugment!r}, {max_frames}")
        self.label_smoothing, self.specaugment, self.max_frames = label_smoothing, specaugment, max_frames
        self.tokenizer: Any = None
        self.fbank_cfg: dict[str, Any] = dict(num_mel_bins=80, frame_length=25.0, frame_shift=10.0, sample_rate=16000,
                                              cmvn="utterance", dither=0.0)
        self.info: dict[str, Any] = {}

    def setup(self, data: DataSection, model_kwargs: dict[str, Any]) -> dict[str, Any]:
        from ..data.mustc import filter_segments, read_split

        if data.name != "mustc":
            raise RecipeError(f"task 'speech_translation' reads data.name='mustc' (a MuST-C tree), got {data.name!r}")
        kw = dict(data.kwargs)
        allowed = {"root", "pair", "train", "validation", "vocab_size", "tokenizer"}
        if set(kw) - allowed or "root" not in kw:
            raise RecipeError(f"data.kwargs for mustc: root (required), {sorted(allowed - {'root'})}; got {sorted(kw)}")
        pair = kw.get("pair", "en-de")
        self.datasets = {}
        for split, name in (("train", kw.get("train", "train")), ("validation", kw.get("validation", "dev"))):
            segs, dropped = filter_segments(read_split(kw["root"], pair, name), train=split == "train",
                                            max_frames=self.max_frames)
            self.datasets[split] = segs
            self.info[split] = {"split": name, "segments": len(segs), "dropped": dropped}
        self.info.update(root=str(kw["root"]), pair=pair)
        if "tokenizer" in kw:
            self.tokenizer = load_tokenizer(str(kw["tokenizer"]))
        else:
            self.tokenizer = train_target_tokenizer([s.tgt for s in self.datasets["train"]], int(kw.get("vocab_size", 8000)))
        ids = [self.tokenizer.token_to_id(t) for t in ST_SPECIALS]
        if ids != [0, 1, 2, 3]:
            raise RecipeError(f"the target tokenizer must give {ST_SPECIALS} the ids 0-3, got {ids}")
        return _check_implied({"vocab_size": self.tokenizer.get_vocab_size(), "n_mels": 80}, model_kwargs)

    def check_model(self, model: nn.Module) -> None:
        if not hasattr(model.cfg, "n_mels"):
            raise RecipeError(f"task 'speech_translation' needs a speech model (dslm_st_*), got {type(model).__name__}")

    def _specaugment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        nf, F_, nt, T_ = SPECAUGMENT[self.specaugment]
        T, n_bins = x.shape
        x = x.clone()
        for _ in range(nf):
            w = int(torch.randint(0, F_ + 1, (1,), generator=g))
            f0 = int(torch.randint(0, max(1, n_bins - w), (1,), generator=g))
            x[:, f0 : f0 + w] = 0.0  # 0 = the CMVN mean
        for _ in range(nt):
            w = int(torch.randint(0, min(T_, T) + 1, (1,), generator=g))
            t0 = int(torch.randint(0, max(1, T - w), (1,), generator=g))
            x[t0 : t0 + w] = 0.0
        return x

    def collate(self, items: Sequence[tuple[int, Any]], seed: int) -> dict[str, torch.Tensor]:
        from ..data.mustc import load_audio
        from ..models.speech import collate_fbank, compute_fbank

        feats, targets = [], []
        for draw, seg in items:
            x = compute_fbank(torch.from_numpy(load_audio(seg, self.fbank_cfg["sample_rate"])), self.fbank_cfg["sample_rate"],
                              self.fbank_cfg)
            if draw >= 0 and self.specaugment != "none":
                x = self._specaugment(x, _sample_generator(seed, draw))
            feats.append(x)
            targets.append(self.tokenizer.encode(seg.tgt).ids)
        f, lengths = collate_fbank(feats)
        n = max(len(t) for t in targets) + 1
        tgt_in = torch.full((len(targets), n), 1, dtype=torch.long)  # <pad> = 1
        tgt_out = tgt_in.clone()
        for i, t in enumerate(targets):
            tgt_in[i, 0] = 0  # <s>
            tgt_in[i, 1 : len(t) + 1] = torch.tensor(t, dtype=torch.long)
            tgt_out[i, : len(t)] = torch.tensor(t, dtype=torch.long)
            tgt_out[i, len(t)] = 2  # </s>
        return {"feats": f, "feat_lengths": lengths, "tgt_in": tgt_in, "tgt_out": tgt_out}

    def lengths(self, split: str) -> Sequence[int]:
        """Milliseconds of audio per segment (fbank frames are every 10 ms): what bucketing sorts by."""
        return [int(round(1000 * s.duration)) for s in self.datasets[split]]

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["tgt_out"] != 1).sum())

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(batch["feats"], batch["feat_lengths"], batch["tgt_in"])
        return F.cross_entropy(logits.float().flatten(0, 1), batch["tgt_out"].flatten(), ignore_index=1, reduction="sum",
                               label_smoothing=self.label_smoothing)

    def eval_sums(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = model(batch["feats"], batch["feat_lengths"], batch["tgt_in"])  # no smoothing: a true perplexity
        return {"loss": F.cross_entropy(logits.float().flatten(0, 1), batch["tgt_out"].flatten(), ignore_index=1, reduction="sum")}

    def describe_data(self) -> dict[str, Any]:
        return {"name": "mustc", **self.info, "vocab_size": self.tokenizer.get_vocab_size(), "specaugment": self.specaugment}

    def export_files(self, out_dir: Path) -> dict[str, Any]:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(out_dir / "tokenizer.json"))
        fb = {k: v for k, v in self.fbank_cfg.items() if k != "sample_rate"}
        return {"tokenizer": "tokenizer.json", "sample_rate": self.fbank_cfg["sample_rate"], "fbank": fb}
