"""Export: save a model folder atomically, write its model card, zip it, push it to the Hub.

The folder is what ``save_pretrained`` writes (safetensors weights, ``config.json``,
``generation_config.json``) plus the tokenizer files and a ``README.md`` model card in the
Hugging Face format (YAML front matter read by the Hub; see huggingface_hub's ``ModelCardData``).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from .card import ModelCard
from .errors import CompressionError
from .files import replace_folder, staging_dir

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


def is_hub_id(value) -> bool:
    """A hub id (``name`` or ``owner/name``), not a local path or data file name."""
    return (isinstance(value, str) and bool(_HUB_ID.match(value))
            and not value.lower().endswith(_FILE_SUFFIXES) and not Path(value).exists())


def model_card(card: ModelCard | dict) -> str:
    """The ``README.md`` text of a model card: a :class:`compression.card.ModelCard`, or a dict of
    its fields (then the method defaults to ``"sft"``). See :meth:`ModelCard.render`."""
    if isinstance(card, ModelCard):
        return card.render()
    return ModelCard(method="sft").updated(card).render()


def write_model_card(folder: str | Path, card: ModelCard | dict) -> Path:
    """Write :func:`model_card` of ``card`` to ``folder/README.md``; returns that path."""
    path = Path(folder) / "README.md"
    path.write_text(model_card(card), encoding="utf-8")
    return path


def save_model(model, tokenizer, out_dir: str | Path, *, card: ModelCard | dict | None = None,
               keep: tuple[str, ...] = ()) -> Path:
    """Save ``model`` (safetensors), ``tokenizer``, generation config and a ``README.md`` card.

    Everything is written into a temporary sibling folder, which is then renamed to ``out_dir``, so
    ``out_dir`` is never left half-written; an existing model folder there is replaced. ``keep``
    names entries of an existing ``out_dir`` (e.g. the training's ``loss_log.jsonl``) that are
    carried over into the new folder. ``card`` (a :class:`compression.card.ModelCard` or a dict of
    its fields) goes on top of what ``model.config`` records (:meth:`ModelCard.from_model`: family,
    depths, and the method of a shrunk, distilled or assembled student). Returns ``out_dir``.

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
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(staging)
        ModelCard.from_model(model).updated(card).write(staging)
        for name in keep:
            if (out_dir / name).is_file():
                shutil.copy2(out_dir / name, staging / name)
        replace_folder(staging, out_dir)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise CompressionError(
            f"could not write the model to {out_dir} ({exc.strerror or exc}): check free disk space "
            "and write permission"
        ) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
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
