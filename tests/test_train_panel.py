"""Dashboard: panel 3: data and training (split from the former tests/test_components.py)."""

from __future__ import annotations

import gradio as gr
import pytest

from components import results_panel, runs_panel, train_panel
from components.feedback import GENERIC, positive_int, user_errors
from components.state import AppSettings, Session
from compression.errors import CompressionError, DatasetError, LayerSelectionError
from conftest import ARTICLES, write_jsonl
from conftest import RUN_METRICS as METRICS

# ---------------------------------------------------------------- panel 3: data and training

def test_file_columns_and_guesses(tmp_path, settings):
    jsonl = write_jsonl(tmp_path / "pairs.jsonl", ARTICLES[:2])
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("headline,content\nA,B\n", encoding="utf-8")
    assert train_panel.file_columns(jsonl) == ["id", "document", "summary"]
    assert (train_panel.count_rows(jsonl), train_panel.count_rows(csv_path)) == (2, 1)
    text, summary, pairs = train_panel.columns_for_file(settings, str(csv_path), 1000)
    assert (text.value, summary.value, text.choices) == ("content", "headline", [("headline", "headline"),
                                                                                  ("content", "content")])
    assert (pairs.value, pairs.maximum) == (1, 1)  # "pairs to train on" bounded by the file
    semicolons = tmp_path / "semi.csv"
    semicolons.write_text("document;summary\nA long, long text.;Short.\nMore text, here.;Also short.\n")
    assert train_panel.file_columns(semicolons) == ["document", "summary"]
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


def test_source_length_sliders_reach_16k_only_for_a_longt5_base(settings, loaded, loaded_longt5):
    t5, _ = loaded
    longt5, _ = loaded_longt5
    before = train_panel.source_length_slider(Session(), 4096)
    assert (before.maximum, before.value) == (1024, 1024) and "square of the length" in before.info
    short = train_panel.bound_source_length(t5, 16384)
    assert (short.maximum, short.value) == (1024, 1024)
    assert "T5 attends to every source token" in short.info and "LongT5" in short.info
    long = train_panel.bound_source_length(longt5, 2048)
    assert (long.maximum, long.value) == (16384, 2048) and "linearly" in long.info
    # choosing the long-input preset asks for 16,384 source tokens: given with LongT5, held at 1,024 otherwise
    *_, source_slider, target_slider = train_panel.on_source(train_panel.XSUM_LONG, longt5)
    assert (source_slider.value, source_slider.maximum, target_slider.value) == (16384, 16384, 512)
    *_, source_slider, _ = train_panel.on_source(train_panel.XSUM_LONG, t5)
    assert (source_slider.value, source_slider.maximum) == (1024, 1024) and "LongT5" in source_slider.info
    *_, source_slider, _ = train_panel.on_source(train_panel.DEBIAN, longt5)
    assert (source_slider.value, source_slider.maximum) == (256, 16384)
    assert train_panel.preset_lengths(train_panel.XSUM_LONG) == (1024, 512)  # the page's start, before a load


