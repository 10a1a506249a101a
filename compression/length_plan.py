"""Which stack to cut for speed at a given source length: the length-aware speed plan.

Greedy generation of one document runs the encoder once over the ``L`` source tokens, then the decoder
once per new token. Removing one encoder layer saves that layer's pass over the source; removing one
decoder layer saves its work at every decoding step. With short inputs the decoder dominates, which is
why Shrink and Fine-Tune keeps the encoder deep and cuts the decoder (Shleifer & Rush 2020, section 3;
Kasai et al. 2021, "Deep Encoder, Shallow Decoder"). An encoder layer's work grows with ``L``
(linearly for LongT5's local / transient-global attention, Guo et al. 2022 section 2.1; with ``L**2``
for full attention), while a decoder layer's grows only through its cross-attention, so past some
length the encoder layer costs more and cutting the encoder buys more speed per layer removed.

**The cost is modelled, not timed** (cheap, deterministic, the same on every machine), from the model's
config: seconds = :data:`SECONDS_PER_MAC` x multiply-accumulates + :data:`LAYER_CALL_S` per layer call
(per encoder layer once per document, per decoder layer once per new token: on a CPU a small layer's
dozens of eager PyTorch operations cost milliseconds whatever their size). Multiply-accumulates per
layer, ``d`` = d_model, ``i`` = heads x head size, ``f`` = feed-forward width (x1.5 when gated):

* encoder, per source token: ``4 d i`` (q, k, v, o) + ``2 d f`` + ``2 i s``, with ``s`` the keys a
  query attends to: ``L`` (full attention), ``3 (r + 1)`` (LongT5 local, radius ``r``: three blocks of
  ``r + 1``), plus ``ceil(L / g)`` global tokens (transient-global, block ``g``);
* decoder, per new token: ``4 d i + 2 i t`` (self-attention over ``t`` = half the new tokens on
  average) + ``2 d i + 2 i L`` (cross-attention) + ``2 d f``; once per document: ``2 d i L``
  (cross-attention keys and values of the source);
* per new token outside the layers: ``d x vocabulary`` (the output layer) + one :data:`LAYER_CALL_S`.

The two constants come from fp32 on the shared 2-core AMD EPYC: the encoder's seconds per
multiply-accumulate and the decoder's seconds per layer and step in a first run of the cut comparison
(``python -m benchmarks.scaling --cuts``: LongT5-tiny 4/4 vs 2/4 vs 4/2, at 512 and 2,048 tokens) and a
profile of one decoding step; the README compares the model with the measured comparison up to 16k
tokens (``benchmarks/results/scaling-cuts.json``). Only their ratio decides the stack; the speedups the
plan quotes are the model's, not a measurement of the loaded model, and another machine (a GPU, where
the per-call cost is launch latency) moves the length where the advice turns. A measured cost can be
passed instead (:class:`GenerationCost`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

from .errors import CompressionError

#: Seconds per multiply-accumulate of fp32 work (about 20 G MAC/s: two cores of the AMD EPYC).
SECONDS_PER_MAC = 5e-11
#: Seconds of fixed cost per layer call (eager PyTorch operations of one layer for one token or one
#: pass; the transformers 5 LongT5/T5 layer on the 2-core EPYC).
LAYER_CALL_S = 3e-3
#: New tokens per document the plan assumes (the benchmark's forced length).
DEFAULT_NEW_TOKENS = 64
#: Source length assumed when none is given (the project's default max source length).
DEFAULT_SOURCE_LENGTH = 512
SpeedCut = Literal["auto", "encoder", "decoder"]
SPEED_CUTS = ("auto", "encoder", "decoder")


def cost_profile(config) -> dict:
    """The architecture facts the cost model reads from a T5, LongT5 or BART-family config (a plain,
    JSON-able dict: ``encoder_layers``, ``decoder_layers``, ``d_model``, ``inner`` (attention width),
    ``ffn_encoder``/``ffn_decoder`` (feed-forward width, x1.5 when gated), ``vocab_size``,
    ``attention`` (``"full"``, ``"local"`` or ``"transient-global"``), ``local_radius``,
    ``global_block_size``).

    Raises:
        CompressionError: the config has no encoder/decoder depth or width this module knows.
    """
    get = lambda *names, default=None: next((getattr(config, n) for n in names if getattr(config, n, None)),  # noqa: E731
                                            default)
    d_model = get("d_model")
    encoder_layers = get("num_layers", "encoder_layers")
    decoder_layers = get("num_decoder_layers", "decoder_layers", default=encoder_layers)
    if not (d_model and encoder_layers and decoder_layers):
        raise CompressionError(f"cannot model the generation cost of a {getattr(config, 'model_type', '?')} "
                               "model: it needs d_model and encoder/decoder layer counts (T5, LongT5 or BART family)")
    heads, head_size = get("num_heads"), get("d_kv")
    inner = heads * head_size if heads and head_size else d_model
    gated = bool(getattr(config, "is_gated_act", False)) or str(getattr(config, "feed_forward_proj", "")).startswith("gated")
    d_ff = get("d_ff")
    ffn_encoder = get("encoder_ffn_dim", default=d_ff or 4 * d_model)
    ffn_decoder = get("decoder_ffn_dim", default=d_ff or 4 * d_model)
    scale = 1.5 if gated else 1.0
    attention = "full"
    if getattr(config, "model_type", "") == "longt5":
        attention = "transient-global" if getattr(config, "encoder_attention_type", "local") == "transient-global" \
            else "local"
    return {"model_type": getattr(config, "model_type", None), "encoder_layers": int(encoder_layers),
            "decoder_layers": int(decoder_layers), "d_model": int(d_model), "inner": int(inner),
            "ffn_encoder": ffn_encoder * scale, "ffn_decoder": ffn_decoder * scale,
            "vocab_size": int(config.vocab_size), "attention": attention,
            "local_radius": int(getattr(config, "local_radius", 127) or 127),
            "global_block_size": int(getattr(config, "global_block_size", 16) or 16)}


@dataclass(frozen=True)
class GenerationCost:
    """Seconds one greedy generation of one document (batch 1) spends per layer and outside them.

    ``encoder_layer_s``: one encoder layer's pass over the source; ``decoder_layer_s``: one decoder
    layer over all new tokens; ``fixed_s``: the rest (embeddings, output layer, the decoding loop).
    ``basis``: where the figures come from (``"modelled"`` or what was measured).
    """

    encoder_layers: int
    decoder_layers: int
    encoder_layer_s: float
    decoder_layer_s: float
    fixed_s: float = 0.0
    basis: str = "modelled"

    @property
    def total_s(self) -> float:
        """Seconds of the whole generation."""
        return (self.encoder_layers * self.encoder_layer_s + self.decoder_layers * self.decoder_layer_s
                + self.fixed_s)

    @property
    def encoder_share(self) -> float:
        """The encoder's share of the generation time (0-1)."""
        return self.encoder_layers * self.encoder_layer_s / self.total_s if self.total_s > 0 else 0.0

    def speedup(self, stack: str, layers: int = 1) -> float:
        """Generation speedup (teacher seconds / student seconds) from removing ``layers`` of ``stack``.

        Raises:
            CompressionError: an unknown stack, or more layers than the stack keeps minus one.
        """
        if stack not in ("encoder", "decoder"):
            raise CompressionError(f"stack must be 'encoder' or 'decoder', got {stack!r}")
        depth = self.encoder_layers if stack == "encoder" else self.decoder_layers
        if not 0 <= layers < depth:
            raise CompressionError(f"cannot remove {layers} of the {depth} {stack} layers (one must stay)")
        saved = layers * (self.encoder_layer_s if stack == "encoder" else self.decoder_layer_s)
        return self.total_s / (self.total_s - saved)


