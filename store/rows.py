"""Query results as plain Python rows: one conversion for the reports' documents and the CLI's output.

Rows come from a pandas frame (the analyses) or an Arrow table (`observatory sql`, which
keeps every DuckDB type: lists, structs, maps, blobs, decimals, NaN apart from NULL).
`plain_value` turns any value of either into JSON's own types:

    list, array            -> list (recursively)         struct             -> object
    map                    -> object, keys as text        blob               -> text, other bytes as \\xNN
    date, time, timestamp  -> ISO 8601 text               interval, duration -> ISO 8601 duration text
    decimal                -> number when exact as a float, else its text
    NULL, NaN, +-inf       -> null (JSON has no NaN; a table or CSV shows NaN and inf apart from NULL)
"""
from __future__ import annotations

import json
import math
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pandas as pd
import pyarrow as pa


def plain_value(value: Any) -> Any:
    """`value` as JSON's types: None, bool, int, float, str, list, dict (see the module's table)."""
    if isinstance(value, (list, tuple)) and not isinstance(value, pa.MonthDayNano):
        return _plain_map(value) if _is_map(value) else [plain_value(v) for v in value]
    if isinstance(value, dict):
        return {_key_text(k): plain_value(v) for k, v in value.items()}
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return plain_value(value.tolist())
    if value is None or _is_missing(value):
        return None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bool, int, str)):
        return value
    return _plain_scalar(value)


def _plain_scalar(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _decimal_number(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return blob_text(bytes(value))
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return _duration_text(0, value.days, (value.seconds * 10**6 + value.microseconds) * 1000)
    if isinstance(value, pa.MonthDayNano):
        return _duration_text(value.months, value.days, value.nanoseconds)
    return str(value)  # UUID and other scalars DuckDB hands over: their own text


def _is_missing(value: Any) -> bool:
    return value is pd.NA or value is pd.NaT


def _is_map(value: list | tuple) -> bool:
    """Arrow hands a MAP over as a list of (key, value) tuples; nothing else arrives as tuples."""
    return isinstance(value, list) and bool(value) and all(type(item) is tuple and len(item) == 2 for item in value)


def _plain_map(entries: list[tuple]) -> dict:
    return {_key_text(key): plain_value(value) for key, value in entries}


def _key_text(key: Any) -> str:
    key = plain_value(key)
    return key if isinstance(key, str) else json.dumps(key)


def _decimal_number(value: Decimal) -> int | float | str:
    if value == value.to_integral_value():
        return int(value)
    as_float = float(value)
    return as_float if Decimal(repr(as_float)) == value else str(value)


def blob_text(value: bytes) -> str:
    """Printable ASCII as it is, every other byte (and the backslash) as \\xNN, as DuckDB prints a BLOB."""
    return "".join(chr(b) if 32 <= b < 127 and b != 92 else f"\\x{b:02X}" for b in value)


def _duration_text(months: int, days: int, nanoseconds: int) -> str:
    seconds = Decimal(nanoseconds).scaleb(-9).normalize()
    return f"P{months}M{days}DT{seconds:f}S"


def frame_rows(frame: pd.DataFrame) -> list[tuple]:
    """The frame's rows as tuples, None where pandas marks a value missing (NaN there means NULL)."""
    return list(frame.astype(object).where(frame.notna(), None).itertuples(index=False, name=None))


def arrow_rows(table: pa.Table) -> list[tuple]:
    """The table's rows as tuples of Python values: NULL is None, NaN stays a float NaN."""
    columns = [column.to_pylist() for column in table.columns]
    return list(zip(*columns)) if columns else []


def unique_names(names: list[str]) -> list[str]:
    """Column names made unique as DuckDB's own frames do (a, a_1), so no value is lost to a repeated name."""
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        unique.append(name if count == 0 else f"{name}_{count}")
    return unique


def plain_rows(frame: pd.DataFrame) -> list[dict]:
    """The frame as JSON-ready records (`plain_value` on every value)."""
    names = unique_names([str(c) for c in frame.columns])
    return [dict(zip(names, map(plain_value, row))) for row in frame_rows(frame)]
