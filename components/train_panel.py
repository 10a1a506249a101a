"""Panels 3 and 4, data and training, then live training.

The Run handler queues :func:`compression.pipeline.run_pipeline` as a job on the server's
:class:`compression.jobs.JobQueue` and then watches it (:mod:`components.jobs`), yielding a progress
line and the loss curve as the run advances. The job belongs to the server: closing or reloading the
tab leaves it running, a reopened page (or any tab given ``?run=<id>``) reattaches to it, and only
Cancel stops it. One training job runs at a time; the others wait, showing their place.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from compression.dataset_presets import DATASET_PRESETS, DEFAULT_OFFLINE_DATASET
from compression.device import device_facts
from compression.errors import CompressionError, DatasetError

from . import charts
from .feedback import as_gr_error, as_toast, message_for, positive_int, user_errors
from .jobs import job_link
from .plan_panel import shrink_choice
from .state import AppSettings, Session

UPLOAD = "Upload JSONL/CSV files"
#: dashboard label -> dataset preset name (:mod:`compression.dataset_presets`), the default first; the
#: long-input stress test (``xsum-long``, labelled so) last.
OFFLINE_DATASETS = {DATASET_PRESETS[name].label: name
                    for name in (DEFAULT_OFFLINE_DATASET, "xsum-sample", "xsum-long")}
DEBIAN = DATASET_PRESETS[DEFAULT_OFFLINE_DATASET].label
XSUM = DATASET_PRESETS["xsum-sample"].label
XSUM_LONG = DATASET_PRESETS["xsum-long"].label
#: Source-length bound of the sliders (tokens) for a base with full self-attention (T5, BART; also before
#: a base is loaded): its attention's time and memory grow with the square of the source length.
FULL_ATTENTION_MAX_SOURCE = 1024
#: Model types whose encoder attention is local or transient-global (LongT5, Guo et al. 2022 section 2.1):
#: linear in the source length, so the sliders go up to ``--max-source-length``'s bound.
LONG_INPUT_MODEL_TYPES = ("longt5",)
#: Upper bound of the summary-length sliders (tokens): the long-input preset's targets are 512.
MAX_TARGET_SLIDER = 512
#: label -> (hub dataset id, config, text column, summary column)
HUB_DATASETS = {
    "EdinburghNLP/xsum (hub): document → summary": ("EdinburghNLP/xsum", None, "document", "summary"),
    "abisee/cnn_dailymail 3.0.0 (hub): article → highlights": ("abisee/cnn_dailymail", "3.0.0", "article", "highlights"),
}
TEXT_GUESSES = ("document", "article", "text", "content", "source", "body")
SUMMARY_GUESSES = ("summary", "highlights", "headline", "title", "target", "abstract")
METHOD_CHOICES = [("SFT: fine-tune on the summaries", "sft"), ("KD: distil from the base model (teacher)", "kd"),
                  ("Pseudo-labels: fine-tune on the base model's own summaries (sequence-level KD)", "pseudo")]
POLL_SECONDS = 1.0


def data_choices(settings: AppSettings) -> list[str]:
    """Dataset sources offered: uploads, the offline dataset presets whose files are in ``../shared``
    (Debian package descriptions, the XSum sample), and hub datasets unless offline."""
    choices = [UPLOAD]
    if settings.shared_dir is not None:
        choices += [label for label, name in OFFLINE_DATASETS.items()
                    if DATASET_PRESETS[name].available(settings.shared_dir)]
    if not settings.is_offline():
        choices += list(HUB_DATASETS)
    return choices


def default_data_choice(choices: list[str]) -> str:
    """The default offline dataset (Debian package descriptions) when offered, else the first
    offline preset, else uploads."""
    offline = [choice for choice in choices if choice in OFFLINE_DATASETS]
    return DEBIAN if DEBIAN in offline else (offline[0] if offline else UPLOAD)


def file_columns(path: str | Path) -> list[str]:
    """Column names of a JSONL/JSON/CSV/Parquet file (:func:`compression.datafile.inspect_data_file`).

    Raises:
        DatasetError: unsupported type, unreadable file, a bad row (file name and line number), no columns.
    """
    from compression.datafile import inspect_data_file

    return inspect_data_file(path).columns


def count_rows(path: str | Path) -> int | None:
    """Rows in a local data file (blank rows not counted), or ``None`` when it cannot be read."""
    from compression.datafile import inspect_data_file

    try:
        return inspect_data_file(path).rows
    except CompressionError:
        return None


def _guess(columns: list[str], guesses: tuple[str, ...], fallback: int) -> str | None:
    lowered = {c.lower(): c for c in columns}
    for guess in guesses:
        if guess in lowered:
            return lowered[guess]
    return columns[min(fallback, len(columns) - 1)] if columns else None


@user_errors
def columns_for_file(settings: AppSettings, train_file: str | None, train_samples=None):
    """Fill the two column dropdowns from an uploaded training file's columns (guessing which holds
    the article and which the summary) and bound "pairs to train on" by the file's rows. Returns
    ``(text dropdown, summary dropdown, pairs number)``.

    Raises (as ``gr.Error``): the file's first bad row (name and line number), an unsupported type."""
    from compression.datafile import inspect_data_file

    if not train_file:
        return gr.Dropdown(), gr.Dropdown(), gr.Number()
    facts = inspect_data_file(train_file)
    columns = facts.columns
    wanted = train_samples if isinstance(train_samples, (int, float)) and train_samples > 0 else facts.rows
    return (gr.Dropdown(choices=columns, value=_guess(columns, TEXT_GUESSES, 0)),
            gr.Dropdown(choices=columns, value=_guess(columns, SUMMARY_GUESSES, 1)),
            gr.Number(value=min(int(wanted), facts.rows), maximum=facts.rows,
                      info=f"the file holds {facts.rows:,} pairs"))


