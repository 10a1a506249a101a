"""Plotly figures of the "Train once, assemble many" tab and of the method comparison benchmark.

Pure builders in the style of :mod:`components.charts` (plain records in, ``go.Figure`` out, same
styling, no gradio and no model code), kept in their own module so that file stays untouched:

* :func:`modules_loss_curve`: Modular Transformers training, one line per loss term.
* :func:`tradeoff_figure`: students of one teacher as points on quality-vs-speed and
  quality-vs-size panels, one marker style per method (teacher, SFT, KD, modular size-/speed-first),
  optionally with each panel's Pareto front. ``benchmarks/methods.py`` draws its chart with it too.
* :func:`assembly_plan`: which teacher layers an assembled student keeps and which spans its
  modules replace.
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .charts import COLORS, FONT_COLOR, GRID_COLOR, as_number, empty_figure, style_figure

#: Method labels, in legend order, with their marker colour and symbol.
METHOD_STYLES = {
    "teacher": {"name": "Teacher", "color": COLORS["base"], "symbol": "star", "size": 18},
    "SFT": {"name": "SFT", "color": COLORS["student"], "symbol": "circle", "size": 12},
    "KD": {"name": "KD", "color": "#0ea5e9", "symbol": "diamond", "size": 12},
    "pseudo-labels": {"name": "pseudo-labels (seq. KD)", "color": "#f97316", "symbol": "diamond-open", "size": 12},
    "modular (size-first)": {"name": "modular (size-first)", "color": COLORS["quantized"], "symbol": "square",
                             "size": 12},
    "modular (speed-first)": {"name": "modular (speed-first)", "color": "#a855f7", "symbol": "triangle-up",
                              "size": 13},
    "modular (size = speed)": {"name": "modular (size = speed)", "color": "#14b8a6", "symbol": "square-dot",
                               "size": 13},
}
OTHER_STYLE = {"color": "#eab308", "symbol": "x", "size": 12}
#: Axis titles (with units) of the metrics a panel can plot.
AXES = {
    "speedup": "generation speedup vs teacher (×, greedy, batch 1)",
    "size_mib": "size on disk (MiB)",
    "params": "parameters",
    "validation_loss": "validation loss (nats/token)",
    "rouge1": "ROUGE-1 F1 (0-100)",
    "rouge2": "ROUGE-2 F1 (0-100)",
    "rougeL": "ROUGE-L (sentence) F1 (0-100)",
    "latency_ms": "latency (ms/summary, batch 1)",
}
#: +1 where larger is better, -1 where smaller is better (for the Pareto front).
BETTER = {"speedup": 1, "size_mib": -1, "params": -1, "validation_loss": -1, "rouge1": 1, "rouge2": 1,
          "rougeL": 1, "latency_ms": -1}
#: The dashboard's two panels: ROUGE vs speedup, validation loss vs size.
#: ROUGE-1 and validation loss (offline, where ROUGE is near zero, the figure that separates
#: students), each against speedup and against size: a 2 x 2 grid.
DASHBOARD_PANELS = (("speedup", "rouge1"), ("size_mib", "rouge1"),
                    ("speedup", "validation_loss"), ("size_mib", "validation_loss"))
TERM_LINES = (("loss", "training loss (weighted total)", COLORS["student"], "solid"),
              ("ce", "cross-entropy (nats/token)", COLORS["base"], "solid"),
              ("hidden", "hidden-state MSE (span outputs)", COLORS["quantized"], "dot"),
              ("attention", "attention KL (nats)", "#a855f7", "dot"))
GRANULARITY_COLORS = ("#ef4444", "#0ea5e9", "#eab308", "#14b8a6", "#a855f7")


def modules_loss_curve(records: list[dict], title: str = "Module training (multi-grained replacing)") -> go.Figure:
    """Training loss terms per logged step and validation losses per evaluation.

    ``records``: progress dicts of :func:`compression.modular.train_modules` (``kind`` ``"train"``
    with ``loss``, ``ce``, ``hidden``, ``attention``; ``kind`` ``"eval"`` with ``eval_loss`` and
    ``eval_loss_g{g}``). Traces, each only when it has points: ``"training loss (weighted total)"``,
    ``"cross-entropy (nats/token)"``, ``"hidden-state MSE (span outputs)"``, ``"attention KL
    (nats)"``, ``"validation loss (mean over granularities)"`` and ``"validation, all g{g} modules"``
    per granularity (token cross-entropy, nats).
    """
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval" and as_number(r.get("eval_loss")) is not None]
    fig = go.Figure()
    for key, name, color, dash in TERM_LINES:
        points = [r for r in train if as_number(r.get(key)) is not None]
        if points:
            fig.add_trace(go.Scatter(
                x=[r["step"] for r in points], y=[r[key] for r in points], mode="lines+markers", name=name,
                line={"color": color, "width": 2, "dash": dash}, marker={"size": 4},
                hovertemplate="step %{x}<br>%{y:.4f}<extra>%{fullData.name}</extra>"))
    if evals:
        fig.add_trace(go.Scatter(
            x=[r["step"] for r in evals], y=[r["eval_loss"] for r in evals], mode="lines+markers",
            name="validation loss (mean over granularities)", line={"color": FONT_COLOR, "width": 2, "dash": "dash"},
            marker={"size": 9, "symbol": "diamond"},
            hovertemplate="step %{x}<br>validation loss %{y:.4f} nats<extra></extra>"))
        granularities = sorted({int(key[len("eval_loss_g"):]) for r in evals for key in r
                                if key.startswith("eval_loss_g") and key[len("eval_loss_g"):].isdigit()})
        for i, g in enumerate(granularities):
            points = [r for r in evals if as_number(r.get(f"eval_loss_g{g}")) is not None]
            fig.add_trace(go.Scatter(
                x=[r["step"] for r in points], y=[r[f"eval_loss_g{g}"] for r in points], mode="lines+markers",
                name=f"validation, all g{g} modules", marker={"size": 7, "symbol": "diamond-open"},
                line={"color": GRANULARITY_COLORS[i % len(GRANULARITY_COLORS)], "width": 1.5, "dash": "dash"},
                hovertemplate=f"step %{{x}}<br>every g{g} span replaced: %{{y:.4f}} nats<extra></extra>"))
    if not fig.data:
        return empty_figure(title, "The loss terms appear here once module training logs its first steps",
                            x_title="optimizer step", y_title="loss")
    style_figure(fig, title, "optimizer step", "loss (nats/token; MSE for hidden states)", height=440)
    # up to 4 + 1 + granularities legend entries: under the plot, where they cannot cover the title
    fig.update_layout(margin={"l": 64, "r": 16, "t": 56, "b": 130},
                      legend={"orientation": "h", "yanchor": "top", "y": -0.22, "xanchor": "left", "x": 0.0})
    return fig


def _style_of(method: str) -> dict:
    return METHOD_STYLES.get(method, {"name": method, **OTHER_STYLE})


def pareto_front(points: Sequence[dict], x_key: str, y_key: str) -> list[dict]:
    """The points no other point beats on both ``x_key`` and ``y_key`` (directions from
    :data:`BETTER`), sorted by ``x_key``. Points missing either value are ignored."""
    usable = [p for p in points if as_number(p.get(x_key)) is not None and as_number(p.get(y_key)) is not None]
    sx, sy = BETTER.get(x_key, 1), BETTER.get(y_key, 1)

    def dominated(p: dict) -> bool:
        return any(sx * q[x_key] >= sx * p[x_key] and sy * q[y_key] >= sy * p[y_key]
                   and (q[x_key] != p[x_key] or q[y_key] != p[y_key]) for q in usable)

    return sorted((p for p in usable if not dominated(p)), key=lambda p: p[x_key])


def _short(key: str) -> str:
    """A metric's name for a panel title: ``"speedup"`` -> ``"speedup"``, ``"rouge1"`` -> ``"ROUGE-1 F1"``."""
    return {"speedup": "speedup", "size_mib": "size"}.get(key, AXES.get(key, key).split(" (")[0])


