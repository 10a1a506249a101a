"""Summary-quality metrics: ROUGE-1/2/L/Lsum, bootstrap confidence intervals, % of the base.

Pure functions of strings and numbers (no torch, no model), shared by evaluation, the run table,
the dashboard and the benchmarks. ROUGE comes from Google's ``rouge_score`` package (the scorer used
by Hugging Face's summarization example, ``examples/pytorch/summarization/run_summarization.py``),
with the Porter stemmer; scores are percentages (0-100). Confidence intervals are
percentile-bootstrap intervals of the mean (Efron & Tibshirani 1993, ch. 13), the same resampling
``rouge_score.scoring.BootstrapAggregator`` does, but seeded so the numbers are reproducible.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import numpy as np

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# A sentence ends at ., ! or ? (optionally followed by a closing quote or bracket) and whitespace.
# Hugging Face's summarization example splits with nltk.sent_tokenize before rougeLsum; nltk's punkt
# model is a separate download these machines cannot make, so this plain rule stands in for it.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'\u201d\u2019)\]]*\s+")


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences at ``.``/``!``/``?`` followed by whitespace (regex, not nltk)."""
    return [part.strip() for part in _SENTENCE_END.split(text.strip()) if part.strip()]


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


def rouge_f1(metrics: dict, rouge_type: str) -> float | None:
    """The F1 of ``rouge_type`` in either result shape (``{"rouge1": 31.2}`` or
    ``{"rouge1": {"fmeasure": 31.2}}``), or ``None`` when missing."""
    value = metrics.get(rouge_type)
    if isinstance(value, dict):
        value = value.get("fmeasure")
    return None if value is None else float(value)


def percent_of_base(student: dict, base: dict) -> dict:
    """Each ROUGE F1 of ``student`` as a percentage of ``base``'s: ``{"rouge1": 93.1, ...}``.

    Accepts either :func:`compression.evaluate.evaluate_model` results (``{"rouge1": 31.2, ...}``) or :func:`rouge_scores`
    results (``{"rouge1": {"fmeasure": 31.2, ...}}``). A metric is ``None`` when the base's score is
    0 or missing (e.g. an untrained teacher offline) or the student's is missing: never a division
    by zero. The blog post's headline "ROUGE F1 kept at 92-94% of the original" is this number.
    """
    result = {}
    for rouge_type in ROUGE_TYPES:
        s, b = rouge_f1(student, rouge_type), rouge_f1(base, rouge_type)
        result[rouge_type] = None if s is None or not b else 100.0 * s / b
    return result


@dataclass
class Point:
    """One scored model on a quality/size/speed chart: the teacher, an assembled Modular
    Transformers student, or the student of a finished SFT/KD run.

    ``method``: ``"teacher"``, ``"modular (size-first)"``, ``"modular (speed-first)"``, ``"SFT"`` or
    ``"KD"``; ``label``: short text for the chart (``"3/2"``); ``encoder_layers``/``decoder_layers``;
    ``ratio``: teacher layers / student layers (×); ``params``: parameters; ``size_mib``: MiB on disk;
    ``rouge1``/``rouge2``/``rougeL``: F1 in 0-100; ``validation_loss``: nats per target token;
    ``latency_ms``/``teacher_latency_ms``: ms per summary at batch 1; ``speedup``: teacher time /
    student time (×); ``replaced``: names of the modules used; ``note``: hover text.
    """

    method: str
    label: str
    encoder_layers: int | None = None
    decoder_layers: int | None = None
    ratio: float | None = None
    params: int | None = None
    size_mib: float | None = None
    rouge1: float | None = None
    rouge2: float | None = None
    rougeL: float | None = None
    validation_loss: float | None = None
    latency_ms: float | None = None
    teacher_latency_ms: float | None = None
    speedup: float | None = None
    replaced: list[str] = field(default_factory=list)
    note: str | None = None

    def as_dict(self) -> dict:
        """The point as a plain dict (what charts, tables and JSON output read)."""
        return asdict(self)


#: ROUGE names as every table labels them: ROUGE-L is sentence-level (the longest common subsequence
#: of the whole texts, ``rouge_score``'s ``rougeL``); ROUGE-Lsum is summary-level (LCS over the
#: newline-split sentences, ``rougeLsum``, Lin 2004 section 3.2). Tables that split summaries into
#: sentences before scoring (Hugging Face's summarization examples, hence distilbart's numbers) report
#: ROUGE-Lsum; comparing one with the other is the mix-up of transformers issue #6808.
ROUGE_LABELS = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L (sentence)",
                "rougeLsum": "ROUGE-Lsum (summary-level)"}

