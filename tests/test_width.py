"""Width pruning: feed-forward neurons (T5, gated T5, BART) and T5 attention heads into plain checkpoints."""

from __future__ import annotations

import json

import datasets
import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, BartForConditionalGeneration, T5ForConditionalGeneration

from compression.__main__ import main
from compression.arch import t5_self_attention
from compression.data import tokenize_pairs
from compression.errors import WidthPruningError
from compression.layers import shrink
from compression.width import prune_width
from conftest import ARTICLES, tiny_bart_config, tiny_longt5_config, tiny_t5_config

BATCH = {"input_ids": torch.tensor([[5, 17, 42, 99, 7, 1], [8, 120, 33, 1, 0, 0]]),
         "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]),
         "decoder_input_ids": torch.tensor([[0, 12, 40, 7], [0, 3, 3, 200]])}


def logits(model):
    with torch.no_grad():
        return model(**BATCH).logits


@pytest.fixture
def calibration(byt5_tokenizer):
    pairs = datasets.Dataset.from_dict({"document": [a for a, _ in ARTICLES], "summary": [s for _, s in ARTICLES]})
    return tokenize_pairs(pairs, byt5_tokenizer, prefix="", max_source_length=48, max_target_length=12)


def t5(**overrides):
    torch.manual_seed(0)
    return T5ForConditionalGeneration(tiny_t5_config(**overrides)).eval()


def bart():
    torch.manual_seed(0)
    return BartForConditionalGeneration(tiny_bart_config()).eval()


@pytest.mark.parametrize("build, heads", [(t5, 4), (lambda: t5(feed_forward_proj="gated-gelu"), 4), (bart, None)],
                         ids=["t5", "t5-gated", "bart"])
def test_keeping_everything_reproduces_the_logits_exactly(build, heads, calibration, byt5_tokenizer):
    model = build()
    pruned = prune_width(model, byt5_tokenizer, calibration, ffn_keep=64, heads_keep=heads)
    assert torch.equal(logits(pruned), logits(model))


@pytest.mark.parametrize("build, ffn, heads", [(t5, 24, 2), (lambda: t5(feed_forward_proj="gated-gelu"), 16, 3),
                                               (bart, 24, None)], ids=["t5", "t5-gated", "bart"])
