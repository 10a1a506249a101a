"""The run recipe: every setting of the CLI, the dashboard and the benchmarks, defined once.

Each setting is one dataclass field with its type (``Literal`` for modes), its default and
``metadata={"help": ...}`` (plus its range: ``ge``/``gt``/``le``/``lt``). From these fields the CLI
generates its flags, types, choices and help (:mod:`compression.__main__`), the dashboard takes its
widget defaults, and :func:`validate` checks every value the moment an object is made, raising a
typed :class:`CompressionError` subclass whose message says what to change, so a bad value never
reaches a model. Adding a training setting is adding one field here (see the README's developer notes).

Modelled on the ``ModelArguments``/``DataTrainingArguments`` dataclasses of transformers'
``run_summarization.py`` example (read by ``HfArgumentParser``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

from .dataset_presets import DATASET_PRESETS, DEFAULT_MAX_SOURCE_LENGTH, DEFAULT_MAX_TARGET_LENGTH, dataset_preset
from .errors import CompressionError, DatasetError, LayerSelectionError, ModularError

Strategy = Literal["spread", "alternate", "first", "last"]
#: ``Strategy`` plus ``importance``: keep the highest-scoring layers by a layer-importance score
#: measured on calibration pairs (:mod:`compression.importance`).
ShrinkStrategy = Literal["spread", "alternate", "first", "last", "importance"]
ImportanceScore = Literal["drop_one_loss", "block_influence"]
#: Training methods of a run: Shrink and Fine-Tune on the labels, knowledge distillation from the base,
#: or sequence-level KD on the base's own summaries (pseudo-labels).
Method = Literal["sft", "kd", "pseudo"]
AttentionLoss = Literal["kl", "mse"]
TeacherDtype = Literal["auto", "float32", "bfloat16", "8bit"]
Bf16 = Literal["auto", "yes", "no"]
#: ``auto``: on for sources of :data:`compression.train.CHECKPOINTING_FROM` tokens or more (measured there).
GradientCheckpointing = Literal["auto", "yes", "no"]
Optimizer = Literal["adamw", "adafactor"]
#: ``auto``: ``fast`` on a CPU, ``torch`` elsewhere (:mod:`compression.fast_dropout`).
DropoutMasks = Literal["auto", "fast", "torch"]
#: ``auto``: ``hold`` on a CPU where the C library is glibc (:mod:`compression.cpu_allocator`).
Allocator = Literal["auto", "hold", "system"]
#: ``auto``: ``fused`` for a T5-family fine-tune in fp32 on a CPU (:mod:`compression.fused_cross_entropy`).
LmHeadLoss = Literal["auto", "fused", "full"]
Device = Literal["auto", "cpu", "cuda", "mps"]
#: ``auto``: the smallest copy not slower than float32 here, measured (:mod:`compression.auto_quantize`).
Quantize = Literal["auto", "none", "8bit", "4bit", "fp4", "fp16", "bf16"]
#: Weight types of the deployed CTranslate2 copy (:mod:`compression.deploy`).
DeployQuantization = Literal["int8", "int8_float16", "int8_bfloat16", "float32"]
Priority = Literal["size", "speed"]

STRATEGIES = typing.get_args(Strategy)
IMPORTANCE = "importance"
SHRINK_STRATEGIES = typing.get_args(ShrinkStrategy)
IMPORTANCE_SCORES = typing.get_args(ImportanceScore)
METHODS = typing.get_args(Method)
ATTENTION_LOSSES = typing.get_args(AttentionLoss)
TEACHER_DTYPE_NAMES = typing.get_args(TeacherDtype)
QUANTIZE_CHOICES = typing.get_args(Quantize)
DEPLOY_QUANTIZATIONS = typing.get_args(DeployQuantization)
DEFAULT_GRANULARITIES = (2, 3, 4)
#: Longest source accepted (tokens): the 16k inputs LongT5 was built for (Guo et al. 2022, section 4).
MAX_SOURCE_LENGTH = 16_384


def setting(default: Any = dataclasses.MISSING, help: str = "", *, label: str | None = None,  # noqa: A002
            ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
            default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its help text and range in ``metadata``.

    ``label`` names the setting in error messages (default: the field name with spaces);
    ``ge``/``gt``/``le``/``lt`` bound a number (checked by :func:`validate`).
    """
    metadata = {"help": help, "label": label, "ge": ge, "gt": gt, "le": le, "lt": lt}
    return field(default=default, default_factory=default_factory, metadata=metadata)


