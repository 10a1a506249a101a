"""The compression dashboard: ``python app.py`` opens it in the browser; the same file runs unchanged
as a Hugging Face Space.

Six panels (see :mod:`components`): base model, shrink plan, data and training, live training,
results, runs history. Long work runs on gradio's queue: the Run event has a concurrency limit of 1
(one training job on the machine at a time, the others see their queue position), every browser
session keeps its own state, and every user error appears as a message on the page.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ASSETS = ROOT / "assets"
DESCRIPTION = (
    "Compress a seq2seq summarizer (T5 or BART family) by **Shrink and Fine-Tune** "
    "(Shleifer & Rush 2020): copy a subset of the teacher's layers into a shallower student, "
    "train it on the summaries (SFT) or against the teacher (KD), then compare ROUGE, validation loss, size and "
    "speed with the teacher and a quantized copy. The second tab trains Modular Transformers modules once and "
    "assembles students of any ratio without retraining."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags (``python app.py --help``)."""
    parser = argparse.ArgumentParser(description="Dashboard for Shrink-and-Fine-Tune compression of summarizers.")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="interface to listen on (default 127.0.0.1, this machine only; "
                             "0.0.0.0 to serve the network)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                        help="port to listen on (default 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    parser.add_argument("--runs-dir", default="runs", help="folder where runs are written and listed (default runs)")
    parser.add_argument("--offline", action="store_true",
                        help="no model hub: sets HF_HUB_OFFLINE=1 and hides hub checkpoints and datasets")
    parser.add_argument("--allowed-dir", action="append", default=None, metavar="DIR",
                        help="folder visitors may load local models/tokenizers from (repeatable; default: "
                             "the runs folder and the current directory; ../shared, when present, is always readable)")
    parser.add_argument("--max-file-mb", type=int, default=50, help="upload size limit in MB (default 50)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    return parser.parse_args(argv)


def build_demo(settings=None):
    """The whole dashboard as a ``gr.Blocks`` (not launched). ``settings``: a
    :class:`components.state.AppSettings` (default: runs folder ``runs``, online)."""
    import gradio as gr

    from components import model_panel, modular_panel, plan_panel, results_panel, runs_panel, train_panel
    from components.state import AppSettings, session_state

    settings = settings or AppSettings.create()
    from functools import partial

    with gr.Blocks(title="Summarizer compression (SFT)", analytics_enabled=False) as demo:
        session = session_state()
        gr.Markdown(f"# Summarizer compression · Shrink and Fine-Tune\n{DESCRIPTION}", elem_id="intro")
        with gr.Tab("Shrink and train (SFT or KD)"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=2, min_width=320):
                    model = model_panel.build_model_panel(settings, session)
                with gr.Column(scale=3, min_width=420):
                    plan = plan_panel.build_plan_panel(settings, session)
            with gr.Row(equal_height=False):
                with gr.Column(scale=2, min_width=320):
                    train = train_panel.build_train_panel(settings, session)
                with gr.Column(scale=3, min_width=420):
                    live = train_panel.build_live_panel()
            results = results_panel.build_results_panel(settings, session)
            runs = runs_panel.build_runs_panel(settings, session)
        with gr.Tab(modular_panel.TAB_TITLE):  # Modular Transformers: its events are wired inside
            modular_panel.build_modular_tab(settings, session)

        # Panel 1 -> 2: loading sets the slider bounds, then redraws the plan.
        model.load.click(partial(model_panel.load_base, settings), [session, model.choice, model.custom,
                                                                     model.tokenizer],
                         [model.info, plan.encoder, plan.decoder], api_name="load_model",
                         concurrency_limit=2, concurrency_id="load").success(
            plan.handler, plan.inputs, [plan.picture, plan.estimate], api_name="plan_after_load")
        # Panels 1-3 -> 4, then 5 and 6: one training job at a time on this machine.
        form = {"shrink.encoder_layers": plan.encoder, "shrink.decoder_layers": plan.decoder,
                "shrink.strategy": plan.strategy, "encoder_custom": plan.encoder_custom,
                "decoder_custom": plan.decoder_custom, **train.form}
        run_event = train.run.click(partial(train_panel.run_training, settings, list(form)),
                                    [session, *form.values()],
                                    [live.progress, live.loss], api_name="run", concurrency_limit=1,
                                    concurrency_id="gpu")
        run_event.success(partial(results_panel.show_results, settings), session, results.outputs,
                          api_name="show_results").then(runs.handler, None, runs.outputs, api_name="runs_after_run")
        train.cancel.click(partial(train_panel.cancel_training, settings), session, live.progress,
                           api_name="cancel", concurrency_limit=None)
        # Panel 6 -> 5: reopen a finished run.
        runs.open.click(partial(runs_panel.open_run, settings), [session, runs.run], runs.opened,
                        api_name="open_run").success(partial(results_panel.show_results, settings), session,
                                                     results.outputs, api_name="show_opened_run")
        demo.load(runs.handler, None, runs.outputs, api_name="runs_on_load")
    return demo


def launch_options(settings) -> dict:
    """Keyword arguments for ``demo.launch`` shared by :func:`main` and the tests: theme and CSS
    (launch arguments in gradio 6), the upload size limit, no run history (it would keep inputs,
    tokens included, in the browser)."""
    import gradio as gr

    return dict(theme=gr.themes.Default(primary_hue="orange", secondary_hue="indigo", neutral_hue="slate"),
                css_paths=[ASSETS / "style.css"], max_file_size=f"{settings.max_file_mb}mb",
                run_history=False, footer_links=["api", "gradio", "settings"], show_error=False)


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, set up offline mode and logging, build the dashboard and serve it."""
    args = parse_args(argv)
    if args.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from components.state import AppSettings

    settings = AppSettings.create(args.runs_dir, args.allowed_dir, offline=args.offline, max_file_mb=args.max_file_mb)
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    demo = build_demo(settings)
    demo.queue(default_concurrency_limit=2).launch(
        server_name=args.host, server_port=args.port, share=args.share,
        inbrowser=not args.no_browser and not os.environ.get("SPACE_ID"), **launch_options(settings))


if __name__ == "__main__":
    main()