def test_pruned_checkpoint_loads_with_plain_transformers_and_generates_with_cache(
        build, ffn, heads, calibration, byt5_tokenizer, tmp_path):
    model = build()
    pruned = prune_width(model, byt5_tokenizer, calibration, ffn_keep=ffn, heads_keep=heads)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    pruned.save_pretrained(tmp_path / "pruned")
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "pruned").eval()
    config = json.loads((tmp_path / "pruned" / "config.json").read_text())
    if model.config.model_type == "t5":
        assert config["d_ff"] == ffn and config["num_heads"] == heads
        assert loaded.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.shape[1] == heads
    else:
        assert config["encoder_ffn_dim"] == config["decoder_ffn_dim"] == ffn
    assert config["width"]["ffn"]["encoder"] == ffn
    torch.testing.assert_close(logits(loaded), logits(pruned), atol=0, rtol=0)
    inputs = {key: BATCH[key] for key in ("input_ids", "attention_mask")}
    cached = loaded.generate(**inputs, max_new_tokens=6, do_sample=False, use_cache=True)
    uncached = loaded.generate(**inputs, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


def longt5(attention: str):
    from transformers import LongT5ForConditionalGeneration

    torch.manual_seed(0)
    return LongT5ForConditionalGeneration(tiny_longt5_config(attention)).eval()


def umt5():
    from transformers import UMT5Config, UMT5ForConditionalGeneration

    torch.manual_seed(0)
    return UMT5ForConditionalGeneration(UMT5Config(**tiny_t5_config().to_dict())).eval()


@pytest.mark.parametrize("build", [t5, umt5, lambda: longt5("local"), lambda: longt5("transient-global")],
                         ids=["t5", "umt5", "longt5-local", "longt5-tglobal"])
def test_pruning_heads_equals_masking_them(build, calibration, byt5_tokenizer):
    """Also UMT5 (a position bias in every layer) and LongT5's local and transient-global encoder
    attention, whose layer-0 biases (and the global tokens' bias) are pruned to the kept heads."""
    model = build()
    pruned = prune_width(model, byt5_tokenizer, calibration, heads_keep=2)
    kept = pruned.config.width["heads_kept"]
    d_kv = model.config.d_kv
    handles = []

    def mask_heads(heads):
        def hook(module, args):
            keep = torch.zeros(module.in_features // d_kv, dtype=torch.bool)
            keep[heads] = True
            return (args[0] * keep.repeat_interleave(d_kv).to(args[0].dtype),)
        return hook

    for layer in model.encoder.block:
        handles.append(t5_self_attention(layer).o.register_forward_pre_hook(mask_heads(kept["encoder"])))
    for index, layer in enumerate(model.decoder.block):
        handles.append(layer.layer[0].SelfAttention.o.register_forward_pre_hook(mask_heads(kept["decoder"])))
        handles.append(layer.layer[1].EncDecAttention.o.register_forward_pre_hook(mask_heads(kept["cross"][index])))
    masked = logits(model)
    for handle in handles:
        handle.remove()
    assert not torch.allclose(masked, logits(model), atol=1e-3)  # the masking did change the model
    torch.testing.assert_close(logits(pruned), masked, atol=1e-5, rtol=1e-5)


def test_width_pruning_combines_with_depth_pruning(calibration, byt5_tokenizer, tmp_path):
    student = prune_width(shrink(t5(), 2, "0,3"), byt5_tokenizer, calibration, ffn_keep=32, heads_keep=2)
    student.save_pretrained(tmp_path / "both")
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "both").eval()
    assert (loaded.config.num_layers, loaded.config.num_decoder_layers, loaded.config.d_ff) == (2, 2, 32)
    assert loaded.config.shrink["decoder_layers_kept"] == [0, 3]
    assert loaded.generate(input_ids=BATCH["input_ids"], max_new_tokens=4, do_sample=False).shape[0] == 2


@pytest.mark.parametrize("build, ffn, heads, message", [
    (t5, 0, None, "choose 1 to 64"), (t5, 65, None, "choose 1 to 64"), (t5, None, 0, "choose 1 to 4"),
    (t5, None, 5, "choose 1 to 4"), (bart, None, 2, "cannot be written as a plain"), (bart, 100, None, "choose 1"),
], ids=["ffn-0", "ffn-above", "heads-0", "heads-above", "bart-heads", "bart-ffn-above"])
def test_bad_keep_counts_raise_typed_errors(build, ffn, heads, message, calibration, byt5_tokenizer):
    with pytest.raises(WidthPruningError, match=message):
        prune_width(build(), byt5_tokenizer, calibration, ffn_keep=ffn, heads_keep=heads)


def test_cli_prune_width(tiny_t5_dir, tiny_jsonl, tmp_path, capsys):
    train, _ = tiny_jsonl
    out = tmp_path / "narrow"
    assert main(["--json", "prune-width", "--model", str(tiny_t5_dir), "--ffn-keep", "32", "--heads-keep", "2",
                 "--data", str(train), "--samples", "4", "--max-source-length", "32", "--decoder-layers", "2",
                 "--output", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["width"]["heads"] == 2 and result["student"]["decoder_layers"] == 2
    assert AutoModelForSeq2SeqLM.from_pretrained(out).config.d_ff == 32
    assert main(["prune-width", "--model", str(tiny_t5_dir), "--ffn-keep", "32", "--output", str(tmp_path / "x")]) == 2
    assert "--data" in capsys.readouterr().err and not (tmp_path / "x").exists()
