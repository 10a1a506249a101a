"""Plain-value settings shared by the CLI, the dashboard and the benchmarks.

Each dataclass validates itself in ``__post_init__`` and raises a typed :class:`CompressionError`
subclass with a message that says what to change, so a bad value never reaches a model.
Modelled on the ``DataTrainingArguments`` of transformers' ``run_summarization.py`` example.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .errors import CompressionError, DatasetError, LayerSelectionError

STRATEGIES = ("spread", "alternate", "first", "last")


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

    Either local files (``train_file``/``validation_file``: JSON, JSONL, CSV or Parquet) or a hub
    dataset (``dataset`` + ``dataset_config``). Lengths are in tokens. ``prefix=None`` means the
    model family's default (``"summarize: "`` for T5, none for BART).
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
    max_source_length: int = 512
    max_target_length: int = 64
    max_train_samples: int | None = None
    max_eval_samples: int | None = None

    def __post_init__(self) -> None:
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
class RunConfig:
    """One whole SFT run: base checkpoint -> shrink -> fine-tune -> evaluate -> quantize -> export.

    ``model`` is a hub id or a local folder. ``quantize`` is ``"auto"`` (the mode that generates
    fastest on the device, :func:`compression.quantize.fastest_mode`), ``"none"``, ``"8bit"``,
    ``"4bit"`` (NF4), ``"fp4"``, ``"fp16"`` or ``"bf16"``. ``prune_vocab`` keeps only the vocabulary
    the training and validation texts use in the quantized copy (:mod:`compression.vocab`): a smaller,
    faster model, at the cost of mapping unseen tokens to ``<unk>`` on new text.
    """

    model: str
    output_dir: str
    shrink: ShrinkArgs = field(default_factory=ShrinkArgs)
    data: DataArgs = field(default_factory=DataArgs)
    train: TrainArgs = field(default_factory=TrainArgs)
    eval: EvalArgs = field(default_factory=EvalArgs)
    quantize: str = "auto"
    prune_vocab: bool = False
    name: str | None = None

    def to_dict(self) -> dict:
        """The resolved config as plain JSON-ready values."""
        return asdict(self)
