"""Dashboard: panel 6: runs history (split from the former tests/test_components.py)."""

from __future__ import annotations

import json

import gradio as gr
import pytest

from components import results_panel, runs_panel
from components.state import AppSettings, Session
from conftest import RUN_METRICS as METRICS

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

    overlay, comparison, line = runs_panel.compare_runs(settings, ["20250101-000000-a", "20250102-000000-b"])
    assert "`?compare=20250101-000000-a,20250102-000000-b`" in line
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
    # the deployed copy: CTranslate2's model.bin with what lies beside it; a run without one says why
    with pytest.raises(gr.Error, match="no saved deployed copy .*without a deployed copy"):
        runs_panel.zip_deployed(settings, "20250101-000000-a")
    deployed = settings.runs_dir / "20250101-000000-a" / "deployed"
    deployed.mkdir()
    for name in ("model.bin", "shared_vocabulary.json", "README.md"):
        (deployed / name).write_text("x")
    download = runs_panel.zip_deployed(settings, "20250101-000000-a")
    assert download.value["orig_name"] == "20250101-000000-a-deployed.zip"
    assert {"deployed/model.bin", "deployed/README.md"} <= set(zipfile.ZipFile(download.value["path"]).namelist())


def test_a_shared_link_opens_a_finished_runs_comparison(settings):
    from types import SimpleNamespace

    from components import train_panel

    _fake_run(settings, "20250101-000000-a")
    _fake_run(settings, "20250102-000000-b")
    session = Session()
    assert "`?open=20250101-000000-a`" in runs_panel.open_run(settings, session, "20250101-000000-a")
    link = SimpleNamespace(query_params={"open": "20250101-000000-a"}, session_hash="tab-2")
    # the visitor also has a run job: without the link the page reattaches to it, with the link it opens the run
    job = settings.jobs.submit(lambda emit, cancel: {"status": "complete"}, kind="run", owner="visitor-a")
    plain = SimpleNamespace(query_params={}, session_hash="tab-1")
    train_panel.attach_job(settings, Session(), "visitor-a", plain)
    opened = Session()
    train_panel.attach_job(settings, opened, "visitor-a", link)
    assert opened.job_id is None and job.id
    line = runs_panel.open_from_link(settings, opened, link)
    assert "Opened **20250101-000000-a** (complete)" in line
    headline, metrics, rouge, loss, size, summaries, _ = results_panel.show_results(settings, opened)
    assert "Student (`20250101-000000-a`)" in headline and len(rouge.data) >= 2 and len(metrics) >= 2
    assert summaries.iloc[0]["student"] == "s" and opened.result["metrics"] == METRICS
    assert runs_panel.refresh_runs(settings, opened, link)[2].value == "20250101-000000-a"  # the picker shows it
    # no link: nothing changes; a name that is not a run (or escapes the runs folder): a readable message
    assert runs_panel.open_from_link(settings, Session(), plain) == gr.skip()
    for name in ("nope", "../../etc", "/etc"):
        with pytest.raises(gr.Error, match="no run named|outside"):
            runs_panel.open_from_link(settings, Session(), SimpleNamespace(query_params={"open": name}))
    settings.jobs.wait_idle(timeout=30)


def test_a_shared_link_opens_a_comparison_of_runs(settings, tmp_path):
    from types import SimpleNamespace

    from compression.guard import PublicLimits, RunOwners

    names = ["20250101-000000-a", "20250102-000000-b", "20250103-000000-c"]
    for loss, name in enumerate(names):
        _fake_run(settings, name, loss=3.0 - loss)
    session = Session()
    *_, line = runs_panel.compare_runs(settings, names[:2], session)
    assert f"`?compare={names[0]},{names[1]}`" in line and session.compared == names[:2]
    assert runs_panel.refresh_runs(settings, session)[1].value == names[:2]  # a refresh keeps the comparison
    # the link, in another tab: the same charts, the picker on those runs, the link again
    link = SimpleNamespace(query_params={"compare": f" {names[2]},{names[0]},,{names[2]}"}, session_hash="tab-2")
    opened = Session()
    overlay, comparison, picker, line = runs_panel.compare_from_link(settings, opened, link)
    assert [t.name for t in overlay.data] == [f"{names[2]} · train", f"{names[0]} · train"]
    assert len(comparison.data) == 4 and picker.value == [names[2], names[0]]
    assert f"`?compare={names[2]},{names[0]}`" in line
    assert runs_panel.refresh_runs(settings, opened, link)[1].value == [names[2], names[0]]
    # no link: nothing changes; unknown, escaping or too few names: a readable message, no server path
    plain = SimpleNamespace(query_params={}, session_hash="tab-1")
    assert runs_panel.compare_from_link(settings, Session(), plain) == (gr.skip(),) * 4
    for value, message in ((f"{names[0]},nope", "no run named 'nope'"), (f"{names[0]},../../etc", "outside"),
                           (f"/etc,{names[0]}", "outside"), (names[0], "two or more"), ("", "two or more")):
        with pytest.raises(gr.Error, match=message) as error:
            runs_panel.compare_from_link(settings, Session(), SimpleNamespace(query_params={"compare": value}))
        assert str(settings.runs_dir) not in str(error.value.message) and str(tmp_path) not in str(error.value.message)
    # a public server: only runs the visitor may see (their own and the operator's)
    public = AppSettings.create(settings.runs_dir, [tmp_path], offline=True, limits=PublicLimits())
    RunOwners(public.runs_dir).set(names[0], "visitor-a")
    RunOwners(public.runs_dir).set(names[1], "visitor-b")
    shared = SimpleNamespace(query_params={"compare": f"{names[0]},{names[2]}"})
    assert runs_panel.compare_from_link(public, Session(visitor="visitor-a"), shared)[2].value == [names[0], names[2]]
    with pytest.raises(gr.Error, match=f"no run named '{names[0]}'"):
        runs_panel.compare_from_link(public, Session(visitor="visitor-b"), shared)


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


def test_a_runs_student_becomes_the_base_model(settings, tiny_t5, byt5_tokenizer):
    from compression.errors import RunError

    _fake_run(settings, "20250101-000000-a", tiny_t5, byt5_tokenizer)
    _fake_run(settings, "20250102-000000-b", loss=2.0)  # no student saved
    session = Session()
    folder, info, encoder, decoder = runs_panel.student_as_base(settings, session, "20250101-000000-a", "byt5")
    assert folder == str(settings.runs_dir / "20250101-000000-a" / "student")
    assert session.model_source == folder and encoder.maximum == tiny_t5.config.num_layers
    with pytest.raises(RunError, match="no saved student"):
        runs_panel.student_as_base(settings, session, "20250102-000000-b", "byt5")
