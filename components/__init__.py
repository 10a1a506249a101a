"""Gradio panels of the compression dashboard: one module per panel, no model logic.

Each ``build_*`` function lays out its panel's widgets inside the current ``gr.Blocks`` context,
wires the panel's own events and returns its widgets (a ``SimpleNamespace``) so :mod:`app` can wire
events that cross panels. Event handlers are plain module-level functions taking the operator's
:class:`components.state.AppSettings` first, so tests call them directly.
"""
