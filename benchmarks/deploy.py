"""Deployed copies against PyTorch: speed, size and quality cost of CTranslate2 int8.

``python -m benchmarks --only deploy [--quick] [--teacher DIR]`` (or ``python -m benchmarks.deploy``;
``python -m benchmarks.deploy --quality-only`` scores only the quality table, for a new teacher;
``--headline-only`` times only the headline pairs and sizes, a few minutes even in full mode;
``--table-only [--rounds N]`` only the speed table and sizes, printed setting by setting).

Models: the t5-small shape (preset ``"small"``: 6/6 layers, d_model 512, the real 32,128-piece T5
vocabulary, random weights - the output length is forced, so weights do not matter for speed) and
its SFT students 3/3 and 6/3 (:func:`compression.layers.shrink`, ``spread``). Variants of each:

* PyTorch fp32 (:func:`compression.generation.generate`, the project's fast greedy loop; beam
  search via ``generate``); PyTorch bf16 (weights cast to bfloat16); bitsandbytes 8-bit
  (LLM.int8() layers; the unquantized rest in bf16 where the CPU has native bf16, else float32,
  as ``--quantize auto`` does);
* CTranslate2 int8 and float32 copies (:func:`compression.deploy.export_ct2`, CTranslate2's own
  converter; ``Translator.translate_batch``).

Settings: greedy and beam 4, batch 1 and 16, all cores and one thread (quick mode: greedy batch 1
and 16 and beam 4 batch 1 on all cores, greedy batch 1 on one thread; 16 forced new tokens instead
of 64; sources cut to 256 tokens instead of 512; PyTorch bf16 left out where the CPU has no native
bf16). Inputs: XSum validation articles.

Timing: every figure is a speed relative to the PyTorch fp32 6/6 base in the same setting. The
headline pairs (base fp32 against the CTranslate2 int8 3/3, and against the same 3/3 with its
vocabulary pruned to the XSum texts, as ``run --prune-vocab`` deploys it: a smaller output layer
and softmax per generated token; greedy, batch 1 and 16, all cores) are each timed A/B alternately, ``rounds`` times, median and min-max of the per-pair ratios
(:func:`benchmarks.common.alternate`). The other cells are timed once per round in a row that
starts and ends with the base (the ratio uses the mean of those two base times), so slow drifts of
a shared machine's load fall on both; quick mode: one round, one document at batch 1, 16 new tokens.

Size: files on disk (safetensors for PyTorch, ``model.bin`` + vocabulary for CTranslate2), as a
fraction of the fp32 base; the 3/3 also with its vocabulary pruned to the XSum texts
(:mod:`compression.vocab`), which the converter takes as it is.

The t5-base shape (full mode, or ``--shape t5-base`` alone; 12/12, d_model 768, random weights, as
in :mod:`benchmarks.generation`): the PyTorch fp32 12/12 base against the CTranslate2 int8 copies
of itself and of its 12/6 (decoder halved) and 6/6 students, greedy at batch 1 (four articles one by
one) and 16 and beam 4 at batch 1, both cores, 64 forced new tokens, sources cut to 512 tokens, each pair A/B alternated
three times; and their sizes on disk. Only these pairs: the 8-setting table at this shape would
take hours on a 2-core machine (PyTorch fp32 beam 4 at batch 16 alone is ~8 s per summary).

Quality (the committed offline teacher, or ``--teacher DIR`` trained on the same data): validation
loss (nats/token, teacher-forced; PyTorch, and CTranslate2's ``score_batch``) of the fp32 teacher
and its float32 and int8 copies on the first 100 Debian description validation pairs (after the preset's seeded shuffle), and the
share of greedy summaries that are identical.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Literal

import torch

from benchmarks import common

NAME = "deploy"
GOALS = {"batch1": 4.0, "batch16": 2.5, "size": 0.20, "nats": 0.01, "identical": 0.90}
STUDENTS = (("3/3", 3, 3), ("6/3", None, 3))
#: The 3/3 student with its vocabulary pruned to the data's pieces (``run --prune-vocab``), deployed int8.
PRUNED = "3/3 + pruned vocab"
#: The deployed copies timed A/B against the fp32 base for the headline: (model, variant).
HEADLINE_COPIES = (("3/3", "CT2 int8"), (PRUNED, "CT2 int8"))
#: The t5-base shape's students (label, encoder layers or None for all, decoder layers) and the
#: copies timed against its PyTorch fp32 12/12 base (:func:`base_shape_table`).
BASE_SHAPE_STUDENTS = (("12/6", None, 6), ("6/6", 6, 6))
BASE_SHAPE_COPIES = ("12/12 (base)", "12/6", "6/6")
VARIANTS = ("PyTorch fp32", "PyTorch bf16", "bnb 8-bit", "CT2 int8", "CT2 float32")
SPEED_COLUMNS = ["model", "variant", "beams", "batch", "threads", "ms_per_sample", "speedup"]


def _torch_runner(model, tokenizer, documents, batch, beams, new_tokens, max_source_length, threads):
    from compression.generation import encode_sources, generate_batch

    batches = [encode_sources(tokenizer, documents[i:i + batch], prefix="summarize: ",
                              max_source_length=max_source_length, device=torch.device("cpu"))
               for i in range(0, len(documents), batch)]
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, num_beams=beams)

    def run():
        with common.intra_op_threads(threads), torch.inference_mode():
            for item in batches:
                generate_batch(model, item, **kwargs)
    return run


def _ct2_runner(deployed, documents, batch, beams, new_tokens, max_source_length):
    sources = deployed.source_tokens(documents, prefix="summarize: ", max_source_length=max_source_length)
    chunks = [sources[i:i + batch] for i in range(0, len(sources), batch)]

    def run():
        for chunk in chunks:
            deployed.generate_ids(chunk, max_new_tokens=new_tokens, min_new_tokens=new_tokens, num_beams=beams,
                                  batch_size=batch)
    return run


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _build(work: Path, prune_texts: list[str]):
    """Save base and students, convert them; returns (tokenizer, {label: {variant: model}}, sizes)."""
    from compression.deploy import DeployedModel, deployed_size_mib, export_ct2
    from compression.device import cpu_has_native_bf16
    from compression.evaluate import size_on_disk_mib
    from compression.export import model_files_size_mib
    from compression.layers import shrink
    from compression.load import build_preset, load_tokenizer
    from compression.quantize import quantize
    from compression.vocab import prune_for_texts

    tokenizer = load_tokenizer(common.tokenizer_path())
    base, _ = build_preset("small", common.tokenizer_path(), seed=0)
    shapes = {"6/6 (base)": base}
    for label, enc, dec in STUDENTS:
        shapes[label] = shrink(base, enc, dec).eval()
    rest = "bfloat16" if cpu_has_native_bf16() else "float32"
    models, sizes = {}, []
    for label, model in shapes.items():
        folder = work / label.split(" ")[0].replace("/", "x")
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        int8 = export_ct2(folder, work / f"{folder.name}-int8", quantization="int8")
        fp32 = export_ct2(folder, work / f"{folder.name}-float32", quantization="float32")
        eight = quantize(folder, "8bit", device="cpu", rest_dtype=rest)
        models[label] = {"PyTorch fp32": model, "PyTorch bf16": quantize(folder, "bf16", device="cpu"),
                         "bnb 8-bit": eight, "CT2 int8": int8, "CT2 float32": fp32}
        sizes += [{"model": label, "variant": "PyTorch fp32", "mib": model_files_size_mib(folder)},
                  {"model": label, "variant": f"bnb 8-bit (rest {rest})", "mib": size_on_disk_mib(eight)},
                  {"model": label, "variant": "CT2 int8", "mib": deployed_size_mib(int8)},
                  {"model": label, "variant": "CT2 float32", "mib": deployed_size_mib(fp32)}]
    pruned = prune_for_texts(shapes["3/3"], tokenizer, prune_texts)
    pruned.save_pretrained(work / "3x3-pruned")
    tokenizer.save_pretrained(work / "3x3-pruned")
    folder = export_ct2(work / "3x3-pruned", work / "3x3-pruned-int8", quantization="int8")
    models[PRUNED] = {"CT2 int8": folder}
    sizes.append({"model": PRUNED, "variant": "CT2 int8", "mib": deployed_size_mib(folder)})
    base_mib = sizes[0]["mib"]
    for row in sizes:
        row["of_base"] = row["mib"] / base_mib
    return tokenizer, models, sizes, rest, DeployedModel


def _timed_pair(base_run, copy_run, rounds: int, docs: int, name: str, **row) -> dict:
    """``base_run`` and ``copy_run`` (both warmed up) timed A/B alternately ``rounds`` times
    (:func:`benchmarks.common.alternate`), printed as ``name``; returns ``row`` with the speedup
    (median, min, max of the per-pair ratios) and both medians in ms per summary of ``docs``."""
    pair = common.alternate(base_run, copy_run, rounds)
    print(f"[deploy] {name}: {pair['ratio_median']:.2f}x ({pair['ratio_min']:.2f}-{pair['ratio_max']:.2f})",
          flush=True)
    return {**row, "speedup": pair["ratio_median"], "speedup_min": pair["ratio_min"],
            "speedup_max": pair["ratio_max"], "base_ms_per_sample": 1000 * pair["a_median"] / docs,
            "ms_per_sample": 1000 * pair["b_median"] / docs}


def speed_tables(quick: bool, rounds: int, *, table: bool = True, headline_pairs: bool = True) -> dict:
    """The headline pairs and (``table``) the speed table of the module docstring, with the sizes;
    ``table=False``: the headline pairs only (``--headline-only``), ``"speed"`` left empty;
    ``headline_pairs=False``: the table only (``--table-only``), ``"headline"`` left empty. Each
    setting's rows are printed as soon as it is done, so a stopped run leaves what it measured."""
    cores = torch.get_num_threads()
    new_tokens = 16 if quick else 64
    singles = 1 if quick else 4  # documents timed one by one at batch 1
    max_source_length = 256 if quick else 512
    validation = common.xsum_pairs("validation")
    train = common.xsum_pairs("train")
    documents = [p["document"] for p in validation]
    prune_texts = (["summarize: " + p["document"] for p in train + validation]
                   + [p["summary"] for p in train + validation])
    settings = ([(1, 1, cores), (1, 16, cores), (4, 1, cores), (1, 1, 1)] if quick else
                [(b, n, t) for t in (cores, 1) for b in (1, 4) for n in (1, 16)])
    from compression.device import cpu_has_native_bf16

    # quick mode leaves out bf16 where it is emulated: known to be the slowest, and it alone ran past
    # the quick bound on a loaded 2-core machine
    variants = [v for v in VARIANTS if not (quick and v == "PyTorch bf16" and not cpu_has_native_bf16())]
    with tempfile.TemporaryDirectory(prefix="deploy-bench-") as tmp:
        tokenizer, models, sizes, rest, deployed_class = _build(Path(tmp), prune_texts)
        translators = {}

        def runner(label, variant, beams, batch, threads):
            docs = documents[:batch if batch > 1 else singles]
            model = models[label][variant]
            if variant.startswith("CT2"):
                key = (label, variant, threads)
                if key not in translators:
                    translators[key] = deployed_class(model, threads=threads)
                return _ct2_runner(translators[key], docs, batch, beams, new_tokens, max_source_length)
            return _torch_runner(model, tokenizer, docs, batch, beams, new_tokens, max_source_length, threads)

        headline = []
        for model_label, variant in HEADLINE_COPIES if headline_pairs else ():
            for batch in (1, 16):
                base = runner("6/6 (base)", "PyTorch fp32", 1, batch, cores)
                deployed = runner(model_label, variant, 1, batch, cores)
                base(), deployed()  # warm-up
                headline.append(_timed_pair(base, deployed, 3, batch if batch > 1 else singles,
                                            f"headline {model_label} batch {batch}", model=model_label,
                                            variant=variant, batch=batch, threads=cores))

        rows = []
        for beams, batch, threads in settings if table else []:
            docs = batch if batch > 1 else singles
            cells = {(label, variant): runner(label, variant, beams, batch, threads)
                     for label in models for variant in variants if variant in models[label]}
            base = cells[("6/6 (base)", "PyTorch fp32")]
            for fn in cells.values():
                fn()  # warm-up
            times = {key: [] for key in cells}
            ratios = {key: [] for key in cells}
            for _ in range(rounds):  # base, every cell, base: the ratio uses the mean of the two base times
                before = _seconds(base)
                elapsed = {key: _seconds(fn) for key, fn in cells.items()}
                reference = (before + _seconds(base)) / 2
                for key, seconds in elapsed.items():
                    times[key].append(seconds)
                    ratios[key].append(reference / seconds)
            done = [{"model": label, "variant": variant, "beams": beams, "batch": batch, "threads": threads,
                     "ms_per_sample": 1000 * statistics.median(values) / docs,
                     "speedup": statistics.median(ratios[(label, variant)])} for (label, variant), values in times.items()]
            rows += done
            print(f"[deploy] beams {beams} batch {batch} threads {threads} done\n"
                  + common.format_table(done, SPEED_COLUMNS), flush=True)
    return {"headline": headline, "speed": rows, "variants": variants, "size": sizes, "rest_dtype_8bit": rest,
            "new_tokens": new_tokens,
            "max_source_length": max_source_length, "cores": cores, "rounds": rounds}


