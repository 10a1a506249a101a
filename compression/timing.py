"""Generation speed: forced-length latency and paired teacher/student speedups (wall clock).

Kept apart from quality (:mod:`compression.metrics`) and evaluation (:mod:`compression.evaluate`):
timing depends on the machine and its load, so every figure here is measured by alternating or
warming up as described per function, and is never asserted on by tests.
"""

from __future__ import annotations

import statistics
import time

import torch

from .generation import encode_sources, generate_batch, model_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(model, tokenizer, documents: list[str], *, prefix: str, max_source_length: int,
                    max_new_tokens: int, batch_size: int, num_beams: int = 1, repeats: int = 1) -> dict:
    """Wall-clock generation speed on ``documents``.

    Generation is forced to exactly ``max_new_tokens`` new tokens per document
    (``min_new_tokens = max_new_tokens``) so models of different depth or quality are timed on the
    same amount of work. One warm-up batch runs first (untimed); then ``repeats`` passes over all
    documents in batches of ``batch_size`` are timed with ``time.perf_counter`` (CUDA synchronized).
    Generation goes through :func:`compression.generation.generate` (the fast greedy loop; beam
    search via ``model.generate``), as :func:`compression.evaluate.generate_summaries` does.

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
    device = model_device(model)
    batches = [
        encode_sources(tokenizer, documents[start:start + batch_size], prefix=prefix,
                max_source_length=max_source_length, device=device)
        for start in range(0, len(documents), batch_size)
    ]
    kwargs = dict(max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, num_beams=num_beams)
    generated = 0
    with torch.inference_mode():
        generate_batch(model, batches[0], **kwargs)
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            for batch in batches:
                output = generate_batch(model, batch, **kwargs)
                # seq2seq outputs start with the decoder start token, which is not generated
                generated += output.shape[0] * (output.shape[1] - 1)
        _sync(device)
        elapsed = time.perf_counter() - start
    return {
        "ms_per_sample": 1000.0 * elapsed / (repeats * len(documents)),
        "tokens_per_s": generated / elapsed if elapsed > 0 else float("inf"),
        "batch_size": batch_size,
    }


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
