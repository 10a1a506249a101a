"""The "Train once, assemble many" tab: handlers called directly on tiny models, and its chart builders."""

from __future__ import annotations

import gradio as gr
import pytest

from components import modular_charts, modular_panel, train_panel
from components.modular_panel import ModularState
from components.state import AppSettings, Session, session_state
from compression.modular import ModularModel, save_modular
from compression.runs import RunFolder


@pytest.fixture
def settings(tmp_path):
    return AppSettings.create(tmp_path / "runs", [tmp_path], offline=True)


@pytest.fixture
def data(tiny_jsonl):
    train, validation = tiny_jsonl
    # source, train file, validation file, text column, summary column
    return [train_panel.UPLOAD, str(train), str(validation), "document", "summary"]


@pytest.fixture
def ready(tiny_t5, tiny_t5_dir, byt5_tokenizer):
    """A state holding untrained modules (granularities 2 and 4) of the tiny teacher."""
    state = ModularState()
    state.use_modules(ModularModel(tiny_t5, (2, 4)), byt5_tokenizer, "modules", str(tiny_t5_dir), "tiny")
    return state


def _assemble(settings, state, data, ratio, priority):
    # max new tokens 8; then validation pairs 2, max source 64, max target 16
    return modular_panel.assemble_and_evaluate(settings, state, ratio, priority, 8, *data, 2, 64, 16)


# ---------------------------------------------------------------- training

def test_train_modules_streams_every_loss_term_then_enables_the_ratio(settings, tiny_t5_dir, data):
    session = Session(model_source=str(tiny_t5_dir), model_label="tiny")
    state = ModularState()
    outputs = list(modular_panel.train_modules_job(settings, session, state, "", [4, 2], *data, 8, 4, 1, 4, 1e-3,
                                                    64, 16))
    progress, figure, slider, info = outputs[-1]
    assert "Modules trained" in progress
    assert (slider.minimum, slider.maximum, slider.value, slider.interactive) == (1.0, 4.0, 2.0, True)
    assert "1.14" in slider.info and "4.00" in slider.info
    assert state.modular.granularities == (2, 4) and settings.jobs.get(state.job_id).status == "complete"
    assert "`encoder.g2.s0`" in info and "`decoder.g4.s0`" in info
    names = {trace.name for trace in figure.data}
    assert {"training loss (weighted total)", "cross-entropy (nats/token)", "hidden-state MSE (span outputs)",
            "attention KL (nats)", "validation loss (mean over granularities)", "validation, all g2 modules",
            "validation, all g4 modules"} <= names
    folders = list((settings.runs_dir / modular_panel.MODULAR_DIR).iterdir())
    assert len(folders) == 1 and (folders[0] / "modular.json").is_file()
    assert state.modular_dir == str(folders[0])


def test_train_refuses_without_teacher_or_granularities(settings, data, tiny_t5_dir):
    with pytest.raises(gr.Error, match="load a base model"):
        list(modular_panel.train_modules_job(settings, Session(), ModularState(), "", [2], *data, 8, 4, 1, 4,
                                             1e-3, 64, 16))
    session = Session(model_source=str(tiny_t5_dir))
    with pytest.raises(gr.Error, match="at least one granularity"):
        list(modular_panel.train_modules_job(settings, session, ModularState(), "", [], *data, 8, 4, 1, 4, 1e-3,
                                             64, 16))
    with pytest.raises(gr.Error, match="outside the folders"):
        list(modular_panel.train_modules_job(settings, session, ModularState(), "/etc", [2], *data, 8, 4, 1, 4,
                                             1e-3, 64, 16))


