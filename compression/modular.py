"""Modular Transformers: train layer modules once, assemble students of many sizes without retraining.

Zhou, Le Bras & Choi 2023, "Modular Transformers: Compressing Transformers into Modularized Layers
for Flexible Efficient Inference" (Findings of ACL 2023). A *module* is one Transformer layer trained
to do the work of ``g`` consecutive teacher layers (its *granularity*). Modules of several
granularities are trained together against the frozen teacher by multi-grained module replacing
(BERT-of-Theseus, Xu et al. 2020) with knowledge distillation; afterwards any compression ratio the
modules allow is *assembled* deterministically, with no further training.

Choices made here (the paper leaves them open or they are ours), and why:

* **Spans** are aligned and non-overlapping: granularity ``g`` covers teacher layers ``[0, g), [g, 2g),
  ...`` of each stack; a last partial span (``n % g`` layers) is never replaced. Aligned spans make
  every module's job fixed (same input depth, same output depth) and the set of modules small
  (``n // g`` per granularity and stack). Default granularities: 2, 3 and 4 (:class:`ModularArgs`).
* **Module names** are ``"{stack}.g{g}.s{start}"`` (``"encoder.g2.s0"``); they are also the keys of
  the nested ``nn.ModuleDict`` :attr:`ModularModel.layers` and the prefixes in ``modules.safetensors``.
* **Initialisation**: a module is a copy of the *first* teacher layer of its span (Theseus copies the
  predecessor's layer too). For T5 the span starting at layer 0 thus carries that stack's relative
  position bias, as the new first block needs (cf. :func:`compression.layers.shrink`).
* **Training** (:func:`train_modules`): each step samples one granularity per stack and replaces each of
  its spans independently with probability ``p`` (Theseus). Modules of different granularities never
  share a stack within one step, which is also why an assembly uses one granularity per stack (below).
  At least one span is replaced per step, so every step trains something. Curriculum (flag
  ``curriculum``): granularity weights are triangular around a centre that moves linearly from the
  coarsest granularity at the start to the finest at the end (with 2, 3, 4: weights 1:2:3 -> 2:3:2 ->
  3:2:1), coarse-grained first as in the paper; every granularity keeps a non-zero share. ``p`` rises
  linearly from ``replace_rate_start`` (0.5) to ``replace_rate_end`` (1.0), Theseus's linear
  replacement scheduler. The teacher is frozen and kept in eval mode (no dropout, so the distillation
  targets are deterministic); modules train with the teacher's dropout rate.
* **Loss** = ``alpha_ce`` · label cross-entropy of the mixed model + ``alpha_hidden`` · Σ over
  replaced spans of the masked MSE between the module's output and the output of the teacher's span
  *run on the same input* (under ``no_grad``) + ``alpha_attention`` · Σ over replaced spans of the
  attention-map loss (KL by default, MiniLM) between the module's attention probabilities and those of
  the span's *last* teacher layer on that same teacher run (self-attention, and cross-attention in the
  decoder), query positions masked (encoder: attention mask; decoder: labels != -100). Span terms are
  summed, not averaged, so each module's signal does not shrink when more spans are replaced. Hidden
  states are compared after a parameter-free layer norm by default (``normalize_hidden``) because
  T5's residual stream grows large with depth and would otherwise swamp the cross-entropy.
* **Validation**: for each granularity, the model with every span of that granularity replaced in
  both stacks; logged as ``eval_loss_g{g}`` (token-weighted cross-entropy, nats) and their mean as
  ``eval_loss``.
* **Compression ratio** = teacher layers (encoder + decoder) / assembled layers, for both priorities.
  A layer count is exact, independent of the vocabulary (whose embeddings dominate small models'
  parameter counts) and the figure SFT students are described by (12/12 -> 6/6 is 2x), so modular and
  SFT students at one ratio compare directly; parameter counts are recorded alongside. A ratio ``r``
  gives the assembly with the *most* layers ``L`` such that ``(n_enc + n_dec) / L >= r`` (the least
  compression that meets the target); the achieved ratio is recorded.
* **Assembling** uses, per stack, one granularity ``g`` and replaces its ``k`` *highest* spans
  (top-down), for some ``k``. Among the assemblies with the chosen layer count:
  ``priority="size"``: the two stacks compressed as evenly as possible (relative depths closest), then
  the fewest modules (coarse-grained preferred), then the coarser decoder granularity, then the
  shallower decoder (decoder layers hold more parameters: fewer parameters for the ratio).
  ``priority="speed"``: the shallowest decoder first (autoregressive decoding runs the decoder once per
  generated token, so it dominates latency), then the finer decoder granularity, then the finer
  encoder granularity (fine-to-coarse). Ties are broken by the enumeration order, so results are
  deterministic. ``ratio == 1`` gives an exact copy of the teacher.
* **Assembled models** are ordinary T5/BART models of the teacher's class (``save_pretrained`` /
  ``from_pretrained`` with plain transformers), their depth fields set, attention ``layer_idx``
  renumbered for cached generation, and ``config.modular`` recording ratio, priority and the replaced
  spans.

Checkpoint folder (:func:`save_modular` / :func:`load_modular`): ``teacher/`` (``save_pretrained``,
with the tokenizer when given), ``modules.safetensors`` (the module weights) and ``modular.json``
(granularities, spans, training settings and results).
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import random
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForSeq2SeqLM, PretrainedConfig, PreTrainedModel
from transformers.trainer_utils import EvalLoopOutput

from .arch import count_parameters, get_layer_stacks, model_family, set_layer_stack
from .config import ATTENTION_LOSSES, TrainArgs
from .data import LABEL_PAD
from .distill import TermsTrainerMixin
from .errors import ModularError
from .losses import attention_map_loss, masked_mse, modular_loss
from .train import _Trainer, run_trainer

STACKS = ("encoder", "decoder")
PRIORITIES = ("size", "speed")
#: Files of a modular checkpoint folder.
TEACHER_DIR = "teacher"
MODULES_FILE = "modules.safetensors"
CONFIG_FILE = "modular.json"
FORMAT_VERSION = 1
DEFAULT_GRANULARITIES = (2, 3, 4)


def _parse_granularities(value: int | str | Iterable[int]) -> tuple[int, ...]:
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
        self.granularities = _parse_granularities(self.granularities)
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


def _share_config(layer: nn.Module, config: PretrainedConfig) -> None:
    """Point a copied layer's attention modules at ``config`` (a deep copy has its own), so that
    ``set_attn_implementation`` on the model reaches them too."""
    for module in layer.modules():
        if isinstance(getattr(module, "config", None), PretrainedConfig):
            module.config = config


def _stack_configs(model: PreTrainedModel) -> dict[str, PretrainedConfig]:
    return {"encoder": model.get_encoder().config, "decoder": model.get_decoder().config}


def _reset_output_capturing(model: nn.Module) -> None:
    """Drop transformers' ``output_hidden_states``/``output_attentions`` recording hooks so they are
    installed afresh on first use. transformers installs them once per model, on the layers present
    then; a module copied in later would otherwise be missing from ``hidden_states``/``attentions``."""
    for module in model.modules():
        for key, hook in list(module._forward_hooks.items()):
            if getattr(hook, "__name__", "") == "output_capturing_hook":
                del module._forward_hooks[key]
        module.__dict__.pop("_output_capturing_hooks_installed", None)


def _attention_submodules(layer: nn.Module, family: str) -> dict[str, nn.Module]:
    """``{"self": ..., "cross": ...}``: the attention modules of a layer (cross only in decoder layers).
    Both T5Attention and BartAttention return the attention probabilities last in their output tuple."""
    if family == "t5":
        found = {"self": layer.layer[0].SelfAttention}
        if len(layer.layer) > 2 and hasattr(layer.layer[1], "EncDecAttention"):
            found["cross"] = layer.layer[1].EncDecAttention
        return found
    found = {"self": layer.self_attn}
    if getattr(layer, "encoder_attn", None) is not None:
        found["cross"] = layer.encoder_attn
    return found


@contextmanager
def _capture_attention(layer: nn.Module | None, family: str) -> Iterator[dict[str, torch.Tensor]]:
    """Record the attention probabilities ``[batch, heads, q_len, k_len]`` of ``layer`` while inside."""
    store: dict[str, torch.Tensor] = {}
    handles = []
    if layer is not None:
        for key, module in _attention_submodules(layer, family).items():
            def hook(_module, _args, output, key=key):
                store[key] = output[-1]
            handles.append(module.register_forward_hook(hook))
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def _run_span(layers: Sequence[nn.Module], family: str, args: tuple, kwargs: dict) -> torch.Tensor:
    """Run teacher ``layers`` in sequence on the inputs a stack passed to the first of them, passing
    on what the stack would (T5: position biases). Returns the last layer's hidden states."""
    if family != "t5":
        hidden, rest = args[0], args[1:]
        for layer in layers:
            hidden = layer(hidden, *rest, **kwargs)
        return hidden
    bound = inspect.signature(layers[0].forward).bind(*args, **kwargs)
    for layer in layers:
        output = layer(*bound.args, **bound.kwargs)
        bound.arguments["hidden_states"] = output[0]
        bound.arguments["position_bias"] = output[1]
        if bound.arguments.get("encoder_hidden_states") is not None:
            bound.arguments["encoder_decoder_position_bias"] = output[2]
    return bound.arguments["hidden_states"]


