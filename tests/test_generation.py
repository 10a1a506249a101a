"""compression.generation: the fast greedy loop equals model.generate token for token."""

from __future__ import annotations

import pytest
import torch

from compression.generation import fast_path_reason, generate
from conftest import tiny_bart_config, tiny_t5_config


def build(family: str, **overrides):
    from transformers import BartForConditionalGeneration, T5ForConditionalGeneration

    torch.manual_seed(0)
    if family == "t5":
        # a large init spreads the logits so EOS (id 1) wins at some steps and not at others
        return T5ForConditionalGeneration(tiny_t5_config(initializer_factor=8.0, **overrides)).eval()
    return BartForConditionalGeneration(tiny_bart_config(init_std=0.3, **overrides)).eval()


def padded_batch(lengths, seed=1):
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros((len(lengths), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, :length] = torch.randint(3, 384, (length,), generator=generator)
        mask[row, :length] = 1
    return ids, mask


def reference(model, ids, mask, **kwargs):
    with torch.inference_mode():
        return model.generate(input_ids=ids, attention_mask=mask, do_sample=False, **kwargs)


def eos_model(family):
    """A model whose EOS logit is boosted so that some rows stop early and others do not."""
    model = build(family)
    with torch.no_grad():
        if family == "t5":
            head = model.lm_head
            head.weight[1] = head.weight[1] * 3.0 + 0.5 * head.weight[7]
        else:
            model.final_logits_bias[0, 1] = 4.0
    return model


@pytest.mark.parametrize("family", ["t5", "bart"])
@pytest.mark.parametrize("lengths,min_new", [([9], 0), ([9], 10), ([12, 5, 8, 3], 0), ([12, 5, 8, 3], 3)])
def test_fast_greedy_equals_generate(family, lengths, min_new):
    model = eos_model(family)
    assert fast_path_reason(model) is None
    ids, mask = padded_batch(lengths)
    for max_new in (1, 10):
        kwargs = dict(max_new_tokens=max_new, min_new_tokens=min(min_new, max_new))
        expected = reference(model, ids, mask, **kwargs)
        got = generate(model, ids, mask, **kwargs)
        assert got.dtype == torch.long
        assert torch.equal(got, expected), (got, expected)


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_eos_stopping_and_padding_are_exercised(family):
    """The cases above must really cover early stops: some rows end (then pad) before others."""
    model = eos_model(family)
    ids, mask = padded_batch([12, 5, 8, 3, 10, 7, 4, 11])
    out = generate(model, ids, mask, max_new_tokens=20)
    assert torch.equal(out, reference(model, ids, mask, max_new_tokens=20))
    eos, pad = model.generation_config.eos_token_id, model.generation_config.pad_token_id
    first_eos = [int((row == eos).nonzero()[0]) if (row == eos).any() else None for row in out[:, 1:]]
    early = [i for i, pos in enumerate(first_eos) if pos is not None and pos < out.shape[1] - 2]
    assert early, "no row stopped early: the test model should stop sometimes"
    for row in early:
        assert (out[row, 2 + first_eos[row]:] == pad).all()


def test_fixed_length_forces_full_output():
    model = eos_model("t5")
    ids, mask = padded_batch([6, 9])
    out = generate(model, ids, mask, max_new_tokens=12, min_new_tokens=12)
    assert out.shape == (2, 13)
    assert torch.equal(out, reference(model, ids, mask, max_new_tokens=12, min_new_tokens=12))


def test_no_eos_token_runs_to_max_length():
    model = build("t5")
    model.generation_config.eos_token_id = None
    ids, mask = padded_batch([7, 4])
    out = generate(model, ids, mask, max_new_tokens=6)
    assert out.shape == (2, 7)
    assert torch.equal(out, reference(model, ids, mask, max_new_tokens=6))


def test_bart_forced_bos_and_eos_and_min_length():
    model = eos_model("bart")
    model.generation_config.forced_bos_token_id = 2
    model.generation_config.min_length = 4
    assert fast_path_reason(model) is None
    ids, mask = padded_batch([10, 6, 3])
    for max_new in (2, 5, 9):
        expected = reference(model, ids, mask, max_new_tokens=max_new)
        assert torch.equal(generate(model, ids, mask, max_new_tokens=max_new), expected)
    assert (expected[:, 1] == 2).all()


def test_without_attention_mask():
    model = build("t5")
    ids, _ = padded_batch([8])
    assert torch.equal(generate(model, ids, None, max_new_tokens=5),
                       reference(model, ids, None, max_new_tokens=5))


def test_falls_back_for_beams_and_unsupported_settings():
    model = build("t5")
    ids, mask = padded_batch([8, 5])
    assert fast_path_reason(model, num_beams=4) == "beam search"
    beams = generate(model, ids, mask, max_new_tokens=5, num_beams=3)
    assert torch.equal(beams, reference(model, ids, mask, max_new_tokens=5, num_beams=3))
    model.generation_config.no_repeat_ngram_size = 2
    assert "no_repeat_ngram_size" in fast_path_reason(model)
    assert torch.equal(generate(model, ids, mask, max_new_tokens=8),
                       reference(model, ids, mask, max_new_tokens=8))
    assert "extra generate arguments" in fast_path_reason(build("t5"), repetition_penalty=1.3)


def test_rejects_bad_lengths():
    model = build("t5")
    ids, mask = padded_batch([4])
    with pytest.raises(ValueError):
        generate(model, ids, mask, max_new_tokens=0)
    with pytest.raises(ValueError):
        generate(model, ids, mask, max_new_tokens=3, num_beams=0)


def test_8bit_model_uses_fast_path_and_matches(tmp_path):
    from transformers import AutoModelForSeq2SeqLM, BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # pragma: no cover - depends on the install
        pytest.skip(f"bitsandbytes unavailable: {exc}")
    build("t5").save_pretrained(tmp_path)
    model = AutoModelForSeq2SeqLM.from_pretrained(
        tmp_path, quantization_config=BitsAndBytesConfig(load_in_8bit=True), device_map={"": "cpu"}).eval()
    assert fast_path_reason(model) is None
    ids, mask = padded_batch([9, 4])
    assert torch.equal(generate(model, ids, mask, max_new_tokens=6),
                       reference(model, ids, mask, max_new_tokens=6))
