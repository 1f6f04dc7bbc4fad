"""The SQL box's connection: read-only, and cut off from every file but the store's parts.

Two locks, each enough alone for what the page promises:
1. The statement: only one read statement runs, by the rule `observatory sql` follows too
   (`store.read_statement`): DROP, INSERT, COPY, ATTACH, INSTALL, LOAD, SET ... are refused
   before they reach the engine.
2. The engine: a private in-memory DuckDB instance that ATTACHes the catalog READ_ONLY, makes
   it the default database and detaches the writable in-memory one; then allows file access
   only under the store's runs/ folder (`allowed_directories`, which the views' Parquet parts
   live in), turns external access off (`enable_external_access = false`: no other file, no
   network, no extension install or load), disables spilling to a temp folder, and locks the
   configuration (`lock_configuration = true`) so no query can undo any of it.
A query that runs too long is interrupted; only the first rows are fetched.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import duckdb
import pandas as pd
import pyarrow as pa

from store.db import Store
from store.read_statement import QueryRefused, check_read_statement, first_line

MEMORY_LIMIT = "2GB"
REFUSED_BECAUSE = "the dashboard's SQL box is read-only and cannot touch files, extensions or settings"


@dataclass(frozen=True)
class QueryResult:
    frame: pd.DataFrame
    truncated: bool  # more rows than max_rows existed
    seconds: float


@contextmanager
def sandboxed(store: Store):
    """A read-only connection to `store` that can read nothing but its parts folder."""
    con = duckdb.connect(":memory:")
    try:
        path = str(store.path).replace("'", "''")
        con.execute(f"ATTACH '{path}' AS store (READ_ONLY)")
        con.execute("USE store")
        con.execute("DETACH memory")  # the writable in-memory database: nothing to create tables in
        con.execute("SET allowed_directories = ?", [[store.runs_dir.as_posix() + "/"]])
        con.execute("SET temp_directory = ''")
        con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        yield con
    finally:
        con.close()


def run_query(store: Store, sql: str, max_rows: int = 10_000, timeout_s: float = 30.0) -> QueryResult:
    """Run one read statement in the sandbox: its first `max_rows` rows, or QueryRefused / ValueError with the reason."""
    check_read_statement(sql, REFUSED_BECAUSE)
    started = time.perf_counter()
    with sandboxed(store) as con:
        timer = threading.Timer(timeout_s, con.interrupt)
        timer.start()
        try:
            reader = con.execute(sql).to_arrow_reader(min(max_rows + 1, 100_000))
            batches, rows = [], 0
            for batch in reader:
                batches.append(batch)
                rows += batch.num_rows
                if rows > max_rows:
                    break
            table = pa.Table.from_batches(batches, schema=reader.schema)
        except duckdb.PermissionException as exc:
            raise QueryRefused(f"refused: {first_line(exc)} (the SQL box reads only the store's parts)") from None
        except duckdb.InterruptException:
            raise ValueError(f"the query ran longer than {timeout_s:.0f} s and was stopped; narrow it (WHERE run_id = ...) or use `observatory sql`") from None
        except duckdb.Error as exc:
            if "read-only" in str(exc):
                raise QueryRefused(f"refused: {first_line(exc)}") from None
            raise ValueError(f"the query failed: {first_line(exc)}") from None
        finally:
            timer.cancel()
    frame = table.slice(0, max_rows).to_pandas()
    return QueryResult(frame=frame, truncated=table.num_rows > max_rows, seconds=time.perf_counter() - started)

