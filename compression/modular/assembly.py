"""Assembling students at a compression ratio from trained modules, deterministically, with no
training (see ``docs/modular.md``)."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from transformers import PreTrainedModel

from ..arch import count_parameters, set_layer_stack
from ..errors import CompressionError, ModularError
from ..length_plan import stack_to_cut
from .model import ModularModel
from .spans import PRIORITIES, STACKS, Span, parse_granularities
from .supervision import reset_output_capturing, share_config, stack_configs


@dataclass(frozen=True)
class _StackOption:
    """One way to compress one stack: granularity ``g`` (None: untouched) with ``spans`` replaced."""

    stack: str
    depth: int
    granularity: int | None
    spans: tuple[Span, ...]

    @property
    def layers(self) -> int:
        return self.depth - sum(span.granularity - 1 for span in self.spans)


def _granularities_for(modular: ModularModel, granularities: Iterable[int] | None) -> tuple[int, ...]:
    if granularities is None:
        return modular.granularities
    wanted = parse_granularities(granularities)
    missing = [g for g in wanted if g not in modular.granularities]
    if missing:
        raise ModularError(
            f"no modules of granularity {', '.join(map(str, missing))}: this checkpoint has "
            f"{', '.join(map(str, modular.granularities))}; choose among those or retrain with them"
        )
    return wanted


def _stack_options(modular: ModularModel, stack: str, granularities: Sequence[int]) -> list[_StackOption]:
    depth = modular.depths[stack]
    options = [_StackOption(stack, depth, None, ())]
    for g in granularities:
        spans = modular.spans(stack, g)
        options.extend(_StackOption(stack, depth, g, tuple(spans[-k:])) for k in range(1, len(spans) + 1))
    return options


def _check_priority(priority: str) -> None:
    if priority not in PRIORITIES:
        raise ModularError(f"priority must be 'size' or 'speed', got {priority!r}")


def max_ratio(modular: ModularModel, priority: str = "size", granularities: Iterable[int] | None = None) -> float:
    """The largest compression ratio (teacher layers / assembled layers) the modules allow.

    Both priorities reach the same maximum (every stack fully replaced at its most compressing
    granularity); ``priority`` is validated for symmetry with :func:`assemble`.

    Raises:
        ModularError: unknown priority or granularity.
    """
    _check_priority(priority)
    granularities = _granularities_for(modular, granularities)
    fewest = sum(min(option.layers for option in _stack_options(modular, stack, granularities)) for stack in STACKS)
    return (modular.depths["encoder"] + modular.depths["decoder"]) / fewest


def available_ratios(modular: ModularModel, priority: str = "size",
                     granularities: Iterable[int] | None = None) -> list[float]:
    """Every distinct compression ratio an assembly can hit exactly, ascending (starts at 1.0).

    Raises:
        ModularError: unknown priority or granularity.
    """
    _check_priority(priority)
    granularities = _granularities_for(modular, granularities)
    encoder = _stack_options(modular, "encoder", granularities)
    decoder = _stack_options(modular, "decoder", granularities)
    total = modular.depths["encoder"] + modular.depths["decoder"]
    return sorted({total / (e.layers + d.layers) for e in encoder for d in decoder})


def speed_stack(modular: ModularModel, speed_cut: str = "auto", source_length: int | None = None) -> str:
    """The stack speed-first assembling shortens first: ``speed_cut`` itself (``"encoder"`` or
    ``"decoder"``), or for ``"auto"`` the one whose layer costs more generation time at
    ``source_length`` tokens for the teacher's architecture (:func:`compression.length_plan.stack_to_cut`:
    the decoder for short inputs, the encoder for long ones; 512 tokens when ``None``).

    Raises:
        ModularError: ``speed_cut`` not ``auto``, ``encoder`` or ``decoder``.
    """
    try:
        return stack_to_cut(modular.teacher.config, source_length, speed_cut)
    except CompressionError as error:
        raise ModularError(str(error)) from None


def plan_for_ratio(modular: ModularModel, ratio: float, priority: str = "size",
                   granularities: Iterable[int] | None = None, *, speed_cut: str = "auto",
                   source_length: int | None = None) -> list[Span]:
    """The spans an assembly at ``ratio`` replaces (deterministic; see the module docstring).

    The assembly has the most layers ``L`` with ``(n_enc + n_dec) / L >= ratio``; among those,
    ``"size"`` balances the stacks with the coarsest modules, ``"speed"`` compresses one stack first
    with the finest modules: the stack of :func:`speed_stack` (``speed_cut`` ``"auto"``: the decoder
    for short inputs, the encoder for long ones, at ``source_length`` tokens).

    Raises:
        ModularError: ratio below 1, not a number, or above :func:`max_ratio` (the message gives the
            allowed range); unknown priority, granularity or ``speed_cut``.
    """
    _check_priority(priority)
    first = speed_stack(modular, speed_cut, source_length) if priority == "speed" else None
    granularities = _granularities_for(modular, granularities)
    highest = max_ratio(modular, priority, granularities)
    if not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio < 1 or ratio > highest + 1e-9:
        raise ModularError(
            f"compression ratio {ratio!r} is out of range: these modules allow 1 (the teacher) to "
            f"{highest:.4g} (teacher layers / assembled layers)"
        )
    n_enc, n_dec = modular.depths["encoder"], modular.depths["decoder"]
    budget = math.floor((n_enc + n_dec) / ratio + 1e-9)
    pairs = [(e, d) for e in _stack_options(modular, "encoder", granularities)
             for d in _stack_options(modular, "decoder", granularities) if e.layers + d.layers <= budget]
    most = max(e.layers + d.layers for e, d in pairs)
    pairs = [(e, d) for e, d in pairs if e.layers + d.layers == most]
    if priority == "size":
        def key(pair):
            e, d = pair
            return (abs(e.layers / n_enc - d.layers / n_dec), len(e.spans) + len(d.spans),
                    -(d.granularity or 0), d.layers, -(e.granularity or 0))
    elif first == "decoder":
        def key(pair):
            e, d = pair
            return (d.layers, d.granularity or 0, e.granularity or 0)
    else:
        def key(pair):
            e, d = pair
            return (e.layers, e.granularity or 0, d.granularity or 0)
    encoder, decoder = min(pairs, key=key)
    return list(encoder.spans + decoder.spans)


def assemble(modular: ModularModel, ratio: float, priority: str = "size",
             granularities: Iterable[int] | None = None, *, speed_cut: str = "auto",
             source_length: int | None = None) -> PreTrainedModel:
    """An ordinary model of the teacher's class at compression ``ratio`` (teacher layers / assembled layers).

    The teacher is deep-copied and, per :func:`plan_for_ratio`, spans of its layers are replaced by
    copies of their modules; depth fields are updated (``num_layers``/``num_decoder_layers`` or
    ``encoder_layers``/``decoder_layers``), attention ``layer_idx`` renumbered, every weight trainable,
    eval mode, and ``config.modular`` records ``ratio`` (achieved), ``requested_ratio``, ``priority``,
    ``speed_stack`` (speed-first: the stack shortened first, else ``None``), ``source_length``,
    ``granularities``, ``replaced`` (``[{"stack", "start", "end", "module"}, ...]``), the depths and the
    parameter counts. It saves and loads with plain transformers. ``ratio == 1`` returns an exact copy
    of the teacher.

    Args:
        modular: trained modules (:func:`train_modules` or :func:`load_modular`).
        ratio: in ``[1, max_ratio(modular)]``.
        priority: ``"size"`` or ``"speed"``.
        granularities: restrict to these trained granularities (default: all).
        speed_cut: speed-first only: ``"auto"`` (the stack that costs more at ``source_length``,
            :func:`speed_stack`), ``"encoder"`` or ``"decoder"``.
        source_length: source tokens of the inputs the student will summarize (``"auto"``; 512 when
            ``None``).

    Raises:
        ModularError: ratio out of range (the message gives the allowed range), unknown priority or
            ``speed_cut``, or a granularity without modules.
    """
    plan = plan_for_ratio(modular, ratio, priority, granularities, speed_cut=speed_cut, source_length=source_length)
    used = sorted({span.granularity for span in plan})
    # One deepcopy of teacher and lists together: the lists' teacher layers become the copy's layers.
    model, lists = copy.deepcopy((modular.teacher, modular.assemble_layers(plan)))
    model.requires_grad_(True)
    configs = stack_configs(model)
    depths = {}
    for stack in STACKS:
        for layer in lists[stack]:
            share_config(layer, configs[stack])
        depths[stack] = len(set_layer_stack(model, stack, lists[stack]))
    reset_output_capturing(model)
    total = modular.depths["encoder"] + modular.depths["decoder"]
    model.config.modular = {
        "method": "modular-transformers",
        "teacher": getattr(modular.teacher.config, "_name_or_path", "") or None,
        "ratio": total / (depths["encoder"] + depths["decoder"]),
        "requested_ratio": float(ratio),
        "priority": priority,
        "speed_stack": speed_stack(modular, speed_cut, source_length) if priority == "speed" else None,
        "source_length": source_length,
        "granularities": used,
        "replaced": [span.as_dict() for span in plan],
        "teacher_encoder_layers": modular.depths["encoder"],
        "teacher_decoder_layers": modular.depths["decoder"],
        "encoder_layers": depths["encoder"],
        "decoder_layers": depths["decoder"],
        "teacher_params": count_parameters(modular.teacher),
        "params": count_parameters(model),
    }
    return model.eval()
