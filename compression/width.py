"""Width pruning: fewer feed-forward neurons (``d_ff``) and attention heads, into a plain checkpoint.

Structured pruning ranked by activation-based importance on calibration pairs (Minitron:
Muralidharan et al. 2024, "Compact Language Models via Pruning and Knowledge Distillation",
section 2.2): a feed-forward neuron's importance is the mean absolute value of its activation (the
input of the output projection, after the non-linearity and, for gated-GELU T5, the gate) over
real tokens; a head's importance is the mean L2 norm of its output (its slice of the input of the
attention output projection) over real tokens, the activation form of the head-importance
question of Michel et al. 2019 ("Are Sixteen Heads Really Better than One?", section 4).

Every layer keeps the same *number* of neurons and heads, so the result is a plain transformers
checkpoint with a smaller ``d_ff`` / ``num_heads`` that loads with ``from_pretrained``; which
neurons are kept is chosen per layer. Heads:

- T5 (and mT5, UMT5, LongT5): ``num_heads`` shrinks at a fixed ``d_kv``. The relative position
  bias (an embedding ``[num_buckets, num_heads]`` in layer 0 of each stack, whose output every layer
  of the stack reuses; in every layer for UMT5; with a second one for the global tokens of LongT5's
  transient-global attention) is pruned to the kept heads, so a stack's self-attention layers keep *one* head set (the
  heads with the highest importance summed over the stack's layers); cross-attention has no
  position bias and keeps its heads per layer.
- BART: the head size is ``d_model / heads``, so fewer heads cannot be written as a plain BART
  config; :func:`prune_width` says so with :class:`WidthPruningError`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from .arch import STACKS, get_layer_stacks, model_family, t5_self_attention
from .data import LABEL_PAD, make_collator
from .errors import WidthPruningError


def _ffn_modules(layer, family: str) -> tuple[list[str], nn.Module, str]:
    """(names of the input projections, the module holding them, name of the output projection)."""
    if family == "t5":
        ffn = layer.layer[-1].DenseReluDense
        inputs = ["wi_0", "wi_1"] if hasattr(ffn, "wi_0") else ["wi"]
        return inputs, ffn, "wo"
    return ["fc1"], layer, "fc2"


def _attention_modules(layer, stack: str) -> dict[str, nn.Module]:
    """T5-family attention modules of a layer: ``{"self": ..., "cross": ...}`` (cross in the decoder only)."""
    out = {"self": t5_self_attention(layer)}
    if stack == "decoder":
        out["cross"] = layer.layer[1].EncDecAttention
    return out


def widths(model) -> dict:
    """Current widths: ``{"ffn": {"encoder": d_ff, "decoder": d_ff}, "heads": num_heads}``."""
    config = model.config
    if model_family(model) == "t5":
        return {"ffn": {"encoder": config.d_ff, "decoder": config.d_ff}, "heads": config.num_heads}
    return {"ffn": {"encoder": config.encoder_ffn_dim, "decoder": config.decoder_ffn_dim},
            "heads": config.encoder_attention_heads}


def check_keep(model, ffn_keep: int | None, heads_keep: int | None) -> None:
    """Refuse keep counts a plain checkpoint of this family cannot hold.

    Raises:
        WidthPruningError: a count below 1 or above the current width; fewer heads for BART (its
            head size is ``d_model / heads``, so the config cannot express it); BART with different
            encoder and decoder head counts.
        NotSeq2SeqError: not a T5- or BART-family encoder-decoder.
    """
    family = model_family(model)
    current = widths(model)
    if ffn_keep is not None:
        if isinstance(ffn_keep, bool) or not isinstance(ffn_keep, int):
            raise WidthPruningError(f"feed-forward neurons to keep must be a whole number, got {ffn_keep!r}")
        narrowest = min(current["ffn"].values())
        if not 1 <= ffn_keep <= narrowest:
            raise WidthPruningError(
                f"cannot keep {ffn_keep} feed-forward neurons per layer: the model has {narrowest}; "
                f"choose 1 to {narrowest}")
    if heads_keep is not None:
        if isinstance(heads_keep, bool) or not isinstance(heads_keep, int):
            raise WidthPruningError(f"attention heads to keep must be a whole number, got {heads_keep!r}")
        if not 1 <= heads_keep <= current["heads"]:
            raise WidthPruningError(
                f"cannot keep {heads_keep} attention heads per layer: the model has {current['heads']}; "
                f"choose 1 to {current['heads']}")
        if family != "t5" and heads_keep != current["heads"]:
            raise WidthPruningError(
                f"{model.config.model_type} ties the head size to d_model / heads, so a checkpoint with "
                f"{heads_keep} of {current['heads']} heads cannot be written as a plain transformers config; "
                "prune the feed-forward width only (leave the heads to keep unset)")


def _slice_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping rows (``dim=0``: output features) or columns (``dim=1``: input features)."""
    weight = linear.weight.detach().index_select(dim, index.to(linear.weight.device)).clone()
    bias = linear.bias
    if bias is not None and dim == 0:
        bias = bias.detach().index_select(0, index.to(bias.device)).clone()
    elif bias is not None:
        bias = bias.detach().clone()
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        if bias is not None:
            out.bias.copy_(bias)
    return out