def base_shape_table(rounds: int = 3, *, new_tokens: int = 64, max_source_length: int = 512,
                     singles: int = 4, settings: tuple[tuple[int, int], ...] = ((1, 1), (1, 16), (4, 1))) -> dict:
    """The deployed copies at the t5-base shape against the PyTorch fp32 12/12 base (see the module
    docstring): each (beams, batch) of ``settings`` (default greedy at batch 1 and 16, beam 4 at
    batch 1), all cores, ``new_tokens`` forced new tokens, ``singles`` articles one by one at batch
    1, A/B alternated ``rounds`` times per pair. Returns ``{"pairs": [...], "size": [...]}``: per
    pair the copy, beams, batch, ms per summary of both (medians), speedup median / min / max; per
    model its MiB on disk (fp32 safetensors, CTranslate2 int8 ``model.bin`` + vocabulary) and the
    fraction of the fp32 base."""
    from compression.deploy import DeployedModel, deployed_size_mib, export_ct2
    from compression.export import model_files_size_mib
    from compression.layers import shrink
    from compression.load import build_preset, load_tokenizer

    cores = torch.get_num_threads()
    documents = [p["document"] for p in common.xsum_pairs("validation")]
    tokenizer = load_tokenizer(common.tokenizer_path())
    base, _ = build_preset("base", common.tokenizer_path(), seed=0)
    pairs, sizes = [], []
    with tempfile.TemporaryDirectory(prefix="deploy-base-") as tmp:
        deployed = {}
        for label, enc, dec in (("12/12 (base)", None, None), *BASE_SHAPE_STUDENTS):
            model = base if enc is None and dec is None else shrink(base, enc, dec).eval()
            folder = Path(tmp) / label.split(" ")[0].replace("/", "x")
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            int8 = export_ct2(folder, Path(tmp) / f"{folder.name}-int8", quantization="int8")
            deployed[label] = DeployedModel(int8)
            sizes += [{"model": label, "variant": "PyTorch fp32", "mib": model_files_size_mib(folder)},
                      {"model": label, "variant": "CT2 int8", "mib": deployed_size_mib(int8)}]
        for row in sizes:
            row["of_base"] = row["mib"] / sizes[0]["mib"]
        for beams, batch in settings:
            docs = documents[:batch if batch > 1 else singles]
            base_run = _torch_runner(base, tokenizer, docs, batch, beams, new_tokens, max_source_length, cores)
            base_run()  # warm-up
            for label in BASE_SHAPE_COPIES:
                copy_run = _ct2_runner(deployed[label], docs, batch, beams, new_tokens, max_source_length)
                copy_run()
                pairs.append(_timed_pair(base_run, copy_run, rounds, len(docs),
                                         f"t5-base shape: CT2 int8 {label} beams {beams} batch {batch}",
                                         model=label, variant="CT2 int8", beams=beams, batch=batch, threads=cores))
    return {"pairs": pairs, "size": sizes, "new_tokens": new_tokens, "max_source_length": max_source_length,
            "singles": singles, "rounds": rounds, "cores": cores}


