"""The compression dashboard: ``python app.py`` opens it in the browser; the same file runs unchanged
as a Hugging Face Space.

Six panels (see :mod:`components`): base model, shrink plan, data and training, live training,
results, runs history. Training runs as a job on the server's queue (:mod:`compression.jobs`): one
at a time, the others wait showing their place; a job outlives the tab that started it, and any tab
reattaches to it (``?run=<id>``). Every browser session keeps its own state, and every user error
appears as a message (a toast and a status line) with the widgets left as they were.
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
    "speed with the teacher, a quantized copy and a deployed copy (CTranslate2 int8, what a CPU server runs). "
    "The second tab trains Modular Transformers modules once and "
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
    parser.add_argument("--public", action="store_true",
                        help="public-server guard rails (on by default when SPACE_ID is set, i.e. on a Hugging Face "
                             "Space): limits on pairs, epochs, source length and wall time per run, at most 2 queued "
                             "jobs per visitor, a 2 GiB disk quota (oldest visitor runs removed first), and each "
                             "visitor sees only their own runs and the operator's")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    return parser.parse_args(argv)


def build_demo(settings=None):
    """The whole dashboard as a ``gr.Blocks`` (not launched). ``settings``: a
    :class:`components.state.AppSettings` (default: runs folder ``runs``, online)."""
    import gradio as gr

    from components import model_panel, modular_panel, plan_panel, results_panel, runs_panel, train_panel
    from components.feedback import as_toast
    from components.state import AppSettings, bind, session_state

    settings = settings or AppSettings.create()
    from functools import partial

    # delete_cache: gradio's copies of uploads and zips older than an hour go, checked every 30 min
    with gr.Blocks(title="Summarizer compression (SFT)", analytics_enabled=False, delete_cache=(1800, 3600)) as demo:
        session = session_state()
        visitor = gr.BrowserState("", storage_key="compression-visitor")
        gr.Markdown(f"# Summarizer compression · Shrink and Fine-Tune\n{DESCRIPTION}", elem_id="intro")
        if settings.notice:
            gr.Markdown(f"ℹ {settings.notice}", elem_id="offline-notice")
        with gr.Tab("Shrink and train (SFT or KD)"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=2, min_width=300):
                    model = model_panel.build_model_panel(settings, session)
                with gr.Column(scale=3, min_width=360):
                    plan = plan_panel.build_plan_panel(settings, session)
            with gr.Row(equal_height=False):
                with gr.Column(scale=2, min_width=300):
                    train = train_panel.build_train_panel(settings, session)
                with gr.Column(scale=3, min_width=360):
                    live = train_panel.build_live_panel()
            results = results_panel.build_results_panel(settings, session)
            runs = runs_panel.build_runs_panel(settings, session)
        with gr.Tab(modular_panel.TAB_TITLE):  # Modular Transformers: its events are wired inside
            modular = modular_panel.build_modular_tab(settings, session)

        # Panel 1 -> 2: loading sets the slider bounds, then redraws the plan. Errors are toasts and
        # a status line (feedback.as_toast): the sliders keep their values.
        loaded = model.load.click(as_toast(partial(model_panel.load_base, settings), 3, status=0),
                                  [session, model.choice, model.custom, model.tokenizer],
                                  [model.info, plan.encoder, plan.decoder], api_name="load_model",
                                  concurrency_limit=2, concurrency_id="load")
        loaded.success(plan.handler, plan.inputs, [plan.picture, plan.estimate], api_name="plan_after_load")
        # ... and bounds the source-length sliders of both tabs for it (16,384 for LongT5, else 1,024).
        for slider in (train.max_source, modular.max_source):
            loaded.success(train_panel.bound_source_length, [session, slider], slider, api_visibility="private",
                           show_progress="hidden")
        # Panel 2's speed line: which stack to cut at panel 3's source length, after a load and as it changes.
        advice = dict(fn=plan_panel.cut_advice_line, inputs=[session, train.max_source], outputs=plan.cut_line,
                      api_visibility="private", show_progress="hidden")
        loaded.success(**advice)
        train.max_source.change(**advice)
        # Panels 1-3 -> 4, then 5 and 6. The run is a job on the server's queue (one training job at a
        # time); this event only submits and watches it, so it needs no queue slot of its own.
        form = {"shrink.encoder_layers": plan.encoder, "shrink.decoder_layers": plan.decoder,
                "shrink.strategy": plan.strategy, "encoder_custom": plan.encoder_custom,
                "decoder_custom": plan.decoder_custom, **train.form}
        after_run = dict(fn=partial(results_panel.show_results, settings), inputs=session, outputs=results.outputs)
        run_event = train.run.click(as_toast(bind(train_panel.run_from_page, settings, list(form)), 2, status=0),
                                    [session, *form.values()], [live.progress, live.loss], api_name="run",
                                    concurrency_limit=None)
        run_event.then(**after_run, api_name="show_results").then(runs.handler, session, runs.outputs,
                                                                   api_name="runs_after_run")
        # Panel 2's layer scores, on panel 3's data (the pairs the importance strategy scores on).
        plan.score.click(as_toast(partial(plan_panel.score_layers, settings), 3, status=2),
                         [*plan.inputs, train.source, train.train_file, train.validation_file, train.text_column,
                          train.summary_column, train.max_source, train.max_target, plan.score_samples],
                         [plan.heatmap, plan.picture, plan.estimate], api_name="score_layers",
                         concurrency_limit=1, concurrency_id="load")
        # Panel 1's teacher action: the loaded untrained preset trained by the teacher recipe on panel 3's data.
        from components import teacher_job

        teacher_form = {key: train.form[key] for key in teacher_job.FORM_KEYS}
        model.train_teacher.click(as_toast(bind(teacher_job.train_teacher_from_page, settings, list(teacher_form)),
                                           3, status=0),
                                  [session, *teacher_form.values()], [live.progress, live.loss, model.custom],
                                  api_name="train_teacher", concurrency_limit=None)
        train.cancel.click(bind(train_panel.cancel_training, settings), session, live.progress,
                           api_name="cancel", concurrency_limit=None)
        train.estimate.click(as_toast(bind(train_panel.estimate_time, settings, list(form)), 1, status=0),
                             [session, *form.values()], train.estimate_line, api_name="estimate_time",
                             concurrency_limit=2, concurrency_id="load")
        # Panel 6 -> 4, 5: continue a cancelled or interrupted run from its last checkpoint, watched like Run.
        runs.resume.click(as_toast(bind(train_panel.resume_from_page, settings), 2, status=0), [session, runs.run],
                          [live.progress, live.loss], api_name="resume_run", concurrency_limit=None).then(
            **after_run, api_name="show_resumed_results").then(runs.handler, session, runs.outputs,
                                                               api_name="runs_after_resume")
        # Panel 6 -> 5: reopen a finished run.
        runs.open.click(as_toast(partial(runs_panel.open_run, settings), 1, status=0), [session, runs.run],
                        runs.opened, api_name="open_run").success(**after_run, api_name="show_opened_run")
        # Panel 6 -> 1: a run's student becomes the base model (shrink a student again).
        as_base = runs.use_as_base.click(as_toast(partial(runs_panel.student_as_base, settings), 4, status=1),
                                         [session, runs.run, model.tokenizer],
                                         [model.custom, model.info, plan.encoder, plan.decoder],
                                         api_name="student_as_base")
        as_base.success(plan.handler, plan.inputs, [plan.picture, plan.estimate], api_visibility="private")
        for slider in (train.max_source, modular.max_source):
            as_base.success(train_panel.bound_source_length, [session, slider], slider, api_visibility="private",
                            show_progress="hidden")
        as_base.success(**advice)
        # A (re)opened page: remember the visitor, reattach to ?run=<id> or the visitor's latest run,
        # or open the run of a shared ?open=<run> link (and the comparison of a ?compare= link, below).
        attached = demo.load(bind(train_panel.attach_job, settings), [session, visitor], [visitor, live.progress],
                             api_visibility="private")
        attached.then(  # a shared link ?open=<run> opens that run's results instead
            as_toast(bind(runs_panel.open_from_link, settings)), session, runs.opened,
            api_visibility="private").then(
            partial(train_panel.watch_job, settings), session, [live.progress, live.loss], concurrency_limit=None,
            api_visibility="private").then(**after_run, api_visibility="private").then(
            runs.handler, session, runs.outputs, api_visibility="private")
        # ... a ?run=<id> link to a teacher training ("Train this preset as the teacher") follows it in the live panel
        attached.then(bind(teacher_job.watch_teacher, settings), session, [live.progress, live.loss, model.custom],
                      concurrency_limit=None, api_visibility="private")
        # ... a shared link ?compare=<run>,<run> opens that comparison in panel 6 (the runs picker keeps it)
        attached.then(as_toast(bind(runs_panel.compare_from_link, settings), 4, status=3), session,
                      [runs.overlay, runs.comparison, runs.picked, runs.compared], api_visibility="private")
        # ... and the module training of the same visitor (or ?run=<id> of one), in its tab, at the same time.
        # (its stopped trainings are listed for Resume before and after it is followed)
        attached.then(bind(modular_panel.attach_modules, settings), [session, modular.state], modular.progress,
                      api_visibility="private").then(**modular.stopped_handler).then(
            as_toast(partial(modular_panel.watch_modules, settings), 4, status=0), modular.state,
            [modular.progress, modular.loss, modular.ratio, modular.modules_info], concurrency_limit=None,
            api_visibility="private").then(**modular.stopped_handler)
    return demo


def launch_options(settings) -> dict:
    """Keyword arguments for ``demo.launch`` shared by :func:`main` and the tests: theme and CSS
    (launch arguments in gradio 6), the upload size limit, the upload route limited to data files
    (:class:`components.uploads.DataUploadsOnly`), no run history (it would keep inputs, tokens
    included, in the browser)."""
    import gradio as gr
    from starlette.middleware import Middleware

    from components.uploads import DataUploadsOnly

    upload_limit = settings.max_file_mb * 10**6 + 2**20  # gradio's "50mb" is 50e6 bytes, plus multipart headers
    return dict(theme=gr.themes.Default(primary_hue="orange", secondary_hue="indigo", neutral_hue="slate"),
                css_paths=[ASSETS / "style.css"], max_file_size=f"{settings.max_file_mb}mb",
                run_history=False, footer_links=["api", "gradio", "settings"], show_error=False,
                app_kwargs={"middleware": [Middleware(DataUploadsOnly, max_bytes=upload_limit)]})


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the model hub answers one HEAD request within ``timeout`` seconds (``HF_ENDPOINT``,
    default https://huggingface.co); any answer counts, a network error or a timeout does not."""
    import httpx

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        httpx.head(endpoint, timeout=timeout, follow_redirects=False)
    except (httpx.HTTPError, OSError):
        return False
    return True


