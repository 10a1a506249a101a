"""compression.train: fine-tuning with Seq2SeqTrainer, progress records, cancel, reproducibility, freezing."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
import torch

from compression.config import DataArgs, TrainArgs
from compression.data import load_pairs, make_collator, resolve_prefix, tokenize_pairs
from compression.errors import CompressionError, OutOfMemoryError
from compression.train import (
    LAST_CHECKPOINT,
    LOSS_LOG,
    TrainResult,
    bf16_enabled,
    cpu_has_native_bf16,
    evaluate_loss,
    fast_attention,
    finetune,
    resolve_device,
    restore_forward,
    sort_by_length,
)
from conftest import tiny_bart_config, tiny_t5_config

RECORD_KEYS = {"kind", "step", "total_steps", "epoch", "learning_rate", "tokens_per_s", "elapsed_s", "eta_s"}


def _fast(**overrides) -> TrainArgs:
    values = dict(epochs=3, batch_size=4, learning_rate=3e-3, logging_steps=1, device="cpu", bf16="no")
    values.update(overrides)
    return TrainArgs(**values)


def _tokenized(tiny_jsonl, tokenizer, model):
    args = DataArgs(train_file=str(tiny_jsonl[0]), validation_file=str(tiny_jsonl[1]))
    pairs = load_pairs(args)
    prefix = resolve_prefix(args, model)
    return tuple(tokenize_pairs(pairs[split], tokenizer, prefix=prefix, max_source_length=64, max_target_length=24)
                 for split in ("train", "validation"))


def _model(family: str):
    from transformers import BartForConditionalGeneration, T5ForConditionalGeneration

    torch.manual_seed(0)
    if family == "t5":
        return T5ForConditionalGeneration(tiny_t5_config()).eval()
    return BartForConditionalGeneration(tiny_bart_config()).eval()


def _weights(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_finetune_lowers_validation_loss(family, tiny_jsonl, byt5_tokenizer, tmp_path):
    model = _model(family)
    train, validation = _tokenized(tiny_jsonl, byt5_tokenizer, model)
    before = evaluate_loss(model, byt5_tokenizer, validation)
    records = []
    result = finetune(model, byt5_tokenizer, train, validation, _fast(), tmp_path / "out",
                      on_progress=records.append, progress_bar=False)
    after = evaluate_loss(model, byt5_tokenizer, validation)
    assert after < before - 0.5
    assert isinstance(result, TrainResult) and not result.cancelled
    assert result.steps == 6 and result.epochs == pytest.approx(3.0)
    assert result.eval_loss == pytest.approx(after, abs=1e-4)  # same token-weighted figure
    assert result.train_loss > 0 and result.tokens_per_s > 0 and result.seconds > 0
    assert not model.training

    train_records = [r for r in records if r["kind"] == "train"]
    eval_records = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in train_records] == [1, 2, 3, 4, 5, 6]
    assert eval_records and eval_records[-1]["step"] == 6
    for record in train_records:
        assert set(record) == RECORD_KEYS | {"loss"}
        assert record["total_steps"] == 6 and record["tokens_per_s"] > 0 and record["learning_rate"] > 0
    for record in eval_records:
        assert set(record) == RECORD_KEYS | {"eval_loss"}
    assert train_records[-1]["eta_s"] == 0.0
    assert records == result.log_history

    lines = (tmp_path / "out" / LOSS_LOG).read_text().splitlines()
    assert [json.loads(line) for line in lines] == records
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [LOSS_LOG]


def test_evaluate_loss_is_token_weighted_and_deterministic(tiny_jsonl, byt5_tokenizer, tiny_bart):
    _, validation = _tokenized(tiny_jsonl, byt5_tokenizer, tiny_bart)
    tiny_bart.train()
    whole = evaluate_loss(tiny_bart, byt5_tokenizer, validation, batch_size=16)
    assert tiny_bart.training  # mode restored
    assert evaluate_loss(tiny_bart, byt5_tokenizer, validation, batch_size=1) == pytest.approx(whole, rel=1e-6)
    assert evaluate_loss(tiny_bart, byt5_tokenizer, validation, batch_size=3) == pytest.approx(whole, rel=1e-6)
    # By hand: sum of per-token cross-entropies over all targets / number of target tokens.
    tiny_bart.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for row in validation:
            labels = torch.tensor([row["labels"]])
            logits = tiny_bart(input_ids=torch.tensor([row["input_ids"]]), labels=labels).logits
            total += torch.nn.functional.cross_entropy(logits[0], labels[0], reduction="sum").item()
            count += labels.numel()
    assert whole == pytest.approx(total / count, rel=1e-5)
    with pytest.raises(CompressionError):
        evaluate_loss(tiny_bart, byt5_tokenizer, validation.select([]))


def test_cancel_stops_within_one_step_and_saves(tiny_jsonl, byt5_tokenizer, tmp_path):
    from transformers import T5ForConditionalGeneration

    model = _model("t5")
    train, validation = _tokenized(tiny_jsonl, byt5_tokenizer, model)
    cancel = threading.Event()

    def on_progress(record):
        if record["kind"] == "train":
            cancel.set()  # set during step 1's log: the Trainer stops at the end of step 2 at the latest

    result = finetune(model, byt5_tokenizer, train, validation, _fast(epochs=10), tmp_path / "out",
                      on_progress=on_progress, cancel=cancel, progress_bar=False)
    assert result.cancelled
    assert result.steps == 2 < 20
    saved = tmp_path / "out" / LAST_CHECKPOINT
    assert (saved / "config.json").is_file() and (saved / "model.safetensors").is_file()
    reloaded = T5ForConditionalGeneration.from_pretrained(saved)
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name


def test_same_seed_same_weights(tiny_jsonl, byt5_tokenizer, tmp_path):
    weights = []
    for run in range(2):
        model = _model("t5")
        train, validation = _tokenized(tiny_jsonl, byt5_tokenizer, model)
        finetune(model, byt5_tokenizer, train, validation, _fast(epochs=2, batch_size=3, seed=11),
                 tmp_path / f"run{run}", progress_bar=False)
        weights.append(_weights(model))
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name
    assert not torch.equal(weights[0]["lm_head.weight"], _weights(_model("t5"))["lm_head.weight"])


def test_adafactor_moves_each_matrix_by_the_rate_times_its_own_scale(tiny_jsonl, byt5_tokenizer, tmp_path):
    """Adafactor with parameter-scaled updates (the teacher recipe's optimizer): one step changes every
    weight matrix by at most lr times its RMS, embeddings and attention alike; AdamW moves the large-scale
    embedding far less, relative to its size, than the small attention matrices."""

    def relative_changes(optimizer: str) -> dict[str, float]:
        model = _model("t5")
        before = _weights(model)
        train, _ = _tokenized(tiny_jsonl, byt5_tokenizer, model)
        finetune(model, byt5_tokenizer, train, None, _fast(optimizer=optimizer, learning_rate=1e-2, max_steps=1,
                                                          batch_size=8), tmp_path / optimizer, progress_bar=False)
        after = _weights(model)
        return {name: float((after[name] - before[name]).pow(2).mean().sqrt() / before[name].pow(2).mean().sqrt())
                for name in before if before[name].dim() == 2 and name != "lm_head.weight"}

    adafactor = relative_changes("adafactor")
    assert all(0 < change <= 1e-2 * (1 + 1e-4) for change in adafactor.values()), adafactor
    assert adafactor["shared.weight"] > 1e-3
    adamw = relative_changes("adamw")
    query = adamw["encoder.block.0.layer.0.SelfAttention.q.weight"]
    assert query > 10 * adamw["shared.weight"]


def test_freeze_encoder(tiny_jsonl, byt5_tokenizer, tmp_path):
    model = _model("t5")
    train, _ = _tokenized(tiny_jsonl, byt5_tokenizer, model)
    before = _weights(model)
    result = finetune(model, byt5_tokenizer, train, None, _fast(epochs=1, freeze_encoder=True), tmp_path / "out",
                      progress_bar=False)
    assert result.eval_loss is None and all(r["kind"] == "train" for r in result.log_history)
    after = _weights(model)
    encoder = [name for name in after if name.startswith("encoder.") or name == "shared.weight"]
    assert encoder and all(torch.equal(before[name], after[name]) for name in encoder)
    assert not torch.equal(before["decoder.block.0.layer.0.SelfAttention.q.weight"],
                           after["decoder.block.0.layer.0.SelfAttention.q.weight"])
    assert all(param.requires_grad for param in model.parameters())  # flags restored


def test_progress_bar_without_the_log_dicts(tiny_jsonl, byt5_tokenizer, tmp_path, capsys):
    """With ``progress_bar`` the Trainer's tqdm bar runs, but the log dicts it would write under it
    at every logging step (the loss log has them) are not printed."""
    model = _model("t5")
    train, validation = _tokenized(tiny_jsonl, byt5_tokenizer, model)
    result = finetune(model, byt5_tokenizer, train, validation, _fast(epochs=1), tmp_path / "out", progress_bar=True)
    printed = capsys.readouterr()
    assert any(r["kind"] == "train" for r in result.log_history) and result.eval_loss is not None
    assert "it/s" in printed.err or "s/it" in printed.err  # the bar
    assert "'loss'" not in printed.out + printed.err and "'eval_loss'" not in printed.out + printed.err


def test_freeze_embeddings_bart(tiny_jsonl, byt5_tokenizer, tmp_path):
    model = _model("bart")
    train, _ = _tokenized(tiny_jsonl, byt5_tokenizer, model)
    before = _weights(model)
    finetune(model, byt5_tokenizer, train, None, _fast(epochs=1, freeze_embeddings=True), tmp_path / "out",
             progress_bar=False)
    after = _weights(model)
    frozen = ["model.shared.weight", "model.encoder.embed_positions.weight", "model.decoder.embed_positions.weight"]
    assert all(torch.equal(before[name], after[name]) for name in frozen)
    assert not torch.equal(before["model.encoder.layers.0.fc1.weight"], after["model.encoder.layers.0.fc1.weight"])


def test_gradient_accumulation_matches_full_batch(tiny_jsonl, byt5_tokenizer, tmp_path):
    """Batch 4 x 1 and batch 2 x 2 accumulation see the same pairs and give the same token-weighted loss."""
    results, first_losses = [], []
    for run, (batch, accumulate) in enumerate([(4, 1), (2, 2)]):
        model = _model("t5")
        train, validation = _tokenized(tiny_jsonl, byt5_tokenizer, model)
        result = finetune(model, byt5_tokenizer, train, None,
                          _fast(epochs=1, batch_size=batch, gradient_accumulation_steps=accumulate,
                                group_by_length=False, learning_rate=1e-3),
                          tmp_path / f"run{run}", progress_bar=False)
        first_losses.append(result.log_history[0]["loss"])
        results.append(evaluate_loss(model, byt5_tokenizer, validation))
    assert first_losses[0] == pytest.approx(first_losses[1], rel=1e-5)  # not a sum of micro-batch means
    assert results[0] == pytest.approx(results[1], abs=2e-3)


def test_out_of_memory_becomes_typed_error(tiny_jsonl, byt5_tokenizer, tmp_path, monkeypatch):
    from compression import train as train_module

    def boom(self, model, inputs, num_items_in_batch=None):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train_module.Seq2SeqTrainer, "training_step", boom)
    model = _model("t5")
    train, _ = _tokenized(tiny_jsonl, byt5_tokenizer, model)
    with pytest.raises(OutOfMemoryError, match="lower the batch size"):
        finetune(model, byt5_tokenizer, train, None, _fast(epochs=1), tmp_path / "out", progress_bar=False)


def test_bad_inputs(tiny_jsonl, byt5_tokenizer, tmp_path):
    model = _model("t5")
    train, _ = _tokenized(tiny_jsonl, byt5_tokenizer, model)
    with pytest.raises(CompressionError, match="training set is empty"):
        finetune(model, byt5_tokenizer, train.select([]), None, _fast(), tmp_path / "out")
    with pytest.raises(CompressionError, match="warmup ratio"):
        finetune(model, byt5_tokenizer, train, None, _fast(warmup_ratio=1.5), tmp_path / "out")
    with pytest.raises(CompressionError, match="every weight is frozen"):
        model.get_decoder().requires_grad_(False)
        model.lm_head.requires_grad_(False)
        finetune(model, byt5_tokenizer, train, None, _fast(freeze_encoder=True), tmp_path / "out")


def test_device_and_bf16_helpers():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(CompressionError, match="not available"):
            resolve_device("cuda")
        if not torch.backends.mps.is_available():
            assert resolve_device("auto") == torch.device("cpu")
    cpu = torch.device("cpu")
    # "auto" on a CPU: bf16 exactly where the CPU has bf16 matrix instructions (AVX512-BF16 or AMX).
    assert bf16_enabled(TrainArgs(bf16="auto"), cpu) is cpu_has_native_bf16()
    flags = open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").exists() else ""
    if flags and not os.environ.get("COMPRESSION_TEST_CPU_KIND"):  # tests/cpu_kind: a simulated CPU kind
        assert cpu_has_native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)
    assert bf16_enabled(TrainArgs(bf16="yes"), cpu) is True
    assert bf16_enabled(TrainArgs(bf16="no"), torch.device("cuda")) is False


def test_bf16_on_cpu_trains(tiny_jsonl, byt5_tokenizer, tmp_path):
    model = _model("t5")
    train, validation = _tokenized(tiny_jsonl, byt5_tokenizer, model)
    assert model.config._attn_implementation == "sdpa"
    seen = []  # attention implementation while training: eager under CPU bf16 (fast_attention)
    result = finetune(model, byt5_tokenizer, train, validation, _fast(epochs=1, bf16="yes"), tmp_path / "out",
                      on_progress=lambda record: seen.append(model.config._attn_implementation),
                      progress_bar=False)
    assert seen and set(seen) == {"eager"}
    assert model.config._attn_implementation == "sdpa"  # switched back afterwards
    assert result.steps == 2 and result.eval_loss is not None and result.eval_loss == result.eval_loss
    assert next(model.parameters()).dtype == torch.float32  # autocast, weights stay fp32
    # accelerate's autocast patch of forward is undone: later generation runs in fp32, not bf16.
    assert "forward" not in vars(model) and "_original_forward" not in vars(model)
    batch = make_collator(byt5_tokenizer, model)([validation[0]])
    assert model(**batch).logits.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(**batch).logits.dtype == torch.bfloat16  # the class forward, untouched


def test_restore_forward_leaves_unpatched_models_alone():
    model = _model("t5")
    restore_forward(model)
    assert "forward" not in vars(model)


def test_fast_attention_only_for_cpu_bf16():
    model = _model("bart")
    assert fast_attention(model, torch.device("cpu"), bf16=False)() is None
    assert model.config._attn_implementation == "sdpa"
    restore = fast_attention(model, torch.device("cpu"), bf16=True)
    assert model.config._attn_implementation == "eager"
    restore()
    assert model.config._attn_implementation == "sdpa"


def test_padding_fraction_and_length_sorted_validation(tiny_jsonl, byt5_tokenizer, tmp_path):
    model = _model("t5")
    train, validation = _tokenized(tiny_jsonl, byt5_tokenizer, model)
    ordered = sort_by_length(validation)
    lengths = [(len(row["input_ids"]), len(row["labels"])) for row in ordered]
    assert lengths == sorted(lengths, reverse=True) and len(ordered) == len(validation)
    assert sort_by_length([1, 2]) == [1, 2]  # not a datasets.Dataset: unchanged
    # One batch of all 8 pairs: padding = 1 - real / (rows x longest source + rows x longest target).
    result = finetune(model, byt5_tokenizer, train, None, _fast(epochs=1, batch_size=len(train)),
                      tmp_path / "out", progress_bar=False)
    sources = [len(ids) for ids in train["input_ids"]]
    targets = [len(ids) for ids in train["labels"]]
    padded = len(train) * (max(sources) + max(targets))
    assert result.padding_fraction == pytest.approx(1 - (sum(sources) + sum(targets)) / padded)
    # The validation loss does not depend on the evaluation order.
    assert evaluate_loss(model, byt5_tokenizer, ordered) == pytest.approx(
        evaluate_loss(model, byt5_tokenizer, validation), rel=1e-5)


def test_label_smoothing_trains_on_the_smoothed_loss_and_validates_on_the_plain_one(tiny_jsonl, byt5_tokenizer,
                                                                                    tmp_path):
    """``label_smoothing`` reaches the training loss the Trainer uses (this project's token loss,
    not the Trainer's LabelSmoother, which the custom loss replaces), while the validation loss
    stays the plain cross-entropy."""
    from compression.losses import token_cross_entropy

    model = _model("t5")  # dropout 0: the training forward is the evaluation forward
    train, validation = _tokenized(tiny_jsonl, byt5_tokenizer, model)
    batch = make_collator(byt5_tokenizer, model)([train[i] for i in range(len(train))])
    with torch.no_grad():
        logits = model(**batch).logits
    smoothed = token_cross_entropy(logits, batch["labels"], label_smoothing=0.3).item()
    plain = token_cross_entropy(logits, batch["labels"]).item()
    assert abs(smoothed - plain) > 0.01  # an untrained model: NLL and the smooth term are both near log V
    result = finetune(model, byt5_tokenizer, train, validation,
                      _fast(max_steps=1, batch_size=len(train), learning_rate=1e-12, label_smoothing=0.3),
                      tmp_path / "out", progress_bar=False)
    assert result.train_loss == pytest.approx(smoothed, rel=1e-5)
    assert result.eval_loss == pytest.approx(evaluate_loss(model, byt5_tokenizer, validation), rel=1e-6)
    with pytest.raises(CompressionError, match="label smoothing must be >= 0 and < 1"):
        TrainArgs(label_smoothing=1.0)