def _members(annotation) -> tuple:
    """The members of a union annotation (``int | None`` -> ``(int, NoneType)``), flattening Literals in."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return tuple(m for arg in typing.get_args(annotation) for m in _members(arg))
    return (annotation,)


@functools.cache
def field_types(cls) -> dict[str, tuple]:
    """``{field name: members of its type}`` of a settings dataclass, e.g. ``(int, NoneType)``;
    a ``Literal`` stays one member (read its choices with :func:`choices`)."""
    hints = typing.get_type_hints(cls)
    return {f.name: _members(hints[f.name]) for f in dataclasses.fields(cls)}


def choices(members: tuple) -> tuple | None:
    """The values a field of ``Literal`` type accepts, or ``None`` for a free field."""
    for member in members:
        if typing.get_origin(member) is Literal:
            return typing.get_args(member)
    return None


def label(f: dataclasses.Field) -> str:
    """How error messages name a field: its ``label`` metadata, else its name with spaces."""
    return f.metadata.get("label") or f.name.replace("_", " ")


def _bounds(meta) -> str:
    parts = []
    if meta.get("ge") is not None or meta.get("gt") is not None:
        parts.append(f">= {meta['ge']:g}" if meta.get("ge") is not None else f"> {meta['gt']:g}")
    if meta.get("le") is not None or meta.get("lt") is not None:
        parts.append(f"<= {meta['le']:g}" if meta.get("le") is not None else f"< {meta['lt']:g}")
    return " and ".join(parts)


def validate(obj, error: type[CompressionError] = CompressionError) -> None:
    """Check every field of the settings dataclass ``obj`` against its type and range.

    ``Literal`` fields must hold one of their values; ``bool`` fields a bool; ``int`` fields a whole
    number (a whole float such as ``8.0`` is stored as ``8``); ``float`` fields a finite number; numbers
    must lie within the field's ``ge``/``gt``/``le``/``lt`` metadata; ``None`` only where the type allows it.

    Raises:
        error: the first field that breaks its rule, named, with the accepted values.
    """
    kinds = field_types(type(obj))
    for f in dataclasses.fields(obj):
        value, members, name = getattr(obj, f.name), kinds[f.name], label(f)
        if value is None:
            if type(None) in members:
                continue
            raise error(f"{name} is required")
        allowed = choices(members)
        if allowed is not None:
            if value in allowed:
                continue
            if not any(m in (int, float, str, bool) for m in members):
                raise error(f"unknown {name} {value!r}: choose one of {', '.join(map(str, allowed))}")
        if bool in members:
            if not isinstance(value, bool):
                raise error(f"{name} must be true or false (got {value!r})")
            continue
        if isinstance(value, str) and str in members:
            continue
        number = float in members
        whole = int in members and not number
        if number or whole:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise error(f"{name} must be a {'whole ' if whole else ''}number (got {value!r})")
            if not math.isfinite(value):
                raise error(f"{name} must be a finite number (got {value!r})")
            if whole:
                if not float(value).is_integer():
                    raise error(f"{name} must be a whole number (got {value!r})")
                value = int(value)
                setattr(obj, f.name, value)
            meta = f.metadata
            if ((meta.get("ge") is not None and value < meta["ge"]) or (meta.get("gt") is not None and value <= meta["gt"])
                    or (meta.get("le") is not None and value > meta["le"])
                    or (meta.get("lt") is not None and value >= meta["lt"])):
                raise error(f"{name} must be {_bounds(meta)} (got {value!r})")


class _Settings:
    """Base of the settings dataclasses: :func:`validate` on creation with the class's error type."""

    _error: ClassVar[type[CompressionError]] = CompressionError

    def __post_init__(self) -> None:
        validate(self, self._error)


