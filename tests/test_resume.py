"""Resuming training: a run cancelled half-way and continued from ``last-checkpoint/`` ends with the
same weights and losses as one that never stopped (optimizer, schedule, RNG and data order restored
through the Trainer's own checkpoint), and the checkpoint is written atomically."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
from test_train import _model, _tokenized

from compression.config import TrainArgs
from compression.errors import RunError
from compression.progress import LOSS_LOG
from compression.train import LAST_CHECKPOINT, checkpoint_step, discard_checkpoint, finetune

# Same process, same thread count (conftest pins one), same CPU kernels: continuing from the checkpoint
# replays the very same float operations, so the weights match to the last bit. The tolerance below
# only absorbs a kernel that reorders a reduction between two calls (not seen here); a wrong data
# order, learning rate or optimizer state moves the weights by ~1e-3 and more after one step.
ATOL = 1e-6


def _args(**overrides) -> TrainArgs:
    # 8 pairs, batch 2: 4 steps per epoch, 2 epochs; dropout on (tiny configs keep it), length-grouped
    values = dict(epochs=2, batch_size=2, learning_rate=3e-3, warmup_ratio=0.25, logging_steps=1, device="cpu",
                  bf16="no", eval_steps=3)
    values.update(overrides)
    return TrainArgs(**values)


def _train(family, tiny_jsonl, tokenizer, out, args, *, stop_after=None, resume=False):
    """Train a fresh seeded model into ``out``; ``stop_after=k``: cancel so training stops after step k."""
    model = _model(family)
    train, validation = _tokenized(tiny_jsonl, tokenizer, model)
    cancel, records = threading.Event(), []

    def on_progress(record):
        records.append(record)
        if stop_after is not None and record["kind"] == "train" and record["step"] == stop_after - 1:
            cancel.set()  # seen after step k-1: the Trainer stops at the end of step k
    result = finetune(model, tokenizer, train, validation, args, out, on_progress=on_progress, cancel=cancel,
                      progress_bar=False, resume_from=out / LAST_CHECKPOINT if resume else None)
    return model, result, records


@pytest.mark.parametrize("family,stop_after", [("t5", 5), ("t5", 2), ("bart", 5)])
def test_cancel_and_resume_matches_a_straight_run(family, stop_after, tiny_jsonl, byt5_tokenizer, tmp_path):
    args = _args()
    straight, straight_result, straight_records = _train(family, tiny_jsonl, byt5_tokenizer, tmp_path / "straight", args)

    out = tmp_path / "resumed"
    _, first, _ = _train(family, tiny_jsonl, byt5_tokenizer, out, args, stop_after=stop_after)
    assert first.cancelled and first.steps == stop_after
    assert checkpoint_step(out / LAST_CHECKPOINT) == stop_after
    saved = sorted(p.name for p in (out / LAST_CHECKPOINT).iterdir())
    for name in ("optimizer.pt", "scheduler.pt", "trainer_state.json", "model.safetensors", "config.json"):
        assert name in saved
    assert any(name.startswith("rng_state") for name in saved)
    assert not list(out.glob(f".{LAST_CHECKPOINT}*"))  # the staging folder is gone

    resumed, second, replayed = _train(family, tiny_jsonl, byt5_tokenizer, out, args, resume=True)
    assert not second.cancelled and second.steps == straight_result.steps == 8
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=ATOL, rtol=0), name
    assert second.eval_loss == pytest.approx(straight_result.eval_loss, abs=ATOL)

    def losses(records):
        return [(r["step"], round(r.get("loss", r.get("eval_loss")), 6)) for r in records]
    # the watcher sees the whole curve: the kept records first, then the continued steps
    assert losses(replayed) == losses(straight_records)
    logged = [json.loads(line) for line in (out / LOSS_LOG).read_text().splitlines()]
    assert losses(logged) == losses(straight_records)
    assert [r["learning_rate"] for r in replayed] == pytest.approx([r["learning_rate"] for r in straight_records])


def test_resume_cuts_the_loss_log_back_to_the_checkpoint(tiny_jsonl, byt5_tokenizer, tmp_path):
    out = tmp_path / "run"
    _train("t5", tiny_jsonl, byt5_tokenizer, out, _args(), stop_after=3)
    with open(out / LOSS_LOG, "a", encoding="utf-8") as log:  # steps a killed process logged after saving
        log.write(json.dumps({"kind": "train", "step": 4, "loss": 9.0}) + "\n")
    _, result, records = _train("t5", tiny_jsonl, byt5_tokenizer, out, _args(), resume=True)
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == list(range(1, 9)) and 9.0 not in [r.get("loss") for r in records]


def test_periodic_checkpoint_is_written_while_training(tiny_jsonl, byt5_tokenizer, tmp_path):
    # 1e-9 minutes: due after every step; the last one written holds the final step
    _, result, _ = _train("t5", tiny_jsonl, byt5_tokenizer, tmp_path / "run", _args(checkpoint_minutes=1e-9))
    assert checkpoint_step(tmp_path / "run" / LAST_CHECKPOINT) == result.steps
    discard_checkpoint(tmp_path / "run")
    assert not (tmp_path / "run" / LAST_CHECKPOINT).exists()


def test_no_checkpoint_without_cancel_or_period(tiny_jsonl, byt5_tokenizer, tmp_path):
    _train("t5", tiny_jsonl, byt5_tokenizer, tmp_path / "run", _args(checkpoint_minutes=0))
    assert not (tmp_path / "run" / LAST_CHECKPOINT).exists()


def test_resume_refuses_what_is_not_a_checkpoint(tiny_jsonl, byt5_tokenizer, tmp_path):
    broken = tmp_path / "run" / LAST_CHECKPOINT
    broken.mkdir(parents=True)
    with pytest.raises(RunError, match="no training state"):
        _train("t5", tiny_jsonl, byt5_tokenizer, tmp_path / "run", _args(), resume=True)
    (broken / "trainer_state.json").write_text('{"global_step": 2}')
    with pytest.raises(RunError, match="no weights"):
        checkpoint_step(broken)


def test_resume_refuses_a_checkpoint_of_another_shape(tiny_jsonl, byt5_tokenizer, tmp_path):
    out = tmp_path / "run"
    _train("t5", tiny_jsonl, byt5_tokenizer, out, _args(), stop_after=2)
    with pytest.raises(RunError, match="different model"):
        _train("bart", tiny_jsonl, byt5_tokenizer, out, _args(), resume=True)


# ----- the whole run: run_pipeline / `run --resume` -----

def _run_config(tiny_t5_dir, tiny_jsonl, output, method):
    from compression.config import DataArgs, EvalArgs, RunConfig, ShrinkArgs

    return RunConfig(model=str(tiny_t5_dir), output_dir=str(output), shrink=ShrinkArgs(2, 2, "spread"),
                     data=DataArgs(train_file=str(tiny_jsonl[0]), validation_file=str(tiny_jsonl[1]),
                                   max_source_length=64, max_target_length=16),
                     train=_args(eval_steps=None), quantize="none", deploy=False, method=method,
                     eval=EvalArgs(max_new_tokens=2, bootstrap_samples=5, latency_samples=0, batch_size=4))


@pytest.mark.parametrize("method", ["sft", "kd"])
def test_run_cancelled_then_resumed_from_the_command_line(method, tiny_t5_dir, tiny_jsonl, tmp_path, capsys):
    from safetensors.torch import load_file

    from compression.__main__ import main
    from compression.pipeline import run_pipeline
    from compression.runs import load_run

    straight = run_pipeline(_run_config(tiny_t5_dir, tiny_jsonl, tmp_path / "straight", method), progress_bar=False)
    cancel, output = threading.Event(), tmp_path / "runs" / "stopped"

    def on_progress(record):
        if record.get("kind") == "train" and record["step"] == 2:
            cancel.set()
    first = run_pipeline(_run_config(tiny_t5_dir, tiny_jsonl, output, method), on_progress=on_progress,
                         cancel=cancel, progress_bar=False)
    assert first["status"] == "cancelled" and checkpoint_step(output / LAST_CHECKPOINT) == 3
    config_before = (output / "config.json").read_text()

    assert main(["--json", "run", "--resume", "--output", str(output)]) == 0
    run = load_run(output)
    assert run["status"]["status"] == "complete"
    assert (output / "config.json").read_text() == config_before  # the recipe it was started with
    assert not (output / LAST_CHECKPOINT).exists()  # the student is saved: nothing left to continue
    assert [r["step"] for r in run["loss_log"] if r["kind"] == "train"] == list(range(1, 9))
    a = load_file(Path(straight["run_dir"]) / "student" / "model.safetensors")
    b = load_file(output / "student" / "model.safetensors")
    for name in a:
        assert torch.allclose(a[name], b[name], atol=ATOL, rtol=0), name
    assert run["metrics"]["student"]["validation_loss"] == pytest.approx(
        straight["metrics"]["student"]["validation_loss"], abs=ATOL)

    capsys.readouterr()
    assert main(["run", "--resume", "--output", str(output)]) == 2  # complete now
    assert "is complete: there is nothing to resume" in capsys.readouterr().err


def test_run_resume_refusals_are_one_line(tiny_t5_dir, tmp_path, capsys):
    from compression.__main__ import main
    from compression.runs import RunFolder

    cases = {
        ("run", "--resume"): "--resume needs --output",
        ("run", "--resume", "--overwrite", "--output", str(tmp_path)): "give one",
        ("run", "--output", str(tmp_path / "new")): "the argument --model is required",
        ("run", "--resume", "--output", str(tmp_path / "absent")): "not a run folder",
    }
    cancelled = RunFolder.open(tmp_path / "cancelled")
    cancelled.write_json("config.json", {})
    cancelled.mark_cancelled()
    cases[("run", "--resume", "--output", str(cancelled.path))] = "no last-checkpoint/ to resume from"
    running = RunFolder.open(tmp_path / "running")  # this process: alive
    cases[("run", "--resume", "--output", str(running.path))] = "still running"
    cases[("finetune", "--model", str(tiny_t5_dir), "--train-file", "x.jsonl", "--resume",
           "--output", str(tmp_path / "ft"))] = "holds no last-checkpoint/"
    for argv, message in cases.items():
        assert main(list(argv)) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (argv, err)


# ----- the dashboard's Resume button (components: runs history -> job queue -> live panel) -----

def test_resume_button_continues_a_cancelled_run(settings, tiny_t5_dir, tiny_jsonl, monkeypatch):
    from types import SimpleNamespace

    from components import runs_panel, train_panel
    from components.state import Session
    from compression.guard import PublicLimits
    from compression.pipeline import run_pipeline

    monkeypatch.setattr(train_panel, "POLL_SECONDS", 0.05)
    name = "20261203-120000-stopped"
    cancel = threading.Event()
    run_pipeline(_run_config(tiny_t5_dir, tiny_jsonl, settings.runs_dir / name, "sft"), cancel=cancel,
                 on_progress=lambda r: r.get("step") == 2 and cancel.set(), progress_bar=False)
    session = Session()
    assert runs_panel.resume_button(settings, name, session).interactive is True
    assert runs_panel.resume_button(settings, None, session).interactive is False

    # on a public server, only the visitor who started a run may resume it (the operator's runs, which
    # every visitor sees, included)
    public = type(settings).create(settings.runs_dir, [settings.runs_dir.parent], offline=True,
                                   limits=PublicLimits())
    with pytest.raises(Exception, match="started by someone else"):
        next(train_panel.resume_run(public, Session(visitor="me"), name))

    request = SimpleNamespace(query_params={}, session_hash="tab-1")
    outputs = list(train_panel.resume_from_page(settings, request, session, name))
    markdown, _ = outputs[-1]
    assert "Run complete" in markdown and session.result["status"] == "complete"
    assert any("continuing from step" in str(stage.get("message")) for stage in
               settings.jobs.get(session.job_id).stages)
    assert runs_panel.runs_table(settings).set_index("name").loc[name, "status"] == "complete"
    assert runs_panel.resume_button(settings, name, session).interactive is False  # complete: nothing to resume
    with pytest.raises(Exception, match="nothing to resume"):
        next(train_panel.resume_run(settings, session, name))


# ----- Modular Transformers: `modular-train --resume` -----

def _modular_argv(tiny_t5_dir, tiny_jsonl, output, *extra):
    # 8 pairs, batch 2: 4 steps per epoch, 2 epochs; granularities 2 and 4, all three loss terms
    return ["--json", "modular-train", "--teacher", str(tiny_t5_dir), "--train-file", str(tiny_jsonl[0]),
            "--validation-file", str(tiny_jsonl[1]), "--max-source-length", "48", "--max-target-length", "16",
            "--epochs", "2", "--batch-size", "2", "--learning-rate", "3e-3", "--warmup-ratio", "0.25",
            "--logging-steps", "1", "--eval-steps", "3", "--device", "cpu", "--bf16", "no",
            "--granularities", "2,4", "--output", str(output), *extra]


@pytest.mark.parametrize("stop_after", [2, 5])
def test_modular_training_cancelled_then_resumed_from_the_command_line(stop_after, tiny_t5_dir, tiny_jsonl,
                                                                       tmp_path, capsys):
    from safetensors.torch import load_file

    from compression.__main__ import main
    from compression.cli import build_parser, from_flags
    from compression.config import DataArgs, ModularArgs
    from compression.modular import MODULES_FILE, ModularConfig, load_modular, train_modular

    assert main(_modular_argv(tiny_t5_dir, tiny_jsonl, tmp_path / "straight")) == 0
    straight = tmp_path / "straight"
    assert not (straight / LAST_CHECKPOINT).exists()  # completed: nothing to continue

    output = tmp_path / "stopped"
    flags = build_parser().parse_args(_modular_argv(tiny_t5_dir, tiny_jsonl, output))
    config = ModularConfig(teacher=str(tiny_t5_dir), data=from_flags(DataArgs, flags), output=output,
                           train=from_flags(TrainArgs, flags), modular=from_flags(ModularArgs, flags))
    cancel = threading.Event()

    def on_progress(record):
        if record.get("kind") == "train" and record["step"] == stop_after - 1:
            cancel.set()  # seen after step k-1: training stops at the end of step k
    modular, _ = train_modular(config, on_progress=on_progress, cancel=cancel, progress_bar=False)
    assert modular.info["training"]["cancelled"] and modular.info["training"]["steps"] == stop_after
    checkpoint = output / LAST_CHECKPOINT
    assert checkpoint_step(checkpoint) == stop_after
    saved = {p.name for p in checkpoint.iterdir()}
    assert {"optimizer.pt", "scheduler.pt", "trainer_state.json", MODULES_FILE, "modular.json", "teacher"} <= saved
    assert load_modular(checkpoint).module_names() == modular.module_names()  # assemble can read it too

    capsys.readouterr()
    assert main(_modular_argv(tiny_t5_dir, tiny_jsonl, output, "--resume")) == 0
    assert not checkpoint.exists()
    a, b = load_file(straight / MODULES_FILE), load_file(output / MODULES_FILE)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=ATOL, rtol=0), name

    def losses(folder):
        records = [json.loads(line) for line in (folder / LOSS_LOG).read_text().splitlines()]
        return [(r["kind"], r["step"], round(r.get("loss", r.get("eval_loss")), 6)) for r in records]
    assert losses(output) == losses(straight)
    meta = json.loads((output / "modular.json").read_text())
    assert meta["training"]["steps"] == 8 and not meta["training"]["cancelled"]

    capsys.readouterr()  # completed now: nothing left to resume, one line
    assert main(_modular_argv(tiny_t5_dir, tiny_jsonl, output, "--resume")) == 2
    err = capsys.readouterr().err
    assert "holds no last-checkpoint/" in err and "Traceback" not in err


def test_modular_resume_refuses_a_checkpoint_of_other_modules(tiny_t5_dir, tiny_jsonl, tmp_path, capsys):
    from compression.__main__ import main
    from compression.cli import build_parser, from_flags
    from compression.config import DataArgs, ModularArgs
    from compression.modular import ModularConfig, train_modular

    output = tmp_path / "g2"
    flags = build_parser().parse_args(_modular_argv(tiny_t5_dir, tiny_jsonl, output, "--granularities", "2"))
    config = ModularConfig(teacher=str(tiny_t5_dir), data=from_flags(DataArgs, flags), output=output,
                           train=from_flags(TrainArgs, flags), modular=from_flags(ModularArgs, flags))
    cancel = threading.Event()
    cancel.set()
    train_modular(config, cancel=cancel, progress_bar=False)
    assert checkpoint_step(output / LAST_CHECKPOINT) == 1

    capsys.readouterr()  # resumed with granularities 2 and 4: modules the checkpoint does not hold
    assert main(_modular_argv(tiny_t5_dir, tiny_jsonl, output, "--resume")) == 2
    err = capsys.readouterr().err
    assert "different model or settings" in err and "Traceback" not in err
