"""The model card (``README.md``) every saved model folder carries, as one typed record.

A :class:`ModelCard` says how the model was made - its ``method`` decides the card's method line,
tags and sources, so an SFT student, a KD student, a pseudo-label KD student, an assembled Modular
Transformers student, a fine-tuned teacher and an untrained preset are each described truthfully -
and what it scored. :func:`compression.export.save_model` writes it; :meth:`ModelCard.from_model`
reads the facts a checkpoint records itself (family, depths, ``config.shrink``, ``config.modular``).
The front matter is ``huggingface_hub.ModelCardData``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import CompressionError

CardMethod = Literal["sft", "shrunk", "kd", "pseudo-label-kd", "modular", "fine-tune", "teacher", "preset"]

#: method -> (name in the title, hub tag, the card's method paragraph with its source).
METHODS: dict[str, tuple[str, str, str]] = {
    "sft": ("Shrink and Fine-Tune", "sft",
            "A shallower summarizer made by **Shrink and Fine-Tune** (SFT; Shleifer & Rush 2020, *Pre-trained "
            "Summarization Distillation*, section 3): a subset of the teacher's layers was copied into a "
            "student, which was then fine-tuned on article/summary pairs."),
    "shrunk": ("layer copying (not yet fine-tuned)", "shrunk",
               "A shallower summarizer made by copying a subset of the teacher's layers into a student - the "
               "first half of Shrink and Fine-Tune (Shleifer & Rush 2020, *Pre-trained Summarization "
               "Distillation*, section 3). It has **not been fine-tuned** yet: fine-tune it before use."),
    "kd": ("knowledge distillation", "knowledge-distillation",
           "A shallower summarizer made by **knowledge distillation** (KD; Shleifer & Rush 2020, *Pre-trained "
           "Summarization Distillation*, section 3; Hinton, Vinyals & Dean 2015): a subset of the teacher's "
           "layers was copied into a student, which was then trained to match the frozen teacher's output "
           "distributions (and, by its weights, the reference summaries, hidden states and attention maps)."),
    "pseudo-label-kd": ("pseudo-label distillation", "pseudo-labels",
                        "A shallower summarizer made by **pseudo-label distillation** (Shleifer & Rush 2020, "
                        "*Pre-trained Summarization Distillation*, section 3, \"PL\"; Kim & Rush 2016, "
                        "sequence-level KD): a subset of the teacher's layers was copied into a student, which "
                        "was then fine-tuned on summaries the teacher generated for the training articles."),
    "modular": ("Modular Transformers", "modular-transformers",
                "A smaller summarizer **assembled from Modular Transformers modules** (Zhou, Le Bras & Choi "
                "2023, *Modular Transformers*): spans of the teacher's layers were replaced by modules trained "
                "once against the frozen teacher; the student itself was not trained after assembling."),
    "fine-tune": ("fine-tuning", "fine-tuned",
                  "A summarizer **fine-tuned** on article/summary pairs (transformers' Seq2SeqTrainer)."),
    "teacher": ("training from random initialisation", "offline-teacher",
                "A summarizer **trained from random initialisation** on article/summary pairs as the teacher "
                "students are shrunk from: an architecture preset (T5-efficient shapes, Tay et al. 2022, *Scale "
                "Efficiently*) with the real T5 vocabulary, trained by this project's offline teacher recipe "
                "(`compression.teacher`, transformers' Seq2SeqTrainer). No pre-trained weights were used."),
    "preset": ("untrained preset", "untrained",
               "An **untrained** architecture preset (T5-efficient shapes, Tay et al. 2022, *Scale Efficiently*), "
               "randomly initialised: fine-tune it as a teacher before use."),
}


def _layers_text(value) -> str:
    if value is None:
        return "all"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _metric_cell(value, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        return format(value, spec)
    return str(value)


def _method_code(value: Any) -> str | None:
    """A method code from older free-text values (``"KD (distilled ...)"``, ``"SFT (...)"``)."""
    text = str(value or "").lower()
    if text in METHODS:
        return text
    for needle, code in (("random initialisation", "teacher"), ("pseudo", "pseudo-label-kd"), ("modular", "modular"), ("kd", "kd"),
                         ("distil", "kd"), ("sft", "sft"), ("shrink", "sft")):
        if needle in text:
            return code
    return None


@dataclass
class ModelCard:
    """How a saved model was made and what it scored; :meth:`render` gives the ``README.md`` text.

    ``method``: one of :data:`METHODS` (the method line, tags and sources follow from it).
    ``model_name``: the title (default: from the method and family). ``family``: ``"t5"``/``"bart"``.
    ``base_model``: the teacher (hub id or local path; only hub ids go into the front matter).
    ``encoder_layers``/``decoder_layers``: kept teacher layer indices, or counts (text).
    ``teacher_encoder_layers``/``teacher_decoder_layers``: the teacher's depths. ``strategy``: layer
    selection. ``datasets``: hub ids or file names. ``train_samples``, ``epochs``, ``learning_rate``.
    ``ratio``: compression ratio of an assembled student (×). ``quantization``: mode; ``quantized_wo``:
    T5's ``wo`` quantized too (the Use section then loads with :func:`compression.load.load_model`);
    ``pruned_vocab``: the Use section says how ids map. ``params``. ``command``: the exact command that
    made the model. ``training_time``: wall time, as text (e.g. ``"3,512 s training, 3,790 s in all"``).
    ``weights_dtype``: the dtype the weights are stored in when not fp32 (``"bfloat16"``; the Use section
    says that :func:`compression.load.load_model` reads them back as fp32). ``metrics``: ``{row name:
    {"rouge1", "rouge2", "rougeL", "rougeLsum", "validation_loss", "size_mib", "latency_ms"}}``.

    Raises:
        CompressionError: an unknown ``method``.
    """

    method: CardMethod = "fine-tune"
    model_name: str | None = None
    family: str = "t5"
    base_model: str | None = None
    encoder_layers: Any = None
    decoder_layers: Any = None
    teacher_encoder_layers: int | None = None
    teacher_decoder_layers: int | None = None
    strategy: str | None = None
    datasets: list[str] = field(default_factory=list)
    train_samples: int | None = None
    epochs: float | None = None
    learning_rate: float | None = None
    ratio: float | None = None
    quantization: str | None = None
    quantized_wo: bool = False
    pruned_vocab: bool = False
    params: int | None = None
    command: str | None = None
    training_time: str | None = None
    weights_dtype: str | None = None
    metrics: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise CompressionError(f"unknown model-card method {self.method!r}: choose one of {', '.join(METHODS)}")
        self.family = str(self.family or "t5").lower()

    @classmethod
    def from_model(cls, model) -> ModelCard:
        """The facts ``model.config`` records: family, depths, and the method - ``modular`` when
        ``config.modular`` exists, the ``config.shrink["method"]`` of a shrunk student (``"sft"``, or
        ``"kd"`` when distillation recorded it), else ``"fine-tune"``."""
        config = model.config
        card = cls(family="bart" if config.model_type == "bart" else "t5")
        for side, names in (("encoder", ("num_layers", "encoder_layers")),
                            ("decoder", ("num_decoder_layers", "decoder_layers"))):
            for attr in names:
                if isinstance(getattr(config, attr, None), int):
                    setattr(card, f"{side}_layers", f"{getattr(config, attr)} layers")
                    break
        modular, shrunk = getattr(config, "modular", None), getattr(config, "shrink", None)
        if isinstance(modular, dict):
            card.method = "modular"
            card.ratio = modular.get("ratio")
            card.teacher_encoder_layers = modular.get("teacher_encoder_layers")
            card.teacher_decoder_layers = modular.get("teacher_decoder_layers")
        elif isinstance(shrunk, dict):
            card.method = _method_code(shrunk.get("method")) or "sft"
            card.encoder_layers = shrunk.get("encoder_layers_kept", card.encoder_layers)
            card.decoder_layers = shrunk.get("decoder_layers_kept", card.decoder_layers)
            card.teacher_encoder_layers = shrunk.get("teacher_encoder_layers")
            card.teacher_decoder_layers = shrunk.get("teacher_decoder_layers")
            card.strategy = shrunk.get("strategy")
        return card

    def updated(self, facts: ModelCard | dict | None) -> ModelCard:
        """A copy with the given facts on top: another card's non-default fields, or a dict of field
        names (``dataset`` is taken as one entry of ``datasets``; a free-text ``method`` such as
        ``"KD (distilled from the base model)"`` is read as its code). Unknown keys are ignored."""
        if facts is None:
            return dataclasses.replace(self)
        if isinstance(facts, ModelCard):
            defaults = ModelCard()
            values = {f.name: getattr(facts, f.name) for f in dataclasses.fields(ModelCard)
                      if getattr(facts, f.name) != getattr(defaults, f.name)}
        else:
            values = dict(facts)
            if values.get("dataset"):
                values.setdefault("datasets", [values["dataset"]])
            if "method" in values:
                values["method"] = _method_code(values["method"]) or self.method
        names = {f.name for f in dataclasses.fields(ModelCard)}
        return dataclasses.replace(self, **{k: v for k, v in values.items() if k in names and v is not None})

    def render(self) -> str:
        """The ``README.md`` text: YAML front matter (``library_name: transformers``,
        ``pipeline_tag: summarization``, tags ``[summarization, <family>, distillation?, <method
        tag>]``, ``base_model`` and ``datasets`` when they are hub ids), the method paragraph, how
        it was made, the evaluation table (ROUGE F1 0-100, validation loss in nats/token, size MiB,
        latency ms at batch 1) and how to load it."""
        from huggingface_hub import ModelCardData

        from .export import is_hub_id

        title, tag, paragraph = METHODS[self.method]
        distilled = self.method in ("sft", "shrunk", "kd", "pseudo-label-kd", "modular")
        data = ModelCardData(
            library_name="transformers",
            pipeline_tag="summarization",
            tags=["summarization", self.family] + (["distillation"] if distilled else []) + [tag],
            base_model=self.base_model if is_hub_id(self.base_model) else None,
            datasets=[d for d in self.datasets if is_hub_id(d)] or None,
        )
        name = self.model_name or f"{self.family.upper()} summarizer ({title})"
        lines = ["---", data.to_yaml(), "---", "", f"# {name}", "", paragraph, "", "## How it was made", "",
                 f"- Method: {title}",
                 f"- Base (teacher) checkpoint: `{self.base_model if self.base_model else 'unknown'}`"]
        for side in ("encoder", "decoder"):
            teacher = getattr(self, f"teacher_{side}_layers")
            suffix = f" (of {teacher} teacher layers)" if teacher is not None else ""
            kept = "Kept " + side if self.method in ("sft", "shrunk", "kd", "pseudo-label-kd") else side.capitalize()
            lines.append(f"- {kept} layers: {_layers_text(getattr(self, f'{side}_layers'))}{suffix}")
        for key, label in (("ratio", "Compression ratio (teacher layers / student layers)"),
                           ("strategy", "Layer selection strategy"), ("train_samples", "Training pairs"),
                           ("epochs", "Epochs"), ("learning_rate", "Learning rate"),
                           ("quantization", "Quantization"), ("params", "Parameters"),
                           ("weights_dtype", "Weights stored as"), ("training_time", "Training time")):
            if getattr(self, key) is not None:
                lines.append(f"- {label}: {getattr(self, key)}")
        if self.datasets:
            lines.append(f"- Data: {', '.join(f'`{d}`' for d in self.datasets)}")
        if self.command:
            lines += ["", "Made with:", "", "```bash", self.command, "```"]
        if self.metrics:
            lines += ["", "## Evaluation", "",
                      "ROUGE F1 (0-100, `rouge_score` with stemming), validation loss in nats per target "
                      "token, size on disk in MiB, latency in ms per summary at batch size 1.", "",
                      "| model | ROUGE-1 | ROUGE-2 | ROUGE-L | ROUGE-Lsum | val. loss | size MiB | latency ms |",
                      "|---|---|---|---|---|---|---|---|"]
            for row, values in self.metrics.items():
                cells = [_metric_cell(values.get(k), ".2f") for k in ("rouge1", "rouge2", "rougeL", "rougeLsum")]
                cells += [_metric_cell(values.get("validation_loss"), ".4f"),
                          _metric_cell(values.get("size_mib"), ".1f"), _metric_cell(values.get("latency_ms"), ".1f")]
                lines.append(f"| {row} | " + " | ".join(cells) + " |")
        lines += ["", "## Use", ""]
        if self.quantized_wo:
            lines += ["T5's feed-forward output layers (`wo`) are quantized too, which plain `from_pretrained` "
                      "does not load (it keeps `wo` unquantized); load it with this project's loader:", "",
                      "```python", "from compression.load import load_model",
                      'model, tokenizer = load_model("<this folder>")', "```", ""]
        else:
            lines += ["```python", "from transformers import AutoModelForSeq2SeqLM, AutoTokenizer",
                      'tokenizer = AutoTokenizer.from_pretrained("<this folder or repo>")',
                      'model = AutoModelForSeq2SeqLM.from_pretrained("<this folder or repo>")', "```", ""]
        if self.weights_dtype:
            lines += [f"The weights are stored as {self.weights_dtype} to halve the download; "
                      "`compression.load.load_model` reads them back as fp32, and with plain transformers pass "
                      "`dtype=torch.float32` to `from_pretrained` before training on a CPU.", ""]
        if self.pruned_vocab:
            lines += ["The vocabulary is pruned to the tokens of the training data: model id `i` is tokenizer id "
                      "`config.vocab_pruning[\"kept_ids\"][i]`. `compression.generation.generate` maps both ways; "
                      "other code must map input ids and generated ids itself.", ""]
        return "\n".join(lines)

    def write(self, folder: str | Path) -> Path:
        """Write :meth:`render` to ``folder/README.md``; returns that path."""
        path = Path(folder) / "README.md"
        path.write_text(self.render(), encoding="utf-8")
        return path
