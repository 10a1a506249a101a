"""Panel 2, shrink plan: how many encoder/decoder layers the student keeps and which.

The picture and the size estimate update live as the sliders move; both come from
:func:`compression.layers.parse_layers` (the same selection the run uses) and the exact per-layer
parameter counts recorded when the base model was loaded.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import gradio as gr

from compression.config import IMPORTANCE, STRATEGIES
from compression.layers import estimate_student

from . import charts
from .feedback import as_toast, user_errors
from .state import AppSettings, Session

CUSTOM = "custom"
STRATEGY_CHOICES = [*STRATEGIES, IMPORTANCE, CUSTOM]
STRATEGY_HELP = ("spread: maximally spaced, first and last kept (SFT) · alternate: every other layer "
                 "from the first · first / last: the bottom / top layers · importance: the layers whose removal "
                 "costs the most validation loss, scored on the first training pairs · custom: type indices")
#: The score the importance strategy ranks layers by (``ShrinkArgs.importance_score``'s default).
IMPORTANCE_SCORE = "drop_one_loss"


def _custom_spec(text: str | None, depth: int, stack: str) -> str | None:
    """A custom index list as ``ShrinkArgs`` takes it: ``None`` (keep all) for an empty box, else
    the comma-separated indices, with a trailing comma for a single index (so ``"2,"`` means layer 2,
    not a count of 2)."""
    from compression.layers import parse_layers

    text = (text or "").strip().strip(",")
    if not text:
        return None
    if "," not in text:
        text += ","
    indices = parse_layers(text, depth, "spread", stack)
    return ",".join(str(i) for i in indices) + ("," if len(indices) == 1 else "")


def shrink_choice(session: Session, encoder_layers, decoder_layers, strategy: str,
                  encoder_custom: str | None, decoder_custom: str | None) -> tuple[dict, list[int], list[int]]:
    """Turn the panel's widgets into ``(ShrinkArgs kwargs, kept encoder indices, kept decoder indices)``.

    Raises:
        LayerSelectionError: counts out of range, or custom indices that are not numbers, repeat,
            or lie outside the model.
        ModelLoadError: no base model loaded yet.
    """
    from compression.errors import LayerSelectionError, ModelLoadError
    from compression.layers import parse_layers

    if session.facts is None:
        raise ModelLoadError("load a base model first (panel 1)")
    n_enc, n_dec = session.facts["encoder_layers"], session.facts["decoder_layers"]
    if strategy == CUSTOM:
        kwargs = {"encoder_layers": _custom_spec(encoder_custom, n_enc, "encoder"),
                  "decoder_layers": _custom_spec(decoder_custom, n_dec, "decoder"), "strategy": "spread"}
    else:
        if strategy not in (*STRATEGIES, IMPORTANCE):
            raise LayerSelectionError(f"unknown strategy {strategy!r}: choose one of {', '.join(STRATEGY_CHOICES)}")
        try:
            counts = [float(encoder_layers), float(decoder_layers)]
        except (TypeError, ValueError):
            counts = [math.nan]
        if not all(count.is_integer() for count in counts):  # 2.5 is refused, never rounded
            raise LayerSelectionError(f"the layer counts must be whole numbers (got {encoder_layers!r}, "
                                      f"{decoder_layers!r})")
        kwargs = {"encoder_layers": int(counts[0]), "decoder_layers": int(counts[1]), "strategy": strategy}
    if strategy == IMPORTANCE:  # kept by their scores; before scoring, the count's spread layers stand in
        from compression.importance import selection_scores
        from compression.layers import select_layers

        if session.importance is None:
            kept_enc = parse_layers(kwargs["encoder_layers"], n_enc, "spread", "encoder")
            kept_dec = parse_layers(kwargs["decoder_layers"], n_dec, "spread", "decoder")
            return kwargs, kept_enc, kept_dec
        scores = selection_scores(session.importance, IMPORTANCE_SCORE)
        kwargs["importance_samples"] = session.importance["samples"]  # the run scores the same first pairs
        return (kwargs, select_layers(n_enc, kwargs["encoder_layers"], IMPORTANCE, "encoder", scores["encoder"]),
                select_layers(n_dec, kwargs["decoder_layers"], IMPORTANCE, "decoder", scores["decoder"]))
    kept_enc = parse_layers(kwargs["encoder_layers"], n_enc, kwargs["strategy"], "encoder")
    kept_dec = parse_layers(kwargs["decoder_layers"], n_dec, kwargs["strategy"], "decoder")
    return kwargs, kept_enc, kept_dec


def estimate_markdown(session: Session, kept_enc: list[int], kept_dec: list[int]) -> str:
    """The line under the picture: student parameters and fp32 size, and their share of the base's."""
    params, size = estimate_student(session.footprint, kept_enc, kept_dec)
    base_params, base_size = session.footprint["params"], session.footprint["bytes"] / 2**20
    return (f"**Student:** {params / 1e6:.2f} M parameters ({100 * params / base_params:.0f}% of "
            f"{base_params / 1e6:.2f} M) · **{size:.1f} MiB** in fp32 ({100 * size / base_size:.0f}% of "
            f"{base_size:.1f} MiB), before quantization · keeps encoder layers {kept_enc}, "
            f"decoder layers {kept_dec}")


