"""Knowledge distillation: loss terms (exact values), layer matching, and a short KD run."""

from __future__ import annotations

import copy
import json
import math

import datasets
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSeq2SeqLM, BartForConditionalGeneration, T5ForConditionalGeneration

from compression.config import TrainArgs
from compression.data import make_collator, tokenize_pairs
from compression.distill import (
    KDArgs,
    attention_loss,
    distill,
    distillation_loss,
    hidden_mse_loss,
    kl_div_loss,
    layer_mapping,
)
from compression.errors import CompressionError
from compression.layers import shrink
from conftest import ARTICLES, tiny_bart_config, tiny_t5_config


def _batch(tokenizer, model, rows=4):
    sources = tokenizer([a for a, _ in ARTICLES[:rows]], max_length=48, truncation=True)
    targets = tokenizer(text_target=[s for _, s in ARTICLES[:rows]], max_length=24, truncation=True)
    features = [{"input_ids": ids, "attention_mask": mask, "labels": labels}
                for ids, mask, labels in zip(sources["input_ids"], sources["attention_mask"], targets["input_ids"])]
    return make_collator(tokenizer, model)(features)


@pytest.fixture
def tiny_data(byt5_tokenizer):
    pairs = datasets.Dataset.from_dict({"document": [a for a, _ in ARTICLES], "summary": [s for _, s in ARTICLES]})
    return tokenize_pairs(pairs, byt5_tokenizer, prefix="", max_source_length=48, max_target_length=24)


# ---------------------------------------------------------------------------- loss functions

def test_kl_div_loss_matches_hand_computation_and_ignores_masked_positions():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    t = 2.0
    def kl(b, i):
        p, log_p = F.softmax(teacher[b, i] / t, -1), F.log_softmax(teacher[b, i] / t, -1)
        return (p * (log_p - F.log_softmax(student[b, i] / t, -1))).sum()

    expected = (kl(0, 0) + kl(0, 1) + kl(1, 0)) / 3 * t**2
    assert torch.allclose(kl_div_loss(student, teacher, mask, t), expected, atol=1e-6)
    changed = student.clone()
    changed[0, 2] += 100.0  # a masked-out position
    assert torch.equal(kl_div_loss(changed, teacher, mask, t), kl_div_loss(student, teacher, mask, t))
    assert kl_div_loss(teacher, teacher, mask, t).item() == 0.0
    assert kl_div_loss(student, teacher, torch.zeros_like(mask), t).item() == 0.0
    with pytest.raises(CompressionError, match="vocabulary"):
        kl_div_loss(student, torch.randn(2, 3, 6), mask, t)


def test_hidden_mse_loss_matches_pairs_and_mask():
    teacher = [torch.zeros(1, 3, 4) for _ in range(5)]  # embeddings + 4 layers
    student = [torch.zeros(1, 3, 4) for _ in range(3)]  # embeddings + 2 layers
    mask = torch.tensor([[1, 1, 0]])
    student[2] = student[2] + 2.0  # student layer 1 off by 2 everywhere -> MSE 4 on its pair
    student[1][0, 2] += 50.0  # padding position of student layer 0: ignored
    assert hidden_mse_loss(student, teacher, [1, 3], mask).item() == pytest.approx(4.0)
    teacher[4] = teacher[4] + 2.0  # now teacher layer 3 equals student layer 1
    assert hidden_mse_loss(student, teacher, [1, 3], mask).item() == 0.0
    # unmasked, the padding position counts: 4 values off by 50, over 3 positions x 4 dims
    assert hidden_mse_loss(student, teacher, [1, 3], None).item() == pytest.approx(4 * 2500 / 12)
    with pytest.raises(CompressionError, match="mapping"):
        hidden_mse_loss(student, teacher, [3], mask)
    with pytest.raises(CompressionError, match="outside"):
        hidden_mse_loss(student, teacher, [1, 4], mask)