class _Recorder:
    """Collects the distillation terms of the replaced spans during one forward pass."""

    def __init__(self, masks: dict[str, torch.Tensor | None], args: ModularArgs) -> None:
        self.masks = masks
        self.args = args
        self.hidden_terms: list[torch.Tensor] = []
        self.attention_terms: list[torch.Tensor] = []

    @property
    def wants_attention(self) -> bool:
        return self.args.alpha_attention > 0

    def add(self, stack: str, student: torch.Tensor, teacher: torch.Tensor, student_maps: dict,
            teacher_maps: dict) -> None:
        mask = self.masks.get(stack)
        if self.args.alpha_hidden > 0:
            self.hidden_terms.append(masked_mse(student, teacher, mask, self.args.normalize_hidden))
        if self.wants_attention:
            for key, student_map in student_maps.items():
                if student_map is None or teacher_maps.get(key) is None:
                    raise ModularError("attention probabilities are missing: attention distillation needs "
                                       "attn_implementation='eager' (set alpha_attention to 0 to skip it)")
                self.attention_terms.append(
                    attention_map_loss(student_map, teacher_maps[key], mask, self.args.attention_loss))


class _Supervised(nn.Module):
    """A module standing in for a teacher span during training; also runs the span (no grad) on the
    same input and hands module output and span output to the recorder."""

    def __init__(self, module: nn.Module, span_layers: Sequence[nn.Module], span: Span, family: str,
                 recorder: _Recorder) -> None:
        super().__init__()
        self.module = module
        self.span_layers = tuple(span_layers)  # plain tuple: not registered, the teacher owns them
        self.span = span
        self.family = family
        self.recorder = recorder

    def forward(self, *args, **kwargs):
        attention = self.recorder.wants_attention
        with _capture_attention(self.module if attention else None, self.family) as student_maps:
            output = self.module(*args, **kwargs)
        with torch.no_grad(), _capture_attention(self.span_layers[-1] if attention else None,
                                                 self.family) as teacher_maps:
            target = _run_span(self.span_layers, self.family, args, kwargs)
        hidden = output[0] if isinstance(output, tuple) else output
        self.recorder.add(self.span.stack, hidden, target, student_maps, teacher_maps)
        return output


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
        self.granularities = _parse_granularities(granularities)
        too_deep = [g for g in self.granularities if g > max(self.depths.values())]
        if too_deep:
            raise ModularError(
                f"granularities {too_deep} exceed both stacks ({self.depths['encoder']} encoder, "
                f"{self.depths['decoder']} decoder layers): use granularities of at most "
                f"{max(self.depths.values())}"
            )
        configs = _stack_configs(teacher)
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
        _share_config(module, config)
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
    def use_plan(self, plan: Iterable[Span], recorder: _Recorder | None = None) -> Iterator[None]:
        """Install the layer lists of ``plan`` in the teacher's stacks while inside; restore them after.

        With a ``recorder``, each module is wrapped to also run its teacher span on the same input
        and record the distillation terms (training only).
        """
        def supervised(module: nn.Module, span: Span) -> nn.Module:
            layers = self._teacher_layers[span.stack][span.start:span.end]
            return _Supervised(module, list(layers), span, self.family, recorder)

        lists = self.assemble_layers(plan, None if recorder is None else supervised)
        attr = "block" if self.family == "t5" else "layers"
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


