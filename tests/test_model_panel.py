"""Dashboard: panel 1: base model (split from the former tests/test_components.py)."""

from __future__ import annotations

import gradio as gr
import pytest

from components import model_panel
from components.state import AppSettings, Session
from compression.errors import PathNotAllowedError
from compression.load import describe_model

# ---------------------------------------------------------------- panel 1: base model

def test_load_local_folder_shows_architecture_and_bounds_sliders(settings, loaded, tiny_t5):
    session, (info, encoder, decoder) = loaded
    facts = describe_model(tiny_t5)
    assert session.facts["params"] == facts["params"]
    assert session.facts["prefix"] == "summarize: "  # nothing recorded: the T5 family's (the estimate counts it)
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
    # offline: presets, and the committed teacher exactly when the checkout has one; nothing from the hub
    from compression.teacher import bundled_teacher

    assert [value for _, value in offline if not value.startswith("preset:")] == (
        [model_panel.BUNDLED_TEACHER_CHOICE] if bundled_teacher() is not None else [])
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
