"""The dashboard as a server, driven through its API with ``gradio_client``.

Starts ``app.build_demo`` on a free local port in this process, then: load the tiny local model
folder -> plan -> run one epoch on the tiny JSONL pairs -> results -> summarize an article -> list
runs. Every figure and table the server returns is checked against the run folder's files.
"""

from __future__ import annotations

import json
import socket
import zipfile
from pathlib import Path

import pytest

from conftest import ARTICLES


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    import app
    from components.state import AppSettings

    settings = AppSettings.create(tmp_path / "runs", [tmp_path], offline=True)
    demo = app.build_demo(settings)
    port = _free_port()
    demo.queue(default_concurrency_limit=2).launch(server_name="127.0.0.1", server_port=port,
                                                   prevent_thread_lock=True, quiet=True,
                                                   **app.launch_options(settings))
    try:
        yield settings, f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def _figure(value) -> dict:
    assert value["type"] == "plotly"
    return json.loads(value["plot"])


def _traces(figure: dict) -> dict:
    return {trace.get("name"): trace for trace in figure["data"]}


def test_load_plan_run_results_over_the_api(server, tiny_t5_dir, tiny_jsonl):
    from gradio_client import Client, handle_file

    settings, url = server
    client = Client(url, verbose=False)
    train, validation = tiny_jsonl

    info, encoder, decoder = client.predict(None, str(tiny_t5_dir), "byt5", api_name="/load_model")
    assert "encoder **4** layers · decoder **4** layers · d_model 32" in info
    assert (encoder["maximum"], decoder["maximum"], decoder["value"]) == (4, 4, 2)

    picture, estimate = client.predict(3, 2, "spread", "", "", api_name="/plan")
    kept = _traces(_figure(picture))["kept"]
    assert kept["x"] == [0, 2, 3, 0, 3] and "keeps encoder layers [0, 2, 3], decoder layers [0, 3]" in estimate

    progress, loss = client.predict(
        3, 2, "spread", "", "", "Upload JSONL/CSV files", handle_file(str(train)), handle_file(str(validation)),
        "document", "summary", 8, 4, 1, 4, 3e-4, 64, 16, False, False, "8bit", 1, 8, "api test",
        "kd", 0.5, 0.5, 0.0, 2.0, api_name="/run")
    assert "Run complete" in progress
    runs = [p for p in settings.runs_dir.iterdir() if not p.name.startswith(".")]
    assert len(runs) == 1 and runs[0].name.endswith("-api-test")
    run_dir = runs[0]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "complete"
    logged = [json.loads(line) for line in (run_dir / "loss_log.jsonl").read_text().splitlines()]
    curve = _traces(_figure(loss))
    assert curve["training loss"]["y"] == [r["loss"] for r in logged if r["kind"] == "train"]
    assert curve["validation loss"]["y"] == [r["eval_loss"] for r in logged if r["kind"] == "eval"]
    assert curve["KD term: soft-target KL × T²"]["y"] == [r["kl"] for r in logged if r["kind"] == "train"]
    assert json.loads((run_dir / "config.json").read_text())["method"] == "kd"

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"base", "student", "quantized", "deployed"}
    headline, table, rouge, val_loss, size, summaries, decoding = client.predict(api_name="/show_results")
    assert "greedy (1 beam), at most 8 new tokens" in decoding
    assert run_dir.name in headline
    names = ("base", "student", "quantized", "deployed")
    rows = {row[0].split(" (")[0]: dict(zip(table["headers"], row)) for row in table["data"]}
    for name, label in zip(names, ("Base", "Student", "Student, quantized", "Student, deployed")):
        row = rows[label if name != "base" else "Base"]
        assert row["validation loss (nats/token)"] == round(metrics[name]["validation_loss"], 4)
        assert row["ROUGE-1"] == round(metrics[name]["rouge1"], 2)
        assert row["size (MiB)"] == round(metrics[name]["size_mib"], 2)
    bars = _traces(_figure(rouge))
    assert [bars[label]["y"] for label in ("Base (teacher)", "Student", "Student, quantized",
                                           "Student, deployed (CTranslate2)")] == [
        [metrics[name][k] for k in ("rouge1", "rouge2", "rougeL")] for name in names]
    assert _figure(val_loss)["data"][0]["y"] == [metrics[name]["validation_loss"] for name in names]
    params, mib, latency = _figure(size)["data"]
    assert params["y"] == pytest.approx([metrics[name]["params"] / 1e6 for name in names])
    assert metrics["deployed"]["params"] == metrics["student"]["params"]  # the student's weights, converted
    assert mib["y"] == [metrics[name]["size_mib"] for name in names]
    assert latency["y"] == [metrics[name]["latency_ms"] for name in names]
    stored = [json.loads(line) for line in (run_dir / "summaries.jsonl").read_text().splitlines()]
    assert summaries["headers"] == ["article", "reference", "base", "student", "quantized", "deployed"]
    assert [row[1:] for row in summaries["data"]] == [
        [r["reference"], r["base"], r["student"], r["quantized"], r.get("deployed", "")] for r in stored]

    outputs = client.predict(ARTICLES[2][0], 1, 8, api_name="/summarize")
    assert len(outputs) == 4 and all(isinstance(text, str) and text for text in outputs)
    assert outputs[3].startswith("Student summary written by the ")

    runs_table, _, picked = client.predict(api_name="/refresh_runs")
    assert runs_table["data"][0][0] == run_dir.name and picked["value"] == run_dir.name
    download = client.predict(run_dir.name, api_name="/zip_student")
    assert download["visible"] is True and Path(download["value"]).name == f"{run_dir.name}-student.zip"
    assert "student/model.safetensors" in zipfile.ZipFile(download["value"]).namelist()


def test_errors_come_back_as_messages(server, tmp_path, tiny_t5_dir):
    from gradio_client import Client

    _, url = server
    client = Client(url, verbose=False)
    # user errors come back on the event's status line (the page also shows a toast); the other
    # outputs are left unchanged
    info, encoder, decoder = client.predict(None, "/etc", "byt5", api_name="/load_model")
    assert info.startswith("⚠") and "outside the folders" in info and str(tmp_path) not in info
    progress, _ = client.predict(2, 2, "spread", "", "", "Upload JSONL/CSV files", None, None, "document", "summary",
                                 8, 4, 1, 4, 3e-4, 64, 16, False, False, "none", 1, 8, "", api_name="/run")
    assert progress.startswith("⚠") and "load a base model first" in progress
    assert not list((tmp_path / "runs").glob("2*"))  # no run folder
    client.predict(None, str(tiny_t5_dir), "byt5", api_name="/load_model")
    _, estimate = client.predict(4, 4, "custom", "1,1", "", api_name="/plan")
    assert estimate.startswith("⚠") and "repeat a layer" in estimate
    # the session is still usable after the errors
    _, estimate = client.predict(2, 2, "first", "", "", api_name="/plan")
    assert "encoder layers [0, 1]" in estimate