@dataclass
class ShrinkArgs(_Settings):
    """Which layers the student keeps (Shleifer & Rush 2020, section 3: maximally spaced layers).

    ``encoder_layers``/``decoder_layers`` are a count (``3``), comma-separated indices (``"0,3,5"``),
    or ``None`` to keep the whole stack (checked against the model by
    :func:`compression.layers.select_layers`). ``strategy="importance"`` keeps the layers with the
    highest ``importance_score`` measured on the first ``importance_samples`` training pairs
    (:mod:`compression.importance`).
    """

    _error: ClassVar[type[CompressionError]] = LayerSelectionError
    encoder_layers: int | str | None = setting(None, "encoder layers the student keeps: a count (e.g. 3) or "
                                                     "indices (e.g. 0,2,5); default: all")
    decoder_layers: int | str | None = setting(None, "decoder layers the student keeps: a count (e.g. 3) or "
                                                     "indices (e.g. 0,2,5); default: all")
    strategy: ShrinkStrategy = setting("spread", "which layers a count keeps (spread: maximally spaced, the SFT "
                                                 "paper's choice; importance: the highest-scoring layers on "
                                                 "calibration pairs)")
    importance_score: ImportanceScore = setting("drop_one_loss", "score the importance strategy ranks layers by")
    importance_samples: int = setting(32, "calibration pairs the importance strategy scores layers on", ge=1)


@dataclass
class DataArgs(_Settings):
    """Where the article/summary pairs come from and how they are tokenized.

    Either local files (``train_file``/``validation_file``: JSON, JSONL, CSV or Parquet), a dataset
    preset (``dataset`` = a name of :data:`compression.dataset_presets.DATASET_PRESETS`, e.g.
    ``"debian-descriptions"``: local files under ``../shared``), or a hub dataset (``dataset`` +
    ``dataset_config``). Lengths are in tokens; left ``None`` they become the preset's (Debian: 256
    source / 32 target), else 512 / 64. ``prefix=None`` means the preset's prefix, else the model
    family's default (``"summarize: "`` for T5, none for BART). ``shuffle_seed=None`` means the
    preset's (Debian: 0, its files are in package-name order), else the files' own order.
    """

    _error: ClassVar[type[CompressionError]] = DatasetError
    train_file: str | None = setting(None, "training pairs: a JSONL, JSON, CSV or Parquet file")
    validation_file: str | None = setting(None, "validation pairs (same formats); default: the first training pairs")
    dataset: str | None = setting(None, f"a dataset preset ({', '.join(DATASET_PRESETS)}: local files under "
                                        "../shared, with their own lengths and prefix) or a hub dataset id, instead "
                                        "of the data files")
    dataset_config: str | None = setting(None, "configuration of the hub dataset (e.g. 3.0.0)")
    train_split: str = setting("train", "split of the hub dataset to train on")
    validation_split: str = setting("validation", "split of the hub dataset to validate on")
    text_column: str = setting("document", "column holding the article")
    summary_column: str = setting("summary", "column holding the reference summary")
    prefix: str | None = setting(None, "text put before each document; default: the dataset preset's, else the "
                                       "model family's ('summarize: ' for T5, none for BART)")
    max_source_length: int | None = setting(None, "article tokens kept; default: the dataset preset's, else "
                                                  f"{DEFAULT_MAX_SOURCE_LENGTH} (up to {MAX_SOURCE_LENGTH:,}: "
                                                  "use a LongT5 model for long inputs)", ge=1, le=MAX_SOURCE_LENGTH)
    max_target_length: int | None = setting(None, "summary tokens kept; default: the dataset preset's, else "
                                                  f"{DEFAULT_MAX_TARGET_LENGTH}", ge=1)
    max_train_samples: int | None = setting(None, "train on the first N pairs; default: all", ge=1)
    max_eval_samples: int | None = setting(None, "validate on the first N pairs; default: all", ge=1)
    shuffle_seed: int | None = setting(None, "shuffle each split with this seed before the first N pairs are kept "
                                             "(for files sorted by a name); default: the dataset preset's "
                                             "(debian-descriptions: 0), else the files' order", ge=0)

    def __post_init__(self) -> None:
        preset = dataset_preset(self.dataset) if isinstance(self.dataset, str) else None
        if self.shuffle_seed is None and preset is not None:
            self.shuffle_seed = preset.shuffle_seed
        if self.max_source_length is None:
            self.max_source_length = preset.max_source_length if preset else DEFAULT_MAX_SOURCE_LENGTH
        if self.max_target_length is None:
            self.max_target_length = preset.max_target_length if preset else DEFAULT_MAX_TARGET_LENGTH
        if self.prefix is None and preset is not None:
            self.prefix = preset.prefix
        super().__post_init__()


