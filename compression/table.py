"""The plain-text tables the command line prints (``python -m compression evaluate`` / ``run``)."""

from __future__ import annotations

from .metrics import percent_of_base, rouge_f1


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def compare_table(metrics: dict[str, dict]) -> str:
    """A plain-text table, one row per model (e.g. ``base``, ``student``, ``quantized``).

    Columns: parameters, size (MiB), ROUGE-1/2/L F1 (0-100), the student's ROUGE-1/2/L as % of the
    base row's (:func:`percent_of_base`; the ``"base"`` row, else the first row), validation loss
    (nats/token), latency (ms per document at batch 1) and batched latency (ms per document at the
    evaluation batch size). Missing values print as ``-``; an entry that is only ``{"note": text}``
    (e.g. a deployed copy CTranslate2 cannot make) prints its note after the table.
    """
    if not metrics:
        return "(no models evaluated)"
    base = metrics.get("base", next(iter(metrics.values())))
    header = ["model", "params", "size MiB", "R-1", "R-2", "R-L", "% base R-1/R-2/R-L",
              "val loss", "latency ms", "batched ms"]
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
            _fmt(row.get("validation_loss"), ".4f"),
            _fmt(row.get("latency_ms"), ".1f"),
            _fmt(row.get("latency_ms_batched"), ".1f"),
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