def test_attention_loss_kl_and_mse():
    student = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])  # [1, 1 head, 2 queries, 2 keys]
    teacher = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    mask = torch.tensor([[1, 0]])  # second query is padding
    assert attention_loss([student], [teacher], [0], mask, "kl").item() == pytest.approx(math.log(2))
    assert attention_loss([student], [teacher], [0], mask, "mse").item() == pytest.approx(0.25)
    assert attention_loss([student], [teacher], [0], None, "mse").item() == pytest.approx(0.125)
    assert attention_loss([teacher], [teacher], [0], mask, "kl").item() == 0.0
    with pytest.raises(CompressionError, match="heads"):
        attention_loss([student], [torch.ones(1, 2, 2, 2) / 2], [0], mask)


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_kd_terms_are_zero_when_student_equals_teacher(family, byt5_tokenizer):
    torch.manual_seed(0)
    teacher = (T5ForConditionalGeneration(tiny_t5_config()) if family == "t5"
               else BartForConditionalGeneration(tiny_bart_config())).eval()
    teacher.set_attn_implementation("eager")
    student = copy.deepcopy(teacher)
    batch = _batch(byt5_tokenizer, teacher)
    flags = {"output_hidden_states": True, "output_attentions": True}
    with torch.no_grad():
        student_out, teacher_out = student(**batch, **flags), teacher(**batch, **flags)
    kd = KDArgs(alpha_ce=0.2, alpha_kl=0.8, alpha_hidden=1.0, alpha_attention=1.0)
    terms = distillation_loss(student_out, teacher_out, batch["labels"], batch["attention_mask"], kd)
    assert terms["kl"].item() == 0.0
    assert terms["hidden"].item() == 0.0
    assert terms["attention"].item() == pytest.approx(0.0, abs=1e-7)
    assert terms["ce"].item() == pytest.approx(student_out.loss.item(), rel=1e-6)
    assert terms["loss"].item() == pytest.approx(0.2 * terms["ce"].item(), rel=1e-5, abs=1e-6)
    # a different student gives positive terms
    with torch.no_grad():
        for param in student.parameters():
            param.add_(0.05 * torch.randn_like(param))
        other = student(**batch, **flags)
    terms = distillation_loss(other, teacher_out, batch["labels"], batch["attention_mask"], kd)
    assert all(terms[name].item() > 0 for name in ("kl", "hidden", "attention"))


def test_distillation_loss_needs_requested_outputs(tiny_t5, byt5_tokenizer):
    batch = _batch(byt5_tokenizer, tiny_t5)
    with torch.no_grad():
        out = tiny_t5(**batch)
    with pytest.raises(CompressionError, match="output_hidden_states"):
        distillation_loss(out, out, batch["labels"], batch["attention_mask"], KDArgs(alpha_hidden=1.0))


def test_kd_args_validation():
    assert KDArgs().weights() == {"ce": 0.2, "kl": 0.8, "hidden": 0.0, "attention": 0.0}
    assert KDArgs().temperature == 2.0
    for bad in (dict(alpha_kl=-1), dict(alpha_ce=0, alpha_kl=0), dict(temperature=0), dict(attention_loss="l1"),
                dict(teacher_dtype="int8"), dict(alpha_hidden=float("nan"))):
        with pytest.raises(CompressionError):
            KDArgs(**bad)


# ---------------------------------------------------------------------------- layer matching

def test_layer_mapping_from_shrink_and_identity(tiny_t5):
    student = shrink(tiny_t5, 2, "0,1,3")
    # encoder keeps 0 and 3 (spread 4->2): layer 0 stands for 0..2, layer 1 for 3
    assert layer_mapping(student, tiny_t5) == ([2, 3], [0, 2, 3])
    assert layer_mapping(copy.deepcopy(tiny_t5), tiny_t5) == ([0, 1, 2, 3], [0, 1, 2, 3])
    twelve = T5ForConditionalGeneration(tiny_t5_config(num_layers=12, num_decoder_layers=12))
    assert layer_mapping(shrink(twelve, 12, 3), twelve)[1] == [3, 7, 11]  # seq2seq-distillation's table


def test_layer_mapping_of_a_modular_assembly(tiny_t5):
    student = copy.deepcopy(tiny_t5)
    student.config.modular = {"teacher_encoder_layers": 4, "teacher_decoder_layers": 4,
                              "replaced": [{"stack": "decoder", "start": 0, "end": 3, "module": "decoder.g3.s0"}]}
    student.decoder.block = student.decoder.block[:2]
    assert layer_mapping(student, tiny_t5) == ([0, 1, 2, 3], [2, 3])


# ---------------------------------------------------------------------------- training

def _kd_loss(student, teacher, batch, kd):
    flags = {"output_hidden_states": True, "output_attentions": True}
    with torch.no_grad():
        terms = distillation_loss(student(**batch, **flags), teacher(**batch, **flags), batch["labels"],
                                  batch["attention_mask"], kd, *layer_mapping(student, teacher))
    return terms["loss"].item()


