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
