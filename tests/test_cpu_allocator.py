"""compression.cpu_allocator: glibc's malloc settings held for a training and put back after it
(counted across nested holders), a C library without mallopt left alone with the reason said, and
a training that computes exactly the same numbers either way."""

from __future__ import annotations

import torch

from compression import cpu_allocator
from compression import train as train_module
from compression.config import TrainArgs
from compression.cpu_allocator import GLIBC_DEFAULTS, HOLD, hold_freed_memory
from compression.train import allocator_held, speed_choices
from conftest import tiny_t5_config


class RecordingLibc:
    """Stands in for glibc: records ``mallopt`` and ``malloc_trim`` calls, and passes them on to
    ``real`` (the process's glibc) when one is given."""

    def __init__(self, real=None):
        self.calls, self.real = [], real

    def mallopt(self, parameter, value):
        self.calls.append(("mallopt", parameter, value))
        return self.real.mallopt(parameter, value) if self.real is not None else 1

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad))
        return self.real.malloc_trim(pad) if self.real is not None else 1


def test_hold_sets_once_and_the_last_restore_puts_glibc_defaults_back(monkeypatch):
    libc = RecordingLibc()
    monkeypatch.setattr(cpu_allocator, "glibc", lambda: libc)
    outer = hold_freed_memory()
    inner = hold_freed_memory()  # a second training in the same process (the dashboard's queue is one)
    held = [("mallopt", parameter, value) for parameter, value in HOLD.items()]
    assert libc.calls == held
    assert HOLD[cpu_allocator.M_MMAP_MAX] == 0 and HOLD[cpu_allocator.M_TRIM_THRESHOLD] == 1 << 30
    inner()
    inner()  # a second call of the same restore counts once
    assert libc.calls == held
    outer()
    assert libc.calls == held + [("mallopt", p, v) for p, v in GLIBC_DEFAULTS.items()] + [("malloc_trim", 0)]
    assert cpu_allocator.M_MMAP_THRESHOLD not in GLIBC_DEFAULTS  # setting it would end glibc's dynamic threshold


def test_no_c_library_found_means_no_glibc(monkeypatch):
    import ctypes.util

    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)  # as on Windows
    assert cpu_allocator.glibc.__wrapped__() is None  # the uncached lookup


def test_without_glibc_nothing_is_set_and_the_reason_is_given(monkeypatch):
    monkeypatch.setattr(cpu_allocator, "glibc", lambda: None)
    monkeypatch.setattr(train_module, "why_not_available", cpu_allocator.why_not_available)
    hold_freed_memory()()  # a no-op, no error
    cpu = torch.device("cpu")
    assert not allocator_held(TrainArgs(allocator="hold"), cpu)
    choices = speed_choices(TrainArgs(allocator="hold"), cpu, bf16=False)
    assert choices["allocator"] == "system" and "not glibc" in choices["allocator_why"]
    assert "not glibc" in speed_choices(TrainArgs(), cpu, bf16=False)["allocator_why"]


def test_auto_means_a_cpu_with_glibc(monkeypatch):
    monkeypatch.setattr(train_module, "why_not_available", lambda: None)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert allocator_held(TrainArgs(), cpu) and not allocator_held(TrainArgs(), cuda)
    assert allocator_held(TrainArgs(allocator="hold"), cuda)
    assert not allocator_held(TrainArgs(allocator="system"), cpu)
    choices = speed_choices(TrainArgs(), cpu, bf16=False)
    assert choices["allocator"] == "hold" and choices["allocator_why"].startswith("auto: on a CPU")
    assert speed_choices(TrainArgs(), cuda, bf16=False)["allocator"] == "system"


def test_training_computes_the_same_numbers_with_memory_held(tiny_splits, byt5_tokenizer, tmp_path, monkeypatch):
    """Holding freed memory changes where tensors live, not what is computed: the same seed gives
    bit-identical losses and weights with glibc's settings held (forced, as on any machine) and with
    its defaults; and the settings are put back when the training ends."""
    from transformers import T5ForConditionalGeneration

    from compression.train import finetune

    recorded = RecordingLibc(real=cpu_allocator.glibc())  # the real settings too, where this is glibc
    monkeypatch.setattr(cpu_allocator, "glibc", lambda: recorded)
    monkeypatch.setattr(train_module, "why_not_available", lambda: None)
    train, validation = tiny_splits
    results, weights = {}, {}
    for allocator in ("system", "hold"):
        torch.manual_seed(0)
        model = T5ForConditionalGeneration(tiny_t5_config(dropout_rate=0.1))
        results[allocator] = finetune(model, byt5_tokenizer, train, validation,
                                      TrainArgs(epochs=2, batch_size=4, learning_rate=3e-3, device="cpu", bf16="no",
                                                allocator=allocator), tmp_path / allocator, progress_bar=False)
        weights[allocator] = {name: p.detach().clone() for name, p in model.named_parameters()}
        if allocator == "system":
            assert recorded.calls == []
    assert [call[0] for call in recorded.calls] == ["mallopt"] * 6 + ["malloc_trim"]  # held, then put back
    assert (results["system"].speed["allocator"], results["hold"].speed["allocator"]) == ("system", "hold")
    assert results["hold"].train_loss == results["system"].train_loss
    assert results["hold"].eval_loss == results["system"].eval_loss
    assert all(torch.equal(weights["hold"][name], weights["system"][name]) for name in weights["system"])
