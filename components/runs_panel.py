"""Panel 6, runs history: every run folder listed with its settings and headline numbers; loss
curves and students compared across runs; a run reopened in the results panel; a cancelled or
interrupted run resumed from its last checkpoint (the job itself: :func:`components.train_panel.resume_run`); a student,
its quantized copy or its deployed (CTranslate2) copy downloaded as a zip, or the student pushed to the Hugging Face Hub (the token is used once, never stored or logged).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from compression.errors import CompressionError, RunError

from . import charts
from .feedback import as_toast, user_errors
from .state import AppSettings, Session, bind

RUN_COLUMNS = ["name", "status", "created", "base model", "method", "layers kept (enc/dec)", "strategy", "epochs", "ROUGE-1",
               "ROUGE-L (sentence)", "% of base R-1", "val. loss (nats)", "params (M)", "size (MiB)"]


def run_path(settings: AppSettings, name: str | None, session: Session | None = None) -> Path:
    """The folder of run ``name`` inside the runs folder (on a public server: one the session's
    visitor may see, see :meth:`components.state.AppSettings.visible`).

    Raises:
        RunError: no run picked, or no such run (for this visitor). PathNotAllowedError: a name
            escaping the runs folder.
    """
    from compression.runs import resolve_inside

    if not (name or "").strip():
        raise RunError("pick a run in the list first")
    path = resolve_inside(settings.runs_dir / name.strip(), [settings.runs_dir])
    if path == settings.runs_dir.resolve() or not path.is_dir() or \
            not settings.visible(path.name, session.visitor if session is not None else None):
        raise RunError(f"there is no run named {name!r} in {settings.runs_dir.name}: refresh the list")
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


def runs_table(settings: AppSettings, visitor: str | None = None) -> pd.DataFrame:
    """Every run under the runs folder that ``visitor`` may see (all of them on a private server),
    newest first, one row each (see :func:`compression.runs.list_runs`)."""
    from compression.runs import list_runs

    rows = []
    for run in list_runs(settings.runs_dir):
        if not settings.visible(str(run.get("name")), visitor):
            continue

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


def default_run(frame: pd.DataFrame) -> str | None:
    """The run the picker starts on: the newest complete run, else the newest run, else none."""
    complete = frame[frame["status"] == "complete"]
    names = list((complete if len(complete) else frame)["name"])
    return names[0] if names else None


@user_errors
def refresh_runs(settings: AppSettings, session: Session | None = None, request: gr.Request = None):
    """Returns ``(runs table, compare picker, run picker)`` with the current run names (the ones
    the session's visitor may see); the compare picker keeps the session's last comparison (those of
    its runs still listed), the run picker starts on the session's complete run shown in panel 5,
    else on :func:`default_run`."""
    visitor = None
    if session is not None:
        from .train_panel import visitor_of

        visitor = visitor_of(session, request)
    frame = runs_table(settings, visitor)
    names = list(frame["name"])
    shown = Path(session.run_dir).name if session is not None and session.run_dir else None
    complete = session is not None and (session.result or {}).get("status") == "complete"
    picked = shown if complete and shown in names else default_run(frame)
    compared = [name for name in (session.compared or []) if name in names] if session is not None else []
    return (frame, gr.Dropdown(choices=names, value=compared, multiselect=True),
            gr.Dropdown(choices=names, value=picked))


@user_errors
def compare_runs(settings: AppSettings, names: list[str] | None, session: Session | None = None):
    """Overlay the loss curves and compare the students of two or more runs (read from their run
    folders; on a public server only runs the session's visitor may see). The session remembers the
    comparison (the runs picker keeps it after a refresh).

    Returns ``(loss overlay figure, student comparison figure, link line)``; the line gives the
    comparison's shareable link (:func:`compare_link`).

    Raises (as ``gr.Error``): fewer than two runs picked, no such run (for this visitor), a name
    outside the runs folder, or a run that cannot be read.
    """
    from compression.runs import load_run

    names = list(dict.fromkeys(n.strip() for n in (names or []) if n and n.strip()))
    if len(names) < 2:
        raise CompressionError("pick two or more runs to compare")
    runs = {name: load_run(run_path(settings, name, session)) for name in names}
    if session is not None:
        session.compared = names
    return (charts.loss_overlay({name: run["loss_log"] for name, run in runs.items()}),
            charts.runs_comparison({name: run["metrics"] for name, run in runs.items()}),
            f"Compared {len(names)} runs · link to this comparison: `{compare_link(names)}` after the page address")


#: The address parameter of a link that opens the page on a comparison of runs: ``?compare=<run>,<run>``.
COMPARE_PARAM = "compare"


def compare_link(names: list[str]) -> str:
    """The part of the page address that reopens the comparison of runs ``names`` (loss curves and
    students, panel 6) in any tab, also after a server restart: ``?compare=<run>,<run>[,...]``."""
    from urllib.parse import quote

    return f"?{COMPARE_PARAM}=" + ",".join(quote(name, safe="") for name in names)


def link_to_compare(request: gr.Request | None) -> list[str] | None:
    """The runs named by the page address's ``?compare=<run>,<run>[,...]`` (split at commas, blanks
    dropped), or ``None`` without the parameter."""
    value = request.query_params.get(COMPARE_PARAM) if request is not None else None
    if not isinstance(value, str):
        return None
    return [name.strip() for name in value.split(",") if name.strip()]


@user_errors
def compare_from_link(settings: AppSettings, session: Session, request: gr.Request = None):
    """On page load with ``?compare=<run>,<run>`` (a shared link, :func:`compare_link`): compare those
    runs as :func:`compare_runs` does and put them in the compare picker. Returns ``(loss overlay,
    student comparison, compare picker, link line)``, all left as they are without the parameter.

    Raises (as ``gr.Error``): fewer than two runs named, no such run (for this visitor), a name
    outside the runs folder.
    """
    names = link_to_compare(request)
    if names is None:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    overlay, comparison, line = compare_runs(settings, names, session)
    choices = list(runs_table(settings, session.visitor)["name"])  # the visitor's runs (public: not listed yet)
    return overlay, comparison, gr.Dropdown(choices=choices, value=session.compared), line


def _resumable(settings: AppSettings, name: str | None, session: Session | None = None) -> bool:
    from compression.resume import check_resumable

    try:
        check_resumable(run_path(settings, name, session))
    except CompressionError:
        return False
    return True


def resume_button(settings: AppSettings, name: str | None, session: Session | None = None) -> gr.Button:
    """The Resume button for the picked run: clickable only when the run can be continued from its
    ``last-checkpoint/`` (cancelled or interrupted with a checkpoint, :func:`compression.resume.check_resumable`)."""
    return gr.Button(interactive=_resumable(settings, name, session))


#: The address parameter of a link that opens the page on a run's results: ``?open=<run folder>``.
OPEN_PARAM = "open"


def run_link(name: str) -> str:
    """The part of the page address that reopens run ``name``'s results (charts and side-by-side
    summaries) in any tab, also after a server restart: ``?open=<name>``."""
    from urllib.parse import quote

    return f"?{OPEN_PARAM}={quote(name)}"


def link_to_open(request: gr.Request | None) -> str | None:
    """The run named by the page address's ``?open=<run folder>``, or ``None``."""
    name = request.query_params.get(OPEN_PARAM) if request is not None else None
    return name.strip() or None if isinstance(name, str) else None


