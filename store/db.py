"""The embedded store: immutable Parquet parts behind a DuckDB catalog of views.

Layout beside the database file `observatory.duckdb`:

    observatory.parts/
        runs/<run_id>/<table>.parquet   one folder per run, complete or absent
        runs/_empty/<table>.parquet     a zero-row part of each table's current schema
        staging/                        writers build a run folder here, then rename it

Writers never open the .duckdb file: they write a run's Parquet files into a staging
folder, fsync them, and rename the folder into runs/ (atomic on one filesystem), so a
reader sees a run whole or not at all, and any number of writers and readers work at once.
The .duckdb file holds only views (and the schema version); it is written when the store is
created or upgraded, then opened read-only, which DuckDB allows for many processes at once.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from store.schema import SCHEMA_VERSION, TABLES, conform, empty_table

DEFAULT_DB = "observatory.duckdb"
EMPTY_PART = "_empty"


class StoreError(RuntimeError):
    """A problem with the store itself; the message names the path."""


def default_path() -> Path:
    return Path(os.environ.get("OBSERVATORY_DB", DEFAULT_DB))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Store:
    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_path()
        self.path = self.path.absolute()
        self.parts = self.path.with_suffix(".parts")
        self.runs_dir = self.parts / "runs"
        self.staging_dir = self.parts / "staging"

    # -- layout and catalog -------------------------------------------------------------
    def exists(self) -> bool:
        return self.path.exists() and (self.runs_dir / EMPTY_PART).is_dir()

    def _view_sql(self, table: str) -> str:
        pattern = (self.runs_dir / "*" / f"{table}.parquet").as_posix().replace("'", "''")
        return f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM read_parquet('{pattern}', union_by_name = true)"

    def _catalog_current(self) -> bool:
        try:
            with duckdb.connect(str(self.path), read_only=True) as con:
                row = con.execute("SELECT schema_version, parts_path, catalog_hash FROM observatory_meta").fetchone()
        except duckdb.Error:
            return False
        return row == (SCHEMA_VERSION, self.parts.as_posix(), self.catalog_hash())

    def _catalog_sql(self) -> list[str]:
        from store.views import ANALYSIS_VIEWS

        return [self._view_sql(table) for table in TABLES] + list(ANALYSIS_VIEWS)

    def catalog_hash(self) -> str:
        return hashlib.sha256("\n;\n".join(self._catalog_sql()).encode()).hexdigest()[:16]

    def ensure(self) -> "Store":
        """Create the store, or upgrade its catalog when the schema or its location changed."""
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a folder; --db expects a database file path")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        self._write_empty_parts()
        if self.path.exists() and self._catalog_current():
            return self
        try:
            con = duckdb.connect(str(self.path))
        except duckdb.IOException as exc:
            raise StoreError(
                f"{self.path}: cannot upgrade the store's catalog while another process has it open ({exc}); "
                "close the dashboard or other DuckDB clients and retry"
            ) from None
        with con:
            for sql in self._catalog_sql():
                con.execute(sql)
            con.execute("CREATE OR REPLACE TABLE observatory_meta (schema_version INTEGER, parts_path VARCHAR, catalog_hash VARCHAR)")
            con.execute("INSERT INTO observatory_meta VALUES (?, ?, ?)", [SCHEMA_VERSION, self.parts.as_posix(), self.catalog_hash()])
        return self

    def _write_empty_parts(self) -> None:
        empty_dir = self.runs_dir / EMPTY_PART
        for table in TABLES:
            target = empty_dir / f"{table}.parquet"
            if target.exists() and pq.read_schema(target).equals(TABLES[table]):
                continue
            empty_dir.mkdir(parents=True, exist_ok=True)
            tmp = empty_dir / f".{table}.{uuid.uuid4().hex}.tmp"
            pq.write_table(empty_table(table), tmp)
            os.replace(tmp, target)

    # -- reading ------------------------------------------------------------------------
    def connect(self) -> duckdb.DuckDBPyConnection:
        """A read-only connection with every table and analysis view; shares the file with other readers."""
        if not self.exists():
            raise StoreError(f"{self.path}: no store here yet; run `observatory ingest PATH` or `observatory run WORKLOAD` first")
        self.ensure()
        try:
            return duckdb.connect(str(self.path), read_only=True)
        except duckdb.Error as exc:
            raise StoreError(f"{self.path}: cannot open the store ({exc})") from None

    def connect_runs(self, run_ids: list[str] | tuple[str, ...]) -> duckdb.DuckDBPyConnection:
        """An in-memory connection whose tables and analysis views cover only these runs.

        Reading one run's folder instead of globbing every run's parts, and letting the
        analysis views' inner steps see only that run's events, makes one-run queries cost
        what the run costs, not what the store does.
        """
        from store.views import ANALYSIS_VIEWS

        if not self.exists():
            raise StoreError(f"{self.path}: no store here yet; run `observatory ingest PATH` or `observatory run WORKLOAD` first")
        con = duckdb.connect()
        for table in TABLES:
            files = [self.runs_dir / EMPTY_PART / f"{table}.parquet"]
            files += [self.runs_dir / run_id / f"{table}.parquet" for run_id in run_ids if (self.runs_dir / run_id / f"{table}.parquet").exists()]
            listed = ", ".join("'" + f.as_posix().replace("'", "''") + "'" for f in files)
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet([{listed}], union_by_name = true)")
        for sql in ANALYSIS_VIEWS:
            con.execute(sql)
        return con

    def has_run(self, run_id: str) -> bool:
        return (self.runs_dir / run_id).is_dir()

    # -- writing ------------------------------------------------------------------------
    def stage(self) -> "StagedRun":
        if not self.exists():  # writers touch the catalog only to create it
            self.ensure()
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        return StagedRun(self)


class StagedRun:
    """A run being written: its tables go to a private folder until commit() renames it in."""

    def __init__(self, store: Store):
        self.store = store
        self.dir = store.staging_dir / f"{uuid.uuid4().hex}"
        self.dir.mkdir(parents=True)
        self.scratch = self.dir.with_suffix(".scratch")  # temporary files that are not part of the run
        self.tables: set[str] = set()

    def path_for(self, table: str) -> Path:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}; expected one of {', '.join(TABLES)}")
        self.tables.add(table)
        return self.dir / f"{table}.parquet"

    def write(self, table: str, data: pa.Table) -> None:
        pq.write_table(conform(table, data), self.path_for(table), compression="zstd")

    def commit(self, run_id: str) -> bool:
        """Move the run into place; False (and nothing changed) when the run id already exists."""
        if "runs" not in self.tables:
            raise ValueError("a run needs its 'runs' row before commit")
        shutil.rmtree(self.scratch, ignore_errors=True)
        for file in self.dir.iterdir():
            with file.open("rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(self.dir)
        target = self.store.runs_dir / run_id
        try:
            os.rename(self.dir, target)  # atomic; fails if the target exists and is not empty
        except OSError:
            if target.exists():
                self.discard()
                return False
            raise
        _fsync_dir(self.store.runs_dir)
        return True

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self) -> "StagedRun":
        return self

    def __exit__(self, *exc) -> None:
        self.discard()  # after a commit the folder is gone and this only clears scratch
