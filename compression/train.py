"""Fine-tuning: the second half of Shrink-and-Fine-Tune (Shleifer & Rush 2020, Section 3: "SFT").

Built on ``transformers.Seq2SeqTrainer`` (AdamW, linear schedule, DDP under ``torchrun``, bf16
autocast via accelerate). Two small additions on top of the library:

* :class:`compression.progress.ProgressCallback` turns the Trainer's log events into plain dicts (step, loss, learning
  rate, real tokens/s, ETA) for a UI or CLI, appends them to ``output_dir/loss_log.jsonl`` and stops
  training within one optimizer step when a ``threading.Event`` is set.
* the training loss is summed over target tokens and divided by the Trainer's count of target
  tokens in the whole accumulated (and all-process) batch (:func:`token_loss`), so gradient
  accumulation and DDP are exact; T5/BART's own loss would be scaled wrongly (see there).
* the validation loss is the token-weighted mean cross-entropy (nats per target token) over the
  whole validation set, the same figure :func:`evaluate_loss` gives offline. (The stock Trainer
  averages per-batch means, which depends on the batch size.)
* on a CPU, speed settings chosen per machine and recorded with their reasons (:func:`speed_choices`):
  cheaper dropout masks, freed memory held for reuse and, for T5-family fine-tunes in fp32, the
  cross-entropy computed with the LM head, chunked, over the real target tokens
  (:mod:`compression.fused_cross_entropy`).
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, Seq2SeqTrainer, Seq2SeqTrainingArguments, set_seed
from transformers.optimization import Adafactor
from transformers.trainer_callback import PrinterCallback
from transformers.trainer_callback import ProgressCallback as TrainerProgressBar
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import EvalLoopOutput
from transformers.utils import is_torch_tf32_available

from .config import TrainArgs
from .cpu_allocator import hold_freed_memory, why_not_available
from .data import count_tokens, make_collator
from .device import bf16_native, cpu_has_native_bf16, resolve_device  # noqa: F401  (re-exported)
from .errors import CompressionError, OutOfMemoryError, RunError
from .fast_dropout import use_fast_dropout
from .files import replace_folder
from .fused_cross_entropy import example_linear_cross_entropy, fused_token_loss, use_hidden_state_head, why_unsupported
from .losses import example_cross_entropy, token_loss
from .progress import LOSS_LOG, ProgressCallback  # noqa: F401  (re-exported)
from .resume import LAST_CHECKPOINT, checkpoint_step  # noqa: F401  (re-exported)

#: Evaluations per run when ``TrainArgs.eval_steps`` is unset (half-way and at the end). Each one is a
#: forward pass over the whole validation set: with 100 validation pairs against 699 training pairs
#: (tiny T5, bf16 on a 2-core CPU) one costs ~4 % of the epoch, so the former five added ~20 %.
DEFAULT_EVALUATIONS = 2


@dataclass
class TrainResult:
    """What one :func:`finetune` call did.

    ``train_loss``: mean training cross-entropy over the run (nats per target token, the Trainer's
    ``training_loss``). ``eval_loss``: validation loss at the last evaluation (token-weighted, nats),
    ``None`` when there was no validation set or training was cancelled before any evaluation.
    ``steps``: optimizer steps; ``epochs``: epochs done (fractional); ``seconds``: wall time of the
    training loop; ``tokens_per_s``: real (non-padding) source + target tokens per second, all
    processes together. ``log_history``: the progress records (see :class:`ProgressCallback`).
    ``padding_fraction``: share of the source + target tokens trained on (main process, padded
    batches) that were padding, 0-1. ``speed``: what the speed settings chose on this machine and
    why (:func:`speed_choices`).
    """

    train_loss: float
    eval_loss: float | None
    steps: int
    epochs: float
    seconds: float
    tokens_per_s: float
    cancelled: bool
    log_history: list[dict] = field(default_factory=list)
    padding_fraction: float = 0.0
    speed: dict = field(default_factory=dict)


def bf16_enabled(args: TrainArgs, device: torch.device) -> bool:
    """Whether to train under bf16 autocast (weights and optimizer state stay fp32).

    ``"yes"`` always (CPU autocast supports bf16 too), ``"no"`` never, ``"auto"`` where bf16 is
    native and measured to help: a CUDA device that supports bf16 (Ampere or newer), or a CPU with
    bf16 matrix instructions (:func:`cpu_has_native_bf16`). On that CPU, one epoch of the tiny T5
    on 699 XSum pairs trained 1.88x faster under bf16 autocast than in fp32 (median of 3, 1.86-1.89)
    and ended at the same validation loss, 8.632 nats (``benchmarks/finetune.py``).
    """
    if args.bf16 == "yes":
        return True
    if args.bf16 == "no":
        return False
    return bf16_native(device)


#: Source length (tokens, the longest training source) from which ``gradient_checkpointing="auto"``
#: turns activation checkpointing on. Measured: one training step (forward + backward, batch 2, 64
#: target tokens, fp32, one thread, a fresh model per length; peak RSS of the step above the RSS before
#: it) of the ``longt5-tglobal-tiny`` preset on this project's 2-core AMD EPYC VM, without -> with
#: checkpointing: 1,024 tokens 495 -> 374 MiB, 2,048: 984 -> 719 MiB, 4,096: 1,729 -> 1,277 MiB
#: (-24 to -27 %, growing ~0.42 -> ~0.31 MiB per source token at batch 2); time +23 %, +1 %, +21 %
#: (the machine was shared with a training job and two test suites, so the seconds, 24 -> 29, 53 -> 54,
#: 114 -> 138, are ~10x an idle machine's; only the ratios are meant). The saving is a quarter, not more,
#: because the embeddings, the shared position biases and the decoder's cross-attention over the whole
#: source stay outside the checkpointed layers. From 4k tokens a step's activations pass 1.7 GiB at
#: batch 2 (about 7 GiB at the default batch of 8; by the same slope about 7 GiB at batch 2 and 16k
#: tokens, 5 GiB checkpointed), so there the quarter saved is worth the fifth of time it costs.
CHECKPOINTING_FROM = 4096


def longest_source(dataset) -> int:
    """The longest ``input_ids`` row of a tokenized dataset, in tokens (0 when it has none)."""
    column = getattr(dataset, "column_names", None) or []
    if "input_ids" not in column or len(dataset) == 0:
        return 0
    return max(len(ids) for ids in dataset["input_ids"])


def checkpointing_enabled(args: TrainArgs, source_length: int) -> bool:
    """Whether to train with activation (gradient) checkpointing (Chen et al. 2016, "Training Deep
    Nets with Sublinear Memory Cost"; transformers' ``activation_checkpointing_enable``): each layer's
    activations are recomputed in the backward pass instead of kept, so activation memory no longer
    grows with depth, for about one more forward pass of time per step. The loss and gradients are
    the same. ``"yes"``/``"no"`` force it; ``"auto"`` turns it on when the longest training source is
    at least :data:`CHECKPOINTING_FROM` tokens."""
    if args.gradient_checkpointing == "yes":
        return True
    if args.gradient_checkpointing == "no":
        return False
    return source_length >= CHECKPOINTING_FROM


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower()
    )


def _oom_error(err: BaseException, batch_size: int) -> OutOfMemoryError:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return OutOfMemoryError(
        f"ran out of memory ({str(err).splitlines()[0][:200]}); lower the batch size (now {batch_size}) "
        "and raise gradient accumulation to keep the effective batch, or lower the max source/target lengths"
    )


def evaluate_loss(model: torch.nn.Module, tokenizer: Any, dataset, batch_size: int = 16) -> float:
    """Mean teacher-forced cross-entropy of a tokenized dataset, in nats per target token.

    Token-weighted over the whole set (sum of per-token losses / number of target tokens, padding
    excluded), not a mean of batch means, so the figure does not depend on ``batch_size``. No
    training, no dropout, no sampling: deterministic. Runs on the model's device in its own dtype;
    the model's train/eval mode is restored afterwards. ``dataset`` comes from
    :func:`compression.data.tokenize_pairs` (``input_ids``, ``attention_mask``, ``labels``).

    Raises:
        CompressionError: the dataset is empty or has no ``labels``.
        OutOfMemoryError: the batch does not fit; lower ``batch_size``.
    """
    if len(dataset) == 0 or "labels" not in dataset.column_names:
        raise CompressionError("evaluate_loss needs a non-empty tokenized dataset with labels (see tokenize_pairs)")
    device = next(model.parameters()).device
    collator = make_collator(tokenizer, model)
    columns = [name for name in ("input_ids", "attention_mask", "labels") if name in dataset.column_names]
    rows = dataset.select_columns(columns)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                batch = collator([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
                batch = {key: value.to(device) for key, value in batch.items()}
                sums, counts = example_cross_entropy(model(**batch).logits, batch["labels"])
                total += sums.sum().item()
                count += int(counts.sum().item())
    except Exception as err:
        if _is_oom(err):
            raise _oom_error(err, batch_size) from err
        raise
    finally:
        model.train(was_training)
    if count == 0:
        raise CompressionError("evaluate_loss: every summary is empty after tokenization; check the data")
    return total / count


def sort_by_length(dataset):
    """``dataset`` reordered longest source first (``input_ids`` length, then ``labels`` length), so
    consecutive rows batch with little padding. Used for validation, whose token-weighted loss does not
    depend on the order. Returns ``dataset`` unchanged when it is not a ``datasets.Dataset`` with
    ``input_ids``."""
    import datasets

    if not isinstance(dataset, datasets.Dataset) or "input_ids" not in dataset.column_names:
        return dataset
    sources = [len(ids) for ids in dataset["input_ids"]]
    targets = [len(ids) for ids in dataset["labels"]] if "labels" in dataset.column_names else [0] * len(sources)
    order = sorted(range(len(sources)), key=lambda i: (-sources[i], -targets[i]))
    return dataset.select(order)


class EpochSeededSampler(torch.utils.data.Sampler):
    """``transformers.trainer_pt_utils.LengthGroupedSampler`` whose shuffle is drawn from its own
    generator seeded with ``seed + epoch`` (the Trainer calls :meth:`set_epoch` before each epoch),
    not from the global RNG. The stock sampler draws from the global RNG, which dropout has advanced
    by then, so a run resumed in its second epoch would see a different order than the run it
    continues; seeded per epoch, the order of epoch *e* is the same however the run got there."""

    def __init__(self, sampler: LengthGroupedSampler, seed: int):
        self.sampler, self.seed, self.epoch = sampler, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        self.sampler.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(self.sampler)


class CompressionTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer that counts real and padded tokens, evaluates length-sorted batches
    (:func:`sort_by_length`), reports a token-weighted validation loss, shuffles length groups per
    epoch from the data seed (:class:`EpochSeededSampler`) and writes its checkpoints atomically as
    ``output_dir/last-checkpoint`` (:meth:`_save_checkpoint`)."""

    def __init__(self, *args, optimizer_cls_and_kwargs=None, **kwargs):
        if kwargs.get("eval_dataset") is not None:
            kwargs["eval_dataset"] = sort_by_length(kwargs["eval_dataset"])
        super().__init__(*args, **kwargs)
        # Trainer's own argument, which Seq2SeqTrainer.__init__ does not pass on (read by create_optimizer)
        self.optimizer_cls_and_kwargs = optimizer_cls_and_kwargs
        self._local_tokens = torch.zeros((), dtype=torch.int64, device=self.args.device)
        self._local_processed = 0
        self.tokens_seen = 0
        self._staging_root: str | None = None
        #: The LM head while the model hands out hidden states (:func:`use_hidden_state_head`), else None.
        self.fused_head: torch.nn.Linear | None = None

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if isinstance(sampler, LengthGroupedSampler) and sampler.generator is None:
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return EpochSeededSampler(sampler, seed)
        return sampler

    def _get_output_dir(self, trial):
        return self._staging_root if self._staging_root is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial):
        """The Trainer's full checkpoint (weights, tokenizer, optimizer, scheduler, RNG states,
        trainer state), built in a hidden staging folder beside the target and published as
        ``output_dir/last-checkpoint`` with :func:`compression.files.replace_folder` (the previous
        one is replaced only once the new one is whole), so no reader or resume ever sees half a
        checkpoint. All processes write into the same staging folder (per-process RNG files)."""
        output_dir = Path(self.args.output_dir)
        staging = output_dir / f".{LAST_CHECKPOINT}.staging-{self.state.global_step}"
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        self._staging_root = str(staging)
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_root = None
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            replace_folder(staging / f"checkpoint-{self.state.global_step}", output_dir / LAST_CHECKPOINT)
            shutil.rmtree(staging, ignore_errors=True)

    def training_step(self, model, inputs, num_items_in_batch=None):
        self._local_tokens += count_tokens(inputs).to(self._local_tokens.device)
        self._local_processed += inputs["input_ids"].numel()
        if "labels" in inputs:
            self._local_processed += inputs["labels"].numel()
        return super().training_step(model, inputs, num_items_in_batch)

    def padding_fraction(self) -> float:
        """Share of the source + target tokens this process trained on (padded) that were padding (0-1)."""
        if not self._local_processed:
            return 0.0
        return 1.0 - int(self._local_tokens.item()) / self._local_processed

    def log(self, logs, start_time=None):
        # Every process calls log() at the same points (the Trainer gathers the loss there too).
        self.tokens_seen = int(self.accelerator.gather(self._local_tokens.reshape(1)).sum().item())
        super().log(logs, start_time)

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        model = self.model
        was_training = model.training
        model.eval()
        total, count, samples = 0.0, 0, 0
        with torch.no_grad():
            for batch in dataloader:
                batch = self._prepare_inputs(batch)
                labels = batch["labels"]
                if "decoder_input_ids" in batch:  # the model's own loss is not needed (nor possible when fused)
                    batch = {key: value for key, value in batch.items() if key != "labels"}
                with self.compute_loss_context_manager():
                    outputs = model(**batch)
                    if self.fused_head is not None:
                        sums, counts = example_linear_cross_entropy(outputs.logits, self.fused_head.weight, labels)
                    else:
                        sums, counts = example_cross_entropy(outputs.logits, labels)
                # gather_for_metrics drops the rows accelerate duplicated to even out the last batch.
                sums, counts = self.accelerator.gather_for_metrics((sums, counts))
                total += sums.sum().item()
                count += int(counts.sum().item())
                samples += len(sums)
        model.train(was_training)
        loss = total / count if count else float("nan")
        return EvalLoopOutput(predictions=None, label_ids=None,
                              metrics={f"{metric_key_prefix}_loss": loss}, num_samples=samples)


