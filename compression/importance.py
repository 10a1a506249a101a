"""Layer importance for both stacks of a seq2seq model, scored on calibration pairs.

Every score is computed teacher-forced (the reference summary is fed to the decoder), so decoder
layers are scored on the same footing as encoder layers. Three measures per stack:

- **Block Influence** (ShortGPT, Men et al. 2024, "ShortGPT: Layers in Large Language Models are
  More Redundant Than You Expect", section 3.1): ``BI_l = 1 - E[cos(x_l, x_{l+1})]``, the mean over
  non-padding tokens of one minus the cosine similarity between the layer's input and output hidden
  states. A layer that barely turns the residual stream scores near 0.
- **Angular distance** of every contiguous block of ``n`` layers (Gromov et al. 2024, "The
  Unreasonable Ineffectiveness of the Deeper Layers", section 3.2, eq. 7):
  ``d(x_l, x_{l+n}) = arccos(cos(x_l, x_{l+n})) / pi`` in ``[0, 1]``, averaged over non-padding
  tokens (the paper uses the last token of a decoder-only model; a seq2seq stack has no single
  summary token, so every real token counts).
- **Drop-one loss**: the validation-loss increase (nats per target token) when that one layer is
  removed, one forward pass per layer — the direct measure the two proxies stand in for. The layer
  is removed with :func:`compression.layers.shrink`, so a T5 stack that loses layer 0 keeps its
  relative position bias.

Hidden states are read with forward hooks on the layers (their input and output), not by
re-implementing the model; ``x_l`` is the input of layer ``l`` and ``x_L`` the output of the last
layer (before T5's final layer norm).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch

from .arch import STACKS, get_layer_stacks
from .config import IMPORTANCE_SCORES
from .data import LABEL_PAD, make_collator
from .errors import CompressionError, DatasetError, LayerSelectionError
from .layers import shrink
from .losses import example_cross_entropy


def load_calibration(path: str | Path | None, tokenizer, model, *, dataset: str | None = None, samples: int = 32,
                     prefix: str | None = None, max_source_length: int | None = None,
                     max_target_length: int | None = None, text_column: str = "document",
                     summary_column: str = "summary", shuffle_seed: int | None = None):
    """The first ``samples`` article/summary pairs of one file (``path``) or of a dataset preset's
    training split (``dataset``, e.g. ``"debian-descriptions"``, :data:`compression.dataset_presets.DATASET_PRESETS`),
    tokenized for ``model``; with ``shuffle_seed`` the pairs are shuffled with that seed first
    (``datasets.Dataset.shuffle``), so a file sorted by some key (the Debian descriptions are sorted
    by package name) gives a seeded sample of the whole file instead of one end of it. A preset
    brings its own lengths (tokens), prefix and shuffle seed where these are left ``None``; else
    512 / 64 tokens and the files' order.

    Returns a ``datasets.Dataset`` with ``input_ids``, ``attention_mask`` and ``labels`` (see
    :func:`compression.data.prepare_data`); ``prefix=None`` uses the preset's, else the prefix the
    checkpoint records, else its family's (:func:`compression.data.default_prefix`).

    Raises:
        DatasetError: neither or both of ``path`` and ``dataset`` given, ``dataset`` is not a preset,
            the data are missing, unreadable or lack the columns, or ``samples`` < 1.
    """
    from .config import DataArgs
    from .data import prepare_data
    from .dataset_presets import DATASET_PRESETS, dataset_preset

    if samples < 1:
        raise DatasetError(f"calibration samples must be at least 1 (got {samples})")
    if (path is None) == (dataset is None):
        raise DatasetError("calibration pairs come from one place: give a data file or a dataset preset, not "
                           + ("both" if path is not None else "neither"))
    if dataset is not None and dataset_preset(dataset) is None:
        raise DatasetError(f"{dataset!r} is not a dataset preset (calibration reads local data only): "
                           f"use one of {', '.join(DATASET_PRESETS)} or give a data file")
    data = DataArgs(train_file=str(path) if path is not None else None, dataset=dataset, text_column=text_column,
                    summary_column=summary_column, prefix=prefix, max_source_length=max_source_length,
                    max_target_length=max_target_length, max_train_samples=samples, max_eval_samples=1,
                    shuffle_seed=shuffle_seed)
    return prepare_data(data, model, tokenizer).train


def _batches(dataset, tokenizer, model, batch_size: int):
    collator = make_collator(tokenizer, model)
    rows = dataset.select_columns(["input_ids", "attention_mask", "labels"])
    device = next(model.parameters()).device
    for start in range(0, len(rows), batch_size):
        batch = collator([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
        yield {key: value.to(device) for key, value in batch.items()}


def _loss_sum(model, batch) -> tuple[float, int]:
    """Summed teacher-forced cross-entropy (nats) over the batch's target tokens, and their count."""
    sums, counts = example_cross_entropy(model(**batch, use_cache=False).logits, batch["labels"])
    return sums.sum().item(), int(counts.sum())