def granularity_weights(count: int, progress: float) -> list[float]:
    """Curriculum weights of ``count`` granularities (finest first) at ``progress`` in [0, 1].

    Triangular around a centre moving linearly from the coarsest (progress 0) to the finest
    (progress 1): ``w_i = count - |i - c|`` with ``c = (1 - progress) * (count - 1)``; every weight >= 1.
    """
    centre = (1.0 - progress) * (count - 1)
    return [count - abs(i - centre) for i in range(count)]


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

class _ModularTrainer(TermsTrainerMixin, _Trainer):
    """Seq2SeqTrainer over a :class:`ModularModel`: multi-grained module replacing plus distillation.

    ``compute_loss`` samples the step's plan (seeded ``random.Random``, progress = step / max steps),
    runs the mixed model with the supervised modules installed and returns the weighted per-batch
    mean; ``evaluation_loop`` scores each granularity's full replacement.
    """

    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

    def __init__(self, *args, modular_args: ModularArgs, **kwargs):
        super().__init__(*args, **kwargs)
        self.modular_args = modular_args
        self.rng = random.Random(self.args.seed)
        weights = {"ce": modular_args.alpha_ce, "hidden": modular_args.alpha_hidden,
                   "attention": modular_args.alpha_attention}
        self.term_names = tuple(name for name, weight in weights.items() if weight > 0)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        modular: ModularModel = self.accelerator.unwrap_model(model)
        args = self.modular_args
        progress = self.state.global_step / max(self.state.max_steps, 1)
        plan = modular.sample_plan(self.rng, progress, args)
        labels = inputs["labels"]
        recorder = _Recorder({"encoder": inputs.get("attention_mask"), "decoder": labels != LABEL_PAD}, args)
        supervise = args.alpha_hidden > 0 or args.alpha_attention > 0
        with modular.use_plan(plan, recorder if supervise else None):
            outputs = model(**inputs)
        terms = modular_loss(outputs.logits, labels, recorder.hidden_terms, recorder.attention_terms, args)
        loss = terms.pop("loss")
        if model.training:
            self._record_terms(terms)
        return (loss, outputs) if return_outputs else loss

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        modular: ModularModel = self.accelerator.unwrap_model(self.model)
        metrics: dict[str, float] = {}
        output = None
        for g in modular.granularities:
            with modular.use_plan(modular.full_plan(g)):
                output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                                 metric_key_prefix)
            metrics[f"{metric_key_prefix}_loss_g{g}"] = output.metrics[f"{metric_key_prefix}_loss"]
        metrics[f"{metric_key_prefix}_loss"] = sum(metrics.values()) / len(metrics)
        return EvalLoopOutput(predictions=None, label_ids=None, metrics=metrics, num_samples=output.num_samples)