def source_length_bound(facts: dict | None) -> tuple[int, str]:
    """``(most source tokens the sliders offer, why)`` for the loaded base (``facts`` of
    :func:`compression.load.describe_model`, ``None`` before one is loaded): up to
    :data:`compression.config.MAX_SOURCE_LENGTH` (16,384) for LongT5, whose local / transient-global
    attention grows linearly with length; :data:`FULL_ATTENTION_MAX_SOURCE` for the others."""
    from compression.config import MAX_SOURCE_LENGTH

    if facts is not None and facts.get("model_type") in LONG_INPUT_MODEL_TYPES:
        return MAX_SOURCE_LENGTH, (f"up to {MAX_SOURCE_LENGTH:,} tokens: LongT5's local / transient-global "
                                   "attention grows linearly with the length (gradient checkpointing turns on "
                                   "from 4,096)")
    name = f"{facts['family'].upper()} attends" if facts is not None else "T5 and BART attend"
    return FULL_ATTENTION_MAX_SOURCE, (f"up to {FULL_ATTENTION_MAX_SOURCE:,} tokens: {name} to every source token, "
                                       "so time and memory grow with the square of the length; load a LongT5 "
                                       f"base (panel 1) for up to {MAX_SOURCE_LENGTH:,}")


def source_length_slider(session: Session | None, value=None) -> gr.Slider:
    """The max-source-length slider's update for the loaded base: its bound and reason
    (:func:`source_length_bound`), and ``value`` (when given) kept within the bound."""
    maximum, reason = source_length_bound(session.facts if session is not None else None)
    if value is None:
        return gr.Slider(maximum=maximum, info=reason)
    try:
        value = min(int(value), maximum)
    except (TypeError, ValueError):
        value = min(DATASET_PRESETS["xsum-sample"].max_source_length, maximum)
    return gr.Slider(maximum=maximum, value=value, info=reason)


def bound_source_length(session: Session, value):
    """After a base model loads: the max-source-length slider bounded for it (:func:`source_length_slider`)."""
    return source_length_slider(session, value)


def on_source(source: str, session: Session | None = None):
    """Show the upload widgets only for uploads; set fixed column names for the other sources, and an
    offline preset's source/summary lengths (:mod:`compression.dataset_presets`), the source length
    within the loaded base's bound (:func:`source_length_slider`: the 16,384 of ``xsum-long`` needs a
    LongT5 base, else it stops at 1,024 and the slider says why).
    Returns ``(upload group, text dropdown, summary dropdown, max source slider, max summary slider)``."""
    if source in HUB_DATASETS:
        _, _, text, summary = HUB_DATASETS[source]
        return (gr.Group(visible=False), gr.Dropdown(choices=[text], value=text),
                gr.Dropdown(choices=[summary], value=summary), gr.Slider(), gr.Slider())
    if source in OFFLINE_DATASETS:
        preset = DATASET_PRESETS[OFFLINE_DATASETS[source]]
        return (gr.Group(visible=False), gr.Dropdown(choices=[preset.text_column], value=preset.text_column),
                gr.Dropdown(choices=[preset.summary_column], value=preset.summary_column),
                source_length_slider(session, preset.max_source_length), gr.Slider(value=preset.max_target_length))
    return gr.Group(visible=True), gr.Dropdown(), gr.Dropdown(), gr.Slider(), gr.Slider()


def preset_lengths(source: str) -> tuple[int, int]:
    """``(max source, max summary)`` tokens the sliders start at for ``source`` before a base is
    loaded: an offline preset's own (the source within :data:`FULL_ATTENTION_MAX_SOURCE`), else 512 / 64."""
    preset = DATASET_PRESETS[OFFLINE_DATASETS[source]] if source in OFFLINE_DATASETS else DATASET_PRESETS["xsum-sample"]
    return min(preset.max_source_length, FULL_ATTENTION_MAX_SOURCE), preset.max_target_length


def device_summary() -> str:
    """Which device a run will use (:func:`compression.device.device_facts`): the CUDA GPU's name and
    memory, Apple MPS, or a CPU warning."""
    facts = device_facts()
    if facts["kind"] == "cuda":
        return f"**Device:** {facts['name']}, {facts['memory_gib']:.1f} GiB (CUDA)"
    if facts["kind"] == "mps":
        return "**Device:** Apple GPU (MPS)"
    return ("⚠ **Device: CPU** — training will be slow; keep the model, the samples and the max lengths "
            "small (e.g. a tiny preset, a few hundred pairs, 256 source tokens)")