def open_from_link(settings: AppSettings, session: Session, request: gr.Request = None):
    """On page load with ``?open=<run>`` (a shared link, :func:`run_link`): open that run as
    :func:`open_run` does, so panel 5 shows its comparison. Returns the confirmation line (left as
    it is without the parameter).

    Raises (as ``gr.Error``): no such run (for this visitor), a name outside the runs folder.
    """
    name = link_to_open(request)
    if name is None:
        return gr.skip()
    return open_run(settings, session, name)


@user_errors
def open_run(settings: AppSettings, session: Session, name: str | None) -> str:
    """Make run ``name`` the session's current run, so panel 5 shows it and the article comparison
    uses its models. Returns a one-line confirmation with the run's link (:func:`run_link`)."""
    from compression.runs import load_run

    run = load_run(run_path(settings, name, session))
    status = run["status"].get("status")
    session.run_dir = run["path"]
    session.result = {"status": status, "metrics": run["metrics"] or None, "summaries": run["summaries"],
                      "config": run["config"]}
    session.records = run["loss_log"]
    if status != "complete":
        gr.Warning(f"Run {name} is {status}: it has no full evaluation.")
    return (f"Opened **{run['name']}** ({status}) in the results panel · link to it: "
            f"`{run_link(run['name'])}` after the page address")