def fast_attention(model: torch.nn.Module, device: torch.device, bf16: bool) -> Callable[[], None]:
    """While training on a CPU under bf16 autocast, run attention with transformers' ``"eager"``
    implementation instead of ``"sdpa"``; returns the function that switches back.

    On CPU, PyTorch's SDPA falls back to its "math" kernel whenever there is dropout or an additive
    bias (T5's relative positions), and that kernel upcasts bf16 inputs to fp32, so the attention
    matmuls lose the bf16 speed-up; the eager path multiplies in bf16. Measured on the tiny T5 at
    512 source tokens, 1 thread: 0.89 s per step eager against 1.18 s SDPA (fp32: 1.93 s either way).
    Uses ``PreTrainedModel.set_attn_implementation``; models that cannot switch, other devices and
    fp32 training are left as they are (the returned function then does nothing).
    """
    previous = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if not (device.type == "cpu" and bf16 and previous == "sdpa" and hasattr(model, "set_attn_implementation")):
        return lambda: None
    model.set_attn_implementation("eager")
    return lambda: model.set_attn_implementation(previous)


def speed_choices(args: TrainArgs, device: torch.device, bf16: bool,
                  lm_head_loss: tuple[bool, str] | None = None) -> dict:
    """What a training on ``device`` runs with, and why, in words (``train.json``'s ``speed``):
    ``{"bf16_autocast": bool, "bf16_why", "dropout_masks": "fast"|"torch", "dropout_masks_why",
    "allocator": "hold"|"system", "allocator_why", "lm_head_loss": "fused"|"full", "lm_head_loss_why"}``;
    ``lm_head_loss`` is :func:`fused_loss_choice`'s answer (default: a training whose loss needs the
    full logits)."""
    if args.bf16 != "auto":
        bf16_why = f"bf16={args.bf16} was asked for"
    elif bf16:
        bf16_why = f"auto: this {device.type.upper()} has native bf16 (1.88x faster at the same loss, measured)"
    else:
        bf16_why = (f"auto: this {device.type.upper()} has no native bf16 (emulated bf16 is slower than fp32 "
                    "there: 2.6x slower generation, measured on an AVX2 CPU)")
    fast = dropout_masks_enabled(args, device)
    if args.dropout_masks != "auto":
        masks_why = f"dropout_masks={args.dropout_masks} was asked for"
    elif fast:
        masks_why = ("auto: on a CPU PyTorch's dropout draws a random number per mask element, "
                     "compression.fast_dropout one per four (python -m benchmarks.step_profile)")
    else:
        masks_why = "auto: a GPU draws dropout masks in parallel already"
    hold = allocator_held(args, device)
    if args.allocator != "auto":
        allocator_why = f"allocator={args.allocator} was asked for" + (
            f", but {why_not_available()}" if args.allocator == "hold" and not hold else "")
    elif hold:
        allocator_why = ("auto: on a CPU glibc would unmap and trim the memory of every large activation and "
                         "fault it in again the next step; held for reuse instead (compression.cpu_allocator: "
                         "a 1.16-1.19x faster fp32 epoch, python -m benchmarks.finetune --fp32)")
    elif device.type != "cpu":
        allocator_why = f"auto: training on {device.type.upper()} memory, not the C library's"
    else:
        allocator_why = f"auto: {why_not_available()}"
    fused, fused_why = lm_head_loss or (False, "the training's loss reads the full logits (knowledge "
                                                   "distillation, Modular Transformers)")
    return {"bf16_autocast": bf16, "bf16_why": bf16_why, "dropout_masks": "fast" if fast else "torch",
            "dropout_masks_why": masks_why, "allocator": "hold" if hold else "system",
            "allocator_why": allocator_why, "lm_head_loss": "fused" if fused else "full",
            "lm_head_loss_why": fused_why}


