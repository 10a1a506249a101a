"""Architecture facts: what differs between the T5 and BART families, in one leaf module.

T5 family (T5, T5 v1.1, flan-T5, T5-efficient, mT5, UMT5, LongT5): layers in ``encoder.block`` /
``decoder.block``, depth in ``num_layers`` / ``num_decoder_layers``, relative position bias only in
block 0 of each stack, feed-forward output ``wo`` kept in float32 by transformers. BART family
(BART, mBART, Pegasus, Marian...): ``model.encoder.layers`` / ``model.decoder.layers``, depth in
``encoder_layers`` / ``decoder_layers``.

Every module that needs these facts (loading, shrinking, quantizing, distillation, Modular
Transformers) imports them from here; this module imports nothing else of the package but
:mod:`compression.errors`, so it breaks the load <-> layers and load <-> quantize import cycles.
"""

from __future__ import annotations

import copy
import functools
import sys
from collections.abc import Sequence

import torch
from torch import nn
from transformers import AutoModelForSeq2SeqLM, PretrainedConfig, PreTrainedModel

from .errors import NotSeq2SeqError

T5_FAMILY = ("t5", "mt5", "umt5", "longt5")
BART_FAMILY = ("bart", "mbart", "pegasus", "pegasus_x", "marian", "plbart", "blenderbot", "blenderbot-small")
STACKS = ("encoder", "decoder")
#: Config attribute of a checkpoint whose T5 ``wo`` layers are quantized by bitsandbytes
#: (:func:`compression.quantize.quantize` with ``quantize_wo``; read by :func:`seq2seq_class`).
QUANTIZED_WO = "quantized_wo"


def model_family(model_or_config: PreTrainedModel | PretrainedConfig) -> str:
    """Return ``"t5"`` or ``"bart"``: which layer layout the model has (see the module docstring).

    Raises:
        NotSeq2SeqError: the model is not an encoder-decoder, or of a family this tool cannot shrink.
    """
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if not getattr(config, "is_encoder_decoder", False):
        raise NotSeq2SeqError(
            f"{model_type or 'this model'} is not an encoder-decoder (seq2seq) model: only T5-family "
            "and BART-family summarizers can be shrunk; pick e.g. t5-small or facebook/bart-base"
        )
    if model_type in T5_FAMILY:
        return "t5"
    if model_type in BART_FAMILY:
        return "bart"
    raise NotSeq2SeqError(
        f"model type {model_type!r} is an encoder-decoder this tool does not support yet: "
        f"supported are {', '.join(T5_FAMILY + BART_FAMILY)}"
    )


def layer_attribute(family: str) -> str:
    """Name of the layer list in a stack module: ``"block"`` (T5) or ``"layers"`` (BART)."""
    return "block" if family == "t5" else "layers"


def stack_modules(model: PreTrainedModel) -> tuple[nn.Module, nn.Module]:
    """The encoder and decoder stack modules (``model.get_encoder()``, ``model.get_decoder()``).

    Raises:
        NotSeq2SeqError: not a T5- or BART-family encoder-decoder.
    """
    model_family(model)
    return model.get_encoder(), model.get_decoder()


def get_layer_stacks(model: PreTrainedModel) -> tuple[nn.ModuleList, nn.ModuleList]:
    """The encoder and decoder layer lists: ``encoder.block``/``decoder.block`` for T5,
    ``model.encoder.layers``/``model.decoder.layers`` for BART.

    Raises:
        NotSeq2SeqError: not a T5- or BART-family encoder-decoder.
    """
    encoder, decoder = stack_modules(model)
    attr = layer_attribute(model_family(model))
    return getattr(encoder, attr), getattr(decoder, attr)


def move_relative_attention_bias(source_block: nn.Module, target_block: nn.Module) -> None:
    """T5 keeps the relative position bias only in block 0 of each stack; copy it (and the
    ``has_relative_attention_bias`` flag) from ``source_block`` into ``target_block``."""
    source_modules = dict(source_block.named_modules())
    for name, module in target_block.named_modules():
        source = source_modules.get(name)
        if source is None or not getattr(source, "has_relative_attention_bias", False):
            continue
        for attr in ("relative_attention_bias", "global_relative_attention_bias"):
            if hasattr(source, attr):
                setattr(module, attr, copy.deepcopy(getattr(source, attr)))
        module.has_relative_attention_bias = True


