"""Command line: ``python -m compression <command>``; every stage of the pipeline, headless.

Flags for data, training and evaluation are generated from the dataclasses in
:mod:`compression.config` (one definition shared with the dashboard), in the spirit of
transformers' ``HfArgumentParser``. Exit status: 0 on success, 2 on a user error (one line on
stderr, no traceback), 1 on an internal failure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import typing
from pathlib import Path

from .config import (
    QUANTIZE_CHOICES,
    DataArgs,
    EvalArgs,
    KDArgs,
    ModularArgs,
    Priority,
    RunConfig,
    ShrinkArgs,
    TrainArgs,
    choices,
    field_types,
)
from .errors import CompressionError
from .train import LOSS_LOG


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# Flags renamed where two dataclasses share a field name on one command.
EVAL_RENAMES = {"batch_size": "generation_batch_size"}


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (``error: ...``, exit status 2), like every other user error."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog.split()[-1] if ' ' in self.prog else self.prog}: {message}\n")


def _converter(members: tuple):
    if str in members or any(m not in (int, float, bool, type(None)) for m in members if choices((m,)) is None):
        return str
    if float in members:
        return float
    if int in members:
        return int
    return str


def add_dataclass_flags(parser: argparse.ArgumentParser, cls, *, skip: tuple[str, ...] = (),
                        rename: dict[str, str] | None = None) -> None:
    """One flag per field of ``cls`` (``max_source_length`` -> ``--max-source-length``), its type,
    choices (``Literal`` fields) and help (the field's ``help`` metadata and its default) taken from
    the field; ``rename`` maps a field to another flag name where two dataclasses share it. Nested
    settings dataclasses are skipped (they get their own group)."""
    group = parser.add_argument_group(cls.__name__)
    rename = rename or {}
    kinds = field_types(cls)
    for field in dataclasses.fields(cls):
        members = kinds[field.name]
        if field.name in skip or dataclasses.is_dataclass(members[0]) or field.default is dataclasses.MISSING:
            continue
        name = rename.get(field.name, field.name)
        default = field.default
        help_text = field.metadata.get("help", "")
        if isinstance(default, bool):
            if default:
                group.add_argument("--no-" + name.replace("_", "-"), dest=name, action="store_false",
                                   help=f"turn off: {help_text}")
            else:
                group.add_argument(_flag(name), dest=name, action="store_true", help=help_text)
            continue
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        help_text = f"{help_text} (default: {shown})" if default is not None else help_text
        allowed = choices(members)
        group.add_argument(_flag(name), dest=name, type=_converter(members) if allowed is None else str,
                           choices=allowed, default=default, help=help_text)


def from_flags(cls, namespace: argparse.Namespace, rename: dict[str, str] | None = None):
    """Build ``cls`` from the parsed flags that :func:`add_dataclass_flags` added."""
    rename = rename or {}
    values = {f.name: getattr(namespace, rename.get(f.name, f.name)) for f in dataclasses.fields(cls)
              if hasattr(namespace, rename.get(f.name, f.name))}
    return cls(**values)


def _data_flags(parser, *, validation: bool = True) -> None:
    skip = () if validation else ("validation_file", "validation_split", "max_eval_samples")
    add_dataclass_flags(parser, DataArgs, skip=skip)


def _shrink_flags(parser) -> None:
    add_dataclass_flags(parser, ShrinkArgs)


def _help(cls, name: str) -> str:
    return next(f.metadata["help"] for f in dataclasses.fields(cls) if f.name == name)


def _model_flags(parser) -> None:
    parser.add_argument("--model", required=True, help="hub id or local checkpoint folder")
    parser.add_argument("--tokenizer", help="tokenizer folder when the checkpoint has none")


def _token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m compression",
        description="Shrink-and-Fine-Tune (SFT) compression of seq2seq summarizers: shrink a teacher's "
                    "encoder/decoder layers into a student, fine-tune it, and compare ROUGE, size and speed.")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every stage")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = commands.add_parser("init", help="architecture preset, randomly initialised, saved as a checkpoint")
    init.add_argument("--preset", required=True, help="e.g. tiny, mini, small, base, tiny-nl8")
    init.add_argument("--tokenizer", required=True, help="tokenizer folder (e.g. ../shared/tokenizers/t5) or 'byt5'")
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--output", required=True)

    shrink = commands.add_parser("shrink", help="copy a subset of the teacher's layers into a student")
    _model_flags(shrink)
    _shrink_flags(shrink)
    shrink.add_argument("--output", required=True)

    finetune = commands.add_parser("finetune", help="fine-tune a model (a student, or a base to make a teacher)")
    _model_flags(finetune)
    _data_flags(finetune)
    add_dataclass_flags(finetune, TrainArgs)
    finetune.add_argument("--output", required=True)

    evaluate = commands.add_parser("evaluate", help="ROUGE, validation loss, size and latency of one model")
    _model_flags(evaluate)
    _data_flags(evaluate)
    add_dataclass_flags(evaluate, EvalArgs)

    quantize = commands.add_parser("quantize", help="bitsandbytes 8/4-bit or half precision copy of a checkpoint")
    quantize.add_argument("--model", required=True, help="local checkpoint folder")
    quantize.add_argument("--mode", default="8bit", choices=[c for c in QUANTIZE_CHOICES if c != "none"],
                          help="8bit, 4bit (NF4), fp4: bitsandbytes; fp16, bf16: half precision; auto: the fastest "
                               "on this device (default: 8bit)")
    quantize.add_argument("--device", default="auto", choices=choices(field_types(TrainArgs)["device"]))
    quantize.add_argument("--quantize-wo", action="store_true", help=_help(RunConfig, "quantize_wo"))
    quantize.add_argument("--output", required=True)

    push = commands.add_parser("push", help="upload a checkpoint folder to the hub (token from HF_TOKEN)")
    push.add_argument("--model", required=True, help="local checkpoint folder")
    push.add_argument("--repo-id", required=True)
    push.add_argument("--public", action="store_true", help="make the repository public (default: private)")

    run = commands.add_parser("run", help="the whole pipeline: shrink, fine-tune, evaluate, quantize, export")
    _model_flags(run)
    _shrink_flags(run)
    _data_flags(run)
    add_dataclass_flags(run, TrainArgs)
    add_dataclass_flags(run, EvalArgs, rename=EVAL_RENAMES)
    run.add_argument("--output", help="run folder (default: runs/<timestamp>-<name>)")
    add_dataclass_flags(run, RunConfig, skip=("model", "output_dir", "tokenizer"))
    add_dataclass_flags(run, KDArgs)

    runs = commands.add_parser("runs", help="list the runs in a runs folder")
    runs.add_argument("--root", default="runs")

    distill = commands.add_parser("distill", help="knowledge distillation (KD) of a student against a frozen teacher")
    distill.add_argument("--teacher", required=True, help="hub id or local checkpoint folder")
    distill.add_argument("--student", help="student folder (default: shrink the teacher with the layer flags)")
    distill.add_argument("--tokenizer", help="tokenizer folder when the checkpoint has none")
    _shrink_flags(distill)
    _data_flags(distill)
    add_dataclass_flags(distill, TrainArgs)
    add_dataclass_flags(distill, KDArgs)
    distill.add_argument("--output", required=True)

    modular_train = commands.add_parser(
        "modular-train", help="Modular Transformers: train modules once, for many compression ratios")
    modular_train.add_argument("--teacher", required=True, help="hub id or local checkpoint folder")
    modular_train.add_argument("--tokenizer", help="tokenizer folder when the checkpoint has none")
    _data_flags(modular_train)
    add_dataclass_flags(modular_train, TrainArgs)
    add_dataclass_flags(modular_train, ModularArgs)
    modular_train.add_argument("--output", required=True, help="modular checkpoint folder")

    assemble = commands.add_parser("assemble", help="assemble a student from trained modules, no training")
    assemble.add_argument("--modular", required=True, help="folder written by modular-train")
    assemble.add_argument("--ratio", type=float, help="teacher layers / student layers (1 = the teacher); "
                                                      "omit to list the reachable ratios")
    assemble.add_argument("--priority", choices=typing.get_args(Priority), default="size",
                          help="size: stacks compressed evenly; speed: the shallowest decoder (default: size)")
    assemble.add_argument("--output", help="checkpoint folder for the assembled student")
    assemble.add_argument("--score", action="store_true",
                          help="also score the student and the teacher on the validation pairs of the data flags "
                               "(ROUGE, validation loss, size, speedup at batch 1) and print the point")
    assemble.add_argument("--max-new-tokens", type=int, default=32,
                          help="with --score: at most this many new tokens per scored summary (default: 32)")
    _data_flags(assemble)

    return parser


def _print(args, payload, text: str | None = None) -> None:
    if args.json:
        print(json.dumps(payload, indent=2, default=str))
    elif text is not None:
        print(text)


def _load_base(args):
    from .load import load_model

    return load_model(args.model, tokenizer=args.tokenizer, token=_token())


def cmd_init(args) -> None:
    from .export import save_model
    from .load import build_preset, describe_model

    model, tokenizer = build_preset(args.preset, args.tokenizer, seed=args.seed)
    save_model(model, tokenizer, args.output, card={"method": "preset", "base_model": f"preset:{args.preset} (untrained)"})
    facts = describe_model(model)
    _print(args, {"output": args.output, **facts},
           f"{args.preset}: {facts['encoder_layers']}/{facts['decoder_layers']} layers, d_model {facts['d_model']}, "
           f"{facts['params'] / 1e6:.2f}M parameters, {facts['size_mib']:.1f} MiB -> {args.output} (untrained)")


def cmd_shrink(args) -> None:
    from .export import save_model
    from .layers import shrink
    from .load import describe_model

    plan = from_flags(ShrinkArgs, args)
    model, tokenizer = _load_base(args)
    student = shrink(model, plan.encoder_layers, plan.decoder_layers, plan.strategy)
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


def _tokenized(data: DataArgs, model, tokenizer):
    """(train, validation or None) tokenized with the model family's prefix."""
    from .data import prepare_data

    prepared = prepare_data(data, model, tokenizer)
    return prepared.train, prepared.validation


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


def cmd_finetune(args) -> None:
    from .export import save_model
    from .train import finetune

    data, train_args = from_flags(DataArgs, args), from_flags(TrainArgs, args)
    model, tokenizer = _load_base(args)
    train_set, validation = _tokenized(data, model, tokenizer)
    output = Path(args.output)
    result = finetune(model, tokenizer, train_set, validation, train_args, output, progress_bar=not args.json)
    if not result.cancelled and _is_main_process():
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
    from .data import load_pairs, resolve_prefix
    from .evaluate import evaluate_model
    from .table import compare_table

    data, eval_args = _evaluation_data(from_flags(DataArgs, args)), from_flags(EvalArgs, args)
    model, tokenizer = _load_base(args)
    split = load_pairs(data)["validation"]
    metrics = evaluate_model(model, tokenizer, list(split["document"]), list(split["summary"]),
                             prefix=resolve_prefix(data, model), max_source_length=data.max_source_length,
                             max_target_length=data.max_target_length, args=eval_args)
    metrics.pop("predictions")
    _print(args, metrics, compare_table({Path(args.model).name or args.model: metrics}))


def cmd_quantize(args) -> None:
    from .evaluate import memory_footprint_mib
    from .load import load_tokenizer
    from .quantize import quantize, save_quantized

    model = quantize(args.model, args.mode, device=args.device, quantize_wo=args.quantize_wo)
    size = save_quantized(model, load_tokenizer(args.model), args.output)
    _print(args, {"output": args.output, "mode": args.mode, "size_mib": size,
                  "memory_mib": memory_footprint_mib(model)},
           f"{args.mode}: {size:.1f} MiB on disk, {memory_footprint_mib(model):.1f} MiB in memory -> {args.output}")


def cmd_push(args) -> None:
    from .export import push_to_hub

    url = push_to_hub(args.model, args.repo_id, token=_token(), private=not args.public)
    _print(args, {"url": url}, url)


def run_config(args) -> RunConfig:
    """The validated :class:`RunConfig` of ``run``'s flags (nothing is loaded or written yet)."""
    from .runs import RunFolder

    output = args.output or str(RunFolder.default_path("runs", args.name or Path(args.model).name))
    return RunConfig(model=args.model, output_dir=output, tokenizer=args.tokenizer, shrink=from_flags(ShrinkArgs, args),
                     data=from_flags(DataArgs, args), train=from_flags(TrainArgs, args),
                     eval=from_flags(EvalArgs, args, EVAL_RENAMES), kd=from_flags(KDArgs, args),
                     **{f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig)
                        if f.name in ("quantize", "prune_vocab", "quantize_wo", "name", "method")})


