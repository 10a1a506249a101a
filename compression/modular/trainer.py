"""Training the modules: multi-grained module replacing with distillation on the Trainer
(see ``docs/modular.md``)."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel
from transformers.trainer_utils import EvalLoopOutput

from ..config import TrainArgs
from ..data import LABEL_PAD
from ..distill import TermsTrainerMixin
from ..losses import modular_loss
from ..train import _Trainer, run_trainer
from .checkpoint import save_modular
from .model import ModularModel
from .spans import ModularArgs
from .supervision import Recorder


class _ModularTrainer(TermsTrainerMixin, _Trainer):
    """Seq2SeqTrainer over a :class:`ModularModel`: multi-grained module replacing plus distillation.

    ``compute_loss`` samples the step's plan (seeded ``random.Random``, progress = step / max steps),
    runs the mixed model with the supervised modules installed and returns the weighted per-batch
    mean; ``evaluation_loop`` scores each granularity's full replacement.
    """

    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

    def __init__(self, *args, modular_args: ModularArgs, **kwargs):
        super().__init__(*args, **kwargs)
        self.modular_args = modular_args
        self.rng = random.Random(self.args.seed)
        weights = {"ce": modular_args.alpha_ce, "hidden": modular_args.alpha_hidden,
                   "attention": modular_args.alpha_attention}
        self.term_names = tuple(name for name, weight in weights.items() if weight > 0)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        modular: ModularModel = self.accelerator.unwrap_model(model)
        args = self.modular_args
        progress = self.state.global_step / max(self.state.max_steps, 1)
        plan = modular.sample_plan(self.rng, progress, args)
        labels = inputs["labels"]
        recorder = Recorder({"encoder": inputs.get("attention_mask"), "decoder": labels != LABEL_PAD}, args)
        supervise = args.alpha_hidden > 0 or args.alpha_attention > 0
        with modular.use_plan(plan, recorder if supervise else None):
            outputs = model(**inputs)
        terms = modular_loss(outputs.logits, labels, recorder.hidden_terms, recorder.attention_terms, args)
        loss = terms.pop("loss")
        if model.training:
            self._record_terms(terms)
        return (loss, outputs) if return_outputs else loss

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
                  progress_bar: bool = True) -> ModularModel:
    """Train Modular Transformers modules against a frozen ``teacher`` and save the checkpoint.

    Multi-grained module replacing with distillation (see the module docstring), run by a
    ``Seq2SeqTrainer`` subclass with :func:`compression.train.finetune`'s machinery: ``train_args``
    gives optimizer, schedule, steps, batch size, device, bf16 and seed (``freeze_*`` do not apply:
    only modules train). Progress records (``output_dir/loss_log.jsonl``, ``on_progress``) carry
    ``loss`` (weighted total), ``ce``, ``hidden``, ``attention`` and at evaluations ``eval_loss``
    (mean over granularities) and ``eval_loss_g{g}``. The checkpoint (:func:`save_modular`, with the
    tokenizer) is written to ``output_dir``; when ``cancel`` is set, training stops after the current
    step and what was trained is saved to ``output_dir/last-checkpoint`` as well. The teacher is shared
    with the returned model, not copied: it is frozen (``requires_grad=False``) for the run and, with
    ``alpha_attention > 0``, runs eager attention; both are given back afterwards.

    Returns:
        the trained :class:`ModularModel` (``info["training"]`` holds the run's summary).

    Raises:
        ModularError: bad granularities for this teacher.
        CompressionError: empty training set, unavailable device, settings the Trainer rejects.
        OutOfMemoryError: the device ran out of memory.
    """
    modular = ModularModel(teacher, modular_args.granularities)
    implementation = teacher.config._attn_implementation
    flags = {name: param.requires_grad for name, param in teacher.named_parameters()}
    teacher.requires_grad_(False)
    if modular_args.alpha_attention > 0:
        teacher.set_attn_implementation("eager")
    weights = {"ce": modular_args.alpha_ce, "hidden": modular_args.alpha_hidden,
               "attention": modular_args.alpha_attention}
    extra = [name for name, weight in weights.items() if weight > 0]
    extra += [f"eval_loss_g{g}" for g in modular.granularities]

    def save_cancelled(_trainer, path: Path) -> None:
        save_modular(modular, path, tokenizer)

    try:
        result = run_trainer(modular, tokenizer, train_dataset, eval_dataset, train_args, output_dir,
                             trainer_class=_ModularTrainer, trainer_kwargs={"modular_args": modular_args},
                             collator_model=teacher, attention_models=[teacher], extra_keys=extra,
                             on_progress=on_progress, cancel=cancel, progress_bar=progress_bar,
                             save_cancelled=save_cancelled)
    finally:
        for name, param in teacher.named_parameters():
            param.requires_grad_(flags[name])
        if modular_args.alpha_attention > 0:
            teacher.set_attn_implementation(implementation)
    summary = asdict(result)
    summary.pop("log_history")
    modular.info = {"training": summary, "modular_args": asdict(modular_args), "train_args": asdict(train_args)}
    save_modular(modular, output_dir, tokenizer)
    return modular