def test_module_training_outlives_its_watcher_and_a_reloaded_page_reattaches(settings, tiny_t5, tiny_t5_dir,
                                                                               byt5_tokenizer, data, monkeypatch):
    import threading
    from types import SimpleNamespace

    import compression.modular

    gate, started = threading.Event(), threading.Event()

    def fake_train_modular(config, on_progress=None, cancel=None, **_):
        on_progress({"kind": "stage", "stage": "train", "message": "training granularities 2, 4"})
        on_progress({"kind": "train", "step": 1, "total_steps": 2, "epoch": 0.5, "loss": 2.0, "ce": 1.5})
        started.set()
        assert gate.wait(timeout=120)
        on_progress({"kind": "train", "step": 2, "total_steps": 2, "epoch": 1.0, "loss": 1.0, "ce": 0.8})
        modular = ModularModel(tiny_t5, (2, 4))
        modular.info = {"training": {"steps": 2, "seconds": 1.0, "cancelled": False, "eval_loss": None}}
        return modular, byt5_tokenizer

    monkeypatch.setattr(compression.modular, "train_modular", fake_train_modular)
    monkeypatch.setattr(modular_panel, "POLL_SECONDS", 0.05)
    session, state = Session(visitor="visitor-a"), ModularState()
    watcher = modular_panel.train_modules_job(settings, session, state, str(tiny_t5_dir), [2, 4], *data, 8, 4, 1, 4,
                                              1e-3, 64, 16)
    next(watcher)
    watcher.close()  # the tab was reloaded: gradio closes the generator
    job = settings.jobs.get(state.job_id)
    assert job.kind == "modular" and not job.cancel_event.is_set() and job.status in ("queued", "running")

    # the reloaded page: the main panel's attach identifies the visitor (and leaves the module job to its tab) ...
    reloaded, reloaded_state = Session(), ModularState()
    request = SimpleNamespace(query_params={}, session_hash="tab-2")
    train_panel.attach_job(settings, reloaded, "visitor-a", request)
    assert reloaded.job_id is None  # no run of this visitor: the live panel of runs stays as it is
    line = modular_panel.attach_modules(settings, reloaded, reloaded_state, request)
    assert "Reattached to module training" in line and reloaded_state.job_id == job.id
    # ... and follows its live progress, then its completion
    assert started.wait(timeout=120)
    follow = modular_panel.watch_modules(settings, reloaded_state)
    progress, figure, _, _ = next(follow)
    assert "step **1 / 2**" in progress and figure.data
    gate.set()
    progress, figure, slider, info = list(follow)[-1]
    assert "Modules trained" in progress and "step **2 / 2**" in progress
    assert slider.interactive and slider.maximum == 4.0 and "`encoder.g2.s0`" in info
    assert reloaded_state.modular is job.result[0] and reloaded_state.teacher_source == str(tiny_t5_dir)

    # another visitor's tab given the job's link (?run=<id>) follows it in the modular tab, not as a run
    other, other_state = Session(), ModularState()
    link = SimpleNamespace(query_params={"run": job.id}, session_hash="tab-3")
    train_panel.attach_job(settings, other, "", link)
    assert other.job_id is None
    assert "Reattached" in modular_panel.attach_modules(settings, other, other_state, link)
    assert "Modules trained" in list(modular_panel.watch_modules(settings, other_state))[-1][0]
    # a tab with no module training of its own shows nothing new
    assert modular_panel.attach_modules(settings, Session(visitor="nobody"), ModularState(), request) is not None
    assert list(modular_panel.watch_modules(settings, ModularState())) == [(gr.skip(),) * 4]


