"""Modular Transformers as a workflow: train once from a recipe, then assemble and score students.

The engine side of the dashboard's "Train once, assemble many" tab and of ``python -m compression
modular-train`` / ``assemble --score``: :func:`train_modular` (load the teacher and the data, train,
save), an :class:`EvaluationSet` (the validation pairs every point is scored on), and
:func:`score_teacher` / :func:`score_assembly`, which return :class:`compression.metrics.Point` s
(quality from :func:`compression.evaluate.score_model`, speed from
:func:`compression.timing.paired_speedup`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import DataArgs, TrainArgs
from ..data import load_pairs, prepare_data, record_prefix, resolve_prefix
from ..errors import DatasetError
from ..evaluate import score_model
from ..metrics import Point
from ..timing import paired_speedup
from .assembly import assemble
from .model import ModularModel
from .spans import ModularArgs
from .trainer import train_modules

#: Validation pairs taken from the start of the training set when the data has no validation split.
VALIDATION_FALLBACK = 100
#: Method names of assembled students in :class:`Point`, by priority.
METHOD_OF_PRIORITY = {"size": "modular (size-first)", "speed": "modular (speed-first)"}


@dataclass
class ModularConfig:
    """Everything :func:`train_modular` needs: the ``teacher`` (hub id or folder; ``tokenizer`` when
    the checkpoint has none), the ``data``, the Trainer settings ``train``, the module settings
    ``modular`` and the ``output`` folder of the modular checkpoint."""

    teacher: str
    data: DataArgs
    output: str | Path
    train: TrainArgs = field(default_factory=TrainArgs)
    modular: ModularArgs = field(default_factory=ModularArgs)
    tokenizer: str | None = None


def train_modular(config: ModularConfig, on_progress: Callable[[dict], None] | None = None,
                  cancel: threading.Event | None = None, *, token: str | None = None,
                  progress_bar: bool = True, resume_from: str | Path | None = None) -> tuple[ModularModel, Any]:
    """Load the teacher and the data, train the modules (:func:`compression.modular.train_modules`)
    and save them to ``config.output``.

    ``on_progress`` receives stage records ``{"kind": "stage", "stage": "load"|"train"|"done",
    "message"}`` and the training's progress records (:class:`compression.progress.ProgressCallback`);
    ``cancel`` stops training after the current step (what was trained is saved, and the Trainer's
    full checkpoint goes to ``config.output/last-checkpoint``); so do Ctrl-C and SIGTERM during
    training when called from the main thread (the command line). ``resume_from``: that
    ``last-checkpoint`` folder, to continue the training with the same recipe
    (:func:`compression.modular.train_modules`). Without a validation split the first
    :data:`VALIDATION_FALLBACK` training pairs validate.

    Returns:
        ``(modular model, tokenizer)``.

    Raises:
        ModelLoadError, NotSeq2SeqError, RemoteCodeError: the teacher cannot be loaded.
        DatasetError: bad data. ModularError: granularities this teacher cannot take.
        CompressionError, OutOfMemoryError, RunError: see :func:`compression.modular.train_modules`.
    """
    from ..load import load_model
    from ..pipeline import _signals_cancel, _Stages

    cancel = cancel if cancel is not None else threading.Event()
    stage = _Stages(on_progress)
    with _signals_cancel(cancel, stage):
        return _train_modular(config, stage, on_progress, cancel, token, progress_bar, resume_from, load_model)


def _train_modular(config, stage, on_progress, cancel, token, progress_bar, resume_from, load_model):
    from ..preflight import check_checkpoint

    stage("load", f"loading {config.teacher} and the data")
    check_checkpoint(config.teacher, quantized_ok=False)  # the modules copy and train the teacher's float layers
    teacher, tokenizer = load_model(config.teacher, tokenizer=config.tokenizer, token=token)
    data = prepare_data(config.data, teacher, tokenizer, validation_fallback=VALIDATION_FALLBACK)
    record_prefix(teacher, data.prefix)  # the modules learn this prompt; assembled students inherit it
    resuming = f", continuing from {Path(resume_from).name}/" if resume_from is not None else ""
    stage("train", f"training granularities {', '.join(map(str, config.modular.granularities))} on "
                   f"{len(data.train)} pairs for {config.train.epochs:g} epoch(s){resuming}")
    output = Path(config.output)
    created = not output.exists()
    write_recipe(config)
    try:
        modular = train_modules(teacher, tokenizer, data.train, data.validation, config.train, config.modular,
                                config.output, on_progress=on_progress, cancel=cancel, progress_bar=progress_bar,
                                resume_from=resume_from)
    except BaseException:
        if created:  # the recipe alone is no training: leave no folder behind for it
            (output / RECIPE_FILE).unlink(missing_ok=True)
            if output.is_dir() and not any(output.iterdir()):
                output.rmdir()
        raise
    if modular.info["training"]["cancelled"]:
        stage("done", f"cancelled: what was trained is saved to {config.output}; continue with --resume")
    else:
        stage("done", f"modules saved to {config.output}")
    return modular, tokenizer


#: The recipe of a module training (:class:`ModularConfig` as JSON), written into its output folder
#: when training starts, so a stopped training can be continued without its flags (:func:`resume_recipe`).
RECIPE_FILE = "recipe.json"


def write_recipe(config: ModularConfig) -> Path:
    """Write ``config`` (teacher, tokenizer, data, Trainer and module settings) to
    ``config.output/recipe.json`` atomically; returns that file.

    Raises:
        OSError: the folder cannot be written (the Trainer would fail there too).
    """
    import json
    from dataclasses import asdict

    from ..files import atomic_write_text

    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    recipe = {"teacher": config.teacher, "tokenizer": config.tokenizer, "data": asdict(config.data),
              "train": asdict(config.train), "modular": asdict(config.modular)}
    return atomic_write_text(output / RECIPE_FILE, json.dumps(recipe, indent=2) + "\n")


def resume_recipe(folder: str | Path) -> tuple[ModularConfig, Path]:
    """What continuing the stopped module training in ``folder`` needs: its recipe
    (``recipe.json``, with ``output`` = ``folder``) and its ``last-checkpoint/`` (checked whole);
    :func:`train_modular` with ``resume_from`` = that checkpoint continues it, as ``modular-train
    --resume`` does.

    Raises:
        RunError: no ``last-checkpoint/`` (the training completed, or stopped before one was saved),
            a checkpoint that is not whole, no readable recipe (a training started before recipes
            were written: continue it with ``modular-train --resume`` and its flags).
        CompressionError: a recorded setting this version refuses.
    """
    import json

    from ..config import DataArgs, ModularArgs, TrainArgs
    from ..errors import RunError
    from ..resume import LAST_CHECKPOINT, checkpoint_step

    folder = Path(folder)
    checkpoint = folder / LAST_CHECKPOINT
    if not checkpoint.is_dir():
        raise RunError(f"module training {folder.name} has no {LAST_CHECKPOINT}/ to resume from (it completed, "
                       "or stopped before one was saved): train the modules again")
    checkpoint_step(checkpoint)
    try:
        recipe = json.loads((folder / RECIPE_FILE).read_text(encoding="utf-8"))
        config = ModularConfig(teacher=recipe["teacher"], tokenizer=recipe.get("tokenizer"), output=folder,
                               data=DataArgs(**recipe["data"]), train=TrainArgs(**recipe["train"]),
                               modular=ModularArgs(**recipe["modular"]))
    except (OSError, ValueError, KeyError, TypeError):
        raise RunError(f"module training {folder.name} has no readable {RECIPE_FILE}: continue it with "
                       "`python -m compression modular-train --resume` and the flags it was started with") from None
    return config, checkpoint


@dataclass(frozen=True)
class EvaluationSet:
    """The pairs points are scored on: ``documents`` and ``references`` (same length), the source
    ``prefix``, and the source/summary truncation lengths in tokens."""

    documents: tuple[str, ...]
    references: tuple[str, ...]
    prefix: str
    max_source_length: int
    max_target_length: int

    @classmethod
    def from_data(cls, data: DataArgs, model: Any) -> EvaluationSet:
        """The validation split of ``data``, else its first ``data.max_eval_samples`` training pairs;
        the prefix is the one ``model``'s family expects (:func:`compression.data.resolve_prefix`).

        Raises:
            DatasetError: bad data, or no pairs at all.
        """
        pairs = load_pairs(data)
        split = pairs["validation"] if "validation" in pairs else pairs["train"]
        if "validation" not in pairs and data.max_eval_samples:
            split = split.select(range(min(len(split), data.max_eval_samples)))
        if len(split) == 0:
            raise DatasetError("no pairs to score on: give a validation file or more training pairs")
        return cls(tuple(split["document"]), tuple(split["summary"]), resolve_prefix(data, model),
                   data.max_source_length, data.max_target_length)

    def __len__(self) -> int:
        return len(self.documents)


def _quality(model, tokenizer, pairs: EvaluationSet, max_new_tokens: int, on_progress=None) -> dict:
    return score_model(model, tokenizer, list(pairs.documents), list(pairs.references), prefix=pairs.prefix,
                       max_source_length=pairs.max_source_length, max_target_length=pairs.max_target_length,
                       max_new_tokens=max_new_tokens, on_progress=on_progress)


def score_teacher(modular: ModularModel, tokenizer, pairs: EvaluationSet, *, max_new_tokens: int = 32,
                  on_progress: Callable[[int, int], None] | None = None) -> Point:
    """The teacher as the reference point (ratio 1, speedup 1), scored like the students.
    ``on_progress(done, total)``: validation summaries written so far.

    Raises:
        ValueError, CompressionError, OutOfMemoryError: see :func:`compression.evaluate.score_model`.
    """
    return Point(method="teacher", label="teacher", ratio=1.0, speedup=1.0,
                 encoder_layers=modular.depths["encoder"], decoder_layers=modular.depths["decoder"],
                 **_quality(modular.teacher, tokenizer, pairs, max_new_tokens, on_progress))


def score_assembly(modular: ModularModel, tokenizer, ratio: float, priority: str, pairs: EvaluationSet, *,
                   max_new_tokens: int = 32, speed_samples: int = 2, speed_repeats: int = 3,
                   granularities=None, speed_cut: str = "auto",
                   on_progress: Callable[[int, int], None] | None = None) -> tuple[Point, dict]:
    """Assemble the student at ``ratio`` with ``priority`` (:func:`compression.modular.assemble`, no
    training) and score it on ``pairs``: ROUGE and validation loss (greedy, at most
    ``max_new_tokens`` new tokens), size, and the speedup over the teacher (batch 1, 32 forced new
    tokens on ``speed_samples`` documents, teacher and student alternated ``speed_repeats`` times:
    :func:`compression.timing.paired_speedup`). ``speed_cut``: speed-first's stack (``"auto"``: the one
    that costs more at the pairs' max source length, :func:`compression.modular.assembly.speed_stack`).
    ``on_progress(done, total)``: validation summaries written so far (after the timing, which comes first).

    Returns:
        ``(point, record)``: the :class:`Point` and the student's ``config.modular`` record (ratio
        achieved, depths, replaced spans).

    Raises:
        ModularError: a ratio outside 1..max_ratio, an unknown priority or granularity.
        ValueError, CompressionError, OutOfMemoryError: see :func:`compression.evaluate.score_model`.
    """
    student = assemble(modular, ratio, priority, granularities, speed_cut=speed_cut,
                       source_length=pairs.max_source_length)
    record = student.config.modular
    speed = paired_speedup(modular.teacher, student, tokenizer, list(pairs.documents), prefix=pairs.prefix,
                           max_source_length=pairs.max_source_length, samples=speed_samples, repeats=speed_repeats)
    point = Point(method=METHOD_OF_PRIORITY.get(priority, priority),
                  label=f"{record['encoder_layers']}/{record['decoder_layers']}",
                  encoder_layers=record["encoder_layers"], decoder_layers=record["decoder_layers"],
                  ratio=record["ratio"], replaced=[span["module"] for span in record["replaced"]],
                  note=f"ratio {record['ratio']:.2f}×", **_quality(student, tokenizer, pairs, max_new_tokens, on_progress),
                  **speed)
    return point, record
