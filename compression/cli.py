"""The command line's flags: ``python -m compression --help`` and every command's options.

Flags for data, training and evaluation are generated from the dataclasses in
:mod:`compression.config` (one definition shared with the dashboard), in the spirit of
transformers' ``HfArgumentParser``; :func:`build_parser` assembles the commands, whose handlers
live in :mod:`compression.__main__`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing

from .config import (
    QUANTIZE_CHOICES,
    DataArgs,
    EvalArgs,
    KDArgs,
    ModularArgs,
    Priority,
    PseudoArgs,
    RunConfig,
    ShrinkArgs,
    TrainArgs,
    choices,
    field_types,
)
from .dataset_presets import DATASET_PRESETS
from .deploy import CT2_QUANTIZATIONS, DEPLOY_FORMATS
from .length_plan import SPEED_CUTS


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


def _calibration_source_flags(parser, purpose: str, required: bool = False) -> None:
    """``--data FILE`` or ``--dataset PRESET``: where calibration pairs come from (one of them)."""
    source = parser.add_mutually_exclusive_group(required=required)
    source.add_argument("--data", help=f"calibration pairs (JSON, JSONL, CSV or Parquet) {purpose}".rstrip())
    source.add_argument("--dataset", choices=sorted(DATASET_PRESETS),
                        help="calibration pairs from a dataset preset's training split (local files under "
                             "../shared, with its own lengths and prefix), instead of --data")


def _calibration_flags(parser) -> None:
    parser.add_argument("--samples", type=int, default=32, help="calibration pairs to use (default: 32)")
    parser.add_argument("--shuffle-seed", type=int,
                        help="take a seeded random sample of the file instead of its first pairs (use it when the "
                             "file is sorted, e.g. the Debian descriptions by package name)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per forward pass (default: 8)")
    parser.add_argument("--max-source-length", type=int,
                        help="article tokens kept; default: the dataset preset's, else 512")
    parser.add_argument("--max-target-length", type=int,
                        help="summary tokens kept; default: the dataset preset's, else 64")
    parser.add_argument("--text-column", default="document")
    parser.add_argument("--summary-column", default="summary")


def _model_flags(parser, required: bool = True) -> None:
    parser.add_argument("--model", required=required, help="hub id or local checkpoint folder")
    parser.add_argument("--tokenizer", help="tokenizer folder when the checkpoint has none")


def hub_token() -> str | None:
    """The hub token from ``HF_TOKEN`` (never logged or written anywhere), or ``None``."""
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
    init.add_argument("--preset", required=True, help="e.g. tiny, mini, small, base, tiny-nl8, longt5-tglobal-tiny, "
                                                     "longt5-local-mini")
    init.add_argument("--tokenizer", required=True, help="tokenizer folder (e.g. ../shared/tokenizers/t5) or 'byt5'")
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--output", required=True)

    shrink = commands.add_parser("shrink", help="copy a subset of the teacher's layers into a student")
    _model_flags(shrink)
    _shrink_flags(shrink)
    _calibration_source_flags(shrink, "for --strategy importance")
    shrink.add_argument("--shuffle-seed", type=int, help="score a seeded random sample of --data instead of its "
                                                         "first --importance-samples pairs")
    shrink.add_argument("--output", required=True)

    prune = commands.add_parser(
        "prune-width", help="prune feed-forward neurons and (T5) attention heads, ranked by their activations on "
                            "calibration pairs, into a plain checkpoint (optionally after dropping layers)")
    _model_flags(prune)
    prune.add_argument("--ffn-keep", type=int, help="feed-forward neurons (d_ff) to keep per layer; default: all")
    prune.add_argument("--heads-keep", type=int, help="attention heads to keep per layer (T5 family only: T5, mT5, UMT5, LongT5); default: all")
    _calibration_source_flags(prune, "to rank neurons and heads on")
    _calibration_flags(prune)
    _shrink_flags(prune)
    prune.add_argument("--output", required=True)

    importance = commands.add_parser(
        "importance", help="score every encoder and decoder layer on calibration pairs (Block Influence, "
                           "angular distance of layer blocks, drop-one loss)")
    _model_flags(importance)
    _calibration_source_flags(importance, "", required=True)
    _calibration_flags(importance)
    importance.add_argument("--no-drop-one", dest="drop_one", action="store_false",
                            help="skip the drop-one loss (one forward pass per layer)")

    finetune = commands.add_parser("finetune", help="fine-tune a model (a student, or a base to make a teacher)")
    _model_flags(finetune)
    _data_flags(finetune)
    add_dataclass_flags(finetune, TrainArgs)
    finetune.add_argument("--output", required=True)
    finetune.add_argument("--resume", action="store_true",
                          help="continue the training stopped in --output from its last-checkpoint/ (optimizer, "
                               "schedule, RNG and data order restored); give the same flags as before")

    evaluate = commands.add_parser("evaluate", help="ROUGE, validation loss, size and latency of one model")
    _model_flags(evaluate)
    _data_flags(evaluate)
    add_dataclass_flags(evaluate, EvalArgs)

    quantize = commands.add_parser("quantize", help="bitsandbytes 8/4-bit or half precision copy of a checkpoint")
    quantize.add_argument("--model", required=True, help="local checkpoint folder")
    quantize.add_argument("--mode", default="8bit", choices=[c for c in QUANTIZE_CHOICES if c != "none"],
                          help="8bit, 4bit (NF4), fp4: bitsandbytes; fp16, bf16: half precision; auto: the smallest not slower "
                               "than fp32 on this machine (default: 8bit)")
    quantize.add_argument("--device", default="auto", choices=choices(field_types(TrainArgs)["device"]))
    quantize.add_argument("--quantize-wo", action="store_true", help=_help(RunConfig, "quantize_wo"))
    quantize.add_argument("--output", required=True)

    export = commands.add_parser("export", help="a deployed copy of a checkpoint for an inference engine "
                                                "(CTranslate2, int8 by default)")
    export.add_argument("--model", required=True, help="local checkpoint folder with its tokenizer (e.g. RUN_DIR/student)")
    export.add_argument("--format", default="ct2", choices=DEPLOY_FORMATS,
                        help="ct2: CTranslate2, loaded with ctranslate2.Translator (default: ct2)")
    export.add_argument("--quantization", default="int8", choices=CT2_QUANTIZATIONS,
                        help="weight type of the copy (default: int8)")
    export.add_argument("--prefix", help="source prefix recorded for the copy (default: the family's, "
                                         "'summarize: ' for T5)")
    export.add_argument("--output", required=True, help="folder to write (e.g. RUN_DIR/deployed)")

    push = commands.add_parser("push", help="upload a checkpoint folder to the hub (token from HF_TOKEN)")
    push.add_argument("--model", required=True, help="local checkpoint folder")
    push.add_argument("--repo-id", required=True)
    push.add_argument("--public", action="store_true", help="make the repository public (default: private)")

    run = commands.add_parser("run", help="the whole pipeline: shrink, fine-tune, evaluate, quantize, export")
    _model_flags(run, required=False)  # --resume takes the model from the run's config.json
    _shrink_flags(run)
    _data_flags(run)
    add_dataclass_flags(run, TrainArgs)
    add_dataclass_flags(run, EvalArgs, rename=EVAL_RENAMES)
    run.add_argument("--output", help="run folder (default: runs/<timestamp>-<name>); an existing run there is "
                                      "refused unless --overwrite is given")
    run.add_argument("--overwrite", action="store_true", help="delete the run already in --output first")
    run.add_argument("--resume", action="store_true",
                     help="continue the cancelled or interrupted run in --output from its last-checkpoint/ with the "
                          "recipe in its config.json (other flags are ignored)")
    add_dataclass_flags(run, RunConfig, skip=("model", "output_dir", "tokenizer"))
    add_dataclass_flags(run, KDArgs)
    add_dataclass_flags(run, PseudoArgs)

    from .teacher import SAVE_DTYPES, TEACHER_RECIPE

    teacher = commands.add_parser(
        "teacher", help="train an offline teacher from an architecture preset (defaults: the Debian recipe, "
                        "compression.teacher)",
        description="Train a summarizer from random initialisation as the teacher students are shrunk from. "
                    "The recipe's defaults replace the flags' own: " + ", ".join(
                        f"{key}={value}" for key, value in TEACHER_RECIPE.items())
                    + ". Any flag overrides its default.")
    teacher.add_argument("--preset", help="architecture preset, e.g. tiny, tiny-nl8 (default: %(default)s)")
    teacher.add_argument("--tokenizer", help="tokenizer folder (default: ../shared/tokenizers/t5)")
    teacher.add_argument("--no-prune-vocab", dest="prune_vocab", action="store_false",
                         help="keep the whole vocabulary (default: prune it to the data's tokens)")
    teacher.add_argument("--dropout", type=float, help="dropout rate (default: %(default)s)")
    teacher.add_argument("--init-seed", type=int, default=0, help="seed of the random initialisation")
    teacher.add_argument("--save-dtype", choices=tuple(SAVE_DTYPES),
                         help="dtype the weights are saved in (default: %(default)s; training is fp32 either way)")
    teacher.add_argument("--score-beams", type=int,
                         help="after the greedy scores, score the validation pairs again with beam search of this "
                              "width (default: %(default)s; 1: greedy only)")
    teacher.add_argument("--output", required=True, help="checkpoint folder for the teacher")
    teacher.add_argument("--resume", action="store_true",
                          help="continue the training stopped in --output from its last-checkpoint/ (optimizer, "
                               "schedule, RNG and data order restored); give the same flags as before")
    _data_flags(teacher)
    add_dataclass_flags(teacher, TrainArgs)
    teacher.set_defaults(**TEACHER_RECIPE)

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
    distill.add_argument("--resume", action="store_true",
                          help="continue the training stopped in --output from its last-checkpoint/ (optimizer, "
                               "schedule, RNG and data order restored); give the same flags as before")

    modular_train = commands.add_parser(
        "modular-train", help="Modular Transformers: train modules once, for many compression ratios")
    modular_train.add_argument("--teacher", required=True, help="hub id or local checkpoint folder")
    modular_train.add_argument("--tokenizer", help="tokenizer folder when the checkpoint has none")
    _data_flags(modular_train)
    add_dataclass_flags(modular_train, TrainArgs)
    add_dataclass_flags(modular_train, ModularArgs)
    modular_train.add_argument("--output", required=True, help="modular checkpoint folder")
    modular_train.add_argument("--resume", action="store_true",
                               help="continue the training stopped in --output from its last-checkpoint/ (modules, "
                                    "optimizer, schedule, RNG and data order restored); give the same flags as before")

    assemble = commands.add_parser("assemble", help="assemble a student from trained modules, no training")
    assemble.add_argument("--modular", required=True, help="folder written by modular-train")
    assemble.add_argument("--ratio", type=float, help="teacher layers / student layers (1 = the teacher); "
                                                      "omit to list the reachable ratios")
    assemble.add_argument("--priority", choices=typing.get_args(Priority), default="size",
                          help="size: stacks compressed evenly; speed: one stack shortened first, see --speed-cut "
                               "(default: size)")
    assemble.add_argument("--speed-cut", choices=SPEED_CUTS, default="auto",
                          help="with --priority speed, the stack shortened first: auto (the one whose layer costs more "
                               "generation time at --max-source-length for this architecture: the decoder for short "
                               "inputs, the encoder for long ones; compression/length_plan.py), encoder or decoder "
                               "(default: auto)")
    assemble.add_argument("--output", help="checkpoint folder for the assembled student")
    assemble.add_argument("--score", action="store_true",
                          help="also score the student and the teacher on the validation pairs of the data flags "
                               "(ROUGE, validation loss, size, speedup at batch 1) and print the point")
    assemble.add_argument("--max-new-tokens", type=int, default=32,
                          help="with --score: at most this many new tokens per scored summary (default: 32)")
    _data_flags(assemble)

    return parser
