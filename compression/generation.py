"""Fast greedy decoding for encoder-decoder summarizers, token-for-token equal to ``model.generate``.

:func:`generate` runs the encoder once, then one call of the model's own ``forward`` per token with
the model's own ``EncoderDecoderCache`` (created by the model on the first step), an ``argmax``,
and the few greedy rules ``generate`` would apply (minimum length, forced BOS/EOS, EOS stopping
with padding of finished rows) - nothing re-implements a layer. It is the loop of
``GenerationMixin._sample`` with ``do_sample=False`` (transformers 5, ``generation/utils.py``)
minus the machinery a plain greedy call does not need (model-input preparation, kwargs updates,
logits-processor and stopping-criteria lists), and an all-ones attention mask is dropped once
instead of being rebuilt at every step.

What it buys, measured on a 2-core AMD EPYC, one thread, CPU time (``benchmarks/generation.py``
and a narrow 6/6 T5 with d_model 64 where nothing but overhead is left): there ``generate`` took
2.4 ms per token and this loop 1.8 ms, so its own machinery is about 0.6 ms per token; at the t5-small
shape a decoder step is ~14 ms (the 32,128-row vocabulary projection alone ~4.7 ms, each decoder
layer ~1.5 ms of weight traffic), so the loop is only 1.03-1.05x faster than ``generate``. The
per-token fixed cost at batch 1 is the vocabulary projection, not Python: see
:mod:`compression.vocab` for shrinking it.

Where the fast path does not apply - beam search, a generation config asking for anything beyond
those rules (``no_repeat_ngram_size``, repetition penalty, suppressed tokens, a static cache...),
extra keyword arguments, or a model family it was not verified on - :func:`generate` calls
``model.generate`` itself, so the result is always what ``model.generate(..., do_sample=False)``
returns. ``tests/test_generation.py`` checks the equality exactly on tiny T5 and BART models.

Models with a pruned vocabulary (:mod:`compression.vocab`) take and return *tokenizer* ids here:
inputs are mapped to the model's ids and outputs mapped back, on both paths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import OutOfMemoryError

#: Model types whose forward the fast path was verified on (tests/test_generation.py).
FAST_MODEL_TYPES = ("t5", "mt5", "bart")

# Generation-config fields the fast path honours or that greedy decoding ignores. Any other field
# that differs from GenerationConfig()'s default sends the call to model.generate.
_HANDLED = frozenset({
    "bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id",
    "max_length", "max_new_tokens", "min_length", "min_new_tokens",
    "forced_bos_token_id", "forced_eos_token_id",
    "num_beams", "do_sample", "early_stopping", "length_penalty", "use_cache",
    # sampling-only warpers: unused when do_sample=False
    "temperature", "top_k", "top_p", "min_p", "top_h", "typical_p", "epsilon_cutoff", "eta_cutoff",
    # flags that keep their default meaning here
    "output_attentions", "output_hidden_states", "_from_model_config", "transformers_version",
})


@dataclass(frozen=True)
class _Greedy:
    """The greedy rules ``generate`` would apply for one call (all ids in the model's vocabulary)."""

    start: int
    eos: tuple[int, ...]
    pad: int | None
    min_length: int
    min_new_tokens: int
    forced_bos: int | None
    forced_eos: tuple[int, ...]


def _as_ids(value) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
        return tuple(value)
    raise TypeError("not token ids")


def fast_path_reason(model, *, num_beams: int = 1, **kwargs) -> str | None:
    """Why :func:`generate` would fall back to ``model.generate`` (a short phrase), or ``None`` when
    the fast greedy loop applies to this model and these arguments."""
    if num_beams != 1:
        return "beam search"
    if kwargs:
        return f"extra generate arguments ({', '.join(sorted(kwargs))})"
    config = getattr(model, "config", None)
    if not getattr(config, "is_encoder_decoder", False):
        return "not an encoder-decoder"
    if config.model_type not in FAST_MODEL_TYPES:
        return f"model type {config.model_type!r} not verified for the fast path"
    if getattr(model, "training", False):
        return "model in training mode"
    extra = sorted(set(model.generation_config.to_diff_dict()) - _HANDLED)
    if extra:
        return f"generation config sets {', '.join(extra)}"
    if not model.generation_config.use_cache:
        return "use_cache is off"
    try:
        settings = _settings(model, 0)
    except TypeError:
        return "special token ids are not plain integers"
    if settings is None:
        return "no decoder start token"
    return None


def _settings(model, min_new_tokens: int) -> _Greedy | None:
    gen = model.generation_config
    start = gen.decoder_start_token_id if gen.decoder_start_token_id is not None else gen.bos_token_id
    if start is None:
        return None
    if not isinstance(start, int):
        raise TypeError("decoder start is not one id")
    eos = _as_ids(gen.eos_token_id) or ()
    pad = gen.pad_token_id
    if pad is None and eos:
        pad = eos[0]  # generate's _prepare_special_tokens does the same
    forced_bos = gen.forced_bos_token_id
    if forced_bos is not None and not isinstance(forced_bos, int):
        raise TypeError("forced BOS is not one id")
    return _Greedy(
        start=start,
        eos=eos,
        pad=pad,
        min_length=int(gen.min_length or 0),
        min_new_tokens=int(min_new_tokens),
        forced_bos=forced_bos,
        forced_eos=_as_ids(gen.forced_eos_token_id) or (),
    )


def cache_argument(model) -> str:
    """The name of the key/value-cache argument and output field of ``model.forward``: ``"cache"``
    from transformers 5.24 on (``past_key_values`` is deprecated there, to be removed in 5.40),
    ``"past_key_values"`` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _greedy_loop(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, max_new_tokens: int,
                 rules: _Greedy) -> torch.Tensor:
    """The decoding loop; ``input_ids``/result in the model's own vocabulary."""
    device = input_ids.device
    batch = input_ids.shape[0]
    if attention_mask is not None and bool(attention_mask.all()):
        attention_mask = None  # transformers drops an all-ones mask too; skipping it saves work per step
    encoder_outputs = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
    sequences = torch.empty((batch, max_new_tokens + 1), dtype=torch.long, device=device)
    sequences[:, 0] = rules.start
    tokens = sequences[:, :1]
    eos = torch.tensor(rules.eos, dtype=torch.long, device=device) if rules.eos else None
    unfinished = torch.ones(batch, dtype=torch.bool, device=device)
    max_length = max_new_tokens + 1  # generate's max_length for a one-token decoder prompt
    cache_name = cache_argument(model)
    past = None
    for step in range(max_new_tokens):
        outputs = model(encoder_outputs=encoder_outputs, attention_mask=attention_mask,
                        decoder_input_ids=tokens, use_cache=True, return_dict=True, **{cache_name: past})
        past = getattr(outputs, cache_name)
        # float32 copy of the last position, as generate() takes it before the processors
        scores = outputs.logits[:, -1].to(copy=True, dtype=torch.float32)
        del outputs
        cur_len = step + 1  # length of the decoder input that produced these scores
        if eos is not None and (cur_len < rules.min_length or step < rules.min_new_tokens):
            scores[:, eos] = -math.inf
        if rules.forced_bos is not None and cur_len == 1:
            scores.fill_(-math.inf)
            scores[:, rules.forced_bos] = 0
        if rules.forced_eos and cur_len == max_length - 1:
            scores.fill_(-math.inf)
            scores[:, list(rules.forced_eos)] = 0
        next_tokens = scores.argmax(dim=-1)
        if eos is not None:
            next_tokens = torch.where(unfinished, next_tokens, rules.pad)
            unfinished &= ~torch.isin(next_tokens, eos)
        sequences[:, step + 1] = next_tokens
        tokens = sequences[:, step + 1:step + 2]
        if eos is not None and not bool(unfinished.any()):
            return sequences[:, :step + 2]
    return sequences


def generate(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
             max_new_tokens: int, min_new_tokens: int = 0, num_beams: int = 1, **kwargs) -> torch.LongTensor:
    """Deterministic generation, equal token for token to ``model.generate(..., do_sample=False)``.

    Args:
        model: a T5- or BART-family ``...ForConditionalGeneration`` (fp32, half, or bitsandbytes
            8/4-bit; any device), possibly with a pruned vocabulary (:mod:`compression.vocab`).
        input_ids: ``[batch, src_len]`` LongTensor of *tokenizer* ids, on the model's device.
        attention_mask: ``[batch, src_len]`` (1 = token, 0 = padding), or ``None`` (no padding).
        max_new_tokens: at most this many generated tokens (>= 1).
        min_new_tokens: EOS is forbidden before this many (set equal to ``max_new_tokens`` to force
            a fixed output length, as the speed benchmarks do).
        num_beams: 1 = greedy (fast path); > 1 = beam search via ``model.generate``.
        **kwargs: further ``model.generate`` arguments; any of them selects ``model.generate``.

    Returns:
        ``[batch, 1 + n]`` LongTensor of tokenizer ids: the decoder start token, then ``n <=
        max_new_tokens`` generated tokens; rows that ended early are padded with the pad id, and
        ``n`` stops at the step where every row has produced EOS (exactly as ``generate`` does).

    The fast path (see the module docstring; :func:`fast_path_reason` says when it is skipped) runs
    under ``torch.inference_mode``. Source of the loop: ``transformers`` ``GenerationMixin._sample``.

    Raises:
        ValueError: ``max_new_tokens`` < 1, or ``min_new_tokens``/``num_beams`` negative or zero.
    """
    from .vocab import to_model_ids, to_tokenizer_ids

    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    if min_new_tokens < 0 or num_beams < 1:
        raise ValueError("min_new_tokens must be >= 0 and num_beams >= 1")
    model_ids = to_model_ids(model, input_ids)
    reason = fast_path_reason(model, num_beams=num_beams, **kwargs)
    with torch.inference_mode():
        if reason is None:
            rules = _settings(model, min_new_tokens)
            output = _greedy_loop(model, model_ids, attention_mask, max_new_tokens, rules)
        else:
            output = model.generate(input_ids=model_ids, attention_mask=attention_mask, do_sample=False,
                                    max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                                    num_beams=num_beams, **kwargs)
    return to_tokenizer_ids(model, output)


def model_device(model) -> torch.device:
    """The device ``model``'s weights are on (``model.device``, else its first parameter's)."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def oom_error(what: str) -> OutOfMemoryError:
    """The :class:`OutOfMemoryError` raised when generation or scoring runs out of memory."""
    return OutOfMemoryError(
        f"out of memory while {what}: lower the evaluation batch size, max source length or "
        "max new tokens, or use fewer beams"
    )


def encode_sources(tokenizer, texts: list[str], *, prefix: str, max_source_length: int, device) -> dict:
    """``prefix + text`` for each text, tokenized, truncated to ``max_source_length`` tokens and
    padded: ``{"input_ids", "attention_mask"}`` ``[batch, src_len]`` on ``device``."""
    batch = tokenizer(
        [prefix + text for text in texts],
        max_length=max_source_length,
        truncation=True,
        padding=True,
        return_tensors="pt",
    )
    return {key: value.to(device) for key, value in batch.items()}


def generate_batch(model, batch: dict, **generate_kwargs) -> torch.Tensor:
    """:func:`generate` (fast greedy path, else ``model.generate``) on a batch from
    :func:`encode_sources`; tokenizer ids in and out, also for a vocabulary-pruned model.

    Raises:
        OutOfMemoryError: the device ran out of memory.
    """
    try:
        return generate(model, batch["input_ids"], batch.get("attention_mask"), **generate_kwargs)
    except torch.OutOfMemoryError as exc:
        raise oom_error("generating summaries") from exc
