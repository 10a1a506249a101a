"""``ModularModel``: a frozen teacher plus trainable modules, and the plans that install them
(see ``docs/modular.md``)."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from ..arch import get_layer_stacks, layer_attribute, model_family
from ..errors import ModularError
from .spans import DEFAULT_GRANULARITIES, STACKS, ModularArgs, Span, granularity_weights, parse_granularities, spans_of
from .supervision import Recorder, Supervised, share_config, stack_configs


class ModularModel(nn.Module):
    """A frozen teacher plus trainable modules, one per (stack, granularity, aligned span).

    ``layers`` is a nested ``nn.ModuleDict``: ``layers["encoder"]["g2"]["s0"]`` is the module
    ``"encoder.g2.s0"`` that replaces encoder layers 0-1. The teacher is shared, not copied, and
    stays in eval mode whatever ``train()`` is called with (:func:`train_modules` also freezes it for
    the run). ``forward``
    runs the teacher with the layers of the plan installed by :meth:`use_plan` (none: the teacher
    itself) and returns its ``Seq2SeqLMOutput``; ``use_cache`` defaults to False.

    Args:
        teacher: a T5- or BART-family model (any depth).
        granularities: layers per module, each >= 2.

    Raises:
        ModularError: bad granularities, or a granularity deeper than both stacks.
        NotSeq2SeqError: the teacher is not a T5/BART-family encoder-decoder.
    """

    def __init__(self, teacher: PreTrainedModel, granularities: Iterable[int] = DEFAULT_GRANULARITIES) -> None:
        super().__init__()
        self.family = model_family(teacher)
        self.teacher = teacher.eval()
        encoder, decoder = get_layer_stacks(teacher)
        # The teacher's own layer lists, kept unregistered: use_plan swaps the stacks' lists.
        self._teacher_layers = {"encoder": encoder, "decoder": decoder}
        self.depths = {"encoder": len(encoder), "decoder": len(decoder)}
        self.granularities = parse_granularities(granularities)
        too_deep = [g for g in self.granularities if g > max(self.depths.values())]
        if too_deep:
            raise ModularError(
                f"granularities {too_deep} exceed both stacks ({self.depths['encoder']} encoder, "
                f"{self.depths['decoder']} decoder layers): use granularities of at most "
                f"{max(self.depths.values())}"
            )
        configs = stack_configs(teacher)
        self.layers = nn.ModuleDict()
        for stack in STACKS:
            per_granularity = nn.ModuleDict()
            for g in self.granularities:
                spans = spans_of(self.depths[stack], g)
                if spans:
                    per_granularity[f"g{g}"] = nn.ModuleDict(
                        {f"s{start}": self._new_module(stack, start, configs[stack]) for start, _ in spans})
            self.layers[stack] = per_granularity
        self.info: dict[str, Any] = {}

    def _new_module(self, stack: str, start: int, config: PretrainedConfig) -> nn.Module:
        module = copy.deepcopy(self._teacher_layers[stack][start])
        share_config(module, config)
        return module.requires_grad_(True)

    @property
    def config(self) -> PretrainedConfig:
        """The teacher's config (the Trainer reads a model's ``config``)."""
        return self.teacher.config

    def train(self, mode: bool = True) -> ModularModel:
        super().train(mode)
        self.teacher.eval()
        return self

    def spans(self, stack: str, granularity: int) -> list[Span]:
        """The spans of ``stack`` that have a module of ``granularity``, bottom to top."""
        per_granularity = self.layers[stack]
        key = f"g{granularity}"
        if key not in per_granularity:
            return []
        starts = sorted(int(name[1:]) for name in per_granularity[key])
        return [Span(stack, start, start + granularity) for start in starts]

    def module_names(self) -> list[str]:
        """Every module's name (``"encoder.g2.s0"``...), encoder first, by granularity and start."""
        return [span.name for stack in STACKS for g in self.granularities for span in self.spans(stack, g)]

    def module(self, name: str) -> nn.Module:
        """The module called ``name`` (e.g. ``"decoder.g3.s3"``).

        Raises:
            ModularError: no such module.
        """
        try:
            stack, granularity, start = name.split(".")
            return self.layers[stack][granularity][start]
        except (ValueError, KeyError):
            raise ModularError(
                f"module {name!r} is missing: this checkpoint has granularities "
                f"{', '.join(map(str, self.granularities))}; retrain with the granularity you need"
            ) from None

    def _check_plan(self, plan: Iterable[Span]) -> list[Span]:
        plan = list(plan)
        bad = [span for span in plan if span.stack not in STACKS]
        if bad:
            raise ModularError(f"span stack {bad[0].stack!r} is neither 'encoder' nor 'decoder'")
        spans = sorted(plan, key=lambda s: (STACKS.index(s.stack), s.start))
        for stack in STACKS:
            end = 0
            for span in (s for s in spans if s.stack == stack):
                if span.start < end:
                    raise ModularError(f"spans overlap in the {stack} at layer {span.start}: replace each layer once")
                if span.end > self.depths[stack]:
                    raise ModularError(f"span {span.name} runs past the {stack}'s {self.depths[stack]} layers")
                self.module(span.name)
                end = span.end
        return spans

    def assemble_layers(self, plan: Iterable[Span],
                        wrap: Callable[[nn.Module, Span], nn.Module] | None = None) -> dict[str, nn.ModuleList]:
        """Layer lists with the spans of ``plan`` replaced by their modules (shared, not copied).

        Returns:
            ``{"encoder": ModuleList, "decoder": ModuleList}``: the teacher's layers in order, each
            replaced span standing as its single module (or ``wrap(module, span)``).

        Raises:
            ModularError: overlapping spans, spans past a stack's depth, or a missing module.
        """
        spans = self._check_plan(plan)
        lists = {}
        for stack in STACKS:
            teacher_layers = self._teacher_layers[stack]
            layers: list[nn.Module] = []
            position = 0
            for span in (s for s in spans if s.stack == stack):
                layers.extend(teacher_layers[position:span.start])
                module = self.module(span.name)
                layers.append(module if wrap is None else wrap(module, span))
                position = span.end
            layers.extend(teacher_layers[position:])
            lists[stack] = nn.ModuleList(layers)
        return lists

    @contextmanager
    def use_plan(self, plan: Iterable[Span], recorder: Recorder | None = None) -> Iterator[None]:
        """Install the layer lists of ``plan`` in the teacher's stacks while inside; restore them after.

        With a ``recorder``, each module is wrapped to also run its teacher span on the same input
        and record the distillation terms (training only).
        """
        def supervised(module: nn.Module, span: Span) -> nn.Module:
            layers = self._teacher_layers[span.stack][span.start:span.end]
            return Supervised(module, list(layers), span, self.family, recorder)

        lists = self.assemble_layers(plan, None if recorder is None else supervised)
        attr = layer_attribute(self.family)
        stacks = {"encoder": self.teacher.get_encoder(), "decoder": self.teacher.get_decoder()}
        try:
            for stack, module in stacks.items():
                setattr(module, attr, lists[stack])
            yield
        finally:
            for stack, module in stacks.items():
                setattr(module, attr, self._teacher_layers[stack])

    def full_plan(self, granularity: int) -> list[Span]:
        """Every span of ``granularity`` in both stacks (the most compressed model of that granularity)."""
        return [span for stack in STACKS for span in self.spans(stack, granularity)]

    def sample_plan(self, rng: random.Random, progress: float, args: ModularArgs) -> list[Span]:
        """One training step's replacement: a granularity per stack (curriculum-weighted), then each of
        its spans replaced with probability ``p(progress)``; at least one span overall.

        Args:
            rng: the trainer's seeded generator.
            progress: fraction of training done, in [0, 1].
            args: rates and curriculum flag.
        """
        progress = min(max(progress, 0.0), 1.0)
        rate = args.replace_rate_start + (args.replace_rate_end - args.replace_rate_start) * progress
        plan: list[Span] = []
        chosen: dict[str, int] = {}
        for stack in STACKS:
            available = [g for g in self.granularities if self.spans(stack, g)]
            if not available:
                continue
            weights = granularity_weights(len(available), progress) if args.curriculum else [1.0] * len(available)
            g = rng.choices(available, weights)[0]
            chosen[stack] = g
            plan.extend(span for span in self.spans(stack, g) if rng.random() < rate)
        if not plan:
            stack = rng.choice(sorted(chosen))
            plan.append(rng.choice(self.spans(stack, chosen[stack])))
        return plan

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                labels=None, **kwargs):
        kwargs.setdefault("use_cache", False)
        return self.teacher(input_ids=input_ids, attention_mask=attention_mask,
                            decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_attention_mask,
                            labels=labels, **kwargs)