def _capture(layers) -> tuple[list, list]:
    """Forward hooks that record each layer's input hidden states; the last layer's output is
    appended, so ``states`` ends as ``[x_0, ..., x_L]`` for one forward pass."""
    states: list[torch.Tensor] = []
    handles = []

    def pre_hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        states.append(hidden.detach())

    def post_hook(module, args, kwargs, output):
        hidden = output[0] if isinstance(output, (tuple, list)) else output
        states.append(hidden.detach())

    for layer in layers:
        handles.append(layer.register_forward_pre_hook(pre_hook, with_kwargs=True))
    handles.append(layers[-1].register_forward_hook(post_hook, with_kwargs=True))
    return states, handles


def _cosines(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> tuple[float, float, int]:
    """(sum of cos, sum of angular distance, tokens) over the real tokens; ``a``, ``b`` ``[batch, seq, d]``,
    ``mask`` ``[batch, seq]`` bool."""
    cos = torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1, eps=1e-12)[mask]
    cos = cos.clamp(-1.0, 1.0)
    return cos.sum().item(), (torch.arccos(cos) / math.pi).sum().item(), int(mask.sum())


def layer_importance(model, tokenizer, calibration, *, batch_size: int = 8, drop_one: bool = True,
                     on_progress: Callable[[str, float], None] | None = None) -> dict:
    """Score every encoder and decoder layer of ``model`` on tokenized calibration pairs.

    Args:
        model: a T5- or BART-family encoder-decoder (left unchanged; scored in eval mode, no grad).
        tokenizer: its tokenizer (pads the batches).
        calibration: tokenized pairs (``input_ids``, ``attention_mask``, ``labels``), e.g. from
            :func:`load_calibration`.
        batch_size: pairs per forward pass.
        drop_one: also measure the drop-one loss (one extra forward pass over the calibration pairs
            per layer); ``False`` leaves it ``None``.
        on_progress: called with ``(message, fraction done in [0, 1])`` after each pass.

    Returns:
        ``{"samples", "tokens": {"encoder", "decoder"}, "base_loss": nats per target token,
        "encoder": {"block_influence": [L], "drop_one_loss": [L] or None,
        "angular_distance": {"1": [L], "2": [L - 1], ..., str(L): [1]}}, "decoder": {...}}``
        where ``angular_distance[str(n)][l]`` is the distance across layers ``l .. l + n - 1``.
        Block influence and angular distance are in ``[0, 1]`` (higher: the layer changes its input
        more); drop-one loss is in nats (higher: removing the layer costs more; can be negative;
        ``None`` for the only layer of a one-layer stack).

    Raises:
        CompressionError: no calibration pairs.
        NotSeq2SeqError: not a T5- or BART-family encoder-decoder.
    """
    if len(calibration) == 0:
        raise CompressionError("no calibration pairs to score the layers on: give at least one pair")
    was_training = model.training
    model.eval()
    stacks = dict(zip(STACKS, get_layer_stacks(model)))
    depth = {name: len(layers) for name, layers in stacks.items()}
    passes = 1 + (sum(depth.values()) if drop_one else 0)
    cos_sum = {name: [[0.0] * (depth[name] - n + 1) for n in range(1, depth[name] + 1)] for name in STACKS}
    ang_sum = {name: [[0.0] * (depth[name] - n + 1) for n in range(1, depth[name] + 1)] for name in STACKS}
    tokens = dict.fromkeys(STACKS, 0)
    loss_total, loss_tokens = 0.0, 0
    captured = {name: _capture(layers) for name, layers in stacks.items()}
    try:
        with torch.no_grad():
            for batch in _batches(calibration, tokenizer, model, batch_size):
                for states, _ in captured.values():
                    states.clear()
                total, count = _loss_sum(model, batch)
                loss_total, loss_tokens = loss_total + total, loss_tokens + count
                masks = {"encoder": batch["attention_mask"].bool(), "decoder": batch["labels"] != LABEL_PAD}
                for name in STACKS:
                    states = captured[name][0]
                    for n in range(1, depth[name] + 1):
                        for start in range(depth[name] - n + 1):
                            c, a, t = _cosines(states[start], states[start + n], masks[name])
                            cos_sum[name][n - 1][start] += c
                            ang_sum[name][n - 1][start] += a
                    tokens[name] += int(masks[name].sum())
    finally:
        for _, handles in captured.values():
            for handle in handles:
                handle.remove()
    base_loss = loss_total / max(loss_tokens, 1)
    done = 1
    if on_progress:
        on_progress("hidden states scored", done / passes)
    result: dict = {"samples": len(calibration), "tokens": tokens, "base_loss": base_loss}
    for name in STACKS:
        result[name] = {
            "block_influence": [1.0 - c / tokens[name] for c in cos_sum[name][0]],
            "drop_one_loss": None,
            "angular_distance": {str(n): [a / tokens[name] for a in ang_sum[name][n - 1]]
                                 for n in range(1, depth[name] + 1)},
        }
    if drop_one:
        for name in STACKS:
            losses = []
            for index in range(depth[name]):
                keep = [i for i in range(depth[name]) if i != index] or None
                if keep is None:  # a one-layer stack: removing its only layer leaves no model
                    losses.append(None)
                    continue
                student = shrink(model, **{f"{name}_layers": keep})
                total = count = 0
                with torch.no_grad():
                    for batch in _batches(calibration, tokenizer, model, batch_size):
                        t, c = _loss_sum(student, batch)
                        total, count = total + t, count + c
                losses.append(total / max(count, 1) - base_loss)
                del student
                done += 1
                if on_progress:
                    on_progress(f"drop-one loss: {name} layer {index}", done / passes)
            result[name]["drop_one_loss"] = losses
    model.train(was_training)
    return result