def train_modules(teacher: PreTrainedModel, tokenizer: Any, train_dataset, eval_dataset, train_args: TrainArgs,
                  modular_args: ModularArgs, output_dir: str | Path,
                  on_progress: Callable[[dict], None] | None = None, cancel: threading.Event | None = None,
                  progress_bar: bool = True) -> ModularModel:
    """Train Modular Transformers modules against a frozen ``teacher`` and save the checkpoint.

    Multi-grained module replacing with distillation (see the module docstring), run by a
    ``Seq2SeqTrainer`` subclass with :func:`compression.train.finetune`'s machinery: ``train_args``
    gives optimizer, schedule, steps, batch size, device, bf16 and seed (``freeze_*`` do not apply:
    only modules train). Progress records (``output_dir/loss_log.jsonl``, ``on_progress``) carry
    ``loss`` (weighted total), ``ce``, ``hidden``, ``attention`` and at evaluations ``eval_loss``
    (mean over granularities) and ``eval_loss_g{g}``. The checkpoint (:func:`save_modular`, with the
    tokenizer) is written to ``output_dir``; when ``cancel`` is set, training stops after the current
    step and what was trained is saved to ``output_dir/last-checkpoint`` as well. The teacher is shared
    with the returned model, not copied: it is frozen (``requires_grad=False``) for the run and, with
    ``alpha_attention > 0``, runs eager attention; both are given back afterwards.

    Returns:
        the trained :class:`ModularModel` (``info["training"]`` holds the run's summary).

    Raises:
        ModularError: bad granularities for this teacher.
        CompressionError: empty training set, unavailable device, settings the Trainer rejects.
        OutOfMemoryError: the device ran out of memory.
    """
    modular = ModularModel(teacher, modular_args.granularities)
    implementation = teacher.config._attn_implementation
    flags = {name: param.requires_grad for name, param in teacher.named_parameters()}
    teacher.requires_grad_(False)
    if modular_args.alpha_attention > 0:
        teacher.set_attn_implementation("eager")
    weights = {"ce": modular_args.alpha_ce, "hidden": modular_args.alpha_hidden,
               "attention": modular_args.alpha_attention}
    extra = [name for name, weight in weights.items() if weight > 0]
    extra += [f"eval_loss_g{g}" for g in modular.granularities]

    def save_cancelled(_trainer, path: Path) -> None:
        save_modular(modular, path, tokenizer)

    try:
        result = run_trainer(modular, tokenizer, train_dataset, eval_dataset, train_args, output_dir,
                             trainer_class=_ModularTrainer, trainer_kwargs={"modular_args": modular_args},
                             collator_model=teacher, attention_models=[teacher], extra_keys=extra,
                             on_progress=on_progress, cancel=cancel, progress_bar=progress_bar,
                             save_cancelled=save_cancelled)
    finally:
        for name, param in teacher.named_parameters():
            param.requires_grad_(flags[name])
        if modular_args.alpha_attention > 0:
            teacher.set_attn_implementation(implementation)
    summary = asdict(result)
    summary.pop("log_history")
    modular.info = {"training": summary, "modular_args": asdict(modular_args), "train_args": asdict(train_args)}
    save_modular(modular, output_dir, tokenizer)
    return modular


