"""Modular checkpoint folders: ``teacher/``, ``modules.safetensors``, ``modular.json``, written
atomically (see ``docs/modular.md``)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from transformers import AutoModelForSeq2SeqLM

from ..arch import count_parameters
from ..errors import ModularError
from ..files import replace_folder, staging_dir
from ..preflight import check_checkpoint, read_safetensors_header
from .model import ModularModel
from .spans import CONFIG_FILE, FORMAT_VERSION, MODULES_FILE, STACKS, TEACHER_DIR


def write_checkpoint(modular: ModularModel, folder: Path, tokenizer: Any) -> None:
    """Write the files of a modular checkpoint into the existing ``folder``, not atomically (see
    :func:`save_modular` for the layout; the Trainer's checkpoints are made whole in a staging folder)."""
    modular.teacher.save_pretrained(folder / TEACHER_DIR)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder / TEACHER_DIR)
    tensors = {key: value.detach().cpu().contiguous() for key, value in modular.layers.state_dict().items()}
    save_file(tensors, str(folder / MODULES_FILE), metadata={"format": "pt"})
    modules = [{"name": span.name, "stack": span.stack, "granularity": span.granularity, "start": span.start,
                "end": span.end}
               for stack in STACKS for g in modular.granularities for span in modular.spans(stack, g)]
    meta = {
        "format_version": FORMAT_VERSION,
        "method": "modular-transformers",
        "family": modular.family,
        "model_type": modular.teacher.config.model_type,
        "teacher_encoder_layers": modular.depths["encoder"],
        "teacher_decoder_layers": modular.depths["decoder"],
        "granularities": list(modular.granularities),
        "modules": modules,
        "teacher_params": count_parameters(modular.teacher),
        "module_params": count_parameters(modular.layers),
        **modular.info,
    }
    (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")


def _link_or_copy(source: Path, target: Path) -> None:
    """Carry an entry of the old folder into the new one: hard links (no bytes copied), else a copy."""
    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    if source.is_dir():
        shutil.copytree(source, target, copy_function=link)
    else:
        link(source, target)


def save_modular(modular: ModularModel, directory: str | Path, tokenizer: Any = None) -> Path:
    """Write a modular checkpoint folder: ``teacher/`` (``save_pretrained``, plus the tokenizer when
    given), ``modules.safetensors`` (module weights, keys ``"encoder.g2.s0.<param>"``) and
    ``modular.json`` (format version, family, teacher depths, granularities, the modules' spans,
    parameter counts, and ``modular.info``: training settings and results).

    Atomic, like :func:`compression.export.save_model`: everything is written into a temporary
    sibling folder that is then renamed over ``directory``, so a reader never sees half a
    checkpoint. Other entries of an existing ``directory`` (the training's ``loss_log.jsonl``,
    ``last-checkpoint/``...) are carried over (hard-linked, else copied).

    Returns:
        the folder.

    Raises:
        ModularError: ``directory`` is a file, or the disk refused the write.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ModularError(f"{directory} is a file: choose a folder for the modular checkpoint")
    ours = {TEACHER_DIR, MODULES_FILE, CONFIG_FILE}
    staging = staging_dir(directory)
    try:
        write_checkpoint(modular, staging, tokenizer)
        if directory.exists():
            for entry in directory.iterdir():
                if entry.name not in ours:
                    _link_or_copy(entry, staging / entry.name)
        replace_folder(staging, directory)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ModularError(f"could not write the modular checkpoint to {directory} ({exc.strerror or exc}): "
                           "check free disk space and write permission") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def load_modular(directory: str | Path) -> ModularModel:
    """Load a folder written by :func:`save_modular` (or :func:`train_modules`).

    The teacher loads with plain ``AutoModelForSeq2SeqLM.from_pretrained`` (no remote code); its
    tokenizer, when saved, is in ``directory/teacher``.

    Raises:
        ModularError: not a modular checkpoint (no ``modular.json``), teacher or modules file missing,
            teacher depths that do not match ``modular.json``, or modules missing from (or unknown to)
            ``modules.safetensors``.
    """
    directory = Path(directory).expanduser()
    meta_path = directory / CONFIG_FILE
    if not meta_path.is_file():
        raise ModularError(
            f"{directory} is not a modular checkpoint (no {CONFIG_FILE}): point to a folder written by "
            "modular training (`python -m compression modular-train`)"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ModularError(f"{meta_path} is not valid JSON ({error}); the checkpoint is damaged: train again") from None
    teacher_dir = directory / TEACHER_DIR
    if not (teacher_dir / "config.json").is_file():
        raise ModularError(
            f"{directory} has no teacher (missing {TEACHER_DIR}/config.json): the checkpoint is incomplete; "
            "train the modules again"
        )
    if not (directory / MODULES_FILE).is_file():
        raise ModularError(f"{directory} has no {MODULES_FILE}: the checkpoint is incomplete; train the modules again")
    check_checkpoint(teacher_dir)  # damaged weights or a config they do not cover: a typed error, not a crash
    read_safetensors_header(directory / MODULES_FILE)
    try:
        teacher = AutoModelForSeq2SeqLM.from_pretrained(str(teacher_dir), trust_remote_code=False).eval()
    except (OSError, ValueError) as error:
        raise ModularError(f"could not load the teacher in {teacher_dir}: {error}") from None
    modular = ModularModel(teacher, meta.get("granularities", ()))
    for stack in STACKS:
        expected = meta.get(f"teacher_{stack}_layers")
        if expected is not None and expected != modular.depths[stack]:
            raise ModularError(
                f"{CONFIG_FILE} says the teacher has {expected} {stack} layers but {teacher_dir} has "
                f"{modular.depths[stack]}: the folder mixes two checkpoints"
            )
    state = load_file(str(directory / MODULES_FILE))
    wanted = modular.layers.state_dict()
    missing = sorted({".".join(key.split(".")[:3]) for key in wanted.keys() - state.keys()})
    unknown = sorted({".".join(key.split(".")[:3]) for key in state.keys() - wanted.keys()})
    if missing:
        raise ModularError(
            f"{directory / MODULES_FILE} lacks modules {', '.join(missing)} that {CONFIG_FILE} lists: the "
            "checkpoint is incomplete; train the modules again"
        )
    if unknown:
        raise ModularError(
            f"{directory / MODULES_FILE} holds modules {', '.join(unknown)} that {CONFIG_FILE} does not list: "
            "the folder mixes two checkpoints"
        )
    modular.layers.load_state_dict(state)
    known = {"format_version", "method", "family", "model_type", "teacher_encoder_layers", "teacher_decoder_layers",
             "granularities", "modules", "teacher_params", "module_params"}
    modular.info = {key: value for key, value in meta.items() if key not in known}
    return modular