def data_args(settings: AppSettings, source: str, train_file: str | None, validation_file: str | None,
              text_column: str | None, summary_column: str | None, train_samples, eval_samples,
              max_source_length, max_target_length):
    """The :class:`compression.config.DataArgs` for the panel's data choice.

    Raises:
        DatasetError: no file uploaded, no columns chosen, a hub dataset while offline, bad numbers.
    """
    from compression.config import DataArgs

    limits = dict(max_train_samples=positive_int(train_samples, "samples to train on", allow_none=True),
                  max_eval_samples=positive_int(eval_samples, "validation samples", allow_none=True),
                  max_source_length=positive_int(max_source_length, "max source length"),
                  max_target_length=positive_int(max_target_length, "max target length"))
    if source in OFFLINE_DATASETS:
        preset = DATASET_PRESETS[OFFLINE_DATASETS[source]]
        if settings.shared_dir is None:
            raise DatasetError(f"the {source} files (../shared) are not on this machine: upload files instead")
        train, validation = preset.files(settings.shared_dir)
        if preset.long_inputs:  # built from the files at load time (compression.long_inputs), by its name
            return DataArgs(dataset=preset.name, **limits)
        return DataArgs(train_file=str(train), validation_file=str(validation), text_column=preset.text_column,
                        summary_column=preset.summary_column, prefix=preset.prefix,
                        shuffle_seed=preset.shuffle_seed, **limits)
    if source in HUB_DATASETS:
        if settings.is_offline():
            raise DatasetError("hub datasets need the network, and the dashboard runs offline: upload files")
        name, config, text, summary = HUB_DATASETS[source]
        return DataArgs(dataset=name, dataset_config=config, text_column=text, summary_column=summary, **limits)
    if source != UPLOAD:
        raise DatasetError(f"unknown dataset choice {source!r}: pick one in the list")
    if not train_file:
        raise DatasetError("upload a training file (JSONL or CSV with an article and a summary column)")
    if not text_column or not summary_column:
        raise DatasetError("choose which column holds the article text and which the summary")
    check_upload(train_file, text_column, summary_column)
    if validation_file:
        check_upload(validation_file, text_column, summary_column)
    return DataArgs(train_file=str(train_file), validation_file=str(validation_file) if validation_file else None,
                    text_column=text_column, summary_column=summary_column, **limits)


def check_upload(path, text_column: str, summary_column: str) -> None:
    """Read an uploaded file once before any run: every row decodes and parses, and both chosen
    columns exist (:func:`compression.datafile.inspect_data_file`); messages name the file, never
    its server folder, and the line of the first bad row.

    Raises:
        DatasetError: a bad row, or a column the file lacks (with the columns it has).
    """
    from compression.datafile import inspect_data_file

    facts = inspect_data_file(path)
    missing = [c for c in (text_column, summary_column) if c not in facts.columns]
    if missing:
        raise DatasetError(f"{Path(path).name} has no column {', '.join(map(repr, missing))}; its columns are "
                           f"{', '.join(facts.columns)}: choose them in the column lists")


def run_folder_name(settings: AppSettings, session: Session, shrink: dict, run_name: str | None) -> Path:
    """``<runs>/<YYYYmmdd-HHMMSS>-<name>`` (:meth:`compression.runs.RunFolder.default_path`), the
    name being the visitor's or ``<model>-e<N>d<M>``."""
    from compression.runs import RunFolder

    if not (run_name or "").strip():
        model = Path(session.model_source or "model").name
        enc = shrink["encoder_layers"] if isinstance(shrink["encoder_layers"], int) else "c"
        dec = shrink["decoder_layers"] if isinstance(shrink["decoder_layers"], int) else "c"
        run_name = f"{model}-e{enc}d{dec}"
    return RunFolder.default_path(settings.runs_dir, run_name)


