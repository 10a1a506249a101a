"""Generation speed of a base model against its SFT students, and of the fast decoding path.

``python -m benchmarks.generation [--quick]``; part of ``python -m benchmarks``.

Shapes (random weights are enough: the output length is fixed, ``min_new_tokens = max_new_tokens``):

* the t5-small shape (:data:`compression.load.PRESETS` ``"small"``: 6/6 layers, d_model 512, the
  real 32,128-piece T5 vocabulary) and its students 6/3, 3/3, 6/1;
* full mode only: a 12/12 shape (preset ``"base"``, d_model 768) and its students 12/3, 12/6, 6/6 -
  the shapes of the distilbart table (Shleifer & Rush 2020, table 2) - without the beam-4 x
  batch-16 setting, which alone takes most of an hour on 2 cores: measure it on its own with
  ``--family t5-base --setting 4x16`` (written to ``generation-t5-base-beam4-batch16.json``). Full
  mode is long on a small CPU (an hour or more on 2 cores); ``--quick`` takes a few minutes.

Students are made by :func:`compression.layers.shrink` (``spread`` layers). Inputs are real XSum
validation articles (``"summarize: "`` + document, at most 512 tokens). Each model generates with
:func:`compression.generation.generate` (the fast greedy loop; beam search via ``generate``):
greedy and 4 beams, batch 1 and batch 16 (quick mode: greedy, batch 1 and 8, 24 new tokens, t5-small family).

Reported per setting: ms per sample (wall clock), CPU ms per sample (process time: on a shared
machine the CPU time a call used is far steadier than its wall time), generated tokens/s, the
base's ms per sample in the same alternated run, and the speedup over the base - the median (min-max) of per-pair ratios, base and student timed alternately
(:func:`benchmarks.common.alternate`). Two more tables explain the numbers:

* **fast path vs ``model.generate``**: the same model, both ways, alternately;
* **where a decoder step goes**: the vocabulary projection (``lm_head``, a 32,128 x d_model GEMV at
  batch 1) against the whole step. Halving the layers cannot halve a step whose largest single
  matmul is the vocabulary projection; the ``3/3 + pruned vocab`` row shows a student whose
  vocabulary was pruned to the ids XSum uses (:mod:`compression.vocab`), timed against the base
  and against the base pruned the same way (``6/6 + pruned vocab``, column ``vs``): the second
  ratio is what the layer cut alone is worth once the projection no longer dominates a step.

Timing uses one intra-op thread (``torch.set_num_threads(1)``, restored afterwards): on a shared
2-core machine, two OpenMP threads stall at every barrier whenever the other core is busy
(measured here: 197 ms vs 45 ms per token for the same model).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks import common

NAME = "generation"
TARGET_SPEEDUP = 1.7  # the target for halving the decoder, greedy, batch 1, t5-small shape

FAMILIES = {
    "t5-small": ("small", [("6/3", None, 3), ("3/3", 3, 3), ("6/1", None, 1)]),
    "t5-base": ("base", [("12/3", None, 3), ("12/6", None, 6), ("6/6", 6, 6)]),
}


class _Timer:
    """A callable for :func:`common.alternate` that also records the process CPU time of each call."""

    def __init__(self, fn):
        self.fn, self.cpu = fn, []

    def __call__(self) -> float:
        wall, cpu = time.perf_counter(), time.process_time()
        self.fn()
        self.cpu.append(time.process_time() - cpu)
        return time.perf_counter() - wall


def _pair(a, b, repeats: int) -> dict:
    """Alternate ``a`` and ``b``; wall-clock stats from :func:`common.alternate` plus CPU-time ones."""
    ta, tb = _Timer(a), _Timer(b)
    ta(), tb()  # warm-up, untimed
    ta.cpu.clear(), tb.cpu.clear()
    result = common.alternate(ta, tb, repeats)
    ratios = [x / y for x, y in zip(ta.cpu, tb.cpu) if y > 0]
    result.update(a_cpu_median=statistics.median(ta.cpu), b_cpu_median=statistics.median(tb.cpu),
                  cpu_ratio_median=statistics.median(ratios), cpu_ratio_min=min(ratios),
                  cpu_ratio_max=max(ratios))
    return result


def _batches(tokenizer, documents: list[str], batch_size: int, max_source_length: int) -> list[dict]:
    out = []
    for start in range(0, len(documents), batch_size):
        enc = tokenizer(["summarize: " + d for d in documents[start:start + batch_size]],
                        max_length=max_source_length, truncation=True, padding=True, return_tensors="pt")
        out.append(dict(enc))
    return out


def _runner(model, batches: list[dict], new_tokens: int, beams: int, fast: bool = True):
    from compression.generation import generate

    def call() -> None:
        with torch.inference_mode():
            for batch in batches:
                if fast:
                    generate(model, batch["input_ids"], batch["attention_mask"], max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, num_beams=beams)
                else:
                    model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                   num_beams=beams, do_sample=False)
    return call


def _step_breakdown(model, batch: dict, repeats: int = 20) -> dict:
    """CPU ms of one batch-1 decoder step (cached, 16 tokens in) and of its ``lm_head`` alone."""
    from compression.generation import cache_argument
    from compression.vocab import to_model_ids

    ids = to_model_ids(model, batch["input_ids"][:1])
    with torch.inference_mode():
        enc = model.get_encoder()(input_ids=ids)
        start = model.generation_config.decoder_start_token_id
        prompt = torch.full((1, 16), start, dtype=torch.long)
        cache_name = cache_argument(model)
        past = getattr(model(encoder_outputs=enc, decoder_input_ids=prompt, use_cache=True), cache_name)
        token = prompt[:, :1]
        hidden = torch.randn(1, 1, model.config.d_model)

        def step():
            model(encoder_outputs=enc, decoder_input_ids=token, use_cache=True, **{cache_name: past})
            past.crop(-1)  # back to 16 cached tokens, so every timed step sees the same cache

        def head():
            model.lm_head(hidden)

        timings = {}
        for name, fn in (("step", step), ("lm_head", head)):
            fn()
            values = []
            for _ in range(repeats):
                cpu = time.process_time()
                fn()
                values.append(time.process_time() - cpu)
            timings[name] = 1000 * statistics.median(values)
    return {"step_cpu_ms": timings["step"], "lm_head_cpu_ms": timings["lm_head"],
            "lm_head_share": timings["lm_head"] / timings["step"] if timings["step"] else None}


def _models(preset: str, students, tokenizer_path: str, prune_texts: list[str] | None):
    from compression.layers import shrink
    from compression.load import build_preset, load_tokenizer
    from compression.vocab import prune_for_texts

    base, _ = build_preset(preset, tokenizer_path, seed=0)
    models = {f"{base.config.num_layers}/{base.config.num_decoder_layers} (base)": base}
    for label, enc, dec in students:
        models[label] = shrink(base, enc, dec).eval()
    if prune_texts is not None:
        half = [s for s in students if s[1] is not None and s[2] is not None]
        if half:
            label, enc, dec = half[0]
            tokenizer = load_tokenizer(tokenizer_path)
            models[f"{label} + pruned vocab"] = prune_for_texts(shrink(base, enc, dec).eval(), tokenizer, prune_texts)
            depth = f"{base.config.num_layers}/{base.config.num_decoder_layers}"
            models[f"{depth} + pruned vocab"] = prune_for_texts(base, tokenizer, prune_texts)
    return models


def _pruned_base(models: dict, label: str) -> str | None:
    """For the pruned student ``label``, the base pruned to the same vocabulary (its second baseline)."""
    if label.endswith(" + pruned vocab") and "/" in label:
        base = next(iter(models)).split(" ")[0] + " + pruned vocab"
        return base if base in models and base != label else None
    return None


def benchmark(quick: bool, families: list[str] | None = None, settings: list[tuple[int, int]] | None = None) -> dict:
    """Run the measurements; returns the payload written to ``results/generation.json``.

    ``families``/``settings`` (``(beams, batch)`` pairs) restrict the run to those cells of the
    speed table, without the pruned-vocabulary models, the fast-path and the step tables (for
    filling in one setting of a long full run).
    """
    tokenizer = common.t5_tokenizer()
    tok_path = common.tokenizer_path()
    extras = families is None and settings is None
    families = families or (["t5-small"] if quick else ["t5-small", "t5-base"])
    big = 8 if quick else 16
    chosen = settings
    settings = settings or ([(1, 1), (1, big)] if quick else [(1, 1), (1, big), (4, 1), (4, big)])  # (beams, batch)
    new_tokens = 24 if quick else 64
    repeats = 3 if quick else 5
    max_source_length = 512
    validation = common.xsum_pairs("validation")
    train = common.xsum_pairs("train")
    prune_texts = ["summarize: " + p["document"] for p in train + validation] + [p["summary"] for p in train + validation]
    docs_b1 = [p["document"] for p in validation[:1 if quick else 2]]
    docs_b16 = [p["document"] for p in validation[:max([big] + [n for _, n in settings])]]

    rows, fast_rows, breakdown = [], [], []
    for family in families:
        preset, students = FAMILIES[family]
        print(f"[generation] {family}: building base and students", flush=True)
        models = _models(preset, students, tok_path, prune_texts if extras else None)
        base_label = next(iter(models))
        base = models[base_label]
        for beams, batch_size in settings:
            if family == "t5-base" and beams > 1 and batch_size > 1 and chosen is None:
                continue  # beam 4 x batch 16 at d_model 768 takes most of an hour on 2 cores: --setting 4x16
            docs = docs_b1 if batch_size == 1 else docs_b16[:batch_size]
            batches = _batches(tokenizer, docs, batch_size, max_source_length)
            base_run = _runner(base, batches, new_tokens, beams)
            comparisons = [(label, base_label) for label in models if label != base_label]
            comparisons += [(label, _pruned_base(models, label)) for label in models if _pruned_base(models, label)]
            for label, against in comparisons:
                model = models[label]
                if quick and batch_size > 1 and label != "3/3":
                    continue  # quick mode: the batched setting only for the halved student
                print(f"[generation] {family} {label} vs {against}: beams {beams}, batch {batch_size}", flush=True)
                reference = base_run if against == base_label else _runner(models[against], batches, new_tokens, beams)
                pair = _pair(reference, _runner(model, batches, new_tokens, beams), repeats)
                samples = len(docs)
                for name, median_s, cpu_s in ((against, pair["a_median"], pair["a_cpu_median"]),
                                              (label, pair["b_median"], pair["b_cpu_median"])):
                    row = {"family": family, "model": name, "beams": beams, "batch": batch_size,
                           "ms_per_sample": 1000 * median_s / samples, "cpu_ms_per_sample": 1000 * cpu_s / samples,
                           "tokens_per_s": samples * new_tokens / median_s}
                    if name == label:
                        row["vs"] = against
                        row.update(base_ms_per_sample=1000 * pair["a_median"] / samples,
                                   speedup=pair["ratio_median"], speedup_min=pair["ratio_min"],
                                   speedup_max=pair["ratio_max"], cpu_speedup=pair["cpu_ratio_median"],
                                   cpu_speedup_min=pair["cpu_ratio_min"], cpu_speedup_max=pair["cpu_ratio_max"])
                    elif any(r["model"] == name and r["family"] == family and r["beams"] == beams
                             and r["batch"] == batch_size and "vs" not in r for r in rows):
                        continue
                    rows.append(row)
        if not extras:
            del models, base
            continue
        # fast path vs model.generate, greedy, batch 1 and 16
        batches_b1 = _batches(tokenizer, docs_b1, 1, max_source_length)
        batches_b16 = _batches(tokenizer, docs_b16, big, max_source_length)
        half = next(label for label in models if label != base_label and label.split(" ")[0] in ("3/3", "6/6"))
        for label in [base_label] if quick else [base_label, half]:
            for batch_size, batches in ((1, batches_b1), (big, batches_b16)):
                print(f"[generation] {family} {label}: model.generate vs fast path, batch {batch_size}", flush=True)
                pair = _pair(_runner(models[label], batches, new_tokens, 1, fast=False),
                             _runner(models[label], batches, new_tokens, 1), repeats)
                samples = sum(b["input_ids"].shape[0] for b in batches)
                fast_rows.append({"family": family, "model": label, "batch": batch_size,
                                  "generate_ms_per_sample": 1000 * pair["a_median"] / samples,
                                  "fast_ms_per_sample": 1000 * pair["b_median"] / samples,
                                  "speedup": pair["ratio_median"], "speedup_min": pair["ratio_min"],
                                  "speedup_max": pair["ratio_max"], "cpu_speedup": pair["cpu_ratio_median"]})
        for label, model in models.items():
            breakdown.append({"family": family, "model": label, "vocab": model.config.vocab_size,
                              **_step_breakdown(model, batches_b1[0])})
        del models, base

    target_rows = [r for r in rows if r["family"] == "t5-small" and r["beams"] == 1 and r["batch"] == 1
                   and r.get("speedup") is not None and r["model"].split(" ")[0] in ("6/3", "3/3")]
    verdict = {
        f"{r['model']} vs {r['vs']}": {"speedup": r["speedup"], "cpu_speedup": r["cpu_speedup"],
                     "met": r["speedup"] >= TARGET_SPEEDUP, "cpu_met": r["cpu_speedup"] >= TARGET_SPEEDUP}
        for r in target_rows
    }
    return {"settings": {"quick": quick, "families": families, "beams_batch": settings, "new_tokens": new_tokens,
                         "repeats": repeats, "threads": 1,
                         "max_source_length": max_source_length, "weights": "random (fixed output length)",
                         "tokenizer": tok_path},
            "speed": rows, "fast_path": fast_rows, "step_breakdown": breakdown,
            "target": {"speedup": TARGET_SPEEDUP, "setting": "t5-small family, greedy, batch 1", "rows": verdict}}


SPEED_COLUMNS = ["family", "model", "beams", "batch", "ms_per_sample", "cpu_ms_per_sample", "tokens_per_s", "vs",
                 "base_ms_per_sample", "speedup", "speedup_min", "speedup_max", "cpu_speedup"]
FAST_COLUMNS = ["family", "model", "batch", "generate_ms_per_sample", "fast_ms_per_sample", "speedup",
                "speedup_min", "speedup_max", "cpu_speedup"]
STEP_COLUMNS = ["family", "model", "vocab", "step_cpu_ms", "lm_head_cpu_ms", "lm_head_share"]


def report(payload: dict) -> str:
    """The three plain-text tables and the target verdict."""
    parts = ["Generation speed (speedup = base time / student time, median of alternated pairs):",
             common.format_table(payload["speed"], SPEED_COLUMNS), ""]
    if payload["fast_path"]:  # not in a run restricted with --family/--setting
        parts += ["Fast greedy path vs model.generate (speedup = generate time / fast time):",
                  common.format_table(payload["fast_path"], FAST_COLUMNS), "",
                  "Where a batch-1 decoder step goes (CPU ms):",
                  common.format_table(payload["step_breakdown"], STEP_COLUMNS), ""]
    target = payload["target"]
    for model, v in target["rows"].items():
        parts.append(f"target >= {target['speedup']}x ({target['setting']}): {model} wall {v['speedup']:.2f}x "
                     f"({'met' if v['met'] else 'NOT met'}), CPU time {v['cpu_speedup']:.2f}x "
                     f"({'met' if v['cpu_met'] else 'NOT met'})")
    return "\n".join(parts)


def table(payload: dict) -> str:
    """The printed tables (for the suite runner)."""
    return report(payload)


def headline(payload: dict) -> list[dict]:
    """Summary rows for the README: greedy batch-1 speedups of the halved students, the fast path."""
    rows = []
    for r in payload["speed"]:
        if r["family"] != "t5-small" or r["beams"] != 1 or r.get("speedup") is None:
            continue
        if r["model"].split(" ")[0] not in ("6/3", "3/3"):
            continue
        rows.append({"benchmark": f"Generation, t5-small shape, greedy, batch {r['batch']}",
                     "measure": "ms per sample",
                     "result": f"{r['ms_per_sample']:,.0f} ({r['model']})",
                     "baseline": f"{r['base_ms_per_sample']:,.0f} ({(r.get('vs') or '6/6 (base)').replace(' (base)', ' base')}, same run)",
                     "ratio": f"{r['speedup']:.2f}x ({r['speedup_min']:.2f}-{r['speedup_max']:.2f})"})
    for r in payload["fast_path"]:
        if r["family"] == "t5-small" and "(base)" in r["model"]:
            rows.append({"benchmark": f"Fast greedy path, t5-small 6/6, batch {r['batch']}",
                         "measure": "ms per sample", "result": f"{r['fast_ms_per_sample']:,.0f} (fast path)",
                         "baseline": f"{r['generate_ms_per_sample']:,.0f} (model.generate)",
                         "ratio": f"{r['speedup']:.2f}x ({r['speedup_min']:.2f}-{r['speedup_max']:.2f})"})
    return rows


def run(quick: bool = False, families: list[str] | None = None, settings: list[tuple[int, int]] | None = None) -> dict:
    """Measure, print the tables, write ``benchmarks/results/generation.json`` (a restricted run:
    ``generation-<families>-beam<B>-batch<N>.json``); returns the payload."""
    with common.intra_op_threads(1):
        payload = benchmark(quick, families, settings)
    text = report(payload)
    print(text)
    name = NAME
    if families or settings:
        name = "-".join([NAME, *(families or []), *(f"beam{b}-batch{n}" for b, n in settings or [])])
    common.write_result(name, payload, text)
    return payload


def _setting(text: str) -> tuple[int, int]:
    try:
        beams, batch = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not BEAMSxBATCH, e.g. 4x16") from None
    return beams, batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="t5-small family, greedy only (a few minutes)")
    parser.add_argument("--family", nargs="+", choices=list(FAMILIES), help="only these families")
    parser.add_argument("--setting", nargs="+", type=_setting, metavar="BEAMSxBATCH",
                        help="only these settings, e.g. 4x16 (with --family: one cell of the full run)")
    args = parser.parse_args(argv)
    common.use_results_dir(args.quick)
    run(args.quick, args.family, args.setting)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