def fused_loss_choice(args: TrainArgs, device: torch.device, bf16: bool, model: torch.nn.Module) -> tuple[bool, str]:
    """Whether a fine-tune of ``model`` computes its cross-entropy with
    :mod:`compression.fused_cross_entropy` (LM head and loss chunked over the real target tokens),
    and why, in words: ``args.lm_head_loss`` ``"fused"``, or ``"auto"`` on a CPU without bf16
    autocast (what was measured); in both cases only for the families that hand out hidden states
    (:func:`compression.fused_cross_entropy.why_unsupported`). Under bf16 autocast ``auto`` keeps the
    full logits: the fused loss computes in float32 and was not measured against bf16's head."""
    if args.lm_head_loss == "full":
        return False, "lm_head_loss=full was asked for"
    reason = why_unsupported(model)
    if reason is not None:
        return False, (f"lm_head_loss={args.lm_head_loss}, but " if args.lm_head_loss == "fused" else "auto: ") + reason
    if args.lm_head_loss == "fused":
        return True, "lm_head_loss=fused was asked for"
    if device.type != "cpu":
        return False, f"auto: measured on CPUs only; the {device.type.upper()} keeps the full logits"
    if bf16:
        return False, "auto: bf16 autocast computes the LM head in bf16; the fused loss is measured in fp32"
    return True, ("auto: in fp32 on a CPU the full logits, their log-softmax and gradient (all vocabulary-wide, "
                  "padding included) cost twice the fused head's time (compression.fused_cross_entropy)")