def renumber_layer_indices(layers: nn.ModuleList) -> None:
    """Cached generation indexes the KV cache by each attention module's ``layer_idx``: number them 0..n-1."""
    for index, layer in enumerate(layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = index


def set_t5_decoder_depth(config) -> None:
    """Make transformers size the generation KV cache by the decoder's depth, not the encoder's.

    transformers 5 builds the decoder cache from ``config.get_text_config(decoder=True)``, which for
    T5's flat config maps ``num_hidden_layers`` to the *encoder* depth ``num_layers``: a T5 whose
    decoder is deeper than its encoder (a 2/3 student, t5-efficient ``dl`` variants) fails in cached
    generation with an IndexError. A ``decoder_layers`` entry is what that lookup reads for the
    decoder side, so it is set to ``num_decoder_layers``; it is stored in ``config.json`` and the fix
    travels with the checkpoint to plain transformers. No effect on other families.
    """
    if getattr(config, "model_type", None) in T5_FAMILY:
        config.decoder_layers = config.num_decoder_layers


def set_layer_stack(model: PreTrainedModel, stack: str, layers: Sequence[nn.Module]) -> nn.ModuleList:
    """Replace the ``stack`` (``"encoder"`` or ``"decoder"``) layers of ``model`` in place.

    The one place a student's depth changes (used by :func:`compression.layers.shrink` and
    :func:`compression.modular.assemble`): the layers become the stack's ``ModuleList``, attention
    ``layer_idx`` is renumbered, and the depth fields of the stack's and the model's configs are
    updated (``num_layers``/``num_decoder_layers`` plus :func:`set_t5_decoder_depth` for T5,
    ``encoder_layers``/``decoder_layers`` for BART). T5's relative position bias is the caller's
    business (:func:`move_relative_attention_bias`).

    Returns:
        the new ``ModuleList``.

    Raises:
        NotSeq2SeqError: not a T5- or BART-family encoder-decoder.
        ValueError: ``stack`` is neither ``"encoder"`` nor ``"decoder"``.
    """
    if stack not in STACKS:
        raise ValueError(f"stack must be 'encoder' or 'decoder', not {stack!r}")
    family = model_family(model)
    module = dict(zip(STACKS, stack_modules(model)))[stack]
    new = layers if isinstance(layers, nn.ModuleList) else nn.ModuleList(layers)
    renumber_layer_indices(new)
    setattr(module, layer_attribute(family), new)
    depth = len(new)
    if family == "t5":
        module.config.num_layers = depth
        if stack == "decoder":
            module.config.num_decoder_layers = depth
            model.config.num_decoder_layers = depth
        else:
            model.config.num_layers = depth
        set_t5_decoder_depth(model.config)
    else:
        setattr(model.config, f"{stack}_layers", depth)
    return new


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameters (tied embeddings counted once).

    Uses ``PreTrainedModel.num_parameters`` where available, which walks ``named_parameters()``
    (each shared tensor once) and counts a bitsandbytes 4-bit weight as its unpacked size; any
    other module sums its unique parameters.
    """
    if hasattr(model, "num_parameters"):
        return int(model.num_parameters())
    return int(sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()))


@functools.cache
def _without_fp32_modules(cls: type) -> type:
    def post_init(self) -> None:
        cls.post_init(self)
        self._keep_in_fp32_modules = set()

    @classmethod
    def from_pretrained(subclass, *args, **kwargs):
        model = cls.from_pretrained.__func__(subclass, *args, **kwargs)
        for name, module in model.named_modules():
            if name.endswith(".wo") and hasattr(module, "support_avx512bf16_for_cpu"):
                # bitsandbytes repacks 4-bit weights for its AVX512-BF16 CPU kernel at the first
                # forward, turning the storage into uint8; T5's feed-forward casts its input to
                # wo.weight.dtype, so every later forward would feed integers. Keep the storage.
                module.support_avx512bf16_for_cpu = False
        return model

    return type(cls.__name__, (cls,), {"post_init": post_init, "from_pretrained": from_pretrained,
                                       "__module__": cls.__module__, "__doc__": cls.__doc__})


#: Where a T5-family layer keeps its self-attention: T5, mT5, UMT5 and LongT5's decoder
#: (``SelfAttention``); LongT5's encoder with local or transient-global attention.
T5_SELF_ATTENTION_NAMES = ("SelfAttention", "LocalSelfAttention", "TransientGlobalSelfAttention")


def t5_self_attention(layer: nn.Module) -> nn.Module:
    """The self-attention module of a T5-family layer (``layer.layer[0]``'s, by the names of
    :data:`T5_SELF_ATTENTION_NAMES`)."""
    first = layer.layer[0]
    return next(getattr(first, name) for name in T5_SELF_ATTENTION_NAMES if hasattr(first, name))


def guard_empty_inputs(model: nn.Module) -> int:
    """Make every bitsandbytes 4-bit layer of ``model`` return an empty output for an empty input,
    as a float ``nn.Linear`` does; returns how many layers it guarded.

    Why: bitsandbytes' 4-bit CPU matmul (0.50) divides by the input's row count, so an input with no
    rows stops the whole process with SIGFPE instead of raising. LongT5's transient-global attention
    feeds its layers such an input for a source shorter than one global block (16 tokens): a 4-bit
    LongT5 student given a short article (or the quantizer's one-token check) killed the CLI or the
    dashboard's server. Shapes: input ``[..., 0, in_features]`` (any leading dims, no elements) ->
    output ``[..., 0, out_features]`` in the input's dtype; every other input goes to the layer as
    before. Models without bitsandbytes layers are left as they are (returns 0).
    """
    bnb = sys.modules.get("bitsandbytes")
    if bnb is None:  # never imported: no bitsandbytes layer can exist
        return 0
    guarded = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and not getattr(module.forward, "guards_empty_inputs", False):
            module.forward = _empty_safe(module.forward, module.out_features)
            guarded += 1
    return guarded


def _empty_safe(forward, out_features: int):
    @functools.wraps(forward)
    def guarded(x: torch.Tensor, *args, **kwargs):
        if x.numel() == 0:
            return x.new_zeros(*x.shape[:-1], out_features)
        return forward(x, *args, **kwargs)

    guarded.guards_empty_inputs = True
    return guarded


def seq2seq_class(config: PretrainedConfig, *, quantize_wo: bool | None = None) -> type:
    """The transformers class ``AutoModelForSeq2SeqLM`` builds for ``config``, or, when its
    ``wo`` layers are (to be) quantized, a subclass that lets bitsandbytes quantize them.

    T5-family classes list ``wo`` in ``_keep_in_fp32_modules``, which transformers' bitsandbytes
    integration always skips; the subclass (same name, so ``save_pretrained`` records the plain
    architecture) empties that list after ``post_init``, and its ``from_pretrained`` keeps
    bitsandbytes from repacking a 4-bit ``wo`` into ``uint8`` for the CPU kernel (T5 casts ``wo``'s
    input to its storage dtype). Nothing else changes and no checkpoint code runs.
    ``quantize_wo`` defaults to the checkpoint's own mark, ``config.quantized_wo`` (written by
    :func:`compression.quantize.quantize`).

    Raises:
        NotSeq2SeqError: ``config`` is not an encoder-decoder architecture transformers knows.
    """
    try:
        cls = AutoModelForSeq2SeqLM._model_mapping[type(config)]
    except KeyError:
        raise NotSeq2SeqError(f"{config.model_type} is not an encoder-decoder architecture: use a T5 or "
                              "BART checkpoint") from None
    if quantize_wo is None:
        quantize_wo = bool(getattr(config, QUANTIZED_WO, False))
    if quantize_wo and "wo" in (cls._keep_in_fp32_modules or ()):
        return _without_fp32_modules(cls)
    return cls
