"""Printing query results and documents: one place for table, CSV and JSON output."""
from __future__ import annotations

import json
import math
import sys
from datetime import date, datetime
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from store.analysis._sql import plain_rows

# Never wrap: an error is one line, and tables piped to a file keep their rows whole.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 240)
err_console = Console(stderr=True, soft_wrap=True)


def _plain(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (datetime, date, pd.Timestamp)):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def records(frame: pd.DataFrame) -> list[dict]:
    """JSON-ready rows (timestamps are written by print_json's default)."""
    return plain_rows(frame)


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=_plain) + "\n")


def print_frame(frame: pd.DataFrame, fmt: str = "table", title: str | None = None, max_rows: int = 200) -> None:
    if fmt == "json":
        print_json(records(frame))
    elif fmt == "csv":
        sys.stdout.write(frame.to_csv(index=False))
    else:
        table = Table(title=title, show_lines=False)
        for column in frame.columns:
            table.add_column(str(column), overflow="fold")
        for row in frame.head(max_rows).itertuples(index=False):
            table.add_row(*(_cell(v) for v in row))
        console.print(table)
        if len(frame) > max_rows:
            console.print(f"... {len(frame) - max_rows} more rows (use --format csv for all)")


def _cell(value: Any) -> str:
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)