def activation_importance(model, tokenizer, calibration, *, heads: bool = True, batch_size: int = 8,
                          on_progress: Callable[[str, float], None] | None = None) -> dict:
    """Activation-based importance of every feed-forward neuron and (T5) attention head.

    Teacher-forced forward passes over tokenized calibration pairs (``input_ids``,
    ``attention_mask``, ``labels``); padding never counts (encoder: attention mask, decoder: labels
    != -100). Forward pre-hooks on the output projections read the activations; no gradients.

    Returns:
        ``{"ffn": {"encoder": [tensor [d_ff] per layer], "decoder": [...]}, "heads": {"encoder":
        {"self": [tensor [num_heads] per layer]}, "decoder": {"self": [...], "cross": [...]}},
        "samples": N}``; neurons: mean |activation|; heads: mean L2 norm of the head's output
        (``heads`` is ``{}`` for BART or when ``heads=False``).

    Raises:
        WidthPruningError: no calibration pairs.
    """
    if len(calibration) == 0:
        raise WidthPruningError("no calibration pairs to rank neurons and heads on: give at least one pair")
    family = model_family(model)
    stacks = dict(zip(STACKS, get_layer_stacks(model)))
    sums: dict = {"ffn": {name: [None] * len(layers) for name, layers in stacks.items()}, "heads": {}}
    tokens = dict.fromkeys(STACKS, 0)
    masks: dict[str, torch.Tensor] = {}
    handles = []

    def ffn_hook(stack, index):
        def hook(module, args):
            activation = args[0][masks[stack]].float().abs().sum(dim=0)
            store = sums["ffn"][stack]
            store[index] = activation if store[index] is None else store[index] + activation
        return hook

    def head_hook(stack, kind, index, n_heads):
        def hook(module, args):
            context = args[0][masks[stack]].float()  # [tokens, n_heads * d_kv]
            norms = context.reshape(context.shape[0], n_heads, -1).norm(dim=-1).sum(dim=0)
            store = sums["heads"][stack][kind]
            store[index] = norms if store[index] is None else store[index] + norms
        return hook

    for name, layers in stacks.items():
        for index, layer in enumerate(layers):
            _, holder, out_name = _ffn_modules(layer, family)
            handles.append(getattr(holder, out_name).register_forward_pre_hook(ffn_hook(name, index)))
            if heads and family == "t5":
                for kind, attention in _attention_modules(layer, name).items():
                    sums["heads"].setdefault(name, {}).setdefault(kind, [None] * len(layers))
                    handles.append(attention.o.register_forward_pre_hook(
                        head_hook(name, kind, index, attention.n_heads)))
    was_training = model.training
    model.eval()
    collator = make_collator(tokenizer, model)
    rows = calibration.select_columns(["input_ids", "attention_mask", "labels"])
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                batch = collator([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
                batch = {key: value.to(device) for key, value in batch.items()}
                masks["encoder"] = batch["attention_mask"].bool()
                masks["decoder"] = batch["labels"] != LABEL_PAD
                for name in STACKS:
                    tokens[name] += int(masks[name].sum())
                model(**batch, use_cache=False)
                if on_progress:
                    on_progress("ranking neurons and heads", min(1.0, (start + batch_size) / len(rows)))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {
        "ffn": {name: [value / max(tokens[name], 1) for value in values] for name, values in sums["ffn"].items()},
        "heads": {name: {kind: [value / max(tokens[name], 1) for value in values] for kind, values in kinds.items()}
                  for name, kinds in sums["heads"].items()},
        "samples": len(calibration),
    }


def _top(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the ``keep`` highest scores, in increasing index order (ties: lower index first)."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return torch.tensor(sorted(order[:keep]), dtype=torch.long)


def _prune_t5_attention(attention: nn.Module, heads: torch.Tensor) -> None:
    d_kv = attention.key_value_proj_dim
    columns = (heads[:, None] * d_kv + torch.arange(d_kv)[None, :]).reshape(-1)
    for name in ("q", "k", "v"):
        setattr(attention, name, _slice_linear(getattr(attention, name), columns, 0))
    attention.o = _slice_linear(attention.o, columns, 1)
    # [num_buckets, num_heads] position biases: T5's, and LongT5 transient-global's bias of the global tokens
    for name in ("relative_attention_bias", "global_relative_attention_bias"):
        bias = getattr(attention, name, None) if getattr(attention, "has_relative_attention_bias", False) else None
        if bias is None:
            continue
        pruned = nn.Embedding(bias.num_embeddings, len(heads), device=bias.weight.device, dtype=bias.weight.dtype)
        with torch.no_grad():
            pruned.weight.copy_(bias.weight.index_select(1, heads.to(bias.weight.device)))
        setattr(attention, name, pruned)
    attention.n_heads = len(heads)
    attention.inner_dim = len(heads) * d_kv


def prune_width(model, tokenizer=None, calibration=None, *, ffn_keep: int | None = None,
                heads_keep: int | None = None, batch_size: int = 8,
                on_progress: Callable[[str, float], None] | None = None):
    """A width-pruned copy of ``model``: ``ffn_keep`` feed-forward neurons and ``heads_keep`` heads
    in every layer, ranked by :func:`activation_importance` on ``calibration``.

    The model is left untouched. T5 (incl. gated-GELU ``wi_0``/``wi_1``) and BART feed-forward
    layers; T5-family heads (T5, mT5, UMT5, LongT5's local and transient-global encoder attention:
    ``num_heads`` at fixed ``d_kv``, relative attention biases pruned to the kept
    heads). Config widths are updated (``d_ff``/``num_heads``, or ``encoder_ffn_dim``/
    ``decoder_ffn_dim``) and ``config.width`` records ``{"method": "activation", "teacher_ffn",
    "ffn", "teacher_heads", "heads", "heads_kept": {"encoder": [...], "decoder": [...],
    "cross": [[...] per decoder layer]}, "samples"}``. Combine with depth pruning by pruning a
    :func:`compression.layers.shrink` student (or shrinking the result).

    Args:
        model: T5- or BART-family encoder-decoder.
        tokenizer, calibration: tokenizer and tokenized calibration pairs; not needed when every
            neuron and head is kept.
        ffn_keep, heads_keep: neurons / heads per layer (``None``: keep the current width).

    Raises:
        WidthPruningError: bad keep counts (see :func:`check_keep`), or no calibration pairs.
    """
    check_keep(model, ffn_keep, heads_keep)
    family = model_family(model)
    current = widths(model)
    prune_ffn = ffn_keep is not None and any(ffn_keep < width for width in current["ffn"].values())
    prune_heads = heads_keep is not None and heads_keep < current["heads"]
    student = copy.deepcopy(model)
    importance = None
    if prune_ffn or prune_heads:
        if calibration is None or tokenizer is None:
            raise WidthPruningError("give calibration pairs (on the command line: --data FILE or --dataset PRESET) "
                                    "to rank the neurons and heads on")
        importance = activation_importance(model, tokenizer, calibration, heads=prune_heads, batch_size=batch_size,
                                           on_progress=on_progress)
    heads_kept: dict = {}
    for name, layers in zip(STACKS, get_layer_stacks(student)):
        if prune_heads:
            shared = torch.stack(importance["heads"][name]["self"]).sum(dim=0)
            heads_kept[name] = _top(shared, heads_keep)
            if name == "decoder":
                heads_kept["cross"] = [_top(score, heads_keep) for score in importance["heads"][name]["cross"]]
        for index, layer in enumerate(layers):
            if prune_ffn and ffn_keep < current["ffn"][name]:
                neurons = _top(importance["ffn"][name][index], ffn_keep)
                inputs, holder, out_name = _ffn_modules(layer, family)
                for input_name in inputs:
                    setattr(holder, input_name, _slice_linear(getattr(holder, input_name), neurons, 0))
                setattr(holder, out_name, _slice_linear(getattr(holder, out_name), neurons, 1))
            if prune_heads:
                attentions = _attention_modules(layer, name)
                _prune_t5_attention(attentions["self"], heads_kept[name])
                if "cross" in attentions:
                    _prune_t5_attention(attentions["cross"], heads_kept["cross"][index])
    config = student.config
    # T5 stacks hold their own copies of the config; keep them in step with the top-level one.
    configs = {id(c): c for c in (config, student.get_encoder().config, student.get_decoder().config)}.values()
    for each in configs:
        if ffn_keep is not None:
            if family == "t5":
                each.d_ff = ffn_keep
            else:
                each.encoder_ffn_dim = each.decoder_ffn_dim = ffn_keep
        if prune_heads:
            each.num_heads = heads_keep
    config.width = {
        "method": "activation",
        "teacher_ffn": current["ffn"], "ffn": widths(student)["ffn"],
        "teacher_heads": current["heads"], "heads": widths(student)["heads"],
        "heads_kept": {key: (value.tolist() if isinstance(value, torch.Tensor) else [v.tolist() for v in value])
                       for key, value in heads_kept.items()},
        "samples": importance["samples"] if importance else 0,
    }
    return student
