"""Cross-entropy straight from the decoder's last hidden states: the LM head and the loss in one
chunked step, over the real target tokens only, never the full ``[batch, tgt_len, vocab]`` logits.

Why: a T5's LM head projects every decoder position onto the whole vocabulary (32,128 pieces for
the real T5 vocabulary). With the full logits, a training step writes them (``[batch, tgt_len,
32128]`` fp32, 49 MB at batch 8 x 48 target positions), their ``log_softmax`` (as large), a dense
gradient of the same size, and runs all of it for the padded target positions too (28 % of them on
the fine-tune benchmark's XSum batches). On the benchmark's fp32 step (tiny preset, batch 8, sources
512 / targets up to 64 tokens) on the emulated AVX2-only CPU the head and the loss took 222 ms of
the step's ~1.4 s this way and 100-110 ms fused (forward + backward, the same 276 real target
tokens, in chunks of 261 or 128 rows).

How (the fused linear cross-entropy of Liger Kernel, Hsu et al. 2024, section 3.3, and the
chunked loss of Cut Cross-Entropy, Wijmans et al. 2024, written here with plain torch operators for
any device): the hidden states of the real target positions, ``[N, d_model]``, are taken
``CHUNK_ELEMENTS // vocab`` rows at a time; per chunk the logits ``h @ W.T`` are computed, their
log-sum-exp and the target's logit read, and the same buffer is turned in place into the gradient of
the summed loss with respect to the logits (``softmax - one_hot``, with label smoothing ``softmax -
(1 - eps) one_hot - eps / vocab``), from which the gradients of the hidden states (``G @ W``) and of
the head's weight (``G.T @ h``) are accumulated at once. Backward only scales the two stored
gradients by the incoming one. The result is the cross-entropy of
:func:`compression.losses.token_cross_entropy` to float32 rounding (``tests/test_fused_cross_entropy.py``
checks the loss and both gradients against the full-logits path).

:func:`use_hidden_state_head` makes a model hand its decoder's last hidden states out as its
``logits`` for the length of a training (its output-embedding module returns its input; the weights
and their names are untouched, so checkpoints written meanwhile are the model's own), and
:func:`fused_token_loss` is then the Trainer's ``compute_loss_func``. Only families whose forward
applies the LM head as its last step qualify (:data:`HIDDEN_STATE_FAMILIES`); BART and Pegasus add
``final_logits_bias`` after the head and keep the full logits (:func:`why_unsupported`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .data import LABEL_PAD

#: Logit elements computed at once (32 MiB in float32): 261 target positions of a 32,128-piece
#: vocabulary. Measured on the benchmark's head (276 real positions, emulated AVX2): one chunk of all
#: 276 took 100 ms, chunks of 128 rows 110 ms, of 64 rows 131 ms (forward + backward).
CHUNK_ELEMENTS = 1 << 23
#: ``config.model_type`` of the families whose ``forward`` ends ``logits = self.lm_head(hidden)``
#: with nothing added afterwards (transformers' T5, mT5, UMT5 and LongT5 classes).
HIDDEN_STATE_FAMILIES = frozenset({"t5", "mt5", "umt5", "longt5"})


def _chunk_rows(vocab: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(vocab, 1))


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``hidden @ weight.T`` against ``targets``, gradients computed in the
    forward pass chunk by chunk (see the module docstring)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, label_smoothing):
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            h_all, w = hidden.float(), weight.float()
            vocab, rows = w.shape[0], _chunk_rows(w.shape[0])
            want_hidden, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
            grad_hidden = torch.empty_like(h_all) if want_hidden else None
            grad_weight = torch.zeros_like(w) if want_weight else None
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)  # as the full path sums
            for start in range(0, h_all.shape[0], rows):
                h, t = h_all[start:start + rows], targets[start:start + rows]
                index = torch.arange(len(t), device=t.device)
                logits = h @ w.t()
                target_logit = logits[index, t]
                smooth = logits.mean(dim=1) if label_smoothing else None
                peak = logits.amax(dim=1, keepdim=True)
                probs = logits.sub_(peak).exp_()  # in place: the logits are not needed any more
                norm = probs.sum(dim=1, keepdim=True)
                lse = peak.squeeze(1) + norm.squeeze(1).log()
                loss = lse - target_logit if not label_smoothing else \
                    lse - (1.0 - label_smoothing) * target_logit - label_smoothing * smooth
                total += loss.sum()
                grad = probs.div_(norm)
                grad[index, t] -= 1.0 - label_smoothing
                if label_smoothing:
                    grad.sub_(label_smoothing / vocab)
                if want_hidden:
                    grad_hidden[start:start + rows] = grad @ w
                if want_weight:
                    grad_weight.addmm_(grad.t(), h)
        ctx.save_for_backward(
            grad_hidden.to(hidden.dtype) if want_hidden else None,
            grad_weight.to(weight.dtype) if want_weight else None)
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        return (grad_hidden * grad_output if grad_hidden is not None else None,
                grad_weight * grad_output if grad_weight is not None else None, None, None)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         num_tokens: torch.Tensor | int | None = None,
                         label_smoothing: float = 0.0) -> torch.Tensor:
    """Token-weighted cross-entropy of the logits ``hidden @ weight.T``, computed without them
    (Liger Kernel's fused linear cross-entropy, Hsu et al. 2024, section 3.3; see the module docstring).

    Args:
        hidden: ``[batch, tgt_len, d_model]`` decoder outputs as the LM head receives them (any float
            dtype; computed in float32).
        weight: ``[vocab, d_model]`` the LM head's weight (no bias).
        labels: ``[batch, tgt_len]`` target ids with :data:`~compression.data.LABEL_PAD` at padding.
        num_tokens: divisor, as in :func:`compression.losses.token_cross_entropy` (default: the real
            target tokens in ``labels``).
        label_smoothing: ε of the label-smoothed cross-entropy (as ``torch.nn.functional.cross_entropy``).

    Returns:
        0-dim float32 tensor, nats per token, differentiable in ``hidden`` and ``weight``.
    """
    labels = labels.to(hidden.device)  # as example_linear_cross_entropy: the mask indexes the hidden states
    keep = labels != LABEL_PAD
    total = _LinearCrossEntropy.apply(hidden[keep], weight, labels[keep], float(label_smoothing))
    if num_tokens is None:
        num_tokens = keep.sum()
    if isinstance(num_tokens, torch.Tensor):
        num_tokens = num_tokens.to(total.device)
    return total / num_tokens


@torch.no_grad()
def example_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor,
                                 labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example cross-entropy sums of the logits ``hidden @ weight.T``, chunked, without gradients
    (the validation loss of a model handing out hidden states; :func:`compression.losses.example_cross_entropy`
    from the full logits).

    Args:
        hidden: ``[batch, tgt_len, d_model]``; weight: ``[vocab, d_model]``; labels: ``[batch, tgt_len]``
            with :data:`~compression.data.LABEL_PAD` at padding.

    Returns:
        ``(sums [batch] float32 nats, counts [batch] int64 tokens)``.
    """
    labels = labels.to(hidden.device)
    keep = labels != LABEL_PAD
    example = keep.nonzero()[:, 0]
    h_all, targets, w = hidden[keep].float(), labels[keep], weight.float()
    sums = torch.zeros(labels.shape[0], dtype=torch.float32, device=hidden.device)
    rows = _chunk_rows(w.shape[0])
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        for start in range(0, h_all.shape[0], rows):
            logits = h_all[start:start + rows] @ w.t()
            t = targets[start:start + rows]
            loss = torch.logsumexp(logits, dim=1) - logits[torch.arange(len(t), device=t.device), t]
            sums.index_add_(0, example[start:start + rows], loss)
    return sums, keep.sum(dim=1)


def why_unsupported(model: nn.Module) -> str | None:
    """``None`` when :func:`use_hidden_state_head` applies to ``model``, else why not, in words."""
    config = getattr(model, "config", None)
    family = getattr(config, "model_type", None)
    if family not in HIDDEN_STATE_FAMILIES:
        return (f"the {family or type(model).__name__} family adds to its LM head's output in its forward "
                "(or is not known to apply the head last), so its loss needs the full logits")
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(head, nn.Linear) or head.bias is not None:
        return "the model's LM head is not a linear layer without bias"
    return None


def _hand_out_hidden_states(hidden: torch.Tensor) -> torch.Tensor:
    return hidden


def use_hidden_state_head(model: nn.Module) -> Callable[[], None]:
    """Until the returned function is called, ``model``'s forward returns its decoder's last hidden
    states (as its LM head receives them, T5's ``d_model ** -0.5`` scaling included) in place of
    ``logits``: ``[batch, tgt_len, d_model]`` instead of ``[batch, tgt_len, vocab]``. The head module's
    ``forward`` is replaced on the instance only; its weight, the parameter names and
    ``state_dict()`` stay as they are.

    Raises:
        ValueError: the family does not qualify (:func:`why_unsupported`).
    """
    reason = why_unsupported(model)
    if reason is not None:
        raise ValueError(reason)
    head = model.get_output_embeddings()
    head.forward = _hand_out_hidden_states
    return lambda: vars(head).pop("forward", None)


def fused_token_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None,
                     *, head: nn.Linear, label_smoothing: float = 0.0) -> torch.Tensor:
    """The Trainer's ``compute_loss_func`` for a model under :func:`use_hidden_state_head`: the same
    loss as :func:`compression.losses.token_loss` (summed over target tokens, divided by
    ``num_items_in_batch``), from the hidden states in ``outputs.logits`` ``[batch, tgt_len, d_model]``
    and ``head.weight`` ``[vocab, d_model]`` (:func:`linear_cross_entropy`)."""
    hidden = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    return linear_cross_entropy(hidden, head.weight, labels, num_items_in_batch, label_smoothing)
