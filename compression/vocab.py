"""Vocabulary pruning: keep only the token ids a corpus uses (TextPruner's vocabulary pruning).

Yang et al. 2022, "TextPruner: A Model Pruning Toolkit for Pre-Trained Language Models" (ACL demo),
section 2.1: tokenize the task's texts, keep the embedding rows of the ids that occur (plus the
special tokens), drop the others. For a T5 summarizer the shared 32,128 x d_model embedding, which
is also the output layer (tied ``lm_head``), is the largest single tensor: at t5-small's shape it is
27% of the fp32 weights and more than half of an 8-bit or 4-bit student. It also sets the cost of
the vocabulary projection at every generated token.

What changes, and how the result stays loadable:

- The model's embedding (and untied ``lm_head``, and BART's ``final_logits_bias``) keep the rows of
  ``kept_ids`` (sorted tokenizer ids); ``config.vocab_size`` becomes ``len(kept_ids)``. The model is
  an ordinary ``T5ForConditionalGeneration``/``BartForConditionalGeneration``: it saves with
  ``save_pretrained`` and loads with plain ``from_pretrained``.
- The model now speaks *model ids* ``0 .. len(kept_ids)-1``; model id ``i`` is tokenizer id
  ``kept_ids[i]``. The tokenizer is left unchanged (a SentencePiece or byte tokenizer cannot easily be
  shrunk), so the mapping is stored in the config: ``config.vocab_pruning = {"kept_ids": [...],
  "original_vocab_size": V, "unk_model_id": u}``, and the config's special-token ids (pad, EOS,
  decoder start, BOS, forced BOS/EOS) are rewritten as model ids.
- :func:`to_model_ids` maps tokenizer ids to model ids (ids the corpus never used become the unknown
  token, ``-100`` label padding stays ``-100``) and :func:`to_tokenizer_ids` maps back.
  :func:`compression.generation.generate` and :mod:`compression.evaluate` apply both, so the CLI,
  the dashboard and the benchmarks take and return tokenizer ids as for any model. Code outside this
  project must do the same (the list is in ``config.json``); a model without ``vocab_pruning`` passes
  through both functions unchanged.

Logits of a pruned model equal the unpruned model's logits at the kept ids (the rows are copied
exactly), so greedy output is identical whenever the unpruned model's choice is a kept id; a text
with pieces outside ``kept_ids`` loses them to the unknown token - prune on the data the model will
see (training + validation texts), and measure.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from .errors import CompressionError, DatasetError, ModelLoadError

_SPECIAL_FIELDS = ("pad_token_id", "eos_token_id", "bos_token_id", "decoder_start_token_id",
                   "forced_bos_token_id", "forced_eos_token_id")


def pruning_info(model_or_config) -> dict | None:
    """``config.vocab_pruning`` of a pruned model (``{"kept_ids", "original_vocab_size",
    "unk_model_id"}``), or ``None`` for a model with its full vocabulary."""
    config = getattr(model_or_config, "config", model_or_config)
    info = getattr(config, "vocab_pruning", None)
    return info or None


def kept_token_ids(tokenizer, texts: Iterable[str], *, model=None) -> list[int]:
    """Sorted tokenizer ids used by ``texts``, plus the special tokens: the rows a pruned model keeps.

    Each text is tokenized whole (no truncation, special tokens added as when training). Always kept:
    the tokenizer's pad/EOS/unknown/BOS ids and, when ``model`` is given, every special id of its
    config and generation config (decoder start, forced BOS/EOS). T5's 100 sentinel tokens
    (``<extra_id_*>``) are kept only if the texts use them.

    Raises:
        DatasetError: no texts.
    """
    kept: set[int] = set()
    count = 0
    batch: list[str] = []

    def flush() -> None:
        for ids in tokenizer(batch)["input_ids"]:
            kept.update(ids)

    for text in texts:
        batch.append(text)
        count += 1
        if len(batch) == 256:
            flush()
            batch = []
    if batch:
        flush()
    if count == 0:
        raise DatasetError("no texts to collect the vocabulary from: give the training (and validation) texts")
    for name in ("pad_token_id", "eos_token_id", "unk_token_id", "bos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            kept.add(int(value))
    if model is not None:
        for holder in (model.config, getattr(model, "generation_config", None)):
            for name in _SPECIAL_FIELDS:
                for value in _ids(getattr(holder, name, None)):
                    kept.add(value)
    return sorted(kept)


def _ids(value) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def _remap(value, lookup: dict[int, int], name: str):
    if value is None:
        return None
    if isinstance(value, int):
        if value not in lookup:
            raise CompressionError(f"{name} {value} is not among the kept ids: keep it (kept_token_ids adds it)")
        return lookup[value]
    return [_remap(v, lookup, name) for v in value]


def prune_vocabulary(model, kept_ids: list[int], *, unk_id: int | None = None):
    """A copy of ``model`` whose vocabulary is ``kept_ids`` (TextPruner vocabulary pruning, sec. 2.1).

    Args:
        model: T5- or BART-family seq2seq model with its full vocabulary (fp32/fp16/bf16; not
            bitsandbytes-quantized: prune first, then quantize).
        kept_ids: tokenizer ids to keep (e.g. :func:`kept_token_ids`); sorted and deduplicated here.
        unk_id: the tokenizer's unknown-token id; ids outside ``kept_ids`` map to it in
            :func:`to_model_ids`. Must be kept. ``None``: such ids raise instead.

    Returns:
        the pruned copy (same class, same dtype/device, eval/train mode kept): embedding
        ``[len(kept_ids), d_model]``, ``lm_head`` tied as before (or sliced when untied),
        ``final_logits_bias`` sliced, ``config.vocab_size = len(kept_ids)``, special ids remapped in
        ``config`` and ``generation_config``, ``config.vocab_pruning`` set (see the module docstring).
        The input model is untouched.

    Raises:
        CompressionError: the model is already pruned or quantized, ``kept_ids`` is empty or out of
            range, or a special token / ``unk_id`` is not kept.
    """
    if pruning_info(model) is not None:
        raise CompressionError("this model's vocabulary is already pruned: prune the original model instead")
    if getattr(model, "is_quantized", False) or getattr(model, "quantization_method", None):
        raise CompressionError("cannot prune a quantized model: prune the float checkpoint, then quantize it")
    embedding = model.get_input_embeddings()
    vocab_size = embedding.weight.shape[0]
    kept = sorted({int(i) for i in kept_ids})
    if not kept:
        raise CompressionError("no token ids to keep: give the ids your texts use (kept_token_ids)")
    if kept[0] < 0 or kept[-1] >= vocab_size:
        raise CompressionError(f"kept ids must lie in 0..{vocab_size - 1} (the model's vocabulary)")
    lookup = {old: new for new, old in enumerate(kept)}
    if unk_id is not None and unk_id not in lookup:
        raise CompressionError(f"the unknown token {unk_id} must be kept: add it to kept_ids")

    pruned = copy.deepcopy(model)
    index = torch.tensor(kept, dtype=torch.long, device=embedding.weight.device)
    replaced: dict[int, nn.Parameter] = {}

    def sliced(param: nn.Parameter) -> nn.Parameter:
        if id(param) not in replaced:
            replaced[id(param)] = nn.Parameter(param.detach().index_select(0, index.to(param.device)).clone(),
                                               requires_grad=param.requires_grad)
        return replaced[id(param)]

    old_input = pruned.get_input_embeddings().weight
    old_output = pruned.get_output_embeddings().weight if pruned.get_output_embeddings() is not None else None
    for module in pruned.modules():
        weight = getattr(module, "weight", None)
        if weight is None or (weight is not old_input and weight is not old_output):
            continue
        module.weight = sliced(weight)
        if isinstance(module, nn.Embedding):
            module.num_embeddings = len(kept)
            if module.padding_idx is not None:
                module.padding_idx = lookup.get(module.padding_idx)
        elif isinstance(module, nn.Linear):
            module.out_features = len(kept)
            if module.bias is not None:
                module.bias = nn.Parameter(module.bias.detach()[index].clone())
    for name, buffer in list(pruned.named_buffers()):
        if name.endswith("final_logits_bias") and buffer.shape[-1] == vocab_size:
            owner = pruned.get_submodule(name.rsplit(".", 1)[0]) if "." in name else pruned
            owner.register_buffer(name.rsplit(".", 1)[-1], buffer[..., index].clone(), persistent=True)

    pruned.config.vocab_size = len(kept)
    for holder in (pruned.config, getattr(pruned, "generation_config", None)):
        if holder is None:
            continue
        for name in _SPECIAL_FIELDS:
            value = getattr(holder, name, None)
            if value is not None:
                setattr(holder, name, _remap(value, lookup, name))
    pruned.config.vocab_pruning = {
        "kept_ids": kept,
        "original_vocab_size": vocab_size,
        "unk_model_id": None if unk_id is None else lookup[unk_id],
    }
    return pruned


def _lookup(model, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokenizer->model table with -1 for pruned ids, kept_ids tensor)``, cached on the model."""
    info = pruning_info(model)
    cache = getattr(model, "_vocab_pruning_tables", None)
    key = (id(info), str(device))
    if cache is not None and cache[0] == key:
        return cache[1], cache[2]
    try:
        kept = torch.tensor(info["kept_ids"], dtype=torch.long)
        size = int(info["original_vocab_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(
            "config.vocab_pruning is malformed (needs kept_ids and original_vocab_size): re-prune the model "
            "with compression.vocab.prune_vocabulary"
        ) from exc
    table = torch.full((size,), -1, dtype=torch.long)
    table[kept] = torch.arange(len(kept))
    table, kept = table.to(device), kept.to(device)
    object.__setattr__(model, "_vocab_pruning_tables", (key, table, kept))
    return table, kept


def to_model_ids(model, token_ids: torch.Tensor) -> torch.Tensor:
    """Tokenizer ids -> the model's ids (same shape; identity for a model that is not pruned).

    Negative entries (``-100`` label padding) stay as they are. Ids the pruning dropped become the
    unknown token's model id.

    Raises:
        CompressionError: an id outside the original vocabulary, or a dropped id when the pruned
            model has no unknown token.
    """
    if pruning_info(model) is None:
        return token_ids
    table, _ = _lookup(model, token_ids.device)
    if token_ids.numel() and int(token_ids.max()) >= table.shape[0]:
        raise CompressionError(
            f"token id {int(token_ids.max())} is outside the model's original vocabulary of {table.shape[0]}: "
            "use the tokenizer the model was pruned with"
        )
    mapped = table[token_ids.clamp(min=0)]
    dropped = (mapped < 0) & (token_ids >= 0)
    if bool(dropped.any()):
        unk = pruning_info(model).get("unk_model_id")
        if unk is None:
            raise CompressionError(
                "the text uses tokens this pruned model dropped and it has no unknown token: prune again "
                "with these texts included (kept_token_ids) and unk_id set"
            )
        mapped = torch.where(dropped, torch.full_like(mapped, unk), mapped)
    return torch.where(token_ids < 0, token_ids, mapped)


def to_tokenizer_ids(model, model_ids: torch.Tensor) -> torch.Tensor:
    """The model's ids -> tokenizer ids (same shape; identity for a model that is not pruned).

    Negative entries stay as they are.
    """
    if pruning_info(model) is None:
        return model_ids
    _, kept = _lookup(model, model_ids.device)
    return torch.where(model_ids < 0, model_ids, kept[model_ids.clamp(min=0)])


def prune_for_texts(model, tokenizer, texts: Iterable[str]):
    """:func:`prune_vocabulary` to the ids of ``texts`` (:func:`kept_token_ids`), with the tokenizer's
    unknown token as the fallback. Pass every text the model will read or write: ``prefix +
    document`` for sources and the summaries.

    Raises:
        DatasetError: no texts. CompressionError: see :func:`prune_vocabulary`.
    """
    kept = kept_token_ids(tokenizer, texts, model=model)
    return prune_vocabulary(model, kept, unk_id=getattr(tokenizer, "unk_token_id", None))