@user_errors
def update_plan(settings: AppSettings, session: Session, encoder_layers, decoder_layers, strategy: str,
                encoder_custom: str | None, decoder_custom: str | None):
    """Redraw the layer picture and the estimate for the current choice.

    Returns ``(plotly figure, estimate markdown)``; before a model is loaded, a placeholder figure
    and a hint (no error, since the sliders fire on their own).

    Raises (as ``gr.Error``): LayerSelectionError for bad counts or custom indices.
    """
    if session.facts is None:
        return (charts.empty_figure("Layer plan", "Load a base model to plan the student", height=250),
                "Load a base model first.")
    _, kept_enc, kept_dec = shrink_choice(session, encoder_layers, decoder_layers, strategy,
                                          encoder_custom, decoder_custom)
    if strategy == IMPORTANCE and session.importance is None:
        return (charts.empty_figure("Layer plan", "importance: press “Score the layers” below to see which "
                                    "layers are kept (the run scores them itself otherwise)", height=250),
                estimate_markdown(session, kept_enc, kept_dec).split(" · keeps ")[0]
                + " · which layers: the highest drop-one Δloss, scored when the run starts")
    figure = charts.layer_plan(session.facts["encoder_layers"], session.facts["decoder_layers"],
                               kept_enc, kept_dec)
    return figure, estimate_markdown(session, kept_enc, kept_dec)


@user_errors
def update_importance(settings: AppSettings, session: Session, encoder_layers, decoder_layers, strategy: str,
                      encoder_custom: str | None, decoder_custom: str | None):
    """Redraw the importance heatmap's kept outlines for the current choice (``gr.skip()`` before
    the layers were scored)."""
    if session.importance is None or session.facts is None:
        return gr.skip()
    _, kept_enc, kept_dec = shrink_choice(session, encoder_layers, decoder_layers, strategy,
                                          encoder_custom, decoder_custom)
    return charts.importance_heatmap(session.importance, kept_enc, kept_dec)


@user_errors
def score_layers(settings: AppSettings, session: Session, encoder_layers, decoder_layers, strategy: str,
                 encoder_custom: str | None, decoder_custom: str | None, source: str, train_file, validation_file,
                 text_column, summary_column, max_source_length, max_target_length, samples=32,
                 progress=gr.Progress()):  # noqa: B008 - gradio fills in a tracker given as the default
    """Score the loaded base's layers on the first ``samples`` training pairs of panel 3's data
    (:func:`compression.importance.importance_for_data`: drop-one Δloss, Block Influence, angular
    distance; one forward pass per layer, with a progress line) and keep them in the session, so
    the importance strategy's plan shows the layers the run will keep.

    Returns ``(heatmap, layer plan figure, estimate)``.

    Raises (as ``gr.Error``): ModelLoadError (nothing loaded), DatasetError (panel 3's data),
    LayerSelectionError (counts).
    """
    from compression.errors import ModelLoadError
    from compression.importance import importance_for_data

    from .feedback import positive_int
    from .train_panel import data_args

    if session.model_source is None:
        raise ModelLoadError("load a base model first (panel 1)")
    samples = positive_int(samples, "pairs to score on")
    data = data_args(settings, source, train_file, validation_file, text_column, summary_column, samples, 1,
                     max_source_length, max_target_length)
    progress(0.0, desc="loading the base model and the pairs")
    session.importance = importance_for_data(session.model_source, data, samples=samples,
                                             on_progress=lambda message, done: progress(done, desc=message))
    choice = (encoder_layers, decoder_layers, strategy, encoder_custom, decoder_custom)
    return (update_importance(settings, session, *choice), *update_plan(settings, session, *choice))