def dropout_masks_enabled(args: TrainArgs, device: torch.device) -> bool:
    """Whether training draws dropout masks with :mod:`compression.fast_dropout`: ``args.dropout_masks``
    ``"fast"``, or ``"auto"`` on a CPU (where PyTorch's ``bernoulli_`` is a serial loop; measured in
    ``python -m benchmarks.step_profile``). GPUs draw their masks in parallel kernels already, so
    ``auto`` keeps PyTorch's there."""
    return args.dropout_masks == "fast" or (args.dropout_masks == "auto" and device.type == "cpu")


def allocator_held(args: TrainArgs, device: torch.device) -> bool:
    """Whether training keeps freed memory for reuse (:func:`compression.cpu_allocator.hold_freed_memory`):
    ``args.allocator`` ``"hold"``, or ``"auto"`` on a CPU, in both cases only where the C library is
    glibc. A GPU's activations live in PyTorch's own caching allocator already."""
    wanted = args.allocator == "hold" or (args.allocator == "auto" and device.type == "cpu")
    return wanted and why_not_available() is None


def restore_forward(model: torch.nn.Module) -> None:
    """Undo accelerate's mixed-precision patch of ``model.forward`` (bf16 autocast + fp32 outputs,
    installed by ``Accelerator.prepare_model`` when the Trainer runs with ``bf16=True``), so that
    generation and evaluation after training run in the model's own dtype rather than silently under
    bf16 autocast. accelerate keeps the original in ``model._original_forward``; its own
    ``extract_model_from_parallel(keep_fp32_wrapper=False)`` unwraps too far (past transformers'
    decorators on ``forward``), so the original is put back here. An unpatched model is left as it is."""
    original = vars(model).pop("_original_forward", None)
    if original is None:
        return
    if getattr(original, "__func__", None) is type(model).forward:
        vars(model).pop("forward", None)  # the class's own forward again, as before training
    else:
        model.forward = original


