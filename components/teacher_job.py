"""Panel 1's "Train this preset as the teacher": the offline teacher recipe as a server job.

An untrained architecture preset writes nonsense until it is trained. This action trains the loaded
preset with :func:`compression.teacher.train_teacher` (the recipe's defaults,
:data:`compression.teacher.TEACHER_RECIPE`) on the dataset chosen in panel 3, as a job on the
server's queue (:mod:`compression.jobs`, like a run: a closed tab does not stop it), and puts the
trained teacher's folder (``<runs>/.bases/teacher-...``) in panel 1's folder box, ready to Load as
the base students are shrunk from. No model logic lives here.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from . import charts
from .feedback import as_gr_error, message_for
from .jobs import failure_markdown, job_link, queue_markdown, watch
from .state import AppSettings, Session

#: The panel-3 form fields the teacher job reads (the rest of the recipe is its own defaults).
FORM_KEYS = ("source", "data.train_file", "data.validation_file", "data.text_column", "data.summary_column",
             "data.max_eval_samples", "data.max_target_length")


def untrained_preset_of(session: Session) -> str:
    """The preset name of the base loaded in this tab (``config.untrained_preset``).

    Raises:
        ModelLoadError: no base loaded, or the loaded base is not an untrained preset (it is trained
            already: shrink it instead).
    """
    from transformers import AutoConfig

    from compression.errors import ModelLoadError

    if not session.model_source:
        raise ModelLoadError("load an untrained preset first (pick 'preset: …' in the list and press Load)")
    preset = getattr(AutoConfig.from_pretrained(session.model_source), "untrained_preset", None)
    if not preset:
        raise ModelLoadError(f"{session.model_label or session.model_source} is trained already: shrink it "
                             "with Run; only untrained presets need training as a teacher")
    return str(preset)


def submit_teacher(settings: AppSettings, session: Session, form: dict, visitor: str):
    """Queue the teacher training of the loaded preset on the panel-3 dataset (its whole training
    split; validation pairs, summary length from the form; every other setting from the recipe).
    Returns the :class:`compression.jobs.Job`; its result holds ``"teacher_dir"``.

    Raises:
        ModelLoadError: see :func:`untrained_preset_of`. DatasetError: a bad data choice.
        CompressionError: on a public server (a teacher takes an hour or more of the machine).
        compression.jobs.JobLimitError: the visitor has too many jobs waiting or running.
    """
    from compression.config import TrainArgs
    from compression.errors import CompressionError
    from compression.runs import RunFolder
    from compression.teacher import TEACHER_RECIPE, train_teacher

    from .train_panel import data_args

    if settings.limits is not None:
        raise CompressionError("training a teacher takes an hour or more of this machine and is off on a public "
                               "server: run `python -m compression teacher` on your own machine")
    preset = untrained_preset_of(session)
    data = data_args(settings, form["source"], form["data.train_file"], form["data.validation_file"],
                     form["data.text_column"], form["data.summary_column"], None, form["data.max_eval_samples"],
                     TEACHER_RECIPE["max_source_length"], form["data.max_target_length"])
    train = TrainArgs(**{key: value for key, value in TEACHER_RECIPE.items() if key in TrainArgs.__dataclass_fields__})
    output = RunFolder.default_path(settings.bases_dir, f"teacher-{preset}")
    tokenizer = session.model_source

    def work(emit, cancel):
        emit({"kind": "stage", "stage": "train the teacher",
              "message": f"the {preset} preset, {train.epochs:g} epochs at lr {train.learning_rate:g}, then greedy and "
                         f"beam-{TEACHER_RECIPE['score_beams']} summaries of the validation pairs"})
        result = train_teacher(data, train, output, preset=preset, tokenizer=tokenizer,
                               prune_vocab=TEACHER_RECIPE["prune_vocab"], dropout=TEACHER_RECIPE["dropout"],
                               save_dtype=TEACHER_RECIPE["save_dtype"], score_beams=TEACHER_RECIPE["score_beams"],
                               progress_bar=False, on_progress=emit, cancel=cancel)
        emit({"kind": "stage", "stage": "done", "message": result["status"]})
        return {**result, "teacher_dir": str(output)}

    return settings.jobs.submit(work, kind="teacher", owner=visitor, label=output.name,
                                info={"teacher_dir": str(output)})


def teacher_outcome(job) -> tuple[str, str | None]:
    """``(final line, folder for panel 1 or None)`` of an ended teacher job."""
    if job.status == "complete" and job.result["status"] == "complete":
        metrics = job.result.get("metrics") or {}
        scores = (f"ROUGE-1 {metrics['rouge1']:.1f} · ROUGE-2 {metrics['rouge2']:.1f} · ROUGE-L {metrics['rougeL']:.1f} · "
                  if "rouge1" in metrics else "")
        beam = job.result.get("metrics_beam") or {}
        if "rouge1" in beam:
            scores += f"with beam {job.result['score_beams']} ROUGE-1 {beam['rouge1']:.1f} · "
        loss = metrics.get("validation_loss", job.result["train"].get("eval_loss"))
        folder = job.result["teacher_dir"]
        return (f"✓ **Teacher trained** ({scores}validation loss {loss:.3f} nats): `{Path(folder).name}` is in panel 1's "
                "folder box — press **Load** to shrink it.", folder)
    if job.status == "failed":
        return failure_markdown(job), None
    return "■ **Teacher training cancelled**: nothing was saved as a teacher.", None


def train_teacher_from_page(settings: AppSettings, keys: list[str], request: gr.Request, session: Session,
                            *values):
    """Generator behind "Train this preset as the teacher": queue the job (:func:`submit_teacher`)
    and watch it, yielding ``(progress markdown, loss figure, panel 1's folder box)``; the folder box
    gets the teacher's folder when it completes. Closing the tab leaves the job running.

    Raises (as ``gr.Error``): any CompressionError from :func:`submit_teacher` (nothing is queued).
    """
    from .train_panel import visitor_of

    try:
        job = submit_teacher(settings, session, dict(zip(keys, values, strict=True)), visitor_of(session, request))
    except Exception as error:  # noqa: BLE001 - shown as the readable message, nothing was queued
        raise as_gr_error(error) from None
    session.job_id = job.id
    yield from watch_teacher(settings, session, job.id)


def watch_teacher(settings: AppSettings, session: Session, job_id: str | None = None):
    """Generator: follow the teacher training ``job_id`` (default: the session's job, e.g. the one a
    ``?run=<id>`` link named, :func:`components.train_panel.attach_job`), yielding ``(progress markdown,
    loss figure, panel 1's folder box)`` as it advances; the folder box gets the teacher's folder when
    it completes. Changes nothing when that job is not a teacher training. Closing it leaves the job
    running."""
    from .train_panel import progress_markdown

    job = settings.jobs.find(job_id or session.job_id)
    if job is None or job.kind != "teacher":
        yield gr.skip(), gr.skip(), gr.skip()
        return
    for current in watch(job):
        if current.status == "queued":
            yield "\n\n".join([queue_markdown(settings.jobs, current), job_link(current)]), gr.skip(), gr.skip()
        elif not current.done:
            yield (progress_markdown(current.stages, current.records, f"▶ Training the teacher `{job.label}` · "
                                                                      f"{job_link(job)}"),
                   charts.loss_curve(current.records), gr.skip())
    final, folder = teacher_outcome(job)
    yield (progress_markdown(job.stages, job.records, final), charts.loss_curve(job.records),
           folder if folder else gr.skip())
    if job.status == "failed":
        gr.Warning(message_for(job.error))
