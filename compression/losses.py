"""Training losses, in one place: token-weighted cross-entropy, knowledge-distillation terms and
the Modular Transformers objective. Pure torch; every loss is a 0-dim float32 tensor in nats.

* :func:`token_cross_entropy` / :func:`example_cross_entropy` / :func:`token_loss`: the one
  teacher-forced cross-entropy (padding, :data:`compression.data.LABEL_PAD`, excluded), used by
  fine-tuning, validation loss, distillation and Modular Transformers.
* KD terms (:func:`kl_div_loss`, :func:`hidden_mse_loss`, :func:`attention_loss`,
  :func:`distillation_loss`): see :mod:`compression.distill` for the method and its sources.
* :func:`modular_loss`: Modular Transformers' weighted sum (Zhou, Le Bras & Choi 2023, section 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .config import KDArgs
from .data import LABEL_PAD
from .errors import CompressionError

#: Names of the KD loss terms, in the order they are logged.
TERMS = ("ce", "kl", "hidden", "attention")


# --------------------------------------------------------------------------------------------
# Cross-entropy
# --------------------------------------------------------------------------------------------

def example_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                          label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced cross-entropy summed per example and target tokens per example.

    Args:
        logits: ``[batch, tgt_len, vocab]`` (any float dtype; computed in float32).
        labels: ``[batch, tgt_len]`` with :data:`~compression.data.LABEL_PAD` at padding.
        label_smoothing: ε of the label-smoothed cross-entropy, ``(1 - ε) · NLL + ε · mean over the
            vocabulary of −log p`` per token (Szegedy et al. 2016, §7; as transformers'
            ``LabelSmoother`` and PyTorch's ``cross_entropy(label_smoothing=...)``, which computes
            it). 0 (the default, and always for a validation loss): the plain cross-entropy.

    Returns:
        ``(sums [batch] float32 nats, counts [batch] int64 tokens)``; padding contributes to neither.
    """
    losses = F.cross_entropy(logits.float().transpose(1, 2), labels.to(logits.device),
                             ignore_index=LABEL_PAD, reduction="none", label_smoothing=label_smoothing)
    return losses.sum(dim=1), (labels != LABEL_PAD).sum(dim=1)


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                        num_tokens: torch.Tensor | int | None = None, label_smoothing: float = 0.0) -> torch.Tensor:
    """Token-weighted cross-entropy: the sum over real target tokens divided by ``num_tokens``
    (default: the number of real target tokens in ``labels``), nats per token, 0-dim float32.
    ``logits`` ``[batch, tgt_len, vocab]``, ``labels`` ``[batch, tgt_len]`` with
    :data:`~compression.data.LABEL_PAD` padding; ``label_smoothing`` as in
    :func:`example_cross_entropy`."""
    sums, counts = example_cross_entropy(logits, labels, label_smoothing)
    if num_tokens is None:
        num_tokens = counts.sum()
    if isinstance(num_tokens, torch.Tensor):
        num_tokens = num_tokens.to(sums.device)
    return sums.sum() / num_tokens


def token_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None,
               label_smoothing: float = 0.0) -> torch.Tensor:
    """Training loss: cross-entropy summed over target tokens / ``num_items_in_batch`` (the Trainer's
    count of target tokens in the whole accumulated, all-process batch), so gradient accumulation and
    DDP give a true per-token mean. Passed as the Trainer's ``compute_loss_func``: T5 and BART return a
    per-batch mean and ignore ``num_items_in_batch``, while the Trainer assumes they use it (it skips
    the division by accumulation steps and multiplies by the process count), which would scale the
    gradients by ``accumulation steps x processes``. The same arithmetic as transformers'
    ``fixed_cross_entropy``. ``logits`` ``[batch, tgt_len, vocab]``, ``labels`` ``[batch, tgt_len]``;
    ``label_smoothing`` (``TrainArgs.label_smoothing``) as in :func:`example_cross_entropy`.
    """
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    return token_cross_entropy(logits, labels, num_items_in_batch, label_smoothing)


# --------------------------------------------------------------------------------------------
# Knowledge distillation
# --------------------------------------------------------------------------------------------

def zero_loss(like: torch.Tensor) -> torch.Tensor:
    """A float32 zero that stays in ``like``'s autograd graph (so backward() never fails)."""
    return like.sum().float() * 0.0


