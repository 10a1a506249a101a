"""Modular Transformers: modules, plans, deterministic assembly, checkpoints, and a short training run."""

from __future__ import annotations

import copy
import json
import threading

import datasets
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForSeq2SeqLM, BartForConditionalGeneration, T5ForConditionalGeneration

from compression.config import TrainArgs
from compression.data import tokenize_pairs
from compression.errors import ModularError
from compression.modular import (
    MODULES_FILE,
    ModularArgs,
    ModularModel,
    Span,
    _Recorder,
    assemble,
    available_ratios,
    granularity_weights,
    load_modular,
    max_ratio,
    plan_for_ratio,
    save_modular,
    train_modules,
)
from conftest import ARTICLES, tiny_bart_config, tiny_t5_config


def _inputs(seed=1, batch=2, src=9, tgt=6):
    generator = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(3, 300, (batch, src), generator=generator),
            "labels": torch.randint(3, 300, (batch, tgt), generator=generator)}


def _perturbed(modular: ModularModel, seed=0) -> ModularModel:
    """Give every module distinct weights so that a wrong module choice shows in the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in modular.layers.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return modular


def _models():
    torch.manual_seed(0)
    return {"t5": T5ForConditionalGeneration(tiny_t5_config()).eval(),
            "bart": BartForConditionalGeneration(tiny_bart_config()).eval()}


@pytest.fixture(params=["t5", "bart"])
def teacher(request):
    return _models()[request.param]


# ---------------------------------------------------------------------------- modules

def test_modules_cover_aligned_spans_and_copy_the_first_layer(tiny_t5):
    modular = ModularModel(tiny_t5)
    assert modular.module_names() == ["encoder.g2.s0", "encoder.g2.s2", "encoder.g3.s0", "encoder.g4.s0",
                                      "decoder.g2.s0", "decoder.g2.s2", "decoder.g3.s0", "decoder.g4.s0"]
    assert modular.spans("decoder", 3) == [Span("decoder", 0, 3)]  # layer 3 (partial span) is never replaced
    teacher_state = tiny_t5.decoder.block[2].state_dict()
    module_state = modular.module("decoder.g2.s2").state_dict()
    assert module_state.keys() == teacher_state.keys()
    assert all(torch.equal(module_state[k], teacher_state[k]) for k in teacher_state)
    # T5: the span starting at layer 0 carries the relative position bias, later spans do not
    assert modular.module("encoder.g4.s0").layer[0].SelfAttention.has_relative_attention_bias
    assert not modular.module("encoder.g2.s2").layer[0].SelfAttention.has_relative_attention_bias
    assert modular.module("encoder.g2.s0") is not tiny_t5.encoder.block[0]
    with pytest.raises(ModularError, match="missing"):
        modular.module("encoder.g5.s0")


def test_bad_granularities(tiny_t5):
    for bad in ((1, 2), (2, 2), (5,), "2,x"):
        with pytest.raises(ModularError):
            ModularModel(tiny_t5, bad)
    with pytest.raises(ModularError):
        ModularArgs(granularities=(1,))
    with pytest.raises(ModularError):
        ModularArgs(replace_rate_start=0.0)
    assert ModularArgs(granularities="4, 2").granularities == (2, 4)


def test_curriculum_weights_move_from_coarse_to_fine():
    assert granularity_weights(3, 0.0) == [1, 2, 3]
    assert granularity_weights(3, 0.5) == [2, 3, 2]
    assert granularity_weights(3, 1.0) == [3, 2, 1]
    assert granularity_weights(1, 0.3) == [1]


def test_sampled_plans_follow_the_replacement_rate(tiny_bart):
    import random

    modular = ModularModel(tiny_bart)
    rng = random.Random(0)
    full = ModularArgs(replace_rate_start=1.0, replace_rate_end=1.0)
    for _ in range(20):
        plan = modular.sample_plan(rng, 0.5, full)
        for stack in ("encoder", "decoder"):
            spans = [s for s in plan if s.stack == stack]
            assert len({s.granularity for s in spans}) == 1  # one granularity per stack
            assert spans == modular.spans(stack, spans[0].granularity)  # rate 1: every span replaced
    sparse = ModularArgs(replace_rate_start=0.01, replace_rate_end=0.01)
    assert all(len(modular.sample_plan(rng, 0.0, sparse)) >= 1 for _ in range(20))


# ---------------------------------------------------------------------------- assembly

def test_ratio_one_reproduces_the_teacher_exactly(teacher):
    modular = _perturbed(ModularModel(teacher))
    model = assemble(modular, 1.0)
    assert type(model) is type(teacher)
    assert model.config.modular["replaced"] == [] and model.config.modular["ratio"] == 1.0
    inputs = _inputs()
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, teacher(**inputs).logits)


EXPECTED_LAYERS = {  # 4/4 teacher, granularities 2, 3, 4: ratio -> (encoder, decoder) layers
    "size": {1.0: (4, 4), 8 / 7: (4, 3), 4 / 3: (3, 3), 1.5: (3, 2), 1.6: (3, 2), 2.0: (2, 2), 2.5: (2, 1),
             8 / 3: (2, 1), 3.0: (1, 1), 4.0: (1, 1)},
    "speed": {1.0: (4, 4), 8 / 7: (4, 3), 4 / 3: (4, 2), 1.5: (4, 1), 1.6: (4, 1), 2.0: (3, 1), 2.5: (2, 1),
              8 / 3: (2, 1), 3.0: (1, 1), 4.0: (1, 1)},
}


@pytest.mark.parametrize("priority", ["size", "speed"])
def test_every_ratio_gives_the_promised_layer_counts(teacher, priority):
    modular = ModularModel(teacher)
    assert max_ratio(modular, priority) == 4.0
    assert available_ratios(modular, priority) == pytest.approx([1.0, 8 / 7, 4 / 3, 1.6, 2.0, 8 / 3, 4.0])
    for ratio, (n_enc, n_dec) in EXPECTED_LAYERS[priority].items():
        model = assemble(modular, ratio, priority)
        record = model.config.modular
        encoder = model.get_encoder()
        decoder = model.get_decoder()
        layers = (encoder.block, decoder.block) if hasattr(encoder, "block") else (encoder.layers, decoder.layers)
        assert (len(layers[0]), len(layers[1])) == (n_enc, n_dec), ratio
        assert (record["encoder_layers"], record["decoder_layers"]) == (n_enc, n_dec)
        assert record["ratio"] == pytest.approx(8 / (n_enc + n_dec)) and record["ratio"] >= ratio - 1e-9
        assert record["priority"] == priority and record["requested_ratio"] == ratio
        depth = ((model.config.num_layers, model.config.num_decoder_layers) if hasattr(encoder, "block")
                 else (model.config.encoder_layers, model.config.decoder_layers))
        assert depth == (n_enc, n_dec)
        assert [m.layer_idx for m in decoder.modules() if hasattr(m, "layer_idx")][-1] == n_dec - 1
        assert record["params"] < record["teacher_params"] or ratio == 1.0


def test_plans_pick_the_documented_modules(tiny_t5):
    modular = ModularModel(tiny_t5)
    names = lambda plan: [span.name for span in plan]  # noqa: E731
    # size-first: stacks balanced, coarse modules; speed-first: decoder first, finest modules, top-down
    assert names(plan_for_ratio(modular, 2.0, "size")) == ["encoder.g3.s0", "decoder.g3.s0"]
    assert names(plan_for_ratio(modular, 2.0, "speed")) == ["encoder.g2.s2", "decoder.g4.s0"]
    assert names(plan_for_ratio(modular, 4 / 3, "speed")) == ["decoder.g2.s0", "decoder.g2.s2"]
    assert names(plan_for_ratio(modular, 8 / 7, "speed")) == ["decoder.g2.s2"]
    assert names(plan_for_ratio(modular, 2.0, "size", granularities=[2])) == [
        "encoder.g2.s0", "encoder.g2.s2", "decoder.g2.s0", "decoder.g2.s2"]


def test_assembled_forward_equals_hand_composition(teacher):
    modular = _perturbed(ModularModel(teacher))
    inputs = _inputs()
    with torch.no_grad():  # transformers installs its hidden-state hooks on the teacher's layers now
        teacher(**inputs, output_hidden_states=True)
    model = assemble(modular, 2.0, "speed")  # encoder: g2 span [2, 4); decoder: g4 span [0, 4)
    t5 = hasattr(teacher, "encoder") and hasattr(teacher.encoder, "block")
    teacher_encoder = teacher.get_encoder()
    encoder_layers = [*(teacher_encoder.block if t5 else teacher_encoder.layers)[:2], modular.module("encoder.g2.s2")]
    with torch.no_grad():
        if t5:  # embeddings -> blocks (position bias from the first) -> final norm
            hidden, bias = teacher_encoder.embed_tokens(inputs["input_ids"]), None
            for layer in encoder_layers:
                hidden, bias, _ = layer(hidden, None, bias)
            hidden = teacher_encoder.final_layer_norm(hidden)
        else:  # scaled token + learned position embeddings -> layer norm -> layers
            embeds = teacher_encoder.embed_tokens(inputs["input_ids"])
            hidden = teacher_encoder.layernorm_embedding(embeds + teacher_encoder.embed_positions(embeds[:, :, -1]))
            for layer in encoder_layers:
                hidden = layer(hidden, None)
        assert torch.allclose(model.get_encoder()(input_ids=inputs["input_ids"]).last_hidden_state, hidden,
                              atol=1e-6)
        # hidden states come from every assembled layer, modules included
        states = model(**inputs, output_hidden_states=True)
        assert len(states.encoder_hidden_states) == 4 and len(states.decoder_hidden_states) == 2
        # the whole model equals the teacher with its lists swapped by hand
        expected = copy.deepcopy(teacher)
        attr = "block" if t5 else "layers"
        setattr(expected.get_encoder(), attr, nn.ModuleList(copy.deepcopy(encoder_layers)))
        setattr(expected.get_decoder(), attr, nn.ModuleList([copy.deepcopy(modular.module("decoder.g4.s0"))]))
        assert torch.equal(model(**inputs).logits, expected(**inputs).logits)
        generated = model.generate(input_ids=inputs["input_ids"], max_new_tokens=4, do_sample=False)
        assert generated.shape[0] == 2


@pytest.mark.parametrize("ratio", [0.5, 0.999, 0.0, -2.0, float("nan"), 4.01, 10.0])
def test_bad_ratios(tiny_t5, ratio):
    modular = ModularModel(tiny_t5)
    with pytest.raises(ModularError, match="1 .*to 4"):
        assemble(modular, ratio)


def test_bad_priority_and_missing_granularity(tiny_t5):
    modular = ModularModel(tiny_t5, (2, 4))
    with pytest.raises(ModularError, match="priority"):
        assemble(modular, 2.0, "fast")
    with pytest.raises(ModularError, match="granularity 3"):
        assemble(modular, 2.0, granularities=[3])
    only_fine = ModularModel(tiny_t5, (2,))
    assert max_ratio(only_fine) == 2.0
    with pytest.raises(ModularError, match="1 .*to 2"):
        assemble(only_fine, 4.0)


# ---------------------------------------------------------------------------- checkpoints

def test_modular_checkpoint_and_assembled_model_round_trip(tmp_path, teacher, byt5_tokenizer):
    modular = _perturbed(ModularModel(teacher, (2, 4)))
    modular.info = {"training": {"steps": 3}}
    save_modular(modular, tmp_path / "modular", byt5_tokenizer)
    meta = json.loads((tmp_path / "modular" / "modular.json").read_text())
    assert meta["granularities"] == [2, 4] and meta["training"] == {"steps": 3}
    assert {m["name"] for m in meta["modules"]} == set(modular.module_names())
    assert (tmp_path / "modular" / "teacher" / "tokenizer_config.json").is_file()

    loaded = load_modular(tmp_path / "modular")
    assert loaded.module_names() == modular.module_names() and loaded.info == {"training": {"steps": 3}}
    inputs = _inputs()
    for ratio in (1.0, 4 / 3, 4.0):
        first, second = assemble(modular, ratio, "speed"), assemble(loaded, ratio, "speed")
        with torch.no_grad():
            assert torch.equal(first(**inputs).logits, second(**inputs).logits)
    model = assemble(loaded, 2.0, "size")
    model.save_pretrained(tmp_path / "assembled")
    plain = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "assembled").eval()
    assert type(plain) is type(teacher)
    assert plain.config.modular == model.config.modular
    with torch.no_grad():
        assert torch.equal(plain(**inputs).logits, model(**inputs).logits)


def test_incomplete_checkpoints_are_refused(tmp_path, tiny_t5):
    with pytest.raises(ModularError, match="not a modular checkpoint"):
        load_modular(tmp_path)
    folder = save_modular(ModularModel(tiny_t5, (2, 4)), tmp_path / "modular")
    state = load_file(str(folder / MODULES_FILE))
    save_file({k: v for k, v in state.items() if not k.startswith("decoder.g4.")}, str(folder / MODULES_FILE))
    with pytest.raises(ModularError, match="decoder.g4.s0"):
        load_modular(folder)
    (folder / MODULES_FILE).unlink()
    with pytest.raises(ModularError, match=MODULES_FILE):
        load_modular(folder)


def test_checkpoint_is_written_atomically_and_keeps_the_training_files(tmp_path, tiny_t5, monkeypatch):
    folder = tmp_path / "modular"
    folder.mkdir()
    (folder / "loss_log.jsonl").write_text('{"step": 1}\n', encoding="utf-8")
    modular = ModularModel(tiny_t5, (2,))
    save_modular(modular, folder)
    save_modular(modular, folder)  # over an existing checkpoint
    assert (folder / "loss_log.jsonl").read_text(encoding="utf-8") == '{"step": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["modular"]  # no staging or old folders left
    assert load_modular(folder).module_names() == modular.module_names()

    import compression.modular.checkpoint as checkpoint

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    with pytest.raises(ModularError, match="disk space"):
        save_modular(modular, tmp_path / "other")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["modular"]  # nothing half-written


# ---------------------------------------------------------------------------- training

def test_supervision_targets_are_the_teacher_span_on_the_same_input():
    torch.manual_seed(0)
    teacher = T5ForConditionalGeneration(tiny_t5_config(num_layers=6, num_decoder_layers=6)).eval()
    teacher.set_attn_implementation("eager")
    modular = _perturbed(ModularModel(teacher, (2,)))
    inputs = _inputs()
    with torch.no_grad():
        plain = teacher(**inputs, output_hidden_states=True)
    captured = []

    class Recorder(_Recorder):
        def add(self, stack, student, target, student_maps, teacher_maps):
            captured.append((stack, student, target, set(student_maps), set(teacher_maps)))
            super().add(stack, student, target, student_maps, teacher_maps)

    # A span starting at layer 2 gets the teacher's own layer-1 output (layers 0-1 are the teacher's), so
    # its target is the teacher's layer-3 output: hidden_states[4] (T5 position bias passed along).
    for stack in ("encoder", "decoder"):
        recorder = Recorder({"encoder": None, "decoder": None}, ModularArgs())
        with torch.no_grad(), modular.use_plan([Span(stack, 2, 4)], recorder):
            modular(**inputs)
        assert len(teacher.get_encoder().block) == 6  # the teacher's own lists are back
        (name, student, target, student_maps, teacher_maps), = captured[-1:]
        assert name == stack
        assert torch.allclose(target, getattr(plain, f"{stack}_hidden_states")[4], atol=1e-5)
        assert not torch.allclose(student, target, atol=1e-3)
        expected_maps = {"self"} if stack == "encoder" else {"self", "cross"}
        assert student_maps == teacher_maps == expected_maps
        assert len(recorder.hidden_terms) == 1 and recorder.hidden_terms[0].item() > 0
        assert len(recorder.attention_terms) == len(expected_maps)


@pytest.mark.parametrize("attention", ["local", "transient-global"])
def test_longt5_spans_are_supervised_with_their_attention_probabilities(attention):
    """LongT5 layers return their attention probabilities only when asked (``output_attentions``,
    which :func:`attention_output_flags` gives for them) and put them between the self- and the
    cross-attention position bias: the decoder span still gets the teacher's cross bias (its target
    equals the teacher's own hidden states) and both sides record probabilities (rows sum to 1; the
    encoder's are LongT5's blocked maps), not position biases."""
    from transformers import LongT5ForConditionalGeneration

    from compression.modular.supervision import attention_output_flags
    from conftest import tiny_longt5_config

    torch.manual_seed(0)
    teacher = LongT5ForConditionalGeneration(tiny_longt5_config(attention, num_layers=6, num_decoder_layers=6)).eval()
    flags = attention_output_flags(teacher)
    assert flags == {"output_attentions": True} and attention_output_flags(_models()["t5"]) == {}
    modular = _perturbed(ModularModel(teacher, (2,)))
    inputs = _inputs(src=10)
    with torch.no_grad():
        plain = teacher(**inputs, output_hidden_states=True)
    captured = []

    class Recorder(_Recorder):
        def add(self, stack, student, target, student_maps, teacher_maps):
            captured.append((target, student_maps, teacher_maps))
            super().add(stack, student, target, student_maps, teacher_maps)

    for stack in ("encoder", "decoder"):
        recorder = Recorder({"encoder": None, "decoder": None}, ModularArgs())
        with torch.no_grad(), modular.use_plan([Span(stack, 2, 4)], recorder):
            modular(**inputs, **flags)
        target, student_maps, teacher_maps = captured[-1]
        assert torch.allclose(target, getattr(plain, f"{stack}_hidden_states")[4], atol=1e-5)
        assert set(student_maps) == set(teacher_maps) == ({"self"} if stack == "encoder" else {"self", "cross"})
        for maps in (student_maps, teacher_maps):
            for probabilities in maps.values():
                assert probabilities.dim() == (5 if stack == "encoder" else 4)
                torch.testing.assert_close(probabilities.sum(-1), torch.ones(probabilities.shape[:-1]))
        assert all(torch.isfinite(term) and term >= 0 for term in recorder.attention_terms)


def test_train_modules_changes_modules_not_the_teacher(tmp_path, tiny_t5, byt5_tokenizer):
    pairs = datasets.Dataset.from_dict({"document": [a for a, _ in ARTICLES], "summary": [s for _, s in ARTICLES]})
    data = tokenize_pairs(pairs, byt5_tokenizer, prefix="", max_source_length=48, max_target_length=24)
    teacher_state = {k: v.clone() for k, v in tiny_t5.state_dict().items()}
    untrained = ModularModel(copy.deepcopy(tiny_t5), (2, 4))
    args = TrainArgs(max_steps=4, batch_size=4, learning_rate=1e-3, logging_steps=2, eval_steps=4, device="cpu",
                     bf16="no", seed=0)
    records = []
    modular = train_modules(tiny_t5, byt5_tokenizer, data, data.select(range(4)), args,
                            ModularArgs(granularities=(2, 4)), tmp_path, on_progress=records.append,
                            progress_bar=False)

    assert all(torch.equal(teacher_state[k], v) for k, v in tiny_t5.state_dict().items())
    assert all(param.requires_grad for param in tiny_t5.parameters())
    assert tiny_t5.config._attn_implementation == "sdpa"
    changed = [name for name in modular.module_names()
               if any(not torch.equal(a, b) for a, b in zip(modular.module(name).state_dict().values(),
                                                            untrained.module(name).state_dict().values()))]
    assert changed
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert {"loss", "ce", "hidden", "attention"} <= set(train[0])
    assert {"eval_loss", "eval_loss_g2", "eval_loss_g4"} <= set(evals[-1])
    assert evals[-1]["eval_loss"] == pytest.approx((evals[-1]["eval_loss_g2"] + evals[-1]["eval_loss_g4"]) / 2)
    meta = json.loads((tmp_path / "modular.json").read_text())
    assert meta["training"]["steps"] == 4 and meta["modular_args"]["granularities"] == [2, 4]
    reloaded = load_modular(tmp_path)
    for name in modular.module_names():
        assert all(torch.equal(a, b) for a, b in zip(modular.module(name).state_dict().values(),
                                                     reloaded.module(name).state_dict().values()))


def test_cancelled_training_saves_what_it_has(tmp_path, tiny_bart, byt5_tokenizer):
    pairs = datasets.Dataset.from_dict({"document": [a for a, _ in ARTICLES], "summary": [s for _, s in ARTICLES]})
    data = tokenize_pairs(pairs, byt5_tokenizer, prefix="", max_source_length=48, max_target_length=24)
    cancel = threading.Event()
    cancel.set()
    args = TrainArgs(max_steps=50, batch_size=4, logging_steps=1, device="cpu", bf16="no")
    modular = train_modules(tiny_bart, byt5_tokenizer, data, None, args, ModularArgs(granularities=(2,),
                            alpha_attention=0.0), tmp_path, cancel=cancel, progress_bar=False)
    assert modular.info["training"]["cancelled"] and modular.info["training"]["steps"] == 1
    assert load_modular(tmp_path / "last-checkpoint").module_names() == modular.module_names()
