"""Checks of a command's inputs before any folder is made, any data read into memory or any model loaded.

An input the user can fix (an unwritable or occupied output, a missing, non-UTF-8 or malformed data
file, a missing column, a corrupt or truncated ``*.safetensors``, a ``config.json`` that is not JSON
or that promises layers the weights do not hold, layer counts the checkpoint cannot give) is
reported here with a typed :class:`compression.errors.CompressionError`, so no run folder is left
behind "failed" and no training time is spent before the error. Only headers are read: the
safetensors header (8-byte length + JSON, the format's specification), a model's ``config.json``,
and data files streamed line by line. Messages name data files by their file name and line, never
by a server path.
"""

from __future__ import annotations

import csv
import json
import os
import re
import struct
import tempfile
from pathlib import Path

from .config import DataArgs, RunConfig
from .deploy import is_deployed_folder
from .errors import DatasetError, ModelLoadError, OutputError

SUPPORTED_DATA = (".json", ".jsonl", ".csv", ".parquet")
#: ``(encoder|decoder).(block|layers).<i>.`` in a weight name: T5 (``block``) and BART (``layers``) stacks.
_LAYER_KEY = re.compile(r"(?:^|\.)(encoder|decoder)\.(?:block|layers)\.(\d+)\.")
_MAX_HEADER = 100 * 2**20  # the safetensors reference implementation refuses headers over 100 MB


def preflight(config: RunConfig, *, existing: str = "refuse") -> None:
    """Every check of a whole run, before its run folder exists: the output folder
    (:func:`check_output`, ``existing`` says what an existing run folder means), the base
    checkpoint's files and the layer counts against its config (:func:`check_checkpoint`,
    :func:`check_layers`), and the data files (:func:`check_data`).

    Raises:
        OutputError, ModelLoadError, LayerSelectionError, DatasetError: the first problem found.
    """
    check_output(config.output_dir, existing=existing)
    model_config = check_checkpoint(config.model, quantized_ok=False)
    if model_config is not None:
        check_layers(model_config, config.shrink.encoder_layers, config.shrink.decoder_layers, config.shrink.strategy)
    check_data(config.data)