def test_resume_continues_a_cancelled_module_training(settings, tiny_t5_dir, data, monkeypatch):
    import json
    from types import SimpleNamespace

    import compression.modular
    from compression.guard import PublicLimits
    from compression.resume import LAST_CHECKPOINT

    monkeypatch.setattr(modular_panel, "POLL_SECONDS", 0.05)
    real = compression.modular.train_modular

    def cancelled_at_step_2(config, on_progress=None, cancel=None, **kwargs):
        def hook(record):
            on_progress(record)
            if record.get("kind") == "train" and record.get("step") == 1:
                cancel.set()  # seen after step 1: training stops at the end of step 2 (the Cancel button's event)
        return real(config, on_progress=hook, cancel=cancel, **kwargs)
    monkeypatch.setattr(compression.modular, "train_modular", cancelled_at_step_2)
    session = Session(model_source=str(tiny_t5_dir), model_label="tiny", visitor="visitor-a")
    state = ModularState()
    assert modular_panel.resume_choices(settings, session, state)[1].interactive is False  # nothing stopped yet
    # 8 pairs, batch 4, 3 epochs: 6 steps; cancelled after 2
    outputs = list(modular_panel.train_modules_job(settings, session, state, "", [2, 4], *data, 8, 4, 3, 4, 1e-3,
                                                    64, 16))
    assert "Cancelled" in outputs[-1][0]
    name = settings.jobs.get(state.job_id).label
    folder = settings.runs_dir / modular_panel.MODULAR_DIR / name
    assert (folder / LAST_CHECKPOINT).is_dir() and (folder / compression.modular.RECIPE_FILE).is_file()
    picker, button = modular_panel.resume_choices(settings, session, state)
    assert picker.choices == [(name, name)] and picker.value == name and button.interactive is True
    monkeypatch.setattr(compression.modular, "train_modular", real)

    # refused, in one line each: nothing picked, not there, escaping the modules folder, someone else's
    # training on a public server (where the list shows only the visitor's own)
    for picked, message in (("", "pick a stopped module training"), ("nope", "no module training named"),
                            ("../..", "outside")):
        with pytest.raises(gr.Error, match=message):
            next(modular_panel.resume_modules_job(settings, session, ModularState(), picked))
    public = AppSettings.create(settings.runs_dir, [settings.runs_dir.parent], offline=True, limits=PublicLimits())
    with pytest.raises(gr.Error, match="started by someone else"):
        next(modular_panel.resume_modules_job(public, Session(visitor="visitor-b"), ModularState(), name))
    assert modular_panel.resumable_trainings(public, "visitor-b") == []
    modular_panel.modules_owners(public).set(name, "visitor-a")
    assert modular_panel.resumable_trainings(public, "visitor-a") == [name]

    # Resume: the same job path as Train modules, watched the same way, to the end of the 6 steps
    request = SimpleNamespace(query_params={}, session_hash="tab-1")
    progress, figure, slider, info = list(modular_panel.resume_modules_job(settings, session, state, name,
                                                                           request))[-1]
    assert "Modules trained" in progress and slider.interactive is True and "`encoder.g2.s0`" in info
    job = settings.jobs.get(state.job_id)
    assert job.label == name and any("continuing from last-checkpoint/" in str(s.get("message")) for s in job.stages)
    meta = json.loads((folder / "modular.json").read_text())
    assert meta["training"]["steps"] == 6 and not meta["training"]["cancelled"]
    assert not (folder / LAST_CHECKPOINT).exists() and state.modular_dir == str(folder)
    steps = [json.loads(line)["step"] for line in (folder / "loss_log.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == 6  # one curve, continued, not restarted
    assert modular_panel.resume_choices(settings, session, state)[1].interactive is False  # nothing left
    with pytest.raises(gr.Error, match="no last-checkpoint/"):
        next(modular_panel.resume_modules_job(settings, session, ModularState(), name))


def test_cancel_without_training():
    from components.state import AppSettings

    assert modular_panel.cancel_modules(AppSettings(), ModularState()) is not None  # a warning, nothing else


def test_load_modules_from_a_folder(settings, tmp_path, tiny_t5, byt5_tokenizer):
    save_modular(ModularModel(tiny_t5, (2, 3, 4)), tmp_path / "mods", byt5_tokenizer)
    state = ModularState()
    info, slider = modular_panel.load_modules(settings, state, str(tmp_path / "mods"))
    assert slider.maximum == 4.0 and slider.interactive
    assert state.modular.module_names()[:3] == ["encoder.g2.s0", "encoder.g2.s2", "encoder.g3.s0"]
    assert "granularities 2, 3, 4: 8 modules" in info
    (tmp_path / "empty").mkdir()
    with pytest.raises(gr.Error, match="not a modular checkpoint"):
        modular_panel.load_modules(settings, state, str(tmp_path / "empty"))


# ---------------------------------------------------------------- assembling

def test_assemble_gives_the_promised_layer_counts_and_points(settings, ready, data):
    text, plan, table, figure = _assemble(settings, ready, data, 2.0, "size")
    assert (ready.points[-1]["encoder_layers"], ready.points[-1]["decoder_layers"]) == (2, 2)
    assert ready.points[-1]["replaced"] == ["encoder.g2.s0", "encoder.g2.s2", "decoder.g2.s0", "decoder.g2.s2"]
    assert "encoder 4 → **2**, decoder 4 → **2** layers" in text
    _assemble(settings, ready, data, 2.0, "speed")
    assert (ready.points[-1]["encoder_layers"], ready.points[-1]["decoder_layers"]) == (3, 1)
    _assemble(settings, ready, data, 4 / 3, "speed")
    assert (ready.points[-1]["encoder_layers"], ready.points[-1]["decoder_layers"]) == (4, 2)
    text, plan, table, figure = _assemble(settings, ready, data, 2.0, "size")  # same plan again: replaced
    assert len(ready.points) == 3
    assert list(table["method"]) == ["Teacher", "modular (speed-first)", "modular (speed-first)",
                                     "modular (size-first)"]
    assert list(table["layers (enc/dec)"]) == ["4/4", "3/1", "4/2", "2/2"]
    teacher = ready.teacher_point
    assert teacher["speedup"] == 1.0 and teacher["params"] > ready.points[-1]["params"]
    assert all(p["speedup"] > 0 and p["validation_loss"] > 0 and 0 <= p["rouge1"] <= 100 for p in ready.points)
    names = [trace.name for trace in figure.data]
    assert {"Teacher", "modular (size-first)", "modular (speed-first)"} <= set(names)
    assert [trace.name for trace in plan.data] == ["replaced by a module"]  # 2/2 from g2 modules: every layer


def test_assemble_errors(settings, ready, data):
    with pytest.raises(gr.Error, match="no modules yet"):
        _assemble(settings, ModularState(), data, 2.0, "size")
    with pytest.raises(gr.Error, match="out of range"):
        _assemble(settings, ready, data, 5.0, "size")
    with pytest.raises(gr.Error, match="priority must be"):
        _assemble(settings, ready, data, 2.0, "fast")
    skipped = modular_panel.assemble_if_ready(settings, ModularState(), 2.0, "size", 8, *data, 2, 64, 16)
    assert len(skipped) == 4


def _fake_run(root, name, model, method=None):
    run = RunFolder.create(root, name)
    config = {"model": model, "shrink": {"encoder_layers": 2, "decoder_layers": 1}, "train": {"epochs": 1},
              "kd": {"alpha_kl": 0.8}}  # every run's config.json holds KD weights; only "method" decides
    if method:
        config["method"] = method
    run.write_json("config.json", config)
    run.write_json("architecture.json", {"student": {"encoder_layers": 2, "decoder_layers": 1}})
    run.write_json("metrics.json", {"base": {"latency_ms": 30.0}, "student": {
        "params": 1000, "size_mib": 0.5, "rouge1": 10.0, "rouge2": 2.0, "rougeL": 8.0, "validation_loss": 3.0,
        "latency_ms": 10.0}})
    run.mark_complete()


def test_runs_of_the_same_teacher_are_plotted(settings, ready, data, tiny_t5_dir):
    _fake_run(settings.runs_dir, "sft", str(tiny_t5_dir))
    _fake_run(settings.runs_dir, "kd", str(tiny_t5_dir), method="kd")
    _fake_run(settings.runs_dir, "other", "t5-small")
    points = modular_panel.run_points(settings, str(tiny_t5_dir))
    assert sorted(p["method"] for p in points) == ["KD", "SFT"]
    assert all(p["speedup"] == 3.0 and p["label"] == "2/1" for p in points)
    _, _, table, figure = _assemble(settings, ready, data, 2.0, "size")
    assert {"Teacher", "modular (size-first)", "SFT", "KD"} <= {trace.name for trace in figure.data}
    assert len(table) == 4


def test_build_tab():
    settings = AppSettings.create("runs", offline=True)
    with gr.Blocks():
        tab = modular_panel.build_modular_tab(settings, session_state())
    assert tab.ratio.interactive is False and tab.priority.value == "size"


# ---------------------------------------------------------------- charts

def test_modules_loss_curve_traces():
    records = [{"kind": "train", "step": 1, "loss": 3.0, "ce": 2.0, "hidden": 0.5, "attention": 0.5},
               {"kind": "eval", "step": 1, "eval_loss": 2.5, "eval_loss_g2": 2.0, "eval_loss_g4": 3.0}]
    names = [trace.name for trace in modular_charts.modules_loss_curve(records).data]
    assert names == ["training loss (weighted total)", "cross-entropy (nats/token)", "hidden-state MSE (span outputs)",
                     "attention KL (nats)", "validation loss (mean over granularities)", "validation, all g2 modules",
                     "validation, all g4 modules"]
    assert not modular_charts.modules_loss_curve([]).data  # placeholder


def test_tradeoff_figure_and_pareto_front():
    points = [{"method": "teacher", "label": "4/4", "speedup": 1.0, "validation_loss": 2.0, "size_mib": 10.0},
              {"method": "SFT", "label": "2/2", "speedup": 2.0, "validation_loss": 3.0, "size_mib": 6.0},
              {"method": "KD", "label": "2/2", "speedup": 2.0, "validation_loss": 2.5, "size_mib": 6.0},
              {"method": "modular (size-first)", "label": "2/2", "speedup": 1.5, "validation_loss": 2.8,
               "size_mib": 6.0}]
    front = modular_charts.pareto_front(points, "speedup", "validation_loss")
    assert [p["method"] for p in front] == ["teacher", "KD"]
    figure = modular_charts.tradeoff_figure(points, (("speedup", "validation_loss"), ("size_mib", "validation_loss")),
                                            pareto=True)
    names = [trace.name for trace in figure.data]
    assert names.count("Teacher") == 2 and names.count("Pareto front") == 2
    assert [t.showlegend for t in figure.data if t.name == "SFT"] == [True, False]
    assert figure.layout.xaxis.title.text == modular_charts.AXES["speedup"]
    assert not modular_charts.tradeoff_figure([]).data

    # the dashboard's grid: ROUGE-1 and validation loss, each against speedup and size
    points = [dict(p, rouge1=r) for p, r in zip(points, (30.0, 25.0, 27.0, 26.0))]
    grid = modular_charts.tradeoff_figure(points)
    layout = grid.layout
    assert [layout[f"xaxis{i}"].title.text for i in ("", 2, 3, 4)] == [
        modular_charts.AXES[k] for k in ("speedup", "size_mib", "speedup", "size_mib")]
    assert [layout[f"yaxis{i}"].title.text for i in ("", 2, 3, 4)] == [
        modular_charts.AXES[k] for k in ("rouge1", "rouge1", "validation_loss", "validation_loss")]
    assert layout.yaxis.domain[0] > layout.yaxis3.domain[1]  # two rows
    assert names.count("Teacher") == 2 and [t.name for t in grid.data].count("Teacher") == 4


def test_assembly_plan_marks_replaced_spans():
    figure = modular_charts.assembly_plan({"encoder": 4, "decoder": 4}, [
        {"stack": "decoder", "start": 0, "end": 4, "module": "decoder.g4.s0"},
        {"stack": "encoder", "start": 2, "end": 4, "module": "encoder.g2.s2"}])
    kept, replaced = figure.data
    assert list(kept.x) == [0, 1] and list(replaced.text) == ["g2", "g2", "g4", "g4", "g4", "g4"]
    assert figure.layout.title.text == "Assembly: encoder 4 → 3, decoder 4 → 1 layers"
    empty = modular_charts.assembly_plan({"encoder": 0, "decoder": 0}, [], "Assembly: none yet")
    assert not empty.data and empty.layout.title.text == "Assembly: none yet"  # a placeholder, not empty axes
