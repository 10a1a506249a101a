"""Command line: ``python -m compression <command>``; every stage of the pipeline, headless.

Flags for data, training and evaluation are generated from the dataclasses in
:mod:`compression.config` (one definition shared with the dashboard), in the spirit of
transformers' ``HfArgumentParser``. Exit status: 0 on success, 2 on a user error (one line on
stderr, no traceback), 1 on an internal failure.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

from . import preflight
from .cli import EVAL_RENAMES, build_parser, from_flags, hub_token
from .config import (
    IMPORTANCE,
    DataArgs,
    EvalArgs,
    KDArgs,
    ModularArgs,
    PseudoArgs,
    RunConfig,
    ShrinkArgs,
    TrainArgs,
)
from .errors import CompressionError


def _print(args, payload, text: str | None = None) -> None:
    if not _is_main_process():  # under torchrun the result is printed once, by rank 0
        return
    if args.json:
        print(json.dumps(payload, indent=2, default=str))
    elif text is not None:
        print(text)


def _load_base(args):
    from .load import load_model

    return load_model(args.model, tokenizer=args.tokenizer, token=hub_token())


def _shrink_args(args) -> ShrinkArgs:
    return from_flags(ShrinkArgs, args)


def cmd_init(args) -> None:
    preflight.check_output(args.output)

    from .export import save_model
    from .load import build_preset, describe_model

    model, tokenizer = build_preset(args.preset, args.tokenizer, seed=args.seed)
    save_model(model, tokenizer, args.output, card={"method": "preset", "base_model": f"preset:{args.preset} (untrained)"})
    facts = describe_model(model)
    _print(args, {"output": args.output, **facts},
           f"{args.preset}: {facts['encoder_layers']}/{facts['decoder_layers']} layers, d_model {facts['d_model']}, "
           f"{facts['params'] / 1e6:.2f}M parameters, {facts['size_mib']:.1f} MiB -> {args.output} (untrained)")


def cmd_shrink(args) -> None:
    plan = from_flags(ShrinkArgs, args)
    preflight.check_output(args.output)
    preflight.check_layers(preflight.check_checkpoint(args.model, quantized_ok=False) or {}, plan.encoder_layers,
                           plan.decoder_layers, plan.strategy)

    from .export import save_model
    from .load import describe_model

    model, tokenizer = _load_base(args)
    student = _make_student(args, model, tokenizer, args.data, args.dataset, CALIBRATION_FLAGS)
    student.config.shrink["teacher"] = args.model
    record = student.config.shrink
    save_model(student, tokenizer, args.output, card={
        "method": "shrunk", "base_model": args.model, "encoder_layers": record["encoder_layers_kept"],
        "decoder_layers": record["decoder_layers_kept"], "strategy": record["strategy"],
        "teacher_encoder_layers": record["teacher_encoder_layers"],
        "teacher_decoder_layers": record["teacher_decoder_layers"]})
    before, after = describe_model(model), describe_model(student)
    _print(args, {"output": args.output, "base": before, "student": after},
           f"encoder kept {record['encoder_layers_kept']} of {before['encoder_layers']}, decoder kept "
           f"{record['decoder_layers_kept']} of {before['decoder_layers']}: {before['params'] / 1e6:.2f}M -> "
           f"{after['params'] / 1e6:.2f}M parameters -> {args.output}")


#: The options that give shrink, prune-width and importance their calibration pairs.
CALIBRATION_FLAGS = "--data FILE or --dataset PRESET"


def _make_student(args, model, tokenizer, data_file: str | None, dataset: str | None, flags: str):
    """Shrink ``model`` by the layer flags; the importance strategy scores the layers on the first
    ``--importance-samples`` pairs of ``data_file`` or of the preset ``dataset``'s training split
    (shuffled first with ``--shuffle-seed``, or the preset's seed); ``flags`` names the options that
    give them, for the error when neither is given."""
    from .layers import shrink

    choice = _shrink_args(args)
    if choice.strategy != IMPORTANCE:
        return shrink(model, choice.encoder_layers, choice.decoder_layers, choice.strategy)
    from .importance import load_calibration, shrink_by_importance

    if not (data_file or dataset):
        raise CompressionError(f"--strategy importance scores the layers on calibration pairs: give {flags}")
    calibration = load_calibration(data_file, tokenizer, model, dataset=None if data_file else dataset,
                                   samples=choice.importance_samples, shuffle_seed=args.shuffle_seed)
    student, _ = shrink_by_importance(model, tokenizer, calibration, choice.encoder_layers, choice.decoder_layers,
                                      score=choice.importance_score)
    return student


def cmd_prune_width(args) -> None:
    from .export import save_model
    from .importance import load_calibration
    from .load import describe_model
    from .width import check_keep, prune_width, widths

    preflight.check_checkpoint(args.model, quantized_ok=False)
    model, tokenizer = _load_base(args)
    check_keep(model, args.ffn_keep, args.heads_keep)
    if args.batch_size < 1:
        raise CompressionError("--batch-size must be at least 1")
    base = model
    if args.encoder_layers is not None or args.decoder_layers is not None:
        model = _make_student(args, model, tokenizer, args.data, args.dataset, CALIBRATION_FLAGS)
        model.config.shrink["teacher"] = args.model
    calibration = None
    if args.data or args.dataset:
        calibration = load_calibration(args.data, tokenizer, model, dataset=args.dataset, samples=args.samples,
                                       max_source_length=args.max_source_length,
                                       max_target_length=args.max_target_length, text_column=args.text_column,
                                       summary_column=args.summary_column, shuffle_seed=args.shuffle_seed)
    student = prune_width(model, tokenizer, calibration, ffn_keep=args.ffn_keep, heads_keep=args.heads_keep,
                          batch_size=args.batch_size)
    width = student.config.width
    record = getattr(student.config, "shrink", None) or {}
    save_model(student, tokenizer, args.output, card={
        "model_name": "Width-pruned summarizer", "base_model": args.model, "method": "width pruning (activation-ranked)",
        "encoder_layers": record.get("encoder_layers_kept"), "decoder_layers": record.get("decoder_layers_kept")})
    before, after = describe_model(base), describe_model(student)
    _print(args, {"output": args.output, "base": before, "student": after, "width": width},
           f"feed-forward {widths(base)['ffn']} -> {width['ffn']} neurons, heads {width['teacher_heads']} -> "
           f"{width['heads']}, layers {before['encoder_layers']}/{before['decoder_layers']} -> "
           f"{after['encoder_layers']}/{after['decoder_layers']}: {before['params'] / 1e6:.2f}M -> "
           f"{after['params'] / 1e6:.2f}M parameters -> {args.output}")


def cmd_importance(args) -> None:
    from .importance import importance_table, layer_importance, load_calibration

    model, tokenizer = _load_base(args)
    calibration = load_calibration(args.data, tokenizer, model, dataset=args.dataset, samples=args.samples,
                                   max_source_length=args.max_source_length, max_target_length=args.max_target_length,
                                   text_column=args.text_column, summary_column=args.summary_column,
                                   shuffle_seed=args.shuffle_seed)
    if args.batch_size < 1:
        raise CompressionError("--batch-size must be at least 1")
    scores = layer_importance(model, tokenizer, calibration, batch_size=args.batch_size, drop_one=args.drop_one)
    _print(args, scores, importance_table(scores))


def _tokenized(data: DataArgs, model, tokenizer):
    """(train, validation or None, prefix): both splits tokenized with the prefix
    :func:`compression.data.resolve_prefix` gives for ``model``, and that prefix."""
    from .data import prepare_data

    prepared = prepare_data(data, model, tokenizer)
    return prepared.train, prepared.validation, prepared.prefix


def _evaluation_data(data: DataArgs) -> DataArgs:
    """Data flags for scoring: one file given serves as both splits."""
    if data.validation_file is None and data.dataset is None and data.train_file is not None:
        data = dataclasses.replace(data, validation_file=data.train_file)
    if data.train_file is None and data.validation_file is not None:
        data = dataclasses.replace(data, train_file=data.validation_file)
    return data


def _is_main_process() -> bool:
    """False on the non-zero ranks of a ``torchrun`` launch, which must not write the output."""
    return int(os.environ.get("RANK", "0")) == 0


def _resume_from(args) -> Path | None:
    """``--output``'s ``last-checkpoint/`` when ``--resume`` is given (checked now, before any load)."""
    if not getattr(args, "resume", False):
        return None
    from .resume import LAST_CHECKPOINT, checkpoint_step

    folder = Path(args.output) / LAST_CHECKPOINT
    if not folder.is_dir():
        raise CompressionError(f"--resume: {args.output} holds no {LAST_CHECKPOINT}/ to continue from (training "
                               "there completed, or stopped before one was saved)")
    checkpoint_step(folder)
    return folder


def cmd_finetune(args) -> None:
    data, train_args = from_flags(DataArgs, args), from_flags(TrainArgs, args)
    preflight.check_output(args.output)
    resume_from = _resume_from(args)
    preflight.check_checkpoint(args.model, quantized_ok=False)
    preflight.check_data(data)

    from .data import record_prefix
    from .export import save_model
    from .progress import LOSS_LOG
    from .train import discard_checkpoint, finetune

    model, tokenizer = _load_base(args)
    train_set, validation, prefix = _tokenized(data, model, tokenizer)
    record_prefix(model, prefix)
    output = Path(args.output)
    result = finetune(model, tokenizer, train_set, validation, train_args, output, progress_bar=not args.json,
                      resume_from=resume_from)
    if not result.cancelled and _is_main_process():
        discard_checkpoint(output)  # training completed: the model below replaces it
        card = {"base_model": args.model, "dataset": Path(data.train_file).name if data.train_file else data.dataset,
                "train_samples": len(train_set), "epochs": train_args.epochs,
                "learning_rate": train_args.learning_rate,
                "metrics": {"fine-tuned": {"validation_loss": result.eval_loss}}}
        save_model(model, tokenizer, output, card=card, keep=(LOSS_LOG,))
    summary = {key: value for key, value in vars(result).items() if key != "log_history"}
    _print(args, {"output": str(output), **summary},
           f"{result.steps} steps, {result.epochs:.2f} epochs in {result.seconds:.0f} s "
           f"({result.tokens_per_s:,.0f} real tokens/s): train loss {result.train_loss:.4f}, validation loss "
           + (f"{result.eval_loss:.4f}" if result.eval_loss is not None else "-") + f" nats -> {output}")


def cmd_evaluate(args) -> None:
    data, eval_args = _evaluation_data(from_flags(DataArgs, args)), from_flags(EvalArgs, args)
    from .deploy import is_deployed_folder

    if is_deployed_folder(args.model):
        _evaluate_deployed(args, data, eval_args)
        return
    preflight.check_checkpoint(args.model)
    preflight.check_data(data)

    from .data import load_pairs, resolve_prefix
    from .evaluate import evaluate_model
    from .table import compare_table, table_notes

    model, tokenizer = _load_base(args)
    split = load_pairs(data)["validation"]
    metrics = evaluate_model(model, tokenizer, list(split["document"]), list(split["summary"]),
                             prefix=resolve_prefix(data, model), max_source_length=data.max_source_length,
                             max_target_length=data.max_target_length, args=eval_args)
    metrics.pop("predictions")
    rows = {Path(args.model).name or args.model: metrics}
    _print(args, metrics, compare_table(rows) + "\n\n" + table_notes(rows))


def _evaluate_deployed(args, data: DataArgs, eval_args: EvalArgs) -> None:
    """``evaluate`` of a deployed (CTranslate2) folder: :func:`compression.deploy.evaluate_deployed`
    with the prefix its ``deploy.json`` records unless ``--prefix`` (or a dataset preset) sets one."""
    preflight.check_data(data)

    from .data import load_pairs
    from .deploy import evaluate_deployed
    from .table import compare_table, table_notes

    split = load_pairs(data)["validation"]
    metrics = evaluate_deployed(args.model, list(split["document"]), list(split["summary"]), prefix=data.prefix,
                                max_source_length=data.max_source_length,
                                max_target_length=data.max_target_length, args=eval_args)
    metrics.pop("predictions")
    rows = {Path(args.model).name or args.model: metrics}
    _print(args, metrics, compare_table(rows) + "\n\n" + table_notes(rows)
           + f"\n\nCTranslate2 {metrics['quantization']} weights, running as {metrics['compute_type']}")


def cmd_quantize(args) -> None:
    preflight.check_output(args.output)
    if preflight.check_checkpoint(args.model, quantized_ok=False) is None:
        raise CompressionError(f"{args.model} is not a local checkpoint folder: quantize a folder on this machine")

    from .evaluate import memory_footprint_mib
    from .load import load_tokenizer
    from .quantize import quantize, save_quantized

    model = quantize(args.model, args.mode, device=args.device, quantize_wo=args.quantize_wo)
    size = save_quantized(model, load_tokenizer(args.model), args.output)
    _print(args, {"output": args.output, "mode": args.mode, "size_mib": size,
                  "memory_mib": memory_footprint_mib(model)},
           f"{args.mode}: {size:.1f} MiB on disk, {memory_footprint_mib(model):.1f} MiB in memory -> {args.output}")


def cmd_export(args) -> None:
    from .deploy import deployed_size_mib, export_ct2

    folder = export_ct2(args.model, args.output, quantization=args.quantization, prefix=args.prefix)
    size = deployed_size_mib(folder)
    _print(args, {"output": str(folder), "format": args.format, "quantization": args.quantization, "size_mib": size},
           f"{args.format} {args.quantization}: {size:.1f} MiB on disk -> {folder} "
           "(load with ctranslate2.Translator; see its README.md)")


def cmd_push(args) -> None:
    from .export import push_to_hub

    url = push_to_hub(args.model, args.repo_id, token=hub_token(), private=not args.public)
    _print(args, {"url": url}, url)


def run_config(args) -> RunConfig:
    """The validated :class:`RunConfig` of ``run``'s flags (nothing is loaded or written yet); with
    ``--resume``, the recipe recorded in ``--output``'s ``config.json``
    (:func:`compression.resume.resume_config`)."""
    from .runs import RunFolder

    if args.resume:
        if args.overwrite:
            raise CompressionError("--resume continues the run in --output and --overwrite deletes it: give one")
        if not args.output:
            raise CompressionError("--resume needs --output: the run folder to continue")
        from .resume import resume_config

        return resume_config(args.output)
    if not args.model:
        raise CompressionError("the argument --model is required (a hub id or a local checkpoint folder), unless "
                               "--resume --output DIR continues a run")

    output = args.output or str(RunFolder.default_path("runs", args.name or Path(args.model).name))
    return RunConfig(model=args.model, output_dir=output, tokenizer=args.tokenizer, shrink=from_flags(ShrinkArgs, args),
                     data=from_flags(DataArgs, args), train=from_flags(TrainArgs, args),
                     eval=from_flags(EvalArgs, args, EVAL_RENAMES), kd=from_flags(KDArgs, args),
                     pseudo=from_flags(PseudoArgs, args),
                     **{f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig)
                        if f.name in ("quantize", "prune_vocab", "quantize_wo", "name", "method", "deploy",
                                      "deploy_quantization")})


