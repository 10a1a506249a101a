"""Layer selection and surgery (SFT shrink) on tiny T5 and BART models."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, T5ForConditionalGeneration

from compression.errors import LayerSelectionError, NotSeq2SeqError
from compression.layers import (
    get_layer_stacks,
    layers_to_supervise,
    parse_layers,
    select_layers,
    shrink,
)
from conftest import tiny_t5_config

INPUTS = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 1], [8, 8, 120, 33, 1, 0, 0, 0]])
MASK = (INPUTS != 0).long()
DECODER_INPUTS = torch.tensor([[0, 12, 40, 7, 9], [0, 3, 3, 200, 15]])


def logits(model):
    with torch.no_grad():
        return model(input_ids=INPUTS, attention_mask=MASK, decoder_input_ids=DECODER_INPUTS).logits


@pytest.mark.parametrize(
    "n_teacher, n_student, strategy, expected",
    [
        (12, 3, "spread", [0, 6, 11]),
        (6, 3, "spread", [0, 2, 5]),
        (12, 4, "spread", [0, 4, 8, 11]),
        (16, 2, "spread", [0, 15]),
        (8, 3, "spread", [0, 4, 7]),
        (4, 2, "spread", [0, 3]),
        (5, 1, "spread", [0]),
        (6, 3, "alternate", [0, 2, 4]),
        (12, 6, "alternate", [0, 2, 4, 6, 8, 10]),
        (12, 3, "alternate", [0, 4, 8]),
        (6, 2, "first", [0, 1]),
        (6, 2, "last", [4, 5]),
        (6, 6, "spread", [0, 1, 2, 3, 4, 5]),
    ],
)
def test_select_layers(n_teacher, n_student, strategy, expected):
    assert select_layers(n_teacher, n_student, strategy) == expected


@pytest.mark.parametrize("n_student", [0, -1, 7])
def test_select_layers_rejects_bad_counts(n_student):
    with pytest.raises(LayerSelectionError, match="layers"):
        select_layers(6, n_student)


@pytest.mark.parametrize("spec, message", [("0,0,3", "repeat"), ("0,9", "out of range"), ("a,b", "whole numbers"),
                                           ("three", "count"), ("-1,2", "out of range")])
def test_parse_layers_rejects_bad_indices(spec, message):
    with pytest.raises(LayerSelectionError, match=message):
        parse_layers(spec, 6)


def test_parse_layers_accepts_counts_and_indices():
    assert parse_layers("5,0,3", 6) == [0, 3, 5]
    assert parse_layers("3", 6, "alternate") == [0, 2, 4]
    assert parse_layers(None, 4) == [0, 1, 2, 3]
    assert parse_layers([1, 2], 4) == [1, 2]


def test_layers_to_supervise():
    assert layers_to_supervise(12, [0, 6, 11]) == [3, 7, 11]
    assert layers_to_supervise(6, [0, 2, 4]) == [1, 3, 5]
    assert layers_to_supervise(4, [0, 1, 2, 3]) == [0, 1, 2, 3]


@pytest.mark.parametrize("fixture", ["tiny_t5", "tiny_bart"])
def test_keeping_all_layers_reproduces_logits_exactly(fixture, request):
    model = request.getfixturevalue(fixture)
    student = shrink(model, 4, 4)
    assert torch.equal(logits(student), logits(model))


@pytest.mark.parametrize("fixture", ["tiny_t5", "tiny_bart"])
def test_teacher_untouched_and_config_records_kept_layers(fixture, request):
    model = request.getfixturevalue(fixture)
    before = logits(model)
    student = shrink(model, "1,3", 2, strategy="spread")
    assert torch.equal(logits(model), before)
    encoder, decoder = get_layer_stacks(student)
    assert (len(encoder), len(decoder)) == (2, 2)
    assert len(get_layer_stacks(model)[0]) == 4
    record = student.config.to_dict()["shrink"]
    assert record["encoder_layers_kept"] == [1, 3]
    assert record["decoder_layers_kept"] == [0, 3]
    assert record["strategy"] == "custom"
    if fixture == "tiny_t5":
        assert (student.config.num_layers, student.config.num_decoder_layers) == (2, 2)
    else:
        assert (student.config.encoder_layers, student.config.decoder_layers) == (2, 2)


def test_dropping_block_zero_keeps_relative_position_bias(tiny_t5):
    """Compare with a 2/2 reference built by hand: fresh model, kept blocks loaded, block-0 bias copied."""
    student = shrink(tiny_t5, "1,3", "2,3")
    reference = T5ForConditionalGeneration(tiny_t5_config(num_layers=2, num_decoder_layers=2)).eval()
    state = {k: v for k, v in tiny_t5.state_dict().items() if ".block." not in k}
    teacher = tiny_t5.state_dict()
    for stack, kept in (("encoder", [1, 3]), ("decoder", [2, 3])):
        for new, old in enumerate(kept):
            prefix = f"{stack}.block.{old}."
            for key, value in teacher.items():
                if key.startswith(prefix):
                    state[f"{stack}.block.{new}." + key[len(prefix):]] = value
        bias = f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        state[bias] = teacher[bias]
    reference.load_state_dict(state)
    assert student.encoder.block[0].layer[0].SelfAttention.has_relative_attention_bias
    assert not student.encoder.block[1].layer[0].SelfAttention.has_relative_attention_bias
    assert torch.equal(logits(student), logits(reference))


@pytest.mark.parametrize("fixture", ["tiny_t5", "tiny_bart"])
@pytest.mark.parametrize("encoder, decoder", [(2, "1,3"), (1, "0,2,3"), (3, 1)])
def test_cached_generation_works_after_shrinking(fixture, encoder, decoder, request, tmp_path):
    student = shrink(request.getfixturevalue(fixture), encoder, decoder)
    student.save_pretrained(tmp_path)  # and the fix travels with the checkpoint to plain transformers
    student = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    for index, block in enumerate(get_layer_stacks(student)[1]):
        assert all(m.layer_idx == index for m in block.modules() if hasattr(m, "layer_idx"))
    kwargs = dict(input_ids=INPUTS, attention_mask=MASK, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    cached = student.generate(**kwargs, use_cache=True)
    uncached = student.generate(**kwargs, use_cache=False)
    assert cached.shape == (2, 7)
    assert torch.equal(cached, uncached)


def test_tied_embeddings_stay_tied(tiny_t5):
    student = shrink(tiny_t5, 2, 2)
    assert student.lm_head.weight is student.shared.weight
    assert student.encoder.embed_tokens.weight is student.shared.weight


@pytest.mark.parametrize("fixture", ["tiny_t5", "tiny_bart"])
def test_save_load_round_trips_outputs(fixture, request, tmp_path):
    student = shrink(request.getfixturevalue(fixture), 2, 1, strategy="last")
    student.save_pretrained(tmp_path)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert torch.equal(logits(loaded), logits(student))
    assert loaded.config.shrink["decoder_layers_kept"] == [3]
    assert len(get_layer_stacks(loaded)[1]) == 1


def test_refuses_non_seq2seq():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=32))
    with pytest.raises(NotSeq2SeqError, match="encoder-decoder"):
        shrink(gpt2, 1, 1)
