"""benchmarks.shape: the parameter arithmetic and the plans (no training, no timings)."""

from __future__ import annotations

import pytest
from transformers import T5ForConditionalGeneration

from benchmarks.shape import METHODS, non_embedding_params, plan_students, t5_non_embedding, verdicts
from conftest import tiny_t5_config


@pytest.mark.parametrize("overrides", [{}, {"feed_forward_proj": "gated-gelu"}, {"num_decoder_layers": 2}])
def test_parameter_arithmetic_matches_the_model(overrides):
    config = tiny_t5_config(**overrides)
    model = T5ForConditionalGeneration(config)
    assert t5_non_embedding(config, config.num_layers, config.num_decoder_layers, config.num_heads,
                            config.d_ff) == non_embedding_params(model)


@pytest.mark.parametrize("fraction", [0.75, 0.5])
def test_plans_land_near_the_target(fraction):
    config = tiny_t5_config(d_model=64, d_ff=256, d_kv=16)
    plans = plan_students(config, fraction)
    assert [plan["method"] for plan in plans] == list(METHODS)
    for plan in plans:
        assert abs(plan["fraction"] - fraction) < 0.05
        assert 1 <= plan["heads"] <= config.num_heads and 8 <= plan["d_ff"] <= config.d_ff
    width = plans[2]
    assert (width["encoder_layers"], width["decoder_layers"]) == (4, 4)
    assert plans[3]["encoder_layers"] + plans[3]["decoder_layers"] < 8


def test_verdicts_name_the_winner_and_compare_importance_with_spread():
    def row(method, loss, kept):
        return {"method": method, "target": 0.5, "validation_loss": loss, "speedup_b1": 1.5, "speedup_b16": 1.4,
                "kept": {"encoder": kept, "decoder": kept}}

    rows = [{"method": "teacher", "target": 1.0, "validation_loss": 1.0, "speedup_b1": 1.0, "speedup_b16": 1.0},
            row("depth (spread)", 2.0, [0, 3]), row("depth (importance)", 1.9, [0, 1]), row("width", 1.5, None),
            row("depth+width", 1.7, [0, 1, 3])]
    result = verdicts(rows)
    check = result["targets"][0]
    assert check["deepnarrow_holds"] and check["ranking"][0][0] == "width"
    assert check["importance_minus_spread"] == pytest.approx(-0.1)
    assert "holds" in result["text"]


def test_reads_the_debian_files_as_the_preset_does():
    """The committed teacher was trained without a prefix on the preset's seeded shuffle: the
    benchmark's default files are read the same way (T5's ``summarize:`` would be a prompt the
    teacher never saw, and the files' first pairs one end of the package-name order)."""
    from benchmarks.shape import data_args, full_settings, quick_settings

    for settings in (full_settings(), quick_settings()):
        data = data_args(settings)
        assert (data.dataset, data.prefix, data.shuffle_seed) == ("debian-descriptions", "", 0)
        assert (data.max_source_length, data.max_target_length) == (settings.max_source_length,
                                                                    settings.max_target_length)
        assert (data.max_train_samples, data.max_eval_samples) == (settings.max_train_samples,
                                                                   settings.max_eval_samples)
