"""The whole run (pipeline.run_pipeline, SFT and KD) and the command line on a tiny model and tiny data."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from compression.__main__ import main
from compression.config import DataArgs, EvalArgs, KDArgs, RunConfig, ShrinkArgs, TrainArgs
from compression.errors import CompressionError, DatasetError
from compression.pipeline import run_pipeline

ROOT = Path(__file__).resolve().parents[1]
FAST_EVAL = EvalArgs(max_new_tokens=4, bootstrap_samples=20, latency_samples=1, batch_size=4)


def tiny_config(model_dir, train_file, validation_file, output, **overrides) -> RunConfig:
    values = dict(model=str(model_dir), output_dir=str(output), shrink=ShrinkArgs(2, "1,3", "spread"),
                  data=DataArgs(train_file=str(train_file), validation_file=str(validation_file),
                                max_source_length=64, max_target_length=16),
                  train=TrainArgs(batch_size=4, learning_rate=1e-3, logging_steps=1), eval=FAST_EVAL,
                  quantize="8bit")
    values.update(overrides)
    return RunConfig(**values)


def test_run_pipeline_writes_a_complete_run(tiny_t5_dir, tiny_jsonl, tmp_path):
    events = []
    result = run_pipeline(tiny_config(tiny_t5_dir, *tiny_jsonl, tmp_path / "run"), on_progress=events.append,
                     progress_bar=False)
    run = Path(result["run_dir"])
    assert result["status"] == "complete"
    assert json.loads((run / "status.json").read_text())["status"] == "complete"
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"base", "student", "quantized", "deployed"}
    assert metrics["deployed"]["quantization"] == "int8" and metrics["deployed"]["latency_ms_batched"] > 0
    assert (run / "deployed" / "model.bin").is_file()
    card = (run / "deployed" / "README.md").read_text()
    assert "ctranslate2.Translator" in card
    # scored like the others (agreement with the base, output health) and against the student it copies
    assert set(metrics["deployed"]["agreement"]) == {"rouge1", "rouge2", "rougeL", "rougeLsum", "identical"}
    assert "degenerate" in metrics["deployed"]["output_health"]
    assert metrics["deployed"]["params"] == metrics["student"]["params"]  # converted as it is
    summaries = [json.loads(line) for line in (run / "summaries.jsonl").read_text().splitlines()]
    for copy in ("quantized", "deployed"):  # every validation summary is in summaries.jsonl (4 pairs)
        same = sum(row[copy].strip() == row["student"].strip() for row in summaries)
        assert metrics[copy]["agreement_with_student"]["identical"] == 100.0 * same / len(summaries)
    assert f"{metrics['deployed']['agreement_with_student']['identical']:.1f} % of the validation summaries" in card
    for row in metrics.values():
        for key in ("params", "size_mib", "rouge1", "rouge2", "rougeL", "latency_ms", "validation_loss"):
            assert key in row
    assert metrics["student"]["params"] < metrics["base"]["params"]
    assert "percent_of_base" in metrics["student"] and "percent_of_base" in metrics["quantized"]
    assert metrics == result["metrics"]
    stages = [e["stage"] for e in events if e["kind"] == "stage"]
    assert stages == ["load", "shrink", "train", "evaluate", "export", "quantize", "deploy", "done"]
    assert any(e["kind"] == "train" for e in events) and any(e["kind"] == "eval" for e in events)
    summarized = [e for e in events if e["kind"] == "summaries"]  # evaluation progress, per batch
    assert {e["model"] for e in summarized} == {"base", "student", "quantized", "deployed"}
    assert all(e["total"] == summarized[0]["total"] and 0 < e["done"] <= e["total"] for e in summarized)
    assert summarized[-1]["done"] == summarized[-1]["total"] and summarized[-1]["eta_s"] == 0
    assert summarized[-1]["model"] == "deployed"  # the CTranslate2 copy's evaluation, reported last
    deploy_stage = next(i for i, e in enumerate(events) if e.get("stage") == "deploy")
    assert all(i > deploy_stage for i, e in enumerate(events) if e.get("model") == "deployed")
    log = [json.loads(line) for line in (run / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"] == [1, 2]
    student_config = json.loads((run / "student" / "config.json").read_text())
    assert student_config["shrink"]["encoder_layers_kept"] == [0, 3]
    assert student_config["shrink"]["decoder_layers_kept"] == [1, 3]
    assert student_config["task_specific_params"]["summarization"]["prefix"] == "summarize: "  # what it learned
    assert "Kept decoder layers: 1, 3 (of 4 teacher layers)" in (run / "student" / "README.md").read_text()
    assert len(summaries) == 4 and set(summaries[0]) >= {"document", "reference", "base", "student", "quantized",
                                                         "deployed"}
    assert (run / "quantized" / "config.json").is_file()


def test_kd_run_distils_from_the_base_and_logs_each_term(tiny_t5_dir, tiny_jsonl, tmp_path):
    config = tiny_config(tiny_t5_dir, *tiny_jsonl, tmp_path / "run", method="kd", quantize="none",
                         kd=KDArgs(alpha_ce=0.5, alpha_kl=0.5, alpha_hidden=0.1))
    result = run_pipeline(config, progress_bar=False)
    run = Path(result["run_dir"])
    assert result["status"] == "complete"
    stored = json.loads((run / "config.json").read_text())
    assert stored["method"] == "kd" and stored["kd"]["alpha_hidden"] == 0.1
    train = [json.loads(line) for line in (run / "loss_log.jsonl").read_text().splitlines()]
    train = [r for r in train if r["kind"] == "train"]
    assert train and all({"ce", "kl", "hidden"} <= set(r) and "attention" not in r for r in train)
    card = (run / "student" / "README.md").read_text()
    assert "Method: knowledge distillation" in card and "Shrink and Fine-Tune" not in card
    assert "- knowledge-distillation" in card and "- sft" not in card
    # the run's student is the KD one: same shape as SFT's, different weights
    sft = run_pipeline(tiny_config(tiny_t5_dir, *tiny_jsonl, tmp_path / "sft", quantize="none"), progress_bar=False)
    assert result["metrics"]["student"]["params"] == sft["metrics"]["student"]["params"]
    assert result["metrics"]["student"]["validation_loss"] != sft["metrics"]["student"]["validation_loss"]


def test_unknown_method_is_refused(tiny_t5_dir, tiny_jsonl, tmp_path):
    with pytest.raises(CompressionError, match="sft"):
        tiny_config(tiny_t5_dir, *tiny_jsonl, tmp_path / "run", method="theseus")


def test_cancel_keeps_log_and_checkpoint(tiny_t5_dir, tiny_jsonl, tmp_path):
    cancel = threading.Event()

    def on_progress(event):
        if event["kind"] == "train":
            cancel.set()

    config = tiny_config(tiny_t5_dir, *tiny_jsonl, tmp_path / "run", train=TrainArgs(batch_size=2, logging_steps=1))
    result = run_pipeline(config, on_progress=on_progress, cancel=cancel, progress_bar=False)
    run = Path(result["run_dir"])
    assert result["status"] == "cancelled"
    assert json.loads((run / "status.json").read_text())["status"] == "cancelled"
    assert (run / "loss_log.jsonl").read_text().strip()
    assert (run / "last-checkpoint" / "config.json").is_file()
    assert not (run / "metrics.json").exists()


def test_failed_run_is_never_complete(tiny_t5_dir, tiny_jsonl, tmp_path, monkeypatch):
    from compression import pipeline
    from compression.errors import OutOfMemoryError

    config = tiny_config(tiny_t5_dir, *tiny_jsonl, tmp_path / "run")
    config.data.text_column = "article"
    with pytest.raises(DatasetError, match="article"):
        run_pipeline(config, progress_bar=False)
    assert not (tmp_path / "run").exists()  # an input error is found before the run folder is made

    def out_of_memory(*args, **kwargs):
        raise OutOfMemoryError("training ran out of memory: lower the batch size")

    monkeypatch.setattr(pipeline, "finetune", out_of_memory)
    with pytest.raises(OutOfMemoryError):
        run_pipeline(tiny_config(tiny_t5_dir, *tiny_jsonl, tmp_path / "run"), progress_bar=False)
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "failed" and "lower the batch size" in status["reason"]


def test_cli_init_shrink_run(tmp_path, tiny_jsonl, capsys):
    train, validation = tiny_jsonl
    assert main(["init", "--preset", "tiny", "--tokenizer", "byt5", "--output", str(tmp_path / "base")]) == 0
    assert main(["--json", "shrink", "--model", str(tmp_path / "base"), "--encoder-layers", "2",
                 "--decoder-layers", "0,2,3", "--output", str(tmp_path / "student")]) == 0
    capsys.readouterr()
    config = json.loads((tmp_path / "student" / "config.json").read_text())
    assert (config["num_layers"], config["num_decoder_layers"]) == (2, 3)
    assert config["shrink"]["encoder_layers_kept"] == [0, 3]
    code = main(["--json", "run", "--model", str(tmp_path / "student"), "--train-file", str(train),
                 "--validation-file", str(validation), "--encoder-layers", "1", "--decoder-layers", "1",
                 "--max-source-length", "48", "--max-target-length", "12", "--max-new-tokens", "3",
                 "--bootstrap-samples", "10", "--latency-samples", "1", "--quantize", "none",
                 "--max-steps", "2", "--method", "kd", "--temperature", "3", "--output", str(tmp_path / "run")])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["status"] == "complete" and printed["metrics"]["quantized"] is None
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["student"]["params"] == \
        printed["metrics"]["student"]["params"]
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["method"] == "kd" and stored["kd"]["temperature"] == 3.0


@pytest.mark.parametrize("argv, message", [
    (["shrink", "--model", "{model}", "--encoder-layers", "9", "--output", "{tmp}/s"], "only 4"),
    (["shrink", "--model", "{model}", "--decoder-layers", "0", "--output", "{tmp}/s"], "at least 1"),
    (["shrink", "--model", "{model}", "--decoder-layers", "1,1", "--output", "{tmp}/s"], "repeat"),
    (["shrink", "--model", "{tmp}/missing", "--decoder-layers", "1", "--output", "{tmp}/s"], "does not exist"),
    (["finetune", "--model", "{model}", "--train-file", "{tmp}/none.jsonl", "--output", "{tmp}/f"], "none.jsonl"),
    (["finetune", "--model", "{model}", "--train-file", "{train}", "--text-column", "body", "--output", "{tmp}/f"],
     "body"),
    (["quantize", "--model", "{model}", "--mode", "3bit", "--output", "{tmp}/q"], "3bit"),
])
def test_cli_user_errors_exit_2_with_one_line(argv, message, tiny_t5_dir, tiny_jsonl, tmp_path, capsys):
    values = {"model": str(tiny_t5_dir), "tmp": str(tmp_path), "train": str(tiny_jsonl[0])}
    assert main([part.format(**values) for part in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "Traceback" not in err


@pytest.mark.parametrize("command", [
    ["shrink", "--encoder-layers", "1", "--output", "{tmp}/out"],
    ["finetune", "--train-file", "{train}", "--output", "{tmp}/out"],
    ["prune-width", "--ffn-keep", "8", "--data", "{train}", "--output", "{tmp}/out"],
    ["quantize", "--mode", "8bit", "--output", "{tmp}/out"],
    ["run", "--train-file", "{train}", "--encoder-layers", "1", "--output", "{tmp}/out"],
    ["distill", "--teacher", "{quantized}", "--train-file", "{train}", "--encoder-layers", "1", "--output", "{tmp}/out"],
    ["modular-train", "--teacher", "{quantized}", "--train-file", "{train}", "--output", "{tmp}/out"],
], ids=["shrink", "finetune", "prune-width", "quantize", "run", "distill", "modular-train"])
def test_a_quantized_copy_is_refused_where_a_float_checkpoint_is_needed(command, tiny_t5_dir, tiny_jsonl, tmp_path,
                                                                        capsys):
    """A run's quantized/ folder (bitsandbytes weights; its config's quantization_config, faked here
    so no kernel runs) gets one line saying to use the float student, and no output folder, where
    transformers gave tracebacks (NotImplementedError, "cannot fine-tune purely quantized models")."""
    import shutil

    quantized = tmp_path / "quantized"
    shutil.copytree(tiny_t5_dir, quantized)
    config = json.loads((quantized / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_8bit": True}
    (quantized / "config.json").write_text(json.dumps(config))
    values = {"tmp": str(tmp_path), "train": str(tiny_jsonl[0]), "quantized": str(quantized)}
    argv = [part.format(**values) for part in command]
    if "--teacher" not in argv:
        argv[1:1] = ["--model", str(quantized)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "quantized copy" in err and "student" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_cli_subprocess_exit_status(tmp_path):
    """The real entry point: a user error is one line on stderr and exit status 2."""
    done = subprocess.run([sys.executable, "-m", "compression", "shrink", "--model", str(tmp_path / "nope"),
                           "--encoder-layers", "1", "--output", str(tmp_path / "s")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: ") and "Traceback" not in done.stderr


def test_cli_distill_modular_train_and_assemble(tiny_t5_dir, tiny_jsonl, tmp_path, capsys):
    train, validation = tiny_jsonl
    data = ["--train-file", str(train), "--validation-file", str(validation), "--max-source-length", "48",
            "--max-target-length", "12", "--max-steps", "2", "--batch-size", "4"]
    assert main(["--json", "distill", "--teacher", str(tiny_t5_dir), "--encoder-layers", "2",
                 "--decoder-layers", "2", "--alpha-hidden", "1.0", *data, "--output", str(tmp_path / "kd")]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 2
    kd_config = json.loads((tmp_path / "kd" / "config.json").read_text())
    assert kd_config["shrink"]["decoder_layers_kept"] == [0, 3]
    assert kd_config["task_specific_params"]["summarization"]["prefix"] == "summarize: "  # the prompt it learned

    assert main(["--json", "modular-train", "--teacher", str(tiny_t5_dir), "--granularities", "2", *data,
                 "--output", str(tmp_path / "modular")]) == 0
    assert json.loads(capsys.readouterr().out)["max_ratio"]["size"] == 2.0  # 8 layers -> 2 + 2 modules
    assert main(["--json", "assemble", "--modular", str(tmp_path / "modular"), "--ratio", "2",
                 "--priority", "speed", "--output", str(tmp_path / "assembled")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["encoder_layers"] + printed["decoder_layers"] == 4
    # speed-first's stack: auto (short inputs here: the decoder) or the --speed-cut flag
    for cut, layers in (("auto", (4, 2)), ("encoder", (2, 4)), ("decoder", (4, 2))):
        assert main(["--json", "assemble", "--modular", str(tmp_path / "modular"), "--ratio", str(4 / 3),
                     "--priority", "speed", "--speed-cut", cut, "--max-source-length", "48",
                     "--output", str(tmp_path / f"assembled-{cut}")]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert (printed["encoder_layers"], printed["decoder_layers"]) == layers
        assert printed["modular"]["speed_stack"] == ("decoder" if cut == "auto" else cut)
        assert printed["modular"]["source_length"] == 48
    assert main(["assemble", "--modular", str(tmp_path / "modular"), "--ratio", "2", "--score",
                 "--validation-file", str(validation), "--max-eval-samples", "2", "--max-new-tokens", "4"]) == 0
    table = capsys.readouterr().out
    assert "scored on 2 pairs" in table and "teacher" in table and "modular (size-first)" in table
    assert main(["--json", "assemble", "--modular", str(tmp_path / "modular"), "--ratio", "2", "--score",
                 "--validation-file", str(validation), "--max-eval-samples", "2", "--max-new-tokens", "4"]) == 0
    point = json.loads(capsys.readouterr().out)["point"]
    assert point["ratio"] == 2.0 and point["speedup"] > 0 and point["validation_loss"] > 0
    assert main(["assemble", "--modular", str(tmp_path / "modular"), "--ratio", "9", "--output",
                 str(tmp_path / "x")]) == 2
    assert "ratio" in capsys.readouterr().err


def test_cli_finetune_saves_model_beside_its_loss_log(tiny_t5_dir, tiny_jsonl, tmp_path, capsys):
    train, validation = tiny_jsonl
    argv = ["--json", "finetune", "--model", str(tiny_t5_dir), "--train-file", str(train), "--validation-file",
            str(validation), "--max-steps", "2", "--batch-size", "4", "--logging-steps", "1",
            "--output", str(tmp_path / "teacher")]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 2
    assert (tmp_path / "teacher" / "model.safetensors").is_file()
    assert len((tmp_path / "teacher" / "loss_log.jsonl").read_text().splitlines()) >= 2
    saved = json.loads((tmp_path / "teacher" / "config.json").read_text())
    assert saved["task_specific_params"]["summarization"]["prefix"] == "summarize: "  # the prompt it learned
    assert main(argv) == 0  # fine-tuning again into the same folder replaces the model


def test_run_pipeline_auto_quantization_with_pruned_vocabulary(tiny_t5_dir, tiny_jsonl, tmp_path, monkeypatch):
    from compression import auto_quantize

    # the measurement is forced (no test depends on this CPU): 8-bit as fast as float32, 4-bit slower
    monkeypatch.setattr(auto_quantize, "default_cache_path", lambda: tmp_path / "cache.json")
    monkeypatch.setattr(auto_quantize, "_measure", lambda student, device, candidates, *a: (
        {m: {"4bit": 0.5}.get(m, 1.0) for m in candidates}, {m: {"4bit": 0.2}.get(m, 0.4) for m in candidates}))
    config = tiny_config(tiny_t5_dir, *tiny_jsonl, tmp_path / "run", quantize="auto", prune_vocab=True,
                         train=TrainArgs(batch_size=8, max_steps=1))
    result = run_pipeline(config, progress_bar=False)
    quantized = result["metrics"]["quantized"]
    assert quantized["mode"] in ("8bit", "bf16") and quantized["pruned_vocab"] is True
    assert quantized["auto"]["reason"].startswith(("8-bit chosen", "bf16 chosen"))
    saved = json.loads((Path(result["run_dir"]) / "quantized" / "config.json").read_text())
    assert saved["vocab_size"] < 384 and "vocab_pruning" in saved
    deployed = json.loads((Path(result["run_dir"]) / "deployed" / "deploy.json").read_text())
    assert deployed["pruned_vocab"] is True and result["metrics"]["deployed"]["pruned_vocab"] is True
    # the deployed copy counts the pruned model's weights (fewer embedding rows than the student's)
    assert result["metrics"]["deployed"]["params"] < result["metrics"]["student"]["params"]


def test_run_pipeline_quantizes_wo_too_and_reloads_the_run(tiny_t5_dir, tiny_jsonl, tmp_path):
    import bitsandbytes as bnb

    from compression.pipeline import load_run_models

    config = tiny_config(tiny_t5_dir, *tiny_jsonl, tmp_path / "run", quantize="8bit", quantize_wo=True,
                         train=TrainArgs(batch_size=8, max_steps=1))
    result = run_pipeline(config, progress_bar=False)
    assert result["metrics"]["quantized"]["quantized_wo"] is True
    saved = json.loads((Path(result["run_dir"]) / "quantized" / "config.json").read_text())
    assert saved["quantized_wo"] is True and saved["architectures"] == ["T5ForConditionalGeneration"]
    assert "compression.load import load_model" in (Path(result["run_dir"]) / "quantized" / "README.md").read_text()
    quantized, _ = load_run_models(result["run_dir"])["quantized"]
    assert isinstance(quantized.decoder.block[0].layer[2].DenseReluDense.wo, bnb.nn.Linear8bitLt)
