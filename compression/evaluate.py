"""Evaluation: generate summaries, score them, and measure size; :func:`evaluate_model` puts
everything the comparison table shows together.

ROUGE and its confidence intervals live in :mod:`compression.metrics` (pure, no torch), generation
speed in :mod:`compression.timing`; both are re-exported here for the older import paths.

Everything here takes a loaded model and plain lists of strings and returns plain values, so the CLI,
the dashboard and the benchmarks share it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from .arch import count_parameters
from .config import EvalArgs
from .data import LABEL_PAD
from .generation import encode_sources, generate_batch, model_device, oom_error
from .losses import example_cross_entropy
from .metrics import (  # noqa: F401  (split_sentences, rouge_f1, percent_of_base re-exported)
    ROUGE_TYPES,
    bootstrap_ci,
    output_health,
    percent_of_base,
    rouge_f1,
    rouge_scores,
    split_sentences,
)
from .timing import measure_latency, paired_speedup  # noqa: F401  (paired_speedup re-exported)
from .vocab import to_model_ids


def token_batches(lengths: list[int], batch_tokens: int, max_pairs: int | None = None) -> list[list[int]]:
    """Indices grouped into batches bounded by a token budget, longest first.

    Sorts the indices by ``lengths`` (tokens, longest first; ties keep the input order) and fills each
    batch while ``len(batch) * longest_in_batch <= batch_tokens``: the padded size of the batch, which
    is what its activations scale with, stays within the budget. A pair longer than the budget on its
    own runs alone in its batch (never dropped or cut). ``max_pairs`` also caps the pairs per batch.
    So at 512-token inputs a budget of 8,192 tokens makes batches of 16, at 16,384 one pair a batch.
    (The token-budget batching of fairseq's ``--max-tokens``, Ott et al. 2019.)

    Returns:
        list of batches of indices into ``lengths``; each index once.

    Raises:
        ValueError: ``batch_tokens`` or ``max_pairs`` below 1.
    """
    if batch_tokens < 1 or (max_pairs is not None and max_pairs < 1):
        raise ValueError(f"the token budget ({batch_tokens}) and pairs per batch ({max_pairs}) must be at least 1")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for index in order:
        batch = batches[-1] if batches else None
        # sorted longest first, so the batch's first pair is its longest
        if (batch is not None and (len(batch) + 1) * max(lengths[batch[0]], 1) <= batch_tokens
                and (max_pairs is None or len(batch) < max_pairs)):
            batch.append(index)
        else:
            batches.append([index])
    return batches


def _source_batches(tokenizer, documents: list[str], prefix: str, max_source_length: int,
                    batch_tokens: int, max_pairs: int) -> list[list[int]]:
    """Indices of ``documents`` in :func:`token_batches` by their truncated source length in tokens."""
    lengths = [
        len(ids)
        for ids in tokenizer([prefix + d for d in documents], max_length=max_source_length,
                             truncation=True)["input_ids"]
    ]
    return token_batches(lengths, batch_tokens, max_pairs)


def generate_summaries(model, tokenizer, documents: list[str], *, prefix: str, max_source_length: int,
                       args: EvalArgs, on_progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Summarize each document; returns one stripped string per document, in the input order.

    Documents are tokenized as ``prefix + document`` (truncated to ``max_source_length`` tokens),
    sorted by token length and cut into batches of at most ``args.batch_size`` documents and
    ``args.batch_tokens`` padded source tokens (:func:`token_batches`), so a batch carries little
    padding and a set of long documents does not run out of memory; the outputs are put back in the
    original order. Decoding is greedy
    (``args.num_beams == 1``) or beam search, never sampling, for at most ``args.max_new_tokens``
    tokens, with special tokens dropped. Runs under ``model.eval()`` and ``torch.inference_mode()``
    on the model's own device through :func:`compression.generation.generate`: the fast greedy loop,
    token for token what ``transformers``' ``GenerationMixin.generate`` returns, or ``generate``
    itself for beam search. A vocabulary-pruned model (:mod:`compression.vocab`) is handled: ids are
    mapped in and out, so the tokenizer decodes the result as usual. ``on_progress(done, total)``,
    when given, is called after each batch with the documents summarized so far.

    Raises:
        OutOfMemoryError: the device ran out of memory (lower the batch size or lengths).
    """
    if not documents:
        return []
    model.eval()
    device = model_device(model)
    results: list[str] = [""] * len(documents)
    done = 0
    with torch.inference_mode():
        for indices in _source_batches(tokenizer, documents, prefix, max_source_length, args.batch_tokens,
                                       args.batch_size):
            batch = encode_sources(tokenizer, [documents[i] for i in indices], prefix=prefix,
                            max_source_length=max_source_length, device=device)
            output = generate_batch(model, batch, max_new_tokens=args.max_new_tokens,
                               num_beams=args.num_beams)
            texts = tokenizer.batch_decode(output, skip_special_tokens=True)
            for index, text in zip(indices, texts):
                results[index] = text.strip()
            done += len(indices)
            if on_progress is not None:
                on_progress(done, len(documents))
    return results


def size_on_disk_mib(model) -> float:
    """Size in MiB (2**20 bytes) of the model saved with ``save_pretrained`` (safetensors).

    Saves into a temporary folder and sums the sizes of every file written (weights, config,
    generation config). Works for bitsandbytes 8/4-bit models, which save their packed weights,
    including ones loaded from a quantized folder: transformers 5 cannot turn their load-time weight
    conversions back (``NotImplementedError``), so those are saved as loaded
    (``save_original_format=False``; the same tensors and bytes).
    """
    with tempfile.TemporaryDirectory(prefix="size-") as folder:
        try:
            model.save_pretrained(folder)
        except NotImplementedError:
            model.save_pretrained(folder, save_original_format=False)
        total = sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())
    return total / 2**20


