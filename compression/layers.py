"""Layer selection strategies and layer surgery: the "shrink" half of Shrink-and-Fine-Tune.

Shleifer & Rush 2020, "Pre-trained Summarization Distillation", section 3 (SFT): a student is made
by copying a subset of the teacher's layers, maximally spaced, into a shallower model with the same
width; everything else (embeddings, final norms, ``lm_head``) is copied whole. The ``spread`` table
is transformers' ``examples/research_projects/seq2seq-distillation`` ``LAYERS_TO_COPY``; the shape of
:func:`shrink` follows distil-whisper's ``create_student_model.py``.
"""

from __future__ import annotations

import copy

from transformers import PreTrainedModel

from .arch import (  # noqa: F401  (layer helpers re-exported from their old home)
    get_layer_stacks,
    model_family,
    move_relative_attention_bias,
    renumber_layer_indices,
    set_layer_stack,
    set_t5_decoder_depth,
    stack_modules,
)
from .config import IMPORTANCE, SHRINK_STRATEGIES
from .errors import LayerSelectionError
from .load import describe_model

# teacher depth -> student depth -> teacher layers to copy (seq2seq-distillation, LAYERS_TO_COPY).
LAYERS_TO_COPY: dict[int, dict[int, list[int]]] = {
    12: {1: [0], 2: [0, 6], 3: [0, 6, 11], 4: [0, 4, 8, 11], 6: [0, 2, 4, 7, 9, 11],
         9: [0, 1, 2, 4, 5, 7, 9, 10, 11], 12: list(range(12))},
    16: {1: [0], 2: [0, 15], 3: [0, 8, 15], 4: [0, 5, 10, 15], 6: [0, 3, 6, 9, 12, 15],
         8: [0, 2, 4, 6, 8, 10, 12, 15], 9: [0, 1, 3, 5, 7, 9, 11, 13, 15],
         12: [0, 1, 2, 3, 4, 5, 6, 7, 9, 11, 13, 15], 16: list(range(16))},
    6: {1: [0], 2: [0, 5], 3: [0, 2, 5], 4: [0, 1, 3, 5], 6: list(range(6))},
}
# teacher depth -> student depth -> teacher layer whose output each student layer is matched to
# in hidden-state distillation (seq2seq-distillation, LAYERS_TO_SUPERVISE).
LAYERS_TO_SUPERVISE: dict[int, dict[int, list[int]]] = {
    6: {1: [5], 2: [3, 5], 3: [1, 4, 5], 4: [1, 2, 4, 5]},
    12: {1: [11], 2: [5, 11], 3: [3, 7, 11], 6: [1, 3, 5, 8, 10, 11]},
    16: {1: [15], 4: [4, 9, 12, 15], 8: [1, 3, 5, 7, 9, 11, 13, 15]},
}


def _is_count(spec: int | str | list[int] | None) -> bool:
    """True when a layer choice is a count (or keep-all), False when it lists explicit indices."""
    return spec is None or isinstance(spec, int) or (isinstance(spec, str) and "," not in spec)


def _check_count(n_teacher: int, n_student: int, stack: str) -> None:
    if n_student <= 0:
        raise LayerSelectionError(f"{stack} layers to keep must be at least 1 (got {n_student})")
    if n_student > n_teacher:
        raise LayerSelectionError(
            f"cannot keep {n_student} {stack} layers: the model has only {n_teacher}; choose 1 to {n_teacher}"
        )