def kl_div_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
                temperature: float = 2.0) -> torch.Tensor:
    """Soft-target loss: ``T² · mean over masked positions of KL(softmax(t/T) || softmax(s/T))``.

    Hinton et al. 2015, Section 2 (the T² keeps gradient magnitudes comparable across temperatures);
    averaged per token as seq2seq-distillation's ``calc_ce_loss`` (``KLDivLoss(reduction="batchmean")``
    over the selected positions). Computed in float32.

    Args:
        student_logits, teacher_logits: ``[batch, tgt_len, vocab]``.
        mask: ``[batch, tgt_len]`` bool, True at real target tokens (``labels != -100``).
        temperature: T > 0.

    Returns:
        0-dim float32 tensor, nats per token (0 when no position is masked in).

    Raises:
        CompressionError: shapes differ (e.g. student and teacher with different vocabularies).
    """
    if student_logits.shape != teacher_logits.shape:
        raise CompressionError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
            "differ: student and teacher must share the tokenizer and vocabulary"
        )
    mask = mask.bool()
    if not mask.any():
        return zero_loss(student_logits)
    student = student_logits[mask].float() / temperature  # [n_tokens, vocab]
    teacher = teacher_logits[mask].float() / temperature
    kl = F.kl_div(F.log_softmax(student, dim=-1), F.log_softmax(teacher, dim=-1), reduction="sum",
                  log_target=True)
    return kl / mask.sum() * temperature**2


def masked_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None,
               normalize: bool = False) -> torch.Tensor:
    """MSE between ``[batch, len, d]`` states over positions where ``mask`` ``[batch, len]`` is True
    (every position when ``None``), layer-normed over ``d`` first when ``normalize``; 0-dim float32.

    Raises:
        CompressionError: the shapes differ (a student narrower than the teacher).
    """
    if student.shape != teacher.shape:
        raise CompressionError(
            f"hidden states {tuple(student.shape)} and {tuple(teacher.shape)} differ in shape: hidden-state "
            "distillation needs a student as wide as the teacher (same d_model); set alpha_hidden to 0"
        )
    student, teacher = student.float(), teacher.float()
    if normalize:
        student = F.layer_norm(student, student.shape[-1:])
        teacher = F.layer_norm(teacher, teacher.shape[-1:])
    error = (student - teacher).pow(2)
    if mask is None:
        return error.mean()
    weights = mask.to(error.dtype).unsqueeze(-1)
    count = weights.sum() * error.shape[-1]
    if count == 0:
        return zero_loss(student)
    return (error * weights).sum() / count


def hidden_mse_loss(student_hidden: Sequence[torch.Tensor], teacher_hidden: Sequence[torch.Tensor],
                    mapping: Sequence[int], mask: torch.Tensor | None = None,
                    normalize: bool = False) -> torch.Tensor:
    """Hidden-state MSE between matched layers, summed over the matched pairs.

    seq2seq-distillation's ``calc_hidden_loss`` (TinyBERT-style intermediate supervision): the
    embedding outputs (``hidden[0]``) are matched with each other and the output of student layer
    ``j`` (``student_hidden[j + 1]``) with that of teacher layer ``mapping[j]``
    (``teacher_hidden[mapping[j] + 1]``). Each pair's MSE is averaged over masked-in positions and the
    hidden dimension; the pairs are summed (so the term grows with depth, as there).

    Args:
        student_hidden: ``n_student + 1`` tensors ``[batch, len, d]`` (``output_hidden_states``).
        teacher_hidden: ``n_teacher + 1`` tensors ``[batch, len, d]``.
        mapping: ``n_student`` teacher layer indices (see :func:`compression.layers.layers_to_supervise`).
        mask: ``[batch, len]``, True/1 at real tokens; ``None`` counts every position.
        normalize: layer-norm both sides over ``d`` first (no learned scale).

    Returns:
        0-dim float32 tensor.

    Raises:
        CompressionError: ``mapping`` does not fit the number of states, or widths differ.
    """
    if len(student_hidden) != len(mapping) + 1:
        raise CompressionError(
            f"{len(student_hidden)} student hidden states but a mapping for {len(mapping)} layers: "
            "pass embedding output + one state per student layer"
        )
    if any(not 0 <= j < len(teacher_hidden) - 1 for j in mapping):
        raise CompressionError(f"mapping {list(mapping)} names teacher layers outside 0..{len(teacher_hidden) - 2}")
    pairs = [(0, 0)] + [(j + 1, t + 1) for j, t in enumerate(mapping)]
    return sum(masked_mse(student_hidden[s], teacher_hidden[t].to(student_hidden[s].device), mask, normalize)
               for s, t in pairs)


