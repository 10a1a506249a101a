"""Panel 6, runs history: every run folder listed with its settings and headline numbers; loss
curves and students compared across runs; a run reopened in the results panel; a student
downloaded as a zip or pushed to the Hugging Face Hub (the token is used once, never stored or logged).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from compression.errors import CompressionError, RunError

from . import charts
from .feedback import user_errors
from .state import AppSettings, Session

RUN_COLUMNS = ["name", "status", "created", "base model", "method", "layers kept (enc/dec)", "strategy", "epochs", "ROUGE-1",
               "ROUGE-L (sentence)", "% of base R-1", "val. loss (nats)", "params (M)", "size (MiB)"]


def run_path(settings: AppSettings, name: str | None) -> Path:
    """The folder of run ``name`` inside the runs folder.

    Raises:
        RunError: no run picked, or no such run. PathNotAllowedError: a name escaping the runs folder.
    """
    from compression.runs import resolve_inside

    if not (name or "").strip():
        raise RunError("pick a run in the list first")
    path = resolve_inside(settings.runs_dir / name.strip(), [settings.runs_dir])
    if path == settings.runs_dir.resolve() or not path.is_dir():
        raise RunError(f"there is no run named {name!r} in {settings.runs_dir}: refresh the list")
    return path


def _short(value) -> str | None:
    if value is None:
        return None
    text = str(value)
    return Path(text).name if "/" in text and Path(text).exists() else text


def _text(value) -> str:
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def runs_table(settings: AppSettings) -> pd.DataFrame:
    """Every run under the runs folder, newest first, one row each (see :func:`compression.runs.list_runs`)."""
    from compression.runs import list_runs

    rows = []
    for run in list_runs(settings.runs_dir):
        def num(key, digits, run=run):
            value = run.get(key)
            return round(float(value), digits) if isinstance(value, (int, float)) else None
        params = run.get("params")
        layers = "/".join("all" if run.get(k) is None else str(run.get(k)).strip(",")
                          for k in ("encoder_layers", "decoder_layers"))
        created = str(run.get("created") or "")[:16].replace("T", " ")
        rows.append([run.get("name"), run.get("status"), created, _short(run.get("model")),
                     str(run.get("method") or "").upper(), layers,
                     run.get("strategy") or "", _text(run.get("epochs")),
                     num("rouge1", 2), num("rougeL", 2), num("percent_of_base_rouge1", 1), num("validation_loss", 4),
                     round(params / 1e6, 3) if isinstance(params, (int, float)) else None, num("size_mib", 2)])
    frame = pd.DataFrame(rows, columns=RUN_COLUMNS)
    return frame


@user_errors
def refresh_runs(settings: AppSettings):
    """Returns ``(runs table, compare picker, run picker)`` with the current run names."""
    frame = runs_table(settings)
    names = list(frame["name"])
    return (frame, gr.Dropdown(choices=names, value=[], multiselect=True),
            gr.Dropdown(choices=names, value=names[0] if names else None))


@user_errors
def compare_runs(settings: AppSettings, names: list[str] | None):
    """Overlay the loss curves and compare the students of two or more runs.

    Returns ``(loss overlay figure, student comparison figure)``.

    Raises (as ``gr.Error``): fewer than two runs picked, or a run that cannot be read.
    """
    from compression.runs import load_run

    names = [n for n in (names or []) if n]
    if len(names) < 2:
        raise CompressionError("pick two or more runs to compare")
    runs = {name: load_run(run_path(settings, name)) for name in names}
    return (charts.loss_overlay({name: run["loss_log"] for name, run in runs.items()}),
            charts.runs_comparison({name: run["metrics"] for name, run in runs.items()}))


@user_errors
def open_run(settings: AppSettings, session: Session, name: str | None) -> str:
    """Make run ``name`` the session's current run, so panel 5 shows it and the article comparison
    uses its models. Returns a one-line confirmation."""
    from compression.runs import load_run

    run = load_run(run_path(settings, name))
    status = run["status"].get("status")
    session.run_dir = run["path"]
    session.result = {"status": status, "metrics": run["metrics"] or None, "summaries": run["summaries"],
                      "config": run["config"]}
    session.records = run["loss_log"]
    if status != "complete":
        gr.Warning(f"Run {name} is {status}: it has no full evaluation.")
    return f"Opened **{run['name']}** ({status}) in the results panel."


@user_errors
def zip_student(settings: AppSettings, name: str | None) -> gr.File:
    """Zip the run's ``student/`` folder into a fresh temporary folder; returns the (now visible)
    download widget holding the zip, which gradio serves.

    Raises (as ``gr.Error``): no run picked, or the run has no student (cancelled or failed).
    """
    from compression.export import zip_folder

    path = run_path(settings, name)
    student = path / "student"
    if not (student / "config.json").is_file():
        raise RunError(f"run {path.name} has no saved student (it was cancelled or failed): pick a complete run")
    target = Path(tempfile.mkdtemp(prefix="student-zip-")) / f"{path.name}-student.zip"
    return gr.File(value=str(zip_folder(student, target)), visible=True)


@user_errors
def push_student(settings: AppSettings, name: str | None, repo_id: str | None, token: str | None) -> str:
    """Push the run's student to the Hub repo ``repo_id`` (private) with ``token``; the token is used
    for this call only, never stored, logged or echoed. Returns a markdown link to the repo.

    Raises (as ``gr.Error``): offline, no token, bad repo id, no student, the Hub refused.
    """
    from compression.export import push_to_hub

    if settings.is_offline():
        raise CompressionError("the dashboard runs offline (--offline): pushing to the Hub is disabled")
    if not (token or "").strip():
        raise CompressionError("paste a Hugging Face write token to push (it is used once and never stored)")
    path = run_path(settings, name)
    url = push_to_hub(path / "student", (repo_id or "").strip(), token=token.strip())
    return f"Pushed the student of **{path.name}** to [{repo_id}]({url}) (private repo)."


def build_runs_panel(settings: AppSettings, session: gr.State) -> SimpleNamespace:
    """Lay out panel 6 and wire its events except Open (which also refreshes panel 5; see :mod:`app`)."""
    from functools import partial

    frame = runs_table(settings)
    names = list(frame["name"])
    with gr.Column(elem_classes=["panel"]):
        gr.Markdown("### 6 · Runs history")
        with gr.Row():
            refresh = gr.Button("Refresh", size="sm", elem_id="runs-refresh")
        table = gr.Dataframe(frame, label=f"Runs in {settings.runs_dir}", interactive=False, wrap=True,
                             max_height=360, elem_id="runs-table")
        with gr.Row():
            picked = gr.Dropdown(names, value=[], multiselect=True, label="Runs to compare", scale=3,
                                 elem_id="runs-compare-pick")
            compare = gr.Button("Compare", scale=1, elem_id="runs-compare")
        with gr.Row(equal_height=True):
            overlay = gr.Plot(charts.loss_overlay({}), show_label=False, label="Loss curves", elem_id="runs-overlay")
            comparison = gr.Plot(charts.runs_comparison({}), show_label=False, label="Students compared",
                                 elem_id="runs-comparison")
        with gr.Row():
            run = gr.Dropdown(names, value=names[0] if names else None, label="Run", scale=3, elem_id="run-pick")
            open_button = gr.Button("Open in results", scale=1, elem_id="run-open")
            zip_button = gr.Button("Zip the student", scale=1, elem_id="run-zip")
        opened = gr.Markdown("")
        download = gr.File(label="Student model (zip)", interactive=False, visible=False, elem_id="run-download")
        with gr.Accordion("Push the student to the Hugging Face Hub", open=False):
            with gr.Row():
                repo_id = gr.Textbox(label="Repo id", placeholder="your-name/t5-small-shrunk", elem_id="push-repo")
                token = gr.Textbox(label="Write token", type="password", placeholder="hf_…",
                                   info="Used for this push only; never stored or logged", elem_id="push-token")
            push = gr.Button("Push (private repo)", interactive=not settings.is_offline(), elem_id="push-button")
            pushed = gr.Markdown("Disabled: the dashboard runs offline." if settings.is_offline() else "")

    refresh.click(partial(refresh_runs, settings), None, [table, picked, run], api_name="refresh_runs")
    compare.click(partial(compare_runs, settings), picked, [overlay, comparison], api_name="compare_runs")
    zip_button.click(partial(zip_student, settings), run, download, api_name="zip_student")
    push.click(partial(push_student, settings), [run, repo_id, token], pushed, api_name="push_student")
    return SimpleNamespace(refresh=refresh, table=table, picked=picked, run=run, open=open_button, opened=opened,
                           overlay=overlay, comparison=comparison, download=download,
                           outputs=[table, picked, run], handler=partial(refresh_runs, settings))
