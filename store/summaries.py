"""Per-run summaries kept beside the parts, brought up to date incrementally by readers.

A committed run folder never changes, so a summary row computed once for a run stays right.
A reader lists the run folders (a directory listing), computes the summary only for the runs
its cached file lacks, and writes the file back atomically (temporary name, rename). Two
readers racing both write a correct file; the last rename wins. The file's name carries the
catalog hash, so new analysis definitions or category rules start a fresh summary.

This keeps all-runs reads (the runs table, category times) from opening every run's files on
every cold read, which costs ~1 s at 1,000 runs.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from store.db import EMPTY_PART, Store, StoreError

RUN_IDS_KEY = b"observatory.run_ids"


def committed_runs(store: Store) -> set[str]:
    with os.scandir(store.runs_dir) as entries:
        return {e.name for e in entries if e.is_dir() and e.name != EMPTY_PART}


def _summary_path(store: Store, name: str) -> Path:
    return store.parts / "summaries" / f"{name}-{store.catalog_hash()}.parquet"


def _read_cached(path: Path) -> tuple[pa.Table | None, set[str]]:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid):
        return None, set()  # absent or unreadable: rebuilt below
    run_ids = json.loads((table.schema.metadata or {}).get(RUN_IDS_KEY, b"[]"))
    return table.replace_schema_metadata(None), set(run_ids)


def _write(path: Path, table: pa.Table, run_ids: set[str]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        pq.write_table(table.replace_schema_metadata({RUN_IDS_KEY: json.dumps(sorted(run_ids)).encode()}), tmp)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only store still answers, it just computes again next time


def summary(store: Store, name: str, compute: Callable[[Store, list[str]], pa.Table]) -> pa.Table:
    """The summary `name` over every committed run; `compute(store, run_ids)` covers new runs."""
    if not store.exists():
        raise StoreError(f"{store.path}: no store here yet; run `observatory ingest PATH` or `observatory run WORKLOAD` first")
    path = _summary_path(store, name)
    runs = committed_runs(store)
    cached, summarized = _read_cached(path)
    missing = sorted(runs - summarized)
    parts = [cached] if cached is not None else []
    if missing or cached is None:
        parts.append(compute(store, missing))
    table = pa.concat_tables(parts, promote_options="default") if len(parts) > 1 else parts[0]
    if missing or cached is None:
        _write(path, table, summarized | set(missing))
    if summarized - runs:  # a run folder went away: drop its rows
        table = table.filter(pa.compute.is_in(table["run_id"], pa.array(sorted(runs))))
    return table


def _runs_rows(store: Store, run_ids: list[str]) -> pa.Table:
    with store.connect_runs(run_ids) as con:  # through the view: older parts read in today's schema
        return con.execute("SELECT * FROM runs").to_arrow_table()


def _category_rows(store: Store, run_ids: list[str]) -> pa.Table:
    with store.connect_runs(run_ids) as con:
        return con.execute("SELECT * FROM op_time_by_category").to_arrow_table()


def runs_table(store: Store) -> pa.Table:
    """Every run's `runs` row."""
    return summary(store, "runs", _runs_rows)


def category_times(store: Store) -> pa.Table:
    """The op_time_by_category view's rows for every run."""
    return summary(store, "op_time_by_category", _category_rows)


def refresh(store: Store) -> None:
    """Bring every summary up to date (after imports or runs), so the next reader pays nothing."""
    runs_table(store)
    category_times(store)
