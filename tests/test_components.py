"""Dashboard handlers called directly as functions, on tiny models built in the tests.

No server and no browser: each handler gets an AppSettings and a Session like gradio would give it.
The pipeline is replaced by a fake where a test is about the handler's own logic (threading, cancel,
error display); tests/test_app_api.py runs the real pipeline through the server.
"""

from __future__ import annotations

import json

import gradio as gr
import pytest

from components import charts, model_panel, plan_panel, results_panel, runs_panel, train_panel
from components.feedback import GENERIC, positive_int, user_errors
from components.jobs import Job
from components.state import AppSettings, Session
from compression.errors import CompressionError, DatasetError, LayerSelectionError, PathNotAllowedError
from compression.layers import estimate_student, layer_footprint, shrink
from compression.load import describe_model
from conftest import ARTICLES, write_jsonl


@pytest.fixture
def settings(tmp_path):
    return AppSettings.create(tmp_path / "runs", [tmp_path], offline=True)


@pytest.fixture
def loaded(settings, tiny_t5_dir):
    session = Session()
    outputs = model_panel.load_base(settings, session, None, str(tiny_t5_dir), "byt5")
    return session, outputs


METRICS = {
    "base": {"params": 2_000_000, "size_mib": 8.0, "rouge1": 40.0, "rouge2": 20.0, "rougeL": 35.0, "rougeLsum": 36.0,
             "rouge": {k: {"precision": 50.0, "recall": 30.0, "fmeasure": v}
                       for k, v in (("rouge1", 40.0), ("rouge2", 20.0), ("rougeL", 35.0), ("rougeLsum", 36.0))},
             "rouge_ci": {"rouge1": [38.0, 42.0], "rouge2": [18.0, 22.0], "rougeL": [33.0, 37.0],
                          "rougeLsum": [34.0, 38.0]},
             "validation_loss": 2.5, "latency_ms": 40.0, "tokens_per_s": 900.0},
    "student": {"params": 1_000_000, "size_mib": 4.0, "rouge1": 36.0, "rouge2": 17.0, "rougeL": 31.5,
                "rougeLsum": 32.0, "rouge": {k: {"precision": 45.0, "recall": 28.0, "fmeasure": 1.0}
                                             for k in ("rouge1", "rouge2", "rougeL", "rougeLsum")},
                "validation_loss": 2.9, "latency_ms": 20.0, "tokens_per_s": 1800.0,
                "percent_of_base": {"rouge1": 90.0, "rouge2": 85.0, "rougeL": 90.0, "rougeLsum": 88.9}},
    "quantized": None,
}


# ---------------------------------------------------------------- panel 1: base model

def test_load_local_folder_shows_architecture_and_bounds_sliders(settings, loaded, tiny_t5):
    session, (info, encoder, decoder) = loaded
    facts = describe_model(tiny_t5)
    assert session.facts["params"] == facts["params"]
    assert session.model_source.endswith("tiny-t5")
    assert "encoder **4** layers · decoder **4** layers · d_model 32 · vocabulary 384" in info
    assert f"**{facts['params'] / 1e6:.2f} M** parameters" in info
    assert (encoder.maximum, encoder.value, encoder.minimum) == (4, 4, 1)
    assert (decoder.maximum, decoder.value) == (4, 2)


def test_load_refuses_folder_outside_allowed_roots(tmp_path, tiny_t5_dir):
    settings = AppSettings.create(tmp_path / "runs", [tmp_path / "runs"], offline=True)
    with pytest.raises(gr.Error, match="outside the folders"):
        model_panel.load_base(settings, Session(), None, str(tiny_t5_dir), "byt5")
    with pytest.raises(PathNotAllowedError):
        model_panel.resolve_source(settings, None, str(tmp_path / "runs" / ".." / "tiny-t5"))