def memory_footprint_mib(model) -> float:
    """Parameters plus buffers in memory, in MiB (``PreTrainedModel.get_memory_footprint() / 2**20``)."""
    return model.get_memory_footprint() / 2**20


def compute_validation_loss(model, tokenizer, documents: list[str], references: list[str], *,
                            prefix: str, max_source_length: int, max_target_length: int,
                            batch_size: int, batch_tokens: int | None = None) -> float:
    """Teacher-forced cross-entropy in nats per target token, token-weighted over the whole set.

    Sources are ``prefix + document`` truncated to ``max_source_length`` tokens, targets are the
    references truncated to ``max_target_length`` tokens (with EOS); padded label positions are
    -100 and ignored. Pairs are batched longest source first, at most ``batch_size`` pairs and
    ``batch_tokens`` padded source tokens a batch (:func:`token_batches`; ``None``: no token bound). Sums ``cross_entropy(reduction="sum")`` over all batches and divides by the
    number of target tokens, so long and short targets weigh by their length. For a
    vocabulary-pruned model (:mod:`compression.vocab`) sources and labels are mapped to its ids
    first (a target piece outside the kept vocabulary counts as the unknown token), so the loss is
    over its own, smaller vocabulary.

    Raises:
        ValueError: lists differ in length or are empty.
        OutOfMemoryError: the device ran out of memory.
    """
    if len(documents) != len(references):
        raise ValueError(f"{len(documents)} documents but {len(references)} references")
    if not documents:
        raise ValueError("no pairs for the validation loss: give at least one document/reference")
    model.eval()
    device = model_device(model)
    total, tokens = 0.0, 0
    with torch.no_grad():
        budget = batch_tokens if batch_tokens is not None else max_source_length * batch_size
        for indices in _source_batches(tokenizer, documents, prefix, max_source_length, budget, batch_size):
            batch = encode_sources(tokenizer, [documents[i] for i in indices], prefix=prefix,
                                   max_source_length=max_source_length, device=device)
            labels = tokenizer(text_target=[references[i] for i in indices],
                               max_length=max_target_length, truncation=True, padding=True,
                               return_tensors="pt")
            label_ids = labels["input_ids"].masked_fill(labels["attention_mask"] == 0, LABEL_PAD).to(device)
            label_ids = to_model_ids(model, label_ids)
            batch["input_ids"] = to_model_ids(model, batch["input_ids"])
            try:
                logits = model(**batch, labels=label_ids).logits
            except torch.OutOfMemoryError as exc:
                raise oom_error("computing the validation loss") from exc
            sums, counts = example_cross_entropy(logits, label_ids)
            total += sums.sum().item()
            tokens += int(counts.sum())
    return total / tokens


