"""Sequence-level knowledge distillation: the teacher's own summaries become the student's targets.

Kim & Rush 2016, "Sequence-Level Knowledge Distillation" (section 3.2): instead of matching the
teacher's per-token distributions (word-level KD, :mod:`compression.distill`), train the student
with ordinary cross-entropy on the teacher's beam/greedy outputs for the training inputs. Shleifer &
Rush 2020 ("Pre-trained Summarization Distillation", section 3) call this *pseudo-labels* (PL) and
compare it with SFT and KD for distilbart; the recipe is transformers'
``examples/research_projects/seq2seq-distillation/precomputed_pseudo_labels.md``: generate once for
the whole training set, optionally keep only pseudo-labels close enough to the reference (they
filter by ROUGE), optionally train on the references and the pseudo-labels together.

Generating for every training document is the expensive part (one teacher decode per pair), so
:func:`pseudo_labels` caches the result as a JSONL file keyed by the teacher's weights, the
documents and the generation settings: a second student of the same teacher on the same data reuses
it without generating anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import datasets
import torch

from . import evaluate
from .config import EvalArgs, PseudoArgs
from .data import DOCUMENT, SUMMARY
from .errors import DatasetError
from .files import atomic_write_text
from .metrics import rouge_scores

logger = logging.getLogger(__name__)

#: Cache file format version: bump it when the file's meaning changes, so old files are not reused.
CACHE_VERSION = 1


def teacher_fingerprint(model) -> str:
    """SHA-256 (hex) of the model's config and every parameter and buffer (names, dtypes, shapes,
    bytes): the same weights give the same fingerprint wherever they were loaded from. Tied weights
    count once."""
    digest = hashlib.sha256()
    digest.update(model.config.to_json_string(use_diff=False).encode())
    seen: set[int] = set()
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def cache_key(teacher_hash: str, documents: list[str], *, prefix: str, max_source_length: int,
              max_new_tokens: int, num_beams: int) -> str:
    """The cache file's name (hex): teacher fingerprint + documents + source truncation + decoding."""
    digest = hashlib.sha256()
    settings = {"version": CACHE_VERSION, "teacher": teacher_hash, "prefix": prefix,
                "max_source_length": max_source_length, "max_new_tokens": max_new_tokens, "num_beams": num_beams}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for document in documents:
        digest.update(document.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def pseudo_labels(teacher, tokenizer, documents: list[str], *, prefix: str, max_source_length: int,
                  max_new_tokens: int, num_beams: int = 1, batch_size: int = 16,
                  cache_dir: str | Path | None = None) -> tuple[list[str], dict]:
    """The teacher's summary of each document (greedy for ``num_beams=1``, else beam search), cached.

    Generation is :func:`compression.evaluate.generate_summaries` (sources ``prefix + document``
    truncated to ``max_source_length`` tokens, at most ``max_new_tokens`` new tokens, batches of
    ``batch_size``): the text ``teacher.generate`` returns, decoded without special tokens. With
    ``cache_dir`` the labels are read from ``cache_dir/<key>.jsonl`` when present (no generation at
    all) and written there atomically otherwise; the key is :func:`cache_key` of
    :func:`teacher_fingerprint`, the documents and the settings.

    Returns:
        ``(labels, info)``: one string per document, in order; ``info`` = ``{"cache_file": path or
        None, "cached": whether they were read from the cache, "generated": number of documents
        generated now}``.

    Raises:
        OutOfMemoryError: the device ran out of memory while generating.
    """
    path = None
    if cache_dir is not None:
        key = cache_key(teacher_fingerprint(teacher), documents, prefix=prefix, max_source_length=max_source_length,
                        max_new_tokens=max_new_tokens, num_beams=num_beams)
        path = Path(cache_dir) / f"{key}.jsonl"
        cached = _read_cache(path, len(documents))
        if cached is not None:
            logger.info("pseudo-labels: reusing %s", path)
            return cached, {"cache_file": str(path), "cached": True, "generated": 0}
    args = EvalArgs(max_new_tokens=max_new_tokens, num_beams=num_beams, batch_size=batch_size)
    labels = evaluate.generate_summaries(teacher, tokenizer, documents, prefix=prefix,
                                         max_source_length=max_source_length, args=args)
    if path is not None:
        atomic_write_text(path, "".join(json.dumps({"summary": label}) + "\n" for label in labels))
    return labels, {"cache_file": str(path) if path else None, "cached": False, "generated": len(documents)}


def _read_cache(path: Path, expected: int) -> list[str] | None:
    if not path.is_file():
        return None
    try:
        labels = [json.loads(line)["summary"] for line in path.read_text(encoding="utf-8").splitlines() if line]
    except (OSError, ValueError, KeyError, TypeError):
        logger.warning("pseudo-label cache %s is unreadable: generating again", path)
        return None
    return labels if len(labels) == expected else None


def pseudo_label_pairs(pairs: datasets.Dataset, labels: list[str], args: PseudoArgs) -> tuple[datasets.Dataset, dict]:
    """The training pairs for the student: each document with its pseudo-label as the summary.

    Empty pseudo-labels are dropped. With ``args.pseudo_min_rouge`` set, so are pseudo-labels whose ROUGE-L
    F1 (sentence-level LCS, 0-100) against the pair's reference is below it (the distilbart recipe's
    filter). With ``args.pseudo_mix_references`` the original reference pairs are added too (documents then
    appear twice, once per target).

    Returns:
        ``(dataset with document/summary columns, {"pseudo": kept pseudo pairs, "dropped_empty",
        "dropped_rouge", "references": reference pairs added})``.

    Raises:
        DatasetError: ``labels`` and ``pairs`` differ in length, or nothing is left to train on.
    """
    if len(labels) != len(pairs):
        raise DatasetError(f"{len(labels)} pseudo-labels for {len(pairs)} pairs: generate one per training pair")
    documents, references = list(pairs[DOCUMENT]), list(pairs[SUMMARY])
    keep = [bool(label.strip()) for label in labels]
    dropped_empty = keep.count(False)
    dropped_rouge = 0
    if args.pseudo_min_rouge is not None and any(keep):
        scored = [i for i, k in enumerate(keep) if k]
        per_sample = rouge_scores([labels[i] for i in scored], [references[i] for i in scored])["per_sample"]["rougeL"]
        for i, score in zip(scored, per_sample):
            if score < args.pseudo_min_rouge:
                keep[i] = False
                dropped_rouge += 1
    rows = {DOCUMENT: [d for d, k in zip(documents, keep) if k], SUMMARY: [s for s, k in zip(labels, keep) if k]}
    kept = len(rows[DOCUMENT])
    if args.pseudo_mix_references:
        rows[DOCUMENT] += documents
        rows[SUMMARY] += references
    if not rows[DOCUMENT]:
        raise DatasetError("no pseudo-labels left to train on (all empty or below the ROUGE filter): lower "
                           "the minimum ROUGE, mix in the references, or use a teacher that writes summaries")
    info = {"pseudo": kept, "dropped_empty": dropped_empty, "dropped_rouge": dropped_rouge,
            "references": len(documents) if args.pseudo_mix_references else 0}
    return datasets.Dataset.from_dict(rows), info
