"""Scaling (issue section 6): fine-tune time and memory against source length and number of pairs.

* **Source length** 256 / 512 / 1k / 2k / 4k tokens: a few optimizer steps of
  ``compression.train.finetune`` (``TrainArgs`` defaults, batch 2, target 64 tokens) on inputs built by
  concatenating consecutive XSum training articles until each has the length (real text, no padding).
  T5 (T5-efficient-tiny shape, full self-attention, quadratic in length) runs up to 2k; LongT5 with
  transient-global attention (Guo et al. 2022, "LongT5", section 2.1: local radius 127, global blocks
  of 16 tokens; a config of the same tiny width built here, since there is no model hub) covers 1k to
  4k. Each point runs in a fresh process. Reported: seconds per optimizer step (median of the steps
  after the first), real tokens/s and the peak RSS of that process (peak CUDA memory on a GPU).
* **Number of pairs**: one epoch of ``finetune`` with its defaults (batch 8, 512/64 tokens, no
  validation) on the first N XSum training pairs: wall seconds and peak RSS.

Writes ``results/scaling.json``, ``results/scaling.html`` (plotly) and ``results/scaling.png`` when
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


def longt5_model(vocab_size: int):
    """A LongT5 (transient-global) encoder-decoder of T5-efficient-tiny width: 4+4 layers, d_model 256,
    4 heads of 64, relu feed-forward 1024, local radius 127, global block 16; random init, seed 0."""
    from transformers import LongT5Config, LongT5ForConditionalGeneration

    config = LongT5Config(vocab_size=vocab_size, d_model=256, d_kv=64, d_ff=1024, num_layers=4, num_heads=4,
                          encoder_attention_type="transient-global", local_radius=127, global_block_size=16,
                          feed_forward_proj="relu", decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    return LongT5ForConditionalGeneration(config).eval()


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


def length_child(family: str, source_length: int, steps: int) -> None:
    """One source-length point in its own process (so its peak memory is its own), for
    :func:`benchmarks.common.run_child`: build the model and data, fine-tune ``steps`` optimizer
    steps, report seconds per step (median of the steps after the first), real tokens/s and the peak
    memory of the training."""
    from compression.config import TrainArgs
    from compression.train import finetune

    warnings.simplefilter("ignore")
    model, tokenizer = t5_model()
    if family == "longt5":
        model = longt5_model(model.config.vocab_size)
    data = _tokenize(tokenizer, long_pairs(tokenizer, source_length, steps * LENGTH_BATCH), source_length)
    real = sum(len(ids) for ids in data["input_ids"]) + sum(len(ids) for ids in data["labels"])
    before = _memory_reset()
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        result = finetune(model, tokenizer, data, None,
                          TrainArgs(batch_size=LENGTH_BATCH, max_steps=steps, logging_steps=1), tmp,
                          progress_bar=False)
    peak = _peak()
    elapsed = [r["elapsed_s"] for r in result.log_history if r["kind"] == "train"]
    per_step = [b - a for a, b in zip(elapsed, elapsed[1:])] or [result.seconds / max(result.steps, 1)]
    seconds = statistics.median(per_step)
    common.report({"family": family, "source_length": source_length, "batch_size": LENGTH_BATCH,
                   "steps": result.steps, "seconds_per_step": seconds,
                   "real_tokens_per_s": real / steps / seconds, "peak_memory_mib": peak,
                   "memory_before_mib": before, "train_memory_mib": peak - before})


def length_point(family: str, source_length: int, steps: int) -> dict:
    """Run :func:`length_child` in a fresh process and return its report."""
    import sys

    argv = [sys.executable, "-m", "benchmarks.scaling", "--family", family, "--length", str(source_length),
            "--steps", str(steps)]
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
    colors = {"t5": "#1f77b4", "longt5": "#2ca02c"}
    for family, name in (("t5", "T5 (full attention)"), ("longt5", "LongT5 (transient-global)")):
        points = [p for p in payload["by_length"] if p["family"] == family]
        if not points:
            continue
        x = [p["source_length"] for p in points]
        line = dict(color=colors[family])
        fig.add_trace(go.Scatter(x=x, y=[p["seconds_per_step"] for p in points], mode="lines+markers",
                                 name=name, legendgroup=family, line=line), row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=[p["peak_memory_mib"] for p in points], mode="lines+markers",
                                 name=name, legendgroup=family, showlegend=False, line=line), row=1, col=2)
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
    """Quick: T5 at 512/1k, LongT5 at 1k/4k (3 steps each), 32/64 pairs. Full: T5 at
    256-2k, LongT5 at 1k-4k (6 steps each), 50-699 pairs. Prints the tables, writes the JSON and figure."""
    from benchmarks.finetune import load_data

    tokenizer = common.t5_tokenizer()
    if quick:
        lengths = {"t5": (512, 1024), "longt5": (1024, 4096)}
        steps, pair_counts = 3, (32, 64)
    else:
        lengths = {"t5": (256, 512, 1024, 2048), "longt5": (1024, 2048, 4096)}
        steps, pair_counts = 6, (50, 100, 200, 400, 699)
    by_length = []
    for family, points in lengths.items():
        for length in points:
            point = length_point(family, length, steps)
            by_length.append(point)
            print(f"[scaling] {family} {length} tokens: {point['seconds_per_step']:.2f} s/step, "
                  f"peak {point['peak_memory_mib']:,.0f} MiB", flush=True)
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
                     "longt5": "transient-global, local radius 127, global block 16, tiny width"},
        "by_length": by_length,
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
        common.format_table(payload["by_length"], ["family", "source_length", "seconds_per_step",
                                                   "real_tokens_per_s", "peak_memory_mib"]),
        "Scaling with training pairs (one epoch, finetune defaults)",
        common.format_table(payload["by_pairs"], ["pairs", "steps", "seconds", "real_tokens_per_s",
                                                  "peak_memory_mib"]),
        f"figure: {payload['figure']['html']}" + (f", {payload['figure']['png']}" if payload["figure"].get("png") else ""),
    ])


def headline(payload: dict) -> list[dict]:
    """Summary rows: the cost of the longest T5 and LongT5 points relative to 512 tokens."""
    rows = []
    t5 = {p["source_length"]: p for p in payload["by_length"] if p["family"] == "t5"}
    long = {p["source_length"]: p for p in payload["by_length"] if p["family"] == "longt5"}
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
    return rows


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="one source-length point, as a child of run_child")
    parser.add_argument("--family", choices=("t5", "longt5"), required=True)
    parser.add_argument("--length", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    cli = parser.parse_args()
    length_child(cli.family, cli.length, cli.steps)
