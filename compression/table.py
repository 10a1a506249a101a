"""The plain-text tables the command line prints (``python -m compression evaluate`` / ``run``)."""

from __future__ import annotations

from .metrics import percent_of_base, rouge_f1

#: The legend printed under :func:`compare_table` by :func:`table_notes`: ROUGE-L's two kinds always,
#: the other entries when some row has that column.
ROUGE_LEGEND = ("R-L sent: sentence-level ROUGE-L (rougeL); R-Lsum: summary-level ROUGE-L over newline-split "
                "sentences (rougeLsum), the one tables of sentence-split summaries report (transformers#6808)")
AGREEMENT_LEGEND = "agree: the model's ROUGE-1/ROUGE-L against the base (teacher) model's own summaries"
IDENTICAL_LEGEND = ("= student %: share of the validation summaries a quantized or deployed copy writes exactly "
                    "as the float32 student does")


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _health(row: dict) -> str:
    health = row.get("output_health")
    if not isinstance(health, dict):
        return "-"
    return "degenerate" if health.get("degenerate") else "ok"


def table_notes(metrics: dict[str, dict]) -> str:
    """The lines printed under :func:`compare_table`: the legend of its ROUGE-L kinds and of the agreement
    columns some row fills, and for each model whose output is flagged degenerate, why
    (:func:`compression.metrics.output_health`)."""
    rows = [row or {} for row in metrics.values()]
    legend = [ROUGE_LEGEND] + [text for key, text in (("agreement", AGREEMENT_LEGEND),
                                                      ("agreement_with_student", IDENTICAL_LEGEND))
                               if any(row.get(key) for row in rows)]
    lines = ["; ".join(legend)]
    for name, row in metrics.items():
        if (row or {}).get("untrained"):
            lines.append(f"{name}: an untrained preset (random weights), so this comparison says nothing about "
                         "compression; train it as the teacher first (python -m compression teacher)")
        health = (row or {}).get("output_health") or {}
        if health.get("degenerate"):
            lines.append(f"{name}: degenerate output - " + "; ".join(health.get("reasons") or []))
    return "\n".join(lines)


def compare_table(metrics: dict[str, dict]) -> str:
    """A plain-text table, one row per model (e.g. ``base``, ``student``, ``quantized``).

    Columns: parameters, size (MiB), ROUGE-1/2 and ROUGE-L (sentence-level, ``R-L sent``) F1 (0-100),
    the student's ROUGE-1/2/L as % of the base row's (:func:`percent_of_base`; the ``"base"`` row, else
    the first row), ROUGE-Lsum (summary-level), agreement with the teacher (``agree R-1/R-L``: the row's
    ``agreement`` dict, :func:`compression.metrics.agreement`), the share of summaries identical to
    the float32 student's (``= student %``: ``agreement_with_student["identical"]``, quantized and
    deployed copies), validation loss (nats/token), latency
    (ms per document at batch 1), batched latency (ms per document at the evaluation batch size) and
    ``output``: ``degenerate`` when the row's ``output_health`` flags
    it (:func:`compression.metrics.output_health`), else ``ok``. Missing values print as ``-``; the
    legend and the reasons of any flag come from :func:`table_notes`; an entry that is only
    ``{"note": text}`` (e.g. a deployed copy CTranslate2 cannot make) prints its note after the table.
    """
    if not metrics:
        return "(no models evaluated)"
    base = metrics.get("base", next(iter(metrics.values())))
    header = ["model", "params", "size MiB", "R-1", "R-2", "R-L sent", "% base R-1/R-2/R-L", "R-Lsum",
              "agree R-1/R-L", "= student %", "val loss", "latency ms", "batched ms",
              "output"]
    rows = [header]
    notes = []
    for name, row in metrics.items():
        if set(row) == {"note"}:
            notes.append(f"{name}: {row['note']}")
            continue
        pct = percent_of_base(row, base)
        rows.append([
            name,
            _fmt(row.get("params"), ","),
            _fmt(row.get("size_mib"), ".1f"),
            _fmt(rouge_f1(row, "rouge1"), ".2f"),
            _fmt(rouge_f1(row, "rouge2"), ".2f"),
            _fmt(rouge_f1(row, "rougeL"), ".2f"),
            "/".join(_fmt(pct[m], ".1f") for m in ("rouge1", "rouge2", "rougeL")),
            _fmt(rouge_f1(row, "rougeLsum"), ".2f"),
            "/".join(_fmt((row.get("agreement") or {}).get(m), ".1f") for m in ("rouge1", "rougeL"))
            if row.get("agreement") else "-",
            _fmt((row.get("agreement_with_student") or {}).get("identical"), ".1f"),
            _fmt(row.get("validation_loss"), ".4f"),
            _fmt(row.get("latency_ms"), ".1f"),
            _fmt(row.get("latency_ms_batched"), ".1f"),
            _health(row),
        ])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + notes)


def points_table(points) -> str:
    """A plain-text table of :class:`compression.metrics.Point` s: method, layers, ratio (×),
    parameters, size (MiB), ROUGE-1/2/L F1 (0-100), validation loss (nats/token), latency (ms per
    summary at batch 1) and speedup over the teacher (×). Missing values print as ``-``."""
    header = ["model", "layers", "ratio", "params", "size MiB", "R-1", "R-2", "R-L", "val loss", "latency ms",
              "speedup"]
    rows = [header]
    for p in points:
        layers = f"{p.encoder_layers}/{p.decoder_layers}" if None not in (p.encoder_layers, p.decoder_layers) else "-"
        rows.append([p.method, layers, _fmt(p.ratio, ".2f"), _fmt(p.params, ","), _fmt(p.size_mib, ".1f"),
                     _fmt(p.rouge1, ".2f"), _fmt(p.rouge2, ".2f"), _fmt(p.rougeL, ".2f"),
                     _fmt(p.validation_loss, ".4f"), _fmt(p.latency_ms, ".1f"), _fmt(p.speedup, ".2f")])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
