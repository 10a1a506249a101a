"""Panel 5, results: base vs student vs quantized vs deployed on ROUGE, validation loss, size and
speed; the validation summaries side by side; and any pasted article summarized by the base, the
fastest copy of the student, and the quantized copy.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from compression.errors import CompressionError, RunError

from . import charts
from .feedback import as_toast, user_errors
from .state import AppSettings, Session

ASSETS = Path(__file__).resolve().parents[1] / "assets"
METRIC_COLUMNS = ["model", "parameters (M)", "size (MiB)", "ROUGE-1", "ROUGE-2", "ROUGE-L (sentence)",
                  "ROUGE-Lsum (summary-level)", "% of base ROUGE-1", "% of base ROUGE-L",
                  "agreement with base ROUGE-1", "agreement with base ROUGE-L",
                  "summaries identical to the student (%)", "validation loss (nats/token)",
                  "latency (ms/summary)", "tokens/s", "output"]
SUMMARY_COLUMNS = ["article", "reference", "base", "student", "quantized", "deployed"]
ARTICLE_PREVIEW = 400


def _round(value, digits: int):
    return round(float(value), digits) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _health_cell(health) -> str | None:
    if not isinstance(health, dict):
        return None
    return "degenerate: " + "; ".join(health.get("reasons") or []) if health.get("degenerate") else "ok"


def degenerate_warning(metrics: dict | None) -> str:
    """A warning line naming the models whose summaries are flagged degenerate, or ``""``."""
    flagged = [charts.LABELS.get(name, name) for name in charts.MODELS
               if isinstance((metrics or {}).get(name), dict)
               and ((metrics[name].get("output_health") or {}).get("degenerate"))]
    if not flagged:
        return ""
    return (f"\n\n⚠ **Degenerate output** from {', '.join(flagged)}: empty, repetitive or the same for every "
            "article (see the *output* column), so ROUGE differences between the models say little here.")


def metrics_table(metrics: dict | None) -> pd.DataFrame:
    """One row per evaluated model with every headline number (units in the column names): ROUGE
    against the references, agreement (ROUGE of its summaries against the base model's), for the
    quantized and deployed copies the share of summaries identical to the float32 student's, and
    ``output``: "degenerate: <reasons>" when its summaries are flagged (empty, repetitive, the same
    phrases for every article; ``output_health`` in metrics.json), else "ok"."""
    rows = []
    for name in charts.MODELS:
        entry = (metrics or {}).get(name)
        if not isinstance(entry, dict) or set(entry) == {"note"}:
            continue
        percent = entry.get("percent_of_base") or {}
        kind = entry.get("mode") or entry.get("quantization")
        label = charts.LABELS[name] + (f" ({kind})" if kind else "")
        params = entry.get("params")
        rows.append([label, _round(params / 1e6, 3) if isinstance(params, (int, float)) else None,
                     _round(entry.get("size_mib"), 2), _round(entry.get("rouge1"), 2), _round(entry.get("rouge2"), 2),
                     _round(entry.get("rougeL"), 2), _round(entry.get("rougeLsum"), 2),
                     _round(percent.get("rouge1"), 1) if name != "base" else 100.0,
                     _round(percent.get("rougeL"), 1) if name != "base" else 100.0,
                     _round((entry.get("agreement") or {}).get("rouge1"), 1) if name != "base" else 100.0,
                     _round((entry.get("agreement") or {}).get("rougeL"), 1) if name != "base" else 100.0,
                     _round((entry.get("agreement_with_student") or {}).get("identical"), 1),
                     _round(entry.get("validation_loss"), 4), _round(entry.get("latency_ms"), 1),
                     _round(entry.get("tokens_per_s"), 0), _health_cell(entry.get("output_health"))])
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def summaries_table(rows: list[dict] | None) -> pd.DataFrame:
    """Validation samples side by side: article (first 400 characters), reference, and the base's,
    student's, quantized and deployed copies' summaries (empty where a model was not run)."""
    out = []
    for row in rows or []:
        article = str(row.get("document") or "")
        if len(article) > ARTICLE_PREVIEW:
            article = article[:ARTICLE_PREVIEW].rstrip() + " …"
        out.append([article] + [row.get(key) or "" for key in SUMMARY_COLUMNS[1:]])
    return pd.DataFrame(out, columns=SUMMARY_COLUMNS)


def headline_markdown(metrics: dict | None, status: str | None = None, run_dir: str | None = None) -> str:
    """One sentence with the figures that matter: the student's share of the base's ROUGE and
    parameters, the two validation losses, and the latency gain."""
    where = f" (`{Path(run_dir).name}`)" if run_dir else ""
    if status == "cancelled":
        return f"The run{where} was cancelled before evaluation: only its loss log is kept."
    base, student = (metrics or {}).get("base"), (metrics or {}).get("student")
    if not isinstance(base, dict) or not isinstance(student, dict):
        return "Results appear here after a run, or open a finished run in the runs history below."
    parts = []
    kept = (student.get("percent_of_base") or {}).get("rouge1")
    if isinstance(kept, (int, float)):
        parts.append(f"keeps **{kept:.0f}%** of the base's ROUGE-1")
    if base.get("params") and student.get("params"):
        parts.append(f"with **{100 * student['params'] / base['params']:.0f}%** of its parameters")
    if base.get("validation_loss") is not None and student.get("validation_loss") is not None:
        parts.append(f"validation loss **{student['validation_loss']:.3f}** vs **{base['validation_loss']:.3f}** "
                     "nats/token")
    if base.get("latency_ms") and student.get("latency_ms"):
        parts.append(speed_phrase(base["latency_ms"], student["latency_ms"]))
    warning = degenerate_warning(metrics)
    if base.get("untrained"):
        warning = ("\n\n⚠ **The base model is an untrained preset** (random weights): a faster student with a "
                   "lower loss here beats a model that never learned to summarize, which says nothing about "
                   "compression. Train the base as the teacher first (`python -m compression teacher`)." + warning)
    text = (f"**Student{where}:** " + ", ".join(parts) + "." if parts else f"Run{where} evaluated.") + warning
    auto = ((metrics or {}).get("quantized") or {}).get("auto")
    if isinstance(auto, dict) and auto.get("reason"):
        text += f"\n\n**Quantized copy (auto):** {auto['reason']}."
    deployed = (metrics or {}).get("deployed") or {}
    if deployed.get("note"):
        text += f"\n\n**Deployed copy:** {deployed['note']}."
    elif deployed:
        text += "\n\n" + deployed_sentence(base, deployed)
    return text


def speed_phrase(base_ms: float, ms: float) -> str:
    """``"**1.7×** faster per summary"`` (or slower) for a latency of ``ms`` against ``base_ms``
    (both ms per summary)."""
    ratio = base_ms / ms
    return f"**{ratio:.1f}×** faster per summary" if ratio >= 1 else f"**{1 / ratio:.1f}×** slower per summary"


def deployed_sentence(base: dict, deployed: dict) -> str:
    """One line on the deployed (CTranslate2) copy: its speed against the base per summary at batch 1,
    its size, and how many of its validation summaries are the student's own word for word."""
    parts = []
    if base.get("latency_ms") and deployed.get("latency_ms"):
        parts.append(speed_phrase(base["latency_ms"], deployed["latency_ms"]) + " than the base")
    if isinstance(deployed.get("size_mib"), (int, float)):
        parts.append(f"{deployed['size_mib']:.1f} MiB")
    same = (deployed.get("agreement_with_student") or {}).get("identical")
    if isinstance(same, (int, float)):
        parts.append(f"**{same:.0f}%** of its summaries identical to the student's")
    kind = deployed.get("quantization")
    label = f"**Deployed copy (CTranslate2{' ' + kind if kind else ''}):**"
    return f"{label} " + ", ".join(parts) + "." if parts else f"{label} evaluated."


def decoding_markdown(beams, max_new_tokens, where: str) -> str:
    """The decoding settings a set of summaries was made with, shown next to them."""
    if beams is None:
        return ""
    search = "greedy (1 beam)" if int(beams) == 1 else f"beam search, {int(beams)} beams"
    return f"_Decoded with {search}, at most {int(max_new_tokens)} new tokens ({where})._"


@user_errors
def show_results(settings: AppSettings, session: Session):
    """Everything panel 5 shows for the session's latest (or opened) run.

    Returns ``(headline markdown, metrics table, ROUGE figure, validation-loss figure,
    size/latency figure, summaries table, decoding line)``; placeholders when there is no result yet.
    """
    result = session.result or {}
    metrics = result.get("metrics")
    evaluation = ((result.get("config") or {}).get("eval") or {}) if result else {}
    return (headline_markdown(metrics, result.get("status"), session.run_dir),
            metrics_table(metrics),
            charts.rouge_bars(metrics),
            charts.validation_loss_bars(metrics),
            charts.size_latency_bars(metrics),
            summaries_table(result.get("summaries")),
            decoding_markdown(evaluation.get("num_beams"), evaluation.get("max_new_tokens"),
                              "the run's evaluation settings") if evaluation else "")


def _run_models(session: Session) -> dict:
    from compression import pipeline

    if not session.run_dir or not session.result or session.result.get("status") != "complete":
        raise RunError("no finished run in this session: run a compression, or open a complete run "
                       "in the runs history, then summarize")
    if session.models_run != session.run_dir or session.models is None:
        session.models, session.models_run = None, None
        session.models = pipeline.load_run_models(session.run_dir)
        session.models_run = session.run_dir
    return session.models


@user_errors
def compare_article(settings: AppSettings, session: Session, article: str | None, beams, max_new_tokens):
    """Summarize a pasted article with the run's base, the fastest copy of its student, and its
    quantized copy (:func:`compression.pipeline.fastest_student_copy`, :func:`compression.pipeline.summarize_with`).

    Returns ``(base, student, quantized, which)``: three summaries and one line saying which copy of
    the student wrote the second, with the decoding settings; the quantized box says so when the run kept no quantized model.
    Uses the run's prefix and max source length; decoding is greedy or beam search (``beams``), at
    most ``max_new_tokens`` tokens.

    Raises (as ``gr.Error``): no article, no finished run, bad generation settings, out of memory.
    """
    from compression.config import EvalArgs
    from compression.pipeline import fastest_student_copy, summarize_with

    if not (article or "").strip():
        raise CompressionError("paste an article into the box first")
    try:
        args = EvalArgs(num_beams=int(beams), max_new_tokens=int(max_new_tokens), batch_size=1)
    except (TypeError, ValueError):
        raise CompressionError("beams and max new tokens must be whole numbers") from None
    models = _run_models(session)
    data = (session.result.get("config") or {}).get("data") or {}
    common = dict(prefix=data.get("prefix"), max_source_length=int(data.get("max_source_length") or 512), args=args)
    fastest, which = fastest_student_copy(session.result.get("metrics"), models)
    outputs = []
    for name in ("base", fastest, "quantized"):
        if name not in models:
            outputs.append("(this run has no quantized model)" if name == "quantized" else "(not available)")
            continue
        outputs.append(summarize_with(models, name, article.strip(), **common) or "(empty summary)")
    return (*outputs, f"Student summary written by {which}. "
            + decoding_markdown(args.num_beams, args.max_new_tokens, "the settings beside the button"))


def example_articles() -> list[str]:
    """The example articles in ``assets/examples/*.txt`` (for the comparison box)."""
    return [p.read_text(encoding="utf-8").strip() for p in sorted((ASSETS / "examples").glob("*.txt"))]


def build_results_panel(settings: AppSettings, session: gr.State) -> SimpleNamespace:
    """Lay out panel 5 and wire the article comparison."""
    from functools import partial

    with gr.Column(elem_classes=["panel"]):
        gr.Markdown("### 5 · Results")
        headline = gr.Markdown(headline_markdown(None), elem_id="results-headline")
        with gr.Row(equal_height=True):
            rouge = gr.Plot(charts.rouge_bars(None), show_label=False, label="ROUGE", elem_id="rouge-plot", scale=3)
            loss = gr.Plot(charts.validation_loss_bars(None), show_label=False, label="Validation loss",
                           elem_id="val-loss-plot", scale=2)
        size = gr.Plot(charts.size_latency_bars(None), show_label=False, label="Size and speed", elem_id="size-plot")
        table = gr.Dataframe(metrics_table(None), label="All figures", interactive=False, wrap=True,
                             elem_id="metrics-table")
        summaries = gr.Dataframe(summaries_table(None), label="Validation samples side by side", interactive=False,
                                 wrap=True, max_height=420, elem_id="summaries-table",
                                 column_widths=["24%", "16%", "15%", "15%", "15%", "15%"])
        decoding = gr.Markdown("", elem_id="summaries-decoding")
        gr.Markdown("#### Summarize any article: the base, the fastest copy of the student, the quantized copy")
        article = gr.Textbox(lines=6, label="Article", placeholder="Paste a news article (or, for the offline Debian teacher, a package description) here…",
                             elem_id="article-input")
        examples = example_articles()
        if examples:
            gr.Examples([[e] for e in examples], inputs=[article], label="Example articles", cache_examples=False)
        with gr.Row():
            # the same defaults as the evaluation (panel 3), so table and box agree unless changed
            beams = gr.Slider(1, 8, value=1, step=1, label="Beams", elem_id="compare-beams")
            max_new = gr.Slider(8, 256, value=64, step=8, label="Max new tokens", elem_id="compare-max-new")
            summarize = gr.Button("Summarize with base, student and quantized", variant="primary",
                                  elem_id="summarize-button")
        with gr.Row(equal_height=True):
            out_base = gr.Textbox(label=charts.LABELS["base"], lines=4, interactive=False, elem_id="summary-base")
            out_student = gr.Textbox(label=charts.LABELS["student"] + " (fastest copy)", lines=4, interactive=False,
                                     elem_id="summary-student")
            out_quantized = gr.Textbox(label=charts.LABELS["quantized"], lines=4, interactive=False,
                                       elem_id="summary-quantized")
        which = gr.Markdown("", elem_id="summary-which")
    summarize.click(as_toast(partial(compare_article, settings)), [session, article, beams, max_new],
                    [out_base, out_student, out_quantized, which], api_name="summarize", concurrency_limit=1,
                    concurrency_id="generate")
    return SimpleNamespace(headline=headline, rouge=rouge, loss=loss, size=size, table=table, summaries=summaries,
                           article=article, outputs=[headline, table, rouge, loss, size, summaries, decoding])
