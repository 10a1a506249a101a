"""benchmarks.common and the suite runner: smoke tests on trivial callables (never timings)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from benchmarks import common, run


def test_alternate_runs_a_then_b_and_takes_reported_seconds():
    calls = []

    def a():
        calls.append("a")
        return 2.0

    def b():
        calls.append("b")
        return 1.0 if len(calls) < 4 else 4.0

    result = common.alternate(a, b, repeats=3)
    assert calls == ["a", "b"] * 3
    assert result["a"] == [2.0, 2.0, 2.0] and result["b"] == [1.0, 4.0, 4.0]
    assert result["ratio_median"] == 0.5 and result["ratio_min"] == 0.5 and result["ratio_max"] == 2.0
    assert result["a_median"] == 2.0 and result["b_median"] == 4.0


def test_alternate_times_callables_that_return_none():
    result = common.alternate(lambda: None, lambda: None, repeats=2)
    assert len(result["a"]) == len(result["b"]) == 2 and all(t >= 0 for t in result["a"] + result["b"])
    with pytest.raises(ValueError):
        common.alternate(lambda: None, lambda: None, repeats=0)


def test_rotate_shifts_the_order_every_round_and_keeps_reported_seconds():
    calls = []

    def arm(name, seconds):
        def run():
            calls.append(name)
            return seconds
        return run

    times = common.rotate({"x": arm("x", 1.0), "y": arm("y", 2.0), "z": arm("z", None)}, rounds=4)
    assert calls == ["x", "y", "z", "y", "z", "x", "z", "x", "y", "x", "y", "z"]
    assert list(times) == ["x", "y", "z"]
    assert common.rotated(["x", "y", "z"], 4) == ["y", "z", "x"] and common.rotated([], 2) == []
    assert times["x"] == [1.0] * 4 and times["y"] == [2.0] * 4
    assert len(times["z"]) == 4 and all(t >= 0 for t in times["z"])
    with pytest.raises(ValueError):
        common.rotate({"x": arm("x", 1.0)}, rounds=0)
    with pytest.raises(ValueError):
        common.rotate({}, rounds=1)


def test_time_call_warms_up_first():
    calls = []
    times = common.time_call(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5 and len(times) == 3


def test_format_table_aligns_and_fills_missing():
    text = common.format_table([{"name": "a", "x": 1234.5, "n": 3}, {"name": "bb", "x": 0.5}], ["name", "x", "n"])
    lines = text.splitlines()
    assert lines[0].split() == ["name", "x", "n"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].split() == ["a", "1,234", "3"] and lines[3].split() == ["bb", "0.500", "-"]
    assert len({len(line) for line in lines[:3]}) == 1  # aligned columns
    markdown = common.markdown_table([{"name": "a", "x": 2.0}], ["name", "x"])
    assert markdown.splitlines() == ["| name | x |", "|---|---|", "| a | 2.00 |"]


def test_write_result_is_json_with_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    path = common.write_result("demo", {"value": 1.5, "bad": float("nan"), "items": (1, 2)})
    data = json.loads(path.read_text())
    assert path == tmp_path / "demo.json"
    assert data["results"] == {"value": 1.5, "bad": None, "items": [1, 2]}
    machine = data["machine"]
    assert {"cpu", "cpu_count", "ram_gib", "gpu", "isa", "torch", "transformers", "date"} <= set(machine)
    assert machine["cpu_count"] >= 1
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    common.write_result("demo", {"value": 2}, "a | b\n1 | 2")
    assert (tmp_path / "demo.md").read_text() == "```\na | b\n1 | 2\n```\n"


def test_xsum_pairs_without_shared_raises(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "XSUM_DIR", tmp_path / "absent")
    with pytest.raises(common.SharedDataMissing, match="shared/data/xsum"):
        common.xsum_pairs("train")


def test_runner_skips_missing_modules_and_writes_summary(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(run, "MODULES", ("does_not_exist",))
    assert run.main(["--quick"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())["results"]
    assert summary["quick"] is True
    assert summary["modules"] == {"does_not_exist": {"status": "skipped (module missing)"}}
    assert "(no results)" in (tmp_path / "summary.md").read_text()
    assert run.main([]) == 0  # the full mode writes beside the quick tables, under full/
    assert json.loads((tmp_path / "full" / "summary.json").read_text())["results"]["quick"] is False


def test_runner_only_keeps_other_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    row = {"benchmark": "B", "measure": "m", "result": "1", "baseline": "2", "ratio": "2x"}
    common.write_result("summary", {"quick": True, "modules": {"size": {"status": "ok", "headline": [row]}}})
    monkeypatch.setattr(run, "MODULES", ("size", "does_not_exist"))
    assert run.main(["--quick", "--only", "does_not_exist"]) == 0
    modules = json.loads((tmp_path / "summary.json").read_text())["results"]["modules"]
    assert list(modules) == ["size", "does_not_exist"] and modules["size"]["headline"] == [row]
    assert "| B | m | 1 | 2 | 2x |" in (tmp_path / "summary.md").read_text()


def test_run_child_returns_the_reported_payload():
    import sys

    code = "from benchmarks import common; print('noise'); common.report({'x': 1.5, 'y': [1, 2]})"
    assert common.run_child([sys.executable, "-c", code], env=common.child_env()) == {"x": 1.5, "y": [1, 2]}
    with pytest.raises(RuntimeError, match="failed"):
        common.run_child([sys.executable, "-c", "raise SystemExit(3)"])


def test_summary_names_each_modules_machine():
    from benchmarks import run

    here = common.machine_info()
    other = dict(here, cpu="Other CPU", date="2026-01-01T00:00:00+00:00")
    row = {"benchmark": "B", "measure": "m", "result": "1", "baseline": "2", "ratio": "2x"}
    same = run.summary_markdown({"machine": here, "quick": True, "modules": {
        "finetune": {"status": "ok", "headline": [row], "machine": here}}})
    assert same.startswith(f"Measured with `python -m benchmarks --quick` (quick mode) on {here['cpu']} (")
    mixed = run.summary_markdown({"machine": here, "quick": False, "modules": {
        "finetune": {"status": "ok", "headline": [row], "machine": other},
        "size": {"status": "ok", "headline": [row], "machine": here},
        "scaling": {"status": "ok", "headline": [row], "machine": other}}})
    header = mixed.splitlines()[0]
    assert "module by module: finetune, scaling on Other CPU (" in header and "2026-01-01" in header
    assert f"; size on {here['cpu']} (" in header


def test_step_profile_groups_a_real_step_and_times_dropout(shared_dir, monkeypatch):
    """benchmarks.step_profile on a short batch: every forward/backward operator lands in one group
    (the groups add up to the total), dropout's masks are found, the no-dropout model really has
    every dropout probability at 0, and the three dropout arms are timed. Structure only, no timing is
    asserted."""
    from benchmarks import step_profile

    monkeypatch.setattr(step_profile, "SOURCE_LENGTH", 32)
    monkeypatch.setattr(step_profile, "TARGET_LENGTH", 8)
    monkeypatch.setattr(step_profile, "BATCH_SIZE", 2)
    result = step_profile.profile_step(steps=1)
    groups = {row["group"]: row["ms_per_step"] for row in result["groups"]}
    assert abs(sum(groups.values()) - result["total_self_ms"]) < 1e-6
    assert groups["dropout random masks"] > 0 and groups["linear-layer and lm_head matmuls (mm)"] > 0
    assert abs(sum(row["percent"] for row in result["groups"]) - 100) < 1e-6
    model, _ = common.tiny_teacher()
    step_profile._no_dropout(model)
    probabilities = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    probabilities += [m.dropout for m in model.modules() if isinstance(getattr(m, "dropout", None), float)]
    assert probabilities and not any(probabilities)
    cost = step_profile.dropout_cost(steps=1, rounds=1)  # three arms, one step each
    assert {"with_dropout_s", "fast_masks_s", "without_dropout_s", "ratio", "fast_ratio", "fast_speedup"} <= cost.keys()


def test_cpu_kind_avx2_limits_every_library_and_keeps_its_results_apart():
    """benchmarks.cpu_kind: the child sees AVX2 code paths in torch, no native bf16 in the project's
    probe, and writes under results/cpu-kind-avx2 with the limit in its machine facts."""
    import subprocess
    import sys

    from benchmarks import cpu_kind

    env = cpu_kind.kind_env("avx2", {"PYTHONPATH": "elsewhere"})
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["CT2_FORCE_CPU_ISA"] == "AVX2"
    assert env["ONEDNN_MAX_CPU_ISA"] == "AVX2" and env["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"
    assert env["PYTHONPATH"].split(os.pathsep)[1:] == ["elsewhere"]
    with pytest.raises(ValueError, match="avx2"):
        cpu_kind.kind_env("sse2")
    probe = ("import json, torch; from benchmarks import common; from compression.device import cpu_has_native_bf16; "
             "m = common.machine_info(); print(json.dumps([torch.backends.cpu.get_cpu_capability(), "
             "cpu_has_native_bf16(), common.RESULTS_DIR.name, m['cpu_kind_limit'], common.machine_note(m)]))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=common.ROOT, env=cpu_kind.kind_env("avx2"),
                          capture_output=True, text=True, timeout=300, check=True)
    capability, native_bf16, results_dir, limit, note = json.loads(done.stdout.splitlines()[-1])
    assert (capability, native_bf16, results_dir, limit) == ("AVX2", False, "cpu-kind-avx2", "avx2")
    assert "limited to AVX2 code paths" in note
    assert cpu_kind.main(["sse2", "benchmarks.deploy"]) == 2


def test_deploy_quality_pairs_flag(monkeypatch, tmp_path):
    """``--quality-pairs`` picks how many validation pairs the quality table scores ('all': every
    one, under its own result name) and is refused where it would be ignored."""
    from benchmarks import deploy

    calls = []
    monkeypatch.setattr(deploy, "run_quality", lambda quick, teacher, pairs: calls.append((quick, pairs)))
    monkeypatch.setattr(common, "use_results_dir", lambda quick: tmp_path)
    assert deploy.main(["--quality-only"]) == 0
    assert deploy.main(["--quality-only", "--quality-pairs", "all"]) == 0
    assert deploy.main(["--quality-only", "--quick", "--quality-pairs", "300"]) == 0
    assert calls == [(False, None), (False, "all"), (True, 300)]
    for argv in (["--quality-only", "--quality-pairs", "0"], ["--quality-pairs", "all"]):
        with pytest.raises(SystemExit) as stop:
            deploy.main(argv)
        assert stop.value.code == 2


def test_deploy_t5_base_shape_section(monkeypatch, tmp_path):
    """``--shape t5-base`` runs only the t5-base section and ``--headline-only`` only the headline
    pairs (each refused with a flag it would ignore); the t5-base pairs reach the printed report and
    the suite's headline rows, against the 12/12 base; a headline-only report has no speed table."""
    from benchmarks import deploy

    calls = []
    monkeypatch.setattr(deploy, "run_base_shape", lambda: calls.append("t5-base"))
    monkeypatch.setattr(deploy, "run", lambda quick, teacher: calls.append("all"))
    monkeypatch.setattr(deploy, "run_headline", lambda quick: calls.append(("headline", quick)))
    monkeypatch.setattr(common, "use_results_dir", lambda quick: tmp_path)
    assert deploy.main(["--shape", "t5-base"]) == 0
    assert deploy.main(["--headline-only"]) == 0
    assert deploy.main(["--headline-only", "--quick"]) == 0
    assert calls == ["t5-base", ("headline", False), ("headline", True)]
    for argv in (["--shape", "t5-base", "--quick"], ["--shape", "t5-base", "--quality-only"],
                 ["--shape", "t5-base", "--headline-only"], ["--headline-only", "--quality-only"],
                 ["--headline-only", "--teacher", str(tmp_path)],
                 ["--shape", "t5-small"]):
        with pytest.raises(SystemExit) as stop:
            deploy.main(argv)
        assert stop.value.code == 2
    pair = {"model": "6/6", "variant": "CT2 int8", "beams": 1, "batch": 16, "threads": 2, "base_ms_per_sample": 1200.0,
            "ms_per_sample": 200.0, "speedup": 6.0, "speedup_min": 5.5, "speedup_max": 6.5}
    section = {"pairs": [pair], "size": [{"model": "12/12 (base)", "variant": "PyTorch fp32", "mib": 850.0,
                                          "of_base": 1.0}],
               "new_tokens": 64, "max_source_length": 512, "singles": 4, "rounds": 3, "cores": 2}
    text = deploy.base_shape_report(section)
    assert "PyTorch fp32 12/12" in text and "6/6" in text and "850" in text
    payload = {"headline": [], "size": [{"model": "6/6 (base)", "variant": "PyTorch fp32", "mib": 230.8,
                                         "of_base": 1.0}], "t5_base": section}
    rows = deploy.headline(payload | {"t5_base": section | {"pairs": [pair, pair | {"beams": 4, "batch": 1}]}})
    assert rows[1]["benchmark"] == "Deployed CTranslate2 int8 6/6, t5-base shape, beam 4, batch 1"
    only = {"headline": [{"model": "3/3", "batch": 1, "threads": 2, "speedup": 4.3, "speedup_min": 3.8,
                          "speedup_max": 4.5}], "speed": [], "size": payload["size"], "new_tokens": 64,
            "max_source_length": 512}
    text = deploy.report(only)
    assert "speedup over PyTorch fp32 6/6 (same setting" not in text
    assert "64 new tokens, sources cut to 512 tokens" in text and "4.30x (3.80-4.50); goal >= 4.0x: met" in text
    rows = deploy.headline(payload)
    assert rows == [{"benchmark": "Deployed CTranslate2 int8 6/6, t5-base shape, greedy, batch 16",
                     "measure": "ms per sample", "result": "200.0", "baseline": "1,200.0 (PyTorch fp32 12/12)",
                     "ratio": "6.00x (5.50-6.50)"}]