@contextlib.contextmanager
def frozen_weights(model: torch.nn.Module, args: TrainArgs | None = None):
    """Within the block, freeze ``model``'s weights per ``args``, or all of them when ``args`` is
    ``None`` (a teacher that only supervises); the ``requires_grad`` flags are restored on exit.

    Per ``args`` (the SFT paper's ``freeze_embeds``/``freeze_encoder`` options, Shleifer & Rush
    2020): ``freeze_embeddings`` freezes the shared token embedding (``get_input_embeddings()``; a tied
    LM head is the same tensor, so it freezes too) and any learned positional embeddings (BART
    ``embed_positions``); ``freeze_encoder`` every encoder parameter (for T5/BART that includes the
    shared embedding).

    Raises:
        CompressionError: with ``args``, every weight ends up frozen (nothing would train); the flags
            are restored first.
    """
    flags = {name: param.requires_grad for name, param in model.named_parameters()}
    try:
        if args is None:
            model.requires_grad_(False)
        else:
            if args.freeze_embeddings:
                model.get_input_embeddings().weight.requires_grad_(False)
                for name, module in model.named_modules():
                    if name.endswith("embed_positions"):
                        module.requires_grad_(False)
            if args.freeze_encoder:
                model.get_encoder().requires_grad_(False)
            if not any(param.requires_grad for param in model.parameters()):
                raise CompressionError("every weight is frozen: untick 'freeze encoder' or 'freeze embeddings'")
        yield model
    finally:
        for name, param in model.named_parameters():
            param.requires_grad_(flags[name])


def adafactor_kwargs(args: TrainArgs) -> tuple[type[torch.optim.Optimizer], dict]:
    """The Trainer's ``optimizer_cls_and_kwargs`` for ``args.optimizer == "adafactor"``: transformers'
    :class:`~transformers.optimization.Adafactor` (Shazeer & Stern 2018) with **parameter-scaled
    updates** (``scale_parameter=True``: each step moves a weight matrix by ``lr`` times its own RMS),
    a fixed peak ``args.learning_rate`` under the Trainer's schedule (``relative_step=False``), no
    first moment, and ``args.weight_decay``.

    Why: T5's initialisation (Raffel et al. 2020, Mesh TensorFlow) gives weights very different
    scales (attention query std ``(d_model * d_kv) ** -0.5``, about 0.008 at d_model 256; embeddings
    std 1.0), chosen for this optimizer. AdamW's update has the same size for every weight, so a
    from-scratch T5 at a rate that moves the small matrices sensibly barely moves the embeddings:
    measured here (tiny preset, Debian descriptions, batch 32, 200 steps) AdamW at 2e-3 reached
    validation loss 6.23 nats and did not yet use its source (loss with shuffled sources 0.01 nats
    higher), Adafactor at 1e-2 reached 5.81 nats with shuffled sources 0.12 nats worse. The Trainer's
    own ``optim="adafactor"`` turns ``scale_parameter`` off, hence this explicit pair.
    """
    return Adafactor, {"lr": args.learning_rate, "scale_parameter": True, "relative_step": False,
                       "warmup_init": False, "weight_decay": args.weight_decay}


