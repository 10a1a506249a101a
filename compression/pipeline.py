"""The whole compression run, one function the CLI, the dashboard and the benchmarks share.

config -> load base -> shrink -> train (SFT or KD) -> evaluate base and student -> quantize ->
evaluate quantized -> export, written into one run folder (see :mod:`compression.runs`). The recipes
are Shleifer & Rush 2020, "Pre-trained Summarization Distillation", section 3: SFT (fine-tune the
shrunk student on the summaries) and KD (distil it from the base model as teacher); the headline
figure is the blog post's: each student score as a percentage of the base model's on the same
samples, next to size and speed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .arch import count_parameters
from .auto_quantize import auto_quantization
from .card import ModelCard
from .config import IMPORTANCE, RunConfig
from .data import prepare_data, record_prefix, tokenize_pairs
from .errors import CompressionError, DeployUnsupportedError
from .evaluate import evaluate_model
from .export import save_model
from .layers import shrink
from .load import describe_model, is_untrained, load_model, load_tokenizer, model_family
from .metrics import agreement, percent_of_base
from .preflight import preflight
from .quantize import AUTO_MODE, QUANTIZED_WO, quantize, save_quantized
from .resume import LAST_CHECKPOINT, checkpoint_step
from .runs import RunFolder, clear_run_folder
from .train import discard_checkpoint, finetune
from .vocab import pruning_info

logger = logging.getLogger(__name__)

#: Validation pairs taken from the start of the training set when the data has no validation split.
VALIDATION_FALLBACK = 100
SUMMARY_ROWS = 20  # validation samples kept side by side in summaries.jsonl


class _Stages:
    """Announces each stage to ``on_progress`` and times it (wall seconds per stage)."""

    def __init__(self, on_progress: Callable[[dict], None] | None):
        self.on_progress = on_progress
        self.seconds: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    @property
    def current(self) -> str | None:
        """The stage going on now (``None`` before the first)."""
        return self._current[0] if self._current else None

    def __call__(self, stage: str, message: str) -> None:
        now = time.perf_counter()
        if self._current is not None:
            name, started = self._current
            self.seconds[name] = self.seconds.get(name, 0.0) + now - started
        self._current = (stage, now)
        logger.info("%s: %s", stage, message)
        if self.on_progress is not None:
            self.on_progress({"kind": "stage", "stage": stage, "message": message})


def _without_predictions(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if key != "predictions"}


def run_pipeline(config: RunConfig, *, on_progress: Callable[[dict], None] | None = None,
                 cancel: threading.Event | None = None, token: str | None = None,
                 base=None, progress_bar: bool = True, existing: str = "refuse") -> dict:
    """Run shrink -> train -> evaluate -> quantize -> export end to end into ``config.output_dir``.

    The student is trained by ``config.method``: ``"sft"`` (:func:`compression.train.finetune`),
    ``"pseudo"`` (the same on the base model's own summaries of the training documents, cached in
    :func:`pseudo_label_cache_dir`; counts and examples in ``pseudo_labels.json``) or
    ``"kd"`` (:func:`compression.distill.distill` against the base model, frozen, with
    ``config.kd``; the loss log then carries one column per KD term).

    Args:
        config: the resolved settings (written to ``config.json``; no token is ever written).
        on_progress: called with ``{"kind": "stage", "stage", "message"}`` at each stage and with
            the training records of :func:`compression.train.finetune` (``kind`` train/eval; KD
            records add ``ce``, ``kl``... per :class:`compression.config.KDArgs` weights).
        cancel: set it to stop training within one step; the run is then marked cancelled, keeps
            its loss log and ``last-checkpoint/``, and is not evaluated.
        token: hub token for private checkpoints (used, never stored).
        base: an already loaded ``(model, tokenizer)`` to use instead of loading ``config.model``.
        existing: what an ``output_dir`` that already holds a run means: ``"refuse"`` (an
            :class:`compression.errors.OutputError`), ``"overwrite"`` (it is cleared first),
            ``"resume"`` (a cancelled or interrupted run continued from its ``last-checkpoint/``:
            the same student is rebuilt, training goes on from the checkpoint's step with its
            optimizer, schedule, RNG and data order, then evaluation and export as usual; the
            ``config`` should be the run's own, :func:`compression.resume.resume_config`).

    Returns:
        ``{"run_dir", "status": "complete"|"cancelled", "metrics": {"base", "student", "quantized",
        "deployed"}, "summaries": [...], "train": {...}, "timings": {stage: seconds}}``. Each metrics
        entry: see :func:`compression.evaluate.evaluate_model` (without predictions; with
        ``output_health``, the degenerate-output flags), or :func:`compression.deploy.evaluate_deployed`
        for ``deployed``; student, quantized and deployed add ``percent_of_base`` ({rouge1: %, ...},
        ``None`` where the base scores 0) and ``agreement`` (ROUGE F1 of their summaries against the
        base model's and the share identical to them, :func:`compression.metrics.agreement`); quantized
        and deployed add ``agreement_with_student`` (the same against the float32 student's summaries:
        ``identical`` is how often the copy writes exactly what the student writes). ``quantized`` is
        ``None`` when ``config.quantize == "none"``; ``deployed`` is ``None`` without ``config.deploy``
        and ``{"note": why}`` where CTranslate2 cannot convert the family.

    Raises:
        CompressionError (and subclasses): anything the user can fix. Input errors are found by
        :func:`compression.preflight.preflight` before the run folder exists; later ones mark the
        run folder failed with the reason, never complete.
    """
    preflight(config, existing=existing)
    if existing == "overwrite":
        clear_run_folder(config.output_dir)
    resume_from = Path(config.output_dir) / LAST_CHECKPOINT if existing == "resume" else None
    run = RunFolder.open(config.output_dir)
    if resume_from is None:
        run.write_json("config.json", config.to_dict())
    cancel = cancel if cancel is not None else threading.Event()
    announce = _Stages(on_progress)
    beating = run.start_heartbeat()
    try:
        with _signals_cancel(cancel, announce):
            return _run(config, run, announce, on_progress, cancel, token, base, progress_bar, resume_from)
    except KeyboardInterrupt:
        run.mark_cancelled(f"interrupted (Ctrl-C or SIGTERM) during {announce.current or 'start-up'}")
        raise
    except BaseException as error:
        run.mark_failed(f"{type(error).__name__}: {error}")
        raise
    finally:
        beating.set()


@contextlib.contextmanager
def _signals_cancel(cancel: threading.Event, announce: _Stages):
    """Ctrl-C (SIGINT) and SIGTERM during training set ``cancel`` (training stops after the step and
    keeps ``last-checkpoint/``; the run is marked cancelled); in any other stage, or a second time,
    they raise ``KeyboardInterrupt`` (the run is marked cancelled too). Only in the main thread,
    where Python delivers signals; elsewhere (the dashboard's worker) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if announce.current == "train" and not cancel.is_set():
            logger.warning("%s: stopping training after this step (again to stop at once)",
                           signal.Signals(signum).name)
            cancel.set()
            return
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _resuming(resume_from: Path | None) -> str:
    if resume_from is None:
        return ""
    return f", continuing from step {checkpoint_step(resume_from)} of {resume_from.name}/"


def _quantize_progress(on_progress):
    """An ``on_progress(done, total, what)`` for :func:`compression.auto_quantize.auto_quantization`
    that emits ``{"kind": "quantize", "done", "total", "what", "elapsed_s", "eta_s"}`` records
    (seconds), or ``None`` without a progress callback."""
    if on_progress is None:
        return None
    started = time.perf_counter()

    def emit(done: int, total: int, what: str) -> None:
        elapsed = time.perf_counter() - started
        on_progress({"kind": "quantize", "done": done, "total": total, "what": what, "elapsed_s": elapsed,
                     "eta_s": elapsed / done * (total - done) if done else None})
    return emit


def _summary_progress(on_progress, model: str):
    """An ``on_progress(done, total)`` for :func:`compression.evaluate.evaluate_model` that emits
    ``{"kind": "summaries", "model", "done", "total", "elapsed_s", "eta_s"}`` records (seconds;
    the ETA from the mean time per summary so far), or ``None`` without a progress callback."""
    if on_progress is None:
        return None
    started = time.perf_counter()

    def emit(done: int, total: int) -> None:
        elapsed = time.perf_counter() - started
        on_progress({"kind": "summaries", "model": model, "done": done, "total": total,
                     "elapsed_s": elapsed, "eta_s": elapsed / done * (total - done) if done else None})
    return emit


def _run(config, run, announce, on_progress, cancel, token, base, progress_bar, resume_from=None) -> dict:
    announce("load", f"loading {config.model}")
    if base is None:
        base_model, tok = load_model(config.model, tokenizer=config.tokenizer, token=token)
    else:
        base_model, tok = base
        if config.tokenizer is not None:
            tok = load_tokenizer(config.tokenizer)
    data = prepare_data(config.data, base_model, tok, validation_fallback=VALIDATION_FALLBACK)
    if data.validation_from_train:
        logger.warning("no validation set given: evaluating on the first training pairs")
    pairs, prefix, train_set, validation_set = data.pairs, data.prefix, data.train, data.validation

    announce("shrink", f"keeping encoder {config.shrink.encoder_layers or 'all'}, "
                                 f"decoder {config.shrink.decoder_layers or 'all'} ({config.shrink.strategy})")
    if config.shrink.strategy == IMPORTANCE:
        from .importance import shrink_by_importance

        calibration = train_set.select(range(min(config.shrink.importance_samples, len(train_set))))
        announce("shrink", f"scoring the layers ({config.shrink.importance_score}) on {len(calibration)} training pairs")
        student, importance = shrink_by_importance(base_model, tok, calibration, config.shrink.encoder_layers,
                                                   config.shrink.decoder_layers, score=config.shrink.importance_score)
        run.write_json("importance.json", importance)
    else:
        student = shrink(base_model, config.shrink.encoder_layers, config.shrink.decoder_layers,
                         config.shrink.strategy)
    student.config.shrink["teacher"] = config.model
    record_prefix(student, prefix)
    run.write_json("architecture.json", {"base": describe_model(base_model), "student": describe_model(student)})

    if config.method == "kd":
        from .distill import distill

        announce("train", f"distilling from the base model on {len(train_set)} pairs for "
                          f"{config.train.epochs:g} epoch(s){_resuming(resume_from)}")
        result = distill(student, base_model, tok, train_set, validation_set, config.train, config.kd, run.path,
                         on_progress=on_progress, cancel=cancel, progress_bar=progress_bar, resume_from=resume_from)
    elif config.method == "pseudo":
        lengths = dict(prefix=prefix, max_source_length=config.data.max_source_length,
                       max_target_length=config.data.max_target_length)
        train_set = _pseudo_label_set(config, run, announce, base_model, tok, pairs["train"], prefix, lengths)
        announce("train", f"fine-tuning on {len(train_set)} pseudo-labelled pairs for {config.train.epochs:g} "
                          f"epoch(s){_resuming(resume_from)}")
        result = finetune(student, tok, train_set, validation_set, config.train, run.path,
                          on_progress=on_progress, cancel=cancel, progress_bar=progress_bar, resume_from=resume_from)
    else:
        announce("train", f"fine-tuning on {len(train_set)} pairs for {config.train.epochs:g} epoch(s)"
                          f"{_resuming(resume_from)}")
        result = finetune(student, tok, train_set, validation_set, config.train, run.path,
                          on_progress=on_progress, cancel=cancel, progress_bar=progress_bar, resume_from=resume_from)
    train_summary = {key: value for key, value in vars(result).items() if key != "log_history"}
    run.write_json("train.json", train_summary)
    if result.cancelled:
        run.mark_cancelled("cancelled during training")
        announce("done", "cancelled: the loss log and last-checkpoint/ are kept")
        return {"run_dir": str(run.path), "status": "cancelled", "metrics": None, "summaries": [],
                "train": train_summary, "timings": announce.seconds}

    documents = list(pairs["validation"]["document"])
    references = list(pairs["validation"]["summary"])
    evaluation = dict(prefix=prefix, max_source_length=config.data.max_source_length,
                      max_target_length=config.data.max_target_length, args=config.eval)
    announce("evaluate", f"evaluating base and student on {len(documents)} validation pairs")
    metrics = {"base": evaluate_model(base_model, tok, documents, references, **evaluation,
                                      on_progress=_summary_progress(on_progress, "base"))}
    metrics["base"]["untrained"] = is_untrained(base_model)
    metrics["student"] = evaluate_model(student, tok, documents, references, **evaluation,
                                        on_progress=_summary_progress(on_progress, "student"))
    metrics["student"]["percent_of_base"] = percent_of_base(metrics["student"], metrics["base"])
    metrics["student"]["agreement"] = agreement(metrics["student"]["predictions"], metrics["base"]["predictions"])

    announce("export", "saving the student")
    card = student_card(config, student, len(train_set),
                        {name: metrics[name] for name in ("base", "student")})
    student_dir = save_model(student, tok, run.path / "student", card=card)
    discard_checkpoint(run.path)  # the trained student is saved: nothing is left to continue

    texts = None
    if config.prune_vocab and pruning_info(student) is None:  # a pruned teacher's student already is
        texts = [prefix + text for split in pairs.values() for text in split["document"]]
        texts += [text for split in pairs.values() for text in split["summary"]]
    metrics["quantized"] = None
    mode, auto, rest_dtype = config.quantize, None, "bfloat16"
    if mode == AUTO_MODE:
        announce("quantize", "choosing the quantized copy: timing the student and each mode on this machine")
        auto = auto_quantization(student_dir, device=config.train.device, documents=documents[:2], prefix=prefix,
                                 on_progress=_quantize_progress(on_progress))
        mode, rest_dtype = auto.mode, auto.rest_dtype
    if mode != "none" or config.prune_vocab:
        announce("quantize", f"quantizing the student ({mode}{', pruned vocabulary' if config.prune_vocab else ''})")
        quantized = quantize(student_dir, mode, device=config.train.device, vocab_texts=texts,
                             quantize_wo=config.quantize_wo, rest_dtype=rest_dtype)
        metrics["quantized"] = evaluate_model(quantized, tok, documents, references, **evaluation,
                                              on_progress=_summary_progress(on_progress, "quantized"))
        metrics["quantized"]["percent_of_base"] = percent_of_base(metrics["quantized"], metrics["base"])
        metrics["quantized"]["agreement"] = agreement(metrics["quantized"]["predictions"],
                                                      metrics["base"]["predictions"])
        metrics["quantized"]["agreement_with_student"] = agreement(metrics["quantized"]["predictions"],
                                                                   metrics["student"]["predictions"])
        metrics["quantized"]["mode"] = mode
        metrics["quantized"]["auto"] = auto.to_dict() if auto is not None else None
        metrics["quantized"]["pruned_vocab"] = config.prune_vocab
        metrics["quantized"]["quantized_wo"] = bool(getattr(quantized.config, QUANTIZED_WO, False))
        save_quantized(quantized, tok, run.path / "quantized",
                       card=card.updated(dict(quantization=mode, metrics=metrics, pruned_vocab=config.prune_vocab,
                                              quantized_wo=metrics["quantized"]["quantized_wo"])))
        del quantized

    metrics["deployed"] = None
    deploy_note = None
    if config.deploy:
        announce("deploy", f"converting the student with CTranslate2 ({config.deploy_quantization})")
        try:
            metrics["deployed"] = _deploy(config, run, student_dir, tok, texts, prefix, documents, references,
                                          evaluation, metrics["student"], on_progress)
            metrics["deployed"]["percent_of_base"] = percent_of_base(metrics["deployed"], metrics["base"])
            metrics["deployed"]["agreement"] = agreement(metrics["deployed"]["predictions"],
                                                         metrics["base"]["predictions"])
        except DeployUnsupportedError as error:
            deploy_note = str(error)
            logger.warning("no deployed copy: %s", deploy_note)

    rows = []
    for i in range(min(SUMMARY_ROWS, len(documents))):
        rows.append({"id": str(pairs["validation"][i].get("id", i)) if "id" in pairs["validation"].column_names else str(i),
                     "document": documents[i], "reference": references[i],
                     **{name: m["predictions"][i] for name, m in metrics.items() if m is not None}})
    run.write_summaries(rows)
    stored = {name: (_without_predictions(m) if m is not None else None) for name, m in metrics.items()}
    if deploy_note is not None:
        stored["deployed"] = {"note": deploy_note}
    announce("done", f"run complete: {run.path}")
    run.write_json("timings.json", announce.seconds)
    run.write_json("metrics.json", stored)
    run.mark_complete()
    return {"run_dir": str(run.path), "status": "complete", "metrics": stored, "summaries": rows,
            "train": train_summary, "timings": announce.seconds}


def _deploy(config: RunConfig, run: RunFolder, student_dir: Path, tok, texts, prefix: str, documents, references,
            evaluation: dict, student: dict, on_progress=None) -> dict:
    """Convert the student (pruned to ``texts``' vocabulary when given) to ``RUN_DIR/deployed`` with
    CTranslate2 and evaluate it (:func:`compression.deploy.evaluate_deployed`, the PyTorch
    thread count), reporting its validation summaries as ``"summaries"`` records of the model
    ``"deployed"`` (:func:`_summary_progress`). ``student`` is the float32 student's metrics entry
    (with its ``predictions``): ``params`` is the pruned model's count when the vocabulary was pruned,
    else the student's; ``agreement_with_student`` compares the copy's summaries with the student's,
    and the folder's README says how many are identical. Raises DeployUnsupportedError when CTranslate2 cannot take
    the family."""
    import tempfile

    import torch

    from .deploy import deploy_card, evaluate_deployed, export_ct2
    from .files import atomic_write_text

    source, params = student_dir, student["params"]
    with tempfile.TemporaryDirectory(prefix="deploy-") as workdir:
        if texts is not None:
            from .vocab import prune_for_texts

            source = Path(workdir) / "pruned"
            pruned = prune_for_texts(load_model(student_dir)[0], tok, texts)
            params = count_parameters(pruned)
            pruned.save_pretrained(source)
            tok.save_pretrained(source)
        folder = export_ct2(source, run.path / "deployed", quantization=config.deploy_quantization, prefix=prefix,
                            name=f"{run.path.name} student")
    result = evaluate_deployed(folder, documents, references, threads=torch.get_num_threads(),
                               on_progress=_summary_progress(on_progress, "deployed"), **evaluation)
    result["pruned_vocab"] = texts is not None
    result["params"] = params
    result["agreement_with_student"] = agreement(result["predictions"], student["predictions"])
    info_path = folder / "deploy.json"
    info = json.loads(info_path.read_text(encoding="utf-8"))
    info["source"] = "student" + (" (vocabulary pruned to the run's data)" if texts is not None else "")
    atomic_write_text(info_path, json.dumps(info, indent=2) + "\n")
    atomic_write_text(folder / "README.md", deploy_card(info, result))
    return result


def pseudo_label_cache_dir(config: RunConfig) -> Path:
    """Where a run's pseudo-labels are cached: ``config.pseudo.pseudo_cache_dir``, else
    ``.pseudo-labels`` in the folder that holds the run folder (shared by the runs there)."""
    if config.pseudo.pseudo_cache_dir:
        return Path(config.pseudo.pseudo_cache_dir)
    return Path(config.output_dir).parent / ".pseudo-labels"


def _pseudo_label_set(config, run, announce, teacher, tok, train_pairs, prefix, lengths):
    """Sequence-level KD's training set: the base model's summaries of the training documents
    (cached, :func:`compression.pseudo_labels.pseudo_labels`) as targets, filtered and mixed per
    ``config.pseudo``, tokenized; the counts go to ``pseudo_labels.json`` in the run folder."""
    from .pseudo_labels import pseudo_label_pairs, pseudo_labels

    settings = config.pseudo
    announce("pseudo-label", f"the base model summarizes the {len(train_pairs)} training documents "
                             "(cached per teacher and data)")
    labels, info = pseudo_labels(teacher, tok, list(train_pairs["document"]), prefix=prefix,
                                 max_source_length=config.data.max_source_length,
                                 max_new_tokens=settings.pseudo_max_new_tokens or config.data.max_target_length,
                                 num_beams=settings.pseudo_beams, batch_size=config.eval.batch_size,
                                 cache_dir=pseudo_label_cache_dir(config))
    pairs, counts = pseudo_label_pairs(train_pairs, labels, settings)
    run.write_json("pseudo_labels.json", {**info, **counts, "examples": [
        {"document": d[:300], "reference": r, "pseudo_label": p}
        for d, r, p in zip(train_pairs["document"][:5], train_pairs["summary"][:5], labels[:5])]})
    return tokenize_pairs(pairs, tok, **lengths)


def student_card(config: RunConfig, student, train_samples: int, metrics: dict) -> ModelCard:
    """The model card of a run's student: its method (``config.method``) and how it was made."""
    record = student.config.shrink
    data = config.data
    return ModelCard(
        method="pseudo-label-kd" if config.method == "pseudo" else config.method, family=model_family(student), base_model=config.model,
        encoder_layers=record["encoder_layers_kept"], decoder_layers=record["decoder_layers_kept"],
        teacher_encoder_layers=record["teacher_encoder_layers"], teacher_decoder_layers=record["teacher_decoder_layers"],
        strategy=record["strategy"],
        datasets=[d for d in [data.dataset or (Path(data.train_file).name if data.train_file else None)] if d],
        train_samples=train_samples, epochs=config.train.epochs, learning_rate=config.train.learning_rate,
        metrics={name: _without_predictions(m) for name, m in metrics.items() if m is not None})


def load_run_models(run_dir: str | Path, *, token: str | None = None) -> dict:
    """``{"base", "student", "quantized", "deployed"}`` -> ``(model, tokenizer)`` of a completed run,
    for summarising new articles side by side (:func:`summarize_with`). ``base`` is reloaded from the
    run's ``config.json``; ``quantized`` and ``deployed`` (a :class:`compression.deploy.DeployedModel`)
    only where the run made them.

    Raises:
        RunError: not a complete run folder. ModelLoadError: the base checkpoint is gone.
    """
    from .runs import load_run

    record = load_run(run_dir)
    run_dir = Path(run_dir)
    models = {"base": load_model(record["config"]["model"], tokenizer=record["config"].get("tokenizer"), token=token)}
    models["student"] = load_model(run_dir / "student")
    if (run_dir / "quantized" / "config.json").is_file():
        models["quantized"] = load_model(run_dir / "quantized")
    from .deploy import DeployedModel, is_deployed_folder

    if is_deployed_folder(run_dir / "deployed"):
        try:
            deployed = DeployedModel(run_dir / "deployed")
            models["deployed"] = (deployed, deployed.tokenizer)
        except CompressionError as error:  # CTranslate2 missing or broken here: the PyTorch copies still serve
            logger.warning("deployed copy not loaded: %s", error)
    return models


#: The copies of the student, and how the page names them.
STUDENT_COPIES = {"student": "PyTorch float32", "quantized": "PyTorch quantized", "deployed": "CTranslate2"}


def fastest_student_copy(metrics: dict | None, available) -> tuple[str, str]:
    """Which copy of the student to summarize with: the one among ``available`` (names of
    :data:`STUDENT_COPIES`) with the lowest measured ``latency_ms`` in the run's ``metrics``
    (ms per summary, batch 1); the float32 student when nothing was timed.

    Returns ``(name, sentence)``, e.g. ``("deployed", "the deployed copy (CTranslate2 int8),
    3.1 ms per summary against 12.0 ms for the float32 student")``.
    """
    metrics = metrics or {}
    timed = {name: (metrics.get(name) or {}).get("latency_ms") for name in STUDENT_COPIES if name in available}
    timed = {name: ms for name, ms in timed.items() if isinstance(ms, (int, float))}
    if not timed:
        return "student", "the float32 student (no copy of it was timed)"
    name = min(timed, key=timed.get)
    entry = metrics[name]
    kind = STUDENT_COPIES[name]
    if name == "deployed":
        kind += f" {entry.get('quantization')}"
    elif name == "quantized" and entry.get("mode"):
        kind += f" {entry['mode']}"
    sentence = f"the {name} copy ({kind}), {timed[name]:.1f} ms per summary"
    if name != "student" and "student" in timed:
        sentence += f" against {timed['student']:.1f} ms for the float32 student"
    return name, sentence


def summarize_with(models: dict, name: str, article: str, *, prefix: str | None, max_source_length: int,
                   args) -> str:
    """Summarize ``article`` with ``models[name]`` (from :func:`load_run_models`): PyTorch copies
    through :func:`compression.evaluate.generate_summaries`, the deployed copy through
    ``Translator.translate_batch``; greedy or beam search per ``args`` (:class:`EvalArgs`).
    ``prefix=None``: the model family's default."""
    from .data import default_prefix
    from .evaluate import generate_summaries

    model, tokenizer = models[name]
    if name == "deployed":
        return model.summarize([article], prefix=prefix, max_source_length=max_source_length,
                               max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, batch_size=1)[0]
    prefix = default_prefix(model) if prefix is None else prefix
    return generate_summaries(model, tokenizer, [article], prefix=prefix, max_source_length=max_source_length,
                              args=args)[0]
