"""compression.runs: run folders, atomic writes, secrets stripped, tolerant listing, path checks."""

from __future__ import annotations

import json
import os
import re
import stat

import pytest

from compression.errors import PathNotAllowedError, RunError
from compression.files import UMASK
from compression.runs import RunFolder, dumps_json, list_runs, load_run, resolve_inside, slugify, strip_secrets

CONFIG = {"model": "t5-small", "output_dir": "out", "name": "My Run!",
          "shrink": {"encoder_layers": 6, "decoder_layers": "0,5", "strategy": "spread"},
          "train": {"epochs": 1.0, "hub_token": "hf_abcdefghijklmnopqrstuvwxyz"},
          "eval": {"max_new_tokens": 64}, "hf_token": "hf_abcdefghijklmnopqrstuvwxyz", "password": "pw",
          "token": "t0k3n", "notes": "pushed with hf_abcdefghijklmnopqrstuvwxyz"}
METRICS = {"base": {"rouge1": 40.0, "rougeL": 30.0, "params": 60, "size_mib": 2.0, "validation_loss": 1.0},
           "student": {"rouge1": 37.0, "rougeL": 28.2, "params": 30, "size_mib": 1.0,
                       "validation_loss": 1.25, "tokens_per_s": 99.0}}


def test_create_names_and_status(tmp_path):
    first = RunFolder.create(tmp_path, "My Run: T5/6-3 !")
    second = RunFolder.create(tmp_path, "My Run: T5/6-3 !")
    assert re.fullmatch(r"\d{8}-\d{6}-my-run-t5-6-3", first.name)
    assert first.path != second.path and second.path.is_dir()
    assert json.loads((first.path / "status.json").read_text())["status"] == "running"
    assert slugify("../../etc") == "etc" and slugify("***") == "run"
    planned = RunFolder.default_path(tmp_path, "My Run: T5/6-3 !")
    assert not planned.exists() and planned.parent == tmp_path and planned not in (first.path, second.path)


def test_open_uses_the_given_folder(tmp_path):
    run = RunFolder.open(tmp_path / "chosen" / "run-a")
    assert run.path == tmp_path / "chosen" / "run-a"
    assert json.loads((run.path / "status.json").read_text())["status"] == "running"
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match="not a folder"):
        RunFolder.open(tmp_path / "file")


def test_write_json_is_atomic_and_stays_inside(tmp_path):
    run = RunFolder.create(tmp_path, "x")
    path = run.write_json("metrics.json", {"a": 1, "loss": float("nan")})
    assert json.loads(path.read_text()) == {"a": 1, "loss": None}
    with pytest.raises(TypeError):
        run.write_json("metrics.json", {"a": object()})  # fails before anything is replaced
    assert json.loads(path.read_text()) == {"a": 1, "loss": None}
    assert sorted(p.name for p in run.path.iterdir()) == ["metrics.json", "status.json"]  # no temp files
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~UMASK  # as open() would, not 0600
    with pytest.raises(PathNotAllowedError):
        run.write_json("../escape.json", {})
    assert not (tmp_path / "escape.json").exists()


def test_config_never_holds_tokens(tmp_path):
    run = RunFolder.create(tmp_path, "x")
    run.write_json("config.json", CONFIG)
    text = (run.path / "config.json").read_text()
    saved = json.loads(text)
    assert "hf_abcdefghijklmnopqrstuvwxyz" not in text and "t0k3n" not in text and '"pw"' not in text
    assert "hf_token" not in saved and "token" not in saved and "password" not in saved
    assert "hub_token" not in saved["train"]
    assert saved["eval"] == {"max_new_tokens": 64} and saved["shrink"] == CONFIG["shrink"]
    assert strip_secrets({"tokens_per_s": 1, "pad_token_id": 0, "api_key": "k"}) == {"tokens_per_s": 1,
                                                                                    "pad_token_id": 0}