@dataclass
class TrainArgs(_Settings):
    """Fine-tuning settings (SFT recipe: AdamW at 3e-4, one epoch; transformers ``Trainer``)."""

    epochs: float = setting(1.0, "passes over the training pairs (ignored when --max-steps is given)", gt=0)
    batch_size: int = setting(8, "training pairs per step and device", ge=1)
    eval_batch_size: int | None = setting(None, "pairs per validation step; default: the training batch size", ge=1)
    optimizer: Optimizer = setting(
        "adamw", "adamw: fused AdamW (fine-tuning); adafactor: Adafactor with updates scaled by each weight's RMS "
                 "(training from scratch, see compression.train.adafactor_kwargs)")
    learning_rate: float = setting(3e-4, "peak learning rate of the optimizer", gt=0)
    weight_decay: float = setting(0.0, "decoupled weight decay", ge=0)
    warmup_ratio: float = setting(0.0, "share of the steps spent warming the learning rate up, in [0, 1)", ge=0, lt=1)
    label_smoothing: float = setting(0.0, "share of the target probability spread evenly over the vocabulary "
                                          "(label-smoothed cross-entropy on the references; validation loss "
                                          "stays the plain cross-entropy)", ge=0, lt=1)
    gradient_accumulation_steps: int = setting(1, "steps whose gradients are summed before an update", ge=1)
    freeze_embeddings: bool = setting(False, "keep the token embeddings fixed")
    freeze_encoder: bool = setting(False, "keep the whole encoder fixed")
    group_by_length: bool = setting(True, "batch pairs of similar length together (less padding)")
    bf16: Bf16 = setting("auto", "bf16 autocast: auto uses it where the device supports it natively")
    dropout_masks: DropoutMasks = setting(
        "auto", "how dropout draws its random masks while training: fast draws 15 bits per element, four "
                "elements per 64-bit draw (compression.fast_dropout; same dropout, different random stream); "
                "torch: PyTorch's own, a random number per element; auto: fast on a CPU")
    allocator: Allocator = setting(
        "auto", "memory while training on a CPU: hold keeps freed memory in the process for the next step "
                "(glibc mallopt: no mmap per large tensor, no heap trimming; handed back after training; "
                "compression.cpu_allocator), system: the C library's defaults; auto: hold on a CPU where "
                "the C library is glibc")
    lm_head_loss: LmHeadLoss = setting(
        "auto", "how fine-tuning computes its cross-entropy: fused runs the LM head and the loss together, "
                "chunk by chunk over the real target tokens only, never writing the full vocabulary logits "
                "(compression.fused_cross_entropy; T5, mT5, UMT5 and LongT5); full: the model's own logits; "
                "auto: fused for those families when training in fp32 on a CPU")
    gradient_checkpointing: GradientCheckpointing = setting(
        "auto", "recompute each layer's activations in the backward pass instead of keeping them: less memory, "
                "more time per step; auto: on for long sources (see compression.train.CHECKPOINTING_FROM)")
    device: Device = setting("auto", "auto picks CUDA, then Apple MPS, then the CPU")
    seed: int = setting(42, "random seed of the data order and initialisation", ge=0)
    logging_steps: int = setting(5, "log the training loss every N optimizer steps", ge=1)
    eval_steps: int | None = setting(None, "validation loss every N optimizer steps; default: half-way and at "
                                           "the end", ge=1)
    max_steps: int | None = setting(None, "stop after N optimizer steps (overrides epochs)", ge=1)
    dataloader_workers: int = setting(0, "worker processes loading batches (0: in the training process)", ge=0)
    checkpoint_minutes: float = setting(10.0, "save the training state (weights, optimizer, schedule, RNG) to "
                                              "last-checkpoint/ every N minutes of training, so a killed run can "
                                              "resume; 0: only when cancelled", ge=0)


@dataclass
class EvalArgs(_Settings):
    """Generation and scoring settings. Lengths in tokens; ``bootstrap_samples`` resamples for the CI."""

    max_new_tokens: int = setting(64, "summary tokens generated at most", ge=1)
    num_beams: int = setting(1, "beam-search width (1: greedy)", ge=1)
    batch_size: int = setting(16, "articles summarised per generation batch", label="generation batch size", ge=1)
    batch_tokens: int = setting(8192, "padded source tokens per evaluation batch (generation and validation loss): "
                                      "long articles go fewer to a batch, one over the budget alone",
                                label="evaluation batch tokens", ge=1)
    bootstrap_samples: int = setting(1000, "bootstrap resamples of the ROUGE confidence interval", ge=1)
    confidence: float = setting(0.95, "level of the ROUGE confidence interval", gt=0, lt=1)
    latency_samples: int = setting(8, "articles timed one at a time for the latency (0: skip)", ge=0)


