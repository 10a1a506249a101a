"""The offline teacher recipe: its defaults reach the CLI, and a few steps train, prune and save a teacher.

No test trains the real teacher: these run two optimizer steps on eight pairs with the byte tokenizer.
"""

from __future__ import annotations

import json

import torch

from compression.__main__ import build_parser, main
from compression.teacher import TEACHER_RECIPE
from compression.vocab import pruning_info


def test_recipe_defaults_and_overrides():
    args = build_parser().parse_args(["teacher", "--output", "x"])
    assert (args.preset, args.dataset, args.max_source_length, args.learning_rate, args.batch_size) == (
        "tiny", "debian-descriptions", 128, TEACHER_RECIPE["learning_rate"], 32)
    assert args.prune_vocab and args.dropout == 0.0 and args.warmup_ratio == TEACHER_RECIPE["warmup_ratio"]
    assert args.optimizer == "adafactor" and args.score_beams == 4
    args = build_parser().parse_args(["teacher", "--output", "x", "--learning-rate", "1e-3", "--preset", "tiny-nl2",
                                      "--no-prune-vocab", "--max-steps", "7"])
    assert (args.learning_rate, args.preset, args.prune_vocab, args.max_steps) == (1e-3, "tiny-nl2", False, 7)


def test_teacher_command_trains_prunes_and_saves(tiny_jsonl, tmp_path, capsys):
    train, validation = tiny_jsonl
    output = tmp_path / "teacher"
    code = main(["--json", "teacher", "--preset", "tiny-nl2", "--tokenizer", "byt5", "--train-file", str(train),
                 "--validation-file", str(validation), "--max-steps", "2", "--batch-size", "4",
                 "--logging-steps", "1", "--max-target-length", "16", "--bf16", "no", "--output", str(output)])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "complete" and result["train"]["steps"] == 2
    assert result["metrics"]["validation_loss"] > 0 and "rouge1" in result["metrics"]
    # scored twice: greedy (the students' decoding) and beam 4; teacher-forced loss does not depend on decoding
    assert result["score_beams"] == 4 and "rouge1" in result["metrics_beam"]
    assert result["metrics_beam"]["validation_loss"] == result["metrics"]["validation_loss"]
    from safetensors import safe_open

    from compression.load import is_untrained, load_model

    with safe_open(output / "model.safetensors", "pt") as weights:  # saved compact, as the recipe says
        assert {str(weights.get_slice(name).get_dtype()) for name in weights.keys()} == {"BF16"}
    model, _ = load_model(output)
    assert next(model.parameters()).dtype == torch.float32  # read back as fp32 for training and scoring
    assert not is_untrained(model)  # training removed the preset's mark
    assert model.config.task_specific_params["summarization"]["prefix"] == "summarize: "  # the prefix it learned
    info = pruning_info(model)
    assert info is not None and model.config.vocab_size == len(info["kept_ids"]) < info["original_vocab_size"]
    card = (output / "README.md").read_text()
    assert "Offline teacher (tiny-nl2 preset" in card and (output / "loss_log.jsonl").is_file()
    assert "trained from random initialisation" in card and "- Training time: " in card and "2 steps" in card
    assert "- Weights stored as: bfloat16" in card
    assert "| teacher (greedy) |" in card and "| teacher (beam 4) |" in card

    # a student shrunk from the pruned teacher trains on the same tokenized data (ids mapped by the collator)
    code = main(["--json", "run", "--model", str(output), "--train-file", str(train), "--validation-file",
                 str(validation), "--encoder-layers", "1", "--decoder-layers", "1", "--max-steps", "1",
                 "--batch-size", "4", "--bf16", "no", "--quantize", "none", "--latency-samples", "0",
                 "--max-new-tokens", "8", "--output", str(tmp_path / "run")])
    assert code == 0
    run = json.loads(capsys.readouterr().out)
    assert run["status"] == "complete" and run["metrics"]["student"]["validation_loss"] > 0


def test_untrained_base_is_said_plainly(tmp_path):
    from components import results_panel
    from compression.load import build_preset, is_untrained
    from compression.table import table_notes

    model, _ = build_preset("tiny-nl2", "byt5")
    assert is_untrained(model)
    metrics = {"base": {"rouge1": 1.0, "params": 10, "untrained": True, "latency_ms": 2.0},
               "student": {"rouge1": 1.0, "params": 5, "latency_ms": 1.0, "percent_of_base": {"rouge1": 100.0}}}
    assert "untrained preset" in results_panel.headline_markdown(metrics)
    assert "base: an untrained preset" in table_notes(metrics)
    metrics["base"]["untrained"] = False
    assert "untrained" not in results_panel.headline_markdown(metrics)


def test_teacher_card_carries_command_and_time():
    from compression.card import ModelCard

    card = ModelCard().updated({"method": "trained from random initialisation (the offline teacher recipe)",
                                "command": "python -m compression teacher --output x", "training_time": "12 s"})
    text = card.render()
    assert card.method == "teacher" and "offline-teacher" in text
    assert "```bash\npython -m compression teacher --output x\n```" in text and "- Training time: 12 s" in text


def test_score_beams_below_one_is_refused_before_anything_is_built(tmp_path):
    import pytest

    from compression.config import DataArgs, TrainArgs
    from compression.errors import CompressionError
    from compression.teacher import train_teacher

    with pytest.raises(CompressionError, match="score_beams must be at least 1"):
        train_teacher(DataArgs(), TrainArgs(), tmp_path / "teacher", score_beams=0)
    assert not (tmp_path / "teacher").exists()
