"""Spans, module names and the settings of module training (see ``docs/modular.md``)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ..config import ATTENTION_LOSSES
from ..errors import ModularError

STACKS = ("encoder", "decoder")
PRIORITIES = ("size", "speed")
#: Files of a modular checkpoint folder.
TEACHER_DIR = "teacher"
MODULES_FILE = "modules.safetensors"
CONFIG_FILE = "modular.json"
FORMAT_VERSION = 1
DEFAULT_GRANULARITIES = (2, 3, 4)


def parse_granularities(value: int | str | Iterable[int]) -> tuple[int, ...]:
    """Granularities (layers per module) as a sorted tuple, from ``(2, 3, 4)``, ``"2,3,4"`` or ``2``.

    Raises:
        ModularError: not whole numbers, none, below 2, or repeated.
    """
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, int):
        parts = [value]
    else:
        parts = list(value)
    try:
        numbers = [int(part) for part in parts]
    except (TypeError, ValueError):
        raise ModularError(f"granularities {value!r} must be whole numbers, e.g. 2,3,4") from None
    if not numbers:
        raise ModularError("give at least one granularity (layers per module), e.g. 2,3,4")
    if any(g < 2 for g in numbers):
        raise ModularError(f"granularities {numbers}: each must be at least 2 (a module replaces 2 or more layers)")
    if len(set(numbers)) != len(numbers):
        raise ModularError(f"granularities {numbers} repeat a value: list each once")
    return tuple(sorted(numbers))


@dataclass
class ModularArgs:
    """Settings of module training (see the module docstring for the reasoning).

    ``granularities``: layers replaced per module (``(2, 3, 4)``, or a string ``"2,3,4"``).
    ``replace_rate_start``/``replace_rate_end``: probability that a span is replaced, linear over
    training (0.5 -> 1.0). ``curriculum``: coarse-to-fine granularity sampling (else uniform).
    ``alpha_ce``/``alpha_hidden``/``alpha_attention``: loss weights (1.0 each). ``attention_loss``:
    ``"kl"`` or ``"mse"``. ``normalize_hidden``: layer-norm hidden states before the MSE.

    Raises:
        ModularError: granularities below 2 or repeated, a rate outside (0, 1], negative weights or all
            zero, an unknown attention loss.
    """

    granularities: tuple[int, ...] | str = DEFAULT_GRANULARITIES
    replace_rate_start: float = 0.5
    replace_rate_end: float = 1.0
    curriculum: bool = True
    alpha_ce: float = 1.0
    alpha_hidden: float = 1.0
    alpha_attention: float = 1.0
    attention_loss: str = "kl"
    normalize_hidden: bool = True

    def __post_init__(self) -> None:
        self.granularities = parse_granularities(self.granularities)
        for name in ("replace_rate_start", "replace_rate_end"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value <= 1):
                raise ModularError(f"{name.replace('_', ' ')} must lie in (0, 1] (got {value!r})")
        weights = {"alpha_ce": self.alpha_ce, "alpha_hidden": self.alpha_hidden,
                   "alpha_attention": self.alpha_attention}
        for name, value in weights.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ModularError(f"{name} must be a number >= 0 (got {value!r})")
        if sum(weights.values()) <= 0:
            raise ModularError("all loss weights are 0: give at least one positive weight")
        if self.attention_loss not in ATTENTION_LOSSES:
            raise ModularError(f"attention loss must be 'kl' or 'mse', got {self.attention_loss!r}")


@dataclass(frozen=True)
class Span:
    """Teacher layers ``[start, end)`` of one stack (``"encoder"``/``"decoder"``) replaced by one module."""

    stack: str
    start: int
    end: int

    @property
    def granularity(self) -> int:
        return self.end - self.start

    @property
    def name(self) -> str:
        """The module's name, e.g. ``"encoder.g2.s0"``."""
        return module_name(self.stack, self.granularity, self.start)

    def as_dict(self) -> dict:
        return {"stack": self.stack, "start": self.start, "end": self.end, "module": self.name}


def module_name(stack: str, granularity: int, start: int) -> str:
    """``"{stack}.g{granularity}.s{start}"``: the name of the module replacing ``[start, start + granularity)``."""
    return f"{stack}.g{granularity}.s{start}"


def spans_of(n_layers: int, granularity: int) -> list[tuple[int, int]]:
    """Aligned, non-overlapping spans ``[k*g, (k+1)*g)`` of a stack of ``n_layers``; the partial rest is left out."""
    return [(k * granularity, (k + 1) * granularity) for k in range(n_layers // granularity)]


def granularity_weights(count: int, progress: float) -> list[float]:
    """Curriculum weights of ``count`` granularities (finest first) at ``progress`` in [0, 1].

    Triangular around a centre moving linearly from the coarsest (progress 0) to the finest
    (progress 1): ``w_i = count - |i - c|`` with ``c = (1 - progress) * (count - 1)``; every weight >= 1.
    """
    centre = (1.0 - progress) * (count - 1)
    return [count - abs(i - centre) for i in range(count)]