def _attention_span(profile: dict, source_length: int) -> float:
    if profile["attention"] == "full":
        return source_length
    local = min(source_length, 3 * (profile["local_radius"] + 1))
    if profile["attention"] == "transient-global":
        return local + math.ceil(source_length / profile["global_block_size"])
    return local


def modelled_cost(profile: dict, source_length: int, new_tokens: int = DEFAULT_NEW_TOKENS) -> GenerationCost:
    """The modelled :class:`GenerationCost` of one document of ``source_length`` tokens and
    ``new_tokens`` greedy new tokens (batch 1) for a :func:`cost_profile` (see the module docstring).

    Raises:
        CompressionError: a source length or number of new tokens below 1.
    """
    if source_length < 1 or new_tokens < 1:
        raise CompressionError(f"source length and new tokens must be at least 1 (got {source_length}, {new_tokens})")
    d, i, L, n = profile["d_model"], profile["inner"], source_length, new_tokens
    encoder_macs = L * (4 * d * i + 2 * d * profile["ffn_encoder"] + 2 * i * _attention_span(profile, L))
    step_macs = 4 * d * i + 2 * i * (n / 2) + 2 * d * i + 2 * i * L + 2 * d * profile["ffn_decoder"]
    decoder_macs = n * step_macs + 2 * d * i * L
    return GenerationCost(
        encoder_layers=profile["encoder_layers"], decoder_layers=profile["decoder_layers"],
        encoder_layer_s=SECONDS_PER_MAC * encoder_macs + LAYER_CALL_S,
        decoder_layer_s=SECONDS_PER_MAC * decoder_macs + n * LAYER_CALL_S,
        fixed_s=n * (SECONDS_PER_MAC * d * profile["vocab_size"] + LAYER_CALL_S),
        basis=f"modelled for this architecture: {n} new tokens, batch 1, fp32 costs of a 2-core CPU")


