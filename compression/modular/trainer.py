"""Training the modules: multi-grained module replacing with distillation on the Trainer
(see ``docs/modular.md``)."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from transformers import PreTrainedModel
from transformers.trainer_utils import EvalLoopOutput

from ..config import TrainArgs
from ..data import LABEL_PAD
from ..distill import TermsTrainerMixin
from ..losses import modular_loss
from ..progress import LOSS_LOG
from ..train import CompressionTrainer, discard_checkpoint, frozen_weights, run_trainer
from .checkpoint import save_modular, write_checkpoint
from .model import ModularModel
from .spans import MODULES_FILE, ModularArgs
from .supervision import Recorder, attention_output_flags


class _ModularTrainer(TermsTrainerMixin, CompressionTrainer):
    """Seq2SeqTrainer over a :class:`ModularModel`: multi-grained module replacing plus distillation.

    ``compute_loss`` samples the step's plan (``random.Random`` seeded with the training seed and the
    optimizer step, so a resumed run draws the plans the uninterrupted one would; one plan per
    optimizer step; progress = step / max steps), runs the mixed model with the supervised modules
    installed and returns the weighted per-batch mean; ``evaluation_loop`` scores each granularity's
    full replacement. Its checkpoints (:meth:`_save`) are modular checkpoint folders (what
    :func:`load_modular` and ``assemble`` read) that the Trainer also resumes from
    (:meth:`_load_from_checkpoint`): the teacher is frozen, so the modules are the only weights.
    """

    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

    def __init__(self, *args, modular_args: ModularArgs, **kwargs):
        super().__init__(*args, **kwargs)
        self.modular_args = modular_args
        weights = {"ce": modular_args.alpha_ce, "hidden": modular_args.alpha_hidden,
                   "attention": modular_args.alpha_attention}
        self.term_names = tuple(name for name, weight in weights.items() if weight > 0)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        modular: ModularModel = self.accelerator.unwrap_model(model)
        args = self.modular_args
        progress = self.state.global_step / max(self.state.max_steps, 1)
        rng = random.Random(f"{self.args.seed}-{self.state.global_step}")  # str seeds hash stably (sha512)
        plan = modular.sample_plan(rng, progress, args)
        labels = inputs["labels"]
        recorder = Recorder({"encoder": inputs.get("attention_mask"), "decoder": labels != LABEL_PAD}, args)
        supervise = args.alpha_hidden > 0 or args.alpha_attention > 0
        flags = attention_output_flags(modular.teacher) if recorder.wants_attention else {}
        with modular.use_plan(plan, recorder if supervise else None):
            outputs = model(**inputs, **flags)
        terms = modular_loss(outputs.logits, labels, recorder.hidden_terms, recorder.attention_terms, args,
                             label_smoothing=self.args.label_smoothing_factor)
        loss = terms.pop("loss")
        if model.training:
            self._record_terms(terms)
        return (loss, outputs) if return_outputs else loss

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Write the checkpoint the Trainer asks for (``output_dir``) as a modular checkpoint folder
        (``teacher/``, ``modules.safetensors``, ``modular.json``; main process only)."""
        if self.args.should_save:
            folder = Path(output_dir if output_dir is not None else self.args.output_dir)
            folder.mkdir(parents=True, exist_ok=True)
            write_checkpoint(self.accelerator.unwrap_model(self.model), folder, self.processing_class)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Load the modules of a checkpoint written by :meth:`_save` (strictly: every module of this
        model, nothing else, same shapes).

        Raises:
            RuntimeError: the checkpoint's modules do not fit this model (other granularities or teacher).
            OSError: no ``modules.safetensors`` there.
        """
        modular: ModularModel = self.accelerator.unwrap_model(model if model is not None else self.model)
        modular.layers.load_state_dict(load_file(str(Path(resume_from_checkpoint) / MODULES_FILE)))

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        modular: ModularModel = self.accelerator.unwrap_model(self.model)
        metrics: dict[str, float] = {}
        output = None
        for g in modular.granularities:
            with modular.use_plan(modular.full_plan(g)):
                output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                                 metric_key_prefix)
            metrics[f"{metric_key_prefix}_loss_g{g}"] = output.metrics[f"{metric_key_prefix}_loss"]
        metrics[f"{metric_key_prefix}_loss"] = sum(metrics.values()) / len(metrics)
        return EvalLoopOutput(predictions=None, label_ids=None, metrics=metrics, num_samples=output.num_samples)


def train_modules(teacher: PreTrainedModel, tokenizer: Any, train_dataset, eval_dataset, train_args: TrainArgs,
                  modular_args: ModularArgs, output_dir: str | Path,
                  on_progress: Callable[[dict], None] | None = None, cancel: threading.Event | None = None,
                  progress_bar: bool = True, resume_from: str | Path | None = None) -> ModularModel:
    """Train Modular Transformers modules against a frozen ``teacher`` and save the checkpoint.

    Multi-grained module replacing with distillation (see the module docstring), run by a
    ``Seq2SeqTrainer`` subclass with :func:`compression.train.finetune`'s machinery: ``train_args``
    gives optimizer, schedule, steps, batch size, device, bf16 and seed (``freeze_*`` do not apply:
    only modules train). Progress records (``output_dir/loss_log.jsonl``, ``on_progress``) carry
    ``loss`` (weighted total), ``ce``, ``hidden``, ``attention`` and at evaluations ``eval_loss``
    (mean over granularities) and ``eval_loss_g{g}``. The checkpoint (:func:`save_modular`, with the
    tokenizer) is written to ``output_dir``. When ``cancel`` is set, training stops after the current
    step and the Trainer's full checkpoint goes to ``output_dir/last-checkpoint`` (as it does every
    ``train_args.checkpoint_minutes``): a modular checkpoint folder (modules, teacher, tokenizer) plus
    the optimizer, schedule, RNG and trainer state; ``resume_from`` (such a folder, same teacher, data
    and settings) continues that training with the same steps, batches and plans as one that never
    stopped (:func:`compression.train.run_trainer`). A completed training removes
    ``last-checkpoint/``; a new one (no ``resume_from``) starts a new loss log. The teacher is shared
    with the returned model, not copied: it is frozen (``requires_grad=False``) for the run and, with
    ``alpha_attention > 0``, runs eager attention; both are given back afterwards.

    Returns:
        the trained :class:`ModularModel` (``info["training"]`` holds the run's summary).

    Raises:
        ModularError: bad granularities for this teacher.
        CompressionError: empty training set, unavailable device, settings the Trainer rejects.
        OutOfMemoryError: the device ran out of memory.
        RunError: ``resume_from`` is not a whole checkpoint, or one of other modules.
    """
    if resume_from is None:  # a new training in an old folder: its loss curve starts afresh
        (Path(output_dir) / LOSS_LOG).unlink(missing_ok=True)
    modular = ModularModel(teacher, modular_args.granularities)
    implementation = teacher.config._attn_implementation
    weights = {"ce": modular_args.alpha_ce, "hidden": modular_args.alpha_hidden,
               "attention": modular_args.alpha_attention}
    extra = [name for name, weight in weights.items() if weight > 0]
    extra += [f"eval_loss_g{g}" for g in modular.granularities]

    with frozen_weights(teacher):
        if modular_args.alpha_attention > 0:
            teacher.set_attn_implementation("eager")
        try:
            result = run_trainer(modular, tokenizer, train_dataset, eval_dataset, train_args, output_dir,
                                 trainer_class=_ModularTrainer, trainer_kwargs={"modular_args": modular_args},
                                 collator_model=teacher, attention_models=[teacher], extra_keys=extra,
                                 on_progress=on_progress, cancel=cancel, progress_bar=progress_bar,
                                 resume_from=resume_from)
        finally:
            if modular_args.alpha_attention > 0:
                teacher.set_attn_implementation(implementation)
    summary = asdict(result)
    summary.pop("log_history")
    modular.info = {"training": summary, "modular_args": asdict(modular_args), "train_args": asdict(train_args)}
    if not result.cancelled:
        discard_checkpoint(output_dir)  # nothing left to continue (and save_modular would carry it over)
    save_modular(modular, output_dir, tokenizer)
    return modular
