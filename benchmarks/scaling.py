"""Scaling (issue section 6, issue 16): fine-tune time and memory against source length and number of
pairs, and where generation time goes when the input is long.

* **Source length** 256 tokens to 16k: a few optimizer steps of ``compression.train.finetune``
  (``TrainArgs`` defaults, batch 2, target 64 tokens) on inputs built by concatenating consecutive
  XSum training articles until each has the length (real text, no padding), with activation
  checkpointing off and on (``TrainArgs.gradient_checkpointing``). T5 (T5-efficient-tiny shape, full
  self-attention, quadratic in length) runs up to 2k (4k in full mode, where its attention maps
  alone are about 1 GiB per layer); LongT5 with transient-global (``longt5``) and local
  (``longt5-local``) attention (Guo et al. 2022, "LongT5", section 2.1: local radius 127, global
  blocks of 16 tokens; the ``longt5-*-tiny`` presets of :mod:`compression.load`, since there is no
  model hub) covers 1k to 16k. Each point runs in a fresh process. Reported: seconds per optimizer
  step (median of the steps after the first), real tokens/s and the peak RSS of that process (peak
  CUDA memory on a GPU).
* **Encoder vs decoder share of generation time** at 512, 4k and 16k source tokens (LongT5 tiny,
  batch 1, 64 forced new tokens, greedy): the encoder's forward pass timed alone, the whole
  ``generate`` timed, the decoder's share being the rest (:func:`encoder_decoder_split`). At short
  inputs the autoregressive decoder dominates; at long ones the encoder does, which changes which
  stack to cut.
* **Which stack to cut** (``python -m benchmarks.scaling --cuts``, :func:`run_cuts`): the LongT5-tiny
  teacher (4/4 layers) against two students with 2 layers removed, 2/4 (encoder cut) and 4/2 (decoder
  cut), at 512, 4k and 16k source tokens: greedy generation of one real long source (batch 1, 64
  forced new tokens), the three models timed in turn, round after round with the order rotated
  (:func:`cut_comparison`), so load from other processes hits all three alike. Reported per length,
  in wall seconds and in the process's CPU seconds (which a shared machine inflates far less): each
  cut's speedup over the teacher (paired per round, median) and their ratio, the encoder cut's
  speedup / the decoder cut's; writes ``results/scaling-cuts.json`` and ``.md``.
* **Number of pairs**: one epoch of ``finetune`` with its defaults (batch 8, 512/64 tokens, no
  validation) on the first N XSum training pairs: wall seconds and peak RSS.

``--quick`` runs a small subset (2k tokens at most). Writes ``results/scaling.json``, ``results/scaling.html`` (plotly) and ``results/scaling.png`` when
plotly's image export (kaleido + a Chrome/Chromium) works here.
"""

from __future__ import annotations

import gc
import statistics
import tempfile
import warnings

import torch

from . import common

NAME = "scaling"
PREFIX, TARGET_LENGTH, LENGTH_BATCH = "summarize: ", 64, 2


def t5_model():
    """T5-efficient-tiny shape (random init, seed 0) and the T5 tokenizer."""
    return common.tiny_teacher()


#: Benchmark family -> LongT5 preset of :mod:`compression.load` (``t5`` is the ``tiny`` T5 preset).
LONGT5_PRESETS = {"longt5": "longt5-tglobal-tiny", "longt5-local": "longt5-local-tiny"}
FAMILIES = ("t5", *LONGT5_PRESETS)
#: Generated tokens per document when timing the encoder/decoder split (forced length, greedy).
SPLIT_NEW_TOKENS = 64


def longt5_model(vocab_size: int, family: str = "longt5"):
    """A LongT5 encoder-decoder of T5-efficient-tiny width (the ``longt5-tglobal-tiny`` or
    ``longt5-local-tiny`` preset: 4+4 layers, d_model 256, 4 heads of 64, relu feed-forward 1024,
    local radius 127, global block 16); random init, seed 0."""
    from compression.load import preset_config, seq2seq_class

    config = preset_config(LONGT5_PRESETS[family], vocab_size)
    torch.manual_seed(0)
    return seq2seq_class(config)(config).eval()


def family_model(family: str):
    """``(model, tokenizer)`` of a benchmark family (see :data:`FAMILIES`), the real T5 vocabulary."""
    model, tokenizer = t5_model()
    if family != "t5":
        model = longt5_model(model.config.vocab_size, family)
    return model, tokenizer