def test_logs_summaries_and_status(tmp_path):
    run = RunFolder.create(tmp_path, "x")
    (run.path / "loss_log.jsonl").write_text('{"step": 1, "loss": 2.5}\n{"step": 2, "loss": 2.25, "eval_loss": 2.4}\n')
    with open(run.path / "loss_log.jsonl", "a") as handle:
        handle.write('{"step": 3, "lo')  # a line cut short by a crash
    run.write_summaries([{"id": "7", "document": "doc", "reference": "ref", "student": "s", "extra": 1}])
    run.mark_failed("out of memory; token hf_abcdefghijklmnopqrstuvwxyz")
    loaded = load_run(run.path)
    assert loaded["loss_log"] == [{"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.25, "eval_loss": 2.4}]
    assert loaded["summaries"] == [{"id": "7", "document": "doc", "reference": "ref", "base": None,
                                    "student": "s", "quantized": None, "extra": 1}]
    assert list(loaded["summaries"][0])[:6] == ["id", "document", "reference", "base", "student", "quantized"]
    assert loaded["status"]["status"] == "failed"
    assert "hf_abcdefghijklmnopqrstuvwxyz" not in loaded["status"]["reason"]
    run.mark_cancelled()
    assert load_run(run.path)["status"]["status"] == "cancelled"
    run.mark_complete()
    status = load_run(run.path)["status"]
    assert status["status"] == "complete" and status["finished_at"] and status["started_at"]


def test_list_runs_tolerates_corrupt_and_incomplete_runs(tmp_path):
    good = RunFolder.create(tmp_path, "good")
    good.write_json("config.json", CONFIG)
    good.write_json("metrics.json", METRICS)
    good.mark_complete()
    corrupt = tmp_path / "20200101-000000-corrupt"
    corrupt.mkdir()
    (corrupt / "status.json").write_text('{"status": "compl')
    (corrupt / "config.json").write_text("[1, 2")
    (corrupt / "metrics.json").write_text('{"student": "not a dict", "base": []}')
    unfinished = RunFolder.create(tmp_path, "unfinished")
    (unfinished.path / "status.json").unlink()
    (unfinished.path / "metrics.json").write_text(json.dumps({"student": {"rouge1": "n/a"}}))
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "stray.txt").write_text("x")

    rows = {row["name"]: row for row in list_runs(tmp_path)}
    assert set(rows) == {good.name, corrupt.name, unfinished.name}
    row = rows[good.name]
    assert row["status"] == "complete" and row["model"] == "t5-small"
    layers = (row["encoder_layers"], row["decoder_layers"], row["strategy"], row["epochs"])
    assert layers == (6, "0,5", "spread", 1.0)
    assert (row["rouge1"], row["rougeL"], row["validation_loss"], row["params"], row["size_mib"]) == (
        37.0, 28.2, 1.25, 30, 1.0)
    assert row["percent_of_base_rouge1"] == pytest.approx(92.5)
    assert row["percent_of_base_rougeL"] == pytest.approx(94.0)
    assert rows[corrupt.name]["status"] == "incomplete" and rows[corrupt.name]["model"] is None
    assert rows[corrupt.name]["created"].startswith("2020-01-01")
    assert rows[unfinished.name]["status"] == "incomplete" and rows[unfinished.name]["rouge1"] is None
    assert list_runs(tmp_path / "missing") == []


def test_load_run_rejects_non_runs(tmp_path):
    with pytest.raises(RunError):
        load_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="not a run folder"):
        load_run(tmp_path / "empty")


def test_resolve_inside(tmp_path):
    root = tmp_path / "runs"
    (root / "a").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.mkdir()
    assert resolve_inside(root / "a", [root]) == (root / "a").resolve()
    assert resolve_inside(root, [root]) == root.resolve()
    assert resolve_inside(root / "not-yet" / "file.json", [root]).parent.name == "not-yet"
    for bad in (root / ".." / "secret", root / "a" / ".." / ".." / "secret", "/etc/passwd"):
        with pytest.raises(PathNotAllowedError, match="outside"):
            resolve_inside(bad, [root])
    os.symlink(outside, root / "link-out")
    with pytest.raises(PathNotAllowedError):
        resolve_inside(root / "link-out" / "x.json", [root])
    os.symlink(root / "a", root / "link-in")
    assert resolve_inside(root / "link-in", [root]) == (root / "a").resolve()
    assert resolve_inside(outside, [root, outside]) == outside.resolve()
    with pytest.raises(PathNotAllowedError):
        resolve_inside(root, [])


def test_loss_log_writes_nan_as_null(tmp_path):
    from types import SimpleNamespace

    from compression.progress import ProgressCallback

    log = tmp_path / "loss_log.jsonl"
    callback = ProgressCallback(log_path=log)
    state = SimpleNamespace(global_step=1, max_steps=2, epoch=0.5, is_world_process_zero=True)
    callback.on_log(None, state, None, logs={"loss": float("nan"), "learning_rate": 1e-3})
    line = log.read_text().strip()
    assert json.loads(line)["loss"] is None and "NaN" not in line
    assert dumps_json({"a": float("inf"), "b": [1.0, float("nan")]}) == '{"a": null, "b": [1.0, null]}'


def test_umask_is_read_once_and_applied(tmp_path):
    import os

    from compression import files

    path = files.atomic_write_text(tmp_path / "x.txt", "x")
    assert (path.stat().st_mode & 0o777) == 0o666 & ~files.UMASK
    assert os.umask(files.UMASK) == files.UMASK  # reading it did not change the process umask