def test_distill_lowers_the_kd_loss_and_leaves_the_teacher_alone(tmp_path, tiny_t5, byt5_tokenizer, tiny_data):
    teacher = tiny_t5
    student = shrink(teacher, 2, 2)
    kd = KDArgs(alpha_hidden=0.5, alpha_attention=0.5)
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    batch = _batch(byt5_tokenizer, teacher, rows=8)
    teacher.set_attn_implementation("eager")
    student.set_attn_implementation("eager")
    before = _kd_loss(student, teacher, batch, kd)
    teacher.set_attn_implementation("sdpa")
    student.set_attn_implementation("sdpa")

    records = []
    args = TrainArgs(max_steps=12, batch_size=4, learning_rate=3e-3, logging_steps=4, eval_steps=6,
                     device="cpu", bf16="no", seed=0)
    result = distill(student, teacher, byt5_tokenizer, tiny_data, tiny_data.select(range(4)), args, kd, tmp_path,
                     on_progress=records.append, progress_bar=False)

    assert result.steps == 12 and not result.cancelled
    assert student.config._attn_implementation == "sdpa" and teacher.config._attn_implementation == "sdpa"
    assert all(torch.equal(teacher_state[k], v) for k, v in teacher.state_dict().items())
    assert all(param.requires_grad for param in student.parameters())
    train_records = [r for r in records if r["kind"] == "train"]
    assert {"loss", "ce", "kl", "hidden", "attention"} <= set(train_records[0])
    logged = [json.loads(line) for line in (tmp_path / "loss_log.jsonl").read_text().splitlines()]
    assert logged == records
    assert result.eval_loss is not None

    # the KD student saves and loads with plain transformers
    student.save_pretrained(tmp_path / "student")
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "student").eval()
    with torch.no_grad():
        assert torch.equal(student(**batch).logits, loaded(**batch).logits)
    assert loaded.config.shrink["decoder_layers_kept"] == [0, 3]

    teacher.set_attn_implementation("eager")
    student.set_attn_implementation("eager")
    after = _kd_loss(student, teacher, batch, kd)
    assert after < before


def test_distill_refuses_mismatched_models(tmp_path, tiny_t5, tiny_bart, byt5_tokenizer, tiny_data):
    args = TrainArgs(max_steps=1, device="cpu", bf16="no")
    with pytest.raises(CompressionError, match="family"):
        distill(shrink(tiny_bart, 2, 2), tiny_t5, byt5_tokenizer, tiny_data, None, args, KDArgs(), tmp_path)
    other_vocab = T5ForConditionalGeneration(tiny_t5_config(vocab_size=512))
    with pytest.raises(CompressionError, match="vocabulary"):
        distill(other_vocab, tiny_t5, byt5_tokenizer, tiny_data, None, args, KDArgs(), tmp_path)
    narrow = T5ForConditionalGeneration(tiny_t5_config(d_model=16, num_layers=2, num_decoder_layers=2))
    with pytest.raises(CompressionError, match="widths"):
        distill(narrow, tiny_t5, byt5_tokenizer, tiny_data, None, args, KDArgs(alpha_hidden=1.0), tmp_path)


def test_distill_with_an_8bit_teacher(tmp_path, tiny_t5, byt5_tokenizer, tiny_data):
    pytest.importorskip("bitsandbytes")
    from compression.distill import _teacher_for_training

    teacher = tiny_t5
    args = TrainArgs(max_steps=4, batch_size=4, learning_rate=3e-3, logging_steps=2, device="cpu", bf16="no", seed=0)
    kd = KDArgs(alpha_hidden=0.5, alpha_attention=0.5, teacher_dtype="8bit")
    held = _teacher_for_training(teacher, kd, args)
    assert held is not teacher and getattr(held, "is_loaded_in_8bit", False)
    assert type(held.encoder.block[0].layer[0].SelfAttention.q).__name__ == "Linear8bitLt"
    assert type(teacher.encoder.block[0].layer[0].SelfAttention.q) is torch.nn.Linear  # the caller's teacher
    batch = _batch(byt5_tokenizer, teacher)
    with torch.no_grad():
        reference, quantized = teacher(**batch).logits, held(**batch).logits.float()
    assert quantized.shape == reference.shape and torch.isfinite(quantized).all()
    assert (quantized - reference).abs().max() < 0.1 * reference.abs().max()  # int8 rounding, not noise

    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = shrink(teacher, 2, 2)
    start = {k: v.clone() for k, v in student.state_dict().items()}
    records = []
    result = distill(student, teacher, byt5_tokenizer, tiny_data, None, args, kd, tmp_path,
                     on_progress=records.append, progress_bar=False)
    assert result.steps == 4
    train_records = [r for r in records if r["kind"] == "train"]
    assert train_records and all(math.isfinite(r[name]) for r in train_records
                                 for name in ("loss", "ce", "kl", "hidden", "attention"))
    assert all(torch.equal(teacher_state[k], v) for k, v in teacher.state_dict().items())
    assert any(not torch.equal(start[k], v) for k, v in student.state_dict().items())


