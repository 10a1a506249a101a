"""Tab "Train once, assemble many": Modular Transformers (Zhou, Le Bras & Choi 2023) in the dashboard.

Train layer modules against a frozen teacher *once* (:func:`compression.modular.train_modules`,
live loss curve with one line per loss term, cancel), then pick any compression ratio and a
size-first or speed-first priority: the student is assembled instantly from the modules
(:func:`compression.modular.assemble`, no training), scored on a few validation pairs (validation
loss, ROUGE, latency at batch 1) and added as a point to four charts - ROUGE-1 and validation loss,
each against speedup and against size - next to the teacher and to the SFT/KD students of the same
teacher found in the runs folder.

The teacher is the base model loaded in panel 1 (:class:`components.state.Session`) unless a local
folder is typed. Modules are written to ``<runs>/.modular/<timestamp>-<teacher>`` (hidden from the
runs list) and can be loaded again later. The tab's own state (modules, points) is a
:class:`ModularState` in a ``gr.State`` per browser session. Long work follows
:mod:`components.train_panel`: module training is a job on the server's queue
(:class:`compression.jobs.JobQueue`, shared with the Run button: one training at a time), watched by
the generator, which yields the progress line and the curve as it advances; Cancel stops it; closing
the tab does not; Resume continues a cancelled or interrupted one from its ``last-checkpoint/``. Training, scoring and the runs to compare with come from the engine:
:func:`compression.modular.train_modular`, :func:`compression.modular.score_assembly` and
:func:`compression.runs.comparable_runs`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr
import pandas as pd

from compression.errors import CompressionError, ModularError

from . import modular_charts, train_panel
from .feedback import as_toast, positive_int, user_errors
from .jobs import job_link, queue_markdown, watch
from .state import AppSettings, Session, bind

TAB_TITLE = "Train once, assemble many"
#: Sub-folder of the runs folder where module trainings are written (dot: not listed as runs).
MODULAR_DIR = ".modular"
PRIORITY_CHOICES = [("size-first (fewest parameters)", "size"), ("speed-first (shallowest decoder)", "speed")]
GRANULARITY_CHOICES = [2, 3, 4, 6]
POLL_SECONDS = 1.0
TABLE_COLUMNS = ["method", "layers (enc/dec)", "ratio (×)", "parameters (M)", "size (MiB)", "ROUGE-1", "ROUGE-2",
                 "ROUGE-L (sentence)", "validation loss (nats/token)", "latency (ms/summary)", "speedup (×)", "modules used"]


@dataclass
class ModularState:
    """One visitor's modules and evaluated points (kept in a ``gr.State``; handlers mutate it).

    ``teacher_source``: what the modules' teacher was loaded from (hub id or resolved folder);
    ``modular``: the :class:`compression.modular.ModularModel` (teacher + modules); ``tokenizer``: its
    tokenizer; ``modular_dir``: the folder the modules were saved to or loaded from; ``job_id``: the
    module training this tab watches;
    ``eval_key``/``eval_pairs``: the :class:`compression.modular.EvaluationSet` the points were
    scored on; ``teacher_point``: the teacher scored on
    them; ``points``: the assembled students scored so far.
    """

    teacher_source: str | None = None
    teacher_label: str | None = None
    modular: Any = None
    tokenizer: Any = None
    modular_dir: str | None = None
    job_id: str | None = None
    eval_key: str | None = None
    eval_pairs: Any = None
    teacher_point: dict | None = None
    points: list = field(default_factory=list)

    def use_modules(self, modular, tokenizer, folder: str, source: str | None, label: str | None) -> None:
        """Adopt new modules; the points of the previous ones no longer apply and are dropped."""
        self.modular, self.tokenizer, self.modular_dir = modular, tokenizer, folder
        self.teacher_source, self.teacher_label = source, label
        self.eval_key = self.eval_pairs = self.teacher_point = None
        self.points = []


def modular_state() -> gr.State:
    """A ``gr.State`` holding a fresh :class:`ModularState` per browser session."""
    return gr.State(ModularState())


# ------------------------------------------------------------------------------ training

def resolve_teacher(settings: AppSettings, session: Session, teacher_folder: str | None) -> tuple[str, str]:
    """``(source, label)`` of the teacher: the typed folder (inside the allowed folders) when given,
    else the base model loaded in panel 1.

    Raises:
        CompressionError: nothing typed and no base model loaded.
        PathNotAllowedError: the folder lies outside the allowed folders.
    """
    from compression.runs import resolve_inside

    text = (teacher_folder or "").strip()
    if text:
        path = resolve_inside(text, list(settings.allowed_dirs))
        return str(path), path.name
    if session.model_source is None:
        raise CompressionError("load a base model in panel 1 (it becomes the teacher), or type a teacher folder")
    return session.model_source, session.model_label or session.model_source


def _granularities(values) -> tuple[int, ...]:
    if not values:
        raise ModularError("tick at least one granularity (teacher layers per module), e.g. 2, 3 and 4")
    try:
        return tuple(sorted(int(value) for value in values))
    except (TypeError, ValueError):
        raise ModularError(f"granularities {values!r} must be whole numbers such as 2, 3, 4") from None


def _ratio_slider(modular) -> dict:
    from compression.modular import available_ratios, max_ratio

    highest = math.floor(max_ratio(modular) * 100) / 100  # rounded down: the top stays reachable
    reachable = ", ".join(f"{r:.2f}" for r in available_ratios(modular))
    return gr.Slider(minimum=1.0, maximum=highest, value=min(2.0, highest), step=0.01,
                     interactive=True, info=f"1 = the teacher; reachable exactly: {reachable}. Other values take "
                                            "the least compression that meets them")


def modules_markdown(state: ModularState) -> str:
    """What the loaded modules are: teacher, granularities, modules, folder, training summary and
    the ratios each priority can reach."""
    from compression.modular import available_ratios, max_ratio

    modular = state.modular
    if modular is None:
        return "No modules yet: train them, or load a modules folder."
    training = (modular.info or {}).get("training") or {}
    lines = [f"**Modules of `{state.teacher_label or state.teacher_source or 'teacher'}`** "
             f"({modular.depths['encoder']}/{modular.depths['decoder']} layers), granularities "
             f"{', '.join(map(str, modular.granularities))}: {len(modular.module_names())} modules "
             f"({', '.join(f'`{name}`' for name in modular.module_names())})."]
    if training:
        done = "cancelled, partly trained" if training.get("cancelled") else "trained"
        loss = training.get("eval_loss")
        detail = f", validation loss {loss:.4f} nats/token (mean over granularities)" if loss is not None else ""
        lines.append(f"{done.capitalize()}: {training.get('steps')} steps in {training.get('seconds', 0):.0f} s{detail}.")
    lines.append(f"Ratios from 1× to **{max_ratio(modular):.2f}×**; size-first and speed-first reach "
                 f"{len(available_ratios(modular))} distinct ones. Folder: `{state.modular_dir}`.")
    return "\n\n".join(lines)


@user_errors
def train_modules_job(settings: AppSettings, session: Session, state: ModularState, teacher_folder, granularities,
                      source, train_file, validation_file, text_column, summary_column, train_samples, eval_samples,
                      epochs, batch_size, learning_rate, max_source_length, max_target_length,
                      request: gr.Request = None):
    """Generator behind "Train modules": load the teacher, train the modules in a worker thread and
    yield ``(progress markdown, loss figure, ratio slider, modules markdown)`` about once a second.

    The data arguments are those of :func:`components.train_panel.data_args`; training uses
    AdamW at ``learning_rate`` for ``epochs`` (:class:`compression.config.TrainArgs`) with the
    default :class:`compression.modular.ModularArgs` weights. When it ends (or is cancelled: the
    modules trained so far are kept), the state holds the modules and the ratio slider is enabled
    up to :func:`compression.modular.max_ratio`.

    The training is a job on the server's queue: closing the tab leaves it running (its modules
    are saved to their folder, which "load modules" opens later).

    Raises (as ``gr.Error``): a training already going on in this tab, no teacher, bad data or
    settings, a visitor at the queue limit, out of memory.
    """
    from compression.modular import ModularArgs, ModularConfig
    from compression.runs import RunFolder

    current = settings.jobs.find(state.job_id)
    if current is not None and not current.done:
        raise CompressionError("modules are already training in this tab: wait for them or cancel")
    source_model, label = resolve_teacher(settings, session, teacher_folder)
    modular_args = ModularArgs(granularities=_granularities(granularities))
    data = train_panel.data_args(settings, source, train_file, validation_file, text_column, summary_column,
                                 train_samples, eval_samples, max_source_length, max_target_length)
    train_args = train_panel.train_args(data, epochs, batch_size, learning_rate)
    output = RunFolder.default_path(settings.runs_dir / MODULAR_DIR, Path(source_model).name or "teacher")

    config = ModularConfig(teacher=source_model, data=data, train=train_args, modular=modular_args, output=output)

    def work(emit, cancel):
        from compression.modular import train_modular

        return train_modular(config, on_progress=emit, cancel=cancel, progress_bar=False)

    visitor = train_panel.visitor_of(session, request)
    job = settings.jobs.submit(work, kind="modular", owner=visitor,
                               label=output.name, info={"run_dir": str(output), "teacher_source": source_model,
                                                        "teacher_label": label})
    if settings.limits is not None:  # only they may resume it (resume_modules_job)
        modules_owners(settings).set(output.name, visitor)
    state.job_id = job.id
    yield from watch_modules(settings, state, job.id, intro=f"Module training queued: `{output.name}` · {job_link(job)}")


# ------------------------------------------------------------------------------ resuming

def modules_owners(settings: AppSettings):
    """Which visitor started which module training (:class:`compression.guard.RunOwners` of
    ``<runs>/.modular``; written on a public server only)."""
    from compression.guard import RunOwners

    return RunOwners(settings.runs_dir / MODULAR_DIR)


def _training_now(settings: AppSettings) -> set[str]:
    """Folder names of the module trainings waiting or running on the server."""
    return {Path(job.info.get("run_dir") or "").name for job in settings.jobs.jobs()
            if job.kind == "modular" and not job.done}


def resumable_trainings(settings: AppSettings, visitor: str | None = None) -> list[str]:
    """Folder names (in ``<runs>/.modular``, newest first) of the stopped module trainings that can
    be continued: a ``last-checkpoint/`` and a ``recipe.json`` (:data:`compression.modular.RECIPE_FILE`),
    no job training there now, and on a public server started by ``visitor``."""
    from compression.modular import RECIPE_FILE
    from compression.resume import LAST_CHECKPOINT

    root = settings.runs_dir / MODULAR_DIR
    if not root.is_dir():
        return []
    busy = _training_now(settings)
    owners = modules_owners(settings).read() if settings.limits is not None else None
    return sorted((folder.name for folder in root.iterdir()
                   if not folder.name.startswith(".") and folder.name not in busy
                   and (folder / LAST_CHECKPOINT).is_dir() and (folder / RECIPE_FILE).is_file()
                   and (owners is None or (visitor is not None and owners.get(folder.name) == visitor))),
                  reverse=True)


def resume_choices(settings: AppSettings, session: Session, state: ModularState, request: gr.Request = None):
    """``(stopped-trainings picker, Resume button)``: the trainings :func:`resumable_trainings` lists
    for the session's visitor, starting on the one this tab followed when it is among them; Resume
    is clickable when there is one."""
    visitor = train_panel.visitor_of(session, request) if settings.limits is not None else None
    names = resumable_trainings(settings, visitor)
    job = settings.jobs.find(state.job_id)
    followed = Path(job.info.get("run_dir") or "").name if job is not None else None
    value = followed if followed in names else (names[0] if names else None)
    return gr.Dropdown(choices=names, value=value), gr.Button(interactive=bool(names))


@user_errors
def resume_modules_job(settings: AppSettings, session: Session, state: ModularState, name: str | None,
                       request: gr.Request = None):
    """Generator behind the tab's Resume: continue the stopped (cancelled or interrupted) module
    training ``name`` of ``<runs>/.modular`` from its ``last-checkpoint/`` with the recipe it recorded
    (:func:`compression.modular.resume_recipe`, what ``modular-train --resume`` does), as a job on
    the server's queue like "Train modules", watched like it (:func:`watch_modules`, same outputs).
    On a public server only the visitor who started the training may resume it.

    Raises (as ``gr.Error``): a training already going on in this tab, nothing picked, a name outside
    the modules folder or not there, someone else's training, one training there now, no whole
    checkpoint or recipe, the visitor's queue limit.
    """
    from compression.errors import RunError
    from compression.modular import resume_recipe, train_modular
    from compression.runs import resolve_inside

    current = settings.jobs.find(state.job_id)
    if current is not None and not current.done:
        raise CompressionError("modules are already training in this tab: wait for them or cancel")
    if not (name or "").strip():
        raise RunError("pick a stopped module training to resume (one cancelled or interrupted with a checkpoint)")
    root = settings.runs_dir / MODULAR_DIR
    path = resolve_inside(root / name.strip(), [root])
    if path == root.resolve() or not path.is_dir():
        raise RunError(f"there is no module training named {name!r}: pick one in the list")
    visitor = train_panel.visitor_of(session, request)
    if settings.limits is not None and modules_owners(settings).read().get(path.name) != visitor:
        raise RunError(f"module training {path.name} was started by someone else: only they can resume it")
    if path.name in _training_now(settings):
        raise RunError(f"module training {path.name} is training now: wait for it or cancel it first")
    config, checkpoint = resume_recipe(path)
    teacher = config.teacher

    def work(emit, cancel):
        return train_modular(config, on_progress=emit, cancel=cancel, progress_bar=False, resume_from=checkpoint)

    job = settings.jobs.submit(work, kind="modular", owner=visitor, label=path.name,
                               info={"run_dir": str(path), "teacher_source": teacher,
                                     "teacher_label": Path(teacher).name or teacher})
    state.job_id = job.id
    yield from watch_modules(settings, state, job.id, intro=f"Resume queued: `{path.name}` · {job_link(job)}")


def watch_modules(settings: AppSettings, state: ModularState, job_id: str | None = None, intro: str | None = None):
    """Generator: follow the module training ``job_id`` (default: the one this tab watches),
    yielding ``(progress markdown, loss figure, ratio slider, modules markdown)`` as it advances;
    when it ends, the state adopts its modules (also those of a cancelled training) and the ratio
    slider is enabled. Closing it (the tab went away) leaves the training running; a reopened page
    follows it again (:func:`attach_modules`).

    Raises:
        the job's error, when the training failed (shown as a message by the page).
    """
    job = settings.jobs.find(job_id or state.job_id)
    if job is None or job.kind != "modular":
        yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return
    state.job_id = job.id
    name = job.label
    for current in watch(job, POLL_SECONDS):
        if current.status == "queued":
            yield ("\n\n".join([intro or job_link(job), queue_markdown(settings.jobs, current)]),
                   gr.skip(), gr.skip(), gr.skip())
            continue
        if current.done:
            break
        yield (train_panel.progress_markdown(job.stages, job.records, intro or f"▶ Training modules `{name}` · "
                                             f"{job_link(job)}"),
               modular_charts.modules_loss_curve(job.records), gr.skip(), gr.skip())
        intro = None
    if job.status == "failed":
        raise job.error
    if job.status == "cancelled" and job.result is None:
        yield "■ **Cancelled** before it started: nothing was written.", gr.skip(), gr.skip(), gr.skip()
        return
    modular, tokenizer = job.result
    if state.modular is not modular:
        state.use_modules(modular, tokenizer, job.info["run_dir"], job.info.get("teacher_source"),
                          job.info.get("teacher_label"))
    if modular.info.get("training", {}).get("cancelled"):
        final = (f"■ **Cancelled.** The modules trained so far are saved in `{name}`; they can be "
                 "assembled, but expect them to be worse than fully trained ones.")
    else:
        final = f"✓ **Modules trained:** `{name}`. Pick a ratio and a priority below to assemble students."
    yield (train_panel.progress_markdown(job.stages, job.records, final),
           modular_charts.modules_loss_curve(job.records), _ratio_slider(modular), modules_markdown(state))


def attach_modules(settings: AppSettings, session: Session, state: ModularState, request: gr.Request = None):
    """On page load (after :func:`components.train_panel.attach_job` identified the visitor): pick
    the module training this tab follows — the one named by ``?run=<id>`` when that is a module
    training, else the visitor's latest — so a reloaded or reopened page reattaches to its live
    progress (:func:`watch_modules` follows). Returns the progress line."""
    wanted = (request.query_params.get("run") if request is not None else None) or ""
    job = settings.jobs.find(wanted) if wanted else None
    if job is None or job.kind != "modular":
        job = settings.jobs.latest(session.visitor, kind="modular") if session.visitor else None
    if job is None:
        return gr.skip()
    state.job_id = job.id
    return f"Reattached to module training `{job.label}` ({job.status})."


def cancel_modules(settings: AppSettings, state: ModularState) -> str:
    """Cancel the module training this tab watches (waiting: it leaves the queue; running: it stops
    after the current step and keeps what it trained)."""
    job = settings.jobs.find(state.job_id)
    if job is None or job.done or job.cancel_event.is_set():
        gr.Warning("No module training is waiting or running in this tab: nothing to cancel.")
        return gr.skip()
    settings.jobs.cancel(job.id)
    gr.Info("Cancelling: module training stops after the current step.")
    return "■ Cancelling after the current step…"


@user_errors
def load_modules(settings: AppSettings, state: ModularState, folder: str | None):
    """Load modules trained before (a folder written by module training or ``python -m compression
    modular-train``). Returns ``(modules markdown, ratio slider)``.

    Raises (as ``gr.Error``): no folder typed, a folder outside the allowed folders, not a modular
    checkpoint or an incomplete one (:class:`compression.errors.ModularError`), no tokenizer saved
    with its teacher.
    """
    from compression.errors import ModelLoadError
    from compression.load import load_tokenizer
    from compression.modular import TEACHER_DIR, load_modular
    from compression.runs import resolve_inside

    text = (folder or "").strip()
    if not text:
        raise ModularError(f"type the modules folder (e.g. {settings.runs_dir / MODULAR_DIR}/<name>)")
    path = resolve_inside(text, list(settings.allowed_dirs))
    modular = load_modular(path)
    try:
        tokenizer = load_tokenizer(path / TEACHER_DIR)
    except ModelLoadError:
        raise ModularError(f"{path / TEACHER_DIR} holds no tokenizer: retrain the modules from the dashboard or "
                           "with `python -m compression modular-train`, which save it") from None
    state.use_modules(modular, tokenizer, str(path), str(path / TEACHER_DIR),
                      getattr(modular.teacher.config, "_name_or_path", None) or path.name)
    return modules_markdown(state), _ratio_slider(modular)


# ------------------------------------------------------------------------------ assembling

def _eval_pairs(settings: AppSettings, state: ModularState, source, train_file, validation_file, text_column,
                summary_column, eval_samples, max_source_length, max_target_length):
    """The :class:`compression.modular.EvaluationSet` of the data settings, cached per data choice;
    a new choice drops the points scored on the old one."""
    from compression.modular import EvaluationSet

    data = train_panel.data_args(settings, source, train_file, validation_file, text_column, summary_column,
                                 None, eval_samples, max_source_length, max_target_length)
    key = json.dumps([data.train_file, data.validation_file, data.dataset, data.text_column, data.summary_column,
                      data.max_eval_samples, data.max_source_length, data.max_target_length])
    if state.eval_key != key or state.eval_pairs is None:
        state.eval_pairs = EvaluationSet.from_data(data, state.modular.teacher)
        state.eval_key, state.teacher_point, state.points = key, None, []
    return state.eval_pairs


def run_points(settings: AppSettings, teacher_source: str | None) -> list[dict]:
    """Students of the finished SFT/KD runs of this teacher in the runs folder, as chart points
    (:func:`compression.runs.comparable_runs`)."""
    from compression.runs import comparable_runs

    return [point.as_dict() for point in comparable_runs(settings.runs_dir, teacher_source)]


def points_table(points: list[dict]) -> pd.DataFrame:
    """One row per point (teacher, assembled students, runs), units in the column names."""
    def number(value, digits):
        return round(float(value), digits) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    rows = []
    for p in points:
        layers = (f"{p['encoder_layers']}/{p['decoder_layers']}"
                  if p.get("encoder_layers") is not None and p.get("decoder_layers") is not None else p.get("label"))
        params = p.get("params")
        rows.append([modular_charts.METHOD_STYLES.get(p["method"], {}).get("name", p["method"]), layers,
                     number(p.get("ratio"), 2), number(params / 1e6 if isinstance(params, (int, float)) else None, 3),
                     number(p.get("size_mib"), 2), number(p.get("rouge1"), 2), number(p.get("rouge2"), 2),
                     number(p.get("rougeL"), 2), number(p.get("validation_loss"), 4), number(p.get("latency_ms"), 1),
                     number(p.get("speedup"), 2), ", ".join(p.get("replaced") or []) or None])
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def _all_points(settings: AppSettings, state: ModularState) -> list[dict]:
    teacher = [state.teacher_point] if state.teacher_point else []
    return teacher + list(state.points) + run_points(settings, state.teacher_source)


@user_errors
def assemble_and_evaluate(settings: AppSettings, state: ModularState, ratio, priority, max_new_tokens, source,
                          train_file, validation_file, text_column, summary_column, eval_samples, max_source_length,
                          max_target_length,
                          progress=gr.Progress()):  # noqa: B008 - gradio fills in a tracker given as the default
    """Assemble the student at ``ratio`` with ``priority`` (no training), score it and add its point.

    Scores teacher (once per data choice) and student on the validation pairs of the data settings
    with :func:`compression.modular.score_teacher` / :func:`compression.modular.score_assembly`
    (quality, size, and speedup at batch 1). Re-assembling the same
    modules replaces that point. A progress bar follows the timing and each validation summary of
    the student (and of the teacher, the first time). Returns ``(assembly markdown, assembly plan
    figure, points table, trade-off figure)``.

    Raises (as ``gr.Error``): no modules yet, a ratio outside 1..max_ratio or an unknown priority
    (:class:`compression.errors.ModularError`), bad data settings.
    """
    from compression.modular import score_assembly, score_teacher

    if state.modular is None:
        raise ModularError("no modules yet: train them (Train modules) or load a modules folder first")
    try:
        ratio = float(ratio)
    except (TypeError, ValueError):
        raise ModularError(f"the compression ratio must be a number (got {ratio!r})") from None
    new_tokens = positive_int(max_new_tokens, "max new tokens")
    pairs = _eval_pairs(settings, state, source, train_file, validation_file, text_column, summary_column,
                        eval_samples, max_source_length, max_target_length)
    progress(0.0, desc="assembling the student and timing it against the teacher")
    scored, record = score_assembly(state.modular, state.tokenizer, ratio, priority, pairs, max_new_tokens=new_tokens,
                                    on_progress=lambda done, total: progress(
                                        (done, total), desc="scoring the student: validation summaries"))
    if state.teacher_point is None:
        state.teacher_point = score_teacher(state.modular, state.tokenizer, pairs, max_new_tokens=new_tokens,
                                            on_progress=lambda done, total: progress(
                                                (done, total), desc="scoring the teacher: validation summaries")
                                            ).as_dict()
    point, replaced = scored.as_dict(), scored.replaced
    state.points = [p for p in state.points if (p["method"], p.get("replaced")) != (point["method"], replaced)]
    state.points.append(point)
    text = (f"**{point['method']}** at **{record['ratio']:.2f}×** (asked {ratio:.2f}×): encoder "
            f"{record['teacher_encoder_layers']} → **{record['encoder_layers']}**, decoder "
            f"{record['teacher_decoder_layers']} → **{record['decoder_layers']}** layers, "
            f"{point['params'] / 1e6:.2f} M parameters ({100 * point['params'] / state.teacher_point['params']:.0f}% "
            f"of the teacher). Modules: {', '.join(f'`{m}`' for m in replaced) or 'none (the teacher)'}. "
            f"On {len(pairs)} validation pairs: validation loss **{point['validation_loss']:.4f}** nats/token "
            f"(teacher {state.teacher_point['validation_loss']:.4f}), ROUGE-1 {point['rouge1']:.2f}, "
            f"**{point['speedup']:.2f}×** the teacher's generation speed."
            + (f" Speed-first shortened the **{record['speed_stack']}** first, the stack that costs more at "
               f"{record['source_length']:,} source tokens." if record.get("speed_stack") else ""))
    depths = {"encoder": record["teacher_encoder_layers"], "decoder": record["teacher_decoder_layers"]}
    return (text, modular_charts.assembly_plan(depths, record["replaced"]), points_table(_all_points(settings, state)),
            modular_charts.tradeoff_figure(_all_points(settings, state), pareto=True))


def assemble_if_ready(settings: AppSettings, state: ModularState, *values):
    """:func:`assemble_and_evaluate` for the slider and priority events: before any modules exist it
    changes nothing (``gr.skip()``) instead of showing an error."""
    if state.modular is None:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    return assemble_and_evaluate(settings, state, *values)


# ------------------------------------------------------------------------------ layout

def build_modular_tab(settings: AppSettings, session: gr.State) -> SimpleNamespace:
    """Lay out the tab's content (call it inside ``with gr.Tab(TAB_TITLE):``) and wire its events.

    Reads ``session`` (the base model of panel 1, the default teacher) and keeps its own
    :func:`modular_state`. Module training is a job on the server's queue, shared with the main Run,
    so one training job at a time runs on the machine; assembling and scoring runs under
    ``concurrency_id="assemble"`` (limit 1). API names: ``modular_train``, ``modular_resume``, ``modular_cancel``,
    ``modular_load``, ``modular_assemble`` (plus ``modular_data_source``, ``modular_file_columns``).
    """
    from functools import partial

    state = modular_state()
    choices = train_panel.data_choices(settings)
    default = train_panel.default_data_choice(choices)
    default_source_length, default_target_length = train_panel.preset_lengths(default)
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300, elem_classes=["panel"]):
            gr.Markdown("### Train the modules once\nModular Transformers (Zhou, Le Bras & Choi 2023): each module "
                        "is one layer trained to replace 2 or more consecutive teacher layers. Trained once, they "
                        "assemble students of many sizes without retraining.")
            teacher_folder = gr.Textbox(label="Teacher", elem_id="modular-teacher",
                                        placeholder="empty: the base model loaded in panel 1; or a local model folder",
                                        info="Best a fine-tuned summarizer: the modules learn to imitate it")
            granularities = gr.CheckboxGroup(GRANULARITY_CHOICES, value=[2, 3, 4], elem_id="modular-granularities",
                                             label="Granularities (teacher layers per module)",
                                             info="The paper found 2-4 (and 6) fine and 12 harmful")
            data_source = gr.Dropdown(choices, value=default, label="Dataset", elem_id="modular-data-source")
            with gr.Group(visible=default == train_panel.UPLOAD) as upload_group:
                with gr.Row():
                    train_file = gr.File(label="Training pairs", file_types=[".jsonl", ".json", ".csv", ".parquet"],
                                         elem_id="modular-train-file", height=120)
                    validation_file = gr.File(label="Validation pairs (optional)", elem_id="modular-validation-file",
                                              file_types=[".jsonl", ".json", ".csv", ".parquet"], height=120)
            with gr.Row():
                text_column = gr.Dropdown(["document"], value="document", label="Article column",
                                          allow_custom_value=True, elem_id="modular-text-column")
                summary_column = gr.Dropdown(["summary"], value="summary", label="Summary column",
                                             allow_custom_value=True, elem_id="modular-summary-column")
            with gr.Row():
                train_samples = gr.Number(1000, label="Pairs to train on", precision=0, minimum=1,
                                          elem_id="modular-train-samples")
                eval_samples = gr.Number(8, label="Validation pairs", precision=0, minimum=1,
                                         elem_id="modular-eval-samples",
                                         info="Also scores each assembled student: keep it small on a CPU")
                epochs = gr.Number(1, label="Epochs", minimum=0.01, elem_id="modular-epochs")
            with gr.Row():
                batch_size = gr.Slider(1, 64, value=8, step=1, label="Batch size", elem_id="modular-batch-size")
                learning_rate = gr.Number(3e-4, label="Learning rate", elem_id="modular-learning-rate")
            with gr.Row():
                max_source = gr.Slider(16, train_panel.FULL_ATTENTION_MAX_SOURCE, value=default_source_length,
                                       step=16, label="Max source length (tokens)", elem_id="modular-max-source",
                                       info=train_panel.source_length_bound(None)[1])
                max_target = gr.Slider(8, train_panel.MAX_TARGET_SLIDER, value=default_target_length, step=8,
                                       label="Max summary length (tokens)", elem_id="modular-max-target")
            with gr.Row():
                train = gr.Button("Train modules", variant="primary", elem_id="modular-train-button")
                cancel = gr.Button("Cancel", variant="stop", elem_id="modular-cancel-button")
            stopped_names = [] if settings.limits is not None else resumable_trainings(settings)
            with gr.Row(equal_height=True):
                stopped = gr.Dropdown(stopped_names, value=stopped_names[0] if stopped_names else None, scale=3,
                                      label="Stopped trainings (cancelled or interrupted, with a checkpoint)",
                                      elem_id="modular-stopped")
                resume = gr.Button("Resume", scale=1, interactive=bool(stopped_names), elem_id="modular-resume-button")
            with gr.Accordion("…or load modules trained before", open=False):
                modules_folder = gr.Textbox(label="Modules folder", elem_id="modular-folder",
                                            placeholder=f"{settings.runs_dir / MODULAR_DIR}/<timestamp>-<teacher>")
                load = gr.Button("Load modules", elem_id="modular-load-button")
        with gr.Column(scale=3, min_width=360, elem_classes=["panel"]):
            gr.Markdown("### Live module training")
            progress = gr.Markdown("Press **Train modules** to train them against the teacher.",
                                   elem_id="modular-progress")
            loss = gr.Plot(modular_charts.modules_loss_curve([]), show_label=False, label="Module loss curve",
                           elem_id="modular-loss-plot")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300, elem_classes=["panel"]):
            gr.Markdown("### Assemble a student (no training)")
            modules_info = gr.Markdown("No modules yet: train them, or load a modules folder.",
                                       elem_id="modular-modules-info")
            ratio = gr.Slider(1.0, 4.0, value=2.0, step=0.01, interactive=False, elem_id="modular-ratio",
                              label="Compression ratio (teacher layers / student layers)",
                              info="Enabled once modules exist")
            priority = gr.Radio(PRIORITY_CHOICES, value="size", label="Priority", elem_id="modular-priority",
                                info="Speed-first shortens first the stack that costs more at the max source length: the "
                                     "decoder for short inputs (it runs once per new token), the encoder for long ones")
            max_new = gr.Slider(8, 128, value=32, step=8, label="Max new tokens of the scored summaries",
                                elem_id="modular-max-new")
            assemble_button = gr.Button("Assemble and evaluate", variant="primary", elem_id="modular-assemble-button")
            assembly = gr.Markdown(elem_id="modular-assembly")
            plan = gr.Plot(modular_charts.assembly_plan({"encoder": 0, "decoder": 0}, [], "Assembly: none yet"),
                           show_label=False, label="Assembly plan", elem_id="modular-plan")
        with gr.Column(scale=3, min_width=360, elem_classes=["panel"]):
            tradeoff = gr.Plot(modular_charts.tradeoff_figure([]), show_label=False, label="Trade-off chart",
                               elem_id="modular-tradeoff")
            table = gr.Dataframe(pd.DataFrame(columns=TABLE_COLUMNS), label="Scored models", interactive=False,
                                 wrap=True, elem_id="modular-table")

    data_source.change(train_panel.on_source, [data_source, session],
                       [upload_group, text_column, summary_column, max_source, max_target],
                       api_name="modular_data_source", show_progress="hidden")
    train_file.upload(as_toast(partial(train_panel.columns_for_file, settings)), [train_file, train_samples],
                      [text_column, summary_column, train_samples],
                      api_name="modular_file_columns")
    data_values = [data_source, train_file, validation_file, text_column, summary_column]
    stopped_handler = dict(fn=bind(resume_choices, settings), inputs=[session, state], outputs=[stopped, resume],
                           api_visibility="private", show_progress="hidden")
    train.click(as_toast(bind(train_modules_job, settings), 4, status=0),
                [session, state, teacher_folder, granularities, *data_values, train_samples, eval_samples, epochs,
                 batch_size, learning_rate, max_source, max_target],
                [progress, loss, ratio, modules_info], api_name="modular_train", concurrency_limit=None).then(
        **stopped_handler)
    resume.click(as_toast(bind(resume_modules_job, settings), 4, status=0), [session, state, stopped],
                 [progress, loss, ratio, modules_info], api_name="modular_resume", concurrency_limit=None).then(
        **stopped_handler)
    cancel.click(partial(cancel_modules, settings), state, progress, api_name="modular_cancel",
                 concurrency_limit=None)
    load.click(as_toast(partial(load_modules, settings), 2, status=0), [state, modules_folder], [modules_info, ratio], api_name="modular_load")
    assemble_inputs = [state, ratio, priority, max_new, *data_values, eval_samples, max_source, max_target]
    assemble_outputs = [assembly, plan, table, tradeoff]
    assemble_button.click(as_toast(partial(assemble_and_evaluate, settings), 4, status=0), assemble_inputs, assemble_outputs,
                          api_name="modular_assemble", concurrency_limit=1, concurrency_id="assemble")
    gr.on([ratio.release, priority.change], as_toast(partial(assemble_if_ready, settings), 4, status=0), assemble_inputs, assemble_outputs,
          api_visibility="private", trigger_mode="always_last", concurrency_limit=1, concurrency_id="assemble")
    return SimpleNamespace(state=state, teacher_folder=teacher_folder, granularities=granularities,
                           data_source=data_source, train_file=train_file, validation_file=validation_file,
                           text_column=text_column, summary_column=summary_column, train_samples=train_samples,
                           eval_samples=eval_samples, epochs=epochs, batch_size=batch_size,
                           learning_rate=learning_rate, max_source=max_source, max_target=max_target, train=train,
                           cancel=cancel, stopped=stopped, resume=resume, stopped_handler=stopped_handler,
                           modules_folder=modules_folder, load=load, progress=progress, loss=loss,
                           modules_info=modules_info, ratio=ratio, priority=priority, max_new=max_new,
                           assemble=assemble_button, assembly=assembly, plan=plan, tradeoff=tradeoff, table=table)
