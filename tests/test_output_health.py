"""Guard rails: degenerate-output flags, agreement with the teacher, ROUGE-L vs ROUGE-Lsum labels."""

from __future__ import annotations

from compression.metrics import ROUGE_LABELS, agreement, output_health
from compression.table import compare_table, table_notes
from conftest import ARTICLES

NORMAL = [summary for _, summary in ARTICLES]


def test_degenerate_flag_fires_on_repeated_text():
    health = output_health(["the the the the the"] * 6)
    assert health["degenerate"] and health["repetition_rate"] > 0.5 and health["distinct_2"] < 0.2
    # the same fluent-looking text for every document: caught by distinct-2 across documents
    same = output_health(["A new report has been published by the council today"] * 10)
    assert same["degenerate"] and any("distinct-2" in reason for reason in same["reasons"])
    empty = output_health(["", " ", "", "ok then"])
    assert empty["degenerate"] and empty["empty_fraction"] == 0.75


def test_degenerate_flag_quiet_on_normal_text():
    health = output_health(NORMAL)
    assert not health["degenerate"] and health["reasons"] == [] and health["empty_fraction"] == 0.0
    assert health["repetition_rate"] < 0.1 and health["distinct_2"] > 0.9


def test_agreement_is_100_for_identical_outputs():
    assert agreement(NORMAL, list(NORMAL)) == {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0, "rougeLsum": 100.0,
                                               "identical": 100.0}
    assert agreement(["", "one"], ["", "one"])["rouge2"] == 100.0  # empty pairs and one-word summaries too
    partial = agreement(NORMAL, list(reversed(NORMAL)))
    assert 0 <= partial["rouge1"] < 50 and partial["identical"] == 0.0
    # the identical share counts summaries equal after stripping, one in four here
    assert agreement(["a cat sat ", "b", "c", "d"], ["a cat sat", "x", "y", "z"])["identical"] == 25.0


def test_table_labels_rouge_l_kinds_and_flags():
    base = {"rouge1": 10.0, "rouge2": 1.0, "rougeL": 9.0, "rougeLsum": 9.5,
            "output_health": output_health(["the the the the"] * 6)}
    student = dict(base, agreement={"rouge1": 80.0, "rougeL": 75.0}, output_health=output_health(NORMAL))
    table = compare_table({"base": base, "student": student})
    header, _, base_row, student_row = table.splitlines()
    assert "R-L sent" in header and "R-Lsum" in header and "agree R-1/R-L" in header
    assert base_row.rstrip().endswith("degenerate") and student_row.rstrip().endswith("ok")
    assert "80.0/75.0" in student_row
    notes = table_notes({"base": base, "student": student})
    assert "sentence-level" in notes and "rougeLsum" in notes and "base: degenerate output" in notes
    assert "student: degenerate" not in notes
    assert "agree:" in notes and "= student %" not in notes  # a legend entry per column some row fills
    assert "agree:" not in table_notes({"base": base})
    assert ROUGE_LABELS["rougeL"] == "ROUGE-L (sentence)" and "summary-level" in ROUGE_LABELS["rougeLsum"]


def test_page_shows_flags_and_agreement():
    from components import results_panel

    metrics = {"base": {"rouge1": 5.0, "output_health": output_health(["the the the"] * 6)},
               "student": {"rouge1": 5.0, "agreement": {"rouge1": 100.0, "rougeL": 100.0},
                           "output_health": output_health(NORMAL), "percent_of_base": {"rouge1": 100.0}}}
    table = results_panel.metrics_table(metrics)
    assert list(table["output"])[0].startswith("degenerate") and list(table["output"])[1] == "ok"
    assert list(table["agreement with base ROUGE-1"])[1] == 100.0
    assert "ROUGE-L (sentence)" in table.columns and "ROUGE-Lsum (summary-level)" in table.columns
    assert "Degenerate output" in results_panel.headline_markdown(metrics)


def test_copies_show_how_often_they_write_the_students_summary():
    """``= student %`` in the CLI table and the dashboard's column and headline: the share of a
    quantized or deployed copy's summaries identical to the float32 student's."""
    from components import results_panel

    row = {"rouge1": 30.0, "rouge2": 10.0, "rougeL": 28.0, "latency_ms": 100.0, "size_mib": 40.0}
    metrics = {"base": row, "student": dict(row, latency_ms=60.0),
               "deployed": dict(row, latency_ms=25.0, size_mib=9.5, quantization="int8",
                                agreement_with_student={"rouge1": 97.0, "identical": 87.5})}
    table = compare_table(metrics)
    header, _, base_row, student_row, deployed_row = table.splitlines()
    assert "= student %" in header and "87.5" in deployed_row and "87.5" not in student_row
    assert "= student %" in table_notes(metrics)
    frame = results_panel.metrics_table(metrics)
    assert list(frame["summaries identical to the student (%)"])[2] == 87.5
    assert frame["summaries identical to the student (%)"].isna().tolist()[:2] == [True, True]
    headline = results_panel.headline_markdown(metrics)
    assert "**Deployed copy (CTranslate2 int8):** **4.0×** faster per summary than the base" in headline
    assert "9.5 MiB" in headline and "**88%** of its summaries identical to the student's" in headline
