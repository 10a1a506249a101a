"""Export: save a model folder atomically, write its model card, zip it, push it to the Hub.

The folder is what ``save_pretrained`` writes (safetensors weights, ``config.json``,
``generation_config.json``) plus the tokenizer files and a ``README.md`` model card in the
Hugging Face format (YAML front matter read by the Hub; see huggingface_hub's ``ModelCardData``).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from .errors import CompressionError
from .files import publish_permissions, staging_dir

# Files save_pretrained writes for the model itself (as opposed to tokenizer files and the card).
_MODEL_FILE = re.compile(
    r"(.*\.safetensors|.*\.safetensors\.index\.json|config\.json|generation_config\.json)$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class HubError(CompressionError):
    """Pushing to the Hugging Face Hub failed (bad token, no permission, network); never shows the token."""


def folder_size_mib(folder: str | Path) -> float:
    """Total size in MiB (2**20 bytes) of every file under ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 2**20


def model_files_size_mib(folder: str | Path) -> float:
    """Size in MiB of the files ``save_pretrained`` writes for the model (weights, config,
    generation config) in ``folder``, leaving out tokenizer files and the model card."""
    return sum(p.stat().st_size for p in Path(folder).iterdir()
               if p.is_file() and _MODEL_FILE.fullmatch(p.name)) / 2**20


_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".txt", ".parquet", ".arrow", ".gz", ".zip")


def _is_hub_id(value) -> bool:
    """A hub id (``name`` or ``owner/name``), not a local path or data file name."""
    return (isinstance(value, str) and bool(_HUB_ID.match(value))
            and not value.lower().endswith(_FILE_SUFFIXES) and not Path(value).exists())


