"""The offline teacher recipe: train a summarizer from an architecture preset on a local dataset.

Without a model hub there are no pre-trained weights, so the teacher every student is shrunk from
must be trained here, from random initialisation, on a 2-core CPU. :func:`train_teacher` is the one
function behind ``python -m compression teacher``; :data:`TEACHER_RECIPE` holds its defaults, each
overridable with the usual ``finetune`` flags.

Why these defaults (the Debian package descriptions preset, :mod:`compression.dataset_presets`,
measured with the T5 SentencePiece vocabulary over its 51,596 training pairs):

- **Shape: the T5-efficient tiny preset** (4/4 layers, d_model 256, d_ff 1024; Tay et al. 2022,
  "Scale Efficiently"). The run is bound by tokens per second, not by depth per FLOP: a deeper
  DeepNarrow variant (``tiny-nl8``) costs about twice as much per token and would see half the data
  in the same time. Four layers per stack also leave room for the students this project compares
  (2/2, 4/2 with the decoder halved, 2/1).
- **Vocabulary pruned to the data's tokens** (:mod:`compression.vocab`, TextPruner section 2.1):
  the Debian texts use 19,583 of T5's 32,128 pieces, so the tied embedding and the output softmax,
  the largest layer of a model this narrow, shrink by 39 % in parameters and in softmax FLOPs per
  target token. Validation texts are included so nothing the model is scored on maps to ``<unk>``.
- **Sources truncated to 128 tokens**: Debian documents have a median of 79 tokens (p90 173); 128
  keeps 80 % of them whole and the opening of the rest, where a synopsis comes from, and cuts an
  epoch from 4.87M to 4.29M source tokens (targets: 0.64M tokens; 32 keeps 99.9 % of them whole).
- **No prefix**: the preset's choice (a constant "summarize: " teaches a randomly initialised
  model nothing and costs two tokens per pair).
- **Adafactor with parameter-scaled updates at 2e-2** (:func:`compression.train.adafactor_kwargs`;
  Shazeer & Stern 2018, the optimizer T5 was designed and pre-trained with, Raffel et al. 2020
  section 3.1.2), **2 % linear warm-up then linear decay to 0, no weight decay, dropout 0, batch 32**.
  Why not AdamW, and the 200-step comparison: :func:`compression.train.adafactor_kwargs`. The first
  recipe (AdamW at 2e-3, two epochs, 3,226 steps, 108 minutes) ended at validation loss 5.26 nats and
  ROUGE-1 2.5: a decoder that had learnt the synopses' word frequencies and ignored its source.
  The learning rate, from seven schedules trained side by side on one GPU for 440 s each (0.93
  epochs; 2026-12-04, H200): mean training loss over epochs 0.8-1.0 of a 6-epoch schedule 3.947 /
  3.559 / 3.414 nats at 5e-3 / 1e-2 / 2e-2 (the 2-core CPU run at 1e-2 followed the GPU's within 0.01).
  **Four epochs** (6,452 steps, 83 minutes of training, 84 in all, on a 2-core AVX512-BF16 EPYC
  under bf16 autocast; an estimated 2 hours in fp32 on a 2-core AVX2 EPYC, from the
  two-epoch run's 0.88 steps/s there): validation loss 2.78 nats after
  two, 2.91 after four, so the second half over-fits by validation loss while ROUGE was measured at
  the end only. The previous default, two epochs at 1e-2 (61 minutes on the AVX2 EPYC), ended at
  3.48 nats and ROUGE-1 27.2.
  Dropout 0, as T5 v1.1 pre-trains; the rise of validation loss after epoch 2 says dropout, or
  fewer epochs, is the next thing to measure.
  Decaying to zero over exactly the planned steps is why ``--max-steps`` (and ``--epochs``) should be
  set to what the time allows rather than stopping a longer schedule early.

Measured with these defaults (``assets/models/debian-teacher``, its model card): validation loss
2.908 nats; ROUGE-1/2/L on the 1,625 validation pairs 35.8 / 17.5 / 32.8 greedy (the students'
decoding) and 38.8 / 20.1 / 35.8 with beam search of width 4 (``score_beams``, scored in two more
minutes): above the lead-10 baseline (31.4 / 14.6 / 27.9) either way, and at the goal of ROUGE-1 38
set for it with beam search, not greedy.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .config import DataArgs, EvalArgs, TrainArgs
from .data import load_pairs, record_prefix, resolve_prefix, tokenize_pairs
from .dataset_presets import DEFAULT_OFFLINE_DATASET, shared_dir
from .errors import CompressionError
from .evaluate import evaluate_model
from .export import save_model
from .load import build_preset, describe_model
from .train import LOSS_LOG, discard_checkpoint, finetune
from .vocab import prune_for_texts

logger = logging.getLogger(__name__)

#: The recipe's defaults: architecture and data settings, then :class:`compression.config.TrainArgs`
#: fields. Each is a default of ``python -m compression teacher`` and can be overridden by its flag.
TEACHER_RECIPE = {
    "preset": "tiny",
    "prune_vocab": True,
    "dropout": 0.0,
    "dataset": DEFAULT_OFFLINE_DATASET,
    "max_source_length": 128,
    "epochs": 4.0,
    "batch_size": 32,
    "optimizer": "adafactor",
    "learning_rate": 2e-2,
    "warmup_ratio": 0.02,
    "weight_decay": 0.0,
    "logging_steps": 20,
    "save_dtype": "bfloat16",
    "score_beams": 4,
}

#: Dtypes the teacher's weights can be saved in: bf16 halves the checkpoint (the committed offline
#: teacher must stay under 32 MiB); :func:`compression.load.load_model` reads either back as fp32.
SAVE_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


#: The offline teacher committed with the project (trained by this recipe on the Debian package
#: descriptions; its model card holds the command, time and scores).
BUNDLED_TEACHER = Path(__file__).resolve().parents[1] / "assets" / "models" / "debian-teacher"


def bundled_teacher() -> Path | None:
    """:data:`BUNDLED_TEACHER` when its weights are present (a checkout that has it), else ``None``."""
    folder = BUNDLED_TEACHER
    return folder if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file() else None


def default_tokenizer() -> Path:
    """Google's T5 SentencePiece vocabulary in the shared folder (``../shared/tokenizers/t5``)."""
    return shared_dir() / "tokenizers" / "t5"