def base_shape_report(section: dict) -> str:
    """The printed t5-base shape section of :func:`base_shape_table`'s result."""
    return "\n".join([
        f"t5-base shape (12/12, d_model 768): CTranslate2 int8 copies against PyTorch fp32 12/12, "
        f"{section['new_tokens']} new tokens, A/B alternated x{section['rounds']}:",
        common.format_table(section["pairs"], ["model", "variant", "beams", "batch", "base_ms_per_sample", "ms_per_sample",
                                               "speedup", "speedup_min", "speedup_max"]),
        "Size on disk (fraction of the fp32 12/12 base):",
        common.format_table(section["size"], ["model", "variant", "mib", "of_base"])])


def quality_table(teacher_dir: str, quick: bool, dataset: str = "debian-descriptions",
                  pairs: int | Literal["all"] | None = None) -> dict:
    """Validation loss and identical greedy summaries: fp32 teacher against its CTranslate2 copies,
    on the first ``pairs`` validation pairs (``None``: 100, quick 50; ``"all"``: every pair) of the
    dataset preset ``dataset`` with its lengths, prefix and shuffle (:mod:`compression.dataset_presets`)."""
    from compression.config import DataArgs, EvalArgs
    from compression.data import load_pairs
    from compression.deploy import DeployedModel, export_ct2
    from compression.evaluate import compute_validation_loss, generate_summaries
    from compression.load import load_model

    if pairs is None:
        pairs = 50 if quick else 100
    data = DataArgs(dataset=dataset, max_train_samples=1, max_eval_samples=None if pairs == "all" else pairs)
    split = load_pairs(data)["validation"]
    documents, references = list(split["document"]), list(split["summary"])
    model, tokenizer = load_model(teacher_dir)
    lengths = dict(prefix=data.prefix if data.prefix is not None else "summarize: ",
                   max_source_length=data.max_source_length)
    new_tokens = min(32, data.max_target_length)
    fp32_loss = compute_validation_loss(model, tokenizer, documents, references,
                                        max_target_length=data.max_target_length, batch_size=16, **lengths)
    fp32_summaries = generate_summaries(model, tokenizer, documents, args=EvalArgs(max_new_tokens=new_tokens),
                                        **lengths)
    rows = [{"copy": "PyTorch fp32", "validation_loss": fp32_loss, "delta_nats": 0.0, "identical": 1.0}]
    with tempfile.TemporaryDirectory(prefix="deploy-quality-") as tmp:
        for quantization in ("float32", "int8"):
            folder = export_ct2(teacher_dir, Path(tmp) / quantization, quantization=quantization)
            deployed = DeployedModel(folder)
            loss = deployed.validation_loss(documents, references, max_target_length=data.max_target_length,
                                            **lengths)
            summaries = deployed.summarize(documents, max_new_tokens=new_tokens, **lengths)
            same = sum(a == b for a, b in zip(summaries, fp32_summaries)) / len(documents)
            rows.append({"copy": f"CT2 {quantization}", "validation_loss": loss, "delta_nats": loss - fp32_loss,
                         "identical": same})
    return {"teacher": str(teacher_dir), "dataset": dataset, "pairs": len(documents), "rows": rows}