def test_deploy_table_only_flag(monkeypatch, tmp_path):
    """``--table-only`` runs only the speed table (rounds: ``--rounds``, default 3, quick 1), refused
    beside the other parts; its report has no headline section."""
    from benchmarks import deploy

    calls = []
    monkeypatch.setattr(deploy, "run_table", lambda quick, rounds: calls.append((quick, rounds)))
    monkeypatch.setattr(common, "use_results_dir", lambda quick: tmp_path)
    assert deploy.main(["--table-only"]) == 0
    assert deploy.main(["--table-only", "--quick"]) == 0
    assert deploy.main(["--table-only", "--rounds", "1"]) == 0
    assert calls == [(False, 3), (True, 1), (False, 1)]
    for argv in (["--rounds", "2"], ["--table-only", "--rounds", "0"], ["--table-only", "--headline-only"],
                 ["--table-only", "--quality-only"], ["--table-only", "--teacher", str(tmp_path)]):
        with pytest.raises(SystemExit) as stop:
            deploy.main(argv)
        assert stop.value.code == 2
    row = {"model": "3/3", "variant": "CT2 int8", "beams": 1, "batch": 1, "threads": 2, "ms_per_sample": 100.0,
           "speedup": 4.5}
    text = deploy.report({"headline": [], "speed": [row], "size": [{"model": "6/6 (base)", "variant": "PyTorch fp32",
                                                                    "mib": 230.8, "of_base": 1.0}],
                          "new_tokens": 64, "max_source_length": 512})
    assert "speedup over PyTorch fp32 6/6 (same setting" in text and "Headline" not in text and "4.5" in text