def test_long_input_stress_test_is_offered_by_name(settings):
    assert "stress test" in train_panel.XSUM_LONG
    args = train_panel.data_args(settings, train_panel.XSUM_LONG, None, None, None, None, 8, 2, 16384, 512) \
        if settings.shared_dir is not None else None
    if args is None:
        assert train_panel.XSUM_LONG not in train_panel.data_choices(settings)
        pytest.skip("../shared is absent")
    assert train_panel.XSUM_LONG in train_panel.data_choices(settings)
    # by the preset's name, so loading builds the concatenated long pairs (a train file would not)
    assert (args.dataset, args.train_file, args.max_source_length, args.max_target_length) == \
        ("xsum-long", None, 16384, 512)
    with pytest.raises(CompressionError, match="<= 16384"):
        train_panel.data_args(settings, train_panel.XSUM_LONG, None, None, None, None, 8, 2, 20000, 512)


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
    assert config.train.label_smoothing == 0.0  # the field's default when the page sends none
    smoothed = train_panel.build_run_config(settings, session, _form(tiny_jsonl, **{"train.label_smoothing": 0.1}))
    assert smoothed.train.label_smoothing == 0.1
    with pytest.raises(CompressionError, match="label smoothing must be >= 0 and < 1"):
        train_panel.build_run_config(settings, session, _form(tiny_jsonl, **{"train.label_smoothing": 1}))
    with pytest.raises(CompressionError, match="training method"):
        train_panel.build_run_config(settings, session, _form(tiny_jsonl, method="theseus"))
    # the deployed copy: on by default in int8; float32 (the student's summaries exactly) or none at all
    assert config.deploy and config.deploy_quantization == "int8"
    exact = train_panel.build_run_config(settings, session, _form(tiny_jsonl, deploy_quantization="float32"))
    assert exact.deploy and exact.deploy_quantization == "float32"
    assert not train_panel.build_run_config(settings, session, _form(tiny_jsonl, deploy=False)).deploy
    with pytest.raises(CompressionError, match="deployed-copy quantization"):
        train_panel.build_run_config(settings, session, _form(tiny_jsonl, deploy_quantization="int4"))


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
    assert session.result["metrics"] == METRICS and settings.jobs.get(session.job_id).status == "complete"
    headline, table, rouge, loss, size, summaries, _ = results_panel.show_results(settings, session)
    assert "keeps **90%** of the base's ROUGE-1" in headline and "2.900" in headline
    assert list(table["ROUGE-1"]) == [40.0, 36.0]
    assert list(table["validation loss (nats/token)"]) == [2.5, 2.9]
    assert list(summaries.columns) == ["article", "reference", "base", "student", "quantized", "deployed"]
    assert summaries.iloc[0].tolist() == ["A long article.", "Ref.", "B", "S", "", ""]


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
    assert train_panel.cancel_training(settings, session) is not None  # twice: a warning, nothing else
    markdown, _ = list(runner)[-1]
    assert "Cancelled" in markdown and session.result["status"] == "cancelled"
    assert "cancelled" in results_panel.show_results(settings, session)[0]


def test_a_run_outlives_its_watcher_and_another_tab_reattaches(settings, loaded, tiny_jsonl, monkeypatch):
    import threading
    from types import SimpleNamespace

    from compression import pipeline

    gate = threading.Event()

    def fake_run_pipeline(config, *, on_progress=None, cancel=None, **_):
        on_progress({"kind": "train", "step": 1, "total_steps": 2, "epoch": 0.5, "loss": 2.0})
        assert gate.wait(timeout=30)
        on_progress({"kind": "train", "step": 2, "total_steps": 2, "epoch": 1.0, "loss": 1.0})
        return _fake_result(config)

    monkeypatch.setattr(pipeline, "run_pipeline", fake_run_pipeline)
    monkeypatch.setattr(train_panel, "POLL_SECONDS", 0.05)
    session, _ = loaded
    session.visitor = "visitor-a"
    runner = _run(settings, session, _form(tiny_jsonl))
    next(runner)
    runner.close()  # the tab was closed: gradio closes the generator
    job = settings.jobs.get(session.job_id)
    assert not job.cancel_event.is_set() and job.status in ("queued", "running")
    gate.set()
    # a second tab opened with ?run=<id> reattaches and sees the completion
    other = Session()
    request = SimpleNamespace(query_params={"run": job.id}, session_hash="tab-2")
    visitor, line = train_panel.attach_job(settings, other, "", request)
    assert visitor and visitor != "visitor-a" and other.job_id == job.id and "Reattached" in line
    markdown, _ = list(train_panel.watch_job(settings, other))[-1]
    assert "Run complete" in markdown and "step **2 / 2**" in markdown and other.result["metrics"] == METRICS
    # the other visitor cannot cancel it; the owner reopening the page finds the same job
    assert train_panel.cancel_training(settings, other, request) is not None and not job.cancel_event.is_set()
    again = Session()
    train_panel.attach_job(settings, again, "visitor-a", SimpleNamespace(query_params={}, session_hash="tab-3"))
    assert again.job_id == job.id


def test_pipeline_errors_show_as_messages(settings, loaded, tiny_jsonl, monkeypatch):
    from compression import pipeline

    def failing(config, **_):
        raise DatasetError("validation.jsonl: no column 'text'")

    monkeypatch.setattr(pipeline, "run_pipeline", failing)
    session, _ = loaded
    markdown, _ = list(_run(settings, session, _form(tiny_jsonl)))[-1]
    assert "Failed" in markdown and "no column 'text'" in markdown
    assert settings.jobs.get(session.job_id).status == "failed"


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