def report(payload: dict) -> str:
    lines = (["Deployed copy: speedup over PyTorch fp32 6/6 (same setting, same round)",
              common.format_table(payload["speed"], SPEED_COLUMNS), ""] if payload["speed"] else [])
    lines += ([f"Headline, A/B alternated: CTranslate2 int8 3/3 against PyTorch fp32 6/6, greedy, "
               f"{payload['new_tokens']} new tokens, sources cut to {payload['max_source_length']} tokens:"]
              if payload["headline"] else [])
    for h in payload["headline"]:
        goal = GOALS["batch1"] if h["batch"] == 1 else GOALS["batch16"]
        lines.append(f"  {h.get('model', '3/3')}, batch {h['batch']}, {h['threads']} threads: {h['speedup']:.2f}x ({h['speedup_min']:.2f}-"
                     f"{h['speedup_max']:.2f}); goal >= {goal}x: {'met' if h['speedup'] >= goal else 'NOT met'}")
    lines += ["", "Size on disk (fraction of the fp32 6/6 base):",
              common.format_table(payload["size"], ["model", "variant", "mib", "of_base"])]
    if payload.get("t5_base"):
        lines += ["", base_shape_report(payload["t5_base"])]
    quality = payload.get("quality")
    lines += ["", quality_report(quality) if quality else
              "Quality: give --teacher DIR (a fine-tuned checkpoint) to measure it"]
    return "\n".join(lines)