def evaluate_model(model, tokenizer, documents: list[str], references: list[str], *, prefix: str,
                   max_source_length: int, max_target_length: int, args: EvalArgs,
                   validation_loss: bool = True, on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Everything the comparison table shows, for one model on one evaluation set.

    Returns a dict:
      - ``params`` (int, :func:`count_parameters`), ``size_mib`` (MiB on disk, :func:`size_on_disk_mib`)
      - ``rouge1``/``rouge2``/``rougeL``/``rougeLsum``: F1 in 0-100; ``rouge``: the full
        :func:`rouge_scores` P/R/F dict (without per-sample lists); ``rouge_ci``:
        ``{metric: [low, high]}`` bootstrap intervals of the F1 (``args.bootstrap_samples``,
        ``args.confidence``, seed 0)
      - ``validation_loss``: nats per target token (:func:`compute_validation_loss`), or ``None``
        when ``validation_loss=False``
      - ``latency_ms``: ms per document at batch 1; ``latency_ms_batched``: ms per document at
        batch ``args.batch_size``; ``tokens_per_s``: generated tokens/s at that batch size. Measured
        on the first ``args.latency_samples`` documents with forced-length generation
        (:func:`measure_latency`); ``None`` when ``args.latency_samples`` <= 0.
      - ``output_health``: degenerate-output flags of the summaries (empty share, repetition rate,
        distinct-2, ``degenerate`` and its ``reasons``; :func:`compression.metrics.output_health`)
      - ``predictions``: the generated summaries, in document order

    ``on_progress(done, total)``: called as summaries are generated (see :func:`generate_summaries`).

    Raises:
        ValueError: documents and references differ in length, or are empty.
        OutOfMemoryError: the device ran out of memory.
    """
    if len(documents) != len(references):
        raise ValueError(f"{len(documents)} documents but {len(references)} references")
    predictions = generate_summaries(model, tokenizer, documents, prefix=prefix,
                                     max_source_length=max_source_length, args=args, on_progress=on_progress)
    rouge = rouge_scores(predictions, references)
    per_sample = rouge.pop("per_sample")
    result: dict = {"params": count_parameters(model), "size_mib": size_on_disk_mib(model)}
    result.update({rouge_type: rouge[rouge_type]["fmeasure"] for rouge_type in ROUGE_TYPES})
    result["rouge"] = rouge
    result["rouge_ci"] = {
        rouge_type: list(bootstrap_ci(per_sample[rouge_type], samples=args.bootstrap_samples,
                                      confidence=args.confidence))
        for rouge_type in ROUGE_TYPES
    }
    result["validation_loss"] = (
        compute_validation_loss(model, tokenizer, documents, references, prefix=prefix,
                                max_source_length=max_source_length,
                                max_target_length=max_target_length, batch_size=args.batch_size,
                                batch_tokens=args.batch_tokens)
        if validation_loss else None
    )
    result.update(latency_ms=None, latency_ms_batched=None, tokens_per_s=None)
    timed = documents[:max(0, args.latency_samples)]
    if timed:
        common = dict(prefix=prefix, max_source_length=max_source_length,
                      max_new_tokens=args.max_new_tokens, num_beams=args.num_beams)
        single = measure_latency(model, tokenizer, timed, batch_size=1, **common)
        batched = measure_latency(model, tokenizer, timed, batch_size=min(args.batch_size, len(timed)),
                                  **common)
        result.update(latency_ms=single["ms_per_sample"], latency_ms_batched=batched["ms_per_sample"],
                      tokens_per_s=batched["tokens_per_s"])
    result["output_health"] = output_health(predictions)
    result["predictions"] = predictions
    return result


def score_model(model, tokenizer, documents: list[str], references: list[str], *, prefix: str,
                max_source_length: int, max_target_length: int, max_new_tokens: int,
                batch_size: int = 8, on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Quality and size of ``model`` on a few pairs, without timing: what a quick comparison needs.

    :func:`evaluate_model` with greedy decoding of at most ``max_new_tokens`` new tokens, batches
    of ``batch_size`` and no latency measurement, cut down to the headline numbers. Returns
    ``{"params": int (tied embeddings once), "size_mib": MiB on disk (safetensors), "rouge1",
    "rouge2", "rougeL": F1 in 0-100 (rouge_score, Porter stemmer), "validation_loss": nats per
    target token (:func:`compute_validation_loss`, references truncated to ``max_target_length``
    tokens)}``. Sources are ``prefix + document`` truncated to ``max_source_length`` tokens.
    ``on_progress(done, total)``: summaries written so far, as :func:`evaluate_model` calls it.

    Raises:
        ValueError: documents and references differ in length, or are empty.
        CompressionError: ``max_new_tokens`` or ``batch_size`` not positive.
        OutOfMemoryError: the device ran out of memory.
    """
    args = EvalArgs(max_new_tokens=max_new_tokens, num_beams=1, batch_size=batch_size, latency_samples=0)
    result = evaluate_model(model, tokenizer, documents, references, prefix=prefix,
                            max_source_length=max_source_length, max_target_length=max_target_length,
                            args=args, on_progress=on_progress)
    return {key: result[key] for key in ("params", "size_mib", "rouge1", "rouge2", "rougeL", "validation_loss")}


