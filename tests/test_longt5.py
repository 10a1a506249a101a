"""LongT5 (local and transient-global encoder attention): presets, shrink, cached generation,
save/load with plain transformers, and a whole SFT run, on tiny configs built here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, LongT5Config, LongT5ForConditionalGeneration

from compression.config import DataArgs, EvalArgs, RunConfig, ShrinkArgs, TrainArgs
from compression.layers import get_layer_stacks, shrink
from compression.load import PRESETS, build_preset, describe_model, load_model
from compression.pipeline import run_pipeline

ATTENTION = ("local", "transient-global")
# 40 source tokens: with local radius 3 (blocks of 4) and global blocks of 4 tokens, several local
# and global blocks, and padding in the second row.
INPUTS = torch.randint(3, 380, (2, 40), generator=torch.Generator().manual_seed(0))
INPUTS[:, -1] = 1
INPUTS[1, 30:] = 0
MASK = (INPUTS != 0).long()
DECODER_INPUTS = torch.tensor([[0, 12, 40, 7, 9], [0, 3, 3, 200, 15]])


def tiny_longt5(attention: str) -> LongT5ForConditionalGeneration:
    config = LongT5Config(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=4, num_decoder_layers=4,
                          num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=16,
                          encoder_attention_type=attention, local_radius=3, global_block_size=4,
                          dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    return LongT5ForConditionalGeneration(config).eval()


def logits(model):
    with torch.no_grad():
        return model(input_ids=INPUTS, attention_mask=MASK, decoder_input_ids=DECODER_INPUTS).logits


def test_longt5_presets_build_local_and_tglobal_at_t5_efficient_widths():
    for width in ("tiny", "mini", "small"):
        for name in ("local", "tglobal"):
            assert PRESETS[f"longt5-{name}-{width}"]["d_model"] == PRESETS[width]["d_model"]
    model, _ = build_preset("longt5-tglobal-tiny", "byt5")
    assert isinstance(model, LongT5ForConditionalGeneration)
    assert model.config.encoder_attention_type == "transient-global"
    assert (model.config.local_radius, model.config.global_block_size) == (127, 16)
    facts = describe_model(model)
    assert facts["family"] == "t5" and facts["model_type"] == "longt5" and facts["encoder_layers"] == 4
    local, _ = build_preset("longt5-local-tiny", "byt5")
    assert local.config.encoder_attention_type == "local"
    plain, _ = build_preset("tiny", "byt5")  # the T5 presets are unchanged
    assert type(plain).__name__ == "T5ForConditionalGeneration"


@pytest.mark.parametrize("attention", ATTENTION)
def test_shrink_keeping_every_layer_keeps_the_logits_exactly(attention):
    teacher = tiny_longt5(attention)
    student = shrink(teacher, 4, 4)
    assert torch.equal(logits(student), logits(teacher))


@pytest.mark.parametrize("attention", ATTENTION)
def test_shrink_without_layer_0_moves_the_position_biases(attention):
    teacher = tiny_longt5(attention)
    student = shrink(teacher, "1,3", "2,3")
    encoder, decoder = get_layer_stacks(student)
    assert len(encoder) == 2 and len(decoder) == 2
    assert (student.config.num_layers, student.config.num_decoder_layers) == (2, 2)
    kind = "TransientGlobalSelfAttention" if attention == "transient-global" else "LocalSelfAttention"
    first, source = getattr(encoder[0].layer[0], kind), getattr(get_layer_stacks(teacher)[0][0].layer[0], kind)
    assert first.has_relative_attention_bias
    assert torch.equal(first.relative_attention_bias.weight, source.relative_attention_bias.weight)
    if attention == "transient-global":
        # the side (global) bias lives in layer 0 too; every tglobal layer keeps its own global-input norm
        assert torch.equal(first.global_relative_attention_bias.weight, source.global_relative_attention_bias.weight)
        assert all(hasattr(block.layer[0].TransientGlobalSelfAttention, "global_input_layer_norm") for block in encoder)
    assert decoder[0].layer[0].SelfAttention.has_relative_attention_bias
    assert torch.isfinite(logits(student)).all()


@pytest.mark.parametrize("attention", ATTENTION)
def test_shrunk_longt5_generates_with_cache_and_loads_with_plain_transformers(attention, tmp_path):
    student = shrink(tiny_longt5(attention), "1,3", "0,3")
    settings = dict(input_ids=INPUTS, attention_mask=MASK, max_new_tokens=6, do_sample=False, num_beams=1)
    with torch.no_grad():
        cached = student.generate(**settings, use_cache=True)
        uncached = student.generate(**settings, use_cache=False)
    assert torch.equal(cached, uncached)
    student.save_pretrained(tmp_path / "student")
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "student").eval()
    assert isinstance(loaded, LongT5ForConditionalGeneration)
    assert torch.equal(logits(loaded), logits(student))
    with torch.no_grad():
        assert torch.equal(loaded.generate(**settings, use_cache=True), cached)


def test_longt5_sft_run_evaluates_and_saves_a_plain_checkpoint(tiny_jsonl, byt5_tokenizer, tmp_path):
    base = tmp_path / "base"
    tiny_longt5("transient-global").save_pretrained(base)
    byt5_tokenizer.save_pretrained(base)
    model, _ = load_model(base)
    assert model.config.model_type == "longt5"
    train_file, validation_file = tiny_jsonl
    config = RunConfig(model=str(base), output_dir=str(tmp_path / "run"), shrink=ShrinkArgs(2, 2),
                       data=DataArgs(train_file=str(train_file), validation_file=str(validation_file),
                                     max_source_length=96, max_target_length=16),
                       train=TrainArgs(batch_size=4, max_steps=2, logging_steps=1),
                       eval=EvalArgs(max_new_tokens=4, bootstrap_samples=10, latency_samples=0, batch_size=4),
                       quantize="none", deploy=False)
    result = run_pipeline(config, progress_bar=False)
    assert result["status"] == "complete"
    run = Path(result["run_dir"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["student"]["validation_loss"] > 0 and "rougeL" in metrics["student"]
    student = AutoModelForSeq2SeqLM.from_pretrained(run / "student")
    assert isinstance(student, LongT5ForConditionalGeneration)
    assert (student.config.num_layers, student.config.num_decoder_layers) == (2, 2)
    assert student.config.encoder_attention_type == "transient-global"


def _loss_and_gradients(model):
    model.zero_grad(set_to_none=True)
    labels = DECODER_INPUTS[:, 1:].clone()
    loss = model(input_ids=INPUTS, attention_mask=MASK, labels=labels).loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("attention", ATTENTION)
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(attention):
    model = tiny_longt5(attention).train()
    loss, gradients = _loss_and_gradients(model)
    model.activation_checkpointing_enable()
    assert model.is_gradient_checkpointing
    checkpointed_loss, checkpointed = _loss_and_gradients(model)
    assert torch.allclose(checkpointed_loss, loss, atol=1e-5, rtol=0)
    assert checkpointed.keys() == gradients.keys() and len(gradients) > 10
    for name, gradient in gradients.items():
        assert torch.allclose(checkpointed[name], gradient, atol=1e-5, rtol=0), name


def test_gradient_checkpointing_setting_auto_follows_the_source_length(byt5_tokenizer, tmp_path, monkeypatch):
    import datasets
    from transformers import PreTrainedModel

    from compression.data import tokenize_pairs
    from compression.errors import CompressionError
    from compression.train import CHECKPOINTING_FROM, checkpointing_enabled, finetune

    assert not checkpointing_enabled(TrainArgs(), CHECKPOINTING_FROM - 1)
    assert checkpointing_enabled(TrainArgs(), CHECKPOINTING_FROM)
    assert checkpointing_enabled(TrainArgs(gradient_checkpointing="yes"), 10)
    assert not checkpointing_enabled(TrainArgs(gradient_checkpointing="no"), 10 ** 6)
    with pytest.raises(CompressionError, match="gradient checkpointing"):
        TrainArgs(gradient_checkpointing="sometimes")
    assert DataArgs(max_source_length=16_384).max_source_length == 16_384
    with pytest.raises(CompressionError, match="max source length"):
        DataArgs(max_source_length=16_385)

    calls = []
    original = PreTrainedModel.activation_checkpointing_enable
    monkeypatch.setattr(PreTrainedModel, "activation_checkpointing_enable",
                        lambda self, *a, **k: calls.append(True) or original(self, *a, **k))
    pairs = datasets.Dataset.from_list([{"document": "A long article " * 4, "summary": "short"}] * 4)
    data = tokenize_pairs(pairs, byt5_tokenizer, prefix="", max_source_length=64, max_target_length=8)
    model = tiny_longt5("transient-global")
    finetune(model, byt5_tokenizer, data, None, TrainArgs(batch_size=2, max_steps=1, gradient_checkpointing="yes"),
             tmp_path / "on", progress_bar=False)
    assert calls and not model.is_gradient_checkpointing  # used while training, off again afterwards
    calls.clear()
    finetune(model, byt5_tokenizer, data, None, TrainArgs(batch_size=2, max_steps=1), tmp_path / "auto",
             progress_bar=False)
    assert not calls  # 64-token sources: auto leaves it off