def train_args(data, epochs, batch_size, learning_rate, **flags):
    """The training settings of a run or a module training as a :class:`compression.config.TrainArgs`.

    ``logging_steps`` is chosen so the run logs about 100 points of the loss curve (every 5 steps
    when the number of pairs is unknown). ``flags`` are further ``TrainArgs`` fields (freezing).

    Raises:
        CompressionError: a batch size that is not a positive whole number, epochs or learning rate
            that are not numbers, or values ``TrainArgs`` rejects.
    """
    from compression.config import TrainArgs

    batch = positive_int(batch_size, "batch size")
    try:
        epochs, learning_rate = float(epochs), float(learning_rate)
    except (TypeError, ValueError):
        raise CompressionError("epochs and learning rate must be numbers (e.g. 1 and 3e-4)") from None
    pairs = [n for n in (data.max_train_samples, count_rows(data.train_file) if data.train_file else None) if n]
    logging_steps = 5
    if pairs and math.isfinite(epochs):
        steps = math.ceil(min(pairs) / batch) * max(epochs, 0)
        logging_steps = max(1, min(50, int(steps // 100)))
    return TrainArgs(epochs=epochs, batch_size=batch, learning_rate=learning_rate, logging_steps=logging_steps,
                     **flags)


#: Form values the page turns into settings itself (data source, custom layer lists); every other key
#: of the Run form is a :class:`compression.config.RunConfig` field name (``"train.epochs"``...).
PAGE_KEYS = ("source", "encoder_custom", "decoder_custom")
DATA_KEYS = ("data.train_file", "data.validation_file", "data.text_column", "data.summary_column",
             "data.max_train_samples", "data.max_eval_samples", "data.max_source_length", "data.max_target_length")


def build_run_config(settings: AppSettings, session: Session, form: dict):
    """The Run form, a dict keyed by field name, turned into a validated :class:`compression.config.RunConfig`.

    Keys: :data:`PAGE_KEYS`, the ``shrink.*`` and ``data.*`` fields (read through
    :func:`components.plan_panel.shrink_choice` and :func:`data_args`), ``name`` (the run name), and
    any other ``RunConfig`` field (``"train.epochs"``, ``"quantize"``, ``"kd.alpha_kl"``...), passed
    to :meth:`compression.config.RunConfig.from_form`. ``train.logging_steps`` is chosen by
    :func:`train_args` (about 100 points of the loss curve).

    Raises:
        CompressionError and subclasses: whatever is wrong, with what to change.
    """
    from compression.config import RunConfig

    if session.model_source is None:
        raise CompressionError("load a base model first (panel 1)")
    form = dict(form)
    page = {key: form.pop(key, None) for key in PAGE_KEYS}
    shrink, _, _ = shrink_choice(session, form.pop("shrink.encoder_layers", None), form.pop("shrink.decoder_layers", None),
                                 form.pop("shrink.strategy", None), page["encoder_custom"], page["decoder_custom"])
    data = data_args(settings, page["source"], *(form.pop(key, None) for key in DATA_KEYS))
    logging = train_args(data, form.get("train.epochs"), form.get("train.batch_size"),
                         form.get("train.learning_rate")).logging_steps
    run_name = (form.pop("name", None) or "").strip()
    output = run_folder_name(settings, session, shrink, run_name)
    return RunConfig.from_form({**form, "model": session.model_source, "output_dir": str(output),
                                "name": run_name or output.name, "shrink": shrink,
                                "data": dataclasses.asdict(data), "train.logging_steps": logging})


def _clock(seconds) -> str:
    if seconds is None or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "–"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


#: How the progress line names the models whose validation summaries it counts.
SUMMARY_MODELS = {"deployed": "deployed copy (CTranslate2)"}


def progress_markdown(stages: list[dict], records: list[dict], final: str | None = None) -> str:
    """The live status: stages passed and current; during evaluation, the validation articles
    summarized so far with an ETA; while quantize auto times the copies, how many of its copies and
    timings are done, with an ETA; then step/total with a bar, epoch, loss, learning rate,
    tokens/s, elapsed time and ETA from the latest training record."""
    lines = []
    if final:
        lines.append(final)
    if stages:
        done = [s["stage"] for s in stages[:-1]]
        current = stages[-1]
        if current["stage"] == "done":
            lines.append(" · ".join(f"✓ {name}" for name in done))
        else:
            trail = " · ".join([f"✓ {name}" for name in done] + [f"**▶ {current['stage']}**"])
            lines.append(f"{trail} — {current.get('message', '')}")
    latest = next((r for r in reversed(records) if r.get("kind") in ("summaries", "quantize")), None)
    stage = stages[-1]["stage"] if stages else None
    if stage == "deploy" and latest is not None and latest.get("model") != "deployed":
        latest = None  # converting: the last summaries were another model's
    if latest is not None and stage in ("evaluate", "quantize", "deploy"):
        if latest["kind"] == "summaries":
            model = SUMMARY_MODELS.get(latest["model"], latest["model"])
            lines.append(f"summarizing with the **{model}**: {latest['done']} / {latest['total']} "
                         f"validation articles · elapsed {_clock(latest.get('elapsed_s'))} · ETA "
                         f"{_clock(latest.get('eta_s'))}")
        else:
            lines.append(f"choosing the quantized copy: {latest['done']} / {latest['total']} ({latest['what']}) · "
                         f"elapsed {_clock(latest.get('elapsed_s'))} · ETA {_clock(latest.get('eta_s'))}")
    train = [r for r in records if r.get("kind") in ("train", "eval")]
    if train:
        last = train[-1]
        step, total = int(last.get("step") or 0), int(last.get("total_steps") or 0)
        fraction = step / total if total else 0.0
        filled = int(round(20 * fraction))
        losses = [r for r in train if r.get("kind") == "train" and r.get("loss") is not None]
        evals = [r for r in train if r.get("kind") == "eval" and r.get("eval_loss") is not None]
        parts = [f"`{'█' * filled}{'░' * (20 - filled)}` step **{step} / {total}** ({100 * fraction:.0f}%)",
                 f"epoch {float(last.get('epoch') or 0):.2f}"]
        if losses:
            parts.append(f"loss {losses[-1]['loss']:.4f} nats")
        if evals:
            parts.append(f"validation loss {evals[-1]['eval_loss']:.4f} nats")
        if last.get("learning_rate") is not None:
            parts.append(f"lr {last['learning_rate']:.2e}")
        if last.get("tokens_per_s") is not None:
            parts.append(f"{last['tokens_per_s']:,.0f} tokens/s")
        parts.append(f"elapsed {_clock(last.get('elapsed_s'))}")
        parts.append(f"ETA {_clock(last.get('eta_s'))}")
        lines.append(" · ".join(parts))
    return "\n\n".join(lines) or "Starting…"


def visitor_of(session: Session, request: gr.Request | None) -> str:
    """Who the session belongs to: the id kept in the browser (set when the page loads, see
    :func:`attach_job`), else the gradio session id (API clients, which load no page)."""
    if not session.visitor:
        session.visitor = (getattr(request, "session_hash", None) or "anonymous") if request is not None \
            else "anonymous"
    return session.visitor


def submit_run(settings: AppSettings, session: Session, config, visitor: str, existing: str = "refuse"):
    """Queue the run of ``config`` on the server's job queue (``settings.jobs``) for ``visitor``;
    the session watches it from now on. Returns the :class:`compression.jobs.Job`.

    The run folder is made only when the job starts (a queued job leaves nothing on disk); if a
    folder of that name exists by then, a fresh name is taken. ``existing="resume"``: continue the
    stopped run in ``config.output_dir`` instead (see :func:`resume_run`).

    On a public server (``settings.limits``) the run's settings are checked against the limits
    first, the run folder is recorded as the visitor's, the oldest visitor runs are removed to keep
    the disk quota, and the run is cancelled when it exceeds the wall-time limit.

    Raises:
        compression.jobs.JobLimitError: the visitor has too many jobs waiting or running.
        CompressionError: a setting beyond the public server's limits.
    """
    import dataclasses

    from compression import pipeline
    from compression.runs import RunFolder

    limits = settings.limits
    if limits is not None:
        data = config.data
        limits.check(train_pairs=data.max_train_samples, eval_pairs=data.max_eval_samples,
                     epochs=config.train.epochs, source_length=data.max_source_length)

    def work(emit, cancel):
        run_config = config
        if existing != "resume" and Path(run_config.output_dir).exists():
            run_config = dataclasses.replace(run_config, output_dir=str(
                RunFolder.default_path(settings.runs_dir, Path(config.output_dir).name[16:] or "run")))
        job.info["run_dir"] = run_config.output_dir
        timer = None
        if limits is not None:
            from compression.guard import enforce_quota

            settings.owners.set(Path(run_config.output_dir).name, visitor)
            enforce_quota(settings.runs_dir, limits.disk_quota_mib, keep=(Path(run_config.output_dir).name,))
            timer = threading.Timer(limits.max_wall_s, cancel.set)  # the wall-time limit: cancelled, log kept
            timer.daemon = True
            timer.start()
        try:
            result = pipeline.run_pipeline(run_config, on_progress=emit, cancel=cancel, progress_bar=False,
                                           existing=existing)
        finally:
            if timer is not None:
                timer.cancel()
        result["config"] = run_config.to_dict()
        return result

    job = settings.jobs.submit(work, kind="run", owner=visitor, label=Path(config.output_dir).name,
                               info={"run_dir": config.output_dir})
    session.job_id, session.records = job.id, job.records
    return job


def job_outputs(settings: AppSettings, session: Session, job, intro: str | None = None):
    """``(progress markdown, loss figure)`` for ``job`` as it stands; once it has ended, the session
    also takes its result for the results panel."""
    from .jobs import failure_markdown, job_link, queue_markdown

    if job.status == "queued":
        return "\n\n".join(filter(None, [intro, queue_markdown(settings.jobs, job), job_link(job)])), gr.skip()
    name = Path(job.info.get("run_dir") or job.label).name
    final = None
    if job.status == "complete":
        result = job.result
        session.run_dir = result["run_dir"]
        session.result = {"status": result["status"], "metrics": result.get("metrics"),
                          "summaries": result.get("summaries") or [], "config": result.get("config")}
        session.records = job.records
        from .runs_panel import run_link

        final = f"✓ **Run complete:** `{name}` · link to its results: `{run_link(name)}` after the page address"
    elif job.status == "cancelled":
        session.run_dir = job.info.get("run_dir")
        session.result = {"status": "cancelled", "metrics": None, "summaries": [], "config": None}
        final = (f"■ **Cancelled.** The loss log so far is kept in `{name}`." if job.started
                 else "■ **Cancelled** before it started: nothing was written.")
    elif job.status == "failed":
        final = failure_markdown(job)
    else:
        final = intro or f"▶ Running `{name}` · {job_link(job)}"
    return progress_markdown(job.stages, job.records, final), charts.loss_curve(job.records)


def watch_job(settings: AppSettings, session: Session, job_id: str | None = None, intro: str | None = None):
    """Generator: yield :func:`job_outputs` for the session's job (or ``job_id``) as it makes
    progress, until it ends. Closing it (the tab went away) leaves the job running."""
    from .jobs import watch

    job = settings.jobs.find(job_id or session.job_id)
    if job is None or job.kind == "teacher":  # a teacher training: components.teacher_job.watch_teacher
        yield gr.skip(), gr.skip()
        return
    for current in watch(job, POLL_SECONDS):
        yield job_outputs(settings, session, current, intro if not current.done else None)
        intro = None
    if job.status == "failed":
        gr.Warning(message_for(job.error))


def run_training(settings: AppSettings, keys: list[str], session: Session, *values,
                 request: gr.Request = None):
    """Generator behind Run: validate the settings, queue the run on the server
    (:func:`submit_run`), and watch it (:func:`watch_job`), yielding ``(progress markdown, loss
    figure)`` until it ends. The run belongs to the server: if this generator is closed (the tab
    was closed or reloaded) it goes on, and the reopened page finds it again.

    ``keys`` name the form's ``values`` (field names, see :func:`build_run_config`). When the run ends the
    session holds ``run_dir`` and ``result`` (``{"status", "metrics", "summaries", "config"}``) for
    the results panel. A run that fails shows its readable message on the progress line.

    Raises (as ``gr.Error``): any CompressionError from the settings (nothing is queued then), or a
    visitor already at the queue limit.
    """
    try:
        config = build_run_config(settings, session, dict(zip(keys, values, strict=True)))
        job = submit_run(settings, session, config, visitor_of(session, request))
    except Exception as error:  # noqa: BLE001 - the decorator's message, but nothing was queued
        raise as_gr_error(error) from None
    yield from watch_job(settings, session, job.id, intro=f"Run queued: `{job.label}` · {job_link(job)}")


def run_from_page(settings: AppSettings, keys: list[str], request: gr.Request, session: Session, *values):
    """:func:`run_training` as the Run event calls it: gradio fills ``request`` (it cannot fill a
    keyword-only parameter placed after ``*values``), so the run's owner is the visitor's session."""
    yield from run_training(settings, keys, session, *values, request=request)


def resume_run(settings: AppSettings, session: Session, name: str | None, request: gr.Request = None):
    """Generator behind the runs history's Resume: continue the cancelled or interrupted run
    ``name`` from its ``last-checkpoint/`` with the recipe it recorded
    (:func:`compression.resume.resume_config`), as a job on the server's queue like Run
    (:func:`submit_run`), watched like Run (:func:`watch_job`). On a public server only the visitor
    who started the run may resume it.

    Raises (as ``gr.Error``): no such run, a run that cannot be resumed (complete, still running,
    no checkpoint), someone else's run, or the visitor's queue limit.
    """
    from compression.errors import RunError
    from compression.resume import resume_config

    from .runs_panel import run_path

    try:
        path = run_path(settings, name, session)
        visitor = visitor_of(session, request)
        if settings.limits is not None and settings.owners.read().get(path.name) != visitor:
            raise RunError(f"run {path.name} was started by someone else: only they can resume it")
        job = submit_run(settings, session, resume_config(path), visitor, existing="resume")
    except Exception as error:  # noqa: BLE001 - the decorator's message, but nothing was queued
        raise as_gr_error(error) from None
    yield from watch_job(settings, session, job.id, intro=f"Resume queued: `{job.label}` · {job_link(job)}")


def resume_from_page(settings: AppSettings, request: gr.Request, session: Session, name: str | None):
    """:func:`resume_run` as the Resume event calls it (gradio fills ``request``)."""
    yield from resume_run(settings, session, name, request=request)


@user_errors
def estimate_time(settings: AppSettings, keys: list[str], session: Session, *values) -> str:
    """The line under Run: how long training will take for the form's settings, and what the figure
    is based on (:func:`compression.estimate.estimate_run`: steps x seconds per step, from this
    machine's runs or a modelled reference). ``keys`` name the form's ``values`` as for Run.

    Raises (as ``gr.Error``): the settings' own errors (no model loaded, bad data or layers).
    """
    from compression.estimate import estimate_run
    from compression.layers import estimate_student
    from compression.load import load_tokenizer

    form = dict(zip(keys, values, strict=True))
    config = build_run_config(settings, session, form)
    _, kept_enc, kept_dec = shrink_choice(session, form.get("shrink.encoder_layers"), form.get("shrink.decoder_layers"),
                                          form.get("shrink.strategy"), form.get("encoder_custom"),
                                          form.get("decoder_custom"))
    params, _ = estimate_student(session.footprint, kept_enc, kept_dec)
    estimate = estimate_run(config, load_tokenizer(config.tokenizer or config.model), params, settings.runs_dir,
                            model_prefix=(session.facts or {}).get("prefix"))
    kd = " (KD also runs the base model at every step: expect longer)" if config.method == "kd" else ""
    return (f"⏱ **About {_clock(estimate.seconds)} of training**{kd}: {estimate.steps} steps × "
            f"{estimate.seconds_per_step:.2f} s ({estimate.pairs} pairs, {estimate.tokens_per_pair:.0f} tokens each, "
            f"{params / 1e6:.2f} M-parameter student). {estimate.source.capitalize()} — {estimate.basis}.")


def cancel_training(settings: AppSettings, session: Session, request: gr.Request = None) -> str:
    """Cancel the job this tab watches (waiting: it leaves the queue; running: training stops after
    the current step, keeping its log). Only its owner may cancel it."""
    job = settings.jobs.find(session.job_id)
    if job is None or job.done or job.cancel_event.is_set():
        gr.Warning("No run of yours is waiting or running in this tab: nothing to cancel.")
        return gr.skip()
    if job.owner != visitor_of(session, request):
        gr.Warning("This run was started by someone else: only they can cancel it.")
        return gr.skip()
    settings.jobs.cancel(job.id)
    gr.Info("Cancelling: training stops after the current step.")
    return "■ Cancelling after the current step…"


def attach_job(settings: AppSettings, session: Session, visitor: str | None, request: gr.Request = None):
    """On page load: remember the visitor (a random id kept in the browser, made on the first
    visit) and pick the run this tab shows — the one named by ``?run=<id>`` in the address (a run or
    a teacher training, :func:`components.teacher_job.watch_teacher`), else the visitor's latest run
    (a module training named there is the modular tab's, :func:`components.modular_panel.attach_modules`). Returns ``(visitor id, progress markdown)``; :func:`watch_job` follows."""
    import secrets

    visitor = visitor if isinstance(visitor, str) and visitor else secrets.token_hex(8)
    session.visitor = visitor
    wanted = (request.query_params.get("run") if request is not None else None) or ""
    job = settings.jobs.find(wanted) if wanted else None
    if job is not None and job.kind == "modular":  # a module training: its tab reattaches to it
        wanted, job = "", None
    # (a teacher training is followed here too, by components.teacher_job.watch_teacher)
    if job is None and not (request is not None and request.query_params.get("open")):
        job = settings.jobs.latest(visitor, kind="run")  # (a ?open=<run> link shows that run instead)
    if wanted and job is None:
        gr.Warning(f"No job {wanted!r} on this server: it ended long ago or the server restarted; "
                   "look for its run in the runs history.")
    session.job_id = job.id if job is not None else None
    if job is None:
        return visitor, gr.skip()
    return visitor, f"Reattached to `{job.label}` ({job.status})."


def build_train_panel(settings: AppSettings, session: gr.State) -> SimpleNamespace:
    """Lay out panel 3 (data and training settings, Run and Cancel) and wire its own events; the
    Run click is wired in :mod:`app` (it reads panels 1-2 and feeds panels 5-6)."""
    from functools import partial

    from compression.config import DEPLOY_QUANTIZATIONS, QUANTIZE_CHOICES, EvalArgs, KDArgs, RunConfig, TrainArgs

    choices = data_choices(settings)
    default = default_data_choice(choices)
    default_source_length, default_target_length = preset_lengths(default)
    with gr.Column(elem_classes=["panel"]):
        gr.Markdown("### 3 · Data and training")
        source = gr.Dropdown(choices, value=default, label="Dataset", elem_id="data-source",
                             info="Article/summary pairs; uploads stay on this server's temporary folder")
        with gr.Group(visible=default == UPLOAD) as upload_group:
            with gr.Row():
                train_file = gr.File(label="Training pairs (JSONL / JSON / CSV / Parquet)",
                                     file_types=[".jsonl", ".json", ".csv", ".parquet"], elem_id="train-file",
                                     height=120)
                validation_file = gr.File(label="Validation pairs (optional)", elem_id="validation-file",
                                          file_types=[".jsonl", ".json", ".csv", ".parquet"], height=120)
        with gr.Row():
            text_column = gr.Dropdown(["document"], value="document", label="Article column",
                                      allow_custom_value=True, elem_id="text-column")
            summary_column = gr.Dropdown(["summary"], value="summary", label="Summary column",
                                         allow_custom_value=True, elem_id="summary-column")
        with gr.Row():
            train_samples = gr.Number(1000, label="Pairs to train on", precision=0, minimum=1, elem_id="train-samples")
            eval_samples = gr.Number(50, label="Validation pairs", precision=0, minimum=1, elem_id="eval-samples")
            epochs = gr.Number(TrainArgs.epochs, label="Epochs", minimum=0.01, elem_id="epochs")
        with gr.Row():
            batch_size = gr.Slider(1, 64, value=TrainArgs.batch_size, step=1, label="Batch size", elem_id="batch-size")
            learning_rate = gr.Number(TrainArgs.learning_rate, label="Learning rate", elem_id="learning-rate",
                                      info="AdamW peak rate; 3e-4 suits a hub checkpoint. Students of the small "
                                           "offline teacher keep more of it at 1e-3 (2/2: 86 % of its ROUGE-1 "
                                           "against 84 % at 3e-4, README)")
            label_smoothing = gr.Number(TrainArgs.label_smoothing, label="Label smoothing", minimum=0, maximum=0.99,
                                        elem_id="label-smoothing",
                                        info="share of each target's probability spread over the vocabulary; 0.1 "
                                             "kept a 2/2 SFT student of the over-fitted offline teacher at 98 % of "
                                             "its ROUGE-1 against 91 % without (README)")
        with gr.Row():
            max_source = gr.Slider(16, FULL_ATTENTION_MAX_SOURCE, value=default_source_length, step=16,
                                   label="Max source length (tokens)", info=source_length_bound(None)[1],
                                   elem_id="max-source")
            max_target = gr.Slider(8, MAX_TARGET_SLIDER, value=default_target_length, step=8,
                                   label="Max summary length (tokens)", elem_id="max-target")
        with gr.Row():
            freeze_embeddings = gr.Checkbox(TrainArgs.freeze_embeddings, label="Freeze embeddings", elem_id="freeze-embeddings")
            freeze_encoder = gr.Checkbox(TrainArgs.freeze_encoder, label="Freeze encoder", elem_id="freeze-encoder")
        method = gr.Radio(METHOD_CHOICES, value=RunConfig.method, label="Training method", elem_id="method",
                          info="KD runs the base model beside the student at every step: slower, "
                               "often better at equal size (Shleifer & Rush 2020)")
        with gr.Group(visible=RunConfig.method == "kd") as kd_group:
            with gr.Row():
                kd_alpha_kl = gr.Number(KDArgs.alpha_kl, label="Soft-target KL weight", minimum=0, elem_id="kd-alpha-kl")
                kd_alpha_ce = gr.Number(KDArgs.alpha_ce, label="Label cross-entropy weight", minimum=0, elem_id="kd-alpha-ce")
                kd_alpha_hidden = gr.Number(KDArgs.alpha_hidden, label="Hidden-state MSE weight", minimum=0,
                                            elem_id="kd-alpha-hidden")
                kd_temperature = gr.Number(KDArgs.temperature, label="Temperature T", minimum=0.01, elem_id="kd-temperature")
        with gr.Accordion("Evaluation and quantization", open=False):
            with gr.Row():
                quantize = gr.Dropdown(list(QUANTIZE_CHOICES), value=RunConfig.quantize, label="Quantize the student",
                                       info="auto: the fastest on this device; 8bit/4bit/fp4: bitsandbytes; fp16/bf16: half precision",
                                       elem_id="quantize")
                eval_beams = gr.Slider(1, 8, value=EvalArgs.num_beams, step=1, label="Beams", elem_id="eval-beams")
                eval_max_new = gr.Slider(8, 256, value=EvalArgs.max_new_tokens, step=8, label="Max new tokens", elem_id="eval-max-new")
            prune_vocab = gr.Checkbox(RunConfig.prune_vocab, label="Prune the quantized copy's vocabulary to the tokens of the data",
                                      info="smaller and faster (the 32k-row output layer shrinks); words the data "
                                           "never used become <unk>", elem_id="prune-vocab")
            quantize_wo = gr.Checkbox(RunConfig.quantize_wo, label="8bit/4bit: quantize T5's feed-forward output layers (wo) too",
                                      info="the smallest file; it loads with this tool, not with plain "
                                           "transformers from_pretrained", elem_id="quantize-wo")
            with gr.Row():
                deploy = gr.Checkbox(RunConfig.deploy, label="Deployed copy (CTranslate2)",
                                     info="convert the student for serving on a CPU and score it as the fourth "
                                          "model; a family CTranslate2 cannot convert gets a note",
                                     elem_id="deploy")
                deploy_quantization = gr.Dropdown(list(DEPLOY_QUANTIZATIONS), value=RunConfig.deploy_quantization,
                                                  label="Deployed-copy weights",
                                                  info="int8: the smallest and fastest on a CPU; float32: writes "
                                                       "the student's summaries exactly",
                                                  elem_id="deploy-quantization")
        run_name = gr.Textbox(label="Run name (optional)", placeholder="e.g. t5-small-e6d3", elem_id="run-name")
        gr.Markdown(device_summary(), elem_id="device-line")
        with gr.Row():
            run = gr.Button("Run", variant="primary", elem_id="run-button")
            estimate = gr.Button("Estimate the time", elem_id="estimate-button")
            cancel = gr.Button("Cancel", variant="stop", elem_id="cancel-button")
        estimate_line = gr.Markdown("", elem_id="run-estimate")

    source.change(on_source, [source, session], [upload_group, text_column, summary_column, max_source, max_target],
                  api_name="data_source",
                  show_progress="hidden")
    method.change(lambda choice: gr.update(visible=choice == "kd"), method, kd_group, show_progress="hidden",
                  api_name=False)
    train_file.upload(as_toast(partial(columns_for_file, settings)), [train_file, train_samples],
                      [text_column, summary_column, train_samples],
                      api_name="file_columns")
    # The Run form, keyed by RunConfig field name (build_run_config); the layer widgets come from panel 2.
    # The order is the /run API's argument order: append new settings at the end.
    form = {"source": source, "data.train_file": train_file, "data.validation_file": validation_file,
            "data.text_column": text_column, "data.summary_column": summary_column,
            "data.max_train_samples": train_samples, "data.max_eval_samples": eval_samples, "train.epochs": epochs,
            "train.batch_size": batch_size, "train.learning_rate": learning_rate,
            "data.max_source_length": max_source, "data.max_target_length": max_target,
            "train.freeze_embeddings": freeze_embeddings, "train.freeze_encoder": freeze_encoder,
            "quantize": quantize, "eval.num_beams": eval_beams, "eval.max_new_tokens": eval_max_new, "name": run_name,
            "method": method, "kd.alpha_ce": kd_alpha_ce, "kd.alpha_kl": kd_alpha_kl,
            "kd.alpha_hidden": kd_alpha_hidden, "kd.temperature": kd_temperature, "prune_vocab": prune_vocab,
            "quantize_wo": quantize_wo, "train.label_smoothing": label_smoothing, "deploy": deploy,
            "deploy_quantization": deploy_quantization}
    return SimpleNamespace(source=source, train_file=train_file, validation_file=validation_file,
                           text_column=text_column, summary_column=summary_column, train_samples=train_samples,
                           eval_samples=eval_samples, epochs=epochs, batch_size=batch_size,
                           learning_rate=learning_rate, max_source=max_source, max_target=max_target,
                           freeze_embeddings=freeze_embeddings, freeze_encoder=freeze_encoder, quantize=quantize,
                           eval_beams=eval_beams, eval_max_new=eval_max_new, run_name=run_name, method=method,
                           kd_alpha_ce=kd_alpha_ce, kd_alpha_kl=kd_alpha_kl, kd_alpha_hidden=kd_alpha_hidden,
                           kd_temperature=kd_temperature, prune_vocab=prune_vocab, quantize_wo=quantize_wo,
                           label_smoothing=label_smoothing, deploy=deploy, deploy_quantization=deploy_quantization,
                           run=run,
                           cancel=cancel, form=form, estimate=estimate, estimate_line=estimate_line)


def build_live_panel() -> SimpleNamespace:
    """Lay out panel 4: the progress line and the live loss curve."""
    with gr.Column(elem_classes=["panel"]):
        gr.Markdown("### 4 · Live training")
        progress = gr.Markdown("Press **Run** to shrink, fine-tune, evaluate and export a student.",
                               elem_id="run-progress")
        loss = gr.Plot(charts.loss_curve([]), show_label=False, label="Loss curve", elem_id="loss-plot")
    return SimpleNamespace(progress=progress, loss=loss)