#: Where zips are written before gradio serves them (gradio copies each into its cache, which
#: ``delete_cache`` empties); each new zip removes the previous ones.
ZIP_DIR = Path(tempfile.gettempdir()) / f"compression-zips-{os.getpid()}"
ZIP_CHOICES = {"student": "student", "quantized": "quantized copy", "deployed": "deployed copy (CTranslate2)"}
#: The file whose presence says the folder of each choice was written (CTranslate2's own model file
#: for the deployed copy).
ZIP_MARKERS = {"student": "config.json", "quantized": "config.json", "deployed": "model.bin"}


@user_errors
def zip_model(settings: AppSettings, name: str | None, which: str = "student",
              session: Session | None = None) -> gr.File:
    """Zip the run's ``student/``, ``quantized/`` or ``deployed/`` folder (``which``, a key of
    :data:`ZIP_CHOICES`); returns the (now visible)
    download widget holding the zip, which gradio serves. Earlier zips are removed first, so the
    temporary folder holds one at a time.

    Raises (as ``gr.Error``): no run picked, an unknown ``which``, or the run has no such model
    (cancelled or failed, no quantized copy, or no deployed copy).
    """
    from compression.export import zip_folder

    if which not in ZIP_CHOICES:
        raise CompressionError(f"unknown model {which!r}: zip the student, the quantized copy or the deployed copy")
    path = run_path(settings, name, session)
    folder = path / which
    if not (folder / ZIP_MARKERS[which]).is_file():
        why = {"quantized": "not quantized", "deployed": "made without a deployed copy, or its family is one "
                                                        "CTranslate2 cannot convert"}.get(which)
        raise RunError(f"run {path.name} has no saved {ZIP_CHOICES[which]} (cancelled, failed"
                       f"{', or ' + why if why else ''}): pick a complete run")
    ZIP_DIR.mkdir(parents=True, exist_ok=True)
    for old in ZIP_DIR.glob("*.zip"):
        old.unlink(missing_ok=True)
    target = ZIP_DIR / f"{path.name}-{which}.zip"
    return gr.File(value=str(zip_folder(folder, target)), visible=True, label=f"{ZIP_CHOICES[which]} (zip)")


def student_as_base(settings: AppSettings, session: Session, name: str | None, tokenizer: str | None):
    """Load run ``name``'s student as this tab's base model (a student of a student is shrunk from
    it next): :func:`components.model_panel.load_base` on ``<run>/student``. Returns panel 1's folder
    box (that folder) followed by ``load_base``'s outputs.

    Raises (as a warning toast): no run picked, or the run has no saved student (cancelled or failed).
    """
    from .model_panel import load_base

    path = run_path(settings, name, session)
    if not (path / "student" / "config.json").is_file():
        raise RunError(f"run {path.name} has no saved student (cancelled or failed): pick a complete run")
    folder = str(path / "student")
    return (folder, *load_base(settings, session, None, folder, tokenizer))


def zip_student(settings: AppSettings, name: str | None, session: Session | None = None) -> gr.File:
    """:func:`zip_model` of the student."""
    return zip_model(settings, name, "student", session)


def zip_quantized(settings: AppSettings, name: str | None, session: Session | None = None) -> gr.File:
    """:func:`zip_model` of the quantized copy."""
    return zip_model(settings, name, "quantized", session)


def zip_deployed(settings: AppSettings, name: str | None, session: Session | None = None) -> gr.File:
    """:func:`zip_model` of the deployed (CTranslate2) copy: ``model.bin``, its vocabulary, the
    tokenizer and the README saying how to load it with ``ctranslate2.Translator``."""
    return zip_model(settings, name, "deployed", session)