@dataclass
class KDArgs(_Settings):
    """Distillation weights and settings (defaults: seq2seq-distillation's ``distillation.py``).

    ``alpha_ce`` is their ``alpha_mlm``, ``alpha_kl`` their ``alpha_ce``, ``alpha_hidden`` their
    ``alpha_hid``. ``attention_loss``: ``"kl"`` (MiniLM) or ``"mse"`` (TinyBERT) on attention
    probabilities. ``normalize_hidden``: compare hidden states after a parameter-free layer norm
    (useful for T5, whose residual stream grows large). ``teacher_dtype``: ``"8bit"`` holds
    bitsandbytes LLM.int8() layers, the rest bfloat16; ``"auto"``: bfloat16 under bf16 autocast, else float32.

    Raises:
        CompressionError: a negative or non-finite weight, all weights zero, T <= 0, an unknown
            attention loss or teacher dtype.
    """

    alpha_ce: float = setting(0.2, "KD: weight of the label cross-entropy", label="KD weight alpha_ce", ge=0)
    alpha_kl: float = setting(0.8, "KD: weight of the soft-target KL", label="KD weight alpha_kl", ge=0)
    alpha_hidden: float = setting(0.0, "KD: weight of the hidden-state MSE", label="KD weight alpha_hidden", ge=0)
    alpha_attention: float = setting(0.0, "KD: weight of the attention-map loss", label="KD weight alpha_attention",
                                     ge=0)
    temperature: float = setting(2.0, "KD: softmax temperature T of the KL", label="KD temperature", gt=0)
    attention_loss: AttentionLoss = setting("kl", "KD: attention-map loss (kl: MiniLM, mse: TinyBERT)")
    normalize_hidden: bool = setting(False, "KD: layer-norm hidden states before the MSE")
    teacher_dtype: TeacherDtype = setting("auto", "KD: precision the teacher is held in (8bit: bitsandbytes)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if sum(self.weights().values()) <= 0:
            raise CompressionError("all KD weights are 0: give at least one positive weight (defaults: ce 0.2, kl 0.8)")

    def weights(self) -> dict[str, float]:
        """``{"ce": alpha_ce, "kl": alpha_kl, "hidden": alpha_hidden, "attention": alpha_attention}``."""
        return {"ce": self.alpha_ce, "kl": self.alpha_kl, "hidden": self.alpha_hidden,
                "attention": self.alpha_attention}


def parse_granularities(value: int | str | Iterable[int]) -> tuple[int, ...]:
    """Module granularities (layers replaced per module) from ``"2,3,4"``, ``3`` or ``(2, 3, 4)``, sorted.

    Raises:
        ModularError: not whole numbers, none, below 2, or repeated.
    """
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, int):
        parts = [value]
    else:
        parts = list(value)
    try:
        numbers = [int(part) for part in parts]
    except (TypeError, ValueError):
        raise ModularError(f"granularities {value!r} must be whole numbers, e.g. 2,3,4") from None
    if not numbers:
        raise ModularError("give at least one granularity (layers per module), e.g. 2,3,4")
    if any(g < 2 for g in numbers):
        raise ModularError(f"granularities {numbers}: each must be at least 2 (a module replaces 2 or more layers)")
    if len(set(numbers)) != len(numbers):
        raise ModularError(f"granularities {numbers} repeat a value: list each once")
    return tuple(sorted(numbers))


