"""benchmarks.scaling: the plan of points, the encoder/decoder split and the summary rows (no timings asserted)."""

from __future__ import annotations

import pytest
import torch
from transformers import LongT5Config, LongT5ForConditionalGeneration

from benchmarks import scaling


def test_quick_plan_stays_short_and_full_plan_reaches_16k_both_ways():
    quick = scaling.plan(quick=True)
    assert max(n for _, n, _ in quick["length"]) <= 2048 and max(n for _, n in quick["generation"]) <= 2048
    assert {c for family, _, c in quick["length"] if family == "longt5"} == {False, True}
    full = scaling.plan(quick=False)
    for family in ("longt5", "longt5-local"):
        assert (family, 16384, False) in full["length"] and (family, 16384, True) in full["length"]
        assert {n for f, n in full["generation"] if f == family} == {512, 4096, 16384}
    assert {family for family, _, _ in full["length"]} == set(scaling.FAMILIES)


@pytest.mark.parametrize("attention", ["local", "transient-global"])
def test_encoder_decoder_split_adds_up(attention):
    config = LongT5Config(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                          num_heads=4, encoder_attention_type=attention, local_radius=3, global_block_size=4,
                          decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    model = LongT5ForConditionalGeneration(config)
    split = scaling.encoder_decoder_split(model, torch.randint(3, 380, (1, 40)), new_tokens=3, repeats=1)
    assert split["generate_s"] > 0 and split["encoder_s"] > 0 and split["decoder_s"] >= 0
    assert split["encoder_share"] + split["decoder_share"] == pytest.approx(1.0, abs=1e-6) or split["decoder_s"] == 0


def test_summary_rows_and_table_cover_checkpointing_and_the_split():
    def point(family, n, checkpointing, seconds, memory):
        return {"family": family, "source_length": n, "checkpointing": checkpointing, "seconds_per_step": seconds,
                "real_tokens_per_s": n / seconds, "peak_memory_mib": memory}

    payload = {"by_length": [point("t5", 512, False, 1.0, 900), point("t5", 2048, False, 6.0, 3000),
                             point("longt5", 1024, False, 1.0, 1000), point("longt5", 16384, False, 20.0, 9000),
                             point("longt5", 16384, True, 26.0, 4000)],
               "generation": [{"family": "longt5", "source_length": 512, "encoder_s": 0.1, "decoder_s": 0.9,
                               "encoder_share": 0.1, "decoder_share": 0.9},
                              {"family": "longt5", "source_length": 16384, "encoder_s": 6.0, "decoder_s": 2.0,
                               "encoder_share": 0.75, "decoder_share": 0.25}],
               "by_pairs": [], "figure": {"html": "x.html"}}
    rows = {row["benchmark"]: row for row in scaling.headline(payload)}
    assert rows["Scaling: gradient checkpointing"]["ratio"] == "0.44x memory, 1.30x time"
    assert rows["Scaling: encoder share of generation"]["result"] == "75% at 16384 tokens"
    assert "16384" in rows["Scaling: LongT5 source length"]["measure"]
    text = scaling.table(payload)
    assert "Encoder vs decoder share" in text and "checkpointing" in text


def test_cut_comparison_rotates_the_models_and_pairs_the_speedups():
    from compression.layers import shrink

    config = LongT5Config(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=4, num_decoder_layers=4,
                          num_heads=4, encoder_attention_type="transient-global", local_radius=3,
                          global_block_size=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    teacher = LongT5ForConditionalGeneration(config).eval()
    models = {"teacher": teacher, "cut_encoder": shrink(teacher, 2, 4), "cut_decoder": shrink(teacher, 4, 2)}
    out = scaling.cut_comparison(models, torch.randint(3, 380, (1, 24)), new_tokens=2, rounds=3)
    assert {name: len(times) for name, times in out["seconds"].items()} == {name: 3 for name in models}
    assert out["speedup"]["teacher"] == pytest.approx(1.0) and 0 <= out["encoder_share"] <= 1
    assert out["speedup_min"]["cut_encoder"] <= out["speedup"]["cut_encoder"] <= out["speedup_max"]["cut_encoder"]
    # the ratio is paired per round: cut-encoder speedup / cut-decoder speedup = decoder-cut s / encoder-cut s
    expected = [d / e for e, d in zip(out["seconds"]["cut_encoder"], out["seconds"]["cut_decoder"])]
    assert out["encoder_vs_decoder_cut"] == pytest.approx(sorted(expected)[1])
    assert {name: len(times) for name, times in out["cpu_seconds"].items()} == {name: 3 for name in models}
    assert out["cpu_speedup"]["teacher"] == pytest.approx(1.0) and "cpu_encoder_vs_decoder_cut" in out
    text = scaling.cuts_table([{"source_length": 24, **out}])
    assert "cut_encoder_2/4" in text and "encoder/decoder_cut" in text and "cpu" in text and "wall" in text
    with pytest.raises(ValueError):
        scaling.cut_comparison({"cut_encoder": teacher}, torch.randint(3, 380, (1, 8)), rounds=1)
