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

    parser = argparse.ArgumentParser(description="one source-length point, as a child of run_child")
    parser.add_argument("--family", choices=FAMILIES, required=True)
    parser.add_argument("--length", type=int, required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--checkpointing", choices=("yes", "no"), default="no")
    parser.add_argument("--generation", action="store_true", help="time the encoder/decoder split instead")
    cli = parser.parse_args()
    if cli.generation:
        generation_child(cli.family, cli.length)
    else:
        length_child(cli.family, cli.length, cli.steps, cli.checkpointing == "yes")
