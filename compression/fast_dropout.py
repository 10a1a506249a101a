"""Dropout whose random masks are cheap on a CPU: the same regulariser, drawn 15 bits at a time.

Why: PyTorch's CPU dropout draws its mask with ``bernoulli_``, a random number from the CPU
generator per element. On the fine-tune benchmark's fp32 step (tiny T5, batch 8, sources 512 /
targets 64 tokens, dropout 0.1 as ``Seq2SeqTrainer`` trains it) that took 22.8 % of the step on a
2-core AVX2 EPYC (``python -m benchmarks.step_profile``), mostly for the attention-probability masks
(batch x heads x 512 x 512 per encoder layer).

How: :func:`keep_mask` draws one 64-bit integer per **four** elements from the same generator
(``Tensor.random_``: 63 random bits), splits it into four 15-bit lanes and keeps an element when its
lane is at least ``round(p * 2**15)``: each element is kept independently with probability
``1 - round(p * 32768) / 32768`` (for p = 0.1: 0.899994 instead of 0.9, an error below 1.6e-5), the
comparison runs vectorised on every core, and kept values are scaled by ``1 / (1 - p)`` like
:func:`torch.nn.functional.dropout` (inverted dropout, Srivastava et al. 2014). Seeded by
``torch.manual_seed`` (transformers' ``set_seed``) like PyTorch's own dropout, but a different stream:
the masks differ from ``nn.Dropout``'s, not their distribution, so training reaches the same loss up
to the run-to-run spread of dropout itself (``tests/test_fast_dropout.py``). The lanes do not depend
on the CPU's instruction set.

:func:`use_fast_dropout` puts it into a model for the length of a training: every ``nn.Dropout``
module (T5's hidden-state, feed-forward and embedding dropout) becomes a :class:`FastDropout`, and
for T5 and BART the attention-probability dropout, which transformers applies inside its attention
function, runs in :func:`eager_attention_fast_dropout` (transformers' eager attention with this
mask), registered with ``transformers.AttentionInterface`` as :data:`ATTENTION_NAME`, beside
transformers' eager mask builder under the same name in ``AttentionMaskInterface``. BART's
hidden-state dropout is a call of ``nn.functional.dropout`` in transformers' code, not a module,
and stays PyTorch's.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

#: Random bits per mask element; four lanes per 64-bit draw (the top lane's 16th bit is always 0).
LANE_BITS = 15
#: Name of :func:`eager_attention_fast_dropout` in ``transformers.AttentionInterface``.
ATTENTION_NAME = "eager_fast_dropout"
#: ``config.model_type`` of the families whose attention functions share the signature of
#: transformers' ``eager_attention_forward`` (T5 adds ``position_bias``), so
#: :func:`eager_attention_fast_dropout` can stand in for theirs.
ATTENTION_FAMILIES = frozenset({"t5", "mt5", "bart"})


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, *, device: torch.device | str = "cpu",
              generator: torch.Generator | None = None) -> torch.Tensor:
    """A dropout keep-mask: bool tensor of ``shape``, each element True with probability
    ``1 - round(p * 2**15) / 2**15``, independently, from ``ceil(numel / 4)`` 64-bit draws of
    ``generator`` (default: PyTorch's default generator of ``device``).

    Raises:
        ValueError: ``p`` outside [0, 1].
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must lie in [0, 1], got {p}")
    threshold = round(p * 2 ** LANE_BITS)
    if threshold >= 2 ** LANE_BITS:  # nothing is kept (and the threshold would not fit the int16 lanes)
        return torch.zeros(shape, dtype=torch.bool, device=device)
    numel = math.prod(shape)
    words = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device).random_(generator=generator)
    lanes = words.view(torch.int16)[:numel].bitwise_and_(0x7FFF)
    return lanes.ge(threshold).view(shape)


class _ScaleByMask(torch.autograd.Function):
    """``x * mask * scale`` keeping only the bool mask for the backward (as nn.Dropout keeps its mask).

    Computed as ``torch.where(mask, x, 0) * scale`` (dropped elements are +0.0): multiplying by the
    bool mask makes PyTorch cast it to ``x``'s dtype element by element, 24.4 ms against 15.8 ms for
    an attention-probability tensor of the fine-tune benchmark (8 x 4 x 512 x 512 fp32, emulated
    AVX2, median of 5)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(mask)
        ctx.scale = scale
        return torch.where(mask, x, 0.0).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return torch.where(mask, grad, 0.0).mul_(ctx.scale), None, None


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """:func:`torch.nn.functional.dropout` with a :func:`keep_mask`: ``x`` (any shape) with each
    element zeroed with probability ~``p`` and the rest scaled by ``1 / (1 - p)``; ``x`` itself when
    not ``training`` or ``p`` is 0, zeros when ``p`` is 1.

    Raises:
        ValueError: ``p`` outside [0, 1].
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must lie in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    return _ScaleByMask.apply(x, keep_mask(x.shape, p, device=x.device), 1.0 / (1.0 - p))