#: Thresholds of :func:`output_health`'s ``degenerate`` flag (heuristics, see its docstring).
MAX_EMPTY_FRACTION = 0.5
MAX_REPETITION_RATE = 0.3
MIN_DISTINCT_2 = 0.2
#: distinct-2 is judged only over at least this many bigrams (a handful of outputs is always diverse).
MIN_BIGRAMS_FOR_DISTINCT = 20


def _words(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text.lower())


def output_health(predictions: list[str]) -> dict:
    """Degenerate-output flags of a model's generated summaries (no reference needed).

    - ``empty_fraction``: share of summaries that are empty or whitespace (0-1).
    - ``repetition_rate``: per summary, the share of its word tokens (words and punctuation,
      lower-cased) that repeat a token seen earlier in the same summary, averaged over non-empty
      summaries (0-1; "the the the the" is 0.75, a normal headline near 0).
    - ``distinct_2``: distinct word bigrams / all word bigrams over every summary together (0-1;
      Li et al. 2016, "A Diversity-Promoting Objective Function for Neural Conversation Models",
      section 4.3). A model writing the same text for every document scores 1 / (number of documents).
    - ``degenerate``: ``True`` when more than half the summaries are empty, the repetition rate is
      above 0.3, or distinct-2 is below 0.2 over at least 20 bigrams; ``reasons`` says which, in words.
      The thresholds are heuristics for flagging, not quality scores: ROUGE measures quality.

    An empty list gives zeros and ``degenerate=False``.
    """
    if not predictions:
        return {"empty_fraction": 0.0, "repetition_rate": 0.0, "distinct_2": None, "degenerate": False,
                "reasons": []}
    tokens = [_words(text) for text in predictions]
    empty = sum(1 for words in tokens if not words) / len(tokens)
    rates = [1.0 - len(set(words)) / len(words) for words in tokens if words]
    repetition = float(np.mean(rates)) if rates else 0.0
    bigrams = [pair for words in tokens for pair in zip(words, words[1:])]
    distinct = len(set(bigrams)) / len(bigrams) if bigrams else None
    reasons = []
    if empty > MAX_EMPTY_FRACTION:
        reasons.append(f"{100 * empty:.0f}% of the summaries are empty")
    if repetition > MAX_REPETITION_RATE:
        reasons.append(f"{100 * repetition:.0f}% of the words repeat within a summary")
    if distinct is not None and len(bigrams) >= MIN_BIGRAMS_FOR_DISTINCT and distinct < MIN_DISTINCT_2:
        reasons.append(f"distinct-2 is {distinct:.2f}: the summaries repeat the same phrases across documents")
    return {"empty_fraction": empty, "repetition_rate": repetition, "distinct_2": distinct,
            "degenerate": bool(reasons), "reasons": reasons}


def agreement(predictions: list[str], teacher_predictions: list[str]) -> dict:
    """ROUGE F1 (0-100) of a student's summaries against its teacher's summaries of the same documents.

    How closely the student reproduces what the teacher writes, beside how well either matches the
    references (the fidelity measure of sequence-level KD, Kim & Rush 2016, section 5). Returns
    ``{"rouge1", "rouge2", "rougeL", "rougeLsum", "identical"}``: the first four are means over the
    documents of :func:`rouge_scores`' per-document F1, except that identical summaries (after
    stripping; both empty included) count as 100 on every measure, even a one-word one that has no
    bigram for ROUGE-2; only one empty scores 0. ``identical`` is the share of the documents (%, 0-100)
    whose two summaries are identical after stripping: against the float32 student, how often a
    quantized or deployed copy writes exactly what the student writes.

    Raises:
        ValueError: the two lists differ in length, or are empty.
    """
    if len(predictions) != len(teacher_predictions):
        raise ValueError(f"{len(predictions)} student summaries but {len(teacher_predictions)} teacher summaries")
    if not predictions:
        raise ValueError("no summaries to compare: give at least one")
    same = [p.strip() == t.strip() for p, t in zip(predictions, teacher_predictions)]
    scored = [(p, t) for (p, t), identical in zip(zip(predictions, teacher_predictions), same) if not identical]
    per_sample = {rouge_type: [] for rouge_type in ROUGE_TYPES}
    if scored:
        samples = rouge_scores([p for p, _ in scored], [t for _, t in scored])["per_sample"]
        per_sample = {rouge_type: list(samples[rouge_type]) for rouge_type in ROUGE_TYPES}
    count = len(predictions)
    result = {rouge_type: (sum(per_sample[rouge_type]) + 100.0 * sum(same)) / count for rouge_type in ROUGE_TYPES}
    result["identical"] = 100.0 * sum(same) / count
    return result
