"""Spans and module names (see ``docs/modular.md``); the settings of module training,
:class:`compression.config.ModularArgs`, are re-exported here."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import DEFAULT_GRANULARITIES, ModularArgs, parse_granularities  # noqa: F401  (the settings live in config)

STACKS = ("encoder", "decoder")
PRIORITIES = ("size", "speed")
#: Files of a modular checkpoint folder.
TEACHER_DIR = "teacher"
MODULES_FILE = "modules.safetensors"
CONFIG_FILE = "modular.json"
FORMAT_VERSION = 1


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