class FastDropout(nn.Dropout):
    """``nn.Dropout`` drawing its mask with :func:`keep_mask` (same ``p``, same train/eval behaviour)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


def eager_attention_fast_dropout(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                 attention_mask: torch.Tensor | None, scaling: float | None = None,
                                 dropout: float = 0.0, position_bias: torch.Tensor | None = None, **kwargs):
    """transformers' ``eager_attention_forward`` of T5 (with ``position_bias``) and BART, with the
    attention-probability dropout of :func:`fast_dropout`.

    Shapes: ``query`` (batch, heads, target, d_head), ``key``/``value`` (batch, heads, source,
    d_head), ``attention_mask`` and ``position_bias`` broadcastable to (batch, heads, target,
    source), additive. Returns ``(output (batch, target, heads, d_head), probabilities (batch, heads,
    target, source))``, as transformers' attention functions do.

    Inverted dropout's ``1 / (1 - p)`` is applied to the (batch, heads, target, d_head) output of the
    probability-value product rather than to the probabilities, ``d_head / source`` as many elements
    (the same value up to float rounding: ``(m * P) @ V * s`` against ``(m * P * s) @ V``); it saves a
    pass over the (batch, heads, target, source) probabilities forward and one backward, 10-12 % of the
    attention core at 8 x 4 x 512 x 512 fp32 and 2 % of the tiny T5's training step (emulated AVX2,
    A/B in one process). The probabilities returned are then the kept ones unscaled; when the caller
    asks for them (``output_attentions``, e.g. attention distillation) they are scaled as
    ``nn.functional.dropout`` returns them.
    """
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    weights = torch.matmul(query, key.transpose(2, 3))
    if scaling != 1.0:  # T5 passes 1.0: its query weights carry the scale; a pass over the scores saved
        weights = weights * scaling
    if position_bias is not None:
        weights = weights + position_bias
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = nn.functional.softmax(weights, dim=-1)
    if module.training and 0.0 < dropout < 1.0 and not kwargs.get("output_attentions"):
        weights = torch.where(keep_mask(weights.shape, dropout, device=weights.device), weights, 0.0)
        output = torch.matmul(weights, value).mul_(1.0 / (1.0 - dropout))
    else:
        weights = fast_dropout(weights, dropout, module.training)
        output = torch.matmul(weights, value)
    return output.transpose(1, 2).contiguous(), weights


def _register_attention() -> None:
    """Register :func:`eager_attention_fast_dropout` and, for its masks, transformers' eager (additive
    float) mask builder: an implementation without a registered mask builder gets no mask at all."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTENTION_NAME, eager_attention_fast_dropout)
    AttentionMaskInterface.register(ATTENTION_NAME, eager_mask)


def use_fast_dropout(model: nn.Module) -> Callable[[], None]:
    """Swap ``model``'s dropout for :class:`FastDropout` (every ``nn.Dropout`` with p > 0) and, for
    :data:`ATTENTION_FAMILIES` with attention dropout > 0, its attention implementation (``"eager"``
    or ``"sdpa"``) for :func:`eager_attention_fast_dropout`; returns the function that puts everything
    back. A model without dropout is left as it is (SDPA's fused kernel stays in use).

    Used by :func:`compression.train.run_trainer` while training on a CPU (``TrainArgs.dropout_masks``).
    The weights, their names and ``state_dict`` are untouched (dropout has no parameters), so a
    checkpoint saved meanwhile is the same as without it.
    """
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout and child.p > 0:
                replacement = FastDropout(child.p, child.inplace)
                replacement.train(child.training)
                setattr(parent, name, replacement)
                swapped.append((parent, name, child))
    config = getattr(model, "config", None)
    previous = getattr(config, "_attn_implementation", None)
    attention_dropout = any(isinstance(getattr(module, "dropout", None), float) and module.dropout > 0
                            for module in model.modules())  # T5Attention's and BartAttention's probability
    switch = (attention_dropout and getattr(config, "model_type", None) in ATTENTION_FAMILIES
              and previous in ("eager", "sdpa") and hasattr(model, "set_attn_implementation"))
    if switch:
        _register_attention()
        model.set_attn_implementation(ATTENTION_NAME)

    def restore() -> None:
        for parent, name, original in swapped:
            original.train(getattr(parent, name).training)
            setattr(parent, name, original)
        if switch:
            model.set_attn_implementation(previous)

    return restore
