"""Sequence-level KD (pseudo-labels): the teacher's generate() output becomes the targets, cached per teacher."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import torch
from test_pipeline import tiny_config

from compression import evaluate
from compression import pseudo_labels as pl
from compression.config import PseudoArgs, TrainArgs
from compression.errors import CompressionError, DatasetError
from compression.pipeline import run_pipeline
from conftest import ARTICLES

DOCUMENTS = [document for document, _ in ARTICLES[:4]]
SETTINGS = dict(prefix="", max_source_length=64, max_new_tokens=6)


@pytest.fixture
def teacher(tiny_t5):
    """The tiny random T5, made to write at least two printable ASCII bytes (ByT5 ids 36-130; pad, unk,
    control bytes, non-ASCII bytes and sentinels would decode to nothing), so its pseudo-labels are not
    empty; generate() honours these rules (the model.generate path)."""
    tiny_t5.generation_config.suppress_tokens = [0, 2, *range(3, 36), *range(131, 384)]
    tiny_t5.generation_config.min_new_tokens = 2
    return tiny_t5


@pytest.fixture
def teacher_dir(teacher, byt5_tokenizer, tmp_path):
    path = tmp_path / "teacher"
    teacher.save_pretrained(path)
    byt5_tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def generate_calls(monkeypatch):
    """Counts calls of generate_summaries, the one place pseudo-labels are generated."""
    calls = []
    real = evaluate.generate_summaries

    def counting(*args, **kwargs):
        calls.append(len(args[2]))
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "generate_summaries", counting)
    return calls


def test_labels_equal_the_teachers_generate_output(teacher, byt5_tokenizer):
    labels, info = pl.pseudo_labels(teacher, byt5_tokenizer, DOCUMENTS, batch_size=1, **SETTINGS)
    expected = []
    for document in DOCUMENTS:
        batch = byt5_tokenizer([document], max_length=64, truncation=True, return_tensors="pt")
        with torch.no_grad():
            output = teacher.generate(**batch, max_new_tokens=6, num_beams=1, do_sample=False)
        expected.append(byt5_tokenizer.batch_decode(output, skip_special_tokens=True)[0].strip())
    assert labels == expected and info == {"cache_file": None, "cached": False, "generated": 4}
    # ... and they are the student's targets
    pairs = datasets.Dataset.from_dict({"document": DOCUMENTS, "summary": ["ref"] * 4})
    targets, counts = pl.pseudo_label_pairs(pairs, labels, PseudoArgs())
    assert all(label.strip() for label in labels)
    assert targets["summary"] == labels and counts["pseudo"] == 4


def test_generation_is_cached_and_reused(teacher, byt5_tokenizer, tmp_path, generate_calls):
    first, info = pl.pseudo_labels(teacher, byt5_tokenizer, DOCUMENTS, cache_dir=tmp_path, **SETTINGS)
    assert generate_calls == [4] and not info["cached"] and Path(info["cache_file"]).is_file()
    second, again = pl.pseudo_labels(teacher, byt5_tokenizer, DOCUMENTS, cache_dir=tmp_path, **SETTINGS)
    assert generate_calls == [4], "the second call must not generate"
    assert second == first and again == {"cache_file": info["cache_file"], "cached": True, "generated": 0}
    # other decoding settings, other documents or other weights: a different cache entry
    pl.pseudo_labels(teacher, byt5_tokenizer, DOCUMENTS, cache_dir=tmp_path, **dict(SETTINGS, max_new_tokens=5))
    pl.pseudo_labels(teacher, byt5_tokenizer, DOCUMENTS[:3], cache_dir=tmp_path, **SETTINGS)
    with torch.no_grad():
        teacher.shared.weight[5, 0] += 1.0
    pl.pseudo_labels(teacher, byt5_tokenizer, DOCUMENTS, cache_dir=tmp_path, **SETTINGS)
    assert generate_calls == [4, 4, 3, 4]


def test_filter_and_mix():
    pairs = datasets.Dataset.from_dict({"document": ["a b", "c d", "e f"],
                                        "summary": ["the cat sat", "dogs bark", "birds sing"]})
    labels = ["", "dogs bark", "fish swim"]
    data, counts = pl.pseudo_label_pairs(pairs, labels, PseudoArgs(pseudo_min_rouge=50))
    assert data["summary"] == ["dogs bark"] and (counts["dropped_empty"], counts["dropped_rouge"]) == (1, 1)
    data, counts = pl.pseudo_label_pairs(pairs, labels, PseudoArgs(pseudo_mix_references=True))
    assert data["summary"] == ["dogs bark", "fish swim", "the cat sat", "dogs bark", "birds sing"]
    with pytest.raises(DatasetError, match="no pseudo-labels left"):
        pl.pseudo_label_pairs(pairs, ["", "", ""], PseudoArgs())
    with pytest.raises(CompressionError, match="<= 100"):
        PseudoArgs(pseudo_min_rouge=150)


def test_pseudo_run_reuses_the_labels_for_a_second_student(teacher_dir, tiny_jsonl, tmp_path, generate_calls):
    def pseudo_run(name, layers):
        config = tiny_config(teacher_dir, *tiny_jsonl, tmp_path / "runs" / name, method="pseudo", quantize="none",
                             train=TrainArgs(batch_size=4, learning_rate=1e-3, logging_steps=1, max_steps=1))
        config.shrink.decoder_layers = layers
        return run_pipeline(config, progress_bar=False)

    first = pseudo_run("a", 2)
    info = json.loads((Path(first["run_dir"]) / "pseudo_labels.json").read_text())
    assert first["status"] == "complete" and not info["cached"] and info["generated"] == 8
    assert Path(info["cache_file"]).parent == tmp_path / "runs" / ".pseudo-labels"
    assert "pseudo-labels" in (Path(first["run_dir"]) / "student" / "README.md").read_text()
    stored = json.loads((Path(first["run_dir"]) / "metrics.json").read_text())
    assert "degenerate" in stored["base"]["output_health"] and "degenerate" in stored["student"]["output_health"]
    assert set(stored["student"]["agreement"]) == {"rouge1", "rouge2", "rougeL", "rougeLsum", "identical"}
    calls = len(generate_calls)
    second = pseudo_run("b", 1)
    info = json.loads((Path(second["run_dir"]) / "pseudo_labels.json").read_text())
    assert info["cached"] and info["generated"] == 0
    # the second run generated only for its evaluation (base and student), not for pseudo-labels
    assert len(generate_calls) - calls == 2