def _hover(point: dict) -> str:
    parts = [f"<b>{point.get('method')}</b> {point.get('label') or ''}".strip()]
    layers = (point.get("encoder_layers"), point.get("decoder_layers"))
    if None not in layers:
        parts.append(f"encoder {layers[0]} · decoder {layers[1]} layers")
    for key, fmt in (("params", "{:,.0f} parameters"), ("size_mib", "{:.1f} MiB"),
                     ("validation_loss", "validation loss {:.4f} nats/token"), ("rouge1", "ROUGE-1 {:.2f}"),
                     ("rouge2", "ROUGE-2 {:.2f}"), ("rougeL", "ROUGE-L (sentence) {:.2f}"), ("speedup", "speedup {:.2f}×")):
        value = as_number(point.get(key))
        if value is not None:
            parts.append(fmt.format(value))
    if point.get("note"):
        parts.append(str(point["note"]))
    return "<br>".join(parts)


def tradeoff_figure(points: Sequence[dict], panels: Sequence[tuple[str, str]] = DASHBOARD_PANELS, *,
                    title: str = "Students of one teacher: quality vs speed and size",
                    pareto: bool = False) -> go.Figure:
    """One panel per ``(x_key, y_key)`` pair (two panels per row), one marker style per method
    (:data:`METHOD_STYLES`).

    ``points``: dicts with ``method`` (``"teacher"``, ``"SFT"``, ``"KD"``, ``"modular (size-first)"``,
    ``"modular (speed-first)"``...; any other name gets a neutral style), ``label`` (written next to
    the marker, e.g. ``"2/2"``), and the plotted metrics (keys of :data:`AXES`: ``speedup`` ×,
    ``size_mib`` MiB, ``validation_loss`` nats/token, ``rouge1`` 0-100...), optionally
    ``encoder_layers``/``decoder_layers``/``params``/``note`` for the hover text. Points missing a
    panel's value are left out of that panel. Traces: one per method and panel, named by the
    method's display name (the legend shows each once); with ``pareto`` a dotted ``"Pareto front"``
    trace per panel through the points no other point beats on both axes.
    """
    panels = list(panels)
    plotted = [p for p in points if any(as_number(p.get(x)) is not None and as_number(p.get(y)) is not None
                                        for x, y in panels)]
    if not plotted:
        return empty_figure(title, "Points appear here once models are evaluated", height=420)
    titles = [f"{_short(y)} against {_short(x)}" for x, y in panels]
    n_cols = min(len(panels), 2)
    n_rows = -(-len(panels) // n_cols)
    fig = make_subplots(rows=n_rows, cols=n_cols, subplot_titles=titles, horizontal_spacing=0.1,
                        vertical_spacing=0.16 if n_rows > 1 else 0.1)
    methods = list(dict.fromkeys([m for m in METHOD_STYLES if any(p.get("method") == m for p in plotted)]
                                 + [p.get("method") for p in plotted]))
    shown: set[str] = set()
    for index, (x_key, y_key) in enumerate(panels):
        row, col = index // n_cols + 1, index % n_cols + 1
        for method in methods:
            rows = [p for p in plotted if p.get("method") == method
                    and as_number(p.get(x_key)) is not None and as_number(p.get(y_key)) is not None]
            if not rows:
                continue
            style = _style_of(method)
            fig.add_trace(go.Scatter(
                x=[p[x_key] for p in rows], y=[p[y_key] for p in rows], mode="markers+text",
                name=style["name"], legendgroup=method, showlegend=method not in shown,
                text=[p.get("label") or "" for p in rows], textposition="top center",
                textfont={"size": 11, "color": FONT_COLOR},
                marker={"color": style["color"], "symbol": style["symbol"], "size": style["size"],
                        "line": {"width": 1, "color": "rgba(255,255,255,0.6)"}},
                hovertext=[_hover(p) for p in rows], hoverinfo="text"), row=row, col=col)
            shown.add(method)
        if pareto:
            front = pareto_front(plotted, x_key, y_key)
            if len(front) > 1:
                fig.add_trace(go.Scatter(
                    x=[p[x_key] for p in front], y=[p[y_key] for p in front], mode="lines", name="Pareto front",
                    legendgroup="pareto", showlegend="pareto" not in shown, hoverinfo="skip",
                    line={"color": FONT_COLOR, "width": 1.5, "dash": "dot"}), row=row, col=col)
                shown.add("pareto")
        fig.update_xaxes(title_text=AXES.get(x_key, x_key), row=row, col=col)
        fig.update_yaxes(title_text=AXES.get(y_key, y_key), row=row, col=col)
    style_figure(fig, title, None, None, height=480 if n_rows == 1 else 380 * n_rows)
    # legend under the panels: above them it would cover the panel titles
    fig.update_layout(margin={"l": 64, "r": 16, "t": 72, "b": 120},
                      legend={"orientation": "h", "yanchor": "top", "y": -0.2, "xanchor": "left", "x": 0.0})
    fig.update_annotations(font={"color": FONT_COLOR, "size": 13})
    return fig


def assembly_plan(depths: dict[str, int], replaced: Sequence[dict], title: str | None = None) -> go.Figure:
    """Both teacher stacks as rows of squares: teacher layers an assembled student keeps in grey,
    layers replaced by a module coloured by the module's granularity and labelled ``g2``/``g3``...

    ``depths``: ``{"encoder": n, "decoder": m}`` teacher depths; ``replaced``: the
    ``config.modular["replaced"]`` entries (``{"stack", "start", "end", "module"}``). Traces:
    ``"teacher layer (kept)"`` and ``"replaced by a module"`` (each only when it has squares). With
    no teacher layers (nothing assembled yet) the figure is an empty placeholder with a message.
    """
    if not any(int(depths.get(stack, 0)) for stack in ("encoder", "decoder")):
        return empty_figure(title or "Assembly", "Assemble a student to see which<br>teacher layers its modules "
                            "replace", height=240)
    kept = {"x": [], "y": [], "hover": []}
    moved = {"x": [], "y": [], "text": [], "hover": [], "color": []}
    by_layer = {}
    granularities = sorted({int(span["end"]) - int(span["start"]) for span in replaced})
    for span in replaced:
        for layer in range(int(span["start"]), int(span["end"])):
            by_layer[(span["stack"], layer)] = span
    for stack in ("encoder", "decoder"):
        row = stack.capitalize()
        for layer in range(int(depths.get(stack, 0))):
            span = by_layer.get((stack, layer))
            if span is None:
                kept["x"].append(layer)
                kept["y"].append(row)
                kept["hover"].append(f"{row} layer {layer}: teacher layer, kept")
            else:
                g = int(span["end"]) - int(span["start"])
                moved["x"].append(layer)
                moved["y"].append(row)
                moved["text"].append(f"g{g}")
                moved["color"].append(GRANULARITY_COLORS[granularities.index(g) % len(GRANULARITY_COLORS)])
                moved["hover"].append(f"{row} layer {layer}: replaced, with layers {span['start']}-"
                                      f"{int(span['end']) - 1}, by module {span['module']}")
    n_enc, n_dec = int(depths.get("encoder", 0)), int(depths.get("decoder", 0))
    new_enc = n_enc - sum(int(s["end"]) - int(s["start"]) - 1 for s in replaced if s["stack"] == "encoder")
    new_dec = n_dec - sum(int(s["end"]) - int(s["start"]) - 1 for s in replaced if s["stack"] == "decoder")
    title = title or f"Assembly: encoder {n_enc} → {new_enc}, decoder {n_dec} → {new_dec} layers"
    size = 26 if max(n_enc, n_dec, 1) <= 16 else 18
    fig = go.Figure()
    if kept["x"]:
        fig.add_trace(go.Scatter(
            x=kept["x"], y=kept["y"], mode="markers", name="teacher layer (kept)", hovertext=kept["hover"],
            hoverinfo="text", marker={"symbol": "square", "size": size, "color": "rgba(139, 147, 161, 0.45)",
                                      "line": {"width": 0}}))
    if moved["x"]:
        fig.add_trace(go.Scatter(
            x=moved["x"], y=moved["y"], mode="markers+text", name="replaced by a module", text=moved["text"],
            textposition="middle center", textfont={"color": "white", "size": 10}, hovertext=moved["hover"],
            hoverinfo="text", marker={"symbol": "square", "size": size, "color": moved["color"],
                                      "line": {"width": 0}}))
    style_figure(fig, title, "teacher layer index (0 = next to the embeddings)", None, height=240)
    depth = max(n_enc, n_dec, 1)
    fig.update_xaxes(range=[-0.7, depth - 0.3], dtick=1 if depth <= 24 else 2, showgrid=False, zeroline=False)
    fig.update_yaxes(categoryorder="array", categoryarray=["Decoder", "Encoder"], showgrid=False,
                     range=[-0.6, 1.6], gridcolor=GRID_COLOR)
    return fig