@user_errors
def push_student(settings: AppSettings, name: str | None, repo_id: str | None, token: str | None,
                 session: Session | None = None) -> str:
    """Push the run's student to the Hub repo ``repo_id`` (private) with ``token``; the token is used
    for this call only, never stored, logged or echoed. Returns a markdown link to the repo.

    Raises (as ``gr.Error``): offline, no token, bad repo id, no student, the Hub refused.
    """
    from compression.export import push_to_hub

    if settings.is_offline():
        raise CompressionError("the dashboard runs offline (--offline): pushing to the Hub is disabled")
    if not (token or "").strip():
        raise CompressionError("paste a Hugging Face write token to push (it is used once and never stored)")
    path = run_path(settings, name, session)
    url = push_to_hub(path / "student", (repo_id or "").strip(), token=token.strip())
    return f"Pushed the student of **{path.name}** to [{repo_id}]({url}) (private repo)."


def build_runs_panel(settings: AppSettings, session: gr.State) -> SimpleNamespace:
    """Lay out panel 6 and wire its events except Open (which also refreshes panel 5; see :mod:`app`)."""
    from functools import partial

    frame = runs_table(settings, "" if settings.limits else None)  # public: the operator's runs until load
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
        compared = gr.Markdown("", elem_id="runs-compared")
        with gr.Row():
            run = gr.Dropdown(names, value=default_run(frame), label="Run", scale=3, elem_id="run-pick")
            open_button = gr.Button("Open in results", scale=1, elem_id="run-open")
            resume = gr.Button("Resume", scale=1, elem_id="run-resume",
                               interactive=_resumable(settings, default_run(frame)))
            use_as_base = gr.Button("Use its student as the base model", scale=1, elem_id="run-use-as-base")
        with gr.Row():
            zip_button = gr.Button("Zip the student", scale=1, elem_id="run-zip")
            zip_quantized_button = gr.Button("Zip the quantized copy", scale=1, elem_id="run-zip-quantized")
            zip_deployed_button = gr.Button("Zip the deployed copy", scale=1, elem_id="run-zip-deployed")
        opened = gr.Markdown("")
        download = gr.File(label="Student model (zip)", interactive=False, visible=False, elem_id="run-download")
        with gr.Accordion("Push the student to the Hugging Face Hub", open=False):
            with gr.Row():
                repo_id = gr.Textbox(label="Repo id", placeholder="your-name/t5-small-shrunk", elem_id="push-repo")
                token = gr.Textbox(label="Write token", type="password", placeholder="hf_…",
                                   info="Used for this push only; never stored or logged", elem_id="push-token")
            push = gr.Button("Push (private repo)", interactive=not settings.is_offline(), elem_id="push-button")
            pushed = gr.Markdown("Disabled: the dashboard runs offline." if settings.is_offline() else "")

    handler = as_toast(bind(refresh_runs, settings))
    refresh.click(handler, session, [table, picked, run], api_name="refresh_runs")
    compare.click(as_toast(partial(compare_runs, settings), 3, status=2), [picked, session],
                  [overlay, comparison, compared], api_name="compare_runs")
    zip_button.click(as_toast(partial(zip_student, settings)), [run, session], download, api_name="zip_student")
    zip_quantized_button.click(as_toast(partial(zip_quantized, settings)), [run, session], download,
                               api_name="zip_quantized")
    zip_deployed_button.click(as_toast(partial(zip_deployed, settings)), [run, session], download,
                              api_name="zip_deployed")
    push.click(as_toast(partial(push_student, settings), 1, status=0), [run, repo_id, token, session], pushed,
               api_name="push_student")
    run.change(partial(resume_button, settings), [run, session], resume, api_name=False, show_progress="hidden")
    return SimpleNamespace(refresh=refresh, table=table, picked=picked, run=run, open=open_button, opened=opened,
                           use_as_base=use_as_base, resume=resume,
                           overlay=overlay, comparison=comparison, compared=compared, download=download,
                           outputs=[table, picked, run], handler=handler)