def plan(quick: bool) -> dict:
    """The points a run measures: ``{"length": [(family, tokens, checkpointing), ...], "steps": int,
    "generation": [(family, tokens), ...], "pairs": (N, ...)}``. Quick: at most 2k tokens (a few
    minutes on a CPU); full: LongT5 to 16k with and without checkpointing, the encoder/decoder split at
    512, 4k and 16k (an hour or more on a 2-core CPU)."""
    if quick:
        length = [("t5", 512, False), ("t5", 1024, False), ("longt5", 1024, False), ("longt5", 2048, False),
                  ("longt5", 2048, True), ("longt5-local", 2048, False)]
        return {"length": length, "steps": 3, "generation": [("longt5", 512), ("longt5", 2048)], "pairs": (32, 64)}
    length = [("t5", n, False) for n in (256, 512, 1024, 2048, 4096)]
    length += [(family, n, checkpointing) for family in LONGT5_PRESETS for n in (1024, 2048, 4096, 8192, 16384)
               for checkpointing in (False, True)]
    generation = [(family, n) for family in LONGT5_PRESETS for n in (512, 4096, 16384)]
    return {"length": length, "steps": 6, "generation": generation, "pairs": (50, 100, 200, 400, 699)}


def long_pairs(tokenizer, length: int, n: int) -> list[dict]:
    """``n`` pairs whose source is at least ``length`` tokens: consecutive XSum training articles
    joined with blank lines; the summary is the first article's."""
    pairs = common.xsum_pairs("train")
    out, i = [], 0
    while len(out) < n:
        parts, tokens, first = [], 0, pairs[i % len(pairs)]
        while tokens < length:
            document = pairs[i % len(pairs)]["document"]
            parts.append(document)
            tokens += len(tokenizer(document)["input_ids"])
            i += 1
        out.append({"document": "\n\n".join(parts), "summary": first["summary"]})
    return out


def _memory_reset() -> float:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    common.reset_peak_rss()
    return common.current_rss_mib()


def _peak() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return common.peak_rss_mib()


def _tokenize(tokenizer, pairs: list[dict], source_length: int):
    import datasets

    from compression.data import tokenize_pairs

    return tokenize_pairs(datasets.Dataset.from_list(pairs), tokenizer, prefix=PREFIX,
                          max_source_length=source_length, max_target_length=TARGET_LENGTH)


def length_child(family: str, source_length: int, steps: int, checkpointing: bool = False) -> None:
    """One source-length point in its own process (so its peak memory is its own), for
    :func:`benchmarks.common.run_child`: build the model and data, fine-tune ``steps`` optimizer
    steps with activation checkpointing on or off, report seconds per step (median of the steps after
    the first), real tokens/s and the peak memory of the training."""
    from compression.config import TrainArgs
    from compression.train import finetune

    warnings.simplefilter("ignore")
    model, tokenizer = family_model(family)
    data = _tokenize(tokenizer, long_pairs(tokenizer, source_length, steps * LENGTH_BATCH), source_length)
    real = sum(len(ids) for ids in data["input_ids"]) + sum(len(ids) for ids in data["labels"])
    before = _memory_reset()
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        result = finetune(model, tokenizer, data, None,
                          TrainArgs(batch_size=LENGTH_BATCH, max_steps=steps, logging_steps=1,
                                    gradient_checkpointing="yes" if checkpointing else "no"), tmp,
                          progress_bar=False)
    peak = _peak()
    elapsed = [r["elapsed_s"] for r in result.log_history if r["kind"] == "train"]
    per_step = [b - a for a, b in zip(elapsed, elapsed[1:])] or [result.seconds / max(result.steps, 1)]
    seconds = statistics.median(per_step)
    common.report({"family": family, "source_length": source_length, "checkpointing": checkpointing,
                   "batch_size": LENGTH_BATCH, "steps": result.steps, "seconds_per_step": seconds,
                   "real_tokens_per_s": real / steps / seconds, "peak_memory_mib": peak,
                   "memory_before_mib": before, "train_memory_mib": peak - before})


def length_point(family: str, source_length: int, steps: int, checkpointing: bool = False) -> dict:
    """Run :func:`length_child` in a fresh process and return its report."""
    import sys

    argv = [sys.executable, "-m", "benchmarks.scaling", "--family", family, "--length", str(source_length),
            "--steps", str(steps), "--checkpointing", "yes" if checkpointing else "no"]
    return common.run_child(argv, env=common.child_env())


