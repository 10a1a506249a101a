"""The deployed (CTranslate2) copy: conversion with CTranslate2's converter, exact greedy ids in
float32, int8 close to PyTorch, score_batch loss equal to PyTorch's teacher-forced loss, and a
clear note for families the converter refuses. Tiny models built here; no hub."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import ARTICLES, tiny_bart_config, tiny_t5_config, untie_head

pytest.importorskip("ctranslate2")

from compression.config import EvalArgs  # noqa: E402
from compression.deploy import DeployedModel, deployed_size_mib, evaluate_deployed, export_ct2  # noqa: E402
from compression.errors import CompressionError, DeployUnsupportedError  # noqa: E402
from compression.evaluate import compute_validation_loss  # noqa: E402
from compression.generation import generate  # noqa: E402

DOCUMENTS = [document for document, _ in ARTICLES]
SUMMARIES = [summary for _, summary in ARTICLES]


def _save(model, tokenizer, path):
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _pytorch_ids(model, tokenizer, documents, max_new_tokens, num_beams=1):
    """PyTorch's output ids per document (batch 1), without the decoder start and end token."""
    out = []
    for document in documents:
        batch = tokenizer([document], return_tensors="pt", max_length=64, truncation=True)
        with torch.no_grad():
            ids = generate(model, batch["input_ids"], batch["attention_mask"], max_new_tokens=max_new_tokens,
                           num_beams=num_beams)[0].tolist()[1:]
        ids = [i for i in ids if i != tokenizer.pad_token_id]
        out.append(ids[:-1] if ids and ids[-1] == tokenizer.eos_token_id else ids)
    return out


def _deployed_ids(folder, documents, max_new_tokens, num_beams=1):
    deployed = DeployedModel(folder, threads=1)
    sources = deployed.source_tokens(documents, prefix="", max_source_length=64)
    return deployed.generate_ids(sources, max_new_tokens=max_new_tokens, num_beams=num_beams)


def _student_t5():
    """A shrunk T5 student: 3 encoder layers, 1 decoder layer (num_decoder_layers != num_layers)."""
    from transformers import T5ForConditionalGeneration

    from compression.layers import shrink

    torch.manual_seed(0)
    return shrink(T5ForConditionalGeneration(tiny_t5_config()).eval(), 3, 1).eval()


def _t5_v11():
    """T5 v1.1 / t5-efficient style: gated-GELU, an LM head of its own, no output scaling."""
    from transformers import T5ForConditionalGeneration

    torch.manual_seed(0)
    return untie_head(T5ForConditionalGeneration(tiny_t5_config(feed_forward_proj="gated-gelu",
                                                                tie_word_embeddings=False))).eval()


def _mt5():
    """mT5: transformers 5 never scales its decoder output, whatever the config says (this one
    inherits T5's ``scale_decoder_outputs``), and its head is its own."""
    from transformers import MT5Config, MT5ForConditionalGeneration

    torch.manual_seed(0)
    return untie_head(MT5ForConditionalGeneration(MT5Config(**tiny_t5_config().to_dict()))).eval()


def _bart():
    from transformers import BartForConditionalGeneration

    torch.manual_seed(0)
    return BartForConditionalGeneration(tiny_bart_config()).eval()


@pytest.mark.parametrize("make", [_student_t5, _t5_v11, _mt5, _bart],
                         ids=["t5-student-3x1", "t5-v1.1-untied", "mt5-untied", "bart"])
def test_float32_copy_gives_pytorch_greedy_and_beam_ids(make, tmp_path, byt5_tokenizer):
    model = make()
    folder = export_ct2(_save(model, byt5_tokenizer, tmp_path / "student"), tmp_path / "deployed",
                        quantization="float32")
    assert _deployed_ids(folder, DOCUMENTS, 20) == _pytorch_ids(model, byt5_tokenizer, DOCUMENTS, 20)
    assert (_deployed_ids(folder, DOCUMENTS[:3], 12, num_beams=4)
            == _pytorch_ids(model, byt5_tokenizer, DOCUMENTS[:3], 12, num_beams=4))


@pytest.mark.parametrize("make", [_student_t5, _t5_v11, _mt5, _bart],
                         ids=["t5-student-3x1", "t5-v1.1-untied", "mt5-untied", "bart"])
def test_score_batch_loss_equals_pytorch_teacher_forced_loss(make, tmp_path, byt5_tokenizer):
    model = make()
    folder = export_ct2(_save(model, byt5_tokenizer, tmp_path / "student"), tmp_path / "deployed",
                        quantization="float32")
    lengths = dict(prefix="summarize: ", max_source_length=48, max_target_length=12)
    expected = compute_validation_loss(model, byt5_tokenizer, DOCUMENTS, SUMMARIES, batch_size=3, **lengths)
    got = DeployedModel(folder, threads=1).validation_loss(DOCUMENTS, SUMMARIES, batch_size=3, **lengths)
    assert got == pytest.approx(expected, abs=1e-3)


