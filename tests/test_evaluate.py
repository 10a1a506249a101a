"""compression.evaluate, .metrics, .timing and .table: ROUGE, bootstrap, % of base, generation order,
evaluate_model, sizes, latency, the CLI table."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rouge_score import rouge_scorer

from compression.arch import count_parameters
from compression.config import EvalArgs
from compression.evaluate import (
    compute_validation_loss,
    evaluate_model,
    generate_summaries,
    memory_footprint_mib,
    score_model,
    size_on_disk_mib,
    token_batches,
)
from compression.metrics import ROUGE_TYPES, bootstrap_ci, percent_of_base, rouge_scores, split_sentences
from compression.table import compare_table
from compression.timing import measure_latency, paired_speedup
from conftest import ARTICLES, tiny_t5_config

DOCS = [a for a, _ in ARTICLES]
REFS = [s for _, s in ARTICLES]
PREFIX = "summarize: "


def letters_t5():
    """A tiny random T5 whose output layer can only pick the letters a-z (ByT5 ids), so greedy
    summaries are visible, varied strings rather than undecodable bytes."""
    from transformers import T5ForConditionalGeneration

    torch.manual_seed(0)
    model = T5ForConditionalGeneration(
        tiny_t5_config(tie_word_embeddings=False, initializer_factor=20.0)).eval()
    keep = torch.zeros(384, dtype=torch.bool)
    keep[[ord(c) + 3 for c in "abcdefghijklmnopqrstuvwxyz"]] = True
    with torch.no_grad():
        model.lm_head.weight[~keep] = 0
        model.lm_head.weight[keep] *= 10
    return model


# ---- ROUGE -------------------------------------------------------------------------------------

def test_rouge_matches_rouge_score_times_100():
    preds = ["the cat sat on the mat", "police arrested two men", "a new frog species was found"]
    refs = ["a cat was sitting on the mat", "two men were arrested by police", "new species of frog found"]
    result = rouge_scores(preds, refs)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    own = [scorer.score(r, p) for p, r in zip(preds, refs)]
    for rouge_type in ROUGE_TYPES:
        expected = [100.0 * s[rouge_type].fmeasure for s in own]
        assert result["per_sample"][rouge_type] == expected
        assert result[rouge_type]["fmeasure"] == float(np.mean(expected))
        for field in ("precision", "recall"):
            expected = [100.0 * getattr(s[rouge_type], field) for s in own]
            assert result[rouge_type][field] == float(np.mean(expected))
    assert 0 < result["rouge1"]["fmeasure"] < 100


def test_rouge_lsum_splits_sentences_with_newlines():
    pred = "The council met. It approved the budget! Then it closed."
    ref = "It approved the budget. The council met on Monday."
    scorer = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=True)
    joined = scorer.score("It approved the budget.\nThe council met on Monday.",
                          "The council met.\nIt approved the budget!\nThen it closed.")["rougeLsum"]
    assert rouge_scores([pred], [ref])["rougeLsum"]["fmeasure"] == 100.0 * joined.fmeasure
    assert split_sentences(pred) == ["The council met.", "It approved the budget!", "Then it closed."]


def test_identical_texts_score_100_and_empty_prediction_scores_0():
    same = rouge_scores(["floods close roads and schools."], ["floods close roads and schools."])
    for rouge_type in ROUGE_TYPES:
        assert same[rouge_type] == {"precision": 100.0, "recall": 100.0, "fmeasure": 100.0}
    empty = rouge_scores(["", "club signs young striker"], ["council approves budget", ""])
    for rouge_type in ROUGE_TYPES:
        assert empty["per_sample"][rouge_type] == [0.0, 0.0]


def test_rouge_rejects_mismatched_or_empty_lists():
    with pytest.raises(ValueError, match="references"):
        rouge_scores(["a", "b"], ["a"])
    with pytest.raises(ValueError):
        rouge_scores([], [])


# ---- bootstrap and % of base -------------------------------------------------------------------

def test_bootstrap_is_seeded_and_brackets_the_mean():
    scores = [12.0, 40.0, 33.3, 0.0, 25.0, 51.2, 18.0, 30.0]
    first = bootstrap_ci(scores, samples=500, seed=3)
    assert first == bootstrap_ci(scores, samples=500, seed=3)
    assert first != bootstrap_ci(scores, samples=500, seed=4)
    low, high = first
    assert low <= float(np.mean(scores)) <= high
    narrow = bootstrap_ci(scores, samples=500, confidence=0.5, seed=3)
    assert low <= narrow[0] <= narrow[1] <= high
    assert bootstrap_ci([7.0, 7.0, 7.0], samples=50) == (7.0, 7.0)
    with pytest.raises(ValueError):
        bootstrap_ci([], samples=10)


def test_percent_of_base_handles_zero_base_and_both_shapes():
    base = {"rouge1": 40.0, "rouge2": 0.0, "rougeL": 30.0}
    student = {"rouge1": 37.0, "rouge2": 5.0, "rougeL": 28.2, "rougeLsum": 20.0}
    kept = percent_of_base(student, base)
    assert kept["rouge1"] == pytest.approx(92.5)
    assert kept["rougeL"] == pytest.approx(94.0)
    assert kept["rouge2"] is None and kept["rougeLsum"] is None
    nested = percent_of_base({"rouge1": {"fmeasure": 10.0}}, {"rouge1": {"fmeasure": 20.0}})
    assert nested["rouge1"] == 50.0


# ---- parameters, size, memory ------------------------------------------------------------------

def test_count_parameters_counts_tied_embeddings_once(tiny_t5):
    by_storage = {}
    for tensor in tiny_t5.state_dict().values():
        by_storage[tensor.data_ptr()] = tensor.numel()
    assert tiny_t5.shared.weight is tiny_t5.lm_head.weight
    assert count_parameters(tiny_t5) == sum(by_storage.values())
    assert count_parameters(tiny_t5) < sum(t.numel() for t in tiny_t5.state_dict().values())


def test_size_and_memory_in_mib(tiny_t5):
    params = count_parameters(tiny_t5)
    size = size_on_disk_mib(tiny_t5)
    assert params * 4 / 2**20 < size < params * 4 / 2**20 + 0.05  # fp32 weights + small json files
    assert memory_footprint_mib(tiny_t5) == tiny_t5.get_memory_footprint() / 2**20


# ---- generation --------------------------------------------------------------------------------

def test_generate_summaries_keeps_input_order(byt5_tokenizer):
    model = letters_t5()
    docs = [DOCS[0], "Short one.", DOCS[3] + " " + DOCS[4], DOCS[6], "Tiny.", DOCS[1]]
    args = EvalArgs(max_new_tokens=8, batch_size=4)
    batched = generate_summaries(model, byt5_tokenizer, docs, prefix=PREFIX, max_source_length=96, args=args)
    one_by_one = []
    for doc in docs:
        ids = byt5_tokenizer([PREFIX + doc], max_length=96, truncation=True, return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=8, do_sample=False, num_beams=1)
        one_by_one.append(byt5_tokenizer.decode(out[0], skip_special_tokens=True).strip())
    assert batched == one_by_one
    assert len(set(batched)) > 2  # varied, non-trivial strings
    assert generate_summaries(model, byt5_tokenizer, [], prefix=PREFIX, max_source_length=96, args=args) == []


def test_generate_summaries_with_beams(byt5_tokenizer):
    model = letters_t5()
    out = generate_summaries(model, byt5_tokenizer, DOCS[:3], prefix=PREFIX, max_source_length=64,
                             args=EvalArgs(max_new_tokens=5, num_beams=2, batch_size=2))
    assert len(out) == 3 and all(isinstance(s, str) and 0 < len(s) <= 5 for s in out)


def test_measure_latency_reports_units(tiny_t5, byt5_tokenizer):
    result = measure_latency(tiny_t5, byt5_tokenizer, DOCS[:3], prefix=PREFIX, max_source_length=32,
                             max_new_tokens=3, batch_size=2)
    assert set(result) == {"ms_per_sample", "tokens_per_s", "batch_size"}
    assert result["batch_size"] == 2
    assert result["ms_per_sample"] > 0 and result["tokens_per_s"] > 0
    with pytest.raises(ValueError):
        measure_latency(tiny_t5, byt5_tokenizer, [], prefix=PREFIX, max_source_length=32,
                        max_new_tokens=3, batch_size=2)


# ---- evaluate_model ----------------------------------------------------------------------------

def hand_validation_loss(model, tokenizer, docs, refs, max_source_length, max_target_length):
    """Per pair, unbatched: mean loss from the model times its number of target tokens."""
    total, count = 0.0, 0
    with torch.no_grad():
        for doc, ref in zip(docs, refs):
            source = tokenizer([PREFIX + doc], max_length=max_source_length, truncation=True,
                               return_tensors="pt")
            labels = tokenizer(text_target=[ref], max_length=max_target_length, truncation=True,
                               return_tensors="pt")["input_ids"]
            loss = model(**source, labels=labels).loss.item()
            total += loss * labels.shape[1]
            count += labels.shape[1]
    return total / count


def test_evaluate_model_keys_and_validation_loss(tiny_t5, byt5_tokenizer):
    docs, refs = DOCS[:5], REFS[:5]
    args = EvalArgs(max_new_tokens=4, batch_size=2, bootstrap_samples=50, latency_samples=2)
    result = evaluate_model(tiny_t5, byt5_tokenizer, docs, refs, prefix=PREFIX, max_source_length=48,
                            max_target_length=12, args=args)
    assert set(result) == {"params", "size_mib", "rouge1", "rouge2", "rougeL", "rougeLsum", "rouge",
                           "rouge_ci", "validation_loss", "latency_ms", "latency_ms_batched",
                           "tokens_per_s", "output_health", "predictions"}
    assert result["params"] == count_parameters(tiny_t5)
    assert len(result["predictions"]) == 5
    scored = rouge_scores(result["predictions"], refs)
    for rouge_type in ROUGE_TYPES:
        assert result[rouge_type] == scored[rouge_type]["fmeasure"]
        low, high = result["rouge_ci"][rouge_type]
        assert low <= result[rouge_type] <= high
    assert "per_sample" not in result["rouge"]
    expected = hand_validation_loss(tiny_t5, byt5_tokenizer, docs, refs, 48, 12)
    assert result["validation_loss"] == pytest.approx(expected, rel=1e-5)
    assert result["latency_ms"] > 0 and result["latency_ms_batched"] > 0 and result["tokens_per_s"] > 0


def test_evaluate_model_can_skip_loss_and_latency(tiny_t5, byt5_tokenizer):
    args = EvalArgs(max_new_tokens=2, batch_size=2, bootstrap_samples=10, latency_samples=0)
    result = evaluate_model(tiny_t5, byt5_tokenizer, DOCS[:2], REFS[:2], prefix=PREFIX,
                            max_source_length=32, max_target_length=8, args=args, validation_loss=False)
    assert result["validation_loss"] is None
    assert result["latency_ms"] is None and result["tokens_per_s"] is None



# ---- score_model and paired_speedup ------------------------------------------------------------

def test_score_model_is_the_headline_of_evaluate_model(tiny_t5, byt5_tokenizer):
    docs, refs = DOCS[:3], REFS[:3]
    lengths = dict(prefix=PREFIX, max_source_length=48, max_target_length=12)
    result = score_model(tiny_t5, byt5_tokenizer, docs, refs, max_new_tokens=4, batch_size=2, **lengths)
    assert set(result) == {"params", "size_mib", "rouge1", "rouge2", "rougeL", "validation_loss"}
    assert result["params"] == count_parameters(tiny_t5) and result["size_mib"] > 0
    predictions = generate_summaries(tiny_t5, byt5_tokenizer, docs, prefix=PREFIX, max_source_length=48,
                                     args=EvalArgs(max_new_tokens=4, batch_size=2))
    scored = rouge_scores(predictions, refs)
    for rouge_type in ("rouge1", "rouge2", "rougeL"):
        assert 0 <= result[rouge_type] <= 100 and result[rouge_type] == scored[rouge_type]["fmeasure"]
    assert result["validation_loss"] == compute_validation_loss(tiny_t5, byt5_tokenizer, docs, refs,
                                                                batch_size=2, **lengths)
    with pytest.raises(ValueError, match="references"):
        score_model(tiny_t5, byt5_tokenizer, docs, refs[:2], max_new_tokens=4, **lengths)


def test_paired_speedup_reports_both_latencies(tiny_t5, byt5_tokenizer):
    common = dict(prefix=PREFIX, max_source_length=32, max_new_tokens=2)
    result = paired_speedup(tiny_t5, tiny_t5, byt5_tokenizer, DOCS[:3], samples=1, repeats=2, **common)
    assert set(result) == {"speedup", "latency_ms", "teacher_latency_ms"}
    assert result["speedup"] > 0 and result["latency_ms"] > 0 and result["teacher_latency_ms"] > 0
    with pytest.raises(ValueError, match="repeats"):
        paired_speedup(tiny_t5, tiny_t5, byt5_tokenizer, DOCS[:1], repeats=0, **common)
    with pytest.raises(ValueError, match="no documents"):
        paired_speedup(tiny_t5, tiny_t5, byt5_tokenizer, [], **common)


def test_validation_loss_is_token_weighted_across_batch_sizes(tiny_t5, byt5_tokenizer):
    kwargs = dict(prefix=PREFIX, max_source_length=40, max_target_length=20)
    one = compute_validation_loss(tiny_t5, byt5_tokenizer, DOCS[:4], REFS[:4], batch_size=1, **kwargs)
    four = compute_validation_loss(tiny_t5, byt5_tokenizer, DOCS[:4], REFS[:4], batch_size=4, **kwargs)
    assert one == pytest.approx(four, rel=1e-5)


def test_token_batches_never_exceed_their_budget_and_run_a_long_pair_alone():
    lengths = [int(n) for n in np.random.default_rng(0).integers(1, 700, size=60)] + [5000, 900]
    for budget, max_pairs in ((512, None), (1024, 4), (2048, 16), (100000, 8)):
        batches = token_batches(lengths, budget, max_pairs)
        assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
        for batch in batches:
            padded = len(batch) * max(lengths[i] for i in batch)
            assert padded <= budget or len(batch) == 1
            assert max_pairs is None or len(batch) <= max_pairs
    assert [61] in token_batches(lengths, 512) and [60] in token_batches(lengths, 512)  # over budget: alone
    assert token_batches([512] * 32, 8192, 16) == [list(range(16)), list(range(16, 32))]  # the old pair batches
    assert token_batches([], 10) == []
    with pytest.raises(ValueError):
        token_batches([3], 0)


def test_generation_and_validation_loss_batch_by_source_tokens(tiny_t5, byt5_tokenizer, monkeypatch):
    import compression.evaluate as evaluate

    shapes = []
    original = evaluate.encode_sources

    def recording(*args, **kwargs):
        batch = original(*args, **kwargs)
        shapes.append(tuple(batch["input_ids"].shape))
        return batch

    monkeypatch.setattr(evaluate, "encode_sources", recording)
    docs, refs = DOCS + ["Tiny."], REFS + ["Tiny."]
    kwargs = dict(prefix=PREFIX, max_source_length=96, max_target_length=20)
    budget = 200  # the longest source (96 tokens) fits twice; "Tiny." far more often
    bounded = generate_summaries(tiny_t5, byt5_tokenizer, docs, prefix=PREFIX, max_source_length=96,
                                 args=EvalArgs(max_new_tokens=4, batch_size=16, batch_tokens=budget))
    loss = compute_validation_loss(tiny_t5, byt5_tokenizer, docs, refs, batch_size=16, batch_tokens=budget, **kwargs)
    assert len(shapes) > 2 and all(rows * columns <= budget for rows, columns in shapes)
    shapes.clear()
    single = generate_summaries(tiny_t5, byt5_tokenizer, docs, prefix=PREFIX, max_source_length=96,
                                args=EvalArgs(max_new_tokens=4, batch_size=16, batch_tokens=50))
    assert all(rows == 1 for rows, _ in shapes) and single == bounded  # over the budget: one pair a batch
    whole = compute_validation_loss(tiny_t5, byt5_tokenizer, docs, refs, batch_size=16, **kwargs)
    assert loss == pytest.approx(whole, rel=1e-5)


# ---- table -------------------------------------------------------------------------------------

def test_compare_table_rows_and_percentages():
    base = {"params": 60_000_000, "size_mib": 230.0, "rouge1": 40.0, "rouge2": 20.0, "rougeL": 30.0,
            "validation_loss": 1.5, "latency_ms": 80.0}
    student = dict(base, params=30_000_000, rouge1=37.0, rouge2=18.0, rougeL=28.2, latency_ms=45.0)
    table = compare_table({"base": base, "student": student, "quantized": {"rouge1": 36.0}})
    lines = table.splitlines()
    assert lines[0].split()[0] == "model" and len(lines) == 5
    assert "100.0/100.0/100.0" in lines[2]
    assert "92.5/90.0/94.0" in lines[3] and "30,000,000" in lines[3]
    assert lines[4].startswith("quantized") and "90.0/-/-" in lines[4]
