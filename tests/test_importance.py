"""Layer importance (Block Influence, angular distance, drop-one loss) and the importance strategy."""

from __future__ import annotations

import json

import datasets
import pytest
import torch
from transformers import BartForConditionalGeneration, T5ForConditionalGeneration

from compression.__main__ import main
from compression.config import DataArgs, EvalArgs, RunConfig, ShrinkArgs, TrainArgs
from compression.data import tokenize_pairs
from compression.errors import LayerSelectionError
from compression.importance import importance_table, layer_importance, shrink_by_importance
from compression.layers import get_layer_stacks, select_layers, shrink
from conftest import ARTICLES, tiny_bart_config, tiny_t5_config


@pytest.fixture
def calibration(byt5_tokenizer):
    pairs = datasets.Dataset.from_dict({"document": [a for a, _ in ARTICLES], "summary": [s for _, s in ARTICLES]})
    return tokenize_pairs(pairs, byt5_tokenizer, prefix="", max_source_length=48, max_target_length=12)


def make_identity(model, stack: str, index: int) -> None:
    """Zero every attention-output and feed-forward-output weight of one layer: its output is its input
    (exactly for T5's pre-norm residual blocks; up to the post-norm's epsilon for BART)."""
    layer = get_layer_stacks(model)[0 if stack == "encoder" else 1][index]
    with torch.no_grad():
        for name, param in layer.named_parameters():
            if any(part in name for part in (".o.", "out_proj", ".wo.", "fc2")):
                param.zero_()


def t5():
    torch.manual_seed(0)
    return T5ForConditionalGeneration(tiny_t5_config()).eval()


def bart():
    torch.manual_seed(0)  # a wide init makes the post-norm layers differ visibly from the identity
    return BartForConditionalGeneration(tiny_bart_config(init_std=0.5)).eval()


@pytest.mark.parametrize("build, tolerance", [(t5, 1e-6), (bart, 1e-4)], ids=["t5", "bart"])
@pytest.mark.parametrize("index", [0, 2])
def test_identity_layer_is_least_important_and_free_to_drop(build, tolerance, index, calibration, byt5_tokenizer):
    model = build()
    make_identity(model, "encoder", index)
    make_identity(model, "decoder", 3 - index)
    scores = layer_importance(model, byt5_tokenizer, calibration, batch_size=4)
    for stack, identity in (("encoder", index), ("decoder", 3 - index)):
        influence = scores[stack]["block_influence"]
        assert len(influence) == 4 and len(scores[stack]["drop_one_loss"]) == 4
        assert min(range(4), key=influence.__getitem__) == identity
        assert influence[identity] == pytest.approx(0.0, abs=tolerance)
        assert scores[stack]["angular_distance"]["1"][identity] == pytest.approx(0.0, abs=10 * tolerance ** 0.5)
        assert scores[stack]["drop_one_loss"][identity] == pytest.approx(0.0, abs=tolerance)
        assert [len(scores[stack]["angular_distance"][str(n)]) for n in range(1, 5)] == [4, 3, 2, 1]
    assert scores["samples"] == len(ARTICLES) and scores["base_loss"] > 0
    assert "block infl." in importance_table(scores)


def test_scoring_leaves_the_model_unchanged(calibration, byt5_tokenizer):
    model = t5()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    layer_importance(model, byt5_tokenizer, calibration, batch_size=8, drop_one=False)
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert all(not module._forward_hooks and not module._forward_pre_hooks for module in model.modules())


def test_select_layers_by_importance():
    assert select_layers(4, 2, "importance", scores=[0.3, 0.1, 0.5, 0.2]) == [0, 2]
    assert select_layers(4, 3, "importance", scores=[1.0, 1.0, 1.0, 0.0]) == [0, 1, 2]
    with pytest.raises(LayerSelectionError, match="one score per"):
        select_layers(4, 2, "importance")
    with pytest.raises(LayerSelectionError, match="importance score"):
        ShrinkArgs(2, 2, "importance", importance_score="magic")


