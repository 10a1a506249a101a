"""The length-aware speed plan (compression.length_plan) and speed-first assembling that follows it.

Costs are modelled from configs or forced by hand: nothing here is timed, so no assertion depends on
the CPU it runs on.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LongT5ForConditionalGeneration

from compression.errors import CompressionError, ModularError
from compression.length_plan import GenerationCost, cost_profile, cut_advice, modelled_cost, stack_to_cut
from compression.load import preset_config
from compression.modular import ModularModel, assemble, plan_for_ratio


@pytest.mark.parametrize("preset", ["longt5-tglobal-tiny", "longt5-local-tiny"])
def test_modelled_rule_cuts_the_decoder_for_short_inputs_and_the_encoder_for_long_ones(preset):
    profile = cost_profile(preset_config(preset, 32128))
    assert profile["attention"] == ("transient-global" if "tglobal" in preset else "local")
    short, long = cut_advice(profile, 512), cut_advice(profile, 16384)
    assert short.stack == "decoder" and short.decoder_speedup > short.encoder_speedup > 1.0
    assert long.stack == "encoder" and long.encoder_speedup > long.decoder_speedup > 1.0
    assert long.encoder_share > short.encoder_share
    assert "cut the encoder" in long.line() and "16,384 source tokens" in long.line() and "modelled" in long.line()
    # the encoder's share only grows with the length
    shares = [modelled_cost(profile, n).encoder_share for n in (256, 1024, 4096, 16384)]
    assert shares == sorted(shares)


def test_full_attention_turns_to_the_encoder_sooner_than_longt5():
    t5 = cost_profile(preset_config("tiny", 32128))
    longt5 = cost_profile(preset_config("longt5-tglobal-tiny", 32128))
    assert t5["attention"] == "full"
    assert cut_advice(t5, 512).stack == "decoder"
    assert modelled_cost(t5, 4096).encoder_layer_s > modelled_cost(longt5, 4096).encoder_layer_s
    assert cut_advice(t5, 4096).stack == "encoder"


def test_a_forced_cost_decides_and_speedups_are_its_arithmetic():
    profile = cost_profile(preset_config("longt5-tglobal-tiny", 384))
    encoder_heavy = GenerationCost(4, 4, encoder_layer_s=2.0, decoder_layer_s=0.5, fixed_s=2.0, basis="forced")
    advice = cut_advice(profile, 128, cost=encoder_heavy)  # the forced cost wins over the modelled one
    assert advice.stack == "encoder" and advice.basis == "forced"
    assert advice.encoder_speedup == pytest.approx(12.0 / 10.0) and advice.decoder_speedup == pytest.approx(12 / 11.5)
    assert encoder_heavy.speedup("encoder", 2) == pytest.approx(12.0 / 8.0)
    decoder_heavy = GenerationCost(4, 4, encoder_layer_s=0.1, decoder_layer_s=1.0)
    assert cut_advice(profile, 16384, cost=decoder_heavy).stack == "decoder"
    single = GenerationCost(1, 4, encoder_layer_s=5.0, decoder_layer_s=0.1)
    assert cut_advice(profile, 16384, cost=single).stack == "decoder"  # the only encoder layer cannot go
    with pytest.raises(CompressionError, match="one must stay"):
        encoder_heavy.speedup("encoder", 4)
    with pytest.raises(CompressionError, match="at least 1"):
        modelled_cost(profile, 0)


def test_stack_to_cut_honours_the_choice():
    config = preset_config("longt5-tglobal-tiny", 384)
    assert stack_to_cut(config, 16384) == "encoder" and stack_to_cut(config, None) == "decoder"
    assert stack_to_cut(config, 16384, "decoder") == "decoder" and stack_to_cut(config, 128, "encoder") == "encoder"
    with pytest.raises(CompressionError, match="auto, encoder, decoder"):
        stack_to_cut(config, 512, "both")


@pytest.fixture(scope="module")
def longt5_modules():
    """Modules (granularities 2, 3, 4) of a LongT5 teacher of the tiny preset's shape, small vocabulary."""
    torch.manual_seed(0)
    return ModularModel(LongT5ForConditionalGeneration(preset_config("longt5-tglobal-tiny", 384)).eval())


def test_speed_first_assembling_cuts_the_stack_the_length_calls_for(longt5_modules):
    layers = lambda model: (model.config.num_layers, model.config.num_decoder_layers)  # noqa: E731
    # auto: the decoder for short inputs (the old speed-first), the encoder for long ones
    short = assemble(longt5_modules, 4 / 3, "speed", source_length=512)
    long = assemble(longt5_modules, 4 / 3, "speed", source_length=16384)
    assert layers(short) == (4, 2) and short.config.modular["speed_stack"] == "decoder"
    assert layers(long) == (2, 4) and long.config.modular["speed_stack"] == "encoder"
    assert long.config.modular["source_length"] == 16384
    # the flag overrides the length
    assert layers(assemble(longt5_modules, 4 / 3, "speed", speed_cut="decoder", source_length=16384)) == (4, 2)
    assert layers(assemble(longt5_modules, 4 / 3, "speed", speed_cut="encoder", source_length=512)) == (2, 4)
    assert [s.name for s in plan_for_ratio(longt5_modules, 8 / 7, "speed", speed_cut="encoder")] == ["encoder.g2.s2"]
    # size-first ignores it
    size = assemble(longt5_modules, 4 / 3, "size", speed_cut="encoder", source_length=16384)
    assert layers(size) == (3, 3) and size.config.modular["speed_stack"] is None
    with pytest.raises(ModularError, match="auto, encoder, decoder"):
        assemble(longt5_modules, 4 / 3, "speed", speed_cut="middle")
