"""Evaluation throughput (issue section 7): seconds to generate and ROUGE-score validation samples.

* ``project``: ``compression.evaluate.generate_summaries`` (length-sorted batches of 16, the
  project's generation path) + ``compression.evaluate.rouge_scores``;
* ``naive``: one document at a time through plain ``model.generate`` (``transformers``), then the
  same ``rouge_scores``.

Model: T5-efficient-tiny shape with the T5 vocabulary, randomly initialised (seed 0), fp32, greedy,
at most 64 new tokens, sources truncated at 512 tokens with the ``"summarize: "`` prefix. An untrained
model practically never emits EOS, so every summary is 64 tokens long: the same work for both sides
(a trained model stops earlier, more so one document at a time). The two run alternately.
"""

from __future__ import annotations

import time

import torch

from . import common

NAME = "evaluation"
PREFIX, SOURCE_LENGTH, NEW_TOKENS, BATCH_SIZE = "summarize: ", 512, 64, 16


def _naive(model, tokenizer, documents: list[str]) -> list[str]:
    outputs = []
    with torch.inference_mode():
        for document in documents:
            batch = tokenizer(PREFIX + document, max_length=SOURCE_LENGTH, truncation=True, return_tensors="pt")
            ids = model.generate(**batch, do_sample=False, num_beams=1, max_new_tokens=NEW_TOKENS)
            outputs.append(tokenizer.decode(ids[0], skip_special_tokens=True).strip())
    return outputs


def run(quick: bool) -> dict:
    """Time both ways on 100 validation pairs (quick: 24 pairs, 1 round; full: 100 pairs, 3 rounds),
    print the table, write ``results/evaluation.json`` and return the payload."""
    from compression.config import EvalArgs
    from compression.evaluate import generate_summaries, rouge_scores

    n, repeats = (24, 1) if quick else (100, 3)
    pairs = common.xsum_pairs("validation", n)
    documents = [p["document"] for p in pairs]
    references = [p["summary"] for p in pairs]
    model, tokenizer = common.tiny_teacher()
    model.eval()
    eval_args = EvalArgs(batch_size=BATCH_SIZE, max_new_tokens=NEW_TOKENS, num_beams=1)
    seconds: dict[str, list[float]] = {"project_generate": [], "project_rouge": [], "naive_generate": [],
                                       "naive_rouge": []}
    scores = {}

    def project() -> float:
        start = time.perf_counter()
        predictions = generate_summaries(model, tokenizer, documents, prefix=PREFIX,
                                         max_source_length=SOURCE_LENGTH, args=eval_args)
        middle = time.perf_counter()
        scores["project"] = rouge_scores(predictions, references)
        end = time.perf_counter()
        seconds["project_generate"].append(middle - start)
        seconds["project_rouge"].append(end - middle)
        return end - start

    def naive() -> float:
        start = time.perf_counter()
        predictions = _naive(model, tokenizer, documents)
        middle = time.perf_counter()
        scores["naive"] = rouge_scores(predictions, references)
        end = time.perf_counter()
        seconds["naive_generate"].append(middle - start)
        seconds["naive_rouge"].append(end - middle)
        return end - start

    warm = generate_summaries(model, tokenizer, documents[:2], prefix=PREFIX, max_source_length=SOURCE_LENGTH,
                              args=eval_args)
    rouge_scores(warm, references[:2])  # warm-up: first calls import and build the scorer, stemmer
    timing = common.alternate(naive, project, repeats)  # ratio = naive / project = speedup
    rows = []
    for name, total in (("naive", timing["a"]), ("project", timing["b"])):
        generate, rouge = seconds[f"{name}_generate"], seconds[f"{name}_rouge"]
        rows.append({
            "variant": name,
            "samples": n,
            "seconds": common.median(total),
            "generate_s": common.median(generate),
            "rouge_s": common.median(rouge),
            "seconds_per_100": common.median(total) * 100 / n,
            "rouge1": scores[name]["rouge1"]["fmeasure"],
        })
    payload = {
        "quick": quick,
        "settings": {"samples": n, "rounds": repeats, "batch_size": BATCH_SIZE, "max_new_tokens": NEW_TOKENS,
                     "max_source_length": SOURCE_LENGTH, "decoding": "greedy",
                     "model": "T5-efficient-tiny shape, random init (seed 0), T5 vocabulary, fp32"},
        "rows": rows,
        "speedup": {key: timing[key] for key in ("ratio_median", "ratio_min", "ratio_max")},
        "timing": timing,
    }
    print(table(payload))
    common.write_result(NAME, payload)
    return payload


def table(payload: dict) -> str:
    """The printed table: both ways, medians, and the speedup of the project's way."""
    s = payload["speedup"]
    return "\n".join([
        f"Evaluation throughput ({payload['settings']['samples']} validation samples, greedy "
        f"{payload['settings']['max_new_tokens']} new tokens; medians of {payload['settings']['rounds']} round(s))",
        common.format_table(payload["rows"], ["variant", "samples", "seconds", "generate_s", "rouge_s",
                                              "seconds_per_100", "rouge1"]),
        f"batched + length-sorted is {s['ratio_median']:.2f}x faster than one-by-one "
        f"({s['ratio_min']:.2f}-{s['ratio_max']:.2f})",
    ])


def headline(payload: dict) -> list[dict]:
    """Summary row: seconds per 100 samples, project vs naive."""
    rows = {row["variant"]: row for row in payload["rows"]}
    s = payload["speedup"]
    return [{
        "benchmark": "Evaluation (generate + ROUGE)",
        "measure": "s per 100 validation samples",
        "result": f"{rows['project']['seconds_per_100']:.1f} s (batched, length-sorted)",
        "baseline": f"{rows['naive']['seconds_per_100']:.1f} s (one by one, model.generate)",
        "ratio": f"{s['ratio_median']:.2f}x ({s['ratio_min']:.2f}-{s['ratio_max']:.2f})",
    }]