# --------------------------------------------------------------------------------------------
# Saving and loading
# --------------------------------------------------------------------------------------------

def save_modular(modular: ModularModel, directory: str | Path, tokenizer: Any = None) -> Path:
    """Write a modular checkpoint folder: ``teacher/`` (``save_pretrained``, plus the tokenizer when
    given), ``modules.safetensors`` (module weights, keys ``"encoder.g2.s0.<param>"``) and
    ``modular.json`` (format version, family, teacher depths, granularities, the modules' spans,
    parameter counts, and ``modular.info``: training settings and results).

    Returns:
        the folder.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    modular.teacher.save_pretrained(directory / TEACHER_DIR)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory / TEACHER_DIR)
    tensors = {key: value.detach().cpu().contiguous() for key, value in modular.layers.state_dict().items()}
    save_file(tensors, str(directory / MODULES_FILE), metadata={"format": "pt"})
    modules = [{"name": span.name, "stack": span.stack, "granularity": span.granularity, "start": span.start,
                "end": span.end}
               for stack in STACKS for g in modular.granularities for span in modular.spans(stack, g)]
    meta = {
        "format_version": FORMAT_VERSION,
        "method": "modular-transformers",
        "family": modular.family,
        "model_type": modular.teacher.config.model_type,
        "teacher_encoder_layers": modular.depths["encoder"],
        "teacher_decoder_layers": modular.depths["decoder"],
        "granularities": list(modular.granularities),
        "modules": modules,
        "teacher_params": count_parameters(modular.teacher),
        "module_params": count_parameters(modular.layers),
        **modular.info,
    }
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return directory


def load_modular(directory: str | Path) -> ModularModel:
    """Load a folder written by :func:`save_modular` (or :func:`train_modules`).

    The teacher loads with plain ``AutoModelForSeq2SeqLM.from_pretrained`` (no remote code); its
    tokenizer, when saved, is in ``directory/teacher``.

    Raises:
        ModularError: not a modular checkpoint (no ``modular.json``), teacher or modules file missing,
            teacher depths that do not match ``modular.json``, or modules missing from (or unknown to)
            ``modules.safetensors``.
    """
    directory = Path(directory).expanduser()
    meta_path = directory / CONFIG_FILE
    if not meta_path.is_file():
        raise ModularError(
            f"{directory} is not a modular checkpoint (no {CONFIG_FILE}): point to a folder written by "
            "modular training (`python -m compression modular-train`)"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ModularError(f"{meta_path} is not valid JSON ({error}); the checkpoint is damaged: train again") from None
    teacher_dir = directory / TEACHER_DIR
    if not (teacher_dir / "config.json").is_file():
        raise ModularError(
            f"{directory} has no teacher (missing {TEACHER_DIR}/config.json): the checkpoint is incomplete; "
            "train the modules again"
        )
    if not (directory / MODULES_FILE).is_file():
        raise ModularError(f"{directory} has no {MODULES_FILE}: the checkpoint is incomplete; train the modules again")
    try:
        teacher = AutoModelForSeq2SeqLM.from_pretrained(str(teacher_dir), trust_remote_code=False).eval()
    except (OSError, ValueError) as error:
        raise ModularError(f"could not load the teacher in {teacher_dir}: {error}") from None
    modular = ModularModel(teacher, meta.get("granularities", ()))
    for stack in STACKS:
        expected = meta.get(f"teacher_{stack}_layers")
        if expected is not None and expected != modular.depths[stack]:
            raise ModularError(
                f"{CONFIG_FILE} says the teacher has {expected} {stack} layers but {teacher_dir} has "
                f"{modular.depths[stack]}: the folder mixes two checkpoints"
            )
    state = load_file(str(directory / MODULES_FILE))
    wanted = modular.layers.state_dict()
    missing = sorted({".".join(key.split(".")[:3]) for key in wanted.keys() - state.keys()})
    unknown = sorted({".".join(key.split(".")[:3]) for key in state.keys() - wanted.keys()})
    if missing:
        raise ModularError(
            f"{directory / MODULES_FILE} lacks modules {', '.join(missing)} that {CONFIG_FILE} lists: the "
            "checkpoint is incomplete; train the modules again"
        )
    if unknown:
        raise ModularError(
            f"{directory / MODULES_FILE} holds modules {', '.join(unknown)} that {CONFIG_FILE} does not list: "
            "the folder mixes two checkpoints"
        )
    modular.layers.load_state_dict(state)
    known = {"format_version", "method", "family", "model_type", "teacher_encoder_layers", "teacher_decoder_layers",
             "granularities", "modules", "teacher_params", "module_params"}
    modular.info = {key: value for key, value in meta.items() if key not in known}
    return modular


# --------------------------------------------------------------------------------------------
# Assembling
# --------------------------------------------------------------------------------------------

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
    wanted = _parse_granularities(granularities)
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


def plan_for_ratio(modular: ModularModel, ratio: float, priority: str = "size",
                   granularities: Iterable[int] | None = None) -> list[Span]:
    """The spans an assembly at ``ratio`` replaces (deterministic; see the module docstring).

    The assembly has the most layers ``L`` with ``(n_enc + n_dec) / L >= ratio``; among those,
    ``"size"`` balances the stacks with the coarsest modules, ``"speed"`` compresses the decoder
    first with the finest modules.

    Raises:
        ModularError: ratio below 1, not a number, or above :func:`max_ratio` (the message gives the
            allowed range); unknown priority or granularity.
    """
    _check_priority(priority)
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
    else:
        def key(pair):
            e, d = pair
            return (d.layers, d.granularity or 0, e.granularity or 0)
    encoder, decoder = min(pairs, key=key)
    return list(encoder.spans + decoder.spans)


def assemble(modular: ModularModel, ratio: float, priority: str = "size",
             granularities: Iterable[int] | None = None) -> PreTrainedModel:
    """An ordinary model of the teacher's class at compression ``ratio`` (teacher layers / assembled layers).

    The teacher is deep-copied and, per :func:`plan_for_ratio`, spans of its layers are replaced by
    copies of their modules; depth fields are updated (``num_layers``/``num_decoder_layers`` or
    ``encoder_layers``/``decoder_layers``), attention ``layer_idx`` renumbered, every weight trainable,
    eval mode, and ``config.modular`` records ``ratio`` (achieved), ``requested_ratio``, ``priority``,
    ``granularities``, ``replaced`` (``[{"stack", "start", "end", "module"}, ...]``), the depths and the
    parameter counts. It saves and loads with plain transformers. ``ratio == 1`` returns an exact copy
    of the teacher.

    Args:
        modular: trained modules (:func:`train_modules` or :func:`load_modular`).
        ratio: in ``[1, max_ratio(modular)]``.
        priority: ``"size"`` or ``"speed"``.
        granularities: restrict to these trained granularities (default: all).

    Raises:
        ModularError: ratio out of range (the message gives the allowed range), unknown priority, or
            a granularity without modules.
    """
    plan = plan_for_ratio(modular, ratio, priority, granularities)
    used = sorted({span.granularity for span in plan})
    # One deepcopy of teacher and lists together: the lists' teacher layers become the copy's layers.
    model, lists = copy.deepcopy((modular.teacher, modular.assemble_layers(plan)))
    model.requires_grad_(True)
    configs = _stack_configs(model)
    depths = {}
    for stack in STACKS:
        for layer in lists[stack]:
            _share_config(layer, configs[stack])
        depths[stack] = len(set_layer_stack(model, stack, lists[stack]))
    _reset_output_capturing(model)
    total = modular.depths["encoder"] + modular.depths["decoder"]
    model.config.modular = {
        "method": "modular-transformers",
        "teacher": getattr(modular.teacher.config, "_name_or_path", "") or None,
        "ratio": total / (depths["encoder"] + depths["decoder"]),
        "requested_ratio": float(ratio),
        "priority": priority,
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
