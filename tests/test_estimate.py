"""compression.estimate: the training-time estimate's arithmetic (no timings are asserted)."""

from __future__ import annotations

import json
import socket

import pytest

from compression.errors import CompressionError
from compression.estimate import (
    MIN_STEPS,
    REFERENCE,
    Throughput,
    estimate_run,
    estimate_training,
    measured_throughput,
    pair_tokens,
    reference_throughput,
    training_steps,
)


@pytest.mark.parametrize("pairs,batch,accum,epochs,max_steps,steps", [
    (699, 8, 1, 1.0, None, 88),     # ceil(699 / 8)
    (699, 8, 2, 1.0, None, 44),     # ceil(88 / 2)
    (699, 8, 3, 1.0, None, 30),     # ceil(88 / 3)
    (699, 8, 1, 2.5, None, 220),    # ceil(2.5 * 88)
    (8, 4, 1, 3.0, None, 6),
    (5, 8, 1, 0.1, None, 1),        # never below one step
    (699, 8, 1, 1.0, 25, 25),       # max_steps overrides the epochs
])
def test_training_steps_follow_the_trainer(pairs, batch, accum, epochs, max_steps, steps):
    assert training_steps(pairs, batch, accum, epochs, max_steps) == steps


def test_training_steps_agree_with_a_real_trainer(tiny_jsonl, byt5_tokenizer, tmp_path):
    from test_resume import _args, _train

    args = _args(epochs=1.5, batch_size=3, gradient_accumulation_steps=2)
    _, result, _ = _train("t5", tiny_jsonl, byt5_tokenizer, tmp_path / "run", args)  # 8 pairs
    assert result.steps == training_steps(8, 3, 2, 1.5)


def test_estimate_is_steps_times_seconds_per_step():
    rate = Throughput(1e10, "modelled", "a reference")
    estimate = estimate_training(pairs=800, tokens_per_pair=50.0, student_params=20_000_000, batch_size=8,
                                 throughput=rate, epochs=2)
    assert estimate.steps == 200
    assert estimate.seconds_per_step == pytest.approx(8 * 50 * 20e6 / 1e10)  # 0.8 s
    assert estimate.seconds == pytest.approx(200 * 0.8)
    assert estimate.source == "modelled" and "a reference" in estimate.basis and "20.00 M parameters" in estimate.basis
    # half the parameters or half the tokens: half the time; accumulation: fewer, longer steps, same total
    assert estimate_training(pairs=800, tokens_per_pair=25.0, student_params=20_000_000, batch_size=8,
                             throughput=rate, epochs=2).seconds == pytest.approx(80)
    accumulated = estimate_training(pairs=800, tokens_per_pair=50.0, student_params=20_000_000, batch_size=8,
                                    throughput=rate, epochs=2, gradient_accumulation_steps=2)
    assert accumulated.steps == 100 and accumulated.seconds == pytest.approx(estimate.seconds)
    with pytest.raises(CompressionError):
        estimate_training(pairs=0, tokens_per_pair=50.0, student_params=1, batch_size=8, throughput=rate)
    with pytest.raises(CompressionError):
        estimate_training(pairs=8, tokens_per_pair=0.0, student_params=1, batch_size=8, throughput=rate)


def _run(root, name, *, host, steps=20, tokens_per_s=1000.0, params=4_000_000):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "status.json").write_text(json.dumps({"status": "complete", "host": host}))
    (folder / "train.json").write_text(json.dumps({"steps": steps, "tokens_per_s": tokens_per_s}))
    (folder / "architecture.json").write_text(json.dumps({"student": {"params": params}}))
    return folder