def encoder_decoder_split(model, input_ids: torch.Tensor, new_tokens: int = SPLIT_NEW_TOKENS,
                          repeats: int = 3) -> dict:
    """Where greedy generation time goes for one batch ``input_ids`` (``(batch, source tokens)``).

    Times the encoder's forward pass alone and the whole ``generate`` call with exactly
    ``new_tokens`` new tokens (``min_new_tokens`` = ``max_new_tokens``, KV cache on), each the
    median of ``repeats`` runs after one warm-up, under ``torch.inference_mode``. The decoder's time
    is the difference (``generate`` runs the encoder once, then the decoder token by token).

    Returns:
        ``{"encoder_s", "generate_s", "decoder_s": seconds, "encoder_share", "decoder_share": 0-1}``.
    """
    model.eval()
    mask = torch.ones_like(input_ids)
    encoder = model.get_encoder()
    settings = dict(input_ids=input_ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                    do_sample=False, num_beams=1)
    with torch.inference_mode():
        encode = common.median(common.time_call(lambda: encoder(input_ids=input_ids, attention_mask=mask),
                                                repeats=repeats))
        whole = common.median(common.time_call(lambda: model.generate(**settings), repeats=repeats))
    decoder = max(whole - encode, 0.0)
    return {"encoder_s": encode, "generate_s": whole, "decoder_s": decoder,
            "encoder_share": encode / whole if whole > 0 else 0.0,
            "decoder_share": decoder / whole if whole > 0 else 0.0}


def generation_child(family: str, source_length: int) -> None:
    """One encoder/decoder split point in its own process (:func:`encoder_decoder_split` on one real
    long source of ``source_length`` tokens, batch 1), for :func:`benchmarks.common.run_child`."""
    warnings.simplefilter("ignore")
    model, tokenizer = family_model(family)
    pairs = long_pairs(tokenizer, source_length, 1)
    ids = tokenizer([PREFIX + pairs[0]["document"]], max_length=source_length, truncation=True,
                    return_tensors="pt")["input_ids"]
    common.report({"family": family, "source_length": int(ids.shape[1]), "new_tokens": SPLIT_NEW_TOKENS,
                   **encoder_decoder_split(model, ids)})


def generation_point(family: str, source_length: int) -> dict:
    """Run :func:`generation_child` in a fresh process and return its report."""
    import sys

    argv = [sys.executable, "-m", "benchmarks.scaling", "--family", family, "--length", str(source_length),
            "--generation"]
    return common.run_child(argv, env=common.child_env())


#: Layer counts (encoder, decoder) of the cut comparison: the LongT5-tiny teacher and two students with
#: two layers removed from one stack (spread selection, :func:`compression.layers.shrink`).
CUTS = {"teacher": (4, 4), "cut_encoder": (2, 4), "cut_decoder": (4, 2)}
#: Source lengths of the cut comparison (tokens).
CUT_LENGTHS = (512, 4096, 16384)