def cmd_run(args) -> int | None:
    config = run_config(args)
    existing = "resume" if args.resume else "overwrite" if args.overwrite else "refuse"
    preflight.preflight(config, existing=existing)  # input errors in a second, before torch is imported

    from .pipeline import run_pipeline
    from .table import compare_table, table_notes

    result = run_pipeline(config, token=hub_token(), progress_bar=not args.json, existing=existing)
    if result["status"] != "complete":
        _print(args, result, f"run {result['status']}: {result['run_dir']} (the loss log and last-checkpoint/ are "
                             "kept)")
        return 130
    timings = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in result["timings"].items())
    notes = ""
    auto = (result["metrics"].get("quantized") or {}).get("auto")
    if auto:
        notes += f"\nquantize auto: {auto['reason']}"
    deployed = result["metrics"].get("deployed") or {}
    if deployed.get("compute_type"):
        notes += (f"\ndeployed: CTranslate2 {deployed['quantization']} (running as {deployed['compute_type']}) in "
                  f"{result['run_dir']}/deployed; batched ms at batch {deployed.get('latency_batch_size')}")
    rows = {k: v for k, v in result["metrics"].items() if v is not None}
    _print(args, result, compare_table(rows) + "\n\n" + table_notes(rows) + (f"\n{notes}" if notes else "")
           + f"\n\nstages: {timings}\nrun folder: {result['run_dir']}")