def test_load_refuses_hub_id_offline_and_non_model_folder(settings, tmp_path):
    session = Session()
    with pytest.raises(gr.Error, match="offline"):
        model_panel.load_base(settings, session, "t5-small", "", "byt5")
    (tmp_path / "empty").mkdir()
    with pytest.raises(gr.Error, match="not a model folder"):
        model_panel.load_base(settings, session, None, str(tmp_path / "empty"), "byt5")
    assert session.facts is None  # a failed load leaves the session as it was


def test_offline_choices_hide_hub_ids(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    offline = model_panel.model_choices(AppSettings.create(tmp_path, offline=True))
    online = model_panel.model_choices(AppSettings(runs_dir=tmp_path, offline=False))
    assert all(value.startswith("preset:") for _, value in offline)
    assert ("preset: tiny (untrained)", "preset:tiny") in offline
    assert online[0][1] == "JulesBelveze/t5-small-headline-generator"


def test_preset_is_saved_once_and_labelled_untrained(settings, monkeypatch):
    import compression.load

    monkeypatch.setitem(compression.load.PRESETS, "test-nano",
                        dict(num_layers=2, d_ff=32, d_model=16, d_kv=4, num_heads=2))
    session = Session()
    info, encoder, decoder = model_panel.load_base(settings, session, "preset:test-nano", "", "byt5")
    assert "Untrained preset" in info
    assert session.model_source == str(settings.bases_dir / "preset-test-nano-byt5")
    assert (settings.bases_dir / "preset-test-nano-byt5" / "config.json").is_file()
    assert (encoder.maximum, decoder.maximum, decoder.value) == (2, 2, 1)


# ---------------------------------------------------------------- panel 2: shrink plan

@pytest.mark.parametrize("encoder,decoder", [(3, 1), ("1,3", "0,"), ("2,3", "3,"), (4, 4)])
def test_estimate_equals_real_student(tiny_t5, tiny_bart, encoder, decoder):
    for teacher in (tiny_t5, tiny_bart):
        footprint = layer_footprint(teacher)
        student = shrink(teacher, encoder, decoder, "spread")
        params, size = estimate_student(footprint, student.config.shrink["encoder_layers_kept"],
                                                    student.config.shrink["decoder_layers_kept"])
        facts = describe_model(student)
        assert params == facts["params"]
        assert size == pytest.approx(facts["size_mib"], abs=1e-9)


def test_update_plan_draws_kept_and_dropped_layers(settings, loaded, tiny_t5):
    session, _ = loaded
    figure, estimate = plan_panel.update_plan(settings, session, 3, 1, "alternate", "", "")
    kept, dropped = figure.data
    assert (kept.name, dropped.name) == ("kept", "dropped")
    assert list(kept.x) == [0, 1, 2, 0] and list(kept.y) == ["Encoder"] * 3 + ["Decoder"]
    assert list(dropped.x) == [3, 1, 2, 3]
    assert "encoder 4 → 3, decoder 4 → 1" in figure.layout.title.text
    student = describe_model(shrink(tiny_t5, 3, 1, "alternate"))
    assert f"{student['params'] / 1e6:.2f} M parameters" in estimate
    assert f"{student['size_mib']:.1f} MiB" in estimate


def test_custom_indices_and_bad_layer_text(settings, loaded):
    session, _ = loaded
    figure, estimate = plan_panel.update_plan(settings, session, 4, 4, "custom", "1, 3", "2")
    assert "decoder layers [2]" in estimate and "encoder layers [1, 3]" in estimate
    for bad, message in (("0,x", "whole numbers"), ("0,0", "repeat"), ("7", "out of range")):
        with pytest.raises(gr.Error, match=message):
            plan_panel.update_plan(settings, session, 4, 4, "custom", bad, "")
    with pytest.raises(gr.Error, match="at least 1"):
        plan_panel.update_plan(settings, session, 0, 2, "spread", "", "")


def test_plan_before_load_is_a_hint_not_an_error(settings):
    figure, estimate = plan_panel.update_plan(settings, Session(), 3, 3, "spread", "", "")
    assert "Load a base model" in estimate
    assert not figure.data


# ---------------------------------------------------------------- charts

def test_loss_curve_traces_and_labels():
    records = [{"kind": "stage", "stage": "train"},
               {"kind": "train", "step": 1, "loss": 5.0}, {"kind": "train", "step": 2, "loss": 4.0},
               {"kind": "eval", "step": 2, "eval_loss": 4.5}]
    figure = charts.loss_curve(records)
    assert [t.name for t in figure.data] == ["training loss", "validation loss"]
    assert list(figure.data[0].y) == [5.0, 4.0] and list(figure.data[1].x) == [2]
    assert figure.layout.title.text == "Loss during fine-tuning"
    assert figure.layout.xaxis.title.text == "optimizer step"
    assert figure.layout.yaxis.title.text == "loss (nats/token)"
    assert figure.layout.paper_bgcolor == "rgba(0,0,0,0)"
    assert not charts.loss_curve([]).data


def test_loss_curve_draws_kd_terms():
    records = [{"kind": "train", "step": 1, "loss": 5.0, "ce": 6.0, "kl": 4.5},
               {"kind": "train", "step": 2, "loss": 4.0, "ce": 5.0, "kl": 3.5}]
    figure = charts.loss_curve(records)
    assert [t.name for t in figure.data] == ["training loss", "KD term: label cross-entropy",
                                             "KD term: soft-target KL × T²"]
    assert list(figure.data[2].y) == [4.5, 3.5]


def test_rouge_and_validation_loss_and_size_bars():
    rouge = charts.rouge_bars(METRICS)
    assert [t.name for t in rouge.data] == ["Base (teacher)", "Student"]
    assert list(rouge.data[1].y) == [36.0, 17.0, 31.5]
    assert list(rouge.data[1].text) == ["90%", "85%", "90%"]
    assert [list(c) for c in rouge.data[0].customdata][0] == [50.0, 30.0]
    assert "precision" in rouge.data[0].hovertemplate and "recall" in rouge.data[0].hovertemplate
    assert list(rouge.data[0].error_y.array) == [2.0, 2.0, 2.0]
    assert rouge.layout.yaxis.title.text == "F1 (0-100)"

    loss = charts.validation_loss_bars(METRICS)
    assert list(loss.data[0].y) == [2.5, 2.9] and list(loss.data[0].text) == ["2.500", "2.900"]
    assert loss.layout.yaxis.title.text == "loss (nats/token)"

    size = charts.size_latency_bars(METRICS)
    assert [list(t.y) for t in size.data] == [[2.0, 1.0], [8.0, 4.0], [40.0, 20.0]]
    assert [a.text for a in size.layout.annotations] == ["Parameters (millions)", "Size on disk (MiB)",
                                                         "Latency (ms / summary)"]
    for empty in (charts.rouge_bars(None), charts.validation_loss_bars({}), charts.size_latency_bars(None)):
        assert not empty.data and empty.layout.title.text


def test_runs_charts():
    overlay = charts.loss_overlay({"a": [{"kind": "train", "step": 1, "loss": 3.0}],
                                   "b": [{"kind": "train", "step": 1, "loss": 2.0},
                                         {"kind": "eval", "step": 1, "eval_loss": 2.2}]})
    assert [t.name for t in overlay.data] == ["a · train", "b · train", "b · validation"]
    comparison = charts.runs_comparison({"a": METRICS, "b": {"student": METRICS["base"]}, "c": {}})
    assert [t.name for t in comparison.data] == ["a", "a", "b", "b"]
    assert list(comparison.data[1].y) == [2.9]


# ---------------------------------------------------------------- panel 3: data and training

def test_file_columns_and_guesses(tmp_path, settings):
    jsonl = write_jsonl(tmp_path / "pairs.jsonl", ARTICLES[:2])
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("headline,content\nA,B\n", encoding="utf-8")
    assert train_panel.file_columns(jsonl) == ["id", "document", "summary"]
    assert (train_panel.count_rows(jsonl), train_panel.count_rows(csv_path)) == (2, 1)
    text, summary = train_panel.columns_for_file(settings, str(csv_path))
    assert (text.value, summary.value, text.choices) == ("content", "headline", [("headline", "headline"),
                                                                                  ("content", "content")])
    (tmp_path / "bad.txt").write_text("x")
    with pytest.raises(gr.Error, match="unsupported file type"):
        train_panel.columns_for_file(settings, str(tmp_path / "bad.txt"))


def test_data_args_sources(settings, tiny_jsonl):
    train, validation = tiny_jsonl
    args = train_panel.data_args(settings, train_panel.UPLOAD, str(train), str(validation), "document", "summary",
                                 8, 4, 128, 32)
    assert (args.train_file, args.max_train_samples, args.max_source_length) == (str(train), 8, 128)
    with pytest.raises(DatasetError, match="upload a training file"):
        train_panel.data_args(settings, train_panel.UPLOAD, None, None, "document", "summary", 8, 4, 128, 32)
    with pytest.raises(DatasetError, match="offline"):
        train_panel.data_args(settings, next(iter(train_panel.HUB_DATASETS)), None, None, "a", "b", 8, 4, 128, 32)
    assert train_panel.HUB_DATASETS.keys().isdisjoint(train_panel.data_choices(settings))
    if settings.shared_dir is not None:
        xsum = train_panel.data_args(settings, train_panel.XSUM, None, None, None, None, None, 10, 256, 32)
        assert xsum.train_file.endswith("xsum/train.jsonl") and xsum.max_train_samples is None


def _form(tiny_jsonl, **overrides):
    """The Run form as the page hands it over: values keyed by RunConfig field name."""
    train, validation = tiny_jsonl
    form = {"shrink.encoder_layers": 2, "shrink.decoder_layers": 1, "shrink.strategy": "spread",
            "encoder_custom": "", "decoder_custom": "", "source": train_panel.UPLOAD,
            "data.train_file": str(train), "data.validation_file": str(validation), "data.text_column": "document",
            "data.summary_column": "summary", "data.max_train_samples": 8, "data.max_eval_samples": 4,
            "train.epochs": 1, "train.batch_size": 4, "train.learning_rate": 3e-4, "data.max_source_length": 64,
            "data.max_target_length": 16, "train.freeze_embeddings": False, "train.freeze_encoder": True,
            "quantize": "none", "eval.num_beams": 1, "eval.max_new_tokens": 8, "name": ""}
    form.update(overrides)
    return form


def _run(settings, session, form):
    return train_panel.run_training(settings, list(form), session, *form.values())


def test_build_run_config(settings, loaded, tiny_jsonl):
    session, _ = loaded
    config = train_panel.build_run_config(settings, session, _form(tiny_jsonl))
    assert (config.shrink.encoder_layers, config.shrink.decoder_layers, config.shrink.strategy) == (2, 1, "spread")
    assert config.model == session.model_source and config.train.freeze_encoder
    assert config.train.logging_steps == 1 and config.quantize == "none"
    assert config.output_dir.startswith(str(settings.runs_dir)) and config.output_dir.endswith("tiny-t5-e2d1")
    custom = train_panel.build_run_config(settings, session, _form(tiny_jsonl, **{
        "shrink.strategy": "custom", "decoder_custom": "3", "name": "My run"}))
    assert (custom.shrink.encoder_layers, custom.shrink.decoder_layers) == (None, "3,")
    assert custom.output_dir.endswith("-my-run") and custom.name == "My run"
    with pytest.raises(CompressionError, match="load a base model"):
        train_panel.build_run_config(settings, Session(), _form(tiny_jsonl))
    with pytest.raises(CompressionError, match="batch size"):
        train_panel.build_run_config(settings, session, _form(tiny_jsonl, **{"train.batch_size": 0}))
    with pytest.raises(LayerSelectionError, match="whole numbers"):
        train_panel.build_run_config(settings, session, _form(tiny_jsonl, **{"shrink.encoder_layers": 2.5}))
    with pytest.raises(CompressionError, match="unknown quantization '8-bit'"):
        train_panel.build_run_config(settings, session, _form(tiny_jsonl, quantize="8-bit"))
    assert config.method == "sft"


def test_build_run_config_for_kd(settings, loaded, tiny_jsonl):
    session, _ = loaded
    kd = {"method": "kd", "kd.alpha_ce": 0.5, "kd.alpha_kl": 0.5, "kd.alpha_hidden": 1.0, "kd.temperature": 3.0}
    config = train_panel.build_run_config(settings, session, _form(tiny_jsonl, **kd))
    assert config.method == "kd" and not config.prune_vocab
    assert (config.kd.alpha_ce, config.kd.alpha_kl, config.kd.alpha_hidden, config.kd.temperature) == (0.5, 0.5, 1.0, 3.0)
    with pytest.raises(CompressionError, match="temperature"):
        train_panel.build_run_config(settings, session, _form(tiny_jsonl, **{**kd, "kd.temperature": 0}))
    with pytest.raises(CompressionError, match="number"):
        train_panel.build_run_config(settings, session, _form(tiny_jsonl, **{**kd, "kd.alpha_ce": "a lot"}))
    pruned = train_panel.build_run_config(settings, session, _form(tiny_jsonl, prune_vocab=True))
    assert pruned.prune_vocab and pruned.method == "sft" and not pruned.quantize_wo
    smallest = train_panel.build_run_config(settings, session, _form(tiny_jsonl, prune_vocab=True, quantize_wo=True))
    assert smallest.prune_vocab and smallest.quantize_wo
    with pytest.raises(CompressionError, match="training method"):
        train_panel.build_run_config(settings, session, _form(tiny_jsonl, method="theseus"))


def _fake_result(config, status="complete"):
    return {"run_dir": config.output_dir, "status": status, "metrics": METRICS if status == "complete" else None,
            "summaries": [{"id": "0", "document": "A long article.", "reference": "Ref.", "base": "B",
                           "student": "S", "quantized": None}]}


def test_run_streams_progress_and_stores_the_result(settings, loaded, tiny_jsonl, monkeypatch):
    from compression import pipeline

    def fake_run_pipeline(config, *, on_progress=None, cancel=None, **_):
        on_progress({"kind": "stage", "stage": "train", "message": "fine-tuning"})
        for step in (1, 2):
            on_progress({"kind": "train", "step": step, "total_steps": 2, "epoch": step / 2, "loss": 3.0 - step,
                         "learning_rate": 1e-4, "tokens_per_s": 100.0, "elapsed_s": step, "eta_s": 2 - step})
        on_progress({"kind": "eval", "step": 2, "total_steps": 2, "epoch": 1.0, "eval_loss": 1.5})
        return _fake_result(config)

    monkeypatch.setattr(pipeline, "run_pipeline", fake_run_pipeline)
    session, _ = loaded
    steps = list(_run(settings, session, _form(tiny_jsonl)))
    markdown, figure = steps[-1]
    assert "Run complete" in markdown and "step **2 / 2**" in markdown and "validation loss 1.5000" in markdown
    assert [t.name for t in figure.data] == ["training loss", "validation loss"]
    assert session.result["metrics"] == METRICS and session.cancel is None
    headline, table, rouge, loss, size, summaries = results_panel.show_results(settings, session)
    assert "keeps **90%** of the base's ROUGE-1" in headline and "2.900" in headline
    assert list(table["ROUGE-1"]) == [40.0, 36.0]
    assert list(table["validation loss (nats/token)"]) == [2.5, 2.9]
    assert list(summaries.columns) == ["article", "reference", "base", "student", "quantized"]
    assert summaries.iloc[0].tolist() == ["A long article.", "Ref.", "B", "S", ""]


def test_cancel_stops_the_run(settings, loaded, tiny_jsonl, monkeypatch):
    from compression import pipeline

    def fake_run_pipeline(config, *, on_progress=None, cancel=None, **_):
        on_progress({"kind": "train", "step": 1, "total_steps": 100, "epoch": 0.01, "loss": 3.0})
        assert cancel.wait(timeout=30)
        return _fake_result(config, "cancelled")

    monkeypatch.setattr(pipeline, "run_pipeline", fake_run_pipeline)
    monkeypatch.setattr(train_panel, "POLL_SECONDS", 0.05)
    session, _ = loaded
    runner = _run(settings, session, _form(tiny_jsonl))
    next(runner)
    assert "Cancelling" in train_panel.cancel_training(settings, session)
    markdown, _ = list(runner)[-1]
    assert "Cancelled" in markdown and session.result["status"] == "cancelled"
    assert "cancelled" in results_panel.show_results(settings, session)[0]


def test_pipeline_errors_show_as_messages(settings, loaded, tiny_jsonl, monkeypatch):
    from compression import pipeline

    def failing(config, **_):
        raise DatasetError("validation.jsonl: no column 'text'")

    monkeypatch.setattr(pipeline, "run_pipeline", failing)
    session, _ = loaded
    with pytest.raises(gr.Error, match="no column 'text'"):
        list(_run(settings, session, _form(tiny_jsonl)))
    assert session.cancel is None


def test_unexpected_errors_are_generic():
    @user_errors
    def broken():
        raise KeyError("secret internals")

    with pytest.raises(gr.Error) as info:
        broken()
    assert info.value.message == GENERIC.format(kind="KeyError")


def test_positive_int_reads_form_fields():
    assert positive_int(8.0, "batch size") == 8 and positive_int("3", "beams") == 3
    assert positive_int("", "samples", allow_none=True) is None
    for bad in (None, 0, -2, 2.5, "many"):
        with pytest.raises(CompressionError, match="batch size"):
            positive_int(bad, "batch size")


# ---------------------------------------------------------------- long jobs (components.jobs)

def test_job_streams_stages_and_records_then_keeps_the_result():
    import threading

    emitted, go_on = threading.Event(), threading.Event()

    def work(emit):
        emit({"kind": "stage", "stage": "train"})
        emit({"kind": "train", "step": 1})
        emitted.set()
        go_on.wait(timeout=30)
        emit({"kind": "eval", "step": 1})
        return "done"

    job = Job(work, threading.Event(), name="test-job")
    records = job.records
    stream = job.stream(poll_seconds=0.01)
    next(stream)  # right after the start, before any event is read
    assert emitted.wait(timeout=30)
    next(stream)  # the first events arrived while the thread still runs
    assert job.stages == [{"kind": "stage", "stage": "train"}] and job.records == [{"kind": "train", "step": 1}]
    go_on.set()
    for _ in stream:  # until the thread ends
        pass
    assert job.records is records and [r["kind"] for r in records] == ["train", "eval"]
    assert job.result == "done" and not job.cancel.is_set()
    with pytest.raises(RuntimeError, match="already started"):
        next(job.stream())


def test_closing_a_job_stream_cancels_and_worker_errors_are_raised():
    import threading

    cancel = threading.Event()

    def slow(emit):
        assert cancel.wait(timeout=30)

    stream = Job(slow, cancel, name="slow-job").stream(poll_seconds=0.01)
    next(stream)
    stream.close()
    assert cancel.is_set()

    def failing(emit):
        emit({"kind": "stage", "stage": "load"})
        raise DatasetError("no column 'text'")

    job = Job(failing, threading.Event(), name="failing-job")
    with pytest.raises(DatasetError, match="no column"):
        list(job.stream(poll_seconds=0.01))
    assert job.stages == [{"kind": "stage", "stage": "load"}] and job.result is None


# ---------------------------------------------------------------- panel 5: article comparison

def test_compare_article_uses_the_run_models(settings, tiny_t5, byt5_tokenizer, monkeypatch):
    from compression import pipeline

    loads = []

    def fake_models(run_dir):
        loads.append(run_dir)
        return {"base": (tiny_t5, byt5_tokenizer), "student": (shrink(tiny_t5, 2, 1), byt5_tokenizer)}

    monkeypatch.setattr(pipeline, "load_run_models", fake_models)
    session = Session(run_dir="runs/x", result={"status": "complete", "config": {"data": {"max_source_length": 64}}})
    with pytest.raises(gr.Error, match="paste an article"):
        results_panel.compare_article(settings, session, "  ", 1, 8)
    base, student, quantized = results_panel.compare_article(settings, session, ARTICLES[0][0], 1, 8)
    assert isinstance(base, str) and base and isinstance(student, str) and student
    assert quantized == "(this run has no quantized model)"
    results_panel.compare_article(settings, session, ARTICLES[1][0], 2, 8)
    assert loads == ["runs/x"]  # models loaded once per run
    with pytest.raises(gr.Error, match="no finished run"):
        results_panel.compare_article(settings, Session(), ARTICLES[0][0], 1, 8)


# ---------------------------------------------------------------- panel 6: runs history

def _fake_run(settings, name, tiny_t5=None, tokenizer=None, loss=3.0):
    from compression.runs import RunFolder

    run = RunFolder.open(settings.runs_dir / name)
    run.write_json("config.json", {"model": "tiny", "shrink": {"encoder_layers": 2, "decoder_layers": 1, "strategy": "spread"},
                      "train": {"epochs": 1}})
    run.write_json("metrics.json", METRICS)
    (run.path / "loss_log.jsonl").write_text(json.dumps({"kind": "train", "step": 1, "loss": loss}) + "\n")
    run.write_summaries([{"id": "0", "document": "d", "reference": "r", "base": "b", "student": "s"}])
    if tiny_t5 is not None:
        tiny_t5.save_pretrained(run.path / "student")
        tokenizer.save_pretrained(run.path / "student")
    run.mark_complete()
    return run.path


def test_runs_table_compare_open_and_zip(settings, tiny_t5, byt5_tokenizer):
    _fake_run(settings, "20250101-000000-a", tiny_t5, byt5_tokenizer)
    _fake_run(settings, "20250102-000000-b", loss=2.0)
    table, picked, run = runs_panel.refresh_runs(settings)
    assert list(table["name"]) == ["20250102-000000-b", "20250101-000000-a"]
    first = table.iloc[0]
    assert (first["ROUGE-1"], first["% of base R-1"], first["val. loss (nats)"]) == (36.0, 90.0, 2.9)
    assert (first["status"], first["layers kept (enc/dec)"], first["epochs"]) == ("complete", "2/1", "1")
    assert run.value == "20250102-000000-b"

    overlay, comparison = runs_panel.compare_runs(settings, ["20250101-000000-a", "20250102-000000-b"])
    assert [t.name for t in overlay.data] == ["20250101-000000-a · train", "20250102-000000-b · train"]
    assert len(comparison.data) == 4
    with pytest.raises(gr.Error, match="two or more"):
        runs_panel.compare_runs(settings, ["20250101-000000-a"])

    session = Session()
    assert "Opened" in runs_panel.open_run(settings, session, "20250101-000000-a")
    assert session.result["metrics"] == METRICS and session.result["status"] == "complete"
    assert results_panel.show_results(settings, session)[5].iloc[0]["student"] == "s"

    import zipfile

    download = runs_panel.zip_student(settings, "20250101-000000-a")
    assert download.visible and download.value["orig_name"] == "20250101-000000-a-student.zip"
    assert "student/config.json" in zipfile.ZipFile(download.value["path"]).namelist()
    with pytest.raises(gr.Error, match="no saved student"):
        runs_panel.zip_student(settings, "20250102-000000-b")


def test_run_names_cannot_escape_and_push_needs_network_and_token(settings, monkeypatch):
    with pytest.raises(gr.Error, match="outside"):
        runs_panel.zip_student(settings, "../")
    with pytest.raises(gr.Error, match="no run named"):
        runs_panel.open_run(settings, Session(), "nope")
    with pytest.raises(gr.Error, match="offline"):
        runs_panel.push_student(settings, "x", "me/model", "hf_abc")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    online = AppSettings(runs_dir=settings.runs_dir, allowed_dirs=settings.allowed_dirs, offline=False)
    with pytest.raises(gr.Error, match="token"):
        runs_panel.push_student(online, "x", "me/model", "")