def cmd_run(args) -> None:
    from .table import compare_table

    config = run_config(args)
    from .pipeline import run_pipeline

    result = run_pipeline(config, token=_token(), progress_bar=not args.json)
    if result["status"] != "complete":
        _print(args, result, f"run {result['status']}: {result['run_dir']}")
        return
    timings = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in result["timings"].items())
    _print(args, result, compare_table({k: v for k, v in result["metrics"].items() if v is not None})
           + f"\n\nstages: {timings}\nrun folder: {result['run_dir']}")


def cmd_runs(args) -> None:
    from .runs import list_runs

    runs = list_runs(args.root)
    lines = [f"{r['name']:<40} {r['status']:<10} {r.get('path')}" for r in runs] or [f"no runs in {args.root}"]
    _print(args, runs, "\n".join(lines))


def cmd_distill(args) -> None:
    from .distill import distill
    from .export import save_model
    from .layers import shrink
    from .load import load_model

    data, train_args, kd_args = from_flags(DataArgs, args), from_flags(TrainArgs, args), from_flags(KDArgs, args)
    plan = from_flags(ShrinkArgs, args)
    teacher, tokenizer = load_model(args.teacher, tokenizer=args.tokenizer, token=_token())
    if args.student:
        student, _ = load_model(args.student)
    else:
        student = shrink(teacher, plan.encoder_layers, plan.decoder_layers, plan.strategy)
        student.config.shrink["teacher"] = args.teacher
    train_set, validation = _tokenized(data, teacher, tokenizer)
    output = Path(args.output)
    result = distill(student, teacher, tokenizer, train_set, validation, train_args, kd_args, output,
                     progress_bar=not args.json)
    if not result.cancelled and _is_main_process():
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


