"""A quick look at a local data file before it is loaded: its columns, rows and the first bad row.

:func:`inspect_data_file` streams a JSONL/JSON/CSV/Parquet file once (never the whole file in
memory) and says what :func:`compression.data.load_pairs` would trip on, with the file's *name*
and the *line number* of the first bad row: bytes that are not UTF-8, a JSONL line that is not a
JSON object, a CSV row with the wrong number of fields. CSV files are read with the delimiter
:class:`csv.Sniffer` (Python standard library) finds in their first 64 KiB (comma, semicolon, tab
or bar), which :func:`compression.data.load_pairs` then uses too.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import DatasetError

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
SNIFF_BYTES = 1 << 16
DELIMITERS = ",;\t|"


@dataclass(frozen=True)
class DataFileFacts:
    """What :func:`inspect_data_file` found: ``columns`` (names, in file order), ``rows`` (records,
    blank lines not counted), ``delimiter`` (CSV only, else ``None``)."""

    columns: list[str]
    rows: int
    delimiter: str | None = None


def sniff_delimiter(sample: str) -> str:
    """The CSV delimiter of ``sample`` (the file's first lines) among comma, semicolon, tab and bar
    (:class:`csv.Sniffer`); a comma when the sample is ambiguous (e.g. a single column)."""
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return ","


def _bad(name: str, line: int, what: str) -> DatasetError:
    return DatasetError(f"{name}, line {line}: {what}; fix that row (or remove it) and upload the file again")


def _lines(path: Path):
    """``(line number, text)`` of the file, decoded as UTF-8 line by line."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise _bad(path.name, number, f"bytes that are not UTF-8 text (byte {error.start + 1} of the "
                                              "line); save the file as UTF-8") from None


def inspect_data_file(path: str | Path) -> DataFileFacts:
    """Columns, rows and CSV delimiter of a local data file, checking every row on the way.

    Raises:
        DatasetError: unsupported type, missing or empty file, non-UTF-8 bytes, a JSONL line that is
            not a JSON object, a JSON file that is not an array of objects, a CSV row whose field
            count differs from the header's, an unreadable Parquet file, no columns. The message
            names the file (never its folder) and the line.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DatasetError(f"{path.name}: unsupported file type {suffix or '(none)'!r}; use .jsonl, .json, .csv "
                           "or .parquet")
    if not path.is_file():
        raise DatasetError(f"{path.name}: no such file; upload it again")
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(path)
            columns, rows = list(meta.schema_arrow.names), meta.metadata.num_rows
        except Exception as error:  # noqa: BLE001 - pyarrow raises many types for a broken file
            raise DatasetError(f"{path.name}: not a readable Parquet file ({type(error).__name__}); upload a "
                               "valid one") from None
        return _facts(path, columns, rows)
    if suffix == ".csv":
        return _inspect_csv(path)
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES).lstrip()
    if suffix == ".json" and head.startswith(b"["):
        return _inspect_json_array(path)
    columns: list[str] = []
    rows = 0
    for number, text in _lines(path):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except ValueError as error:
            raise _bad(path.name, number, f"not valid JSON ({error.msg} at column {error.colno})") from None
        if not isinstance(record, dict):
            raise _bad(path.name, number, "a JSON value that is not an object ({\"document\": ..., \"summary\": ...})")
        for key in record:
            if key not in columns:
                columns.append(str(key))
        rows += 1
    return _facts(path, columns, rows)


def _inspect_json_array(path: Path) -> DataFileFacts:
    try:
        records = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        for _ in _lines(path):  # raises with the line number
            pass
        raise
    except ValueError as error:
        raise _bad(path.name, error.lineno, f"not valid JSON ({error.msg})") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise DatasetError(f"{path.name}: a .json file must hold one array of objects, or one object per line")
    columns: list[str] = []
    for record in records:
        columns += [str(k) for k in record if str(k) not in columns]
    return _facts(path, columns, len(records))


def _inspect_csv(path: Path) -> DataFileFacts:
    lines = _lines(path)
    sample = []
    size = 0
    for number, text in lines:
        sample.append(text)
        size += len(text)
        if size >= SNIFF_BYTES:
            break
    delimiter = sniff_delimiter("".join(sample))

    def rest():
        yield from sample
        for _, text in lines:
            yield text

    reader = csv.reader(rest(), delimiter=delimiter)
    try:
        header = next(reader, [])
        rows = 0
        for row in reader:
            if not any(field.strip() for field in row):
                continue
            if len(row) != len(header):
                raise _bad(path.name, reader.line_num, f"{len(row)} fields where the header has {len(header)} "
                                                       f"(delimiter {delimiter!r})")
            rows += 1
    except csv.Error as error:
        raise _bad(path.name, reader.line_num, f"not valid CSV ({error})") from None
    return _facts(path, [h.strip() for h in header], rows, delimiter)


def _facts(path: Path, columns: list[str], rows: int, delimiter: str | None = None) -> DataFileFacts:
    if not columns or rows == 0:
        raise DatasetError(f"{path.name} holds no rows: each row needs an article field and a summary field")
    return DataFileFacts(columns=columns, rows=rows, delimiter=delimiter)


def csv_delimiter(path: str | Path) -> str:
    """The delimiter of CSV file ``path`` (:func:`sniff_delimiter` on its first 64 KiB)."""
    with open(path, "rb") as handle:
        sample = handle.read(SNIFF_BYTES).decode("utf-8", errors="replace")
    return sniff_delimiter(sample)

