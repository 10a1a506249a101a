"""Dashboard: charts (split from the former tests/test_components.py)."""

from __future__ import annotations

from components import charts
from conftest import RUN_METRICS as METRICS

# ---------------------------------------------------------------- charts

def test_loss_curve_traces_and_labels():
    records = [{"kind": "stage", "stage": "train"},
               {"kind": "train", "step": 1, "loss": 5.0}, {"kind": "train", "step": 2, "loss": 4.0},
               {"kind": "eval", "step": 2, "eval_loss": 4.5}]
    figure = charts.loss_curve(records)
    assert [t.name for t in figure.data] == ["training loss", "validation loss"]
    assert list(figure.data[0].y) == [5.0, 4.0] and list(figure.data[1].x) == [2]
    assert figure.layout.title.text == "Loss during fine-tuning"
    assert figure.layout.xaxis.title.text == "optimizer step"
    assert figure.layout.yaxis.title.text == "loss (nats/token)"
    assert figure.layout.paper_bgcolor == "rgba(0,0,0,0)"
    assert not charts.loss_curve([]).data


def test_loss_curve_draws_kd_terms():
    records = [{"kind": "train", "step": 1, "loss": 5.0, "ce": 6.0, "kl": 4.5},
               {"kind": "train", "step": 2, "loss": 4.0, "ce": 5.0, "kl": 3.5}]
    figure = charts.loss_curve(records)
    assert [t.name for t in figure.data] == ["training loss", "KD term: label cross-entropy",
                                             "KD term: soft-target KL × T²"]
    assert list(figure.data[2].y) == [4.5, 3.5]


def test_rouge_and_validation_loss_and_size_bars():
    rouge = charts.rouge_bars(METRICS)
    assert [t.name for t in rouge.data] == ["Base (teacher)", "Student"]
    assert list(rouge.data[1].y) == [36.0, 17.0, 31.5]
    assert list(rouge.data[1].text) == ["90%", "85%", "90%"]
    assert [list(c) for c in rouge.data[0].customdata][0] == [50.0, 30.0]
    assert "precision" in rouge.data[0].hovertemplate and "recall" in rouge.data[0].hovertemplate
    assert list(rouge.data[0].error_y.array) == [2.0, 2.0, 2.0]
    assert rouge.layout.yaxis.title.text == "F1 (0-100)"

    loss = charts.validation_loss_bars(METRICS)
    assert list(loss.data[0].y) == [2.5, 2.9] and list(loss.data[0].text) == ["2.500", "2.900"]
    assert loss.layout.yaxis.title.text == "loss (nats/token)"

    size = charts.size_latency_bars(METRICS)
    assert [list(t.y) for t in size.data] == [[2.0, 1.0], [8.0, 4.0], [40.0, 20.0]]
    # names on two lines under the narrow panels, whole in the hover text
    assert list(size.data[0].x) == ["Base<br>(teacher)", "Student"]
    assert list(size.data[0].customdata) == ["Base (teacher)", "Student"]
    assert [a.text for a in size.layout.annotations] == ["Parameters (millions)", "Size on disk (MiB)",
                                                         "Latency (ms / summary)"]
    for empty in (charts.rouge_bars(None), charts.validation_loss_bars({}), charts.size_latency_bars(None)):
        assert not empty.data and empty.layout.title.text


def test_runs_charts():
    overlay = charts.loss_overlay({"a": [{"kind": "train", "step": 1, "loss": 3.0}],
                                   "b": [{"kind": "train", "step": 1, "loss": 2.0},
                                         {"kind": "eval", "step": 1, "eval_loss": 2.2}]})
    assert [t.name for t in overlay.data] == ["a · train", "b · train", "b · validation"]
    comparison = charts.runs_comparison({"a": METRICS, "b": {"student": METRICS["base"]}, "c": {}})
    assert [t.name for t in comparison.data] == ["a", "a", "b", "b"]
    assert list(comparison.data[1].y) == [2.9]