def select_layers(n_teacher: int, n_student: int, strategy: str = "spread", stack: str = "decoder",
                  scores: list[float] | None = None) -> list[int]:
    """Indices of the teacher layers a student of depth ``n_student`` keeps.

    Strategies:
        ``spread``: maximally spaced, first and last kept (SFT, Shleifer & Rush 2020 §3); the
            ``LAYERS_TO_COPY`` table where it defines the pair (12->3 keeps 0, 6, 11), else evenly
            spaced ``round(i * (n_teacher - 1) / (n_student - 1))``.
        ``alternate``: evenly strided from the first layer, ``floor(i * n_teacher / n_student)``; at half
            depth it deletes every other layer (6->3 keeps 0, 2, 4), as in the blog post's recipe.
        ``first`` / ``last``: the bottom or top ``n_student`` layers.
        ``importance``: the ``n_student`` layers with the highest ``scores`` (one per teacher layer,
            higher = more important, e.g. drop-one loss or Block Influence from
            :func:`compression.importance.layer_importance`); ties keep the lower index.

    Returns:
        strictly increasing list of ``n_student`` indices in ``[0, n_teacher)``.

    Raises:
        LayerSelectionError: ``n_student`` <= 0 or above ``n_teacher``, an unknown strategy, or
            ``importance`` without one score per teacher layer.
    """
    _check_count(n_teacher, n_student, stack)
    if strategy == IMPORTANCE:
        if scores is None or len(scores) != n_teacher:
            raise LayerSelectionError(
                f"the importance strategy needs one score per {stack} layer ({n_teacher}); score the layers on "
                "calibration pairs first (give the data file)")
        ranked = sorted(range(n_teacher), key=lambda i: (-scores[i], i))
        return sorted(ranked[:n_student])
    if strategy == "spread":
        if n_student in LAYERS_TO_COPY.get(n_teacher, {}):
            return list(LAYERS_TO_COPY[n_teacher][n_student])
        if n_student == 1:
            return [0]
        return [round(i * (n_teacher - 1) / (n_student - 1)) for i in range(n_student)]
    if strategy == "alternate":
        return [i * n_teacher // n_student for i in range(n_student)]
    if strategy == "first":
        return list(range(n_student))
    if strategy == "last":
        return list(range(n_teacher - n_student, n_teacher))
    raise LayerSelectionError(f"unknown strategy {strategy!r}: choose one of {', '.join(SHRINK_STRATEGIES)}")


def parse_layers(spec: int | str | list[int] | None, n_teacher: int, strategy: str = "spread",
                 stack: str = "decoder", scores: list[float] | None = None) -> list[int]:
    """Turn a user's layer choice into kept indices.

    ``spec`` is ``None`` (keep all), a count (``3`` or ``"3"``, picked by ``strategy``; ``scores``
    for ``importance``, see :func:`select_layers`), or explicit indices (``"0,3,5"`` or
    ``[0, 3, 5]``; returned sorted).

    Raises:
        LayerSelectionError: not a number, a count out of range, an index out of range, duplicated.
    """
    if spec is None or spec == "":
        return list(range(n_teacher))
    if isinstance(spec, int):
        return select_layers(n_teacher, spec, strategy, stack, scores)
    if isinstance(spec, str):
        text = spec.strip()
        if "," not in text:
            try:
                count = int(text)
            except ValueError:
                raise LayerSelectionError(
                    f"{stack} layers {spec!r}: give a count (e.g. 3) or indices (e.g. 0,3,5)"
                ) from None
            return select_layers(n_teacher, count, strategy, stack, scores)
        try:
            indices = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise LayerSelectionError(f"{stack} layer indices {spec!r} must be whole numbers, e.g. 0,3,5") from None
    else:
        indices = [int(i) for i in spec]
    if not indices:
        raise LayerSelectionError(f"no {stack} layers given: keep at least one")
    if len(set(indices)) != len(indices):
        raise LayerSelectionError(f"{stack} layer indices {indices} repeat a layer: list each layer once")
    bad = [i for i in indices if not 0 <= i < n_teacher]
    if bad:
        raise LayerSelectionError(
            f"{stack} layer indices {bad} are out of range: the model has {n_teacher} layers, numbered 0 to {n_teacher - 1}"
        )
    return sorted(indices)


def layers_to_supervise(n_teacher: int, kept: list[int]) -> list[int]:
    """Teacher layer matched to each student layer for hidden-state distillation.

    The ``LAYERS_TO_SUPERVISE`` table of seq2seq-distillation where it defines the pair (12->3
    supervises 3, 7, 11) and the student kept the table's ``spread`` layers; otherwise each student
    layer, which stands in for teacher layers ``kept[j] .. kept[j+1]-1``, is matched to the last
    teacher layer of that span (the last student layer to the teacher's last layer).

    Returns:
        list of ``len(kept)`` teacher indices.
    """
    n_student = len(kept)
    if n_student == n_teacher:
        return list(range(n_teacher))
    table = LAYERS_TO_SUPERVISE.get(n_teacher, {})
    if n_student in table and kept == LAYERS_TO_COPY.get(n_teacher, {}).get(n_student):
        return list(table[n_student])
    return [kept[j + 1] - 1 for j in range(n_student - 1)] + [n_teacher - 1]


def shrink(model: PreTrainedModel, encoder_layers: int | str | list[int] | None = None,
           decoder_layers: int | str | list[int] | None = None, strategy: str = "spread",
           scores: dict[str, list[float]] | None = None, score_name: str | None = None) -> PreTrainedModel:
    """Make a student by copying the chosen teacher layers (SFT, Shleifer & Rush 2020 §3).

    The teacher is left untouched; the student is a deep copy with the unkept layers removed, its
    config depth fields updated (``num_layers``/``num_decoder_layers`` or
    ``encoder_layers``/``decoder_layers``) and a ``shrink`` entry recording the kept indices, e.g.
    ``{"encoder_layers_kept": [0, 2, 5], "decoder_layers_kept": [0, 5], ...}``. For T5 the relative
    position bias of block 0 moves to the new first block when block 0 is dropped; every attention
    module's ``layer_idx`` is renumbered so cached generation works; tied embeddings stay tied.

    Args:
        model: the teacher (T5 or BART family), any dtype/device.
        encoder_layers, decoder_layers: see :func:`parse_layers` (``None`` keeps the stack whole).
        strategy: see :func:`select_layers`.
        scores: for ``strategy="importance"``, ``{"encoder": [one score per teacher layer],
            "decoder": [...]}`` (higher = keep first); recorded in ``config.shrink["importance"]``
            as ``{"score": score_name, "encoder": [...], "decoder": [...]}`` beside the kept indices.
        score_name: which score ``scores`` holds (e.g. ``"drop_one_loss"``), for the record.

    Raises:
        LayerSelectionError: bad counts or indices.
        NotSeq2SeqError: the model is not a T5- or BART-family encoder-decoder.
    """
    family = model_family(model)
    teacher_encoder, teacher_decoder = get_layer_stacks(model)
    scores = scores or {}
    kept = {
        "encoder": parse_layers(encoder_layers, len(teacher_encoder), strategy, "encoder", scores.get("encoder")),
        "decoder": parse_layers(decoder_layers, len(teacher_decoder), strategy, "decoder", scores.get("decoder")),
    }
    student = copy.deepcopy(model)
    for stack_name, old in zip(("encoder", "decoder"), get_layer_stacks(student)):
        new = [old[i] for i in kept[stack_name]]
        if family == "t5" and kept[stack_name][0] != 0:
            move_relative_attention_bias(old[0], new[0])
        set_layer_stack(student, stack_name, new)
    student.config.shrink = {
        "method": "sft",
        "teacher": getattr(model.config, "_name_or_path", "") or None,
        "strategy": strategy if all(_is_count(spec) for spec in (encoder_layers, decoder_layers)) else "custom",
        "teacher_encoder_layers": len(teacher_encoder),
        "teacher_decoder_layers": len(teacher_decoder),
        "encoder_layers_kept": kept["encoder"],
        "decoder_layers_kept": kept["decoder"],
    }
    if strategy == IMPORTANCE and scores:
        student.config.shrink["importance"] = {"score": score_name, "encoder": list(scores.get("encoder", [])),
                                               "decoder": list(scores.get("decoder", []))}
    return student


def layer_footprint(model) -> dict:
    """Exact per-layer parameter counts and bytes, for estimating a student before it is built.

    Returns ``{"encoder": [params of layer i], "decoder": [...], "encoder_bytes": [...],
    "decoder_bytes": [...], "params": total, "bytes": total}``. Totals are those of
    :func:`compression.load.describe_model` (unique parameters; bytes of parameters and buffers).
    T5's relative position bias lives in layer 0 but moves to the student's first layer when
    layer 0 is dropped (:func:`shrink`), so it is counted outside the layers.
    Everything else a student keeps whole (embeddings, final norms, head) is the total minus the
    layers.
    """
    facts = describe_model(model)
    out: dict = {"params": facts["params"], "bytes": facts["size_mib"] * 2**20}
    for name, stack in zip(("encoder", "decoder"), get_layer_stacks(model)):
        counts, sizes = [], []
        for layer in stack:
            params = nbytes = 0
            for is_param, named in ((True, layer.named_parameters()), (False, layer.named_buffers())):
                for tensor_name, tensor in named:
                    if "relative_attention_bias" in tensor_name:
                        continue
                    nbytes += tensor.numel() * tensor.element_size()
                    params += tensor.numel() if is_param else 0
            counts.append(params)
            sizes.append(nbytes)
        out[name] = counts
        out[f"{name}_bytes"] = sizes
    return out


def estimate_student(footprint: dict, kept_encoder: list[int], kept_decoder: list[int]) -> tuple[int, float]:
    """``(parameters, size MiB)`` of the student keeping these layers: the teacher's totals minus
    the dropped layers' (exact; see :func:`layer_footprint`). Size is the fp32 (unquantized) size."""
    params, nbytes = footprint["params"], footprint["bytes"]
    for name, kept in (("encoder", kept_encoder), ("decoder", kept_decoder)):
        for i, (count, size) in enumerate(zip(footprint[name], footprint[f"{name}_bytes"])):
            if i not in kept:
                params -= count
                nbytes -= size
    return int(params), nbytes / 2**20