def cut_comparison(models: dict, input_ids: torch.Tensor, new_tokens: int = SPLIT_NEW_TOKENS,
                   rounds: int = 3) -> dict:
    """Greedy generation time of each model of ``models`` (name -> model; ``"teacher"`` first, the
    reference) on one batch ``input_ids`` (``(batch, source tokens)``), exactly ``new_tokens`` new tokens.

    One untimed warm-up per model, then ``rounds`` rounds; each round times every model once, the
    order rotated by one per round (A B C, B C A, C A B ...), so load from other processes on a
    shared CPU falls on all of them alike. Also times the teacher's encoder pass alone each round (its
    share of the teacher's generation time). Speedups are paired per round (teacher seconds / model
    seconds of the same round); the ratio ``cut_encoder`` / ``cut_decoder`` is that of the two
    speedups in the same round. Each call is timed twice over: wall seconds (``perf_counter``) and
    the CPU seconds this process used (``process_time``, all its threads), which a busy machine
    inflates far less (a call that waits for the CPU is not charged for the wait); the ``cpu_*``
    entries are the same figures from CPU seconds.

    Returns:
        ``{"seconds": {name: [s per round]}, "median_s": {name: s}, "speedup": {name: median},
        "speedup_min"/"speedup_max": {name: x}, "teacher_encoder_s": median s, "encoder_share": 0-1,
        "encoder_vs_decoder_cut": median ratio (with "_min"/"_max"), "cpu_seconds", "cpu_median_s",
        "cpu_speedup", "cpu_encoder_share", "cpu_encoder_vs_decoder_cut" (with "_min"/"_max"),
        "rounds", "new_tokens"}``.

    Raises:
        ValueError: ``rounds`` < 1, or no ``"teacher"`` in ``models``.
    """
    import time
    from functools import partial

    if rounds < 1 or "teacher" not in models:
        raise ValueError("cut_comparison needs rounds >= 1 and a 'teacher' model")
    mask = torch.ones_like(input_ids)
    settings = dict(input_ids=input_ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                    do_sample=False, num_beams=1)
    names = list(models)
    clocks = {"": time.perf_counter, "cpu_": time.process_time}
    seconds: dict[str, dict[str, list[float]]] = {clock: {name: [] for name in names} for clock in clocks}
    encoder_s: dict[str, list[float]] = {clock: [] for clock in clocks}

    def timed(clock_seconds: dict, fn) -> None:
        starts = {clock: read() for clock, read in clocks.items()}
        fn()
        for clock, read in clocks.items():
            clock_seconds[clock].append(read() - starts[clock])

    teacher_encoder = models["teacher"].get_encoder()
    with torch.inference_mode():
        for model in models.values():
            model.eval().generate(**settings)  # warm-up
        for r in range(rounds):
            for name in common.rotated(names, r):
                timed({clock: seconds[clock][name] for clock in clocks}, partial(models[name].generate, **settings))
            timed(encoder_s, partial(teacher_encoder, input_ids=input_ids, attention_mask=mask))
    out: dict = {"rounds": rounds, "new_tokens": new_tokens}
    for clock in clocks:
        measured = seconds[clock]
        paired = {name: [t / s for t, s in zip(measured["teacher"], measured[name])] for name in names}
        out.update({f"{clock}seconds": measured,
                    f"{clock}median_s": {name: common.median(values) for name, values in measured.items()},
                    f"{clock}speedup": {name: common.median(values) for name, values in paired.items()},
                    f"{clock}speedup_min": {name: min(values) for name, values in paired.items()},
                    f"{clock}speedup_max": {name: max(values) for name, values in paired.items()},
                    f"{clock}teacher_encoder_s": common.median(encoder_s[clock])})
        out[f"{clock}encoder_share"] = min(out[f"{clock}teacher_encoder_s"] / out[f"{clock}median_s"]["teacher"], 1.0)
        if "cut_encoder" in paired and "cut_decoder" in paired:
            ratios = [e / d for e, d in zip(paired["cut_encoder"], paired["cut_decoder"])]
            out.update({f"{clock}encoder_vs_decoder_cut": common.median(ratios),
                        f"{clock}encoder_vs_decoder_cut_min": min(ratios),
                        f"{clock}encoder_vs_decoder_cut_max": max(ratios)})
    return out


def cut_models(family: str = "longt5") -> tuple[dict, object]:
    """``({"teacher", "cut_encoder", "cut_decoder"}: models, tokenizer)`` of :data:`CUTS` for a LongT5
    family (the teacher of :func:`longt5_model`; the students shrunk from it, spread selection)."""
    from compression.layers import shrink

    teacher, tokenizer = family_model(family)
    models = {"teacher": teacher}
    for name, (encoder, decoder) in CUTS.items():
        if name != "teacher":
            models[name] = shrink(teacher, encoder, decoder, "spread").eval()
    return models, tokenizer


def cuts_child(family: str, source_length: int, rounds: int) -> None:
    """One length of the cut comparison in its own process (:func:`cut_comparison` on one real long
    source of ``source_length`` tokens, batch 1), for :func:`benchmarks.common.run_child`."""
    warnings.simplefilter("ignore")
    models, tokenizer = cut_models(family)
    pairs = long_pairs(tokenizer, source_length, 1)
    ids = tokenizer([PREFIX + pairs[0]["document"]], max_length=source_length, truncation=True,
                    return_tensors="pt")["input_ids"]
    common.report({"family": family, "source_length": int(ids.shape[1]),
                   "layers": {name: list(layers) for name, layers in CUTS.items()},
                   **cut_comparison(models, ids, rounds=rounds)})