def offline_start(args: argparse.Namespace) -> str | None:
    """Decide whether the dashboard starts offline: with ``--offline`` or ``HF_HUB_OFFLINE=1`` (no
    request made), or when :func:`hub_reachable` fails. Sets ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``
    when offline. Returns the one-line notice to show when the check failed, else ``None``."""
    if not args.offline and os.environ.get("HF_HUB_OFFLINE", "0") in ("", "0", "false", "False"):
        if hub_reachable():
            return None
        args.offline = True
        notice = ("The model hub is unreachable from this server, so the dashboard started **offline**: "
                  "architecture presets, local folders and the offline datasets (start it with `--offline` to "
                  "skip this check).")
    else:
        args.offline, notice = True, None  # asked for: panel 1 says so
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    return notice


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, set up offline mode (checking the hub once) and logging, build the dashboard
    and serve it."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    notice = offline_start(args)
    if notice:
        logging.getLogger("dashboard").warning("%s", notice.replace("**", "").replace("`", ""))
    from components.state import AppSettings
    from compression.guard import PublicLimits

    public = args.public or bool(os.environ.get("SPACE_ID"))
    settings = AppSettings.create(args.runs_dir, args.allowed_dir, offline=args.offline, max_file_mb=args.max_file_mb,
                                  notice=notice, limits=PublicLimits() if public else None)
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    from compression.jobs import mark_interrupted

    mark_interrupted(settings.runs_dir)  # runs a stopped server left "running" are interrupted, not running
    demo = build_demo(settings)
    demo.queue(default_concurrency_limit=2).launch(
        server_name=args.host, server_port=args.port, share=args.share,
        inbrowser=not args.no_browser and not os.environ.get("SPACE_ID"), **launch_options(settings))


if __name__ == "__main__":
    main()