def cmd_teacher(args) -> None:
    from .teacher import TEACHER_RECIPE, train_teacher

    if (args.train_file or args.validation_file) and args.dataset == TEACHER_RECIPE["dataset"]:
        args.dataset = None  # own files replace the recipe's default dataset
    data, train_args = from_flags(DataArgs, args), from_flags(TrainArgs, args)
    command = "python -m compression " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["teacher"] else None
    resume_from = _resume_from(args)
    result = train_teacher(data, train_args, args.output, preset=args.preset, tokenizer=args.tokenizer,
                           resume_from=resume_from,
                           prune_vocab=args.prune_vocab, dropout=args.dropout, seed=args.init_seed,
                           command=command, progress_bar=not args.json, save_dtype=args.save_dtype,
                           score_beams=args.score_beams)
    if result["status"] != "complete":
        _print(args, result, f"teacher training {result['status']}: the weights so far are in "
                             f"{args.output}/last-checkpoint")
        return
    from .table import compare_table, table_notes

    train, facts = result["train"], result["model"]
    text = (f"{args.preset}: {facts['encoder_layers']}/{facts['decoder_layers']} layers, vocabulary "
            f"{facts['vocab_size']:,}, {facts['params'] / 1e6:.2f}M parameters; {train['steps']} steps, "
            f"{train['epochs']:.2f} epochs in {train['seconds']:.0f} s ({train['tokens_per_s']:,.0f} real tokens/s): "
            f"train loss {train['train_loss']:.4f}, validation loss "
            + (f"{train['eval_loss']:.4f}" if train["eval_loss"] is not None else "-") + " nats")
    if result["metrics"]:
        rows = {"teacher": result["metrics"]}
        if result["metrics_beam"]:
            rows[f"teacher beam {result['score_beams']}"] = result["metrics_beam"]
        text += "\n\n" + compare_table(rows) + "\n\n" + table_notes(rows)
    _print(args, result, text + f"\n\n{result['seconds']:.0f} s in all -> {args.output}")