@pytest.mark.parametrize("score", ["drop_one_loss", "block_influence"])
def test_importance_student_drops_the_identity_layers_and_records_the_scores(score, calibration, byt5_tokenizer):
    model = t5()
    make_identity(model, "encoder", 0)
    make_identity(model, "decoder", 2)
    student, importance = shrink_by_importance(model, byt5_tokenizer, calibration, 3, 3, score=score)
    record = student.config.shrink
    assert record["strategy"] == "importance"
    for stack in ("encoder", "decoder"):  # the lowest-scoring layer is the one dropped
        values = importance[stack][score]
        assert set(range(4)) - set(record[f"{stack}_layers_kept"]) == {min(range(4), key=values.__getitem__)}
    assert record["importance"]["score"] == score
    assert record["importance"]["encoder"] == importance["encoder"][score]
    assert record["importance"]["samples"] == len(ARTICLES)
    if score == "block_influence":  # the identity layers go (T5 layer 0 included) and the logits stay as they were
        assert record["encoder_layers_kept"] == [1, 2, 3] and record["decoder_layers_kept"] == [0, 1, 3]
        batch = {"input_ids": torch.tensor([[5, 17, 42, 1]]), "decoder_input_ids": torch.tensor([[0, 12, 40]])}
        with torch.no_grad():
            torch.testing.assert_close(student(**batch).logits, model(**batch).logits, atol=1e-5, rtol=1e-5)


def test_shrink_without_scores_refuses_importance(tiny_t5):
    with pytest.raises(LayerSelectionError, match="score the layers"):
        shrink(tiny_t5, 2, 2, "importance")


