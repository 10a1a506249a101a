"""Supervision of modules during training: each module also runs its teacher span on the same
input, and the hidden-state and attention-map terms are recorded (see ``docs/modular.md``)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from ..arch import t5_self_attention
from ..errors import ModularError
from ..losses import attention_map_loss, masked_mse
from .spans import ModularArgs, Span


def share_config(layer: nn.Module, config: PretrainedConfig) -> None:
    """Point a copied layer's attention modules at ``config`` (a deep copy has its own), so that
    ``set_attn_implementation`` on the model reaches them too."""
    for module in layer.modules():
        if isinstance(getattr(module, "config", None), PretrainedConfig):
            module.config = config


def stack_configs(model: PreTrainedModel) -> dict[str, PretrainedConfig]:
    """``{"encoder": config, "decoder": config}``: the stacks' own configs (T5 copies the model's)."""
    return {"encoder": model.get_encoder().config, "decoder": model.get_decoder().config}


def reset_output_capturing(model: nn.Module) -> None:
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
        found = {"self": t5_self_attention(layer)}
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
            # T5Block: (hidden, self bias, cross bias); LongT5Block puts each attention's
            # probabilities after its bias when asked for them: (hidden, self bias, self maps, cross bias, ...)
            cross = 3 if bound.arguments.get("output_attentions") and len(output) > 3 else 2
            bound.arguments["encoder_decoder_position_bias"] = output[cross]
    return bound.arguments["hidden_states"]


def attention_output_flags(model: nn.Module) -> dict:
    """The forward flags that make ``model``'s attention modules return their probabilities:
    ``{"output_attentions": True}`` for models whose layers take the flag (LongT5), ``{}`` for
    those whose attention modules always return them (T5, BART in transformers 5)."""
    wanted = any(_takes_output_attentions(type(module)) for module in model.modules())
    return {"output_attentions": True} if wanted else {}


@functools.cache
def _takes_output_attentions(cls: type) -> bool:
    forward = getattr(cls, "forward", None)
    return callable(forward) and "output_attentions" in inspect.signature(forward).parameters


class Recorder:
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


class Supervised(nn.Module):
    """A module standing in for a teacher span during training; also runs the span (no grad) on the
    same input and hands module output and span output to the recorder."""

    def __init__(self, module: nn.Module, span_layers: Sequence[nn.Module], span: Span, family: str,
                 recorder: Recorder) -> None:
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
