"""Bad inputs through the page, at handler level: each gives a readable message (a ``gr.Error`` or a
warning, never a traceback, no server folder in it), leaves no run folder, and the page stays usable.

The handlers are called as gradio calls them (settings + the visitor's session + the widget values);
the run pipeline is never reached, since every case is refused before a job is queued.
"""

from __future__ import annotations

import os
import warnings
from types import SimpleNamespace

import gradio as gr
import pytest

from components import model_panel, plan_panel, results_panel, runs_panel, train_panel
from components.state import AppSettings, Session
from conftest import ARTICLES, write_jsonl


@pytest.fixture(scope="module")
def loaded_session(tmp_path_factory):
    """A session with the tiny T5 loaded (once for the module: loading is most of a case's time)."""
    import torch
    from transformers import ByT5Tokenizer, T5ForConditionalGeneration

    from conftest import tiny_t5_config

    folder = tmp_path_factory.mktemp("model") / "tiny-t5"
    torch.manual_seed(0)
    T5ForConditionalGeneration(tiny_t5_config()).save_pretrained(folder)
    ByT5Tokenizer().save_pretrained(folder)
    settings = AppSettings.create(folder.parent / "runs", [folder.parent], offline=True)
    session = Session(visitor="visitor")
    model_panel.load_base(settings, session, None, str(folder), "byt5")
    return session


@pytest.fixture
def page(tmp_path, loaded_session):
    import dataclasses

    settings = AppSettings.create(tmp_path / "runs", [tmp_path], offline=True)
    session = dataclasses.replace(loaded_session)
    train = write_jsonl(tmp_path / "train.jsonl", ARTICLES)
    validation = write_jsonl(tmp_path / "validation.jsonl", ARTICLES[:4])
    return SimpleNamespace(settings=settings, session=session, tmp=tmp_path, train=train, validation=validation)


KEYS = {"encoder_layers": "shrink.encoder_layers", "decoder_layers": "shrink.decoder_layers",
        "strategy": "shrink.strategy", "train_file": "data.train_file", "batch_size": "train.batch_size",
        "epochs": "train.epochs", "quantize": "quantize"}


def _form(page, **overrides):
    """The Run form as the page hands it over (values keyed by field name); ``overrides`` use the
    short names of :data:`KEYS` or the form's own keys."""
    form = {"shrink.encoder_layers": 2, "shrink.decoder_layers": 1, "shrink.strategy": "spread",
            "encoder_custom": "", "decoder_custom": "", "source": train_panel.UPLOAD,
            "data.train_file": str(page.train), "data.validation_file": str(page.validation),
            "data.text_column": "document", "data.summary_column": "summary", "data.max_train_samples": 8,
            "data.max_eval_samples": 4, "train.epochs": 1, "train.batch_size": 4, "train.learning_rate": 3e-4,
            "data.max_source_length": 64, "data.max_target_length": 16, "train.freeze_embeddings": False,
            "train.freeze_encoder": False, "quantize": "none", "eval.num_beams": 1, "eval.max_new_tokens": 8,
            "name": ""}
    form.update({KEYS.get(key, key): value for key, value in overrides.items()})
    return form


def _run(page, session=None, **overrides):
    form = _form(page, **overrides)
    return list(train_panel.run_training(page.settings, list(form), session or page.session, *form.values()))


def _upload(page, name: str, content: bytes, **overrides):
    path = page.tmp / "uploads" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    return _run(page, train_file=str(path), **overrides)


def _load(page, custom, tokenizer="byt5"):
    return model_panel.load_base(page.settings, page.session, None, custom, tokenizer)


def _symlink_outside(page):
    link = page.tmp / "link-to-etc"
    link.symlink_to("/etc")
    return _load(page, str(link))


def _no_model(page):
    (page.tmp / "empty").mkdir()
    return _load(page, str(page.tmp / "empty"))


def _run_before_load(page):
    return _run(page, Session())


def _attach_unknown(page):
    request = SimpleNamespace(query_params={"run": "0123456789ab"}, session_hash="x")
    _, line = train_panel.attach_job(page.settings, Session(), "", request)
    assert line is not None
    return "warned"


def _cancel_nothing(page):
    return train_panel.cancel_training(page.settings, page.session)


