"""Pure plotly figure builders: plain records in, ``plotly.graph_objects.Figure`` out.

No gradio and no model code here, so every chart can be tested on hand-made records. Every figure
has a title and axis titles with units, transparent backgrounds and a mid-grey font so it reads in
both the light and the dark page theme. The same four colours always mean base, student, quantized, deployed.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

MODELS = ("base", "student", "quantized", "deployed")
LABELS = {"base": "Base (teacher)", "student": "Student", "quantized": "Student, quantized",
          "deployed": "Student, deployed (CTranslate2)"}
#: The same names broken onto two lines, for the narrow charts (:func:`size_latency_bars`,
#: :func:`validation_loss_bars`).
TICK_LABELS = {"base": "Base<br>(teacher)", "student": "Student", "quantized": "Student,<br>quantized",
               "deployed": "Student, deployed<br>(CTranslate2)"}
COLORS = {"base": "#6366f1", "student": "#f97316", "quantized": "#10b981", "deployed": "#0ea5e9"}
RUN_COLORS = ("#6366f1", "#f97316", "#10b981", "#ef4444", "#0ea5e9", "#a855f7", "#eab308", "#14b8a6")
ROUGE = (("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L (sentence)"))
FONT_COLOR = "#8b93a1"
GRID_COLOR = "rgba(139, 147, 161, 0.25)"
KEPT_COLOR = "#f97316"
DROPPED_COLOR = "rgba(139, 147, 161, 0.35)"


def style_figure(fig: go.Figure, title: str, x_title: str | None, y_title: str | None, *,
                 height: int = 360) -> go.Figure:
    """Apply the dashboard's look to ``fig`` in place and return it: ``title`` top left, axis
    titles (``None`` leaves an axis title as it is), transparent backgrounds, mid-grey font and
    grid (readable in the light and the dark theme), horizontal legend above the plot, ``height``
    in pixels."""
    fig.update_layout(
        title={"text": title, "x": 0.01, "xanchor": "left"},
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
        font={"color": FONT_COLOR, "size": 13},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0,
                "bgcolor": "rgba(0,0,0,0)"},
        margin={"l": 64, "r": 16, "t": 72, "b": 56},
        height=height,
        hoverlabel={"namelength": -1},
    )
    fig.update_xaxes(gridcolor=GRID_COLOR, zerolinecolor=GRID_COLOR, linecolor=GRID_COLOR)
    fig.update_yaxes(gridcolor=GRID_COLOR, zerolinecolor=GRID_COLOR, linecolor=GRID_COLOR)
    if x_title is not None:
        fig.update_xaxes(title_text=x_title)
    if y_title is not None:
        fig.update_yaxes(title_text=y_title)
    return fig


def empty_figure(title: str, message: str, *, x_title: str = "", y_title: str = "", height: int = 360) -> go.Figure:
    """A figure with no data and ``message`` in its middle (placeholder before a run)."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                       font={"size": 14, "color": FONT_COLOR})
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)
    return style_figure(fig, title, x_title, y_title, height=height)