def train_teacher(data: DataArgs, train: TrainArgs, output: str | Path, *, preset: str = "tiny",
                  tokenizer: str | Path | None = None, prune_vocab: bool = True, dropout: float = 0.0,
                  seed: int = 0, command: str | None = None, progress_bar: bool = True,
                  save_dtype: str = "bfloat16", cancel: threading.Event | None = None,
                  on_progress: Callable[[dict], None] | None = None,
                  resume_from: str | Path | None = None, score_beams: int = 4) -> dict:
    """Train a teacher from the architecture ``preset``, randomly initialised, and save it to ``output``.

    Steps: :func:`compression.load.build_preset` (seeded with ``seed``, dropout set to ``dropout``),
    load and tokenize ``data`` (:func:`compression.data.load_pairs`; prefix per
    :func:`compression.data.resolve_prefix`), prune the vocabulary to the tokens of every training and
    validation text when ``prune_vocab`` (:func:`compression.vocab.prune_for_texts`; training maps
    the tokenized ids through :func:`compression.data.make_collator`), fine-tune with ``train``
    (:func:`compression.train.finetune`: progress bar with ETA, ``loss_log.jsonl``; setting ``cancel``
    stops it after the current step, with status ``"cancelled"`` and nothing saved but the training's
    ``last-checkpoint``), then score the
    validation split (greedy, at most ``data.max_target_length`` new tokens,
    :func:`compression.evaluate.evaluate_model`; the students' decoding, so their ROUGE compares with
    it) and, when ``score_beams`` > 1, again with beam search of that width (the decoding summarization
    results are usually reported with: Raffel et al. 2020 report T5's final results with beam width 4;
    validation loss does not depend on decoding) and save model, tokenizer and a model card holding
    ``command``, the data, the time and the scores (:func:`compression.export.save_model`; the output
    is written only when training completed), the weights cast to ``save_dtype`` (:data:`SAVE_DTYPES`;
    training and scoring are fp32 either way). ``resume_from``: a ``last-checkpoint`` folder of this
    same command (cancelled, or killed after a periodic checkpoint) to continue from
    (:func:`compression.train.run_trainer`).

    Returns:
        ``{"output", "status": "complete"|"cancelled", "model": describe_model facts, "train":
        {steps, epochs, seconds, tokens_per_s, train_loss, eval_loss (nats)}, "metrics": the
        validation scores (ROUGE F1 0-100, validation loss in nats) or ``None``, "metrics_beam": the
        same with beam search of width ``score_beams`` or ``None``, "seconds": wall
        time of the whole command}``.

    Raises:
        CompressionError (and subclasses): unknown preset, missing data or tokenizer, dropout outside
            [0, 1), ``score_beams`` below 1, an unknown ``save_dtype``, an output folder that is not a
            model folder, out of memory.
    """
    if not 0.0 <= dropout < 1.0:
        raise CompressionError(f"dropout must lie in [0, 1) (the recipe uses {TEACHER_RECIPE['dropout']})")
    if score_beams < 1:
        raise CompressionError(f"score_beams must be at least 1 (1: greedy only; the recipe uses "
                               f"{TEACHER_RECIPE['score_beams']})")
    if save_dtype not in SAVE_DTYPES:
        raise CompressionError(f"unknown save dtype {save_dtype!r}: choose one of {', '.join(SAVE_DTYPES)}")
    started = time.perf_counter()
    output = Path(output)
    model, tok = build_preset(preset, tokenizer if tokenizer is not None else default_tokenizer(), seed=seed)
    model.config.dropout_rate = dropout
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = dropout
    pairs = load_pairs(data)
    prefix = resolve_prefix(data, model)
    record_prefix(model, prefix)
    if prune_vocab:
        texts = [prefix + text for split in pairs.values() for text in split["document"]]
        texts += [text for split in pairs.values() for text in split["summary"]]
        model = prune_for_texts(model, tok, texts)
    lengths = dict(prefix=prefix, max_source_length=data.max_source_length, max_target_length=data.max_target_length)
    train_set = tokenize_pairs(pairs["train"], tok, **lengths)
    validation = tokenize_pairs(pairs["validation"], tok, **lengths) if "validation" in pairs else None
    model.train()
    result = finetune(model, tok, train_set, validation, train, output, on_progress=on_progress,
                      cancel=cancel, progress_bar=progress_bar, resume_from=resume_from)
    facts = describe_model(model)
    summary = {key: getattr(result, key) for key in ("steps", "epochs", "seconds", "tokens_per_s",
                                                      "train_loss", "eval_loss")}
    if result.cancelled:
        return {"output": str(output), "status": "cancelled", "model": facts, "train": summary, "metrics": None,
                "metrics_beam": None, "seconds": time.perf_counter() - started}
    metrics = metrics_beam = None
    if "validation" in pairs:
        split = pairs["validation"]
        documents, references = list(split["document"]), list(split["summary"])
        scores = {beams: evaluate_model(model, tok, documents, references, **lengths,
                                        args=EvalArgs(max_new_tokens=data.max_target_length, num_beams=beams,
                                                      latency_samples=0))
                  for beams in sorted({1, score_beams})}
        for values in scores.values():
            values.pop("predictions")
        metrics, metrics_beam = scores[1], scores[score_beams] if score_beams > 1 else None
    seconds = time.perf_counter() - started
    card = {"model_name": f"Offline teacher ({preset} preset, trained from random initialisation)",
            "method": "teacher", "base_model": f"preset:{preset} (untrained)",
            "command": command, "dataset": data.dataset or (Path(data.train_file).name if data.train_file else None),
            "train_samples": len(train_set), "epochs": result.epochs, "learning_rate": train.learning_rate,
            "pruned_vocab": prune_vocab, "params": facts["params"],
            "weights_dtype": save_dtype if save_dtype != "float32" else None,
            "training_time": f"{result.seconds:,.0f} s training ({result.steps:,} steps, "
                             f"{result.tokens_per_s:,.0f} real tokens/s), {seconds:,.0f} s in all",
            "metrics": ({"teacher (greedy)": metrics} | ({f"teacher (beam {score_beams})": metrics_beam}
                                                          if metrics_beam else {})
                        if metrics else {"teacher": {"validation_loss": result.eval_loss}})}
    model.to(SAVE_DTYPES[save_dtype])
    discard_checkpoint(output)  # training completed: the teacher below replaces it
    save_model(model, tok, output, card=card, keep=(LOSS_LOG,))
    return {"output": str(output), "status": "complete", "model": facts, "train": summary, "metrics": metrics,
            "metrics_beam": metrics_beam, "score_beams": score_beams, "seconds": seconds, "recipe": {"preset": preset, "prune_vocab": prune_vocab, "dropout": dropout, "save_dtype": save_dtype,
                                           "data": dataclasses.asdict(data), "train": dataclasses.asdict(train)}}