def test_finetune_table_separates_the_projects_validations_from_its_training():
    """The project's timed epoch includes its in-training validations, which Seq2SeqTrainer's defaults
    do not run: the summary also gives the training-alone ratio (real tokens over training seconds)."""
    from benchmarks import finetune

    def row(variant, seconds, evaluation=0.0):
        return {"variant": variant, "seconds": seconds, "cpu_seconds": seconds, "real_tokens_per_s": 1000 / seconds,
                "training_seconds": seconds - evaluation, "training_tokens_per_s": 1000 / (seconds - evaluation),
                "evaluation_seconds": evaluation, "padding_fraction": 0.1, "train_loss": 9.0,
                "validation_loss": 8.6, "gflops_per_s": 80.0, "peak_rss_mib": 2000.0}

    runs = [row("trainer_default", 100.0), row("project_fp32", 60.0, evaluation=10.0)]
    summary = finetune._summary(runs, ("trainer_default", "project_fp32"))
    project = summary[1]
    assert project["speedup_vs_default"] == pytest.approx(100 / 60)
    assert project["training_only_vs_default"] == pytest.approx(2.0) and project["evaluation_seconds"] == 10.0
    assert "training_only_vs_default" not in summary[0]
    payload = {"settings": {"train_pairs": 699, "rounds": 1}, "gemm_gflops": {"peak": {"fp32": 200.0, "bf16": None}},
               "flop_formula": "exact", "summary": summary, "runs": runs}
    text = finetune.table(payload)
    assert "project_fp32: 10.0 s of its 60.0 s are its in-training validations" in text
    assert "training alone 2.00x (2.00-2.00)" in text and "bf16 - GFLOP/s" in text