def _layers_text(value) -> str:
    if value is None:
        return "all"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _metric_cell(value, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        return format(value, spec)
    return str(value)


def model_card(card: dict) -> str:
    """The ``README.md`` text of a Hugging Face model card for a shrunk-and-fine-tuned model.

    ``card`` keys (all optional): ``model_name``; ``family`` (``"t5"``/``"bart"``); ``base_model``
    (hub id or local path of the teacher); ``encoder_layers``/``decoder_layers`` (kept teacher layer
    indices, or counts); ``teacher_encoder_layers``/``teacher_decoder_layers`` (teacher depths);
    ``strategy``; ``dataset`` or ``datasets`` (hub ids or file names); ``train_samples``;
    ``epochs``; ``learning_rate``; ``quantization``; ``quantized_wo`` (T5's ``wo`` quantized too:
    the Use section then loads with :func:`compression.load.load_model`); ``pruned_vocab`` (the Use
    section says how ids map); ``params``; ``metrics``: ``{row name:
    {"rouge1", "rouge2", "rougeL", "rougeLsum", "validation_loss", "size_mib", "latency_ms"}}``
    (e.g. rows ``base``, ``student``, ``quantized`` as from
    :func:`compression.evaluate.evaluate_model`).

    The YAML front matter (``huggingface_hub.ModelCardData``) carries ``library_name:
    transformers``, ``pipeline_tag: summarization``, tags ``[summarization, <family>, distillation,
    sft]``, ``base_model`` and ``datasets`` when they are hub ids (local paths are only named in the
    text). Method: Shrink and Fine-Tune, Shleifer & Rush 2020, "Pre-trained Summarization
    Distillation", section 3.
    """
    from huggingface_hub import ModelCardData

    family = str(card.get("family") or "t5").lower()
    base = card.get("base_model")
    datasets = card.get("datasets") or ([card["dataset"]] if card.get("dataset") else [])
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="summarization",
        tags=["summarization", family, "distillation", "sft"],
        base_model=base if _is_hub_id(base) else None,
        datasets=[d for d in datasets if _is_hub_id(d)] or None,
    )
    name = card.get("model_name") or f"Shrunk {family.upper()} summarizer"
    lines = [
        "---", data.to_yaml(), "---", "", f"# {name}", "",
        "A shallower summarizer made by **Shrink and Fine-Tune** (SFT; Shleifer & Rush 2020, "
        "*Pre-trained Summarization Distillation*): a subset of the teacher's layers was copied into "
        "a student, which was then fine-tuned on article/summary pairs.", "",
        "## How it was made", "",
        f"- Base (teacher) checkpoint: `{base if base else 'unknown'}`",
    ]
    for side in ("encoder", "decoder"):
        kept = _layers_text(card.get(f"{side}_layers"))
        teacher = card.get(f"teacher_{side}_layers")
        suffix = f" (of {teacher} teacher layers)" if teacher is not None else ""
        lines.append(f"- Kept {side} layers: {kept}{suffix}")
    for key, label in (("method", "Training method"), ("strategy", "Layer selection strategy"),
                       ("train_samples", "Training pairs"),
                       ("epochs", "Epochs"), ("learning_rate", "Learning rate"),
                       ("quantization", "Quantization"), ("params", "Parameters")):
        if card.get(key) is not None:
            lines.append(f"- {label}: {card[key]}")
    if datasets:
        lines.append(f"- Data: {', '.join(f'`{d}`' for d in datasets)}")
    metrics = card.get("metrics") or {}
    if metrics:
        lines += ["", "## Evaluation", "",
                  "ROUGE F1 (0-100, `rouge_score` with stemming), validation loss in nats per target "
                  "token, size on disk in MiB, latency in ms per summary at batch size 1.", "",
                  "| model | ROUGE-1 | ROUGE-2 | ROUGE-L | ROUGE-Lsum | val. loss | size MiB | latency ms |",
                  "|---|---|---|---|---|---|---|---|"]
        for row, values in metrics.items():
            cells = [_metric_cell(values.get(k), ".2f") for k in ("rouge1", "rouge2", "rougeL", "rougeLsum")]
            cells += [_metric_cell(values.get("validation_loss"), ".4f"),
                      _metric_cell(values.get("size_mib"), ".1f"),
                      _metric_cell(values.get("latency_ms"), ".1f")]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += ["", "## Use", ""]
    if card.get("quantized_wo"):
        lines += ["T5's feed-forward output layers (`wo`) are quantized too, which plain `from_pretrained` "
                  "does not load (it keeps `wo` unquantized); load it with this project's loader:", "",
                  "```python", "from compression.load import load_model",
                  'model, tokenizer = load_model("<this folder>")', "```", ""]
    else:
        lines += ["```python", "from transformers import AutoModelForSeq2SeqLM, AutoTokenizer",
                  'tokenizer = AutoTokenizer.from_pretrained("<this folder or repo>")',
                  'model = AutoModelForSeq2SeqLM.from_pretrained("<this folder or repo>")', "```", ""]
    if card.get("pruned_vocab"):
        lines += ["The vocabulary is pruned to the tokens of the training data: model id `i` is tokenizer id "
                  "`config.vocab_pruning[\"kept_ids\"][i]`. `compression.generation.generate` maps both ways; "
                  "other code must map input ids and generated ids itself.", ""]
    return "\n".join(lines)


def write_model_card(folder: str | Path, card: dict) -> Path:
    """Write :func:`model_card` of ``card`` to ``folder/README.md``; returns that path."""
    path = Path(folder) / "README.md"
    path.write_text(model_card(card), encoding="utf-8")
    return path


def _card_from_model(model) -> dict:
    config = model.config
    facts = {"family": "bart" if config.model_type == "bart" else "t5"}
    for side, names in (("encoder", ("num_layers", "encoder_layers")),
                        ("decoder", ("num_decoder_layers", "decoder_layers"))):
        for attr in names:
            if isinstance(getattr(config, attr, None), int):
                facts[f"{side}_layers"] = f"{getattr(config, attr)} layers"
                break
    return facts