def _training_arguments(args: TrainArgs, output_dir: Path, device: torch.device, has_eval: bool,
                        progress_bar: bool, checkpointing: bool, bf16: bool, head_after_forward: bool):
    if not 0 <= args.warmup_ratio < 1:
        raise CompressionError("warmup ratio must lie in [0, 1): the share of steps spent warming up")
    eval_steps = args.eval_steps if args.eval_steps else 1.0 / DEFAULT_EVALUATIONS
    try:
        return Seq2SeqTrainingArguments(
            output_dir=str(output_dir),
            num_train_epochs=args.epochs,
            max_steps=args.max_steps if args.max_steps else -1,
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.eval_batch_size or args.batch_size,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            learning_rate=args.learning_rate,
            weight_decay=args.weight_decay,
            warmup_steps=args.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps here
            # Recorded here, applied by this project's losses (token_loss, the KD and modular terms),
            # which replace the Trainer's LabelSmoother; validation loss stays the plain cross-entropy.
            label_smoothing_factor=args.label_smoothing,
            # Fused AdamW (one kernel over all parameters): 8 ms against 32 ms per step for the
            # for-each version on the tiny T5 on CPU; the Trainer's own default from torch 2.8.
            optim="adamw_torch_fused",
            seed=args.seed,
            data_seed=args.seed,
            train_sampling_strategy="group_by_length" if args.group_by_length else "random",
            eval_strategy="steps" if has_eval else "no",
            eval_steps=eval_steps if has_eval else None,
            logging_strategy="steps",
            logging_steps=args.logging_steps,
            save_strategy="no",
            report_to=[],
            predict_with_generate=False,
            prediction_loss_only=True,
            dataloader_num_workers=args.dataloader_workers,
            disable_tqdm=not progress_bar,
            use_cpu=device.type == "cpu",
            bf16=bf16,
            activation_checkpointing=checkpointing,
            # The fused loss uses the LM head after the model's forward; when the head is a weight of
            # its own (T5 v1.1, mT5, t5-efficient), DDP's search for unused parameters (the Trainer's
            # default) marks it unused in the forward and then fails on its gradient. Every weight
            # of the families the fused loss takes part in each step, so no search is needed.
            ddp_find_unused_parameters=False if head_after_forward else None,
            tf32=True if device.type == "cuda" and is_torch_tf32_available() else None,
        )
    except ValueError as err:
        raise CompressionError(f"invalid training settings: {err}") from err


