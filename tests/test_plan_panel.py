"""Dashboard: panel 2: shrink plan (split from the former tests/test_components.py)."""

from __future__ import annotations

import gradio as gr
import pytest

from components import plan_panel
from components.state import Session
from compression.layers import estimate_student, layer_footprint, shrink
from compression.load import describe_model

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


def test_importance_strategy_plans_from_scores_on_panel_3_data(settings, loaded, tiny_jsonl):
    from components.train_panel import UPLOAD

    session, _ = loaded
    figure, estimate = plan_panel.update_plan(settings, session, 2, 2, "importance", "", "")
    assert "scored when the run starts" in estimate and not figure.data  # nothing claimed before scoring
    assert plan_panel.update_importance(settings, session, 2, 2, "importance", "", "").__class__.__name__ != "Figure"

    train, validation = tiny_jsonl
    heatmap, plan, estimate = plan_panel.score_layers(
        settings, session, 2, 2, "importance", "", "", UPLOAD, str(train), str(validation), "document", "summary",
        64, 16, 4, progress=lambda *a, **k: None)
    from compression.importance import selection_scores
    from compression.layers import select_layers

    scores = selection_scores(session.importance, "drop_one_loss")
    expected_enc = select_layers(session.facts["encoder_layers"], 2, "importance", "encoder", scores["encoder"])
    expected_dec = select_layers(session.facts["decoder_layers"], 2, "importance", "decoder", scores["decoder"])
    assert session.importance["samples"] == 4
    assert f"keeps encoder layers {expected_enc}, decoder layers {expected_dec}" in estimate
    importance, kept = heatmap.data
    assert list(importance.y) == ["encoder · drop-one Δloss", "encoder · block influence",
                                  "decoder · drop-one Δloss", "decoder · block influence"]
    assert list(kept.x) == expected_enc * 2 + expected_dec * 2
    kwargs, _, _ = plan_panel.shrink_choice(session, 2, 2, "importance", "", "")
    assert kwargs == {"encoder_layers": 2, "decoder_layers": 2, "strategy": "importance", "importance_samples": 4}


def test_speed_line_says_which_stack_to_cut_at_panel_3s_source_length(loaded, loaded_longt5):
    from compression.length_plan import cost_profile
    from compression.load import preset_config

    assert plan_panel.cut_advice_line(Session(), 512) == ""  # nothing loaded: no line
    session, _ = loaded
    assert session.length_profile["attention"] == "full"
    assert "cut the decoder" in plan_panel.cut_advice_line(session, 256)
    longt5, _ = loaded_longt5
    assert longt5.length_profile["attention"] == "transient-global"  # load_base records the base's profile
    # the LongT5 preset's shape (modelled cost, no timing): the decoder at 512 tokens, the encoder at 16k
    longt5.length_profile = cost_profile(preset_config("longt5-tglobal-tiny", 32128))
    assert "cut the decoder" in plan_panel.cut_advice_line(longt5, 512)
    line = plan_panel.cut_advice_line(longt5, 16384)
    assert "For speed at 16,384 source tokens, cut the encoder" in line and "panel 3" in line
    assert plan_panel.cut_advice_line(longt5, "not a number") == ""