@dataclass
class ModularArgs(_Settings):
    """Settings of Modular Transformers module training (Zhou, Le Bras & Choi 2023; see
    :mod:`compression.modular` for the reasoning).

    Raises:
        ModularError: granularities below 2 or repeated, a rate outside (0, 1], negative weights or all
            zero, an unknown attention loss.
    """

    _error: ClassVar[type[CompressionError]] = ModularError
    granularities: tuple[int, ...] | str = setting(DEFAULT_GRANULARITIES, "teacher layers replaced per module, "
                                                                          "comma-separated (e.g. 2,3,4)")
    replace_rate_start: float = setting(0.5, "probability a span is replaced at the start (linear schedule)",
                                        gt=0, le=1)
    replace_rate_end: float = setting(1.0, "probability a span is replaced at the end", gt=0, le=1)
    curriculum: bool = setting(True, "sample coarse granularities first, fine ones last")
    alpha_ce: float = setting(1.0, "weight of the label cross-entropy", ge=0)
    alpha_hidden: float = setting(1.0, "weight of the hidden-state MSE per replaced span", ge=0)
    alpha_attention: float = setting(1.0, "weight of the attention-map loss per replaced span", ge=0)
    attention_loss: AttentionLoss = setting("kl", "attention-map loss (kl: MiniLM, mse: TinyBERT)")
    normalize_hidden: bool = setting(True, "layer-norm hidden states before the MSE")

    def __post_init__(self) -> None:
        self.granularities = parse_granularities(self.granularities)
        super().__post_init__()
        if self.alpha_ce + self.alpha_hidden + self.alpha_attention <= 0:
            raise ModularError("all loss weights are 0: give at least one positive weight")


@dataclass
class PseudoArgs(_Settings):
    """Sequence-level KD (pseudo-labels, Kim & Rush 2016; :mod:`compression.pseudo_labels`) settings.

    ``pseudo_min_rouge`` drops pseudo-labels whose ROUGE-L F1 (0-100) against the reference is below
    it (the distilbart recipe's filter); ``pseudo_cache_dir`` defaults to ``.pseudo-labels`` in the
    folder holding the run folder, so the runs there share the generated labels.
    """

    pseudo_beams: int = setting(1, "pseudo-labels: beams of the teacher's decoding (1: greedy)", ge=1)
    pseudo_max_new_tokens: int | None = setting(None, "pseudo-labels: tokens per label; default: the max target "
                                                      "length", ge=1)
    pseudo_min_rouge: float | None = setting(None, "pseudo-labels: drop labels whose ROUGE-L against the reference "
                                                   "is below this (0-100); default: keep all non-empty ones",
                                             label="pseudo-labels' minimum ROUGE-L", ge=0, le=100)
    pseudo_mix_references: bool = setting(False, "pseudo-labels: train on the reference pairs too")
    pseudo_cache_dir: str | None = setting(None, "pseudo-labels: cache folder; default: .pseudo-labels in the runs "
                                                 "folder")


