"""Read rows from jsonl / json / csv / parquet files, each with its location for errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterator

from rlxf.data.errors import DataError

Row = dict[str, Any]
SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def iter_rows(path: str | Path) -> Iterator[tuple[str, Row]]:
    """Yield ``(location, row)``; location is ``line N`` (jsonl, csv), ``item N`` (json) or ``row N`` (parquet)."""
    path = Path(path)
    if not path.exists():
        raise DataError(str(path), "file", None, "no such file")
    readers = {".jsonl": _jsonl_rows, ".json": _json_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}
    suffix = path.suffix.lower()
    if suffix not in readers:
        raise DataError(str(path), "file", None, f"unknown file type {suffix!r}; expected one of {SUFFIXES}")
    try:
        yield from readers[suffix](path)
    except UnicodeDecodeError as error:
        raise DataError(str(path), f"byte {error.start}", None, "not valid UTF-8 text") from None


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Row]]:
    with path.open(encoding="utf-8-sig") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            location = f"line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(
                    str(path), location, None, f"invalid JSON ({error.msg} at column {error.colno})"
                ) from None
            if not isinstance(row, dict):
                raise DataError(str(path), location, None, f"expected a JSON object, got {type(row).__name__}")
            yield location, row


def _json_rows(path: Path) -> Iterator[tuple[str, Row]]:
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as error:
        raise DataError(str(path), f"line {error.lineno}", None, f"invalid JSON ({error.msg})") from None
    if isinstance(document, dict) and isinstance(document.get("data"), list):
        document = document["data"]
    if not isinstance(document, list):
        raise DataError(str(path), "file", None, 'expected a JSON array of objects (or {"data": [...]})')
    for index, row in enumerate(document):
        if not isinstance(row, dict):
            raise DataError(str(path), f"item {index}", None, f"expected a JSON object, got {type(row).__name__}")
        yield f"item {index}", row


def _csv_rows(path: Path) -> Iterator[tuple[str, Row]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            location = f"line {reader.line_num}"
            if None in row:
                raise DataError(str(path), location, None, f"more columns than the header's {len(reader.fieldnames)}")
            yield location, _decode_json_cells(row)


def _decode_json_cells(row: Row) -> Row:
    """CSV cells that hold JSON lists/objects (conversations) are decoded."""
    decoded = {}
    for key, value in row.items():
        if isinstance(value, str) and value[:1] in "[{":
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        decoded[key] = value
    return decoded


def _parquet_rows(path: Path) -> Iterator[tuple[str, Row]]:
    import pyarrow.parquet as pq

    for index, row in enumerate(pq.read_table(path).to_pylist()):
        yield f"row {index}", row
