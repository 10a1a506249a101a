"""Loading checkpoints by folder, presets, and the errors a user can cause."""

from __future__ import annotations

import json

import pytest
import torch

from compression.errors import ModelLoadError, NotSeq2SeqError, RemoteCodeError
from compression.load import PRESETS, build_preset, describe_model, load_model, load_tokenizer, model_family


def test_load_local_folder_round_trips(tiny_t5_dir, tiny_t5):
    model, tokenizer = load_model(tiny_t5_dir)
    ids = tokenizer(["summarize: hello"], return_tensors="pt").input_ids
    decoder = torch.zeros((1, 1), dtype=torch.long)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids, decoder_input_ids=decoder).logits,
                           tiny_t5(input_ids=ids, decoder_input_ids=decoder).logits)
    assert not model.training


def test_describe_model(tiny_t5, tiny_bart):
    facts = describe_model(tiny_t5)
    assert facts["family"] == "t5" and facts["encoder_layers"] == 4 and facts["decoder_layers"] == 4
    assert facts["params"] == sum(p.numel() for p in tiny_t5.parameters())
    assert facts["size_mib"] == pytest.approx(facts["params"] * 4 / 2**20)
    assert describe_model(tiny_bart)["family"] == "bart"


def test_missing_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "nowhere"))


def test_folder_without_model(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path)


def test_unknown_hub_id_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="local model folder"):
        load_model("no-such-user/no-such-model-xyz")


def test_non_seq2seq_refused(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16)).save_pretrained(tmp_path)
    with pytest.raises(NotSeq2SeqError, match="not an encoder-decoder"):
        load_model(tmp_path)


def test_remote_code_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "my-custom-seq2seq", "auto_map": {"AutoConfig": "configuration_x.XConfig"},
         "is_encoder_decoder": True}))
    with pytest.raises(RemoteCodeError, match="trust_remote_code|custom code"):
        load_model(tmp_path)


def test_model_family_unsupported():
    from transformers import ProphetNetConfig

    with pytest.raises(NotSeq2SeqError, match="does not support"):
        model_family(ProphetNetConfig())


def test_build_preset_with_byte_tokenizer():
    model, tokenizer = build_preset("tiny", "byt5")
    assert model.config.vocab_size == 384
    assert (model.config.num_layers, model.config.num_decoder_layers, model.config.d_model) == (4, 4, 256)
    assert tokenizer("a").input_ids == [100, 1]


def test_unknown_preset():
    with pytest.raises(ModelLoadError, match="unknown preset"):
        build_preset("gigantic", "byt5")


def test_presets_include_deep_narrow():
    assert PRESETS["tiny-nl8"]["num_layers"] == 8 and PRESETS["tiny-nl8"]["d_model"] == 256


def test_real_t5_vocabulary_preset(shared_dir):
    tokenizer = load_tokenizer(shared_dir / "tokenizers" / "t5")
    assert tokenizer("summarize:").input_ids == [21603, 10, 1]
    model, _ = build_preset("tiny", shared_dir / "tokenizers" / "t5")
    assert model.config.vocab_size == 32128
    # t5-efficient-tiny is published as 15.58M parameters.
    assert describe_model(model)["params"] == pytest.approx(15.58e6, rel=0.002)