def cmd_runs(args) -> None:
    from .runs import list_runs

    runs = list_runs(args.root)
    lines = [f"{r['name']:<40} {r['status']:<10} {r.get('path')}" for r in runs] or [f"no runs in {args.root}"]
    _print(args, runs, "\n".join(lines))


def cmd_distill(args) -> None:
    data, train_args, kd_args = from_flags(DataArgs, args), from_flags(TrainArgs, args), from_flags(KDArgs, args)
    plan = from_flags(ShrinkArgs, args)
    preflight.check_output(args.output)
    resume_from = _resume_from(args)
    teacher_config = preflight.check_checkpoint(args.teacher, quantized_ok=False)
    if args.student:
        preflight.check_checkpoint(args.student, quantized_ok=False)
    elif teacher_config is not None:
        preflight.check_layers(teacher_config, plan.encoder_layers, plan.decoder_layers, plan.strategy)
    preflight.check_data(data)

    from .data import record_prefix
    from .distill import distill
    from .export import save_model
    from .load import load_model
    from .progress import LOSS_LOG

    teacher, tokenizer = load_model(args.teacher, tokenizer=args.tokenizer, token=hub_token())
    if args.student:
        student, _ = load_model(args.student)
    else:
        student = _make_student(args, teacher, tokenizer, data.train_file, data.dataset,
                                "--train-file FILE or a dataset preset (--dataset)")
        student.config.shrink["teacher"] = args.teacher
    train_set, validation, prefix = _tokenized(data, teacher, tokenizer)
    record_prefix(student, prefix)
    output = Path(args.output)
    result = distill(student, teacher, tokenizer, train_set, validation, train_args, kd_args, output,
                     progress_bar=not args.json, resume_from=resume_from)
    if not result.cancelled and _is_main_process():
        from .train import discard_checkpoint

        discard_checkpoint(output)  # training completed: the model below replaces it
        record = getattr(student.config, "shrink", None) or {}
        save_model(student, tokenizer, output, card={
            "method": "kd", "model_name": "Distilled summarizer (KD)", "base_model": args.teacher,
            "encoder_layers": record.get("encoder_layers_kept"), "decoder_layers": record.get("decoder_layers_kept"),
            "dataset": Path(data.train_file).name if data.train_file else data.dataset,
            "train_samples": len(train_set), "epochs": train_args.epochs,
            "metrics": {"student": {"validation_loss": result.eval_loss}}}, keep=(LOSS_LOG,))
    summary = {key: value for key, value in vars(result).items() if key != "log_history"}
    _print(args, {"output": str(output), **summary},
           f"KD: {result.steps} steps in {result.seconds:.0f} s, train loss {result.train_loss:.4f}, validation "
           "loss " + (f"{result.eval_loss:.4f}" if result.eval_loss is not None else "-") + f" nats -> {output}")