def test_pruned_vocabulary_student_converts_and_matches(tmp_path, byt5_tokenizer):
    from compression.vocab import prune_for_texts

    model = prune_for_texts(_student_t5(), byt5_tokenizer, DOCUMENTS + SUMMARIES)
    assert model.config.vocab_size < len(byt5_tokenizer)
    folder = export_ct2(_save(model, byt5_tokenizer, tmp_path / "pruned"), tmp_path / "deployed",
                        quantization="float32")
    assert json.loads((folder / "deploy.json").read_text())["pruned_vocab"] is True
    assert _deployed_ids(folder, DOCUMENTS, 16) == _pytorch_ids(model, byt5_tokenizer, DOCUMENTS, 16)
    lengths = dict(prefix="", max_source_length=48, max_target_length=12)
    expected = compute_validation_loss(model, byt5_tokenizer, DOCUMENTS, SUMMARIES, batch_size=4, **lengths)
    got = DeployedModel(folder, threads=1).validation_loss(DOCUMENTS, SUMMARIES, **lengths)
    assert got == pytest.approx(expected, abs=1e-3)


SHORT = [document[:40] for document in DOCUMENTS[:4]]


def _fitted(model, tokenizer, steps):
    """Fit the model to four short pairs, so its greedy choices are clear (a random model's
    near-ties flip under any rounding, which says nothing about int8)."""
    documents, summaries = SHORT, SUMMARIES[:4]
    batch = tokenizer(documents, return_tensors="pt", padding=True)
    labels = tokenizer(text_target=summaries, return_tensors="pt", padding=True)["input_ids"]
    labels[labels == tokenizer.pad_token_id] = -100
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_int8_copy_keeps_at_least_90_percent_of_greedy_tokens(family, tmp_path, byt5_tokenizer):
    from transformers import BartForConditionalGeneration, T5ForConditionalGeneration

    torch.manual_seed(0)
    model = (T5ForConditionalGeneration(tiny_t5_config()) if family == "t5"
             else BartForConditionalGeneration(tiny_bart_config()))
    model = _fitted(model, byt5_tokenizer, steps=100 if family == "t5" else 60)
    folder = export_ct2(_save(model, byt5_tokenizer, tmp_path / "student"), tmp_path / "deployed",
                        quantization="int8")
    assert json.loads((folder / "deploy.json").read_text())["quantization"] == "int8"
    expected = _pytorch_ids(model, byt5_tokenizer, SHORT, 24)
    got = _deployed_ids(folder, SHORT, 24)
    same = sum(a == b for want, have in zip(expected, got) for a, b in zip(want, have))
    assert same / sum(len(want) for want in expected) >= 0.9


def test_export_folder_card_tokenizer_and_evaluation(tmp_path, byt5_tokenizer):
    folder = export_ct2(_save(_bart(), byt5_tokenizer, tmp_path / "student"), tmp_path / "deployed",
                        quantization="int8", prefix="")
    card = (folder / "README.md").read_text()
    assert "ctranslate2.Translator" in card and "int8" in card
    assert (folder / "model.bin").is_file() and (folder / "tokenizer_config.json").is_file()
    assert 0 < deployed_size_mib(folder) < 1
    assert not list(tmp_path.glob(".deployed.tmp-*"))
    args = EvalArgs(max_new_tokens=8, batch_size=4, bootstrap_samples=20, latency_samples=2)
    result = evaluate_deployed(folder, DOCUMENTS[:4], SUMMARIES[:4], prefix="", max_source_length=48,
                               max_target_length=12, args=args, threads=1)
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum", "validation_loss", "size_mib", "latency_ms",
                "latency_ms_batched"):
        assert result[key] is not None and result[key] >= 0, key
    assert result["latency_batch_size"] == 4 and result["format"] == "ct2"
    assert len(result["predictions"]) == 4
    # converting again replaces the copy; a foreign non-empty folder is refused
    export_ct2(tmp_path / "student", folder, quantization="float32")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(CompressionError, match="not a deployed copy"):
        export_ct2(tmp_path / "student", tmp_path / "other")
    with pytest.raises(CompressionError, match="unknown CTranslate2 quantization"):
        export_ct2(tmp_path / "student", tmp_path / "x", quantization="int4")


