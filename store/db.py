"""The embedded store: immutable Parquet parts behind a DuckDB catalog of views.

Layout beside the database file `observatory.duckdb`:

    observatory.parts/
        runs/<run_id>/<table>.parquet   one folder per run, complete or absent (with the
                                        profiler trace of a run profiled here)
        runs/_empty/<table>.parquet     a zero-row part of each table's current schema
        staging/<owner>~<id>/           writers build a run folder here, then rename it
        catalog.duckdb                  the catalog Observatory's readers open

Writers never open a catalog for writing: they write a run's Parquet files into a staging
folder, fsync them, and rename the folder into runs/ (atomic on one filesystem), so a
reader sees a run whole or not at all, and any number of writers and readers work at once.
A catalog holds only views (and the schema version); it is written whole under a private
name and renamed into place when the store is created or upgraded, then opened read-only,
which DuckDB allows for many processes at once. `observatory.duckdb` is the same catalog for
users' own DuckDB clients: one holding it open, even for writing, blocks nothing here.

A staging folder's name carries its owner (store/owners.py); the next writer removes the
folders of owners that died (a killed import, a crashed run) on this host.
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

from store.owners import Owner
from store.schema import RENAMED, SCHEMA_VERSION, TABLES, conform, empty_schema, empty_table

DEFAULT_DB = "observatory.duckdb"
EMPTY_PART = "_empty"


class StoreError(RuntimeError):
    """A problem with the store itself; the message names the path."""


def readable(name: str, table: pa.Table) -> pa.Table:
    """`table` if every reader can read it back (valid UTF-8 strings, consistent buffers), else an error.

    Every part goes through here before it is written, so no commit can leave a part that breaks
    a reader: the import repairs what it can first (store/utf8.py), and this is the last guard.
    """
    try:
        table.validate(full=True)
    except pa.ArrowInvalid as exc:
        raise StoreError(f"table {name!r}: refusing to store a part readers could not read ({exc})") from None
    return table


def default_path() -> Path:
    return Path(os.environ.get("OBSERVATORY_DB", DEFAULT_DB))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sql_literal(path: str) -> str:
    """A path as a SQL string literal."""
    return "'" + path.replace("'", "''") + "'"


# Values an older schema wrote differently: {table: {column: SQL giving today's value}}.
_LEGACY_VALUES = {
    "latency": {"phase": "CASE WHEN phase = 'step' THEN 'iteration' ELSE phase END",
                "role": "coalesce(role, CASE WHEN phase IN ('step', 'iteration') THEN 'iteration' ELSE 'part' END)"},
    # runs before schema 2 lack settings_key: the settings they had, with --steps as their one parameter
    "runs": {"settings_key": "coalesce(settings_key, CASE WHEN source = 'profile' THEN to_json({'preset': preset, "
                             "'batch': batch, 'dtype': dtype, 'device': device, 'legacy_steps': "
                             "json_extract(config, '$.steps')})::VARCHAR END)"},
}


def table_select(table: str, files: str) -> str:
    """SELECT over a table's parts (`files`: a SQL path, glob or list) in today's schema: columns
    renamed since older parts were written read under their new name, legacy values mapped."""
    renamed = RENAMED.get(table, {})
    replace = [f"coalesce({new}, {old}) AS {new}" for old, new in renamed.items()]
    replace += [f"{sql} AS {column}" for column, sql in _LEGACY_VALUES.get(table, {}).items()]
    exclude = f" EXCLUDE ({', '.join(renamed)})" if renamed else ""
    columns = f"*{exclude}" + (f" REPLACE ({', '.join(replace)})" if replace else "")
    return f"SELECT {columns} FROM read_parquet({files}, union_by_name = true)"


class Store:
    def __init__(self, path: str | os.PathLike | None = None):
        given = Path(path) if path is not None else default_path()
        self.path = given.absolute()
        if not self.path.name or self.path.name in (".", ".."):
            raise StoreError(f"{given}: not a store path; expected a database file such as ./observatory.duckdb")
        if self.path.is_dir():
            raise StoreError(f"{given}: is a folder; expected the store's database file (e.g. {given / DEFAULT_DB})")
        self.parts = self.path.with_suffix(".parts")
        self.runs_dir = self.parts / "runs"
        self.staging_dir = self.parts / "staging"
        # The catalog Observatory's own readers open: a copy of the one at `path` that no user
        # client holds open for writing, so such a client never blocks a read.
        self.catalog_path = self.parts / "catalog.duckdb"

    # -- layout and catalog -------------------------------------------------------------
    def exists(self) -> bool:
        return self.path.exists() and (self.runs_dir / EMPTY_PART).is_dir()

    def _view_sql(self, table: str) -> str:
        pattern = (self.runs_dir / "*" / f"{table}.parquet").as_posix().replace("'", "''")
        return f"CREATE OR REPLACE VIEW {table} AS {table_select(table, sql_literal(pattern))}"

    def _catalog_current(self) -> bool:
        if not self.path.exists():
            return False
        try:
            with duckdb.connect(str(self.catalog_path), read_only=True) as con:
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
        """Create the store, or rebuild its catalog when the schema or its location changed.

        Any number of processes may do this at once, and while readers and DuckDB clients hold
        the catalog open: each writes a complete new catalog file under a private name and renames
        it over the old one (atomic); a client that had the old file open keeps reading it.
        """
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            self.staging_dir.mkdir(parents=True, exist_ok=True)
            self._write_empty_parts()
            if not self._catalog_current():
                for target in (self.catalog_path, self.path):
                    self._write_catalog(target)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot create or update the store here ({exc.strerror or exc}: {exc.filename or self.parts})") from None
        return self

    def _write_catalog(self, target: Path) -> None:
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            with duckdb.connect(str(tmp)) as con:
                for sql in self._catalog_sql():
                    con.execute(sql)
                con.execute("CREATE TABLE observatory_meta (schema_version INTEGER, parts_path VARCHAR, catalog_hash VARCHAR)")
                con.execute("INSERT INTO observatory_meta VALUES (?, ?, ?)", [SCHEMA_VERSION, self.parts.as_posix(), self.catalog_hash()])
            os.replace(tmp, target)
        finally:
            for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
                leftover.unlink(missing_ok=True)

    def _write_empty_parts(self) -> None:
        empty_dir = self.runs_dir / EMPTY_PART
        for table in TABLES:
            target = empty_dir / f"{table}.parquet"
            if target.exists() and pq.read_schema(target).equals(empty_schema(table)):
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
            return duckdb.connect(str(self.catalog_path), read_only=True)
        except duckdb.Error as exc:
            raise StoreError(f"{self.path}: cannot open the store ({str(exc).splitlines()[0]})") from None

    def connect_runs(self, run_ids: list[str] | tuple[str, ...]) -> duckdb.DuckDBPyConnection:
        """An in-memory connection whose tables and analysis views cover only these runs.

        Reading one run's folder instead of globbing every run's parts, and letting the
        analysis views' inner steps see only that run's events, makes one-run queries cost
        what the run costs, not what the store does.
        """
        from store.views import ANALYSIS_VIEWS

        if not self.exists():
            raise StoreError(f"{self.path}: no store here yet; run `observatory ingest PATH` or `observatory run WORKLOAD` first")
        self.ensure()  # the empty parts carry today's columns (a store written by an older version gets them here)
        con = duckdb.connect()
        for table in TABLES:
            files = [self.runs_dir / EMPTY_PART / f"{table}.parquet"]
            files += [self.runs_dir / run_id / f"{table}.parquet" for run_id in run_ids if (self.runs_dir / run_id / f"{table}.parquet").exists()]
            listed = "[" + ", ".join(sql_literal(f.as_posix()) for f in files) + "]"
            con.execute(f"CREATE VIEW {table} AS {table_select(table, listed)}")
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
        self.clear_dead_writers()
        return StagedRun(self)

    def scratch_folder(self) -> Path:
        """A private folder for files a writer makes before its run is staged (a profiler trace);
        removed with the rest of a dead writer's leftovers."""
        self.ensure()
        folder = self.staging_dir / f"{Owner.current().tag}~{uuid.uuid4().hex}.scratch"
        folder.mkdir(parents=True)
        return folder

    def clear_dead_writers(self) -> list[str]:
        """Remove staging folders whose owner process is gone; returns their names."""
        cleared = []
        for entry in os.scandir(self.staging_dir):
            owner = Owner.parse(entry.name.rsplit("~", 1)[0])
            if owner is not None and not owner.is_alive():
                shutil.rmtree(entry.path, ignore_errors=True)
                cleared.append(entry.name)
        return cleared


class StagedRun:
    """A run being written: its tables go to a private folder until commit() renames it in."""

    def __init__(self, store: Store):
        self.store = store
        self.dir = store.staging_dir / f"{Owner.current().tag}~{uuid.uuid4().hex}"
        self.dir.mkdir(parents=True)
        self.scratch = self.dir.with_name(self.dir.name + ".scratch")  # temporary files that are not part of the run
        self.tables: set[str] = set()

    def path_for(self, table: str) -> Path:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}; expected one of {', '.join(TABLES)}")
        self.tables.add(table)
        return self.dir / f"{table}.parquet"

    def attach(self, file: Path) -> str:
        """Move `file` into the run's folder (it is committed with the run); returns its name there."""
        os.replace(file, self.dir / file.name)
        return file.name

    def write(self, table: str, data: pa.Table) -> None:
        pq.write_table(readable(table, conform(table, data)), self.path_for(table), compression="zstd")

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
