"""Article/summary pairs: load (local files or a hub dataset), clean, tokenize, batch.

The shape follows the data half of transformers' ``examples/pytorch/summarization/run_summarization.py``:
``datasets.load_dataset`` reads the pairs, a ``source_prefix`` is prepended for T5 ("summarize: ",
Raffel et al. 2020, Appendix D), sources and targets are truncated (not padded) at tokenization, and
``transformers.DataCollatorForSeq2Seq`` pads each batch dynamically, with label padding ``-100`` so
padding never counts in the cross-entropy.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch

from .arch import T5_FAMILY
from .config import DataArgs
from .datafile import csv_delimiter
from .dataset_presets import dataset_preset
from .errors import DatasetError
from .preflight import check_data_file

#: The two columns every split has after :func:`load_pairs`.
DOCUMENT, SUMMARY = "document", "summary"
#: File extension -> ``datasets`` builder.
FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
#: Label id ignored by the cross-entropy (PyTorch ``CrossEntropyLoss.ignore_index`` default).
LABEL_PAD = -100


def load_pairs(args: DataArgs) -> datasets.DatasetDict:
    """Load article/summary pairs as a ``DatasetDict`` with splits ``"train"`` and (if given) ``"validation"``.

    Sources: local files ``args.train_file``/``args.validation_file`` (JSON, JSONL, CSV or Parquet,
    picked by extension and read with ``datasets.load_dataset``), a dataset preset ``args.dataset``
    (:mod:`compression.dataset_presets`: its local files under ``../shared``), or a hub dataset ``args.dataset``
    (config ``args.dataset_config``, splits ``args.train_split``/``args.validation_split``).
    Each split keeps exactly two string columns, renamed from ``args.text_column``/``args.summary_column``
    to ``"document"``/``"summary"``. Rows where either field is missing, empty or whitespace are
    dropped with a ``UserWarning`` that says how many (real XSum has such a row). A long-input preset
    (``xsum-long``) then concatenates consecutive pairs (:func:`compression.long_inputs.long_input_dataset`).
    With ``args.shuffle_seed`` (the ``debian-descriptions`` preset's default: its files are sorted by
    package name) each split is shuffled with it (``datasets.Dataset.shuffle``) first;
    ``max_train_samples``/``max_eval_samples`` then keep the first N rows.

    Raises:
        DatasetError: no source or two sources given; a file missing, unreadable or of an unsupported
            type; a named column absent (the message lists the columns present); a split empty after
            dropping blank rows; a hub dataset that cannot be reached (the message says local files work
            offline) or lacks the split; a preset whose files are not on this machine.
    """
    has_files = args.train_file is not None or args.validation_file is not None
    preset = dataset_preset(args.dataset)
    long_inputs = preset is not None and preset.long_inputs and not has_files
    if preset is not None and not has_files:
        train, validation = preset.files()
        args = dataclasses.replace(args, dataset=None, train_file=str(train), validation_file=str(validation),
                                   text_column=preset.text_column, summary_column=preset.summary_column)
        has_files = True
    if has_files and args.dataset:
        raise DatasetError(
            "give either local files (train/validation file) or a hub dataset, not both; clear one of them"
        )
    if has_files:
        if args.train_file is None:
            raise DatasetError("a validation file was given without a train file: give the train file too")
        sources = {"train": args.train_file, "validation": args.validation_file}
        raw = {split: _read_file(path) for split, path in sources.items() if path is not None}
    elif args.dataset:
        splits = {"train": args.train_split, "validation": args.validation_split}
        raw = {split: _read_hub(args, name) for split, name in splits.items() if name}
    else:
        raise DatasetError(
            "no data given: set a train file (JSON, JSONL, CSV or Parquet), a dataset preset such as "
            "'debian-descriptions', or a hub dataset name such as 'xsum'"
        )

    limits = {"train": args.max_train_samples, "validation": args.max_eval_samples}
    out = datasets.DatasetDict()
    for split, dataset in raw.items():
        where = Path(sources[split]).name if has_files else f"{args.dataset} [{split}]"
        dataset = _select_columns(dataset, args.text_column, args.summary_column, where)
        dataset = _drop_blank(dataset, where)
        if args.shuffle_seed is not None:
            dataset = dataset.shuffle(seed=args.shuffle_seed).flatten_indices()
        if long_inputs:
            from .long_inputs import long_input_dataset

            dataset = long_input_dataset(dataset)
        limit = limits[split]
        if limit is not None and limit < len(dataset):
            dataset = dataset.select(range(limit))
        out[split] = dataset
    return out


def _read_file(path: str | Path) -> datasets.Dataset:
    path = Path(path).expanduser()
    builder = FILE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise DatasetError(
            f"{path.name}: unsupported file type {path.suffix or '(none)'!r}; use .json, .jsonl, .csv or .parquet"
        )
    check_data_file(path)  # present, readable, UTF-8, JSONL rows parse: the file's name and line in the message
    try:
        options = {"delimiter": csv_delimiter(path)} if builder == "csv" else {}
        return datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    except Exception as err:  # pyarrow / datasets raise many types for a malformed file
        raise DatasetError(
            f"{path.name}: could not be read as {builder.upper()} ({type(err).__name__}: {err}); "
            "check the file is valid and has one article/summary pair per row"
        ) from err


def _read_hub(args: DataArgs, split: str) -> datasets.Dataset:
    try:
        return datasets.load_dataset(args.dataset, args.dataset_config, split=split)
    except ValueError as err:
        if "split" in str(err).lower():
            raise DatasetError(f"dataset {args.dataset!r} has no split {split!r}: {err}") from err
        raise DatasetError(f"dataset {args.dataset!r} could not be loaded: {err}") from err
    except Exception as err:  # offline, unknown name, gated... the hub client raises many types
        raise DatasetError(
            f"hub dataset {args.dataset!r} could not be loaded ({type(err).__name__}: {err}); check the name "
            "and the network, or use a local train/validation file, which works offline"
        ) from err


def _select_columns(dataset: datasets.Dataset, text: str, summary: str, where: Any) -> datasets.Dataset:
    if text == summary:
        raise DatasetError(f"the text and summary columns are both {text!r}: name two different columns")
    missing = [name for name in (text, summary) if name not in dataset.column_names]
    if missing:
        raise DatasetError(
            f"{where}: no column {', '.join(map(repr, missing))}; its columns are "
            f"{', '.join(map(repr, dataset.column_names))}. Set the text/summary column names to match"
        )
    dataset = dataset.select_columns([text, summary])
    # Two steps so that swapped names (text="summary", summary="document") cannot collide.
    dataset = dataset.rename_columns({text: "__pair_document", summary: "__pair_summary"})
    return dataset.rename_columns({"__pair_document": DOCUMENT, "__pair_summary": SUMMARY})


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _drop_blank(dataset: datasets.Dataset, where: Any) -> datasets.Dataset:
    before = len(dataset)
    kept = dataset.filter(
        lambda batch: [_is_text(d) and _is_text(s) for d, s in zip(batch[DOCUMENT], batch[SUMMARY])],
        batched=True,
    )
    dropped = before - len(kept)
    if len(kept) == 0:
        raise DatasetError(
            f"{where}: no usable pairs ({before} rows, all with an empty or non-text article or summary); "
            "check the text/summary column names and the file's contents"
        )
    if dropped:
        message = f"{where}: dropped {dropped} of {before} rows with an empty article or summary"
        warnings.warn(message, UserWarning, stacklevel=3)
    return kept


def recorded_prefix(model_or_config: Any) -> str | None:
    """The summarization prefix a checkpoint records, or ``None``.

    Read from ``config.task_specific_params["summarization"]["prefix"]``, where the hub's T5
    checkpoints keep theirs (``t5-small``: ``"summarize: "``) and :func:`record_prefix` writes the
    prefix a model was trained with here.
    """
    config = getattr(model_or_config, "config", model_or_config)
    params = getattr(config, "task_specific_params", None)
    prefix = params.get("summarization", {}).get("prefix") if isinstance(params, dict) else None
    return prefix if isinstance(prefix, str) else None


def record_prefix(model: Any, prefix: str) -> None:
    """Record on ``model.config`` the prefix it is trained with (see :func:`recorded_prefix`), so
    the saved checkpoint is later read with the prompt it learned (a model trained without one,
    such as the committed offline teacher, would otherwise be given T5's ``"summarize: "``).
    Other ``task_specific_params`` entries are kept."""
    params = getattr(model.config, "task_specific_params", None)
    params = dict(params) if isinstance(params, dict) else {}
    params["summarization"] = {**params.get("summarization", {}), "prefix": prefix}
    model.config.task_specific_params = params


def default_prefix(model_or_config: Any) -> str:
    """The prefix a model expects: the one its checkpoint records (:func:`recorded_prefix`), else its
    family's: ``"summarize: "`` for T5-family models, ``""`` otherwise.

    Accepts a model, a config, or a ``model_type`` string. T5 was pre-trained multi-task with text
    prefixes (Raffel et al. 2020, Section 2.4 and Appendix D); BART/PEGASUS take no prefix.
    """
    if isinstance(model_or_config, str):
        model_type = model_or_config
    else:
        recorded = recorded_prefix(model_or_config)
        if recorded is not None:
            return recorded
        config = getattr(model_or_config, "config", model_or_config)
        model_type = getattr(config, "model_type", "") or ""
    return "summarize: " if model_type in T5_FAMILY else ""


def resolve_prefix(args: DataArgs, model: Any) -> str:
    """``args.prefix`` when set (``""`` included), else :func:`default_prefix` of ``model`` (the
    prefix its checkpoint records, else its family's)."""
    return args.prefix if args.prefix is not None else default_prefix(model)


def tokenize_pairs(
    dataset: datasets.Dataset,
    tokenizer: Any,
    *,
    prefix: str,
    max_source_length: int,
    max_target_length: int,
) -> datasets.Dataset:
    """Tokenize ``document``/``summary`` pairs into ``input_ids``, ``attention_mask`` and ``labels``.

    Sources are ``prefix + document`` truncated to ``max_source_length`` tokens; labels are the summary
    (tokenized as ``text_target``) truncated to ``max_target_length`` tokens, EOS included. Nothing is
    padded: each row keeps its own length and :func:`make_collator` pads per batch. The text columns
    are removed. Uses ``Dataset.map(batched=True)``, so results are cached by ``datasets`` when the
    dataset came from files. Source: ``run_summarization.py``'s ``preprocess_function``.

    Raises:
        DatasetError: the dataset lacks the ``document``/``summary`` columns (use :func:`load_pairs`).
    """
    missing = [name for name in (DOCUMENT, SUMMARY) if name not in dataset.column_names]
    if missing:
        raise DatasetError(
            f"cannot tokenize: no column {', '.join(map(repr, missing))} (columns: {dataset.column_names}); "
            "load the pairs with load_pairs() first"
        )

    def encode(batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
        sources = [prefix + document for document in batch[DOCUMENT]]
        encoded = tokenizer(sources, max_length=max_source_length, truncation=True)
        targets = tokenizer(text_target=batch[SUMMARY], max_length=max_target_length, truncation=True)
        return {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "labels": targets["input_ids"],
        }

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc="Tokenizing")


def make_collator(tokenizer: Any, model: Any = None):
    """``transformers.DataCollatorForSeq2Seq`` with dynamic padding and label padding ``-100``.

    Each batch is padded to its longest row: ``input_ids``/``attention_mask`` ``[batch, src_len]``,
    ``labels`` ``[batch, tgt_len]`` (padding = -100), and, when ``model`` is given,
    ``decoder_input_ids`` ``[batch, tgt_len]`` (labels shifted right). When ``model`` has a pruned
    vocabulary (:mod:`compression.vocab`), the tokenizer ids of ``input_ids``, ``labels`` and
    ``decoder_input_ids`` are mapped to its model ids (:func:`compression.vocab.to_model_ids`), so a
    pruned teacher and the students shrunk from it train on the same tokenized data as any model.
    """
    from transformers import DataCollatorForSeq2Seq

    collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=LABEL_PAD, pad_to_multiple_of=None)
    from .vocab import pruning_info

    if model is None or pruning_info(model) is None:
        return collator
    return _ModelIdCollator(collator, model)


class _ModelIdCollator:
    """A collator whose batches carry a vocabulary-pruned model's ids instead of tokenizer ids."""

    def __init__(self, collator, model):
        self.collator, self.model = collator, model

    def __call__(self, features):
        from .vocab import to_model_ids

        batch = self.collator(features)
        for key in ("input_ids", "labels", "decoder_input_ids"):
            if key in batch:
                batch[key] = to_model_ids(self.model, batch[key])
        return batch


def count_tokens(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Real (non-padding) tokens in a collated batch: source tokens + target tokens.

    ``attention_mask.sum() + (labels != -100).sum()`` as a 0-dim int64 tensor on the batch's device
    (no host sync; call ``int()`` for a number).
    """
    total = batch["attention_mask"].sum()
    if "labels" in batch:
        total = total + (batch["labels"] != LABEL_PAD).sum()
    return total.to(torch.int64)


@dataclass
class PreparedData:
    """What :func:`prepare_data` returns: the raw ``pairs`` (``DatasetDict`` with ``document``/
    ``summary``; ``"validation"`` absent when there is none and no fallback), the tokenized
    ``train`` and ``validation`` sets (``None`` when there is no validation split), the ``prefix``
    every source got, and whether the validation split is the first training pairs
    (``validation_from_train``)."""

    pairs: datasets.DatasetDict
    train: datasets.Dataset
    validation: datasets.Dataset | None
    prefix: str
    validation_from_train: bool = False


def prepare_data(args: DataArgs, model: Any, tokenizer: Any, *,
                 validation_fallback: int | None = None) -> PreparedData:
    """The one data preamble of every workflow (run pipeline, CLI commands, Modular Transformers):
    load the pairs (:func:`load_pairs`), fall back to the first ``validation_fallback`` training
    pairs when there is no validation split (``None``: no fallback), resolve the source prefix for
    ``model``'s family (:func:`resolve_prefix`) and tokenize both splits (:func:`tokenize_pairs`,
    ``args.max_source_length``/``args.max_target_length`` tokens).

    Raises:
        DatasetError: missing, unreadable or empty data, or absent columns (see :func:`load_pairs`).
    """
    pairs = load_pairs(args)
    from_train = False
    if "validation" not in pairs and validation_fallback:
        pairs["validation"] = pairs["train"].select(range(min(len(pairs["train"]), validation_fallback)))
        from_train = True
    prefix = resolve_prefix(args, model)
    lengths = dict(prefix=prefix, max_source_length=args.max_source_length, max_target_length=args.max_target_length)
    train = tokenize_pairs(pairs["train"], tokenizer, **lengths)
    validation = tokenize_pairs(pairs["validation"], tokenizer, **lengths) if "validation" in pairs else None
    return PreparedData(pairs, train, validation, prefix, from_train)
