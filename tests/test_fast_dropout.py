"""compression.fast_dropout: the keep-mask's rate and seeding, exact inverted-dropout values and
gradients, transformers' eager attention reproduced exactly, the swap undone, and training that
reaches the loss PyTorch's own dropout reaches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compression.config import TrainArgs
from compression.fast_dropout import (
    ATTENTION_NAME,
    FastDropout,
    eager_attention_fast_dropout,
    fast_dropout,
    keep_mask,
    use_fast_dropout,
)
from compression.train import dropout_masks_enabled
from conftest import tiny_bart_config, tiny_t5_config


def test_keep_mask_rate_shape_and_seeding():
    torch.manual_seed(0)
    mask = keep_mask((1000, 1001), 0.1)
    assert mask.shape == (1000, 1001) and mask.dtype == torch.bool
    expected = 1 - round(0.1 * 32768) / 32768
    sigma = (expected * (1 - expected) / mask.numel()) ** 0.5
    assert abs(mask.float().mean().item() - expected) < 5 * sigma  # 5 sigma: fails once in ~3.5 million runs
    torch.manual_seed(0)
    assert torch.equal(keep_mask((1000, 1001), 0.1), mask)  # torch.manual_seed (set_seed) seeds it
    assert not torch.equal(keep_mask((1000, 1001), 0.1), mask)
    assert keep_mask((7,), 0.0).all() and not keep_mask((7,), 1.0).any()
    with pytest.raises(ValueError, match="must lie in"):
        keep_mask((3,), 1.5)


def test_fast_dropout_values_and_gradient():
    x = torch.randn(6, 50, requires_grad=True)
    torch.manual_seed(3)
    y = fast_dropout(x, 0.25)
    torch.manual_seed(3)
    mask = keep_mask(x.shape, 0.25)
    assert torch.equal(y, x.detach() * mask * (1 / 0.75))  # kept values scaled by 1 / (1 - p), the rest 0
    assert torch.equal(y == 0, ~mask)
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, mask * (1 / 0.75))
    assert fast_dropout(x, 0.25, training=False) is x and fast_dropout(x, 0.0) is x
    assert torch.equal(fast_dropout(x, 1.0), torch.zeros_like(x))
    module = FastDropout(0.25).eval()
    assert module(x) is x


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_swap_reproduces_eager_attention_and_is_undone(family):
    from transformers import BartForConditionalGeneration, T5ForConditionalGeneration

    torch.manual_seed(0)
    if family == "t5":
        model = T5ForConditionalGeneration(tiny_t5_config(dropout_rate=0.1))
    else:
        model = BartForConditionalGeneration(tiny_bart_config(dropout=0.1, attention_dropout=0.1))
    ids, labels = torch.randint(3, 300, (2, 12)), torch.randint(3, 300, (2, 5))
    model.eval().set_attn_implementation("eager")
    reference = model(input_ids=ids, labels=labels).logits
    names = {name: type(module) for name, module in model.named_modules()}
    restore = use_fast_dropout(model)
    assert model.config._attn_implementation == ATTENTION_NAME
    # T5's hidden dropout is nn.Dropout modules; BART calls nn.functional.dropout, which stays PyTorch's
    assert any(isinstance(module, FastDropout) for module in model.modules()) == (family == "t5")
    assert not any(type(module) is nn.Dropout and module.p > 0 for module in model.modules())
    assert torch.equal(model(input_ids=ids, labels=labels).logits, reference)  # the same eager math, exactly
    model.train()
    torch.manual_seed(1)
    first = model(input_ids=ids, labels=labels).loss
    torch.manual_seed(1)
    assert torch.equal(model(input_ids=ids, labels=labels).loss, first)  # seeded like PyTorch's dropout
    assert not torch.equal(first, model(input_ids=ids, labels=labels).loss)  # and dropping something
    first.backward()
    restore()
    assert model.config._attn_implementation == "eager" and model.training
    assert {name: type(module) for name, module in model.named_modules()} == names


def test_attention_dropout_scales_the_output_and_returns_scaled_probabilities_when_asked():
    """Training attention: ``(m * P) @ V * s`` equals ``(m * P * s) @ V`` (the same keep-mask from the
    same seed) to float rounding, gradients too; with ``output_attentions`` the probabilities come
    back as ``nn.functional.dropout`` returns them (kept ones scaled), and p = 1 gives zeros."""
    module = nn.Module().train()
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    bias = torch.randn(1, 3, 7, 7, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(2, 1, 7, 7, dtype=torch.float64)
    mask[1, :, :, 5:] = torch.finfo(torch.float64).min

    def attend(**kwargs):
        torch.manual_seed(5)
        out, probs = eager_attention_fast_dropout(module, q, k, v, mask, scaling=1.0, dropout=0.25,
                                                  position_bias=bias, **kwargs)
        grads = torch.autograd.grad(out.sum(), (q, k, v, bias))
        return out, probs, grads

    out, probs, grads = attend()
    torch.manual_seed(5)
    keep = keep_mask((2, 3, 7, 7), 0.25)
    reference_probs = torch.softmax(q @ k.transpose(2, 3) + bias + mask, dim=-1) * keep / 0.75
    reference = (reference_probs @ v).transpose(1, 2)
    reference_grads = torch.autograd.grad(reference.sum(), (q, k, v, bias))
    torch.testing.assert_close(out, reference, rtol=1e-12, atol=1e-12)
    for grad, expected in zip(grads, reference_grads):
        torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(probs, reference_probs * 0.75, rtol=1e-12, atol=1e-12)  # kept, unscaled: unread
    out_asked, probs_asked, _ = attend(output_attentions=True)
    torch.testing.assert_close(probs_asked, reference_probs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out_asked, reference, rtol=1e-12, atol=1e-12)
    all_dropped, _ = eager_attention_fast_dropout(module, q, k, v, mask, scaling=1.0, dropout=1.0, position_bias=bias)
    assert torch.equal(all_dropped, torch.zeros_like(all_dropped))


def test_a_model_without_dropout_is_left_alone(tiny_t5):
    before = tiny_t5.config._attn_implementation
    restore = use_fast_dropout(tiny_t5)  # conftest's tiny T5 has dropout 0
    assert tiny_t5.config._attn_implementation == before
    assert not any(isinstance(module, FastDropout) for module in tiny_t5.modules())
    restore()


def test_auto_means_the_cpu_and_never_the_isa():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert dropout_masks_enabled(TrainArgs(), cpu) and not dropout_masks_enabled(TrainArgs(), cuda)
    assert dropout_masks_enabled(TrainArgs(dropout_masks="fast"), cuda)
    assert not dropout_masks_enabled(TrainArgs(dropout_masks="torch"), cpu)
    from compression.train import speed_choices

    choices = speed_choices(TrainArgs(), cpu, bf16=False)
    assert choices["dropout_masks"] == "fast" and choices["dropout_masks_why"].startswith("auto: on a CPU")
    assert not choices["bf16_autocast"] and choices["bf16_why"].startswith("auto: this CPU has no native bf16")


def _train(splits, tokenizer, tmp_path, monkeypatch, masks: str, seed: int = 11):
    from transformers import T5ForConditionalGeneration

    from compression.train import finetune

    train, validation = splits
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(tiny_t5_config(dropout_rate=0.1))
    used = []
    from compression import train as train_module

    monkeypatch.setattr(train_module, "use_fast_dropout", lambda each: used.append(each) or use_fast_dropout(each))
    result = finetune(model, tokenizer, train, validation,
                      TrainArgs(epochs=3, batch_size=4, learning_rate=3e-3, logging_steps=1, device="cpu",
                                bf16="no", seed=seed, dropout_masks=masks), tmp_path / f"{masks}-{seed}",
                      progress_bar=False)
    return model, result, used


def test_training_with_fast_masks_reaches_the_loss_of_torch_masks(tiny_splits, byt5_tokenizer, tmp_path, monkeypatch):
    """Tolerance: the masks are a different random stream, so the losses differ as two seeds of
    PyTorch's own dropout do. Measured on this setting (tiny T5, dropout 0.1, 6 steps): validation
    loss 5.266 / 5.244 / 5.228 nats with torch masks at seeds 11 / 12 / 13 (spread 0.038), 5.245 /
    5.272 / 5.254 with fast masks; 0.1 nats is 2.5x that spread."""
    torch_model, torch_result, torch_used = _train(tiny_splits, byt5_tokenizer, tmp_path, monkeypatch, "torch")
    fast_model, fast_result, fast_used = _train(tiny_splits, byt5_tokenizer, tmp_path, monkeypatch, "fast")
    assert torch_used == [] and fast_used == [fast_model]
    assert (torch_result.speed["dropout_masks"], fast_result.speed["dropout_masks"]) == ("torch", "fast")
    assert "asked for" in fast_result.speed["dropout_masks_why"]
    assert abs(fast_result.eval_loss - torch_result.eval_loss) < 0.1
    assert fast_result.steps == torch_result.steps
    # put back after training: plain nn.Dropout and the default attention again, weights unchanged in name
    assert not any(isinstance(module, FastDropout) for module in fast_model.modules())
    assert fast_model.config._attn_implementation == torch_model.config._attn_implementation != ATTENTION_NAME
    assert fast_model.state_dict().keys() == torch_model.state_dict().keys()
    again, _, _ = _train(tiny_splits, byt5_tokenizer, tmp_path / "again", monkeypatch, "fast")  # same seed, same weights
    for name, tensor in fast_model.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name
