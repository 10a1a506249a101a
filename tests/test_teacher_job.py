"""Panel 1's teacher action and the committed teacher's place in the base-model list.

The job trains a two-layer preset on eight pairs, one step per epoch (the recipe's batch of 32 takes them all).
"""

from __future__ import annotations

import pytest

from components import model_panel, teacher_job
from components.state import AppSettings, Session
from components.train_panel import UPLOAD
from compression.errors import CompressionError, ModelLoadError
from compression.teacher import TEACHER_RECIPE


def _form(train, validation):
    return {"source": UPLOAD, "data.train_file": str(train), "data.validation_file": str(validation),
            "data.text_column": "document", "data.summary_column": "summary", "data.max_eval_samples": 4,
            "data.max_target_length": 16}


def test_only_an_untrained_preset_can_be_trained_as_the_teacher(settings, loaded, tiny_jsonl):
    with pytest.raises(ModelLoadError, match="load an untrained preset first"):
        teacher_job.untrained_preset_of(Session())
    session, _ = loaded  # a trained (tiny) checkpoint
    with pytest.raises(ModelLoadError, match="trained already"):
        teacher_job.submit_teacher(settings, session, _form(*tiny_jsonl), "v")
    assert settings.jobs.latest("v") is None  # nothing queued


def test_teacher_job_trains_the_loaded_preset_and_offers_its_folder(settings, tiny_jsonl):
    from compression.load import is_untrained, load_model

    session = Session()
    model_panel.load_base(settings, session, "preset:tiny-nl2", None, "byt5")
    assert teacher_job.untrained_preset_of(session) == "tiny-nl2"
    job = teacher_job.submit_teacher(settings, session, _form(*tiny_jsonl), "v")
    for _ in teacher_job.watch(job):
        pass
    assert job.status == "complete", job.error
    final, folder = teacher_job.teacher_outcome(job)
    assert final.startswith("✓ **Teacher trained**") and "validation loss" in final
    assert folder is not None and folder.startswith(str(settings.bases_dir))
    model, _ = load_model(folder)
    assert not is_untrained(model) and job.result["train"]["steps"] == TEACHER_RECIPE["epochs"]  # one batch per epoch
    assert [stage["stage"] for stage in job.stages] == ["train the teacher", "done"]


def test_public_server_refuses_teacher_training(tmp_path, tiny_jsonl):
    from compression.guard import PublicLimits

    settings = AppSettings.create(tmp_path / "runs", [tmp_path], offline=True, limits=PublicLimits())
    with pytest.raises(CompressionError, match="off on a public server"):
        teacher_job.submit_teacher(settings, Session(), _form(*tiny_jsonl), "v")


def test_bundled_teacher_is_the_first_offline_choice_when_present(settings, tiny_t5_dir, tmp_path, monkeypatch):
    import shutil

    import compression.teacher as teacher

    monkeypatch.setattr(teacher, "BUNDLED_TEACHER", tmp_path / "absent")
    assert model_panel.BUNDLED_TEACHER_CHOICE not in [value for _, value in model_panel.model_choices(settings)]
    with pytest.raises(ModelLoadError, match="no committed Debian teacher"):
        model_panel.resolve_source(settings, model_panel.BUNDLED_TEACHER_CHOICE, None)
    shipped = tmp_path / "elsewhere" / "debian-teacher"  # outside the allowed folders: shipped, not typed
    shutil.copytree(tiny_t5_dir, shipped)
    monkeypatch.setattr(teacher, "BUNDLED_TEACHER", shipped)
    assert model_panel.model_choices(settings)[0][1] == model_panel.BUNDLED_TEACHER_CHOICE
    assert model_panel.resolve_source(settings, model_panel.BUNDLED_TEACHER_CHOICE, None) == ("folder", str(shipped))


def test_a_run_link_to_a_teacher_training_reattaches_to_its_progress(settings):
    import threading
    from types import SimpleNamespace

    import gradio as gr

    from components import modular_panel, train_panel

    release = threading.Event()

    def work(emit, cancel):  # a teacher training as the job queue sees it, held until released
        emit({"kind": "stage", "stage": "train the teacher", "message": "the tiny preset"})
        emit({"kind": "train", "step": 1, "loss": 3.0, "epoch": 0.5})
        release.wait(30)
        return {"status": "complete", "metrics": {"validation_loss": 2.5}, "train": {"eval_loss": 2.5},
                "teacher_dir": str(settings.bases_dir / "teacher-tiny")}
    job = settings.jobs.submit(work, kind="teacher", owner="visitor-a", label="20261204-000000-teacher-tiny")
    link = SimpleNamespace(query_params={"run": job.id}, session_hash="tab-2")
    session = Session()
    _, line = train_panel.attach_job(settings, session, "visitor-b", link)  # another browser, the shared link
    assert session.job_id == job.id and "Reattached to `20261204-000000-teacher-tiny`" in line
    assert list(train_panel.watch_job(settings, session)) == [(gr.skip(), gr.skip())]  # not a run: left to the teacher's
    assert modular_panel.attach_modules(settings, session, modular_panel.ModularState(), link) == gr.skip()
    watcher = teacher_job.watch_teacher(settings, session)
    progress, _, folder = next(watcher)
    while "Training the teacher" not in progress:
        progress, _, folder = next(watcher)
    assert folder == gr.skip() and f"?run={job.id}" in progress
    release.set()
    *_, (final, figure, folder) = list(watcher)
    assert final.startswith("✓ **Teacher trained**") and folder == str(settings.bases_dir / "teacher-tiny")
    assert len(figure.data) >= 1
    # a page without the link does not reattach to someone's teacher training, and a run link is not followed here
    assert train_panel.attach_job(settings, Session(), "visitor-a", SimpleNamespace(query_params={}))[1] == gr.skip()
    assert list(teacher_job.watch_teacher(settings, Session())) == [(gr.skip(),) * 3]
