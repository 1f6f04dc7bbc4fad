"""Printing query results and documents: one place for table, CSV and JSON output.

Rows come from a pandas frame (the analyses) or an Arrow table (`observatory sql`), both through
`store.rows`: JSON gets real arrays and objects (`plain_value`), a table or CSV cell readable
text (`cell_text`: nested values as compact JSON, NaN and inf apart from NULL, which is empty).
"""
from __future__ import annotations

import csv
import json
import math
import sys
from decimal import Decimal
from typing import Any, Callable

import pandas as pd
import pyarrow as pa
from rich.console import Console
from rich.table import Table
from rich.text import Text

from store.rows import arrow_rows, frame_rows, plain_rows, plain_value, unique_names

# Never wrap: an error is one line, and tables piped to a file keep their rows whole.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 240)
err_console = Console(stderr=True, soft_wrap=True)
TABLE_ROWS = 200


def records(frame: pd.DataFrame) -> list[dict]:
    """JSON-ready rows."""
    return plain_rows(frame)


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(plain_value(document), indent=2) + "\n")


def print_frame(frame: pd.DataFrame, fmt: str = "table", title: str | None = None, max_rows: int = TABLE_ROWS) -> None:
    shown = frame.head(max_rows) if fmt == "table" else frame
    _print_rows(unique_names([str(c) for c in frame.columns]), frame_rows(shown), fmt, title, hidden=len(frame) - len(shown))


def print_arrow(table: pa.Table, fmt: str = "table", title: str | None = None, max_rows: int = TABLE_ROWS) -> None:
    """A query's result with every DuckDB type intact (lists, structs, maps, blobs, decimals, NaN apart from NULL)."""
    shown = table.slice(0, max_rows) if fmt == "table" else table
    _print_rows(unique_names(table.column_names), arrow_rows(shown), fmt, title, hidden=table.num_rows - shown.num_rows)


def _print_rows(names: list[str], rows: list[tuple], fmt: str, title: str | None, hidden: int) -> None:
    if fmt == "json":
        print_json([dict(zip(names, row)) for row in rows])
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([cell_text(value, repr) for value in row] for row in rows)
    else:
        table = Table(title=title, show_lines=False)
        for name in names:
            table.add_column(Text(name), overflow="fold")
        for row in rows:
            table.add_row(*(Text(cell_text(value)) for value in row))
        console.print(table)
        if hidden:
            console.print(f"... {hidden} more rows (use --format csv for all)")


def _table_float(value: float) -> str:
    return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"


def cell_text(value: Any, float_text: Callable[[float], str] = _table_float) -> str:
    """One value as table or CSV text: empty for NULL, NaN and inf by name, decimals exact, nested values as JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else str(value)
    if isinstance(value, Decimal):
        return str(value)
    plain = plain_value(value)
    if plain is None:
        return ""
    if isinstance(plain, float):
        return float_text(plain)
    if isinstance(plain, (list, dict)):
        return json.dumps(plain, ensure_ascii=False)
    return str(plain)