def cmd_modular_train(args) -> int | None:
    data = from_flags(DataArgs, args)
    preflight.check_output(args.output)
    resume_from = _resume_from(args)
    preflight.check_checkpoint(args.teacher, quantized_ok=False)
    preflight.check_data(data)

    from .modular import ModularConfig, max_ratio, train_modular

    config = ModularConfig(teacher=args.teacher, tokenizer=args.tokenizer, data=data,
                           train=from_flags(TrainArgs, args), modular=from_flags(ModularArgs, args),
                           output=args.output)
    modular, _ = train_modular(config, token=hub_token(), progress_bar=not args.json, resume_from=resume_from)
    training = modular.info["training"]
    if training["cancelled"]:
        _print(args, {"output": args.output, "status": "cancelled", "steps": training["steps"]},
               f"module training cancelled after step {training['steps']}: the modules so far are in "
               f"{args.output}; continue with the same flags and --resume")
        return 130
    ratios = {p: max_ratio(modular, p) for p in ("size", "speed")}
    _print(args, {"output": args.output, "max_ratio": ratios},
           f"modules trained -> {args.output}; assemble any ratio up to {ratios['size']:.2f}x (size-first) "
           f"or {ratios['speed']:.2f}x (speed-first) with `python -m compression assemble`")


def cmd_assemble(args) -> None:
    if args.output:
        preflight.check_output(args.output)
    if args.score:
        preflight.check_data(_evaluation_data(from_flags(DataArgs, args)))

    from .export import save_model
    from .load import describe_model, load_tokenizer
    from .modular import (
        TEACHER_DIR,
        EvaluationSet,
        assemble,
        available_ratios,
        load_modular,
        score_assembly,
        score_teacher,
    )

    modular = load_modular(args.modular)
    source_length = from_flags(DataArgs, args).max_source_length
    if args.ratio is None:
        ratios = available_ratios(modular, args.priority)
        _print(args, {"priority": args.priority, "ratios": ratios},
               f"{args.priority}-first ratios: " + ", ".join(f"{r:.2f}" for r in ratios))
        return
    if not args.output and not args.score:
        raise CompressionError("give --output, the folder for the assembled student (or --score to score it)")
    tokenizer = load_tokenizer(Path(args.modular) / TEACHER_DIR)
    payload: dict = {}
    lines: list[str] = []
    if args.output:
        model = assemble(modular, args.ratio, args.priority, speed_cut=args.speed_cut, source_length=source_length)
        save_model(model, tokenizer, args.output, card={
            "model_name": f"Modular Transformers student ({args.priority}-first, {args.ratio:g}x)",
            "base_model": str(args.modular)})
        facts = describe_model(model)
        payload.update(output=args.output, **facts, modular=model.config.modular)
        first = model.config.modular["speed_stack"]
        lines.append(f"{facts['encoder_layers']}/{facts['decoder_layers']} layers, {facts['params'] / 1e6:.2f}M "
                     f"parameters (ratio {model.config.modular['ratio']:.2f}x"
                     + (f", the {first} shortened first for {source_length:,}-token sources" if first else "")
                     + f") -> {args.output}")
    if args.score:
        from .table import points_table

        data = _evaluation_data(from_flags(DataArgs, args))
        if data.train_file is None and data.dataset is None:
            raise CompressionError("--score needs the pairs to score on: give --validation-file (or --dataset)")
        pairs = EvaluationSet.from_data(data, modular.teacher)
        point, record = score_assembly(modular, tokenizer, args.ratio, args.priority, pairs,
                                       max_new_tokens=args.max_new_tokens, speed_cut=args.speed_cut)
        teacher = score_teacher(modular, tokenizer, pairs, max_new_tokens=args.max_new_tokens)
        teacher.latency_ms = point.teacher_latency_ms
        payload.update(point=point.as_dict(), teacher=teacher.as_dict(), modular=record)
        lines.append(f"scored on {len(pairs)} pairs:\n" + points_table([teacher, point]))
    _print(args, payload, "\n".join(lines))


