"""Honest run folders: a killed run reads "interrupted", SIGTERM and Ctrl-C mark it cancelled and keep
``last-checkpoint/``, an existing run is never mixed with a new one, and ``runs | head`` stays quiet.

The signal tests run the real CLI in a subprocess on a tiny model with many steps and signal it once
training has logged a step; each takes a few seconds.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from compression.__main__ import main
from compression.runs import STALE_SECONDS, RunFolder, list_runs, load_run
from conftest import ARTICLES, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory):
    from transformers import ByT5Tokenizer, T5ForConditionalGeneration

    from conftest import tiny_t5_config

    root = tmp_path_factory.mktemp("lifecycle")
    T5ForConditionalGeneration(tiny_t5_config()).save_pretrained(root / "model")
    ByT5Tokenizer().save_pretrained(root / "model")
    write_jsonl(root / "train.jsonl", ARTICLES)
    write_jsonl(root / "validation.jsonl", ARTICLES[:2])
    return root


def _run_argv(inputs: Path, output: Path, *extra: str) -> list[str]:
    return ["run", "--model", str(inputs / "model"), "--train-file", str(inputs / "train.jsonl"),
            "--validation-file", str(inputs / "validation.jsonl"), "--encoder-layers", "1", "--decoder-layers", "1",
            "--quantize", "none", "--batch-size", "2", "--logging-steps", "1", "--max-source-length", "32",
            "--max-target-length", "8", "--device", "cpu", "--bf16", "no", "--output", str(output), *extra]


def _start_training(inputs: Path, output: Path) -> subprocess.Popen:
    """The CLI running a run of 100,000 steps, returned once training has logged its first step."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "compression", "--json",
                                *_run_argv(inputs, output, "--max-steps", "100000", "--max-new-tokens", "2")],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    log = output / "loss_log.jsonl"
    while not (log.is_file() and log.read_text().strip()):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"training did not start: {process.stderr.read()[-2000:]}")
        time.sleep(0.1)
    return process


def test_kill_9_mid_training_reads_interrupted(tiny_inputs, tmp_path):
    output = tmp_path / "runs" / "killed"
    process = _start_training(tiny_inputs, output)
    assert list_runs(tmp_path / "runs")[0]["status"] == "running"
    process.kill()
    process.wait(timeout=30)
    status = load_run(output)["status"]
    assert status["status"] == "interrupted" and "process is gone" in status["reason"]
    assert list_runs(tmp_path / "runs")[0]["status"] == "interrupted"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_mark_cancelled_and_keep_the_checkpoint(signum, tiny_inputs, tmp_path):
    output = tmp_path / "run"
    process = _start_training(tiny_inputs, output)
    process.send_signal(signum)
    assert process.wait(timeout=120) == 130
    status = json.loads((output / "status.json").read_text())
    assert status["status"] == "cancelled" and status["pid"] == process.pid and status["host"] == socket.gethostname()
    assert "Traceback" not in process.stderr.read()
    assert (output / "last-checkpoint" / "model.safetensors").is_file()
    assert load_run(output)["status"]["status"] == "cancelled"


def _status(path: Path, **values) -> Path:
    path.mkdir(parents=True)
    (path / "status.json").write_text(json.dumps({"status": "running", "started_at": "2026-01-01T00:00:00+00:00",
                                                  **values}))
    return path


def test_readers_report_dead_or_silent_runs_as_interrupted(tmp_path):
    now = datetime.now(timezone.utc)
    fresh, old = now.isoformat(), (now - timedelta(seconds=STALE_SECONDS + 60)).isoformat()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    _status(tmp_path / "alive", pid=os.getpid(), host=host, heartbeat=fresh)
    _status(tmp_path / "dead", pid=int(dead.stdout), host=host, heartbeat=fresh)
    _status(tmp_path / "silent", pid=os.getpid(), host=host, heartbeat=old)
    _status(tmp_path / "elsewhere", pid=int(dead.stdout), host=host + "-other", heartbeat=fresh)
    statuses = {row["name"]: row["status"] for row in list_runs(tmp_path)}
    assert statuses == {"alive": "running", "dead": "interrupted", "silent": "interrupted", "elsewhere": "running"}
    assert "no heartbeat" in load_run(tmp_path / "silent")["status"]["reason"]