def test_measured_throughput_takes_the_newest_run_of_this_machine(tmp_path):
    assert measured_throughput(tmp_path / "none") is None
    here = socket.gethostname()
    _run(tmp_path, "20260101-000000-old", host=here, tokens_per_s=500.0)
    _run(tmp_path, "20260301-000000-short", host=here, steps=MIN_STEPS - 1)  # too few steps to count
    _run(tmp_path, "20260401-000000-elsewhere", host="another-machine")
    _run(tmp_path, "20260201-000000-newer", host=here, tokens_per_s=800.0)
    rate = measured_throughput(tmp_path)
    assert rate.source == "measured" and rate.param_tokens_per_s == pytest.approx(800.0 * 4_000_000)
    assert "20260201-000000-newer" in rate.basis
    reference = reference_throughput()
    assert reference.source == "modelled"
    assert reference.param_tokens_per_s == pytest.approx(REFERENCE["tokens_per_s"] * REFERENCE["params"])


def test_pair_tokens_counts_real_tokens_after_truncation(byt5_tokenizer):
    # ByT5: one token per byte plus </s>
    assert pair_tokens(["abcd", "ab"], ["xy", "x"], byt5_tokenizer, prefix="", max_source_length=64,
                       max_target_length=64) == pytest.approx(((5 + 3) + (3 + 2)) / 2)
    assert pair_tokens(["abcdefgh"], ["xyz"], byt5_tokenizer, prefix="s: ", max_source_length=4,
                       max_target_length=2) == pytest.approx(4 + 2)


def test_estimate_run_reads_the_data_of_the_config(tiny_jsonl, byt5_tokenizer, tmp_path):
    from compression.config import DataArgs, RunConfig, TrainArgs

    config = RunConfig(model="m", output_dir=str(tmp_path / "out"),
                       data=DataArgs(train_file=str(tiny_jsonl[0]), validation_file=str(tiny_jsonl[1]),
                                     max_source_length=64, max_target_length=16, prefix=""),
                       train=TrainArgs(batch_size=4, epochs=3))
    estimate = estimate_run(config, byt5_tokenizer, 1_000_000, tmp_path / "runs")
    assert estimate.pairs == 8 and estimate.steps == 6 and estimate.source == "modelled"
    assert 0 < estimate.tokens_per_pair <= 64 + 16
    assert estimate.seconds == pytest.approx(6 * 4 * estimate.tokens_per_pair * 1e6
                                             / reference_throughput().param_tokens_per_s)


def test_estimate_run_counts_the_prefix_the_base_model_records(tiny_jsonl, byt5_tokenizer, tmp_path):
    """A T5 checkpoint trained without a prefix records "" (compression.data.record_prefix): the estimate
    counts no "summarize: " tokens for it, as its run will tokenize; a prefix set on the data wins."""
    from compression.config import DataArgs, RunConfig

    def tokens(prefix=None, **kwargs):
        data = DataArgs(train_file=str(tiny_jsonl[0]), max_source_length=512, max_target_length=16, prefix=prefix)
        config = RunConfig(model="m", output_dir=str(tmp_path / "out"), data=data)
        return estimate_run(config, byt5_tokenizer, 1_000_000, tmp_path / "runs", **kwargs).tokens_per_pair

    plain = tokens(prefix="")
    assert tokens(model_prefix="") == plain
    # describe_model gives the family's prefix when nothing is recorded (test_data covers default_prefix)
    assert tokens(model_prefix="summarize: ") == tokens(prefix="summarize: ") > plain
    assert tokens(prefix="", model_prefix="summarize: ") == plain


def test_train_panel_shows_the_estimate_and_its_basis(settings, loaded, tiny_jsonl):
    from test_train_panel import _form

    from components import train_panel
    from components.state import Session

    session, _ = loaded
    form = _form(tiny_jsonl, **{"train.epochs": 3})
    line = train_panel.estimate_time(settings, list(form), session, *form.values())
    assert line.startswith("⏱ **About ") and "6 steps" in line and "8 pairs" in line
    assert "Modelled" in line and "no run on this machine yet" in line
    with pytest.raises(Exception, match="load a base model first"):
        train_panel.estimate_time(settings, list(form), Session(), *form.values())