class BarOnly(TrainerProgressBar):
    """The Trainer's tqdm progress bar (steps, ETA) without the log dict it writes under the bar at
    every logging step: the same records go to ``loss_log.jsonl`` and to ``on_progress``."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        return None


def finetune(
    model: torch.nn.Module,
    tokenizer: Any,
    train_dataset,
    eval_dataset,
    args: TrainArgs,
    output_dir: str | Path,
    on_progress: Callable[[dict], None] | None = None,
    cancel: threading.Event | None = None,
    progress_bar: bool = True,
    resume_from: str | Path | None = None,
) -> TrainResult:
    """Fine-tune ``model`` in place on tokenized pairs with ``transformers.Seq2SeqTrainer``.

    The SFT recipe (Shleifer & Rush 2020, Section 3): AdamW at ``args.learning_rate`` (3e-4), linear
    decay after ``warmup_ratio`` warm-up, ``args.epochs`` epochs (or ``max_steps``), per-device batch
    ``args.batch_size`` x ``gradient_accumulation_steps``, length-grouped batches when
    ``args.group_by_length``, seeded (``seed`` and ``data_seed``: same seed, same weights). Device from
    :func:`resolve_device`, bf16 autocast from :func:`bf16_enabled` (with eager attention on CPU,
    :func:`fast_attention`), TF32 on CUDA. Datasets come from :func:`compression.data.tokenize_pairs`;
    ``eval_dataset`` may be ``None`` (no validation). Validation loss every ``args.eval_steps``
    optimizer steps (default: half-way, :data:`DEFAULT_EVALUATIONS`) and at the end, over length-sorted
    batches. Progress records (see :class:`ProgressCallback`) go to ``on_progress`` and
    ``output_dir/loss_log.jsonl``. On normal completion the caller saves the model; if ``cancel`` is
    set, training stops after the current step and the Trainer's full state (weights, tokenizer,
    optimizer, schedule, RNG) is saved to ``output_dir/last-checkpoint``, as it is every
    ``args.checkpoint_minutes``; ``resume_from`` (such a folder) continues that training exactly
    (see :func:`run_trainer`). Under ``torchrun`` the
    Trainer runs DDP; only the main process writes files. Requires-grad flags changed by ``freeze_*``
    are restored and the model is left in eval mode (no dropout) on return, on the training device.
    ``progress_bar=False`` hides the Trainer's tqdm bar and its printed logs.

    Raises:
        CompressionError: empty training set, unavailable device, or settings the Trainer rejects.
        OutOfMemoryError: the device ran out of memory (lower the batch size or the max lengths).
    """
    with frozen_weights(model, args):
        return run_trainer(model, tokenizer, train_dataset, eval_dataset, args, output_dir, cross_entropy=True,
                           on_progress=on_progress, cancel=cancel, progress_bar=progress_bar,
                           resume_from=resume_from)


def mean_over_ranks(trainer: Seq2SeqTrainer, value: float) -> float:
    """``value`` averaged over the processes of a distributed training (DDP under ``torchrun``,
    through accelerate's ``Accelerator.reduce``), or ``value`` itself in one process. The Trainer's
    final ``training_loss`` gathers the ranks' losses at each logging step but adds the steps after
    the last one from its own rank only, so without this the ranks report different training losses
    for the same run."""
    if trainer.accelerator.num_processes == 1:
        return float(value)
    mean = trainer.accelerator.reduce(torch.tensor([float(value)], device=trainer.args.device), reduction="mean")
    return float(mean.item())


def run_trainer(
    model: torch.nn.Module,
    tokenizer: Any,
    train_dataset,
    eval_dataset,
    args: TrainArgs,
    output_dir: str | Path,
    *,
    trainer_class: type[CompressionTrainer] = CompressionTrainer,
    trainer_kwargs: dict | None = None,
    collator_model: torch.nn.Module | None = None,
    cross_entropy: bool = False,
    attention_models: Sequence[torch.nn.Module] | None = None,
    extra_keys: Sequence[str] = (),
    on_progress: Callable[[dict], None] | None = None,
    cancel: threading.Event | None = None,
    progress_bar: bool = True,
    resume_from: str | Path | None = None,
) -> TrainResult:
    """The one training loop of SFT, KD and Modular Transformers: a :class:`CompressionTrainer` (subclass) run
    with this project's settings (:func:`_training_arguments` from ``args``: fused AdamW, or
    Adafactor per :func:`adafactor_kwargs`, schedule,
    length grouping, bf16 autocast per :func:`bf16_enabled`, TF32 on CUDA, evaluations), seeded.

    ``trainer_class(model=model, args=..., data_collator=<for collator_model or model>, ...,
    **trainer_kwargs)`` is trained once. While it runs, every model of ``attention_models`` (default
    ``[model]``) uses :func:`fast_attention`, and ``model`` and those models draw their dropout
    masks with :func:`compression.fast_dropout.use_fast_dropout` when :func:`dropout_masks_enabled`.
    Progress records (:class:`ProgressCallback`, with ``extra_keys`` columns) go to ``on_progress``
    and ``output_dir/loss_log.jsonl``. When ``cancel`` is set, training stops after the current step
    and the Trainer writes its full checkpoint to ``output_dir/last-checkpoint`` (weights, tokenizer, optimizer, scheduler, RNG states, trainer
    state; atomically, see :meth:`CompressionTrainer._save_checkpoint`), as it also does every
    ``args.checkpoint_minutes`` minutes of training. A ``trainer_class`` whose model is not a
    ``PreTrainedModel`` writes and reads the weights with its own ``_save`` and
    ``_load_from_checkpoint`` (Modular Transformers: a modular checkpoint folder).

    ``cross_entropy=True`` (fine-tuning): the loss is the token cross-entropy of ``model``'s own
    targets (:func:`token_loss`, label-smoothed per ``args.label_smoothing``), set here as the Trainer's
    ``compute_loss_func``; when :func:`fused_loss_choice` says so, ``model`` hands out its decoder's
    hidden states for the length of the training and the loss and the validation loss are computed
    with its LM head, chunked (:mod:`compression.fused_cross_entropy`).

    ``resume_from``: a ``last-checkpoint`` folder of the same training (same model shape, data and
    ``args``) to continue, through the Trainer's ``resume_from_checkpoint``: weights, optimizer and
    schedule state and RNG states are restored and the batches already trained on are skipped, so
    the continued run takes the same steps on the same batches as one that never stopped. The loss
    log is cut back to the checkpoint's step (records after it came from steps now retrained) and
    its records are replayed to ``on_progress`` first, so a watcher sees the whole curve.
    A completed training removes an untrained preset's mark from ``model.config``
    (:func:`compression.load.is_untrained`). Afterwards accelerate's forward patch is undone (:func:`restore_forward`) and ``model`` is in eval
    mode. Activation checkpointing follows :func:`checkpointing_enabled` for the longest training
    source and is turned off again afterwards. Freezing is the caller's (see :func:`finetune`).

    Raises:
        CompressionError: empty training set, unavailable device, or settings the Trainer rejects.
        OutOfMemoryError: the device ran out of memory (lower the batch size or the max lengths).
        RunError: ``resume_from`` is not a whole checkpoint, or does not fit this model.
    """
    if train_dataset is None or len(train_dataset) == 0:
        raise CompressionError("the training set is empty: give at least one article/summary pair")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for stale in output_dir.glob(f".{LAST_CHECKPOINT}.staging-*"):  # left by a process killed mid-save
        shutil.rmtree(stale, ignore_errors=True)
    replay: list[dict] = []
    if resume_from is not None:
        resume_from = Path(resume_from)
        replay = _cut_loss_log(output_dir / LOSS_LOG, checkpoint_step(resume_from))
    device = resolve_device(args.device)
    has_eval = eval_dataset is not None and len(eval_dataset) > 0
    checkpointing = checkpointing_enabled(args, longest_source(train_dataset))
    bf16 = bf16_enabled(args, device)
    fused_choice = fused_loss_choice(args, device, bf16, model) if cross_entropy else None
    fused = fused_choice is not None and fused_choice[0]
    training_args = _training_arguments(args, output_dir, device, has_eval, progress_bar, checkpointing,
                                        bf16=bf16, head_after_forward=fused)
    set_seed(args.seed)
    attending = list(attention_models) if attention_models is not None else [model]
    restores = [fast_attention(each, device, bf16) for each in attending]
    if dropout_masks_enabled(args, device):
        restores += [use_fast_dropout(each) for each in {id(m): m for m in [model, *attending]}.values()]
    if allocator_held(args, device):
        restores.append(hold_freed_memory())
    trainer_kwargs = dict(trainer_kwargs or {})
    fused_head = None
    if cross_entropy:
        loss = functools.partial(token_loss, label_smoothing=args.label_smoothing)
        if fused:
            fused_head = model.get_output_embeddings()
            loss = functools.partial(fused_token_loss, head=fused_head, label_smoothing=args.label_smoothing)
            restores.append(use_hidden_state_head(model))
        trainer_kwargs["compute_loss_func"] = loss
    trainer = None
    callback = ProgressCallback(on_progress, cancel, output_dir / LOSS_LOG,
                                lambda: trainer.tokens_seen if trainer is not None else 0, extra_keys,
                                checkpoint=True,
                                checkpoint_seconds=args.checkpoint_minutes * 60 or None)
    callback.records.extend(replay)
    if on_progress is not None:
        for record in replay:
            on_progress(dict(record))
    try:
        trainer = trainer_class(
            model=model,
            args=training_args,
            data_collator=make_collator(tokenizer, collator_model if collator_model is not None else model),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset if has_eval else None,
            processing_class=tokenizer,
            callbacks=[callback],
            **({"optimizer_cls_and_kwargs": adafactor_kwargs(args)} if args.optimizer == "adafactor" else {}),
            **trainer_kwargs,
        )
        trainer.fused_head = fused_head
        trainer.remove_callback(PrinterCallback)  # without tqdm the Trainer prints every log dict to stdout
        if trainer.pop_callback(TrainerProgressBar) is not None:  # with tqdm it writes them under the bar
            trainer.add_callback(BarOnly())
        start = time.perf_counter()
        try:
            output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)
        except (RuntimeError, ValueError, KeyError) as err:
            if resume_from is None or _is_oom(err):
                raise
            raise RunError(f"could not continue from {resume_from.name}/ ({str(err).splitlines()[0][:200]}): it was "
                           "written by a different model or settings; start the run again instead") from err
        seconds = time.perf_counter() - start
        if not callback.cancelled and isinstance(model, PreTrainedModel) and hasattr(model.config, "untrained_preset"):
            del model.config.untrained_preset  # trained now (compression.load.is_untrained)
    except Exception as err:
        if _is_oom(err):
            raise _oom_error(err, args.batch_size) from err
        raise
    finally:
        restore_forward(model)
        if checkpointing and isinstance(model, PreTrainedModel):
            model.activation_checkpointing_disable()  # the Trainer turned it on; inference needs none
        for restore in reversed(restores):  # last switched, first switched back
            restore()
        model.eval()

    evals = [record["eval_loss"] for record in callback.records if record["kind"] == "eval"]
    return TrainResult(
        train_loss=mean_over_ranks(trainer, output.training_loss),
        eval_loss=evals[-1] if evals else None,
        steps=int(trainer.state.global_step),
        epochs=float(trainer.state.epoch or 0.0),
        seconds=seconds,
        tokens_per_s=trainer.tokens_seen / seconds if seconds > 0 else 0.0,
        cancelled=callback.cancelled,
        log_history=list(callback.records),
        padding_fraction=trainer.padding_fraction(),
        speed=speed_choices(args, device, bf16, fused_choice),
    )


def _cut_loss_log(path: Path, step: int) -> list[dict]:
    """Keep the loss log's records up to optimizer step ``step`` (rewritten atomically) and return
    them; later records came from steps the resumed run trains again."""
    from .files import atomic_write_text
    from .runs import _read_jsonl, dumps_json

    records = [record for record in _read_jsonl(path) if int(record.get("step") or 0) <= step]
    if path.exists():
        atomic_write_text(path, "".join(dumps_json(record) + "\n" for record in records))
    return records


def close_distributed() -> None:
    """End the ``torch.distributed`` process group that the Trainer (Accelerate) opened under
    ``torchrun``: a barrier, so every rank has finished writing, then ``destroy_process_group``.

    Without it a rank can abort at interpreter exit while gloo's threads still run ("terminate
    called without an active exception", SIGABRT) and ``torchrun`` reports a failure after a
    complete run (seen once in a few dozen runs of ``tests/test_multigpu.py``). Does nothing when no
    process group is open (a run without ``torchrun``).
    """
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def discard_checkpoint(output_dir: str | Path) -> None:
    """Remove ``output_dir/last-checkpoint`` once training finished and its result is saved: the
    checkpoint no longer describes anything that can be continued (and holds twice the weights)."""
    shutil.rmtree(Path(output_dir) / LAST_CHECKPOINT, ignore_errors=True)