def check_output(path: str | Path, *, existing: str = "allow") -> Path:
    """``path`` can be written as an output folder: it is not a file, and it (or its nearest
    existing parent) is a folder this process can create files in (tried with a temporary file).

    ``existing``: ``"allow"`` (any folder), or for run folders ``"refuse"`` (a folder holding a run
    is refused), ``"overwrite"`` or ``"resume"`` (the caller clears it or continues it).

    Raises:
        OutputError: a file, a parent that is a file, a folder that cannot be written, or an existing
            run under ``existing="refuse"``.
        RunError: under ``existing="resume"``, a folder without a run that can be continued
            (:func:`compression.resume.check_resumable`).
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError(f"output {path} is an existing file, not a folder: choose a folder path")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"output {path}: {parent} is a file, so no folder can be made under it; choose another path")
    try:
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=parent)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise OutputError(f"output {path} cannot be written ({error.strerror or type(error).__name__} in {parent}): "
                          "choose a folder you can write to") from None
    if existing == "resume":
        from .resume import check_resumable

        check_resumable(path)
    if existing == "refuse" and path.is_dir() and (path / "status.json").is_file():
        raise OutputError(f"{path} already holds a run: pass --overwrite to replace it, --resume to continue it "
                          "from its last checkpoint, or choose another --output")
    return path


def read_safetensors_header(path: str | Path) -> dict:
    """The JSON header of a ``.safetensors`` file (tensor name -> ``{"dtype", "shape", "data_offsets"}``),
    checked against the file's size, without reading any tensor (format: 8-byte little-endian header
    length, the header, then the data; huggingface/safetensors README).

    Raises:
        ModelLoadError: the file is shorter than its header says (truncated), or its header is not
            the format's JSON (corrupt).
    """
    path = Path(path)
    size = path.stat().st_size
    problem = None
    with open(path, "rb") as handle:
        start = handle.read(8)
        length = struct.unpack("<Q", start)[0] if len(start) == 8 else None
        if length is None or length > min(size - 8, _MAX_HEADER):
            problem = "truncated or not a safetensors file (header length past the end of the file)"
        else:
            try:
                header = json.loads(handle.read(length).decode("utf-8"))
                if not isinstance(header, dict):
                    raise ValueError("not an object")
                ends = [int(entry["data_offsets"][1]) for name, entry in header.items() if name != "__metadata__"]
            except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError):
                problem = "its header is corrupt"
            else:
                if 8 + length + max(ends, default=0) > size:
                    problem = (f"truncated: the header describes {8 + length + max(ends):,} bytes, the file holds "
                               f"{size:,}")
    if problem:
        raise ModelLoadError(f"{path.parent.name}/{path.name} is damaged ({problem}): copy or save the checkpoint "
                             "again")
    return header


def _weight_files(folder: Path) -> list[Path]:
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ModelLoadError(f"{folder.name}/{index.name} is not a valid shard index: save the checkpoint "
                                 "again") from None
        missing = [shard for shard in shards if not (folder / shard).is_file()]
        if missing:
            raise ModelLoadError(f"{folder.name} lacks the weight shard(s) {', '.join(missing)}: copy the whole "
                                 "checkpoint folder")
        return [folder / shard for shard in shards]
    return []


def _stack_depths(config: dict) -> dict[str, int] | None:
    if "encoder_layers" in config and "decoder_layers" in config:  # BART family
        return {"encoder": int(config["encoder_layers"]), "decoder": int(config["decoder_layers"])}
    if "num_layers" in config:  # T5 family
        layers = int(config["num_layers"])
        return {"encoder": layers, "decoder": int(config.get("num_decoder_layers") or layers)}
    return None


def check_checkpoint(name_or_path: str | Path, *, quantized_ok: bool = True) -> dict | None:
    """A local checkpoint folder's ``config.json`` (parsed) after checking its weights cover it:
    every ``*.safetensors`` header intact and not truncated, every encoder/decoder layer the config
    names present in the weights, and the embedding width equal to ``d_model``. No weight is loaded.
    Returns ``None`` for a hub id (checked when it is downloaded) and for ``.bin``-only folders'
    layer coverage (no header to read). ``quantized_ok=False`` (shrinking, training, quantizing,
    width pruning) refuses a quantized copy (a ``quantization_config`` in its config: bitsandbytes).

    Raises:
        ModelLoadError: a missing folder, a folder without ``config.json``, a ``config.json`` that is
            not valid JSON, a deployed CTranslate2 copy, a quantized copy where ``quantized_ok`` is
            false, damaged weights, or weights that do not cover the config.
    """
    name = str(name_or_path)
    folder = Path(name).expanduser()
    if not folder.exists():
        if name.startswith((".", "/", "~")) or name.count("/") > 1:
            raise ModelLoadError(f"folder {name} does not exist: check the path")
        return None
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder} is not a model folder (no config.json): point to a folder written by "
                             "save_pretrained, e.g. one made by `python -m compression init`")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelLoadError(f"{folder.name}/config.json is not a valid model config ({error}): the local folder's "
                             "config is broken; save the checkpoint again") from None
    except OSError as error:
        raise ModelLoadError(f"{folder.name}/config.json cannot be read ({error.strerror})") from None
    if "model_type" not in config and is_deployed_folder(folder):
        raise ModelLoadError(f"{folder} is a deployed CTranslate2 copy (model.bin), not a transformers checkpoint: it "
                             "writes summaries (`python -m compression evaluate` scores it) but cannot be shrunk, "
                             "trained or quantized; use the run's student/ folder instead")
    if not quantized_ok and config.get("quantization_config"):
        raise ModelLoadError(f"{folder} is a quantized copy ({config['quantization_config'].get('quant_method', 'quantized')} "
                             "weights): it writes summaries (`python -m compression evaluate` scores it) but cannot "
                             "be shrunk, trained, pruned or quantized again; use the float student it was made from "
                             "(a run's student/ folder)")
    files = _weight_files(folder)
    if not files:
        return config
    headers = {}
    for file in files:
        headers.update({k: v for k, v in read_safetensors_header(file).items() if k != "__metadata__"})
    depths = _stack_depths(config)
    if depths:
        held: dict[str, set[int]] = {"encoder": set(), "decoder": set()}
        for key in headers:
            match = _LAYER_KEY.search(key)
            if match:
                held[match.group(1)].add(int(match.group(2)))
        for stack, depth in depths.items():
            missing = sorted(set(range(depth)) - held[stack])
            if missing and held[stack]:
                raise ModelLoadError(
                    f"{folder.name}: config.json says {depth} {stack} layers but the weights hold "
                    f"{len(held[stack] & set(range(depth)))} (missing layer(s) {', '.join(map(str, missing))}); the "
                    "checkpoint is incomplete or its config was edited: save it again")
    width = config.get("d_model")
    for key, entry in headers.items():
        shape = entry.get("shape") or []
        if key.endswith("shared.weight") and len(shape) == 2 and isinstance(width, int) and shape[1] != width:
            raise ModelLoadError(f"{folder.name}: config.json says d_model {width} but the embedding weights are "
                                 f"{shape[1]} wide; the config does not belong to these weights")
    return config


def check_layers(model_config: dict, encoder_layers, decoder_layers, strategy: str = "spread") -> None:
    """The student's layer counts or indices against the checkpoint's depths (no weights loaded).

    Raises:
        LayerSelectionError: a count above the depth, below 1, or indices out of range or repeated.
    """
    from .layers import parse_layers

    depths = _stack_depths(model_config)
    if depths is None:
        return
    # counts and indices are checked against the depths; which layers a count keeps is the strategy's
    # business later (an importance strategy needs the model), so "spread" stands in here
    parse_layers(encoder_layers, depths["encoder"], "spread", "encoder")
    parse_layers(decoder_layers, depths["decoder"], "spread", "decoder")


def check_data(data: DataArgs) -> None:
    """Local data files (given, or a preset's) exist, are readable UTF-8, parse row by row, and have
    the text and summary columns. Hub datasets are left to the download.

    Raises:
        DatasetError: naming the file (not its folder) and, for a bad row, its line number.
    """
    from .dataset_presets import dataset_preset

    files = [data.train_file, data.validation_file]
    columns = (data.text_column, data.summary_column)
    preset = dataset_preset(data.dataset) if data.train_file is None and data.validation_file is None else None
    if preset is not None:
        files = [str(path) for path in preset.files()]
        columns = (preset.text_column, preset.summary_column)
    for file in files:
        if file is not None:
            check_data_file(file, columns)


def check_data_file(path: str | Path, columns: tuple[str, ...] = ()) -> None:
    """One local pairs file: a supported type, present, readable, UTF-8, every JSONL line a JSON
    object, and (when ``columns`` are given) the first record or the header holding them.

    Raises:
        DatasetError: what is wrong, with the file's name and the bad row's line number.
    """
    path = Path(path).expanduser()
    name = path.name
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_DATA:
        raise DatasetError(f"{name}: unsupported file type {path.suffix or '(none)'!r}; use .json, .jsonl, .csv "
                           "or .parquet")
    if not path.is_file():
        raise DatasetError(f"{name}: no such file; check the path (it is read on this machine)")
    if not os.access(path, os.R_OK):
        raise DatasetError(f"{name} cannot be read (permission denied): fix its permissions")
    if suffix == ".parquet":
        return
    first = None
    try:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise DatasetError(f"{name} line {number} is not UTF-8 text (byte 0x{raw[error.start]:02x}): "
                                       "save the file as UTF-8") from None
                if suffix == ".jsonl" and line.strip():
                    try:
                        record = json.loads(line)
                    except ValueError as error:
                        raise DatasetError(f"{name} line {number} could not be read as JSON ({error.msg}): each line "
                                           "must be one JSON object such as {\"document\": ..., \"summary\": ...}") from None
                    if not isinstance(record, dict):
                        raise DatasetError(f"{name} line {number} is not a JSON object: each line must be one "
                                           "object such as {\"document\": ..., \"summary\": ...}")
                    first = record if first is None else first
    except OSError as error:
        raise DatasetError(f"{name} cannot be read ({error.strerror})") from None
    if suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as handle:
            try:
                first = dict.fromkeys(next(csv.reader(handle), []))
            except csv.Error as error:
                raise DatasetError(f"{name}: the CSV header could not be read ({error})") from None
    if first is not None and columns:
        missing = [column for column in columns if column not in first]
        if missing:
            raise DatasetError(f"{name}: no column {', '.join(map(repr, missing))}; its columns are "
                               f"{', '.join(map(repr, first))}. Set the text/summary column names to match")