def importance_for_data(model_source: str | Path, data, *, samples: int = 32, drop_one: bool = True,
                        on_progress: Callable[[str, float], None] | None = None) -> dict:
    """:func:`layer_importance` of the checkpoint ``model_source`` on the first ``samples`` training
    pairs of ``data`` (a :class:`compression.config.DataArgs`), tokenized as a run tokenizes them
    (:func:`compression.data.prepare_data`) - the pairs ``--strategy importance`` scores on
    (``ShrinkArgs.importance_samples``, default 32), so a plan shown from this result is the run's.

    Returns: :func:`layer_importance`'s dict. Raises: ModelLoadError (checkpoint), DatasetError
    (data), CompressionError (``samples`` < 1).
    """
    import dataclasses

    from .data import prepare_data
    from .load import load_model

    if samples < 1:
        raise CompressionError(f"score the layers on at least 1 pair (got {samples})")
    model, tokenizer = load_model(model_source)
    wanted = samples if data.max_train_samples is None else min(samples, data.max_train_samples)
    prepared = prepare_data(dataclasses.replace(data, max_train_samples=wanted, max_eval_samples=1), model, tokenizer)
    return layer_importance(model, tokenizer, prepared.train, drop_one=drop_one, on_progress=on_progress)


def selection_scores(importance: dict, score: str) -> dict[str, list[float]]:
    """``{"encoder": [L_enc], "decoder": [L_dec]}`` of one score from :func:`layer_importance`.

    Raises:
        LayerSelectionError: unknown score name, or a score that was not computed.
    """
    if score not in IMPORTANCE_SCORES:
        raise LayerSelectionError(f"unknown importance score {score!r}: choose one of {', '.join(IMPORTANCE_SCORES)}")
    out = {name: importance[name][score] for name in STACKS}
    if any(values is None for values in out.values()):
        raise LayerSelectionError(f"the importance scores hold no {score!r}: score the layers with drop_one=True")
    return {name: [math.inf if value is None else value for value in values] for name, values in out.items()}


def importance_table(importance: dict) -> str:
    """Plain-text table of :func:`layer_importance`'s result, one row per layer of each stack."""
    lines = [f"{importance['samples']} calibration pairs, the model's loss on them {importance['base_loss']:.4f} nats (teacher-forced cross-entropy)"]
    for name in STACKS:
        scores = importance[name]
        depth = len(scores["block_influence"])
        blocks = [n for n in range(2, depth + 1)]
        header = f"{name:<8} layer  block infl.  drop-one Δloss  " + "  ".join(f"ang. n={n}" for n in blocks)
        lines += ["", header, "-" * len(header)]
        for layer in range(depth):
            drop = scores["drop_one_loss"]
            drop_text = f"{drop[layer]:+.4f}" if drop is not None and drop[layer] is not None else "-"
            angles = "  ".join(
                f"{scores['angular_distance'][str(n)][layer]:8.4f}" if layer < depth - n + 1 else " " * 8
                for n in blocks)
            lines.append(f"{'':<8} {layer:>5}  {scores['block_influence'][layer]:11.4f}  {drop_text:>14}  {angles}")
    return "\n".join(lines)


def shrink_by_importance(model, tokenizer, calibration, encoder_layers=None, decoder_layers=None, *,
                         score: str = "drop_one_loss", batch_size: int = 8,
                         on_progress: Callable[[str, float], None] | None = None):
    """A student keeping, per stack, the layers with the highest ``score`` on ``calibration``.

    Scores the teacher with :func:`layer_importance` (the drop-one passes only when ``score`` is
    ``"drop_one_loss"``), then :func:`compression.layers.shrink` with ``strategy="importance"``;
    the student's ``config.shrink["importance"]`` records the score name, the per-layer scores of
    both stacks and the number of calibration pairs beside the kept indices.

    Returns:
        ``(student, importance)``, the latter as returned by :func:`layer_importance`.

    Raises:
        LayerSelectionError: bad counts/indices or an unknown score.
        CompressionError: no calibration pairs.
    """
    if score not in IMPORTANCE_SCORES:
        raise LayerSelectionError(f"unknown importance score {score!r}: choose one of {', '.join(IMPORTANCE_SCORES)}")
    importance = layer_importance(model, tokenizer, calibration, batch_size=batch_size,
                                  drop_one=score == "drop_one_loss", on_progress=on_progress)
    student = shrink(model, encoder_layers, decoder_layers, "importance", scores=selection_scores(importance, score),
                     score_name=score)
    student.config.shrink["importance"] = {"score": score, "samples": importance["samples"],
                                           **{name: importance[name][score] for name in STACKS}}
    return student, importance