def cut_advice_line(session: Session, max_source_length) -> str:
    """Panel 2's speed line: which stack to cut for more generation speed per layer removed at panel
    3's max source length, for the loaded base (:func:`compression.length_plan.cut_advice`, a modelled
    cost). Empty before a base is loaded or for an architecture the model does not cover."""
    from compression.errors import CompressionError
    from compression.length_plan import cut_advice

    if session.length_profile is None:
        return ""
    try:
        length = int(float(max_source_length))
        advice = cut_advice(session.length_profile, length)
    except (TypeError, ValueError, CompressionError):
        return ""
    return advice.line() + " Source length: panel 3's max source length."


def toggle_custom(strategy: str):
    """Show the index boxes only for the custom strategy (the sliders then do not apply)."""
    custom = strategy == CUSTOM
    return gr.Row(visible=custom), gr.Slider(interactive=not custom), gr.Slider(interactive=not custom)


def build_plan_panel(settings: AppSettings, session: gr.State) -> SimpleNamespace:
    """Lay out panel 2 and wire its live updates (sliders, strategy, custom indices)."""
    from functools import partial

    with gr.Column(elem_classes=["panel"]):
        gr.Markdown("### 2 · Shrink plan")
        with gr.Row():
            encoder = gr.Slider(1, 12, value=12, step=1, label="Encoder layers to keep", elem_id="encoder-layers",
                                interactive=False)
            decoder = gr.Slider(1, 12, value=6, step=1, label="Decoder layers to keep", elem_id="decoder-layers",
                                interactive=False)
        strategy = gr.Radio(STRATEGY_CHOICES, value="spread", label="Which layers", info=STRATEGY_HELP,
                            elem_id="strategy")
        with gr.Row(visible=False) as custom_row:
            encoder_custom = gr.Textbox(label="Encoder layer indices", placeholder="e.g. 0,2,5 (empty: keep all)",
                                        elem_id="encoder-custom")
            decoder_custom = gr.Textbox(label="Decoder layer indices", placeholder="e.g. 0,5 (empty: keep all)",
                                        elem_id="decoder-custom")
        picture = gr.Plot(charts.empty_figure("Layer plan", "Load a base model to plan the student", height=250),
                          label="Layer plan", show_label=False, elem_id="plan-plot")
        estimate = gr.Markdown("Load a base model first.", elem_id="plan-estimate")
        cut_line = gr.Markdown("", elem_id="plan-cut-advice")
        with gr.Accordion("Layer importance, scored on your data", open=False):
            with gr.Row():
                score_samples = gr.Number(32, label="Training pairs to score on", precision=0, minimum=1,
                                          maximum=512, elem_id="importance-samples")
                score = gr.Button("Score the layers", elem_id="score-layers")
            heatmap = gr.Plot(charts.empty_figure("Layer importance", "Press “Score the layers” (panel 3's data)",
                                                  height=200), show_label=False, label="Layer importance",
                              elem_id="importance-plot")

    inputs = [session, encoder, decoder, strategy, encoder_custom, decoder_custom]
    handler = as_toast(partial(update_plan, settings), 2, status=1)
    strategy.change(toggle_custom, strategy, [custom_row, encoder, decoder], api_name="toggle_custom",
                    show_progress="hidden")
    gr.on([encoder.input, decoder.input, strategy.change, encoder_custom.submit, encoder_custom.blur,
           decoder_custom.submit, decoder_custom.blur],
          handler, inputs, [picture, estimate], api_name="plan", show_progress="hidden",
          trigger_mode="always_last")
    gr.on([encoder.input, decoder.input, strategy.change, encoder_custom.submit, encoder_custom.blur,
           decoder_custom.submit, decoder_custom.blur],
          as_toast(partial(update_importance, settings)), inputs, heatmap, api_visibility="private",
          show_progress="hidden", trigger_mode="always_last")
    return SimpleNamespace(encoder=encoder, decoder=decoder, strategy=strategy, encoder_custom=encoder_custom,
                           decoder_custom=decoder_custom, picture=picture, estimate=estimate, handler=handler,
                           cut_line=cut_line,
                           inputs=inputs, score=score, score_samples=score_samples, heatmap=heatmap)
