"""Plain-value settings shared by the CLI, the dashboard and the benchmarks.

Each dataclass validates itself in ``__post_init__`` and raises a typed :class:`CompressionError`
subclass with a message that says what to change, so a bad value never reaches a model.
Modelled on the ``DataTrainingArguments`` of transformers' ``run_summarization.py`` example.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .errors import CompressionError, DatasetError, LayerSelectionError

STRATEGIES = ("spread", "alternate", "first", "last")
#: Training methods of a run: Shrink and Fine-Tune on the labels, or knowledge distillation from the base.
METHODS = ("sft", "kd")
ATTENTION_LOSSES = ("kl", "mse")
TEACHER_DTYPE_NAMES = ("auto", "float32", "bfloat16", "8bit")


@dataclass
class ShrinkArgs:
    """Which layers the student keeps.

    ``encoder_layers``/``decoder_layers`` are a count (``3``), comma-separated indices (``"0,3,5"``),
    or ``None`` to keep the whole stack. ``strategy`` picks the layers for a count (see
    :func:`compression.layers.select_layers`).
    """

    encoder_layers: int | str | None = None
    decoder_layers: int | str | None = None
    strategy: str = "spread"

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise LayerSelectionError(
                f"unknown strategy {self.strategy!r}: choose one of {', '.join(STRATEGIES)}, "
                "or give explicit indices such as '0,3,5'"
            )


@dataclass
class DataArgs:
    """Where the article/summary pairs come from and how they are tokenized.

    Either local files (``train_file``/``validation_file``: JSON, JSONL, CSV or Parquet), a dataset
    preset (``dataset`` = a name of :data:`compression.dataset_presets.DATASET_PRESETS`, e.g.
    ``"debian-descriptions"``: local files under ``../shared``), or a hub dataset (``dataset`` +
    ``dataset_config``). Lengths are in tokens; left ``None`` they become the preset's (Debian: 256
    source / 32 target), else 512 / 64. ``prefix=None`` means the preset's prefix, else the model
    family's default (``"summarize: "`` for T5, none for BART).
    """

    train_file: str | None = None
    validation_file: str | None = None
    dataset: str | None = None
    dataset_config: str | None = None
    train_split: str = "train"
    validation_split: str = "validation"
    text_column: str = "document"
    summary_column: str = "summary"
    prefix: str | None = None
    max_source_length: int | None = None
    max_target_length: int | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = None

    def __post_init__(self) -> None:
        from .dataset_presets import DEFAULT_MAX_SOURCE_LENGTH, DEFAULT_MAX_TARGET_LENGTH, dataset_preset

        preset = dataset_preset(self.dataset)
        if self.max_source_length is None:
            self.max_source_length = preset.max_source_length if preset else DEFAULT_MAX_SOURCE_LENGTH
        if self.max_target_length is None:
            self.max_target_length = preset.max_target_length if preset else DEFAULT_MAX_TARGET_LENGTH
        if self.prefix is None and preset is not None:
            self.prefix = preset.prefix
        if self.max_source_length <= 0 or self.max_target_length <= 0:
            raise DatasetError("max source and target lengths must be positive numbers of tokens")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise DatasetError(f"{name.replace('_', ' ')} must be positive (or left unset for all)")


@dataclass
class TrainArgs:
    """Fine-tuning settings (SFT recipe: AdamW at 3e-4, one epoch).

    ``bf16``: ``"auto"`` uses bf16 autocast where the device supports it, ``"yes"``/``"no"`` force it.
    ``device``: ``"auto"`` picks CUDA, then Apple MPS, then CPU.
    ``eval_steps``: validation loss every N optimizer steps (``None``: half-way and at the end).
    """

    epochs: float = 1.0
    batch_size: int = 8
    eval_batch_size: int | None = None
    learning_rate: float = 3e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    gradient_accumulation_steps: int = 1
    freeze_embeddings: bool = False
    freeze_encoder: bool = False
    group_by_length: bool = True
    bf16: str = "auto"
    device: str = "auto"
    seed: int = 42
    logging_steps: int = 5
    eval_steps: int | None = None
    max_steps: int | None = None
    dataloader_workers: int = 0

    def __post_init__(self) -> None:
        if self.epochs <= 0:
            raise CompressionError("epochs must be positive (1 is the SFT default)")
        if self.batch_size <= 0 or (self.eval_batch_size is not None and self.eval_batch_size <= 0):
            raise CompressionError("batch size must be a positive number of pairs")
        if not self.learning_rate > 0:
            raise CompressionError("learning rate must be positive (3e-4 is the SFT default)")
        if self.bf16 not in ("auto", "yes", "no"):
            raise CompressionError("bf16 must be 'auto', 'yes' or 'no'")
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            raise CompressionError("device must be 'auto', 'cpu', 'cuda' or 'mps'")


@dataclass
class EvalArgs:
    """Generation and scoring settings. Lengths in tokens; ``bootstrap_samples`` resamples for the CI."""

    max_new_tokens: int = 64
    num_beams: int = 1
    batch_size: int = 16
    bootstrap_samples: int = 1000
    confidence: float = 0.95
    latency_samples: int = 8

    def __post_init__(self) -> None:
        if self.max_new_tokens <= 0 or self.num_beams <= 0 or self.batch_size <= 0:
            raise CompressionError("max new tokens, beams and batch size must be positive")
        if not 0 < self.confidence < 1:
            raise CompressionError("confidence must lie between 0 and 1 (e.g. 0.95)")


@dataclass
class KDArgs:
    """Distillation weights and settings (defaults: seq2seq-distillation's ``distillation.py``).

    ``alpha_ce``: weight of the label cross-entropy (their ``alpha_mlm``, 0.2). ``alpha_kl``: weight
    of the soft-target KL (their ``alpha_ce``, 0.8). ``alpha_hidden``: hidden-state MSE (their
    ``alpha_hid``, 0.0). ``alpha_attention``: attention-map loss (0.0). ``temperature``: softmax
    temperature T of the KL (2.0). ``attention_loss``: ``"kl"`` (MiniLM) or ``"mse"`` (TinyBERT) on
    attention probabilities. ``normalize_hidden``: compare hidden states after a parameter-free
    layer norm over the hidden dimension (their ``--normalize_hidden``; useful for T5, whose residual
    stream grows large). ``teacher_dtype``: ``"float32"``, ``"bfloat16"`` (halves the teacher's
    memory), ``"8bit"`` (bitsandbytes LLM.int8() layers, the rest bfloat16: a quarter to a half of
    the float32 memory) or ``"auto"`` (bfloat16 when training runs under bf16 autocast, else float32).

    Raises:
        CompressionError: a negative or non-finite weight, all weights zero, T <= 0, an unknown
            attention loss or teacher dtype.
    """

    alpha_ce: float = 0.2
    alpha_kl: float = 0.8
    alpha_hidden: float = 0.0
    alpha_attention: float = 0.0
    temperature: float = 2.0
    attention_loss: str = "kl"
    normalize_hidden: bool = False
    teacher_dtype: str = "auto"

    def __post_init__(self) -> None:
        weights = {name: getattr(self, f"alpha_{name}") for name in ("ce", "kl", "hidden", "attention")}
        for name, value in weights.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise CompressionError(f"KD weight alpha_{name} must be a number >= 0 (got {value!r})")
        if sum(weights.values()) <= 0:
            raise CompressionError("all KD weights are 0: give at least one positive weight (defaults: ce 0.2, kl 0.8)")
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature > 0):
            raise CompressionError(
                f"KD temperature must be positive (2.0 is the usual value), got {self.temperature!r}")
        if self.attention_loss not in ATTENTION_LOSSES:
            raise CompressionError(f"attention loss must be 'kl' or 'mse', got {self.attention_loss!r}")
        if self.teacher_dtype not in TEACHER_DTYPE_NAMES:
            raise CompressionError(
                f"teacher dtype must be 'auto', 'float32', 'bfloat16' or '8bit', got {self.teacher_dtype!r}")

    def weights(self) -> dict[str, float]:
        """``{"ce": alpha_ce, "kl": alpha_kl, "hidden": alpha_hidden, "attention": alpha_attention}``."""
        return {"ce": self.alpha_ce, "kl": self.alpha_kl, "hidden": self.alpha_hidden,
                "attention": self.alpha_attention}


@dataclass
class RunConfig:
    """One whole run: base checkpoint -> shrink -> train -> evaluate -> quantize -> export.

    ``model`` is a hub id or a local folder. ``method`` is how the shrunk student is trained:
    ``"sft"`` (Shrink and Fine-Tune: cross-entropy on the reference summaries, Shleifer & Rush 2020,
    Section 3) or ``"kd"`` (knowledge distillation from the base model as the frozen teacher, with
    the ``kd`` weights, :func:`compression.distill.distill`); ``kd`` is ignored under SFT. ``quantize`` is ``"auto"`` (the mode that generates
    fastest on the device, :func:`compression.quantize.fastest_mode`), ``"none"``, ``"8bit"``,
    ``"4bit"`` (NF4), ``"fp4"``, ``"fp16"`` or ``"bf16"``. ``prune_vocab`` keeps only the vocabulary
    the training and validation texts use in the quantized copy (:mod:`compression.vocab`): a smaller,
    faster model, at the cost of mapping unseen tokens to ``<unk>`` on new text. ``quantize_wo``
    quantizes T5's feed-forward output layers ``wo`` too under 8bit/4bit/fp4 (the smallest file,
    loadable with :func:`compression.load.load_model` but not with plain ``from_pretrained``;
    :func:`compression.quantize.quantize`).
    """

    model: str
    output_dir: str
    shrink: ShrinkArgs = field(default_factory=ShrinkArgs)
    data: DataArgs = field(default_factory=DataArgs)
    train: TrainArgs = field(default_factory=TrainArgs)
    eval: EvalArgs = field(default_factory=EvalArgs)
    quantize: str = "auto"
    prune_vocab: bool = False
    quantize_wo: bool = False
    name: str | None = None
    method: str = "sft"
    kd: KDArgs = field(default_factory=KDArgs)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise CompressionError(f"unknown training method {self.method!r}: choose 'sft' (fine-tune on the "
                                   "summaries) or 'kd' (distil from the base model)")

    def to_dict(self) -> dict:
        """The resolved config as plain JSON-ready values."""
        return asdict(self)
