"""benchmarks/methods.py end to end on a tiny teacher: every method (SFT, KD, pseudo-label KD,
modular) and shape, the table, the verdict, the files. One optimizer step per student; numbers are not checked, only what was built and written."""

from __future__ import annotations

import json

import pytest

from benchmarks import common, methods


def tiny_jsonl_rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_student_shapes():
    assert methods.student_shapes(4, 4) == [("2x", 2, 2), ("decoder-only", 4, 2), ("~3x", 2, 1)]
    assert methods.student_shapes(12, 12) == [("2x", 6, 6), ("decoder-only", 12, 6), ("~3x", 6, 3)]
    assert methods.student_shapes(2, 2) == [("2x", 1, 1), ("decoder-only", 2, 1)]  # ~3x would repeat 1/1


def test_ordering_verdict():
    def row(method, loss, e=2, d=2):
        return {"method": method, "shape": "2x", "encoder_layers": e, "decoder_layers": d,
                "validation_loss": loss, "rougeL": 0.0}

    text, checks = methods.ordering_verdict([row("teacher", 1.0, 4, 4), row("SFT", 3.0), row("KD", 2.5),
                                             row("modular (size-first)", 2.0)])
    assert checks[0]["holds"] and "holds at 1 of 1" in text
    assert [name for name, _, _ in checks[0]["ranking"]] == ["modular (size-first)", "KD", "SFT"]
    text, checks = methods.ordering_verdict([row("SFT", 2.0), row("KD", 2.5), row("modular (size-first)", 2.2)])
    assert not checks[0]["holds"] and "does not hold" in text


@pytest.fixture
def tiny_settings(tmp_path, monkeypatch, tiny_t5_dir, tiny_jsonl):
    """Settings on the tiny teacher and pairs, one optimizer step per training, results in tmp_path."""
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path / "results")
    train, validation = tiny_jsonl
    return methods.Settings(
        quick=True, teacher=str(tiny_t5_dir), train_file=str(train), validation_file=str(validation),
        cache_dir=tmp_path / "cache", max_steps=1, batch_size=4, max_eval_samples=4, max_source_length=48,
        max_target_length=16, max_new_tokens=4, latency_docs=1, latency_tokens=2, latency_repeats=1, png=False,
        device="cpu", logging_steps=1)


def test_benchmark_on_a_tiny_teacher(tmp_path, tiny_settings, tiny_jsonl):
    train, _ = tiny_jsonl
    payload = methods.benchmark(tiny_settings)

    shapes = {(row["method"], row["encoder_layers"], row["decoder_layers"]) for row in payload["rows"]}
    assert {(method, e, d) for method in ("SFT", "KD", "pseudo-labels") for e, d in ((2, 2), (4, 2), (2, 1))} \
        | {("teacher", 4, 4)} <= shapes
    # granularities {2, 4}: size-first 2x = 2/2 (two g2 modules per stack), speed-first 2x = 3/1;
    # 1.33x: size-first 3/3, speed-first 4/2; 2.67x: both priorities pick the same 2/1 plan
    assert {("modular (size-first)", 2, 2), ("modular (speed-first)", 3, 1), ("modular (size-first)", 3, 3),
            ("modular (speed-first)", 4, 2), ("modular (size = speed)", 2, 1)} <= shapes
    assert len(payload["rows"]) == 1 + 9 + 5
    teacher = payload["rows"][0]
    assert teacher["method"] == "teacher" and teacher["agreement"]["rougeL"] == 100.0  # its own summaries
    # the teacher summarized every training document once, for all three pseudo-label students
    assert payload["pseudo_labels"]["generated"] == len(tiny_jsonl_rows(train)) and not payload["pseudo_labels"]["cached"]
    assert payload["pseudo_labels"]["pseudo"] + payload["pseudo_labels"]["dropped_empty"] == payload["train_pairs"]
    sft = next(r for r in payload["rows"] if r["method"] == "SFT" and r["encoder_layers"] == 2
               and r["decoder_layers"] == 2)
    size_first = next(r for r in payload["rows"] if r["method"] == "modular (size-first)" and r["encoder_layers"] == 2)
    assert sft["params"] == size_first["params"]  # one module = one layer: equal shapes, equal sizes
    assert size_first["replaced"] == ["encoder.g2.s0", "encoder.g2.s2", "decoder.g2.s0", "decoder.g2.s2"]
    assert all(r["speedup"] > 0 and r["validation_loss"] > 0 for r in payload["rows"])
    # the modules train once, for the budget of the three SFT students they stand in for
    assert payload["modular"]["steps"] == 3 and set(payload["modular"]["eval_loss_by_granularity"]) == {"g2", "g4"}
    assert len(payload["checks"]) == 3 and all(c["has_modular"] for c in payload["checks"])

    assert [row["baseline"][:4] for row in methods.headline(payload)] == ["SFT "] * 3
    assert methods.table(payload).startswith("method ")

    results = tmp_path / "results"
    stored = json.loads((results / "methods.json").read_text())
    assert stored["results"]["mode"] == "quick" and len(stored["results"]["rows"]) == 15
    markdown = (results / "methods.md").read_text()
    assert "| method | shape | enc | dec |" in markdown and "| agree R-L |" in markdown and "Paper's ordering modular ≥ KD ≥ SFT" in markdown
    html = (results / "methods.html").read_text()
    assert "modular (speed-first)" in html and "Teacher" in html


def test_modular_ablation_trains_one_module_set_per_objective(tmp_path, tiny_settings):
    payload = methods.modular_ablation(tiny_settings, {"all": (1.0, 1.0, 1.0), "CE only": (1.0, 0.0, 0.0)})

    assert [row["objective"] for row in payload["rows"]] == ["all", "CE only"]
    assert payload["rows"][1]["alpha_attention"] == 0.0 and payload["max_steps"] == 3
    row = payload["rows"][0]
    # per granularity's full replacement, and both priorities at the three ratios of a 4/4 teacher
    assert {"full g2", "full g4", "size-first 2.00x (2/2)", "speed-first 2.00x (3/1)",
            "size-first 2.67x (2/1)"} <= set(row)
    assert all(value > 0 for key, value in row.items() if "first" in key or key.startswith("full"))
    assert "| objective |" in (tmp_path / "results" / "methods-modular-ablation.md").read_text()