def test_family_the_converter_refuses_gives_a_clear_note(tmp_path, byt5_tokenizer):
    from transformers import LongT5Config, LongT5ForConditionalGeneration

    config = LongT5Config(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1,
                          num_heads=2, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model = LongT5ForConditionalGeneration(config).eval()
    with pytest.raises(DeployUnsupportedError, match="not supported by CTranslate2"):
        export_ct2(_save(model, byt5_tokenizer, tmp_path / "longt5"), tmp_path / "deployed")
    assert not (tmp_path / "deployed").exists()
    assert not list(tmp_path.glob(".deployed.tmp-*"))


def test_a_bitsandbytes_copy_is_refused_with_what_to_export_instead(tmp_path, byt5_tokenizer):
    """A run's quantized/ folder (bitsandbytes weights) is not something CTranslate2's converter
    reads; the export says to convert the float student, and writes nothing."""
    from compression.errors import ModelLoadError

    folder = _save(_student_t5(), byt5_tokenizer, tmp_path / "quantized")
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_8bit": True}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="export the float32 student"):
        export_ct2(folder, tmp_path / "deployed")
    assert not (tmp_path / "deployed").exists()


def test_cli_export_writes_a_ct2_copy(tmp_path, byt5_tokenizer, capsys):
    from compression.__main__ import main

    student = _save(_bart(), byt5_tokenizer, tmp_path / "student")
    assert main(["--json", "export", "--model", str(student), "--format", "ct2", "--quantization", "int8",
                 "--output", str(tmp_path / "deployed")]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["quantization"] == "int8" and payload["size_mib"] > 0
    assert json.loads((tmp_path / "deployed" / "deploy.json").read_text())["prefix"] == ""
    assert main(["export", "--model", str(tmp_path / "missing"), "--output", str(tmp_path / "x")]) == 2
    # `evaluate` scores a deployed folder like a checkpoint: ROUGE, validation loss, size, latency
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"document": d, "summary": s}) + "\n" for d, s in zip(DOCUMENTS, SUMMARIES)))
    assert main(["--json", "evaluate", "--model", str(tmp_path / "deployed"), "--validation-file", str(pairs),
                 "--max-new-tokens", "8", "--latency-samples", "1", "--bootstrap-samples", "10",
                 "--max-source-length", "48", "--max-target-length", "12"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["format"] == "ct2" and scored["quantization"] == "int8" and scored["validation_loss"] > 0
    assert scored["size_mib"] == payload["size_mib"] and "degenerate" in scored["output_health"]
    # a deployed copy given where a checkpoint to shrink is needed: said so, nothing written
    assert main(["shrink", "--model", str(tmp_path / "deployed"), "--encoder-layers", "1", "--decoder-layers", "1",
                 "--output", str(tmp_path / "shrunk")]) == 2
    assert "is a deployed CTranslate2 copy" in capsys.readouterr().err and not (tmp_path / "shrunk").exists()


def test_run_table_prints_the_deployed_row_or_its_note():
    from compression.table import compare_table

    row = {"params": 10, "size_mib": 1.0, "rouge1": 10.0, "rouge2": 1.0, "rougeL": 9.0, "validation_loss": 2.0,
           "latency_ms": 5.0, "latency_ms_batched": 1.5}
    table = compare_table({"base": row, "deployed": dict(row, params=None, latency_ms=1.0)})
    deployed = table.splitlines()[3].split()
    header = table.splitlines()[0]
    assert deployed[0] == "deployed" and "batched ms" in header
    assert deployed[-2] == "1.5"  # the batched-latency column, before the output-health column
    note = "not supported by CTranslate2 4.8.5: its converter refuses this longt5 checkpoint"
    table = compare_table({"base": row, "deployed": {"note": note}})
    assert table.splitlines()[-1] == f"deployed: {note}" and len(table.splitlines()) == 4


def test_deploy_benchmark_quality_only_writes_its_own_table(tiny_t5_dir, shared_dir, tmp_path, monkeypatch):
    """``python -m benchmarks.deploy --quality-only``: the teacher and its CTranslate2 copies on the
    Debian validation pairs, written to deploy-quality.json without touching the speed tables."""
    from benchmarks import common, deploy

    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path / "results")
    assert deploy.main(["--quick", "--quality-only", "--teacher", str(tiny_t5_dir)]) == 0
    written = json.loads((tmp_path / "results" / "deploy-quality.json").read_text())["results"]["quality"]
    assert written["pairs"] == 50 and [row["copy"] for row in written["rows"]] == ["PyTorch fp32", "CT2 float32",
                                                                                   "CT2 int8"]
    float32 = written["rows"][1]
    assert float32["identical"] == 1.0 and abs(float32["delta_nats"]) < 1e-3
    assert not (tmp_path / "results" / "deploy.json").exists()
    assert "CT2 int8" in (tmp_path / "results" / "deploy-quality.md").read_text()