def quality_report(quality: dict) -> str:
    """The printed quality table of :func:`quality_table`'s result."""
    return "\n".join([f"Quality on {quality['teacher']} ({quality['pairs']} {quality.get('dataset', 'XSum')} "
                      "validation pairs):",
                      common.format_table(quality["rows"], ["copy", "validation_loss", "delta_nats", "identical"])])


def table(payload: dict) -> str:
    return report(payload)


def headline(payload: dict) -> list[dict]:
    def pair_row(h: dict, shape: str, base: str) -> dict:
        search = "greedy" if h.get("beams", 1) == 1 else f"beam {h['beams']}"
        return {"benchmark": f"Deployed CTranslate2 int8 {h.get('model', '3/3').split(' (')[0]}, {shape} shape, "
                             f"{search}, batch {h['batch']}",
                "measure": "ms per sample", "result": f"{h['ms_per_sample']:,.1f}",
                "baseline": f"{h['base_ms_per_sample']:,.1f} (PyTorch fp32 {base})",
                "ratio": f"{h['speedup']:.2f}x ({h['speedup_min']:.2f}-{h['speedup_max']:.2f})"}

    rows = [pair_row(h, "t5-small", "6/6") for h in payload["headline"]]
    rows += [pair_row(h, "t5-base", "12/12") for h in (payload.get("t5_base") or {}).get("pairs", [])]
    pruned = next((r for r in payload["size"] if r["model"].startswith("3/3 + pruned")), None)
    if pruned:
        rows.append({"benchmark": "Deployed CTranslate2 int8 3/3 + pruned vocab, size", "measure": "MiB on disk",
                     "result": f"{pruned['mib']:.1f}", "baseline": f"{payload['size'][0]['mib']:.1f} (fp32 6/6)",
                     "ratio": f"{100 * pruned['of_base']:.1f} %"})
    return rows