def attention_map_loss(student: torch.Tensor, teacher: torch.Tensor, query_mask: torch.Tensor | None,
                       kind: str = "kl") -> torch.Tensor:
    """Loss between attention probabilities ``[batch, heads, q_len, k_len]``, averaged over heads and
    masked-in query rows: ``"kl"`` = KL(teacher || student) summed over keys; ``"mse"`` = squared
    error averaged over keys.

    LongT5's local and transient-global encoder attention returns blocked maps ``[batch, blocks,
    heads, block_len, keys]`` (each query's distribution over its own window of ``3 * block_len``
    keys, plus the global tokens); their rows are the queries in sequence order block by block, so
    they are scored the same way, the padding of the last block left out (``query_mask`` is
    ``[batch, q_len]`` over the unblocked sequence)."""
    if student.shape != teacher.shape:
        raise CompressionError(
            f"attention maps {tuple(student.shape)} and {tuple(teacher.shape)} differ in shape: attention "
            "distillation needs the same number of heads; set alpha_attention to 0"
        )
    student, teacher = student.float(), teacher.float()
    if kind == "kl":
        per_row = (torch.xlogy(teacher, teacher) - teacher * torch.log(student.clamp_min(1e-12))).sum(-1)
    elif kind == "mse":
        per_row = (student - teacher).pow(2).mean(-1)
    else:
        raise CompressionError(f"attention loss must be 'kl' or 'mse', got {kind!r}")
    if per_row.dim() == 4:  # blocked (LongT5 encoder): [batch, blocks, heads, block_len] -> [batch, q_len]
        per_row = per_row.mean(2).flatten(1)
        if query_mask is not None:
            per_row = per_row[:, :query_mask.shape[1]]
    else:
        per_row = per_row.mean(1)  # [batch, q_len], mean over heads
    if query_mask is None:
        return per_row.mean()
    weights = query_mask.to(per_row.dtype)
    if weights.sum() == 0:
        return zero_loss(student)
    return (per_row * weights).sum() / weights.sum()


def attention_loss(student_attentions: Sequence[torch.Tensor], teacher_attentions: Sequence[torch.Tensor],
                   mapping: Sequence[int], mask: torch.Tensor | None = None, kind: str = "kl") -> torch.Tensor:
    """Attention-map distillation between matched layers, summed over the pairs.

    MiniLM (Wang et al. 2020, Section 3.1) transfers self-attention distributions with KL; TinyBERT
    (Jiao et al. 2020, Section 3.1) uses MSE. Student layer ``j`` is matched with teacher layer
    ``mapping[j]``. Per pair: ``"kl"`` is KL(teacher || student) over keys, ``"mse"`` the squared
    error averaged over keys; then averaged over heads and over query positions where ``mask`` is True.

    Args:
        student_attentions: ``n_student`` tensors ``[batch, heads, q_len, k_len]`` of probabilities.
        teacher_attentions: ``n_teacher`` tensors of the same shape.
        mapping: ``n_student`` teacher layer indices.
        mask: ``[batch, q_len]`` query mask (True/1 at real tokens) or ``None``.
        kind: ``"kl"`` or ``"mse"``.

    Returns:
        0-dim float32 tensor (nats for ``"kl"``).

    Raises:
        CompressionError: lengths or shapes do not match, or an unknown ``kind``.
    """
    if len(student_attentions) != len(mapping):
        raise CompressionError(
            f"{len(student_attentions)} student attention maps but a mapping for {len(mapping)} layers "
            "(are attentions returned? they need attn_implementation='eager')"
        )
    if any(not 0 <= j < len(teacher_attentions) for j in mapping):
        raise CompressionError(f"mapping {list(mapping)} names teacher layers outside 0..{len(teacher_attentions) - 1}")
    return sum(attention_map_loss(student_attentions[j], teacher_attentions[t].to(student_attentions[j].device),
                                   mask, kind)
               for j, t in enumerate(mapping))


def require_outputs(outputs: Any, name: str, what: str) -> Sequence[torch.Tensor]:
    value = getattr(outputs, name, None)
    if not value or any(item is None for item in value):
        raise CompressionError(
            f"the model outputs carry no {name}: call it with output_{what}=True"
            + (" and attn_implementation='eager'" if what == "attentions" else "")
        )
    return value