CASES = {
    # paths a visitor types
    "model folder outside the allowed folders": (lambda p: _load(p, "/etc"), "outside the folders"),
    "model path escaping with ../": (lambda p: _load(p, "../../../../etc"), "outside the folders"),
    "symlink pointing outside": (_symlink_outside, "outside the folders"),
    "tokenizer outside the allowed folders": (lambda p: model_panel.load_base(
        p.settings, p.session, "preset:tiny", "", "/etc"), "outside the folders"),
    "hub id while offline": (lambda p: _load(p, "google/flan-t5-small"), "offline"),
    "folder without a model": (_no_model, "model"),
    # uploads
    "binary upload": (lambda p: _upload(p, "binary.jsonl", bytes(range(256)) * 64), "line 1"),
    "non-UTF-8 upload": (lambda p: _upload(p, "latin1.jsonl", '{"document": "caf\xe9", "summary": "x"}\n'.encode(
        "latin-1")), "line 1"),
    "half-broken JSONL": (lambda p: _upload(p, "half_broken.jsonl", b'{"document": "a", "summary": "b"}\n'
                                                                    b'{"document": "c", "summ'), "line 2"),
    "JSONL line that is not an object": (lambda p: _upload(p, "list.jsonl", b'[1, 2]\n'), "not an object"),
    "wrong columns": (lambda p: _upload(p, "cols.jsonl", b'{"text": "a", "target": "b"}\n'), "no column"),
    "CSV row with a missing field": (lambda p: _upload(p, "short.csv", b"document,summary\na,b\nc\n"), "line 3"),
    "unsupported file type": (lambda p: _upload(p, "notes.txt", b"hello"), "unsupported file type"),
    "empty file": (lambda p: _upload(p, "empty.jsonl", b""), "no rows"),
    "no training file": (lambda p: _run(p, train_file=None), "upload a training file"),
    # numbers and layers
    "encoder layers 0": (lambda p: _run(p, encoder_layers=0), "at least 1"),
    "encoder layers above the depth": (lambda p: _run(p, encoder_layers=9), "4"),
    "decoder layers 2.5": (lambda p: _run(p, decoder_layers=2.5), "whole"),
    "repeated custom layer": (lambda p: _run(p, strategy="custom", encoder_custom="1,1"), "repeat"),
    "custom layer out of range": (lambda p: _run(p, strategy="custom", encoder_custom="0,7"), "7"),
    "batch size 0": (lambda p: _run(p, batch_size=0), "batch size"),
    "epochs not a number": (lambda p: _run(p, epochs="many"), "number"),
    "hub dataset while offline": (lambda p: _run(p, source=next(iter(train_panel.HUB_DATASETS))), "offline"),
    "unknown quantization": (lambda p: _run(p, quantize="3bit"), "quantization"),
    # order of actions
    "run before load": (_run_before_load, "load a base model first"),
    "summarize before any run": (lambda p: results_panel.compare_article(p.settings, p.session, "An article.", 1, 8),
                                 "no finished run"),
    "open a run name escaping the runs folder": (lambda p: runs_panel.open_run(p.settings, p.session, "../.."),
                                                 "outside"),
    "zip a run that does not exist": (lambda p: runs_panel.zip_student(p.settings, "nope"), "no run named"),
    "compare one run": (lambda p: runs_panel.compare_runs(p.settings, ["one"]), "two or more"),
    "cancel with nothing running": (_cancel_nothing, None),
    "reopen an unknown ?run= link": (_attach_unknown, None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_a_message_and_leaves_the_page_usable(page, case):
    action, expected = CASES[case]
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        try:
            action(page)
            message = " ".join(str(w.message) for w in warned)
        except gr.Error as error:
            message = str(error.message)
    assert message and "Traceback" not in message
    if expected is not None:
        assert expected.lower() in message.lower(), message
    assert str(page.tmp) not in message and os.sep + "tmp" + os.sep not in message.replace("/etc", "")
    runs = page.settings.runs_dir
    assert not runs.exists() or not [p for p in runs.iterdir() if not p.name.startswith(".")]
    assert not page.settings.jobs.jobs()  # nothing queued
    # the page is still usable: the plan redraws, the loaded model is still there
    _, estimate = plan_panel.update_plan(page.settings, page.session, 2, 2, "spread", "", "")
    assert "keeps encoder layers" in estimate and page.session.model_source


def test_upload_route_takes_only_data_files():
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from components.uploads import DataUploadsOnly

    async def upload(request):
        form = await request.form()
        return PlainTextResponse(",".join(f.filename for f in form.getlist("files")))

    app = Starlette(routes=[Route("/gradio_api/upload", upload, methods=["POST"])],
                    middleware=[Middleware(DataUploadsOnly, max_bytes=4096)])
    client = TestClient(app)
    ok = client.post("/gradio_api/upload", files={"files": ("pairs.JSONL", b'{"a": 1}\n')})
    assert ok.status_code == 200 and ok.text == "pairs.JSONL"
    refused = client.post("/gradio_api/upload", files={"files": ("shell.sh", b"echo hi")})
    assert refused.status_code == 415 and ".jsonl" in refused.text
    assert client.post("/gradio_api/upload", files={"files": ("big.csv", b"x" * 5000)}).status_code == 413