def test_heartbeat_is_rewritten_while_running(tmp_path):
    run = RunFolder.open(tmp_path / "run")
    first = json.loads((run.path / "status.json").read_text())
    assert first["pid"] == os.getpid() and first["heartbeat"]
    stop = run.start_heartbeat(0.05)
    time.sleep(1.2)
    stop.set()
    assert json.loads((run.path / "status.json").read_text())["heartbeat"] > first["heartbeat"]
    run.mark_failed("DatasetError: bad rows")
    record = json.loads((run.path / "status.json").read_text())
    assert record["status"] == "failed" and record["reason"] == "DatasetError: bad rows" and "heartbeat" not in record


def test_existing_run_folder_is_refused_unless_overwrite(tiny_inputs, tmp_path, capsys):
    output = tmp_path / "run"
    old = _status(output, pid=1, host="elsewhere")
    (old / "loss_log.jsonl").write_text('{"kind": "train", "step": 1, "loss": 9.0}\n')
    (old / "quantized").mkdir()
    assert main(_run_argv(tiny_inputs, output, "--max-steps", "1")) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--overwrite" in err
    assert (old / "quantized").is_dir()  # untouched
    argv = _run_argv(tiny_inputs, output, "--max-steps", "1", "--max-new-tokens", "2", "--bootstrap-samples", "5",
                     "--latency-samples", "0", "--overwrite")
    assert main(["--json", *argv]) == 0
    assert not (output / "quantized").exists()
    log = [json.loads(line) for line in (output / "loss_log.jsonl").read_text().splitlines()]
    assert all(record.get("loss") != 9.0 for record in log)
    assert load_run(output)["status"]["status"] == "complete"


def test_json_runs_into_a_closed_pipe_is_quiet(tmp_path):
    for i in range(300):  # more JSON than a pipe buffer holds
        _status(tmp_path / f"20260101-0000{i:03d}-run", pid=1, host="elsewhere",
                heartbeat=datetime.now(timezone.utc).isoformat())
    done = subprocess.run(f"{sys.executable} -m compression --json runs --root {tmp_path} | head -c 100",
                          shell=True, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("[") and "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def test_cli_hides_library_bars_but_not_the_training_bar(tmp_path, tiny_t5, byt5_tokenizer, capsys):
    """Without -v the command line hides the hub's, transformers' ("Loading weights", "Writing model
    shards") and datasets' bars, although the parser has already imported those libraries, and the
    warnings of bitsandbytes' failed optional kernel fetch; the Trainer's own training bar is a plain
    tqdm and stays, and so do other warnings."""
    import logging

    import datasets
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars
    from transformers.utils import logging as transformers_logging

    from compression.__main__ import OPTIONAL_KERNEL_LOGGERS, main

    tiny_t5.save_pretrained(tmp_path / "teacher")
    byt5_tokenizer.save_pretrained(tmp_path / "teacher")
    try:
        assert main(["shrink", "--model", str(tmp_path / "teacher"), "--encoder-layers", "1", "--decoder-layers", "1",
                     "--output", str(tmp_path / "student")]) == 0
        assert not transformers_logging.is_progress_bar_enabled()
        assert are_progress_bars_disabled() and not datasets.is_progress_bar_enabled()
        assert "Loading weights" not in capsys.readouterr().err
        assert all(logging.getLogger(name).getEffectiveLevel() == logging.ERROR for name in OPTIONAL_KERNEL_LOGGERS)
        assert logging.getLogger("compression").isEnabledFor(logging.WARNING)
    finally:  # the rest of the suite runs with the libraries' defaults
        for name in OPTIONAL_KERNEL_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
        transformers_logging.enable_progress_bar()
        enable_progress_bars()
        datasets.enable_progress_bars()


def test_cli_prints_a_result_once_under_torchrun(monkeypatch, capsys):
    """Under ``torchrun`` every rank runs the command; only rank 0 prints its result (text or JSON)."""
    from types import SimpleNamespace

    from compression.__main__ import _print

    for json_output in (False, True):
        args = SimpleNamespace(json=json_output)
        monkeypatch.setenv("RANK", "1")
        _print(args, {"steps": 4}, "4 steps")
        assert capsys.readouterr().out == ""
        monkeypatch.setenv("RANK", "0")
        _print(args, {"steps": 4}, "4 steps")
        assert "4" in capsys.readouterr().out
