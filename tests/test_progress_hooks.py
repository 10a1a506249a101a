"""Progress hooks beyond the stage line: quantize auto's timing per copy, module scoring per
summary, the deployed (CTranslate2) copy's evaluation per summary, and how the live panel shows them."""

from __future__ import annotations

from compression import auto_quantize as aq


def test_auto_quantization_reports_each_copy_and_timing(tiny_t5_dir, tmp_path):
    calls = []
    aq.auto_quantization(tiny_t5_dir, device="cpu", candidates=("8bit",), native_bf16=False,
                         cache_path=tmp_path / "cache.json", rounds=2, max_new_tokens=2,
                         on_progress=lambda done, total, what: calls.append((done, total, what)))
    assert [(done, total) for done, total, _ in calls] == [(1, 3), (2, 3), (3, 3)]
    assert calls[0][2] == "made the 8bit copy" and "timed the 8bit copy" in calls[-1][2]
    calls.clear()  # answered from the cache: nothing is timed, nothing reported
    aq.auto_quantization(tiny_t5_dir, device="cpu", candidates=("8bit",), native_bf16=False,
                         cache_path=tmp_path / "cache.json", on_progress=lambda *a: calls.append(a))
    assert calls == []


def test_module_scoring_reports_each_summary(tiny_t5, byt5_tokenizer):
    from compression.modular import ModularModel, score_assembly, score_teacher
    from compression.modular.workflow import EvaluationSet
    from conftest import ARTICLES

    pairs = EvaluationSet(tuple(a for a, _ in ARTICLES[:5]), tuple(s for _, s in ARTICLES[:5]), "", 64, 16)
    modular = ModularModel(tiny_t5)
    for score in (lambda cb: score_teacher(modular, byt5_tokenizer, pairs, max_new_tokens=2, on_progress=cb),
                  lambda cb: score_assembly(modular, byt5_tokenizer, 2.0, "size", pairs, max_new_tokens=2,
                                            speed_samples=1, speed_repeats=1, on_progress=cb)):
        calls = []
        score(lambda done, total, calls=calls: calls.append((done, total)))
        assert calls and calls[-1] == (5, 5) and all(total == 5 for _, total in calls)
        assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_live_panel_shows_the_quantize_timing_with_eta():
    from components import train_panel

    stages = [{"kind": "stage", "stage": "evaluate"}, {"kind": "stage", "stage": "quantize", "message": "choosing"}]
    summaries = {"kind": "summaries", "model": "student", "done": 20, "total": 20, "elapsed_s": 8.0, "eta_s": 0.0}
    timing = {"kind": "quantize", "done": 2, "total": 6, "what": "timed the 8bit copy against float32",
              "elapsed_s": 10.0, "eta_s": 20.0}
    text = train_panel.progress_markdown(stages, [summaries, timing])
    assert "choosing the quantized copy: 2 / 6 (timed the 8bit copy against float32)" in text
    assert "ETA 0:00:20" in text and "summarizing" not in text
    later = dict(summaries, model="quantized", done=3, eta_s=17.0)  # then the quantized copy is evaluated
    text = train_panel.progress_markdown(stages, [summaries, timing, later])
    assert "**quantized**: 3 / 20" in text and "choosing the quantized copy" not in text


def test_deployed_evaluation_reports_each_summary(tiny_t5_dir, tmp_path):
    import pytest

    pytest.importorskip("ctranslate2")
    from compression.config import EvalArgs
    from compression.deploy import evaluate_deployed, export_ct2
    from conftest import ARTICLES

    folder = export_ct2(tiny_t5_dir, tmp_path / "deployed", quantization="int8", prefix="")
    documents, references = [a for a, _ in ARTICLES[:5]], [s for _, s in ARTICLES[:5]]
    args = EvalArgs(max_new_tokens=3, batch_size=2, bootstrap_samples=5, latency_samples=0)
    lengths = dict(prefix="", max_source_length=48, max_target_length=12, args=args, threads=1)
    calls = []
    watched = evaluate_deployed(folder, documents, references, on_progress=lambda d, t: calls.append((d, t)),
                                **lengths)
    assert calls and calls[-1] == (5, 5) and all(total == 5 for _, total in calls)
    assert [done for done, _ in calls] == sorted({done for done, _ in calls})  # growing, each count once
    # the same translator call, only asynchronous: the same summaries as without a watcher
    assert watched["predictions"] == evaluate_deployed(folder, documents, references, **lengths)["predictions"]


def test_live_panel_shows_the_deployed_copy_evaluation_with_eta():
    from components import train_panel

    stages = [{"kind": "stage", "stage": "quantize"},
              {"kind": "stage", "stage": "deploy", "message": "converting the student with CTranslate2 (int8)"}]
    quantized = {"kind": "summaries", "model": "quantized", "done": 20, "total": 20, "elapsed_s": 8.0, "eta_s": 0.0}
    text = train_panel.progress_markdown(stages, [quantized])  # converting: no stale count of another model
    assert "summarizing" not in text and "converting the student" in text
    deployed = dict(quantized, model="deployed", done=6, elapsed_s=3.0, eta_s=7.0)
    text = train_panel.progress_markdown(stages, [quantized, deployed])
    assert "summarizing with the **deployed copy (CTranslate2)**: 6 / 20 validation articles" in text
    assert "ETA 0:00:07" in text