def cuts_point(family: str, source_length: int, rounds: int, timeout_s: float) -> dict:
    """Run :func:`cuts_child` in a fresh process and return its report."""
    import sys

    argv = [sys.executable, "-m", "benchmarks.scaling", "--family", family, "--length", str(source_length),
            "--cuts-child", "--rounds", str(rounds)]
    return common.run_child(argv, env=common.child_env(), timeout_s=timeout_s)


def cuts_table(points: list[dict]) -> str:
    """The printed table of the cut comparison, one row per source length and clock (wall seconds,
    then CPU seconds of the process)."""
    rows = [{"source_length": p["source_length"], "clock": "wall" if clock == "" else "cpu",
             "teacher_4/4_s": p[f"{clock}median_s"]["teacher"], "encoder_share": p[f"{clock}encoder_share"],
             "cut_encoder_2/4": p[f"{clock}speedup"]["cut_encoder"],
             "cut_decoder_4/2": p[f"{clock}speedup"]["cut_decoder"],
             "encoder/decoder_cut": p[f"{clock}encoder_vs_decoder_cut"],
             "ratio_min": p[f"{clock}encoder_vs_decoder_cut_min"], "ratio_max": p[f"{clock}encoder_vs_decoder_cut_max"]}
            for p in points for clock in ("", "cpu_") if f"{clock}speedup" in p]
    return common.format_table(rows, list(rows[0]) if rows else ["source_length"])


def run_cuts(lengths=CUT_LENGTHS, rounds: int = 3, family: str = "longt5", note: str = "",
             timeout_s: float = 3600.0) -> dict:
    """The cut comparison at each of ``lengths`` (each in a fresh process, shortest first); after each
    length, prints its line and (re)writes ``results/scaling-cuts.json``/``.md``, so a run stopped
    part-way keeps the lengths it finished. ``note``: said in the results (e.g. what else ran)."""
    points: list[dict] = []
    payload: dict = {}
    for length in sorted(lengths):
        point = cuts_point(family, length, rounds, timeout_s)
        points.append(point)
        print(f"[scaling] cuts at {point['source_length']} tokens: encoder cut {point['speedup']['cut_encoder']:.2f}x, "
              f"decoder cut {point['speedup']['cut_decoder']:.2f}x, ratio {point['encoder_vs_decoder_cut']:.2f} "
              f"(CPU seconds: {point['cpu_speedup']['cut_encoder']:.2f}x, {point['cpu_speedup']['cut_decoder']:.2f}x, "
              f"{point['cpu_encoder_vs_decoder_cut']:.2f})", flush=True)
        payload = {"family": family, "settings": {
            "models": "LongT5 tiny (transient-global, local radius 127, global block 16), random init seed 0; "
                      "students shrunk from it (spread)", "layers": {k: list(v) for k, v in CUTS.items()},
            "generation": f"batch 1, {SPLIT_NEW_TOKENS} forced new tokens, greedy, KV cache; one real long source "
                          f"(consecutive XSum articles); {rounds} rounds, order rotated",
            "clocks": "wall: perf_counter; cpu: process_time, CPU seconds of the process (all threads)"},
            "note": note, "points": points}
        text = (f"Which stack to cut: LongT5-tiny 4/4 vs 2/4 (encoder cut) vs 4/2 (decoder cut), speedups over "
                f"4/4 (batch 1, {SPLIT_NEW_TOKENS} new tokens)" + (f"\n{note}" if note else "") + "\n"
                + cuts_table(points))
        common.write_result("scaling-cuts", payload, text)
    if points:
        print(text)
    return payload


def pairs_point(tokenizer, train, n: int) -> dict:
    """One epoch of ``finetune`` (defaults, no validation) on the first ``n`` tokenized pairs."""
    from compression.config import TrainArgs
    from compression.train import finetune

    model, _ = t5_model()
    before = _memory_reset()
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        result = finetune(model, tokenizer, train.select(range(n)), None, TrainArgs(), tmp, progress_bar=False)
    peak = _peak()
    del model
    gc.collect()
    return {"pairs": n, "seconds": result.seconds, "steps": result.steps, "real_tokens_per_s": result.tokens_per_s,
            "train_loss": result.train_loss, "peak_memory_mib": peak, "memory_before_mib": before}


