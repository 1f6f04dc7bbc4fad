"""What every command shares: the store it works on, and run ids given by prefix."""
from __future__ import annotations

import argparse

import duckdb

from store.db import Store

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def open_store(args: argparse.Namespace) -> Store:
    return Store(args.db) if getattr(args, "db", None) else Store()


def resolve_run(con: duckdb.DuckDBPyConnection, prefix: str) -> str:
    matches = [r[0] for r in con.execute("SELECT run_id FROM runs WHERE starts_with(run_id, ?) ORDER BY run_id", [prefix]).fetchall()]
    if not matches:
        raise ValueError(f"run {prefix!r}: no such run in the store (see `observatory runs`)")
    if len(matches) > 1 and prefix not in matches:
        raise ValueError(f"run {prefix!r} is ambiguous: {', '.join(matches[:5])}{' ...' if len(matches) > 5 else ''}")
    return prefix if prefix in matches else matches[0]