def distillation_loss(student_out: Any, teacher_out: Any, labels: torch.Tensor,
                      attention_mask: torch.Tensor | None, kd_args: KDArgs,
                      encoder_mapping: Sequence[int] | None = None,
                      decoder_mapping: Sequence[int] | None = None,
                      label_smoothing: float = 0.0) -> dict[str, torch.Tensor]:
    """Every KD term and their weighted total for one batch.

    Args:
        student_out, teacher_out: ``Seq2SeqLMOutput`` of student and teacher on the same batch
            (``logits`` ``[batch, tgt_len, vocab]``; with ``output_hidden_states=True`` when
            ``alpha_hidden > 0`` and ``output_attentions=True`` when ``alpha_attention > 0``).
        labels: ``[batch, tgt_len]`` with -100 at padding.
        attention_mask: ``[batch, src_len]`` source mask (encoder positions), or ``None``.
        kd_args: weights and settings.
        encoder_mapping, decoder_mapping: teacher layer matched with each student layer
            (default: identity, for a student as deep as the teacher).
        label_smoothing: ε of the label cross-entropy term (:func:`example_cross_entropy`).

    Returns:
        ``{"ce", "kl", "hidden", "attention", "loss"}``: 0-dim float32 tensors. A term whose weight
        is 0 is not computed and reported as 0. ``loss`` = Σ alpha · term.

    Raises:
        CompressionError: hidden states or attentions needed but absent, or shapes that do not match.
    """
    student_logits = student_out.logits
    target_mask = labels != LABEL_PAD
    zero = zero_loss(student_logits)
    terms = {name: zero for name in TERMS}
    if kd_args.alpha_ce > 0:
        terms["ce"] = token_cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    if kd_args.alpha_kl > 0:
        terms["kl"] = kl_div_loss(student_logits, teacher_out.logits, target_mask, kd_args.temperature)
    stacks = (("encoder", attention_mask, encoder_mapping), ("decoder", target_mask, decoder_mapping))
    if kd_args.alpha_hidden > 0:
        total = zero
        for stack, mask, mapping in stacks:
            student_hidden = require_outputs(student_out, f"{stack}_hidden_states", "hidden_states")
            teacher_hidden = require_outputs(teacher_out, f"{stack}_hidden_states", "hidden_states")
            mapping = list(range(len(student_hidden) - 1)) if mapping is None else mapping
            total = total + hidden_mse_loss(student_hidden, teacher_hidden, mapping, mask, kd_args.normalize_hidden)
        terms["hidden"] = total
    if kd_args.alpha_attention > 0:
        total = zero
        maps = (("encoder_attentions", attention_mask, encoder_mapping),
                ("decoder_attentions", target_mask, decoder_mapping),
                ("cross_attentions", target_mask, decoder_mapping))
        for name, mask, mapping in maps:
            student_maps = require_outputs(student_out, name, "attentions")
            teacher_maps = require_outputs(teacher_out, name, "attentions")
            mapping = list(range(len(student_maps))) if mapping is None else mapping
            total = total + attention_loss(student_maps, teacher_maps, mapping, mask, kd_args.attention_loss)
        terms["attention"] = total
    weights = kd_args.weights()
    terms["loss"] = sum(weights[name] * terms[name] for name in TERMS)
    return terms


# --------------------------------------------------------------------------------------------
# Modular Transformers
# --------------------------------------------------------------------------------------------

def modular_loss(logits: torch.Tensor, labels: torch.Tensor, hidden_terms: Sequence[torch.Tensor],
                 attention_terms: Sequence[torch.Tensor], args: Any,
                 label_smoothing: float = 0.0) -> dict[str, torch.Tensor]:
    """Modular Transformers' objective for one batch (Zhou, Le Bras & Choi 2023, section 3):
    ``alpha_ce`` x cross-entropy of the mixed model on the labels + ``alpha_hidden`` x the summed
    hidden-state MSE of the replaced spans + ``alpha_attention`` x their summed attention-map losses.

    Args:
        logits: ``[batch, tgt_len, vocab]`` of the model with modules in place of teacher spans.
        labels: ``[batch, tgt_len]`` with :data:`~compression.data.LABEL_PAD` padding.
        hidden_terms, attention_terms: per-span terms (:func:`masked_mse`, :func:`attention_map_loss`).
        args: anything with ``alpha_ce``, ``alpha_hidden``, ``alpha_attention`` (``ModularArgs``).
        label_smoothing: ε of the label cross-entropy term (:func:`example_cross_entropy`).

    Returns:
        ``{"ce", "hidden", "attention", "loss"}``: 0-dim float32 tensors.
    """
    zero = zero_loss(logits)
    terms = {
        "ce": token_cross_entropy(logits, labels, label_smoothing=label_smoothing),
        "hidden": sum(hidden_terms, zero),
        "attention": sum(attention_terms, zero),
    }
    terms["loss"] = (args.alpha_ce * terms["ce"] + args.alpha_hidden * terms["hidden"]
                     + args.alpha_attention * terms["attention"])
    return terms