@dataclass
class RunConfig(_Settings):
    """One whole run: base checkpoint -> shrink -> train -> evaluate -> quantize -> export.

    ``model`` is a hub id or a local folder; ``tokenizer`` a tokenizer folder when the checkpoint has
    none (recorded, so ``config.json`` is the whole recipe). ``method`` is how the shrunk student is
    trained: ``"sft"`` (Shrink and Fine-Tune, Shleifer & Rush 2020, section 3) or ``"kd"``
    (:func:`compression.distill.distill` from the base model with the ``kd`` weights; ``kd`` is
    ignored under SFT). ``quantize``: bitsandbytes 8bit/4bit (NF4)/fp4, half precision, ``"none"``,
    or ``"auto"`` (the smallest copy not slower than the float32 student on this machine, measured:
    :mod:`compression.auto_quantize`; never no copy). ``prune_vocab`` and ``quantize_wo``: see their
    help. ``deploy``: also convert the student to a CTranslate2 copy in ``RUN_DIR/deployed`` with
    ``deploy_quantization`` weights (:mod:`compression.deploy`), scored as the fourth model; a family
    CTranslate2 cannot convert gets a note instead.
    """

    model: str = setting(help="base checkpoint (the teacher): hub id or local folder")
    output_dir: str = setting(help="run folder")
    shrink: ShrinkArgs = setting(default_factory=ShrinkArgs)
    data: DataArgs = setting(default_factory=DataArgs)
    train: TrainArgs = setting(default_factory=TrainArgs)
    eval: EvalArgs = setting(default_factory=EvalArgs)
    quantize: Quantize = setting("auto", "quantized copy of the student (auto: the smallest copy not slower than "
                                         "the float32 student, timed on this machine; 8bit/4bit/fp4: bitsandbytes; "
                                         "fp16/bf16: half precision)",
                                 label="quantization")
    prune_vocab: bool = setting(False, "keep only the vocabulary the data uses in the quantized copy (smaller, "
                                       "faster; unseen words become <unk>)")
    quantize_wo: bool = setting(False, "8bit/4bit/fp4: quantize T5's feed-forward output layers (wo) too, which "
                                       "transformers keeps unquantized: the smallest file; it loads with this tool "
                                       "(compression.load.load_model), not with plain from_pretrained")
    name: str | None = setting(None, "run name used in the default folder")
    method: Method = setting("sft", "sft: fine-tune the student on the summaries; kd: distil it from the base "
                                    "model; pseudo: fine-tune it on the base model's own summaries of the training "
                                    "documents (sequence-level KD, cached)", label="training method")
    kd: KDArgs = setting(default_factory=KDArgs)
    pseudo: PseudoArgs = setting(default_factory=PseudoArgs)
    tokenizer: str | None = setting(None, "tokenizer folder when the checkpoint has none")
    deploy: bool = setting(True, "also make a deployed CTranslate2 copy of the student (RUN_DIR/deployed) where "
                                 "CTranslate2 supports the family")
    deploy_quantization: DeployQuantization = setting("int8", "weights of the deployed copy",
                                                      label="deployed-copy quantization")

    def __post_init__(self) -> None:
        for name, cls in SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise CompressionError(f"{name} must be a {cls.__name__}")
        super().__post_init__()

    def to_dict(self) -> dict:
        """The resolved config as plain JSON-ready values."""
        return asdict(self)

    @classmethod
    def from_form(cls, form: Mapping[str, Any]) -> RunConfig:
        """A validated config from *named* values, as a form or a ``config.json`` gives them.

        Keys are field names: top-level ones (``"model"``, ``"quantize"``), section fields as
        ``"train.epochs"``, or a section field's bare name where only one section has it
        (``"epochs"``; ``"batch_size"`` is ambiguous: write ``"train.batch_size"`` or
        ``"eval.batch_size"``). A nested mapping per section (``{"train": {...}}``, the shape of
        :meth:`to_dict`) works too. Form values are converted: numeric text to numbers, empty text
        to ``None`` for optional fields.

        Raises:
            CompressionError (and subclasses): an unknown or ambiguous key, or a value its field refuses.
        """
        top: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        top_fields = {f.name for f in dataclasses.fields(cls)} - set(SECTIONS)
        section_fields = {name: {f.name for f in dataclasses.fields(section)} for name, section in SECTIONS.items()}
        for key, value in form.items():
            if key in SECTIONS and isinstance(value, Mapping):
                for inner, inner_value in value.items():
                    nested[key][_known(key, inner, section_fields)] = inner_value
            elif "." in key:
                section, inner = key.split(".", 1)
                nested[section if section in SECTIONS else key][_known(section, inner, section_fields)] = value
            elif key in top_fields:
                top[key] = value
            else:
                owners = [name for name, names in section_fields.items() if key in names]
                if len(owners) != 1:
                    raise CompressionError(f"unknown setting {key!r}" if not owners else
                                           f"setting {key!r} is ambiguous: write {' or '.join(f'{o}.{key}' for o in owners)}")
                nested[owners[0]][key] = value
        top = _converted(cls, top)
        sections = {name: SECTIONS[name](**_converted(SECTIONS[name], values)) for name, values in nested.items()}
        return cls(**top, **sections)


SECTIONS: dict[str, type] = {"shrink": ShrinkArgs, "data": DataArgs, "train": TrainArgs, "eval": EvalArgs,
                             "kd": KDArgs, "pseudo": PseudoArgs}


def _known(section: str, name: str, section_fields: dict[str, set[str]]) -> str:
    if section not in section_fields or name not in section_fields[section]:
        raise CompressionError(f"unknown setting {section}.{name!r}")
    return name


def _converted(cls, values: dict[str, Any]) -> dict[str, Any]:
    """Form values as field values: numeric text to numbers, empty text to ``None`` for optional fields."""
    kinds = field_types(cls)
    out = {}
    for name, value in values.items():
        members = kinds[name]
        if isinstance(value, str) and choices(members) is None:
            text = value.strip()
            if text == "" and type(None) in members:
                value = None
            elif str not in members and (float in members or int in members):
                try:
                    value = float(text)
                except ValueError:
                    pass  # validate() names the field and what it needs
        out[name] = value
    return out