def cmd_modular_train(args) -> None:
    from .modular import ModularConfig, max_ratio, train_modular

    config = ModularConfig(teacher=args.teacher, tokenizer=args.tokenizer, data=from_flags(DataArgs, args),
                           train=from_flags(TrainArgs, args), modular=from_flags(ModularArgs, args),
                           output=args.output)
    modular, _ = train_modular(config, token=_token(), progress_bar=not args.json)
    ratios = {p: max_ratio(modular, p) for p in ("size", "speed")}
    _print(args, {"output": args.output, "max_ratio": ratios},
           f"modules trained -> {args.output}; assemble any ratio up to {ratios['size']:.2f}x (size-first) "
           f"or {ratios['speed']:.2f}x (speed-first) with `python -m compression assemble`")


def cmd_assemble(args) -> None:
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
        model = assemble(modular, args.ratio, args.priority)
        save_model(model, tokenizer, args.output, card={
            "model_name": f"Modular Transformers student ({args.priority}-first, {args.ratio:g}x)",
            "base_model": str(args.modular)})
        facts = describe_model(model)
        payload.update(output=args.output, **facts, modular=model.config.modular)
        lines.append(f"{facts['encoder_layers']}/{facts['decoder_layers']} layers, {facts['params'] / 1e6:.2f}M "
                     f"parameters (ratio {model.config.modular['ratio']:.2f}x) -> {args.output}")
    if args.score:
        from .table import points_table

        data = _evaluation_data(from_flags(DataArgs, args))
        if data.train_file is None and data.dataset is None:
            raise CompressionError("--score needs the pairs to score on: give --validation-file (or --dataset)")
        pairs = EvaluationSet.from_data(data, modular.teacher)
        point, record = score_assembly(modular, tokenizer, args.ratio, args.priority, pairs,
                                       max_new_tokens=args.max_new_tokens)
        teacher = score_teacher(modular, tokenizer, pairs, max_new_tokens=args.max_new_tokens)
        teacher.latency_ms = point.teacher_latency_ms
        payload.update(point=point.as_dict(), teacher=teacher.as_dict(), modular=record)
        lines.append(f"scored on {len(pairs)} pairs:\n" + points_table([teacher, point]))
    _print(args, payload, "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help (0) or a usage error, already printed on one line (2)
        return done.code if isinstance(done.code, int) else 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not args.verbose:  # keep stderr for what matters: the training bar and errors
        import datasets
        import transformers

        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()
    handler = globals()["cmd_" + args.command.replace("-", "_")]
    try:
        handler(args)
    except CompressionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