def as_number(value) -> float | None:
    """``value`` as a ``float`` when it is an ``int`` or ``float`` (not a ``bool``), else ``None``:
    missing or non-numeric metrics in records are left out of charts instead of failing."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _present(metrics: dict | None) -> list[str]:
    metrics = metrics or {}
    # an entry that is only {"note": ...} (no deployed copy for this family) has nothing to draw
    return [name for name in MODELS if isinstance(metrics.get(name), dict) and set(metrics[name]) != {"note"}]


#: KD loss terms drawn under the total: (record key, legend name, colour).
KD_TERM_LINES = (("ce", "KD term: label cross-entropy", "#0ea5e9"),
                 ("kl", "KD term: soft-target KL × T²", "#ef4444"),
                 ("hidden", "KD term: hidden-state MSE", "#eab308"),
                 ("attention", "KD term: attention-map loss", "#a855f7"))


def loss_curve(records: list[dict], title: str = "Loss during fine-tuning") -> go.Figure:
    """Training loss per logged step (line) and validation loss per evaluation (markers).

    ``records``: progress dicts of :func:`compression.train.finetune` (``kind`` ``"train"`` with
    ``loss`` or ``"eval"`` with ``eval_loss``, ``step``); other kinds are ignored. Losses are token
    cross-entropies in nats. Traces: ``"training loss"``, ``"validation loss"`` (each only when it
    has points). A KD run's training records also carry its loss terms (``ce``, ``kl``, ``hidden``,
    ``attention``, :func:`compression.distill.distill`); each one present is drawn as a thin dotted
    line (:data:`KD_TERM_LINES`), and ``"training loss"`` is then the weighted total.
    """
    train = [r for r in records if r.get("kind") == "train" and as_number(r.get("loss")) is not None]
    evals = [r for r in records if r.get("kind") == "eval" and as_number(r.get("eval_loss")) is not None]
    if not train and not evals:
        return empty_figure(title, "The loss curve appears here once training logs its first steps",
                            x_title="optimizer step", y_title="loss (nats/token)")
    fig = go.Figure()
    if train:
        fig.add_trace(go.Scatter(
            x=[r["step"] for r in train], y=[r["loss"] for r in train], mode="lines+markers",
            name="training loss", line={"color": COLORS["student"], "width": 2}, marker={"size": 5},
            hovertemplate="step %{x}<br>training loss %{y:.4f} nats<extra></extra>"))
    for key, name, color in KD_TERM_LINES:
        points = [r for r in train if as_number(r.get(key)) is not None]
        if points:
            fig.add_trace(go.Scatter(
                x=[r["step"] for r in points], y=[r[key] for r in points], mode="lines", name=name,
                line={"color": color, "width": 1.5, "dash": "dot"},
                hovertemplate="step %{x}<br>%{y:.4f}<extra>%{fullData.name}</extra>"))
    if evals:
        fig.add_trace(go.Scatter(
            x=[r["step"] for r in evals], y=[r["eval_loss"] for r in evals], mode="lines+markers",
            name="validation loss", line={"color": COLORS["base"], "width": 2, "dash": "dash"},
            marker={"size": 9, "symbol": "diamond"},
            hovertemplate="step %{x}<br>validation loss %{y:.4f} nats<extra></extra>"))
    return style_figure(fig, title, "optimizer step", "loss (nats/token)")


def loss_overlay(runs: dict[str, list[dict]], title: str = "Loss curves of the selected runs") -> go.Figure:
    """Training loss (solid) and validation loss (dashed, diamonds) of several runs on one plot.

    ``runs``: run name -> progress records (as in :func:`loss_curve`). One or two traces per run,
    named ``"<run> · train"`` and ``"<run> · validation"``; a run's two traces share a colour.
    """
    fig = go.Figure()
    for i, (name, records) in enumerate(runs.items()):
        color = RUN_COLORS[i % len(RUN_COLORS)]
        train = [r for r in records if r.get("kind") == "train" and as_number(r.get("loss")) is not None]
        evals = [r for r in records if r.get("kind") == "eval" and as_number(r.get("eval_loss")) is not None]
        if train:
            fig.add_trace(go.Scatter(x=[r["step"] for r in train], y=[r["loss"] for r in train],
                                     mode="lines", name=f"{name} · train", line={"color": color, "width": 2},
                                     hovertemplate="step %{x}<br>training loss %{y:.4f} nats<extra>%{fullData.name}</extra>"))
        if evals:
            fig.add_trace(go.Scatter(x=[r["step"] for r in evals], y=[r["eval_loss"] for r in evals],
                                     mode="lines+markers", name=f"{name} · validation",
                                     line={"color": color, "width": 2, "dash": "dash"},
                                     marker={"size": 8, "symbol": "diamond"},
                                     hovertemplate="step %{x}<br>validation loss %{y:.4f} nats<extra>%{fullData.name}</extra>"))
    if not fig.data:
        return empty_figure(title, "Pick runs with a loss log to overlay their curves",
                            x_title="optimizer step", y_title="loss (nats/token)")
    return style_figure(fig, title, "optimizer step", "loss (nats/token)", height=400)


def _percent_text(entry: dict, key: str) -> str:
    percent = (entry.get("percent_of_base") or {}).get(key)
    return f"{percent:.0f}%" if as_number(percent) is not None else ""


def rouge_bars(metrics: dict | None,
               title: str = "ROUGE F1 on the validation samples (labels: % of base)") -> go.Figure:
    """Grouped bars of ROUGE-1/2/L F1 (0-100), one trace per model (base, student, quantized).

    ``metrics``: ``{"base": entry, "student": entry, "quantized": entry | None}`` with entries as in
    ``metrics.json`` (``rouge1``..., ``rouge`` {metric: {precision, recall, fmeasure}}, optional
    ``rouge_ci`` {metric: [low, high]} drawn as error bars, ``percent_of_base`` {metric: %} written
    on the student's and quantized bars as ``"90%"``). Precision and recall are in the hover text.
    """
    names = _present(metrics)
    if not names:
        return empty_figure(title, "ROUGE scores appear here after a run", x_title="metric",
                            y_title="F1 (0-100)")
    fig = go.Figure()
    for name in names:
        entry = metrics[name]
        keys = [key for key, _ in ROUGE]
        f1 = [as_number(entry.get(key)) for key in keys]
        detail = entry.get("rouge") or {}
        custom = [[as_number((detail.get(key) or {}).get("precision")), as_number((detail.get(key) or {}).get("recall"))]
                  for key in keys]
        ci = entry.get("rouge_ci") or {}
        error = None
        if all(isinstance(ci.get(key), (list, tuple)) and len(ci[key]) == 2 for key in keys) and None not in f1:
            error = {"type": "data", "symmetric": False, "color": FONT_COLOR, "thickness": 1.2,
                     "array": [max(ci[key][1] - v, 0.0) for key, v in zip(keys, f1)],
                     "arrayminus": [max(v - ci[key][0], 0.0) for key, v in zip(keys, f1)]}
        text = [_percent_text(entry, key) if name != "base" else (f"{v:.1f}" if v is not None else "n/a")
                for key, v in zip(keys, f1)]
        fig.add_trace(go.Bar(
            x=[label for _, label in ROUGE], y=f1, name=LABELS[name], marker_color=COLORS[name],
            customdata=custom, text=text, textposition="outside", error_y=error, cliponaxis=False,
            hovertemplate=("%{x} F1 %{y:.2f}<br>precision %{customdata[0]:.2f}<br>"
                           "recall %{customdata[1]:.2f}<extra>%{fullData.name}</extra>")))
    fig.update_layout(barmode="group", bargap=0.25)
    return style_figure(fig, title, "metric", "F1 (0-100)")


def validation_loss_bars(metrics: dict | None,
                         title: str = "Validation loss (lower is better)") -> go.Figure:
    """One bar per model: token cross-entropy on the validation samples, nats/token, value on the bar.

    With an untrained or tiny teacher ROUGE is near zero; this is the figure that still separates
    the models.
    """
    names = [n for n in _present(metrics) if as_number(metrics[n].get("validation_loss")) is not None]
    if not names:
        return empty_figure(title, "Validation losses appear here after a run", x_title="model",
                            y_title="loss (nats/token)")
    values = [metrics[n]["validation_loss"] for n in names]
    fig = go.Figure(go.Bar(
        x=[TICK_LABELS[n] for n in names], y=values, marker_color=[COLORS[n] for n in names],
        text=[f"{v:.3f}" for v in values], textposition="outside", cliponaxis=False, showlegend=False,
        customdata=[LABELS[n] for n in names],
        hovertemplate="%{customdata}<br>validation loss %{y:.4f} nats/token<extra></extra>"))
    style_figure(fig, title, "model", "loss (nats/token)")
    fig.update_xaxes(tickangle=0)
    return fig


def size_latency_bars(metrics: dict | None, title: str = "Size and speed") -> go.Figure:
    """Three bar panels side by side: parameters (millions), size on disk (MiB), latency (ms per
    summary at batch size 1); one bar per model, its value written on it, named on two lines
    (:data:`TICK_LABELS`) so that four names fit under a third of the page."""
    names = _present(metrics)
    panels = (("params", "Parameters (millions)", 1e-6, "{:.2f} M"),
              ("size_mib", "Size on disk (MiB)", 1.0, "{:.1f}"),
              ("latency_ms", "Latency (ms / summary)", 1.0, "{:.1f}"))
    if not names:
        return empty_figure(title, "Size and latency appear here after a run", height=380)
    fig = make_subplots(rows=1, cols=3, subplot_titles=[p[1] for p in panels], horizontal_spacing=0.09)
    for col, (key, label, scale, fmt) in enumerate(panels, start=1):
        values = [as_number(metrics[n].get(key)) for n in names]
        shown = [v * scale if v is not None else None for v in values]
        fig.add_trace(go.Bar(
            x=[TICK_LABELS[n] for n in names], y=shown, marker_color=[COLORS[n] for n in names],
            text=[fmt.format(v) if v is not None else "n/a" for v in shown], textposition="outside",
            cliponaxis=False, showlegend=False, name=label, customdata=[LABELS[n] for n in names],
            hovertemplate="%{customdata}<br>" + label + ": %{y:.3f}<extra></extra>"), row=1, col=col)
    style_figure(fig, title, None, None, height=380)
    fig.update_yaxes(title_text="millions", row=1, col=1)
    fig.update_yaxes(title_text="MiB", row=1, col=2)
    fig.update_yaxes(title_text="ms per summary", row=1, col=3)
    fig.update_xaxes(tickangle=0, tickfont={"size": 11})
    fig.update_annotations(font={"color": FONT_COLOR, "size": 13})
    return fig


def layer_plan(n_encoder: int, n_decoder: int, kept_encoder: list[int], kept_decoder: list[int],
               title: str | None = None) -> go.Figure:
    """Both teacher stacks as rows of squares: kept layers coloured (labelled with their index in
    the student), dropped layers grey with a cross.

    x is the teacher layer index (0 = the layer nearest the embeddings); rows are encoder and
    decoder. Traces: ``"kept"`` and ``"dropped"`` (the latter only when a layer is dropped).
    """
    kept_x, kept_y, kept_text, kept_hover = [], [], [], []
    drop_x, drop_y, drop_hover = [], [], []
    for stack, depth, kept in (("Encoder", n_encoder, kept_encoder), ("Decoder", n_decoder, kept_decoder)):
        position = {teacher: student for student, teacher in enumerate(kept)}
        for layer in range(depth):
            if layer in position:
                kept_x.append(layer)
                kept_y.append(stack)
                kept_text.append(str(position[layer]))
                kept_hover.append(f"{stack} layer {layer}: kept as student layer {position[layer]}")
            else:
                drop_x.append(layer)
                drop_y.append(stack)
                drop_hover.append(f"{stack} layer {layer}: dropped")
    title = title or (f"Layer plan: encoder {n_encoder} → {len(kept_encoder)}, "
                      f"decoder {n_decoder} → {len(kept_decoder)}")
    size = 26 if max(n_encoder, n_decoder) <= 16 else 18
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=kept_x, y=kept_y, mode="markers+text", name="kept", text=kept_text, textposition="middle center",
        textfont={"color": "white", "size": 11},
        marker={"symbol": "square", "size": size, "color": KEPT_COLOR, "line": {"width": 0}},
        hovertext=kept_hover, hoverinfo="text"))
    if drop_x:
        fig.add_trace(go.Scatter(
            x=drop_x, y=drop_y, mode="markers", name="dropped",
            marker={"symbol": "square-x", "size": size, "color": DROPPED_COLOR,
                    "line": {"width": 1, "color": FONT_COLOR}},
            hovertext=drop_hover, hoverinfo="text"))
    style_figure(fig, title, "teacher layer index (0 = next to the embeddings; numbers: student layer)", None,
           height=250)
    depth = max(n_encoder, n_decoder)
    fig.update_xaxes(range=[-0.7, depth - 0.3], dtick=1 if depth <= 24 else 2, showgrid=False, zeroline=False)
    fig.update_yaxes(categoryorder="array", categoryarray=["Decoder", "Encoder"], showgrid=False,
                     range=[-0.6, 1.6])
    fig.update_layout(margin={"l": 80, "r": 16, "t": 72, "b": 56})
    return fig


#: Rows of :func:`importance_heatmap`: (score key of :func:`compression.importance.layer_importance`, label).
IMPORTANCE_ROWS = (("drop_one_loss", "drop-one Δloss"), ("block_influence", "block influence"))


def importance_heatmap(importance: dict, kept_encoder: list[int], kept_decoder: list[int]) -> go.Figure:
    """Layer importance of both stacks as a heatmap, the layers the plan keeps outlined.

    ``importance``: :func:`compression.importance.layer_importance`'s dict. Rows (top to bottom):
    encoder drop-one Δloss (nats: validation-loss increase when that one layer is removed), encoder
    Block Influence (1 - cosine of the layer's input and output, ShortGPT), then the decoder's two;
    x is the teacher layer index. Colours are scaled per row (0 = that row's least important
    layer, 1 = its most), the cell text is the raw score. Traces: ``"importance"`` (the heatmap)
    and ``"kept"`` (outlined squares on the kept layers).
    """
    rows, z, text, kept_x, kept_y = [], [], [], [], []
    depth = max(len(importance[stack]["block_influence"]) for stack in ("encoder", "decoder"))
    for stack, kept in (("encoder", kept_encoder), ("decoder", kept_decoder)):
        for key, label in IMPORTANCE_ROWS:
            values = importance[stack].get(key)
            if values is None:
                continue
            name = f"{stack} · {label}"
            present = [v for v in values if v is not None]
            low, high = (min(present), max(present)) if present else (0.0, 1.0)
            span = (high - low) or 1.0
            rows.append(name)
            z.append([None if v is None else (v - low) / span for v in values] + [None] * (depth - len(values)))
            text.append([("-" if v is None else f"{v:.3f}") for v in values] + [""] * (depth - len(values)))
            kept_x += kept
            kept_y += [name] * len(kept)
    fig = go.Figure()
    fig.add_trace(go.Heatmap(
        z=z, x=list(range(depth)), y=rows, text=text, texttemplate="%{text}", name="importance",
        colorscale=[[0.0, "#1e293b"], [1.0, KEPT_COLOR]], zmin=0, zmax=1, showscale=False, xgap=2, ygap=2,
        hovertemplate="%{y}, layer %{x}: %{text}<extra></extra>"))
    fig.add_trace(go.Scatter(
        x=kept_x, y=kept_y, mode="markers", name="kept", hoverinfo="skip",
        marker={"symbol": "square-open", "size": 30, "color": "white", "line": {"width": 2}}))
    style_figure(fig, f"Layer importance on {importance['samples']} training pairs (outlined: kept)",
                 "teacher layer index", None, height=90 + 38 * len(rows))
    fig.update_xaxes(dtick=1 if depth <= 24 else 2, showgrid=False, zeroline=False)
    fig.update_yaxes(autorange="reversed", showgrid=False)
    fig.update_layout(margin={"l": 170, "r": 16, "t": 60, "b": 48}, showlegend=False)
    return fig


def runs_comparison(runs: dict[str, dict], title: str = "Students of the selected runs") -> go.Figure:
    """Compare runs: left, each run's student ROUGE-1/2/L F1 (0-100) as grouped bars (one trace per
    run, % of base in the hover); right, each run's student validation loss (nats/token).

    ``runs``: run name -> its ``metrics.json`` dict. Runs without a student entry are left out.
    """
    usable = {name: m["student"] for name, m in runs.items() if isinstance((m or {}).get("student"), dict)}
    if not usable:
        return empty_figure(title, "Pick finished runs to compare their students", height=400)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.65, 0.35], horizontal_spacing=0.1,
                        subplot_titles=("Student ROUGE F1 (0-100)", "Student validation loss (nats/token)"))
    for i, (name, student) in enumerate(usable.items()):
        color = RUN_COLORS[i % len(RUN_COLORS)]
        percent = student.get("percent_of_base") or {}
        fig.add_trace(go.Bar(
            x=[label for _, label in ROUGE], y=[as_number(student.get(k)) for k, _ in ROUGE], name=name,
            marker_color=color, legendgroup=name,
            customdata=[[as_number(percent.get(k))] for k, _ in ROUGE],
            hovertemplate="%{x} F1 %{y:.2f}<br>%{customdata[0]:.1f}% of base<extra>%{fullData.name}</extra>"),
            row=1, col=1)
        loss = as_number(student.get("validation_loss"))
        fig.add_trace(go.Bar(
            x=[name], y=[loss], marker_color=color, name=name, legendgroup=name, showlegend=False,
            text=[f"{loss:.3f}" if loss is not None else "n/a"], textposition="outside", cliponaxis=False,
            hovertemplate="%{x}<br>validation loss %{y:.4f} nats/token<extra></extra>"), row=1, col=2)
    fig.update_layout(barmode="group")
    style_figure(fig, title, None, None, height=420)
    fig.update_yaxes(title_text="F1 (0-100)", row=1, col=1)
    fig.update_yaxes(title_text="nats/token", row=1, col=2)
    fig.update_xaxes(title_text="metric", row=1, col=1)
    fig.update_xaxes(title_text="run", showticklabels=False, row=1, col=2)
    fig.update_annotations(font={"color": FONT_COLOR, "size": 13})
    return fig