def _teacher_or_bundled(teacher: str | None) -> str | None:
    """``teacher``, else the committed offline teacher when this checkout has it, else ``None``."""
    from compression.teacher import bundled_teacher

    folder = bundled_teacher()
    return teacher or (str(folder) if folder else None)


def run(quick: bool = False, teacher: str | None = None) -> dict:
    """Measure, print, write ``benchmarks/results/deploy.json`` (and ``.md``); returns the payload.
    ``teacher``: the quality table's checkpoint; default: the committed offline teacher when the
    checkout has it (scored on the Debian descriptions), else no quality table."""
    teacher = _teacher_or_bundled(teacher)
    quality = quality_table(teacher, quick) if teacher else None  # first: minutes, where speed takes long
    payload = speed_tables(quick, rounds=1 if quick else 3)
    if not quick:
        payload["t5_base"] = base_shape_table()
    payload["quality"] = quality
    text = report(payload)
    print(text)
    common.write_result(NAME, payload, text)
    return payload


def run_quality(quick: bool = False, teacher: str | None = None,
                pairs: int | Literal["all"] | None = None) -> dict:
    """Only the quality table (minutes, no timing): print it and write
    ``benchmarks/results/deploy-quality.json`` (and ``.md``; ``deploy-quality-all.*`` when scored on
    every validation pair, ``pairs="all"``), leaving the speed tables of the last full run as they
    are; for re-scoring a new teacher. ``teacher``: as in :func:`run`; ``pairs``: as in
    :func:`quality_table`.

    Raises:
        SystemExit: no ``teacher`` given and no committed offline teacher in this checkout.
    """
    teacher = _teacher_or_bundled(teacher)
    if teacher is None:
        raise SystemExit("--quality-only needs --teacher DIR (this checkout has no committed offline teacher)")
    quality = quality_table(teacher, quick, pairs=pairs)
    text = quality_report(quality)
    print(text)
    common.write_result(f"{NAME}-quality" + ("-all" if pairs == "all" else ""), {"quality": quality}, text)
    return quality


