"""Dashboard: panel 5: article comparison (split from the former tests/test_components.py)."""

from __future__ import annotations

import gradio as gr
import pytest

from components import results_panel
from components.state import Session
from compression.layers import shrink
from conftest import ARTICLES

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
    base, student, quantized, which = results_panel.compare_article(settings, session, ARTICLES[0][0], 1, 8)
    assert "greedy (1 beam), at most 8 new tokens" in which
    assert isinstance(base, str) and base and isinstance(student, str) and student
    assert quantized == "(this run has no quantized model)"
    assert which.startswith("Student summary written by the float32 student (no copy of it was timed).")
    results_panel.compare_article(settings, session, ARTICLES[1][0], 2, 8)
    assert loads == ["runs/x"]  # models loaded once per run
    with pytest.raises(gr.Error, match="no finished run"):
        results_panel.compare_article(settings, Session(), ARTICLES[0][0], 1, 8)
