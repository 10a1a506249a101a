"""The run recipe (compression.config): validation on creation, from_form, CLI flags generated from fields."""

from __future__ import annotations

import dataclasses
import json

import pytest

from compression.__main__ import build_parser
from compression.config import (
    DataArgs,
    EvalArgs,
    KDArgs,
    ModularArgs,
    RunConfig,
    ShrinkArgs,
    TrainArgs,
)
from compression.errors import CompressionError, LayerSelectionError, ModularError


@pytest.mark.parametrize("cls, values, message", [
    (TrainArgs, {"warmup_ratio": 5.0}, "warmup ratio"),
    (TrainArgs, {"warmup_ratio": 1.0}, "warmup ratio"),
    (TrainArgs, {"gradient_accumulation_steps": 0}, "gradient accumulation steps"),
    (TrainArgs, {"max_steps": 0}, "max steps"),
    (TrainArgs, {"max_steps": -5}, "max steps"),
    (TrainArgs, {"weight_decay": -1}, "weight decay"),
    (TrainArgs, {"eval_steps": 0}, "eval steps"),
    (TrainArgs, {"epochs": float("nan")}, "epochs"),
    (TrainArgs, {"epochs": float("inf")}, "epochs"),
    (TrainArgs, {"dataloader_workers": -1}, "dataloader workers"),
    (TrainArgs, {"batch_size": 2.5}, "whole number"),
    (TrainArgs, {"bf16": "maybe"}, "bf16"),
    (EvalArgs, {"latency_samples": -2}, "latency samples"),
    (EvalArgs, {"bootstrap_samples": 0}, "bootstrap samples"),
    (EvalArgs, {"confidence": 1.0}, "confidence"),
    (DataArgs, {"max_source_length": 0}, "max source length"),
    (ShrinkArgs, {"encoder_layers": 2.5}, "whole number"),
    (ShrinkArgs, {"strategy": "random"}, "strategy"),
    (KDArgs, {"temperature": 0}, "temperature"),
    (ModularArgs, {"replace_rate_end": 1.5}, "replace rate end"),
])
def test_every_field_is_validated_on_creation(cls, values, message):
    with pytest.raises(CompressionError, match=message) as info:
        cls(**values)
    assert type(info.value) is cls._error or issubclass(type(info.value), cls._error)


def test_error_types_and_whole_floats():
    with pytest.raises(LayerSelectionError):
        ShrinkArgs(strategy="x")
    with pytest.raises(ModularError):
        ModularArgs(granularities="1")
    with pytest.raises(CompressionError, match="unknown quantization '8-bit'.*8bit"):
        RunConfig(model="m", output_dir="o", quantize="8-bit")
    assert TrainArgs(batch_size=8.0).batch_size == 8 and isinstance(TrainArgs(batch_size=8.0).batch_size, int)


def test_from_form_takes_named_values_and_round_trips():
    config = RunConfig.from_form({"model": "m", "output_dir": "o", "tokenizer": "tok", "epochs": "2",
                                  "train.batch_size": 4.0, "eval.batch_size": "3", "max_train_samples": "",
                                  "kd.alpha_ce": 0.5, "shrink.encoder_layers": 2, "quantize": "8bit"})
    assert (config.train.epochs, config.train.batch_size, config.eval.batch_size) == (2.0, 4, 3)
    assert config.data.max_train_samples is None and config.kd.alpha_ce == 0.5 and config.tokenizer == "tok"
    assert RunConfig.from_form(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(CompressionError, match="ambiguous"):
        RunConfig.from_form({"model": "m", "output_dir": "o", "batch_size": 1})
    with pytest.raises(CompressionError, match="unknown setting"):
        RunConfig.from_form({"model": "m", "output_dir": "o", "train.bogus": 1})


def _option(parser, command, flag):
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return next(a for a in sub._actions if flag in a.option_strings)


def test_cli_flags_come_from_the_fields():
    parser = build_parser()
    for cls in (TrainArgs, KDArgs):
        for field in dataclasses.fields(cls):
            if isinstance(field.default, bool) or field.default is None:
                continue
            action = _option(parser, "run", "--" + field.name.replace("_", "-"))
            assert field.metadata["help"] in action.help and f"(default: {field.default})" in action.help
    assert _option(parser, "run", "--quantize").choices == ("auto", "none", "8bit", "4bit", "fp4", "fp16", "bf16")
    assert _option(parser, "run", "--bf16").choices == ("auto", "yes", "no")
    assert _option(parser, "run", "--generation-batch-size").default == EvalArgs.batch_size
    assert _option(parser, "modular-train", "--granularities").default == (2, 3, 4)
