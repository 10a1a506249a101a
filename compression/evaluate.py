"""Evaluation: generate summaries, score them with ROUGE, and measure size and speed.

ROUGE comes from Google's ``rouge_score`` package (the scorer used by Hugging Face's summarization
example, ``examples/pytorch/summarization/run_summarization.py``), with the Porter stemmer. Scores are
reported as percentages (0-100). Confidence intervals are percentile-bootstrap intervals of the mean
(Efron & Tibshirani 1993, ch. 13), the same resampling ``rouge_score.scoring.BootstrapAggregator``
does, but seeded so the numbers are reproducible.

Everything here takes a loaded model and plain lists of strings and returns plain values, so the CLI,
the dashboard and the benchmarks share it.
"""

from __future__ import annotations

import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .config import EvalArgs
from .errors import OutOfMemoryError
from .generation import generate as fast_generate
from .vocab import to_model_ids

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# A sentence ends at ., ! or ? (optionally followed by a closing quote or bracket) and whitespace.
# Hugging Face's summarization example splits with nltk.sent_tokenize before rougeLsum; nltk's punkt
# model is a separate download these machines cannot make, so this plain rule stands in for it.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'\u201d\u2019)\]]*\s+")


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences at ``.``/``!``/``?`` followed by whitespace (regex, not nltk)."""
    return [part.strip() for part in _SENTENCE_END.split(text.strip()) if part.strip()]


def _device_of(model) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _oom_error(what: str) -> OutOfMemoryError:
    return OutOfMemoryError(
        f"out of memory while {what}: lower the evaluation batch size, max source length or "
        "max new tokens, or use fewer beams"
    )


def _encode(tokenizer, texts: list[str], *, prefix: str, max_source_length: int, device) -> dict:
    batch = tokenizer(
        [prefix + text for text in texts],
        max_length=max_source_length,
        truncation=True,
        padding=True,
        return_tensors="pt",
    )
    return {key: value.to(device) for key, value in batch.items()}


def _generate(model, batch: dict, **generate_kwargs) -> torch.Tensor:
    """:func:`compression.generation.generate` (fast greedy path, else ``model.generate``) on a
    tokenized batch; tokenizer ids in and out, also for a vocabulary-pruned model."""
    try:
        return fast_generate(model, batch["input_ids"], batch.get("attention_mask"), **generate_kwargs)
    except torch.OutOfMemoryError as exc:
        raise _oom_error("generating summaries") from exc


def _length_sorted_batches(tokenizer, documents: list[str], prefix: str, max_source_length: int,
                           batch_size: int) -> list[list[int]]:
    """Indices of ``documents`` grouped into batches of similar token length (longest first)."""
    lengths = [
        len(ids)
        for ids in tokenizer([prefix + d for d in documents], max_length=max_source_length,
                             truncation=True)["input_ids"]
    ]
    order = sorted(range(len(documents)), key=lambda i: -lengths[i])
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def generate_summaries(model, tokenizer, documents: list[str], *, prefix: str, max_source_length: int,
                       args: EvalArgs) -> list[str]:
    """Summarize each document; returns one stripped string per document, in the input order.

    Documents are tokenized as ``prefix + document`` (truncated to ``max_source_length`` tokens),
    sorted by token length and cut into batches of ``args.batch_size`` so a batch carries little
    padding; the outputs are put back in the original order. Decoding is greedy
    (``args.num_beams == 1``) or beam search, never sampling, for at most ``args.max_new_tokens``
    tokens, with special tokens dropped. Runs under ``model.eval()`` and ``torch.inference_mode()``
    on the model's own device through :func:`compression.generation.generate`: the fast greedy loop,
    token for token what ``transformers``' ``GenerationMixin.generate`` returns, or ``generate``
    itself for beam search. A vocabulary-pruned model (:mod:`compression.vocab`) is handled: ids are
    mapped in and out, so the tokenizer decodes the result as usual.

    Raises:
        OutOfMemoryError: the device ran out of memory (lower the batch size or lengths).
    """
    if not documents:
        return []
    model.eval()
    device = _device_of(model)
    results: list[str] = [""] * len(documents)
    with torch.inference_mode():
        for indices in _length_sorted_batches(tokenizer, documents, prefix, max_source_length,
                                              args.batch_size):
            batch = _encode(tokenizer, [documents[i] for i in indices], prefix=prefix,
                            max_source_length=max_source_length, device=device)
            output = _generate(model, batch, max_new_tokens=args.max_new_tokens,
                               num_beams=args.num_beams)
            texts = tokenizer.batch_decode(output, skip_special_tokens=True)
            for index, text in zip(indices, texts):
                results[index] = text.strip()
    return results


def rouge_scores(predictions: list[str], references: list[str]) -> dict:
    """ROUGE-1/2/L/Lsum of ``predictions`` against ``references`` (``rouge_score``, Porter stemmer).

    Returns ``{"rouge1": {"precision", "recall", "fmeasure"}, "rouge2": ..., "rougeL": ...,
    "rougeLsum": ..., "per_sample": {"rouge1": [F1, ...], ...}}``: every number is a percentage
    (0-100); the P/R/F entries are means over the samples of the per-sample scores times 100.
    For ``rougeLsum`` (summary-level LCS, Lin 2004 section 3.2) both texts have their sentences
    joined with newlines first, as Hugging Face's summarization example does with
    ``nltk.sent_tokenize``; here a regex split (:func:`split_sentences`) replaces nltk, whose punkt
    model needs a download. Identical non-empty texts score 100; an empty prediction scores 0.

    Raises:
        ValueError: the two lists differ in length, or are empty.
    """
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} references: give one reference "
            "per prediction"
        )
    if not predictions:
        raise ValueError("no predictions to score: give at least one prediction/reference pair")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    fields = ("precision", "recall", "fmeasure")
    samples = {rouge_type: {f: [] for f in fields} for rouge_type in ROUGE_TYPES}
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(reference, prediction)
        lsum = scorer.score("\n".join(split_sentences(reference)),
                            "\n".join(split_sentences(prediction)))["rougeLsum"]
        scores["rougeLsum"] = lsum
        for rouge_type in ROUGE_TYPES:
            for f in fields:
                samples[rouge_type][f].append(100.0 * getattr(scores[rouge_type], f))
    result: dict = {
        rouge_type: {f: float(np.mean(samples[rouge_type][f])) for f in fields}
        for rouge_type in ROUGE_TYPES
    }
    result["per_sample"] = {rouge_type: samples[rouge_type]["fmeasure"] for rouge_type in ROUGE_TYPES}
    return result


def bootstrap_ci(per_sample: list[float], *, samples: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval ``(low, high)`` of the mean of ``per_sample``.

    Draws ``samples`` resamples with replacement (numpy ``default_rng(seed)``, so the same inputs
    give the same interval), takes each resample's mean, and returns the ``(1-confidence)/2`` and
    ``(1+confidence)/2`` percentiles of those means (Efron & Tibshirani 1993, ch. 13). Units are
    those of the inputs (ROUGE percentages here).

    Raises:
        ValueError: empty input, ``samples`` < 1, or ``confidence`` outside (0, 1).
    """
    values = np.asarray(per_sample, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no scores to bootstrap: give at least one per-sample score")
    if samples < 1:
        raise ValueError("bootstrap samples must be at least 1 (1000 is usual)")
    if not 0 < confidence < 1:
        raise ValueError("confidence must lie between 0 and 1 (e.g. 0.95)")
    rng = np.random.default_rng(seed)
    means = np.empty(samples, dtype=np.float64)
    chunk = max(1, 2_000_000 // values.size)  # bounds memory at ~16 MB of indices per chunk
    for start in range(0, samples, chunk):
        stop = min(samples, start + chunk)
        indices = rng.integers(0, values.size, size=(stop - start, values.size))
        means[start:stop] = values[indices].mean(axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def _f1(metrics: dict, rouge_type: str) -> float | None:
    value = metrics.get(rouge_type)
    if isinstance(value, dict):
        value = value.get("fmeasure")
    return None if value is None else float(value)


def percent_of_base(student: dict, base: dict) -> dict:
    """Each ROUGE F1 of ``student`` as a percentage of ``base``'s: ``{"rouge1": 93.1, ...}``.

    Accepts either :func:`evaluate_model` results (``{"rouge1": 31.2, ...}``) or :func:`rouge_scores`
    results (``{"rouge1": {"fmeasure": 31.2, ...}}``). A metric is ``None`` when the base's score is
    0 or missing (e.g. an untrained teacher offline) or the student's is missing: never a division
    by zero. The blog post's headline "ROUGE F1 kept at 92-94% of the original" is this number.
    """
    result = {}
    for rouge_type in ROUGE_TYPES:
        s, b = _f1(student, rouge_type), _f1(base, rouge_type)
        result[rouge_type] = None if s is None or not b else 100.0 * s / b
    return result


def count_parameters(model) -> int:
    """Number of distinct parameters (tied embeddings counted once).

    Uses ``PreTrainedModel.num_parameters`` where available, which walks ``named_parameters()``
    (each shared tensor once) and counts a bitsandbytes 4-bit weight as its unpacked size.
    """
    if hasattr(model, "num_parameters"):
        return int(model.num_parameters())
    return int(sum(p.numel() for p in model.parameters()))


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


def measure_latency(model, tokenizer, documents: list[str], *, prefix: str, max_source_length: int,
                    max_new_tokens: int, batch_size: int, num_beams: int = 1, repeats: int = 1) -> dict:
    """Wall-clock generation speed on ``documents``.

    Generation is forced to exactly ``max_new_tokens`` new tokens per document
    (``min_new_tokens = max_new_tokens``) so models of different depth or quality are timed on the
    same amount of work. One warm-up batch runs first (untimed); then ``repeats`` passes over all
    documents in batches of ``batch_size`` are timed with ``time.perf_counter`` (CUDA synchronized).
    Generation goes through :func:`compression.generation.generate` (the fast greedy loop; beam
    search via ``model.generate``), as :func:`generate_summaries` does.

    Returns ``{"ms_per_sample": milliseconds per document, "tokens_per_s": generated tokens per
    second (new tokens of all documents / total time), "batch_size": int}``.

    Raises:
        ValueError: no documents, or non-positive sizes.
        OutOfMemoryError: the device ran out of memory.
    """
    if not documents:
        raise ValueError("no documents to time: give at least one document")
    if batch_size <= 0 or max_new_tokens <= 0 or repeats <= 0 or num_beams <= 0:
        raise ValueError("batch size, max new tokens, beams and repeats must be positive")
    model.eval()
    device = _device_of(model)
    batches = [
        _encode(tokenizer, documents[start:start + batch_size], prefix=prefix,
                max_source_length=max_source_length, device=device)
        for start in range(0, len(documents), batch_size)
    ]
    kwargs = dict(max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, num_beams=num_beams)
    generated = 0
    with torch.inference_mode():
        _generate(model, batches[0], **kwargs)
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            for batch in batches:
                output = _generate(model, batch, **kwargs)
                # seq2seq outputs start with the decoder start token, which is not generated
                generated += output.shape[0] * (output.shape[1] - 1)
        _sync(device)
        elapsed = time.perf_counter() - start
    return {
        "ms_per_sample": 1000.0 * elapsed / (repeats * len(documents)),
        "tokens_per_s": generated / elapsed if elapsed > 0 else float("inf"),
        "batch_size": batch_size,
    }


def compute_validation_loss(model, tokenizer, documents: list[str], references: list[str], *,
                            prefix: str, max_source_length: int, max_target_length: int,
                            batch_size: int) -> float:
    """Teacher-forced cross-entropy in nats per target token, token-weighted over the whole set.

    Sources are ``prefix + document`` truncated to ``max_source_length`` tokens, targets are the
    references truncated to ``max_target_length`` tokens (with EOS); padded label positions are
    -100 and ignored. Sums ``cross_entropy(reduction="sum")`` over all batches and divides by the
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
    device = _device_of(model)
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(documents), batch_size):
            batch = _encode(tokenizer, documents[start:start + batch_size], prefix=prefix,
                            max_source_length=max_source_length, device=device)
            labels = tokenizer(text_target=references[start:start + batch_size],
                               max_length=max_target_length, truncation=True, padding=True,
                               return_tensors="pt")
            label_ids = labels["input_ids"].masked_fill(labels["attention_mask"] == 0, -100).to(device)
            label_ids = to_model_ids(model, label_ids)
            batch["input_ids"] = to_model_ids(model, batch["input_ids"])
            try:
                logits = model(**batch, labels=label_ids).logits
            except torch.OutOfMemoryError as exc:
                raise _oom_error("computing the validation loss") from exc
            total += torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), label_ids.reshape(-1),
                ignore_index=-100, reduction="sum",
            ).item()
            tokens += int((label_ids != -100).sum())
    return total / tokens


def evaluate_model(model, tokenizer, documents: list[str], references: list[str], *, prefix: str,
                   max_source_length: int, max_target_length: int, args: EvalArgs,
                   validation_loss: bool = True) -> dict:
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
      - ``predictions``: the generated summaries, in document order

    Raises:
        ValueError: documents and references differ in length, or are empty.
        OutOfMemoryError: the device ran out of memory.
    """
    if len(documents) != len(references):
        raise ValueError(f"{len(documents)} documents but {len(references)} references")
    predictions = generate_summaries(model, tokenizer, documents, prefix=prefix,
                                     max_source_length=max_source_length, args=args)
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
                                max_target_length=max_target_length, batch_size=args.batch_size)
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
    result["predictions"] = predictions
    return result


def score_model(model, tokenizer, documents: list[str], references: list[str], *, prefix: str,
                max_source_length: int, max_target_length: int, max_new_tokens: int,
                batch_size: int = 8) -> dict:
    """Quality and size of ``model`` on a few pairs, without timing: what a quick comparison needs.

    :func:`evaluate_model` with greedy decoding of at most ``max_new_tokens`` new tokens, batches
    of ``batch_size`` and no latency measurement, cut down to the headline numbers. Returns
    ``{"params": int (tied embeddings once), "size_mib": MiB on disk (safetensors), "rouge1",
    "rouge2", "rougeL": F1 in 0-100 (rouge_score, Porter stemmer), "validation_loss": nats per
    target token (:func:`compute_validation_loss`, references truncated to ``max_target_length``
    tokens)}``. Sources are ``prefix + document`` truncated to ``max_source_length`` tokens.

    Raises:
        ValueError: documents and references differ in length, or are empty.
        CompressionError: ``max_new_tokens`` or ``batch_size`` not positive.
        OutOfMemoryError: the device ran out of memory.
    """
    args = EvalArgs(max_new_tokens=max_new_tokens, num_beams=1, batch_size=batch_size, latency_samples=0)
    result = evaluate_model(model, tokenizer, documents, references, prefix=prefix,
                            max_source_length=max_source_length, max_target_length=max_target_length,
                            args=args)
    return {key: result[key] for key in ("params", "size_mib", "rouge1", "rouge2", "rougeL", "validation_loss")}


def paired_speedup(teacher, student, tokenizer, documents: list[str], *, prefix: str, max_source_length: int,
                   max_new_tokens: int = 32, samples: int = 2, repeats: int = 3) -> dict:
    """Generation speedup of ``student`` over ``teacher`` at batch 1, robust to a busy machine.

    Both models generate greedily exactly ``max_new_tokens`` new tokens for each of the first
    ``samples`` documents (:func:`measure_latency`: forced length, one untimed warm-up, CUDA
    synchronized), sources being ``prefix + document`` truncated to ``max_source_length`` tokens.
    Teacher and student are timed alternately ``repeats`` times, so load from other processes
    falls on both alike, and the medians are reported. Both models must use ``tokenizer``.

    Returns ``{"speedup": median over the repeats of teacher time / student time (×, > 1: the
    student is faster), "latency_ms": the student's median ms per summary, "teacher_latency_ms":
    the teacher's}``.

    Raises:
        ValueError: no documents, or ``max_new_tokens``, ``samples`` or ``repeats`` below 1.
        OutOfMemoryError: the device ran out of memory.
    """
    if samples < 1 or repeats < 1:
        raise ValueError(f"samples ({samples}) and repeats ({repeats}) must be at least 1")
    timed = documents[:samples]
    common = dict(prefix=prefix, max_source_length=max_source_length, max_new_tokens=max_new_tokens, batch_size=1)
    teacher_ms, student_ms = [], []
    for _ in range(repeats):
        teacher_ms.append(measure_latency(teacher, tokenizer, timed, **common)["ms_per_sample"])
        student_ms.append(measure_latency(student, tokenizer, timed, **common)["ms_per_sample"])
    return {"speedup": statistics.median(t / s for t, s in zip(teacher_ms, student_ms)),
            "latency_ms": statistics.median(student_ms), "teacher_latency_ms": statistics.median(teacher_ms)}


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def compare_table(metrics: dict[str, dict]) -> str:
    """A plain-text table, one row per model (e.g. ``base``, ``student``, ``quantized``).

    Columns: parameters, size (MiB), ROUGE-1/2/L F1 (0-100), the student's ROUGE-1/2/L as % of the
    base row's (:func:`percent_of_base`; the ``"base"`` row, else the first row), validation loss
    (nats/token) and latency (ms per document at batch 1). Missing values print as ``-``.
    """
    if not metrics:
        return "(no models evaluated)"
    base = metrics.get("base", next(iter(metrics.values())))
    header = ["model", "params", "size MiB", "R-1", "R-2", "R-L", "% base R-1/R-2/R-L",
              "val loss", "latency ms"]
    rows = [header]
    for name, row in metrics.items():
        pct = percent_of_base(row, base)
        rows.append([
            name,
            _fmt(row.get("params"), ","),
            _fmt(row.get("size_mib"), ".1f"),
            _fmt(_f1(row, "rouge1"), ".2f"),
            _fmt(_f1(row, "rouge2"), ".2f"),
            _fmt(_f1(row, "rougeL"), ".2f"),
            "/".join(_fmt(pct[m], ".1f") for m in ("rouge1", "rouge2", "rougeL")),
            _fmt(row.get("validation_loss"), ".4f"),
            _fmt(row.get("latency_ms"), ".1f"),
        ])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