def test_cli_importance_json_and_shrink(tiny_t5_dir, tiny_jsonl, tmp_path, capsys):
    train, _ = tiny_jsonl
    assert main(["--json", "importance", "--model", str(tiny_t5_dir), "--data", str(train), "--samples", "3",
                 "--max-source-length", "32"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert set(scores["encoder"]) == {"block_influence", "drop_one_loss", "angular_distance"}
    assert len(scores["decoder"]["drop_one_loss"]) == 4 and list(scores["decoder"]["angular_distance"]) == list("1234")
    out = tmp_path / "student"
    assert main(["shrink", "--model", str(tiny_t5_dir), "--encoder-layers", "2", "--decoder-layers", "2",
                 "--strategy", "importance", "--importance-score", "block_influence", "--importance-samples", "2",
                 "--data", str(train), "--output", str(out)]) == 0
    record = json.loads((out / "config.json").read_text())["shrink"]
    assert record["importance"]["score"] == "block_influence" and len(record["encoder_layers_kept"]) == 2
    capsys.readouterr()
    assert main(["shrink", "--model", str(tiny_t5_dir), "--encoder-layers", "2", "--strategy", "importance",
                 "--output", str(tmp_path / "x")]) == 2
    assert "--data" in capsys.readouterr().err


def test_run_with_importance_strategy_records_scores(tiny_t5_dir, tiny_jsonl, tmp_path):
    from compression.pipeline import run_pipeline

    train, validation = tiny_jsonl
    config = RunConfig(model=str(tiny_t5_dir), output_dir=str(tmp_path / "run"),
                       shrink=ShrinkArgs(2, 2, "importance", "block_influence", importance_samples=4),
                       data=DataArgs(train_file=str(train), validation_file=str(validation), max_source_length=32,
                                     max_target_length=8),
                       train=TrainArgs(batch_size=4, max_steps=1),
                       eval=EvalArgs(max_new_tokens=2, bootstrap_samples=5, latency_samples=0, batch_size=4),
                       quantize="none")
    result = run_pipeline(config, progress_bar=False)
    assert result["status"] == "complete"
    run = tmp_path / "run"
    assert json.loads((run / "importance.json").read_text())["samples"] == 4
    record = json.loads((run / "student" / "config.json").read_text())["shrink"]
    assert record["strategy"] == "importance" and record["importance"]["score"] == "block_influence"


def test_calibration_shuffle_seed_scores_a_seeded_sample_of_the_file(tiny_t5_dir, tiny_jsonl, tmp_path, capsys):
    """A sorted file's first rows are one end of it: ``--shuffle-seed`` calibrates on the rows a
    seeded ``datasets`` shuffle puts first, and the CLI's scores are those of that sample."""
    from compression.importance import load_calibration
    from compression.load import load_model

    train, _ = tiny_jsonl
    model, tokenizer = load_model(str(tiny_t5_dir))
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    reordered = tmp_path / "reordered.jsonl"  # the file as the seeded shuffle orders it
    reordered.write_text("".join(json.dumps(row) + "\n" for row in datasets.Dataset.from_list(rows).shuffle(seed=5)))
    sample = load_calibration(train, tokenizer, model, samples=3, shuffle_seed=5, max_source_length=32)
    expected = load_calibration(reordered, tokenizer, model, samples=3, max_source_length=32)
    first = load_calibration(train, tokenizer, model, samples=3, max_source_length=32)
    assert sample["input_ids"] == expected["input_ids"] != first["input_ids"]
    assert main(["--json", "importance", "--model", str(tiny_t5_dir), "--data", str(train), "--samples", "3",
                 "--max-source-length", "32", "--shuffle-seed", "5"]) == 0
    scores = json.loads(capsys.readouterr().out)
    direct = layer_importance(model, tokenizer, sample)
    assert scores["encoder"]["drop_one_loss"] == pytest.approx(direct["encoder"]["drop_one_loss"], abs=1e-6)


def test_calibration_from_a_dataset_preset(tiny_t5_dir, tiny_jsonl, tmp_path, monkeypatch, capsys):
    """``--dataset PRESET`` calibrates on the preset's training split with the preset's lengths, as
    ``--data`` does on a file (a stand-in shared folder here, so the test needs no ../shared); one
    source only, and a preset name, else a DatasetError that says what to give."""
    from compression.dataset_presets import SHARED_ENV
    from compression.errors import DatasetError
    from compression.importance import load_calibration
    from compression.load import load_model

    train, validation = tiny_jsonl
    folder = tmp_path / "shared" / "data" / "xsum"
    folder.mkdir(parents=True)
    (folder / "train.jsonl").write_text(train.read_text())
    (folder / "validation.jsonl").write_text(validation.read_text())
    monkeypatch.setenv(SHARED_ENV, str(tmp_path / "shared"))
    model, tokenizer = load_model(str(tiny_t5_dir))
    from_preset = load_calibration(None, tokenizer, model, dataset="xsum-sample", samples=3)
    from_file = load_calibration(train, tokenizer, model, samples=3, max_source_length=512, max_target_length=64)
    assert from_preset["input_ids"] == from_file["input_ids"] and from_preset["labels"] == from_file["labels"]
    for path, dataset, message in ((None, None, "neither"), (train, "xsum-sample", "both"),
                                   (None, "EdinburghNLP/xsum", "not a dataset preset")):
        with pytest.raises(DatasetError, match=message):
            load_calibration(path, tokenizer, model, dataset=dataset)

    assert main(["--json", "importance", "--model", str(tiny_t5_dir), "--dataset", "xsum-sample",
                 "--samples", "3"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["samples"] == 3
    assert scores["encoder"]["drop_one_loss"] == pytest.approx(
        layer_importance(model, tokenizer, from_file)["encoder"]["drop_one_loss"], abs=1e-6)
    out = tmp_path / "student"
    assert main(["shrink", "--model", str(tiny_t5_dir), "--encoder-layers", "2", "--decoder-layers", "2",
                 "--strategy", "importance", "--importance-samples", "2", "--dataset", "xsum-sample",
                 "--output", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["shrink"]["strategy"] == "importance"
    capsys.readouterr()
    assert main(["importance", "--model", str(tiny_t5_dir), "--data", str(train), "--dataset", "xsum-sample"]) == 2
    assert "not allowed with" in capsys.readouterr().err