def figure(payload: dict):
    """The plotly figure: seconds per step and peak memory against source length (T5 and LongT5),
    and epoch seconds against the number of pairs."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=3, subplot_titles=(
        f"seconds per step (batch {LENGTH_BATCH}) vs source length", "peak memory of the process (MiB)",
        "one-epoch seconds vs training pairs"))
    colors = {"t5": "#1f77b4", "longt5": "#2ca02c", "longt5-local": "#9467bd"}
    names = {"t5": "T5 (full attention)", "longt5": "LongT5 (transient-global)", "longt5-local": "LongT5 (local)"}
    for family in FAMILIES:
        for checkpointing in (False, True):
            points = [p for p in payload["by_length"]
                      if p["family"] == family and bool(p.get("checkpointing")) == checkpointing]
            if not points:
                continue
            x = [p["source_length"] for p in points]
            name = names[family] + (", checkpointing" if checkpointing else "")
            line = dict(color=colors[family], dash="dot" if checkpointing else "solid")
            group = f"{family}-{checkpointing}"
            fig.add_trace(go.Scatter(x=x, y=[p["seconds_per_step"] for p in points], mode="lines+markers",
                                     name=name, legendgroup=group, line=line), row=1, col=1)
            fig.add_trace(go.Scatter(x=x, y=[p["peak_memory_mib"] for p in points], mode="lines+markers",
                                     name=name, legendgroup=group, showlegend=False, line=line), row=1, col=2)
    points = payload["by_pairs"]
    fig.add_trace(go.Scatter(x=[p["pairs"] for p in points], y=[p["seconds"] for p in points],
                             mode="lines+markers", name="T5 tiny, 512/64 tokens, batch 8",
                             line=dict(color="#ff7f0e")), row=1, col=3)
    for col in (1, 2):
        fig.update_xaxes(type="log", title_text="source tokens", row=1, col=col)
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_xaxes(title_text="pairs", row=1, col=3)
    machine = common.machine_info()
    fig.update_layout(title=f"Fine-tune scaling on {machine['cpu']} ({machine['cpu_count']} cores"
                            + (f", {machine['gpu']}" if machine["gpu"] else "") + ")",
                      width=1300, height=430, template="plotly_white")
    return fig


def save_figure(payload: dict) -> dict:
    """Write ``results/scaling.html`` (plotly.js from its CDN) and, if image export works, ``scaling.png``."""
    fig = figure(payload)
    common.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    html = common.RESULTS_DIR / f"{NAME}.html"
    fig.write_html(str(html), include_plotlyjs="cdn")
    files = {"html": str(html.relative_to(common.ROOT))}
    png = common.RESULTS_DIR / f"{NAME}.png"
    try:
        fig.write_image(str(png))
        files["png"] = str(png.relative_to(common.ROOT))
    except Exception as err:  # kaleido missing, or no Chrome/Chromium for it to drive
        files["png"] = None
        print(f"[scaling] PNG not written ({type(err).__name__}: {str(err)[:200]}); the HTML figure is there")
    return files


def run(quick: bool) -> dict:
    """Measure the points of :func:`plan` (quick or full), each in a fresh process; prints the tables,
    writes the JSON and figure."""
    from benchmarks.finetune import load_data

    tokenizer = common.t5_tokenizer()
    points = plan(quick)
    steps, pair_counts = points["steps"], points["pairs"]
    by_length = []
    for family, length, checkpointing in points["length"]:
        point = length_point(family, length, steps, checkpointing)
        by_length.append(point)
        print(f"[scaling] {family} {length} tokens{' (checkpointing)' if checkpointing else ''}: "
              f"{point['seconds_per_step']:.2f} s/step, peak {point['peak_memory_mib']:,.0f} MiB", flush=True)
    generation = []
    for family, length in points["generation"]:
        point = generation_point(family, length)
        generation.append(point)
        print(f"[scaling] {family} generation at {length} tokens: encoder {point['encoder_share']:.0%} of "
              f"{point['generate_s']:.2f} s", flush=True)
    train, _ = load_data(max(pair_counts), 1, tokenizer)
    by_pairs = []
    for n in pair_counts:
        point = pairs_point(tokenizer, train, min(n, len(train)))
        by_pairs.append(point)
        print(f"[scaling] {n} pairs: {point['seconds']:.1f} s, peak {point['peak_memory_mib']:,.0f} MiB", flush=True)
    payload = {
        "quick": quick,
        "settings": {"length_batch_size": LENGTH_BATCH, "target_length": TARGET_LENGTH, "steps_per_length": steps,
                     "memory": "peak CUDA memory allocated" if torch.cuda.is_available() else "peak RSS (VmHWM)",
                     "longt5": "transient-global, local radius 127, global block 16, tiny width",
                     "longt5-local": "local, radius 127, tiny width",
                     "generation": f"batch 1, {SPLIT_NEW_TOKENS} forced new tokens, greedy, median of 3"},
        "by_length": by_length,
        "generation": generation,
        "by_pairs": by_pairs,
    }
    payload["figure"] = save_figure(payload)
    print(table(payload))
    common.write_result(NAME, payload)
    return payload


LONG_LENGTHS = (8192, 16384)


def run_long(lengths=LONG_LENGTHS, steps: int = 3, family: str = "longt5", note: str = "") -> dict:
    """The long end of the length scan alone (``python -m benchmarks.scaling --long``): training steps
    of the LongT5 ``family`` at each of ``lengths`` with gradient checkpointing off and on, each point in
    a fresh process (:func:`length_point`: batch 2, target 64 tokens, median seconds per step after
    the first, peak memory). The full scan (:func:`run`) takes an hour or more on a 2-core CPU; this is
    its 8k-16k part in minutes. Prints a table and writes ``results/scaling-long.json`` and ``.md``.

    Raises:
        RuntimeError: a point's process failed (e.g. out of memory: the message ends with its stderr).
    """
    rows = []
    for length in lengths:
        for checkpointing in (False, True):
            point = length_point(family, length, steps, checkpointing)
            rows.append(point)
            print(f"[scaling] {family} {length} tokens{' (checkpointing)' if checkpointing else ''}: "
                  f"{point['seconds_per_step']:.2f} s/step, peak {point['peak_memory_mib']:,.0f} MiB", flush=True)
    for row in rows:
        if row.get("checkpointing"):
            plain = next(p for p in rows if p["source_length"] == row["source_length"] and not p.get("checkpointing"))
            row["memory_vs_plain"] = row["peak_memory_mib"] / plain["peak_memory_mib"]
            row["time_vs_plain"] = row["seconds_per_step"] / plain["seconds_per_step"]
    text = "\n".join([f"LongT5 ({family}) training steps at long sources (batch {LENGTH_BATCH}, target "
                      f"{TARGET_LENGTH}, median of {steps - 1} steps after the first)" + (f"; {note}" if note else ""),
                      common.format_table(rows, ["family", "source_length", "checkpointing", "seconds_per_step",
                                                 "real_tokens_per_s", "peak_memory_mib", "memory_vs_plain",
                                                 "time_vs_plain"])])
    print(text)
    payload = {"settings": {"family": family, "length_batch_size": LENGTH_BATCH, "target_length": TARGET_LENGTH,
                            "steps_per_length": steps, "note": note,
                            "memory": "peak CUDA memory allocated" if torch.cuda.is_available() else "peak RSS (VmHWM)"},
               "by_length": rows}
    common.write_result("scaling-long", payload, text)
    return payload


def table(payload: dict) -> str:
    """The printed tables: by source length, then by number of pairs."""
    return "\n".join([
        "Scaling with source length (fine-tune steps, batch 2, target 64)",
        common.format_table(payload["by_length"], ["family", "source_length", "checkpointing", "seconds_per_step",
                                                   "real_tokens_per_s", "peak_memory_mib"]),
        f"Encoder vs decoder share of generation time (batch 1, {SPLIT_NEW_TOKENS} new tokens)",
        common.format_table(payload.get("generation", []), ["family", "source_length", "encoder_s", "decoder_s",
                                                            "encoder_share", "decoder_share"]),
        "Scaling with training pairs (one epoch, finetune defaults)",
        common.format_table(payload["by_pairs"], ["pairs", "steps", "seconds", "real_tokens_per_s",
                                                  "peak_memory_mib"]),
        f"figure: {payload['figure']['html']}" + (f", {payload['figure']['png']}" if payload["figure"].get("png") else ""),
    ])


def headline(payload: dict) -> list[dict]:
    """Summary rows: the cost of the longest T5 and LongT5 points relative to 512 tokens."""
    rows = []
    plain = [p for p in payload["by_length"] if not p.get("checkpointing")]
    t5 = {p["source_length"]: p for p in plain if p["family"] == "t5"}
    long = {p["source_length"]: p for p in plain if p["family"] == "longt5"}
    if 512 in t5 and len(t5) > 1:
        top = max(t5)
        rows.append({"benchmark": "Scaling: T5 source length", "measure": f"s/step at {top} vs 512 tokens",
                     "result": f"{t5[top]['seconds_per_step']:.2f} s, {t5[top]['peak_memory_mib']:,.0f} MiB",
                     "baseline": f"{t5[512]['seconds_per_step']:.2f} s, {t5[512]['peak_memory_mib']:,.0f} MiB",
                     "ratio": f"{t5[top]['seconds_per_step'] / t5[512]['seconds_per_step']:.2f}x time "
                              f"for {top / 512:.0f}x tokens"})
    if len(long) > 1:
        low, top = min(long), max(long)
        rows.append({"benchmark": "Scaling: LongT5 source length", "measure": f"s/step at {top} vs {low} tokens",
                     "result": f"{long[top]['seconds_per_step']:.2f} s, {long[top]['peak_memory_mib']:,.0f} MiB",
                     "baseline": f"{long[low]['seconds_per_step']:.2f} s, {long[low]['peak_memory_mib']:,.0f} MiB",
                     "ratio": f"{long[top]['seconds_per_step'] / long[low]['seconds_per_step']:.2f}x time "
                              f"for {top / low:.0f}x tokens"})
    saved = {p["source_length"]: p for p in payload["by_length"] if p["family"] == "longt5" and p.get("checkpointing")}
    both = sorted(set(saved) & set(long))
    if both:
        top = both[-1]
        rows.append({"benchmark": "Scaling: gradient checkpointing", "measure": f"LongT5 step at {top} tokens",
                     "result": f"{saved[top]['seconds_per_step']:.2f} s, {saved[top]['peak_memory_mib']:,.0f} MiB",
                     "baseline": f"{long[top]['seconds_per_step']:.2f} s, {long[top]['peak_memory_mib']:,.0f} MiB",
                     "ratio": f"{saved[top]['peak_memory_mib'] / long[top]['peak_memory_mib']:.2f}x memory, "
                              f"{saved[top]['seconds_per_step'] / long[top]['seconds_per_step']:.2f}x time"})
    split = [p for p in payload.get("generation", []) if p["family"] == "longt5"]
    if len(split) > 1:
        low, top = min(split, key=lambda p: p["source_length"]), max(split, key=lambda p: p["source_length"])
        rows.append({"benchmark": "Scaling: encoder share of generation", "measure": "LongT5, batch 1",
                     "result": f"{top['encoder_share']:.0%} at {top['source_length']} tokens",
                     "baseline": f"{low['encoder_share']:.0%} at {low['source_length']} tokens", "ratio": ""})
    return rows


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="a child point of run_child, or --cuts: the cut comparison")
    parser.add_argument("--family", choices=FAMILIES, default="longt5")
    parser.add_argument("--length", type=int)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--checkpointing", choices=("yes", "no"), default="no")
    parser.add_argument("--generation", action="store_true", help="time the encoder/decoder split instead")
    parser.add_argument("--cuts", action="store_true",
                        help="run the cut comparison (4/4 vs 2/4 vs 4/2) at --lengths and write scaling-cuts.*")
    parser.add_argument("--lengths", type=int, nargs="+", default=list(CUT_LENGTHS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--note", default="", help="with --cuts: a sentence recorded with the results")
    parser.add_argument("--cuts-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--long", action="store_true",
                        help="training steps at --lengths (default 8192 16384) with checkpointing off and on; "
                             "writes scaling-long.*")
    cli = parser.parse_args()
    if cli.long:
        long_lengths = cli.lengths if cli.lengths != list(CUT_LENGTHS) else list(LONG_LENGTHS)
        run_long(long_lengths, max(cli.steps, 2), cli.family, cli.note)
    elif cli.cuts:
        run_cuts(cli.lengths, cli.rounds, cli.family, cli.note)
    elif cli.length is None:
        parser.error("--length is required for one point")
    elif cli.cuts_child:
        cuts_child(cli.family, cli.length, cli.rounds)
    elif cli.generation:
        generation_child(cli.family, cli.length)
    else:
        length_child(cli.family, cli.length, cli.steps, cli.checkpointing == "yes")