def test_public_guard_rails(tmp_path, loaded, tiny_jsonl, monkeypatch):
    from types import SimpleNamespace

    from compression import pipeline
    from compression.guard import PublicLimits, RunOwners, enforce_quota

    limits = PublicLimits(max_train_pairs=8, max_eval_pairs=4, max_epochs=2, max_jobs_per_visitor=1)
    public = AppSettings.create(tmp_path / "runs", [tmp_path], offline=True, limits=limits)
    session, _ = loaded
    session.visitor = "visitor-a"
    with pytest.raises(gr.Error, match="at most 8 pairs"):  # pairs to train on, over the limit
        list(_run(public, session, _form(tiny_jsonl, **{"data.max_train_samples": 9})))
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("2*"))

    monkeypatch.setattr(pipeline, "run_pipeline", lambda config, **_: (
        __import__("pathlib").Path(config.output_dir).mkdir(parents=True) or _fake_result(config)))
    markdown, _ = list(_run(public, session, _form(tiny_jsonl)))[-1]
    assert "Run complete" in markdown
    mine = __import__("pathlib").Path(session.run_dir).name
    assert RunOwners(public.runs_dir).read() == {mine: "visitor-a"}
    (public.runs_dir / "20200101-000000-example").mkdir()  # the operator's example (no owner)
    other = Session(visitor="visitor-b")
    names = list(runs_panel.refresh_runs(public, other, SimpleNamespace(session_hash="x"))[0]["name"])
    assert names == ["20200101-000000-example"]  # not visitor-a's run
    with pytest.raises(gr.Error, match="no run named"):
        runs_panel.open_run(public, other, mine)
    assert mine in list(runs_panel.refresh_runs(public, session)[0]["name"])
    # disk quota: the oldest visitor runs go first, never the operator's
    (public.runs_dir / mine / "weights.bin").write_bytes(b"x" * 2**20)
    assert enforce_quota(public.runs_dir, 0.5) == [mine]
    assert (public.runs_dir / "20200101-000000-example").is_dir()


def test_progress_shows_summaries_with_eta():
    stages = [{"kind": "stage", "stage": "train"}, {"kind": "stage", "stage": "evaluate", "message": "evaluating"}]
    records = [{"kind": "summaries", "model": "student", "done": 4, "total": 20, "elapsed_s": 8.0, "eta_s": 32.0}]
    text = train_panel.progress_markdown(stages, records)
    assert "**student**: 4 / 20" in text and "ETA 0:00:32" in text


def test_offline_start_checks_the_hub_once(monkeypatch):
    import app

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    calls = []
    monkeypatch.setattr(app, "hub_reachable", lambda timeout=3.0: calls.append(timeout) or False)
    args = app.parse_args(["--no-browser"])
    notice = app.offline_start(args)
    assert args.offline and "unreachable" in notice and "--offline" in notice and calls == [3.0]
    assert __import__("os").environ["HF_HUB_OFFLINE"] == "1"
    calls.clear()
    args = app.parse_args(["--offline"])  # asked for: no request, no notice
    assert app.offline_start(args) is None and args.offline and calls == []
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(app, "hub_reachable", lambda timeout=3.0: True)
    args = app.parse_args([])
    assert app.offline_start(args) is None and not args.offline


def test_device_line_comes_from_the_engine_facts(monkeypatch):
    """The page's device line formats compression.device.device_facts: a CUDA GPU by name and memory,
    a CPU with the warning (hardware forced, so the test runs the same everywhere)."""
    import torch

    from components import train_panel

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("compression.device._has_mps", lambda: False)
    assert train_panel.device_facts() == {"kind": "cpu", "name": None, "memory_gib": None}
    assert "Device: CPU" in train_panel.device_summary()
    monkeypatch.setattr(train_panel, "device_facts", lambda: {"kind": "cuda", "name": "Test GPU", "memory_gib": 16.0})
    assert train_panel.device_summary() == "**Device:** Test GPU, 16.0 GiB (CUDA)"
