"""compression.fused_cross_entropy: the LM head and the cross-entropy in one chunked step gives the
full-logits loss and gradients; a T5-family fine-tune trains to the same losses with it; other
families keep the full logits and say why."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from compression import fused_cross_entropy as fce
from compression.config import TrainArgs
from compression.losses import example_cross_entropy, token_cross_entropy
from compression.train import fused_loss_choice, speed_choices
from conftest import tiny_bart_config, tiny_longt5_config, tiny_t5_config, untie_head

VOCAB, D_MODEL = 97, 16


@pytest.fixture
def small_chunks(monkeypatch):
    """Five rows per chunk, so every test batch is split over several chunks."""
    monkeypatch.setattr(fce, "CHUNK_ELEMENTS", VOCAB * 5)


def _batch(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(VOCAB, D_MODEL, generator=generator).requires_grad_()
    hidden = torch.randn(3, 7, D_MODEL, generator=generator).requires_grad_()
    labels = torch.randint(0, VOCAB, (3, 7), generator=generator)
    labels[0, 5:] = -100
    labels[2, 1:] = -100  # 13 real target tokens of 21
    return hidden, weight, labels


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_loss_and_gradients_equal_the_full_logits(small_chunks, label_smoothing):
    """Loss, hidden-state and weight gradients as F.linear + the project's token cross-entropy, to
    float32 rounding (the sums run in a different order); the divisor is honoured."""
    hidden, weight, labels = _batch()
    full = token_cross_entropy(F.linear(hidden, weight), labels, None, label_smoothing)
    full_grads = torch.autograd.grad(full, (hidden, weight))
    fused = fce.linear_cross_entropy(hidden, weight, labels, None, label_smoothing)
    fused_grads = torch.autograd.grad(fused, (hidden, weight))
    assert fused.dtype == torch.float32 and fused.shape == ()
    torch.testing.assert_close(fused, full, rtol=1e-6, atol=1e-6)
    for got, want in zip(fused_grads, full_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    halved = fce.linear_cross_entropy(hidden, weight, labels, 26, label_smoothing)
    torch.testing.assert_close(halved, full * 13 / 26)
    assert fce.linear_cross_entropy(hidden, weight, labels, torch.tensor(26)).item() == pytest.approx(
        token_cross_entropy(F.linear(hidden, weight), labels, 26).item(), rel=1e-6)


def test_padding_gets_no_gradient_and_a_frozen_head_none(small_chunks):
    hidden, weight, labels = _batch(1)
    weight.requires_grad_(False)
    fce.linear_cross_entropy(hidden, weight, labels).backward()
    assert weight.grad is None
    assert torch.all(hidden.grad[labels == -100] == 0) and torch.all(hidden.grad[labels != -100].abs().sum(-1) > 0)


def test_example_sums_equal_the_full_logits(small_chunks):
    hidden, weight, labels = _batch(2)
    sums, counts = fce.example_linear_cross_entropy(hidden, weight, labels)
    want_sums, want_counts = example_cross_entropy(F.linear(hidden, weight), labels)
    torch.testing.assert_close(sums, want_sums.detach(), rtol=1e-6, atol=1e-5)
    assert counts.tolist() == want_counts.tolist() == [5, 7, 1]


@pytest.mark.parametrize("family", ["t5", "t5-untied", "longt5", "mt5", "umt5"])
def test_the_model_hands_out_what_its_head_receives(family):
    """Under use_hidden_state_head the model's logits are its head's input (T5's d_model ** -0.5 scale
    included); the head applied to them gives the model's own logits; restored, nothing changed.
    Every family of HIDDEN_STATE_FAMILIES is checked."""
    from transformers import (
        LongT5ForConditionalGeneration,
        MT5Config,
        MT5ForConditionalGeneration,
        T5ForConditionalGeneration,
        UMT5Config,
        UMT5ForConditionalGeneration,
    )

    torch.manual_seed(0)
    t5_values = tiny_t5_config().to_dict()
    model = {"longt5": lambda: LongT5ForConditionalGeneration(tiny_longt5_config()),
             "mt5": lambda: MT5ForConditionalGeneration(MT5Config(**t5_values)),
             "umt5": lambda: UMT5ForConditionalGeneration(UMT5Config(**t5_values)),
             "t5-untied": lambda: untie_head(T5ForConditionalGeneration(tiny_t5_config())),
             }.get(family, lambda: T5ForConditionalGeneration(tiny_t5_config()))()
    model.eval()
    assert fce.why_unsupported(model) is None
    ids, decoder_ids = torch.randint(2, 300, (2, 9)), torch.randint(2, 300, (2, 5))
    keys = list(model.state_dict())
    with torch.no_grad():
        logits = model(input_ids=ids, decoder_input_ids=decoder_ids).logits
        restore = fce.use_hidden_state_head(model)
        hidden = model(input_ids=ids, decoder_input_ids=decoder_ids).logits
        assert list(model.state_dict()) == keys
        restore()
        again = model(input_ids=ids, decoder_input_ids=decoder_ids).logits
    assert hidden.shape == (2, 5, 32) and logits.shape == (2, 5, 384)
    torch.testing.assert_close(F.linear(hidden, model.lm_head.weight), logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(again, logits)


def test_bart_keeps_the_full_logits_and_says_why():
    from transformers import BartForConditionalGeneration

    model = BartForConditionalGeneration(tiny_bart_config())
    assert "bart" in fce.why_unsupported(model)
    with pytest.raises(ValueError, match="full logits"):
        fce.use_hidden_state_head(model)
    fused, why = fused_loss_choice(TrainArgs(lm_head_loss="fused"), torch.device("cpu"), False, model)
    assert not fused and why.startswith("lm_head_loss=fused, but the bart family")


def test_auto_is_fused_for_fp32_on_a_cpu_only(tiny_t5):
    """The rule, with device and bf16 given (nothing read from this machine's CPU)."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert fused_loss_choice(TrainArgs(), cpu, False, tiny_t5)[0]
    assert not fused_loss_choice(TrainArgs(), cpu, True, tiny_t5)[0]
    assert not fused_loss_choice(TrainArgs(), cuda, False, tiny_t5)[0]
    assert fused_loss_choice(TrainArgs(lm_head_loss="fused"), cuda, True, tiny_t5)[0]
    assert fused_loss_choice(TrainArgs(lm_head_loss="full"), cpu, False, tiny_t5) == (False, "lm_head_loss=full was asked for")
    choices = speed_choices(TrainArgs(), cpu, False, fused_loss_choice(TrainArgs(), cpu, False, tiny_t5))
    assert choices["lm_head_loss"] == "fused" and choices["lm_head_loss_why"].startswith("auto: in fp32 on a CPU")
    assert speed_choices(TrainArgs(), cpu, False)["lm_head_loss"] == "full"  # KD / modular: no fused choice


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_fine_tune_trains_to_the_same_losses_fused(family, tiny_splits, byt5_tokenizer, tmp_path, small_chunks):
    """A fine-tune forced fused (bf16 off, no dropout, so both paths are deterministic) gives the
    full-logits training loss and validation loss within 1e-5 nats and weights within 1e-4 after 4
    AdamW steps at 3e-3 (float32 sums in another order are the only difference), records its choice,
    and leaves the model handing out full logits again. BART, not supported, trains exactly as with
    the full logits and says why."""
    from transformers import BartForConditionalGeneration, T5ForConditionalGeneration

    from compression.train import finetune

    train, validation = tiny_splits
    results, weights = {}, {}
    for loss in ("full", "fused"):
        torch.manual_seed(0)
        model = (T5ForConditionalGeneration(tiny_t5_config()) if family == "t5"
                 else BartForConditionalGeneration(tiny_bart_config()))
        results[loss] = finetune(model, byt5_tokenizer, train, validation,
                                 TrainArgs(epochs=2, batch_size=4, learning_rate=3e-3, device="cpu", bf16="no",
                                           lm_head_loss=loss), tmp_path / loss, progress_bar=False)
        weights[loss] = {name: p.detach().clone() for name, p in model.named_parameters()}
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([[5, 6, 1]]), decoder_input_ids=torch.tensor([[0]])).logits
        assert logits.shape[-1] == model.config.vocab_size
    assert results["full"].speed["lm_head_loss"] == "full"
    assert results["fused"].speed["lm_head_loss"] == ("fused" if family == "t5" else "full")
    assert results["fused"].train_loss == pytest.approx(results["full"].train_loss, abs=1e-5)
    assert results["fused"].eval_loss == pytest.approx(results["full"].eval_loss, abs=1e-5)
    for name, want in weights["full"].items():
        torch.testing.assert_close(weights["fused"][name], want, rtol=0, atol=1e-4)
    if family == "bart":
        assert "bart family" in results["fused"].speed["lm_head_loss_why"]
        assert results["fused"].train_loss == results["full"].train_loss