def save_model(model, tokenizer, out_dir: str | Path, *, card: dict | None = None,
               keep: tuple[str, ...] = ()) -> Path:
    """Save ``model`` (safetensors), ``tokenizer``, generation config and a ``README.md`` card.

    Everything is written into a temporary sibling folder, which is then renamed to ``out_dir``, so
    ``out_dir`` is never left half-written; an existing model folder there is replaced. ``keep``
    names entries of an existing ``out_dir`` (e.g. the training's ``loss_log.jsonl``) that are
    carried over into the new folder. ``card`` is passed to :func:`model_card`, on top of facts read
    from ``model.config`` (family, depths). Returns ``out_dir`` as a ``Path``.

    Raises:
        CompressionError: ``out_dir`` exists and is a file or a non-empty folder that is not a model
            folder (no ``config.json``) and holds more than the ``keep`` entries, or the disk refused
            the write.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (
            any(entry.name not in keep for entry in out_dir.iterdir())
            and not (out_dir / "config.json").is_file())):
        raise CompressionError(
            f"{out_dir} already exists and is not a model folder: choose a new or empty output folder"
        )
    staging = staging_dir(out_dir)
    old = None
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(staging)
        write_model_card(staging, {**_card_from_model(model), **(card or {})})
        for name in keep:
            if (out_dir / name).is_file():
                shutil.copy2(out_dir / name, staging / name)
        publish_permissions(staging)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{staging.name.rsplit('-', 1)[-1]}")
            os.replace(out_dir, old)
        os.replace(staging, out_dir)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None and not out_dir.exists():
            os.replace(old, out_dir)
        raise CompressionError(
            f"could not write the model to {out_dir} ({exc.strerror or exc}): check free disk space "
            "and write permission"
        ) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out_dir


def _scrub(text: str, token: str | None) -> str:
    if token:
        text = text.replace(token, "***")
    return re.sub(r"hf_[A-Za-z0-9]{8,}", "hf_***", text)


def push_to_hub(folder: str | Path, repo_id: str, *, token: str | None, private: bool = True) -> str:
    """Upload ``folder`` to the Hub model repo ``repo_id``; returns the repo URL.

    Uses ``huggingface_hub.HfApi(token=token)``: ``create_repo(exist_ok=True, private=private)``
    then ``upload_folder``. ``token`` (a write token; ``None`` uses the cached login or ``HF_TOKEN``)
    is neither logged nor written anywhere.

    Raises:
        CompressionError: ``folder`` is not a saved model folder, or ``repo_id`` is malformed.
        HubError: the Hub refused or could not be reached; the message never contains the token.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise CompressionError(
            f"{folder} is not a saved model folder (no config.json): export the model first")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id or ""):
        raise CompressionError(f"repo id {repo_id!r} should look like 'your-name/model-name'")
    failure = None
    try:
        api = HfApi(token=token)
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                          commit_message="Upload shrunk-and-fine-tuned summarizer")
    except Exception as exc:  # HfHubHTTPError, network errors, bad tokens: all reported the same way
        failure = _scrub(f"{type(exc).__name__}: {exc}", token)
    if failure is not None:
        # raised outside the except block, so the original exception (whose request headers may
        # hold the token) is neither chained nor kept as context
        raise HubError(
            f"could not push {folder} to {repo_id} ({failure}): check the token has write access, "
            "the repo name is yours, and the Hub is reachable"
        )
    return str(url)


def zip_folder(folder: str | Path, zip_path: str | Path) -> Path:
    """Zip ``folder`` (with its name as the top directory) to ``zip_path``; returns the zip's path.

    Uses ``shutil.make_archive``; a ``.zip`` suffix is added when missing.

    Raises:
        CompressionError: ``folder`` is not a folder.
    """
    folder, zip_path = Path(folder), Path(zip_path)
    if not folder.is_dir():
        raise CompressionError(f"{folder} is not a folder: export the model before zipping it")
    base = zip_path.with_suffix("") if zip_path.suffix == ".zip" else zip_path
    base.parent.mkdir(parents=True, exist_ok=True)
    archive = shutil.make_archive(str(base), "zip", root_dir=folder.parent, base_dir=folder.name)
    return Path(archive)