def run_headline(quick: bool = False) -> dict:
    """Only the headline pairs (the CTranslate2 int8 3/3, plain and with the pruned vocabulary,
    against PyTorch fp32 6/6, greedy, batch 1 and 16, A/B alternated; a few minutes) and the
    sizes, in the mode's settings (full: 64 new tokens, 512-token sources, four articles at batch
    1): print them and write ``benchmarks/results/[full/]deploy-headline.json`` (and ``.md``)."""
    payload = speed_tables(quick, rounds=3, table=False)
    text = report(payload)
    print(text)
    common.write_result(f"{NAME}-headline", payload, text)
    return payload


def run_table(quick: bool = False, rounds: int = 3) -> dict:
    """Only the speed table (every model, variant and setting of the module docstring, each setting's
    cells timed ``rounds`` times between two base runs) and the sizes, in the mode's settings (full:
    eight settings, 64 new tokens, 512-token sources, four articles at batch 1): print them and write
    ``benchmarks/results/[full/]deploy-table.json`` (and ``.md``). For the full table without the
    headline pairs, the t5-base section and the quality table, which have runs of their own."""
    payload = speed_tables(quick, rounds=rounds, headline_pairs=False)
    text = report(payload)
    print(text)
    common.write_result(f"{NAME}-table", payload, text)
    return payload


def run_base_shape() -> dict:
    """Only the t5-base shape section (about 15 minutes on 2 cores): print it and write
    ``benchmarks/results/full/deploy-t5-base.json`` (and ``.md``)."""
    section = base_shape_table()
    text = base_shape_report(section)
    print(text)
    common.write_result(f"{NAME}-t5-base", {"t5_base": section}, text)
    return section


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--teacher", metavar="DIR", help="a checkpoint trained on the Debian descriptions for the "
                                                         "quality table (default: the committed offline teacher)")
    parser.add_argument("--quality-only", action="store_true",
                        help="only the quality table (validation loss, identical greedy summaries) of the teacher "
                             "and its CTranslate2 copies, written to deploy-quality.{json,md}; no timing")
    parser.add_argument("--shape", choices=["t5-base"], default=None,
                        help="only the t5-base shape section of the full run (headline pairs and sizes), written "
                             "to full/deploy-t5-base.{json,md}")
    parser.add_argument("--headline-only", action="store_true",
                        help="only the A/B headline pairs and sizes (no 8-setting table, no quality table), "
                             "written to deploy-headline.{json,md}")
    parser.add_argument("--table-only", action="store_true",
                        help="only the speed table and sizes (no headline pairs, t5-base section or quality table), "
                             "written to deploy-table.{json,md}")
    parser.add_argument("--rounds", type=int, default=None, metavar="N",
                        help="with --table-only: rounds per setting (default 3, quick 1)")
    parser.add_argument("--quality-pairs", default=None, metavar="N|all",
                        help="validation pairs of the quality table (default 100, quick 50; 'all': every pair, "
                             "written to deploy-quality-all.{json,md})")
    args = parser.parse_args(argv)
    pairs = args.quality_pairs
    if pairs is not None:
        if not args.quality_only:
            parser.error("--quality-pairs goes with --quality-only (the full run scores 100 pairs)")
        if pairs.isdigit() and int(pairs) > 0:
            pairs = int(pairs)
        elif pairs != "all":
            parser.error(f"--quality-pairs takes a positive count or 'all' (got {args.quality_pairs!r})")
    if args.shape and (args.quick or args.quality_only or args.headline_only):
        parser.error("--shape t5-base is a full-mode section on its own: not with --quick, --quality-only "
                     "or --headline-only")
    if sum((args.headline_only, args.quality_only, args.table_only, bool(args.shape))) > 1:
        parser.error("--headline-only, --quality-only, --table-only and --shape are separate parts: give one")
    if args.rounds is not None and (not args.table_only or args.rounds < 1):
        parser.error("--rounds takes a positive count and goes with --table-only")
    if args.teacher and (args.shape or args.headline_only or args.table_only):
        parser.error("--teacher is for the quality table, which --shape, --headline-only and --table-only do not run")
    common.use_results_dir(args.quick)
    if args.shape:
        run_base_shape()
    elif args.headline_only:
        run_headline(args.quick)
    elif args.table_only:
        run_table(args.quick, args.rounds or (1 if args.quick else 3))
    elif args.quality_only:
        run_quality(args.quick, args.teacher, pairs)
    else:
        run(args.quick, args.teacher)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