@dataclass(frozen=True)
class CutAdvice:
    """Which stack to cut for speed at one source length, and why.

    ``stack``: ``"encoder"`` or ``"decoder"``, the one whose layer removed gives the larger
    generation speedup; ``encoder_speedup``/``decoder_speedup``: the speedup from removing one layer
    of each stack (1.0 when the stack has a single layer, which cannot go).
    """

    stack: str
    source_length: int
    new_tokens: int
    encoder_speedup: float
    decoder_speedup: float
    encoder_share: float
    basis: str

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        """One markdown sentence for the dashboard's plan panel."""
        return (f"**For speed at {self.source_length:,} source tokens, cut the {self.stack}**: one encoder layer "
                f"removed ≈ **{self.encoder_speedup:.2f}×** faster generation, one decoder layer ≈ "
                f"**{self.decoder_speedup:.2f}×** (the encoder ≈ {self.encoder_share:.0%} of the time; "
                f"{self.basis}).")


def cut_advice(profile: dict, source_length: int, new_tokens: int = DEFAULT_NEW_TOKENS,
               cost: GenerationCost | None = None) -> CutAdvice:
    """Which stack to cut for more generation speedup per layer removed at ``source_length`` tokens.

    Args:
        profile: :func:`cost_profile` of the model.
        source_length: source tokens per document (e.g. the data's max source length).
        new_tokens: new tokens per summary.
        cost: a measured (or forced) cost to decide on instead of :func:`modelled_cost`.

    Raises:
        CompressionError: see :func:`modelled_cost`.
    """
    cost = cost or modelled_cost(profile, source_length, new_tokens)
    speedups = {stack: cost.speedup(stack, 1) if depth > 1 else 1.0
                for stack, depth in (("encoder", cost.encoder_layers), ("decoder", cost.decoder_layers))}
    stack = "encoder" if speedups["encoder"] > speedups["decoder"] else "decoder"
    return CutAdvice(stack=stack, source_length=source_length, new_tokens=new_tokens,
                     encoder_speedup=speedups["encoder"], decoder_speedup=speedups["decoder"],
                     encoder_share=cost.encoder_share, basis=cost.basis)


def stack_to_cut(config, source_length: int | None, choice: str = "auto",
                 new_tokens: int = DEFAULT_NEW_TOKENS) -> str:
    """``"encoder"`` or ``"decoder"``: ``choice`` itself, or for ``"auto"`` the :func:`cut_advice` of
    ``config`` at ``source_length`` (:data:`DEFAULT_SOURCE_LENGTH` when ``None``).

    Raises:
        CompressionError: ``choice`` not one of :data:`SPEED_CUTS`, or see :func:`cost_profile`.
    """
    if choice not in SPEED_CUTS:
        raise CompressionError(f"the stack to cut for speed must be one of {', '.join(SPEED_CUTS)} (got {choice!r})")
    if choice != "auto":
        return choice
    return cut_advice(cost_profile(config), source_length or DEFAULT_SOURCE_LENGTH, new_tokens).stack
