"""The store under concurrency and misuse: first use by several processes, a DuckDB client holding the
catalog, writers that die, and store paths that cannot be stores."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from store.db import Store, StoreError

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT.parent / "shared" / "traces"
RANKS = [TRACES / f"hta/trace_filter/sampled_rank-{r}.json.gz" for r in (0, 1)]
OTHERS = [TRACES / "hta/cpu_only/rank-34.Jul_15_10_52_41.1074.pt.trace.json.gz",
          TRACES / "hta/critical_path/cuda_event_sync/event_sync_trace.json.gz"]


def observatory(*args: str, db: Path | str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "app.cli", *args, *(["--db", str(db)] if db is not None else [])]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})})


def run_ids(db: Path) -> list[str]:
    with Store(db).connect() as con:
        return sorted(r[0] for r in con.execute("SELECT run_id FROM runs").fetchall())


@pytest.mark.parametrize("attempt", range(3))
def test_concurrent_first_use_just_works(tmp_path, attempt):
    db = tmp_path / "new" / "o.duckdb"
    command = [sys.executable, "-m", "app.cli", "ingest", "--db", str(db), "--format", "json"]
    writers = [subprocess.Popen([*command, *map(str, files)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for files in (RANKS, OTHERS)]
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
    assert len(run_ids(db)) == 4


def test_a_duckdb_client_holding_the_catalog_for_writing_blocks_nothing(tmp_path):
    db = tmp_path / "o.duckdb"
    assert observatory("ingest", str(RANKS[0]), db=db).returncode == 0
    with duckdb.connect(str(db)) as client:  # a user's own DuckDB session, read-write
        client.execute("SELECT count(*) FROM runs").fetchall()
        for command in (["ingest", str(RANKS[1])], ["runs"], ["report"], ["sql", "SELECT count(*) AS n FROM events"]):
            done = observatory(*command, db=db)
            assert done.returncode == 0, (command, done.stderr)
    assert len(run_ids(db)) == 2


DIE_WHILE_WRITING = """
import os, signal, sys
from store.db import Store
from store.ingest import ingest_file
import store.ingest as ingest

store = Store(sys.argv[1])
(store.scratch_folder() / "worker.pt.trace.json.gz").write_bytes(b"half a profiler trace")  # a run being profiled

def die(*args, **kwargs):  # a kill -9 in the middle of writing an import's parts
    os.kill(os.getpid(), signal.SIGKILL)

ingest._write_events = die
ingest_file(store, sys.argv[2])
"""


def test_what_a_killed_writer_left_is_cleared_by_the_next_writer(tmp_path):
    store = Store(tmp_path / "o.duckdb").ensure()
    child = subprocess.run([sys.executable, "-c", DIE_WHILE_WRITING, str(store.path), str(RANKS[0])], cwd=ROOT)
    assert child.returncode == -signal.SIGKILL
    left = sorted(p.name for p in store.staging_dir.iterdir())
    assert len(left) == 2, left  # its staged run and the profiler's scratch folder
    assert observatory("ingest", str(RANKS[1]), db=store.path).returncode == 0
    assert list(store.staging_dir.iterdir()) == []
    assert len(run_ids(store.path)) == 1


def test_a_live_writers_staging_is_left_alone(tmp_path):
    store = Store(tmp_path / "o.duckdb").ensure()
    with store.stage() as mine:
        assert store.clear_dead_writers() == [] and mine.dir.is_dir()


def test_profiled_runs_keep_their_trace_in_their_own_folder(tmp_path):
    db = tmp_path / "o.duckdb"
    done = observatory("run", "llm-decode", "--param", "new_tokens=2", "--repeats", "1", "--warmup", "0", "--format", "json", db=db)
    assert done.returncode == 0, done.stderr
    store = Store(db)
    [(run_id, trace_path)] = Store(db).connect().execute("SELECT run_id, trace_path FROM runs").fetchall()
    assert Path(trace_path).parent == store.runs_dir / run_id and Path(trace_path).is_file()
    assert list(store.staging_dir.iterdir()) == []


# -- paths that cannot be stores: one line naming the path ------------------------------------------
def test_store_paths_that_cannot_be_stores(tmp_path):
    done = observatory("runs", db="/")
    assert done.returncode == 1 and done.stderr.strip() == "observatory runs: error: /: not a store path; expected a database file such as ./observatory.duckdb"
    done = observatory("runs", db=tmp_path)
    assert done.returncode == 1 and f"{tmp_path}: is a folder" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    done = observatory("ingest", str(RANKS[0]), env={"OBSERVATORY_DB": "/proc/x.duckdb"})
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "/proc/x.duckdb: cannot create or update the store here" in done.stderr and "Traceback" not in done.stderr
    with pytest.raises(StoreError, match="is a folder"):
        Store(tmp_path)


def test_an_ingest_that_imports_nothing_creates_no_store(tmp_path):
    db = tmp_path / "o.duckdb"
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    done = observatory("ingest", str(bad), str(tmp_path / "missing.json"), db=db)
    assert done.returncode == 1
    assert not db.exists() and not Store(db).parts.exists()