#: Loggers of an optional kernel fetch that bitsandbytes' CPU backend tries when it is imported on a
#: CPU with AVX512-BF16 (a 4-bit GEMM from the hub through the ``kernels`` package); when the fetch
#: fails (offline, or the kernel is absent) 4-bit runs on bitsandbytes' own CPU code, so their two
#: WARNING lines per run tell a user nothing to do. ``-v`` shows them.
OPTIONAL_KERNEL_LOGGERS = ("bitsandbytes.backends.cpu.ops", "kernels")


def _quiet_libraries() -> None:
    """Hide the hub's, transformers' ("Loading weights", "Writing model shards") and datasets'
    ("Tokenizing") progress bars, and the warnings of :data:`OPTIONAL_KERNEL_LOGGERS`; the training
    bar (the Trainer's own tqdm) and every other warning stay. The environment variables reach
    libraries imported later and child processes; the parser has already imported transformers and
    datasets, so those are switched off through their own functions as well."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
    for name in OPTIONAL_KERNEL_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help (0) or a usage error, already printed on one line (2)
        return done.code if isinstance(done.code, int) else 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not args.verbose:  # keep stderr for the training bar and errors
        _quiet_libraries()
    handler = globals()["cmd_" + args.command.replace("-", "_")]
    try:
        status = handler(args) or 0
        if "compression.train" in sys.modules:  # a training command: under torchrun, end its process group
            from .train import close_distributed

            close_distributed()
        return status
    except CompressionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `--json runs | head`: the reader left; exit quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