def test_label_smoothing_of_the_kd_and_modular_label_terms():
    """The KD and Modular Transformers label terms use the run's label smoothing; 0 is the plain
    cross-entropy; smoothing is (1 - eps) NLL + eps x the mean over the vocabulary of -log p."""
    from types import SimpleNamespace

    from compression.losses import example_cross_entropy, modular_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 7)
    labels = torch.tensor([[1, 2, -100], [3, -100, -100]])
    log_p = logits.log_softmax(-1)
    real = labels != -100
    nll = -log_p.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)[real]
    uniform = -log_p.mean(-1)[real]
    expected = (0.8 * nll + 0.2 * uniform).sum() / real.sum()
    sums, counts = example_cross_entropy(logits, labels, 0.2)
    assert (sums.sum() / counts.sum()).item() == pytest.approx(expected.item(), rel=1e-6)
    student = SimpleNamespace(logits=logits)
    kd = KDArgs(alpha_ce=1.0, alpha_kl=0.0)
    assert distillation_loss(student, student, labels, None, kd, label_smoothing=0.2)["ce"].item() == pytest.approx(
        expected.item(), rel=1e-6)
    assert distillation_loss(student, student, labels, None, kd)["ce"].item() == pytest.approx(
        (nll.sum() / real.sum()).item(), rel=1e-6)
    weights = SimpleNamespace(alpha_ce=1.0, alpha_hidden=0.0, alpha_attention=0.0)
    assert modular_loss(logits, labels, [], [], weights, label_smoothing=0.2)["ce"].item() == pytest.approx(
        expected.item(), rel=1e-6)


def test_blocked_attention_maps_of_longt5_are_scored_per_query_in_sequence_order():
    """LongT5's local / transient-global encoder maps are ``[batch, blocks, heads, block_len, keys]``:
    each query row is scored as in the plain maps, queries in sequence order, the last block's
    padding rows left out by the ``[batch, q_len]`` mask's length."""
    from compression.losses import attention_map_loss

    torch.manual_seed(0)
    batch, blocks, heads, block_len, keys, q_len = 2, 3, 4, 4, 12, 10
    student = torch.randn(batch, blocks, heads, block_len, keys).softmax(-1)
    teacher = torch.randn(batch, blocks, heads, block_len, keys).softmax(-1)
    mask = torch.ones(batch, q_len, dtype=torch.bool)
    mask[1, 7:] = False
    rows = []  # KL(teacher || student) per query, mean over heads, by hand
    for b in range(batch):
        for position in range(q_len):
            block, row = divmod(position, block_len)
            t, s = teacher[b, block, :, row], student[b, block, :, row]
            if mask[b, position]:
                rows.append((t * (t.log() - s.log())).sum(-1).mean())
    expected = torch.stack(rows).mean()
    torch.testing.assert_close(attention_map_loss(student, teacher, mask, "kl"), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("attention", ["local", "transient-global"])
def test_attention_distillation_trains_a_longt5_student(attention, tmp_path, byt5_tokenizer, tiny_data):
    from transformers import LongT5ForConditionalGeneration

    from conftest import tiny_longt5_config

    torch.manual_seed(0)
    teacher = LongT5ForConditionalGeneration(tiny_longt5_config(attention)).eval()
    student = shrink(teacher, 2, 2)
    args = TrainArgs(max_steps=2, batch_size=4, logging_steps=1, device="cpu", bf16="no", seed=0)
    records = []
    result = distill(student, teacher, byt5_tokenizer, tiny_data, None, args,
                     KDArgs(alpha_hidden=0.5, alpha_attention=0.5), tmp_path, on_progress=records.append,
                     progress_bar=False)
    assert result.steps == 2
    assert all(math.isfinite(r["attention"]) and r["attention"] > 0 for r in records if r["kind"] == "train")
