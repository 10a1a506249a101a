"""Knowledge distillation (KD): fine-tune a student against a frozen teacher.

The loss is the weighted sum of up to four terms, as in transformers'
``examples/research_projects/seq2seq-distillation/distillation.py`` (Shleifer & Rush 2020,
"Pre-trained Summarization Distillation", Section 3 "KD"), plus MiniLM-style attention transfer:

* ``ce``: cross-entropy of the student on the reference summary (nats per target token).
* ``kl``: KL(teacher || student) between temperature-softened next-token distributions, times T²
  (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network", Section 2), averaged
  over real target tokens (labels != -100).
* ``hidden``: MSE between student and teacher hidden states ("intermediate supervision", Jiao et al.
  2020, TinyBERT): the embedding output with the teacher's, and student layer ``j`` with teacher layer
  :func:`compression.layers.layers_to_supervise` ``(n_teacher, kept)[j]`` (12->3 keeping 0, 6, 11 is
  matched to 3, 7, 11), for encoder (masked by the attention mask) and decoder (masked by labels).
* ``attention``: KL (or MSE) between attention probabilities of matched layers (Wang et al. 2020,
  "MiniLM", Section 3.1, self-attention distribution transfer), for encoder self-attention, decoder
  self-attention and decoder cross-attention, query positions masked as above.

Default weights are seq2seq-distillation's: **0.8 on the soft-target KL and 0.2 on the label
cross-entropy**, hidden 0.0, temperature 2.0. Beware the names there: its ``--alpha_ce 0.8`` weighs
the KL (DistilBERT's "ce" between distributions) and ``--alpha_mlm 0.2`` weighs the label loss; here
``alpha_kl`` and ``alpha_ce`` say what they weigh.

Attention probabilities need the eager attention implementation (SDPA returns none in transformers 5):
when ``alpha_attention > 0`` both models are switched to ``"eager"`` for the run and switched back.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from .config import KDArgs, TrainArgs
from .errors import CompressionError
from .layers import get_layer_stacks, layers_to_supervise, select_layers
from .load import model_family
from .losses import (  # noqa: F401  (the KD losses, re-exported from their old home)
    TERMS,
    attention_loss,
    distillation_loss,
    hidden_mse_loss,
    kl_div_loss,
)
from .train import CompressionTrainer, TrainResult, bf16_enabled, frozen_weights, resolve_device, run_trainer

TEACHER_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


# --------------------------------------------------------------------------------------------
# Layer matching
# --------------------------------------------------------------------------------------------

def _stack_mapping(config: Any, stack: str, n_student: int, n_teacher: int) -> list[int]:
    modular = getattr(config, "modular", None)
    if isinstance(modular, dict) and modular.get(f"teacher_{stack}_layers") == n_teacher:
        spans = sorted((r["start"], r["end"]) for r in modular.get("replaced", []) if r["stack"] == stack)
        mapping, layer = [], 0
        for start, end in spans + [(n_teacher, n_teacher)]:
            mapping.extend(range(layer, start))
            if start < end:
                mapping.append(end - 1)
            layer = end
        if len(mapping) == n_student:
            return mapping
    shrink = getattr(config, "shrink", None)
    if isinstance(shrink, dict) and shrink.get(f"teacher_{stack}_layers") == n_teacher:
        kept = list(shrink.get(f"{stack}_layers_kept") or [])
        if len(kept) == n_student:
            return layers_to_supervise(n_teacher, kept)
    if n_student == n_teacher:
        return list(range(n_teacher))
    if n_student > n_teacher:
        raise CompressionError(
            f"the student's {stack} ({n_student} layers) is deeper than the teacher's ({n_teacher}): "
            "hidden-state and attention distillation need a shallower (or equal) student; set their weights to 0"
        )
    return layers_to_supervise(n_teacher, select_layers(n_teacher, n_student, "spread", stack))


def layer_mapping(student: PreTrainedModel, teacher: PreTrainedModel) -> tuple[list[int], list[int]]:
    """The teacher layer each student layer is matched with, for encoder and decoder.

    From the student's ``config.shrink`` kept indices via :func:`compression.layers.layers_to_supervise`
    (seq2seq-distillation's ``LAYERS_TO_SUPERVISE``); for a Modular Transformers assembly
    (``config.modular``) a teacher layer is matched with itself and a module with the last layer of
    the span it replaces; a student as deep as the teacher is matched layer for layer; any other
    student as if it kept the ``spread`` layers.

    Returns:
        ``(encoder_mapping, decoder_mapping)``: lists of teacher indices, one per student layer.

    Raises:
        CompressionError: a student stack deeper than the teacher's.
    """
    student_enc, student_dec = get_layer_stacks(student)
    teacher_enc, teacher_dec = get_layer_stacks(teacher)
    return (_stack_mapping(student.config, "encoder", len(student_enc), len(teacher_enc)),
            _stack_mapping(student.config, "decoder", len(student_dec), len(teacher_dec)))


# --------------------------------------------------------------------------------------------
# Trainer and training loop
# --------------------------------------------------------------------------------------------

class TermsTrainerMixin:
    """Accumulates per-term losses between logging steps and adds their means to the Trainer's logs.

    Mixed into :class:`compression.train.CompressionTrainer` subclasses that set ``term_names``: call
    :meth:`_record_terms` from ``compute_loss`` with the batch's 0-dim term tensors; the mean over the
    micro-batches since the last log (averaged over processes) is logged under each term's name next
    to ``loss``.
    """

    term_names: tuple[str, ...] = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._term_sums: dict[str, torch.Tensor] = {}
        self._term_count = 0

    def _record_terms(self, terms: dict[str, torch.Tensor]) -> None:
        for name in self.term_names:
            value = terms[name].detach().float()
            self._term_sums[name] = self._term_sums[name] + value if name in self._term_sums else value
        self._term_count += 1

    def log(self, logs, start_time=None):
        if "loss" in logs and self._term_count and self.term_names:
            values = torch.stack([self._term_sums[name] for name in self.term_names]) / self._term_count
            values = self.accelerator.gather(values.reshape(1, -1)).mean(0)
            for name, value in zip(self.term_names, values.tolist()):
                logs[name] = value
            self._term_sums, self._term_count = {}, 0
        super().log(logs, start_time)


class DistillationTrainer(TermsTrainerMixin, CompressionTrainer):
    """``Seq2SeqTrainer`` whose training loss is :func:`distillation_loss` against a frozen teacher.

    ``compute_loss`` runs the student (with hidden states/attentions when their weights are > 0),
    then the teacher under ``torch.no_grad`` on the same batch, and returns the weighted total;
    each term with a positive weight is logged as its own column (``ce``, ``kl``, ``hidden``,
    ``attention``). Validation stays the student's token-weighted cross-entropy (as in
    :func:`compression.train.finetune`), so KD and SFT runs compare on the same figure. The teacher
    is moved to the training device and kept in eval mode; it is not handed to the optimizer.
    The loss is a per-micro-batch mean (as in seq2seq-distillation), which the Trainer divides by the
    gradient-accumulation steps (``loss_is_scaled_for_ga = False``).
    """

    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

    def __init__(self, *args, teacher: PreTrainedModel, kd_args: KDArgs,
                 encoder_mapping: Sequence[int] | None = None, decoder_mapping: Sequence[int] | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher.to(self.args.device).eval()
        self.kd_args = kd_args
        self.encoder_mapping = encoder_mapping
        self.decoder_mapping = decoder_mapping
        self.term_names = tuple(name for name, weight in kd_args.weights().items() if weight > 0)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        flags = {"output_hidden_states": self.kd_args.alpha_hidden > 0,
                 "output_attentions": self.kd_args.alpha_attention > 0, "use_cache": False}
        student_out = model(**inputs, **flags)
        teacher_inputs = {key: value for key, value in inputs.items() if key != "labels"}
        if "decoder_input_ids" not in teacher_inputs:
            teacher_inputs["decoder_input_ids"] = self.teacher.prepare_decoder_input_ids_from_labels(labels=labels)
        with torch.no_grad():
            teacher_out = self.teacher(**teacher_inputs, **flags)
        terms = distillation_loss(student_out, teacher_out, labels, inputs.get("attention_mask"), self.kd_args,
                                  self.encoder_mapping, self.decoder_mapping,
                                  label_smoothing=self.args.label_smoothing_factor)
        if model.training:
            self._record_terms(terms)
        return (terms["loss"], student_out) if return_outputs else terms["loss"]


def _teacher_8bit(teacher: PreTrainedModel, train_args: TrainArgs) -> PreTrainedModel:
    """An LLM.int8() copy of ``teacher`` (bitsandbytes via :func:`compression.quantize.quantize`,
    unquantized weights - embedding, norms, T5's ``wo`` - in bfloat16) on the training device: between
    a quarter and a half of its float32 memory, depending on how much of it is embedding."""
    import os
    import tempfile

    from .quantize import quantize

    device = resolve_device(train_args.device)
    if device.type == "cuda":  # under torchrun each rank trains on its own GPU
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    with tempfile.TemporaryDirectory(prefix="kd-teacher-") as workdir:
        teacher.save_pretrained(workdir)
        return quantize(workdir, "8bit", device=device, rest_dtype="bfloat16")


def _teacher_for_training(teacher: PreTrainedModel, kd_args: KDArgs, train_args: TrainArgs) -> PreTrainedModel:
    """The teacher in the requested dtype: the same object when its dtype already matches, else a
    converted copy (so the caller's teacher is never rounded to bf16 or quantized)."""
    if kd_args.teacher_dtype == "8bit":
        return _teacher_8bit(teacher, train_args)
    if kd_args.teacher_dtype == "auto":
        bf16 = bf16_enabled(train_args, resolve_device(train_args.device))
        dtype = torch.bfloat16 if bf16 else torch.float32
    else:
        dtype = TEACHER_DTYPES[kd_args.teacher_dtype]
    if teacher.dtype == dtype:
        return teacher
    return copy.deepcopy(teacher).to(dtype)


def distill(student: PreTrainedModel, teacher: PreTrainedModel, tokenizer: Any, train_dataset, eval_dataset,
            train_args: TrainArgs, kd_args: KDArgs, output_dir: str | Path,
            on_progress: Callable[[dict], None] | None = None, cancel: threading.Event | None = None,
            progress_bar: bool = True, resume_from: str | Path | None = None) -> TrainResult:
    """Fine-tune ``student`` in place with knowledge distillation from ``teacher`` (Shleifer & Rush 2020 "KD").

    Same recipe and machinery as :func:`compression.train.finetune` (AdamW, schedule, seeding,
    ``freeze_*`` options, progress records in ``output_dir/loss_log.jsonl``, cancel event, the
    student's training state saved to ``output_dir/last-checkpoint`` when cancelled and continued
    with ``resume_from``), with :class:`DistillationTrainer`'s loss.
    Progress records carry ``loss`` (the weighted total) and one column per term with a positive
    weight (``ce``, ``kl``, ``hidden``, ``attention``); ``eval_loss`` is the student's validation
    cross-entropy (nats per token). Student layers are matched with teacher layers by
    :func:`layer_mapping`. The teacher is frozen (``no_grad``, eval mode), moved to the training device
    (and back afterwards), and held in ``kd_args.teacher_dtype`` (a converted copy when that differs
    from its dtype; ``"8bit"``: an LLM.int8() copy, Dettmers et al. 2022, via bitsandbytes). With
    ``alpha_attention > 0`` both models run eager attention during the run.

    Returns:
        :class:`compression.train.TrainResult` (``train_loss``: mean total KD loss).

    Raises:
        QuantizationError: ``teacher_dtype="8bit"`` and bitsandbytes cannot run on this device.
        CompressionError: student and teacher of different families or vocabularies, a hidden-state
            loss with different widths, every weight frozen, empty data, unavailable device.
        OutOfMemoryError: the device ran out of memory.
    """
    if model_family(student) != model_family(teacher):
        raise CompressionError(
            f"the student is a {model_family(student).upper()} model and the teacher a "
            f"{model_family(teacher).upper()} model: distil within one family and tokenizer"
        )
    if student.config.vocab_size != teacher.config.vocab_size:
        raise CompressionError(
            f"student vocabulary ({student.config.vocab_size}) and teacher vocabulary "
            f"({teacher.config.vocab_size}) differ: both must use the same tokenizer"
        )
    if kd_args.alpha_hidden > 0 and student.config.d_model != teacher.config.d_model:
        raise CompressionError(
            f"hidden-state distillation needs equal widths (student d_model {student.config.d_model}, teacher "
            f"{teacher.config.d_model}): set alpha_hidden to 0"
        )
    encoder_mapping, decoder_mapping = layer_mapping(student, teacher)
    training_teacher = _teacher_for_training(teacher, kd_args, train_args)
    teacher_device = next(teacher.parameters()).device
    implementations = (student.config._attn_implementation, training_teacher.config._attn_implementation)
    extra = tuple(name for name, weight in kd_args.weights().items() if weight > 0)
    with frozen_weights(student, train_args):
        if kd_args.alpha_attention > 0:
            student.set_attn_implementation("eager")
            training_teacher.set_attn_implementation("eager")
        try:
            return run_trainer(
                student, tokenizer, train_dataset, eval_dataset, train_args, output_dir,
                trainer_class=DistillationTrainer,
                trainer_kwargs={"teacher": training_teacher, "kd_args": kd_args, "encoder_mapping": encoder_mapping,
                                "decoder_mapping": decoder_mapping},
                attention_models=[student, training_teacher], extra_keys=extra, on_progress=on_progress,
                cancel=cancel, progress_bar=progress_bar, resume_from=resume_from,
            )
        finally:
            if kd_args.alpha_attention > 0:
                student.set_attn_implementation(implementations[0])
                training_teacher.set_attn_implementation(implementations[1])
            if training_teacher is teacher:
                teacher.to(teacher_device)
