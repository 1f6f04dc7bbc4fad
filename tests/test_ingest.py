"""Trace import on the real traces in ../shared/traces, bad input, and store atomicity."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from store import trace_reader
from store.db import Store
from store.ingest import ingest_file
from store.trace_reader import TraceError

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"
ALL_TRACES = sorted(p for p in TRACES.rglob("*") if p.name.endswith((".json", ".json.gz")))
EXECUTION_TRACE = TRACES / "hta/execution_trace/benchmark_simple_add_et.json.gz"
KINETO_TRACES = [p for p in ALL_TRACES if p != EXECUTION_TRACE]
SMALL = TRACES / "hta/trace_filter/sampled_rank-0.json.gz"
LEGACY = TRACES / "kineto/resnet50_num_workers_0/worker0.1623143566756.pt.trace.json.gz"
OBSERVATORY = [sys.executable, "-m", "app.cli"]
ROOT = Path(__file__).resolve().parents[1]


def observatory(*args: str, db: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*OBSERVATORY, *args, "--db", str(db)], capture_output=True, text=True, cwd=ROOT)


def load_events(path: Path) -> list:
    data = json.loads((gzip.open if path.suffix == ".gz" else open)(path, "rt").read())
    return data["traceEvents"] if isinstance(data, dict) else data


def store_state(store: Store) -> tuple:
    """What a reader could see: committed run folders and anything left in staging."""
    runs = sorted(p.name for p in store.runs_dir.iterdir()) if store.runs_dir.exists() else []
    staging = sorted(p.name for p in store.staging_dir.iterdir()) if store.staging_dir.exists() else []
    return runs, staging


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "o.duckdb").ensure()


@pytest.mark.parametrize("trace", KINETO_TRACES, ids=lambda p: str(p.relative_to(TRACES)))
def test_every_shared_kineto_trace_imports_whole(store, trace):
    result = ingest_file(store, trace)
    assert result.created
    with store.connect() as con:
        stored = con.execute("SELECT count(*) FROM events WHERE run_id = ?", [result.run_id]).fetchone()[0]
        run = con.execute("SELECT status, event_count, source_path FROM runs WHERE run_id = ?", [result.run_id]).fetchone()
    assert stored == len(load_events(trace)) == result.event_count
    assert run == ("ok", stored, str(trace))


def test_execution_trace_is_refused_with_a_message_that_says_so(store):
    with pytest.raises(TraceError, match="PyTorch Execution Trace.*not a Kineto trace"):
        ingest_file(store, EXECUTION_TRACE)
    assert store_state(store) == ([ "_empty"], [])


def test_event_columns_on_a_gpu_trace(store):
    run_id = ingest_file(store, TRACES / "hta/ns_resolution_trace/rank-0.Apr_03_18_51_38.1102.pt.trace.json.gz").run_id
    with store.connect() as con:
        row = con.execute(
            """SELECT count(*) FILTER (WHERE cat = 'kernel'), count(*) FILTER (WHERE cat = 'kernel' AND stream = 7 AND device = 0),
                      count(*) FILTER (WHERE cat = 'kernel' AND correlation IS NOT NULL),
                      count(*) FILTER (WHERE cat = 'cpu_op' AND self_us IS NOT NULL AND self_us <= dur_us),
                      count(*) FILTER (WHERE cat = 'cpu_op'), min(rank), max(rank)
               FROM events WHERE run_id = ?""",
            [run_id],
        ).fetchone()
        fractional = con.execute("SELECT count(*) FROM events WHERE run_id = ? AND dur_us <> floor(dur_us)", [run_id]).fetchone()[0]
        device = con.execute("SELECT device, device_name, rank FROM runs WHERE run_id = ?", [run_id]).fetchone()
    kernels, on_stream_7, correlated, nested_ok, cpu_ops, rank_lo, rank_hi = row
    assert kernels == 4350 and correlated == kernels and on_stream_7 > 0
    assert nested_ok == cpu_ops == 23910
    assert (rank_lo, rank_hi) == (0, 0)
    assert fractional > 0, "fractional-microsecond durations must survive the import"
    assert device == ("cuda", "Tesla V100-SXM2-32GB", 0)  # deviceProperties[0].name and distributedInfo.rank


def test_legacy_2021_categories_are_normalised_and_kept(store):
    run_id = ingest_file(store, LEGACY).run_id
    with store.connect() as con:
        pairs = dict(con.execute("SELECT cat_raw, any_value(cat) FROM events WHERE run_id = ? AND cat_raw IS NOT NULL GROUP BY 1", [run_id]).fetchall())
        streams = con.execute("SELECT DISTINCT stream FROM events WHERE run_id = ? AND cat = 'kernel'", [run_id]).fetchall()
    assert pairs["Kernel"] == "kernel" and pairs["Operator"] == "cpu_op" and pairs["Runtime"] == "cuda_runtime"
    assert pairs["Memcpy"] == "gpu_memcpy" and pairs["Memset"] == "gpu_memset"
    assert streams == [(7,)], "legacy 'stream 7' thread names give the stream"


def test_huge_integers_and_missing_rank(store):
    run_id = ingest_file(store, TRACES / "hta/large_integer_trace/rank-70.Mar_25_20_48_12.2861.pt.trace.json.gz").run_id
    with store.connect() as con:
        comms = con.execute("SELECT json_extract_string(args, '$.\"Comms Id\"') FROM events WHERE run_id = ? AND cat = 'cpu_op'", [run_id]).fetchone()[0]
        rank = con.execute("SELECT rank FROM runs WHERE run_id = ?", [run_id]).fetchone()[0]
    assert comms == "10159970886766084423"
    assert rank is None


def test_profiler_steps_reach_device_events_through_correlation(store):
    run_id = ingest_file(store, SMALL).run_id
    with store.connect() as con:
        host_steps = {r[0] for r in con.execute("SELECT DISTINCT profiler_step FROM events WHERE run_id = ? AND NOT on_device AND profiler_step IS NOT NULL", [run_id]).fetchall()}
        device_steps = {r[0] for r in con.execute("SELECT DISTINCT profiler_step FROM events WHERE run_id = ? AND on_device AND profiler_step IS NOT NULL", [run_id]).fetchall()}
    assert device_steps and device_steps <= host_steps


def test_same_content_twice_is_not_duplicated(store, tmp_path):
    first = ingest_file(store, SMALL)
    copy = tmp_path / "renamed.json.gz"
    copy.write_bytes(SMALL.read_bytes())
    second = ingest_file(store, copy)
    assert first.created and not second.created and first.run_id == second.run_id
    with store.connect() as con:
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 1


def test_streaming_path_gives_the_same_events(store, monkeypatch, tmp_path):
    whole = ingest_file(store, SMALL)
    monkeypatch.setattr(trace_reader, "STREAM_THRESHOLD_BYTES", 1000)
    monkeypatch.setattr(trace_reader, "BATCH_EVENTS", 700)  # several batches, spilled to disk
    other = Store(tmp_path / "streamed.duckdb").ensure()
    streamed = ingest_file(other, SMALL)
    query = "SELECT cat, name, ts_us, dur_us, stream, correlation, profiler_step, depth, self_us, category FROM events ORDER BY event_idx"
    with store.connect() as a, other.connect() as b:
        assert a.execute(query).fetchall() == b.execute(query).fetchall()
    assert whole.event_count == streamed.event_count


# -- bad input: a one-line error naming the file, exit code 1, the store unchanged ---------
def _truncated(tmp_path: Path) -> Path:
    text = gzip.open(SMALL, "rt").read()
    path = tmp_path / "truncated.json"
    path.write_text(text[: len(text) // 2])
    return path


def _truncated_gzip(tmp_path: Path) -> Path:
    data = SMALL.read_bytes()
    path = tmp_path / "truncated.json.gz"
    path.write_bytes(data[: len(data) // 2])
    return path


def _corrupt_gzip(tmp_path: Path) -> Path:
    data = bytearray(SMALL.read_bytes())
    data[100:200] = bytes(100)
    path = tmp_path / "corrupt.json.gz"
    path.write_bytes(bytes(data))
    return path


BAD_INPUTS = {
    "empty": (lambda d: (d / "empty.json").write_text("") and None or d / "empty.json", "empty file"),
    "truncated JSON": (_truncated, "truncated JSON"),
    "truncated gzip": (_truncated_gzip, "gzip"),
    "corrupt gzip": (_corrupt_gzip, "gzip"),
    "not JSON": (lambda d: (d / "notes.json").write_text("hello, world") and None or d / "notes.json", "not valid JSON"),
    "JSON that is not a trace": (lambda d: (d / "config.json").write_text('{"lr": 0.1}') and None or d / "config.json", "traceEvents"),
    "events that are not objects": (lambda d: (d / "ints.json").write_text('{"traceEvents": [1, 2]}') and None or d / "ints.json", "not a Kineto/Chrome trace"),
    "missing path": (lambda d: d / "nowhere.json", "no such file"),
    "an empty event array": (lambda d: (d / "none.json").write_text('{"traceEvents": []}') and None or d / "none.json", "no events"),
    "an empty bare array": (lambda d: (d / "bare.json").write_text("[]") and None or d / "bare.json", "no events"),
    "args of the wrong type": (lambda d: (d / "args.json").write_text('{"traceEvents": [{"ph": "X", "ts": "soon"}]}') and None or d / "args.json",
                               "$.traceEvents[0].ts"),
}


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_fails_with_one_line_naming_the_file(tmp_path, kind):
    make, message = BAD_INPUTS[kind]
    db = tmp_path / "o.duckdb"
    assert observatory("ingest", str(SMALL), db=db).returncode == 0
    before = store_state(Store(db))
    path = make(tmp_path)
    done = observatory("ingest", str(path), db=db)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert str(path) in lines[0] and message in lines[0]
    assert store_state(Store(db)) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path):
    path = tmp_path / "secret.json"
    path.write_text('{"traceEvents": []}')
    path.chmod(0)
    done = observatory("ingest", str(path), db=tmp_path / "o.duckdb")
    assert done.returncode == 1 and "permission denied" in done.stderr


def test_folder_with_one_bad_file_imports_the_others(tmp_path):
    folder = tmp_path / "logdir" / "plugins" / "profile" / "run1"
    folder.mkdir(parents=True)
    for trace in (SMALL, TRACES / "hta/trace_filter/sampled_rank-1.json.gz"):
        (folder / trace.name).write_bytes(trace.read_bytes())
    bad = folder / "broken.pt.trace.json"
    bad.write_text('{"traceEvents": [{"ph": "X"')
    done = observatory("ingest", str(tmp_path / "logdir"), "--format", "json", db=tmp_path / "o.duckdb")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert len(report["runs"]) == 2 and all(r["created"] for r in report["runs"])
    assert len(report["errors"]) == 1 and str(bad) in report["errors"][0]
    assert str(bad) in done.stderr


def test_failure_mid_import_leaves_nothing(store, monkeypatch):
    import store.ingest as ingest_module

    def explode(*args, **kwargs):
        raise MemoryError("simulated out of memory while writing")

    monkeypatch.setattr(ingest_module, "_write_events", explode)
    before = store_state(store)
    with pytest.raises(MemoryError):
        ingest_file(store, SMALL)
    assert store_state(store) == before


def test_a_reader_holding_the_store_open_does_not_block_an_import(store):
    ingest_file(store, SMALL)
    with store.connect() as reader:  # e.g. the dashboard
        assert reader.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
        done = observatory("ingest", str(TRACES / "hta/trace_filter/sampled_rank-1.json.gz"), db=store.path)
        assert done.returncode == 0, done.stderr
        assert reader.execute("SELECT count(*) FROM runs").fetchone()[0] == 2  # sees the new run on the next query


def test_cli_ingest_json_lists_run_ids_and_sql_reads_them(tmp_path):
    db = tmp_path / "o.duckdb"
    done = observatory("ingest", str(SMALL), "--format", "json", "--label", "smoke", db=db)
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["runs"][0]["run_id"]
    summaries = sorted(p.name.split("-")[0] for p in (Store(db).parts / "summaries").glob("*.parquet"))
    assert summaries == ["op_time_by_category", "runs"], "ingest leaves the dashboard's summaries up to date"
    sql = observatory("sql", f"SELECT label, rank FROM runs WHERE run_id = '{run_id}'", "--format", "json", db=db)
    assert json.loads(sql.stdout) == [{"label": "smoke", "rank": 0}]
    assert observatory("sql", "SELEC 1", db=db).returncode == 1
    assert observatory("report", "no-such-run", db=db).returncode == 1


def test_schema_doc_lists_every_column():
    from store.schema import TABLES

    doc = (ROOT / "docs" / "schema.md").read_text()
    for table, schema in TABLES.items():
        assert f"### {table}" in doc, table
        for name in schema.names:
            assert f"`{name}`" in doc, f"{table}.{name} is not documented in docs/schema.md"


def test_parts_written_by_an_older_schema_stay_readable(store):
    """An older version wrote parts without some of today's columns: they read as NULL."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from store.schema import TABLES

    run_id = ingest_file(store, SMALL).run_id
    old = store.runs_dir / "t-older-version"
    old.mkdir()
    runs = pa.Table.from_pylist([{"run_id": "t-older-version", "source": "import", "status": "ok"}])
    pq.write_table(runs, old / "runs.parquet")
    events = pq.read_table(store.runs_dir / run_id / "events.parquet").drop_columns(["self_us", "category"])
    pq.write_table(events.set_column(0, "run_id", pa.array(["t-older-version"] * events.num_rows)), old / "events.parquet")
    with store.connect() as con:
        assert [c[0] for c in con.execute("DESCRIBE events").fetchall()] == TABLES["events"].names
        nulls = con.execute("SELECT count(*), count(self_us), count(category) FROM events WHERE run_id = 't-older-version'").fetchone()
        assert nulls[0] == events.num_rows and nulls[1:] == (0, 0)
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 2


def test_catalog_is_rebuilt_when_the_schema_version_changes(store, monkeypatch):
    import duckdb

    with duckdb.connect(str(store.catalog_path)) as con:
        con.execute("UPDATE observatory_meta SET schema_version = 0")
    assert not store._catalog_current()
    store.ensure()
    assert store._catalog_current()


# -- invalid UTF-8: repaired with a warning, never stored ----------------------------------------------
def _with_invalid_utf8(tmp_path: Path, where: str, bad: bytes = b"\xff") -> Path:
    """A real trace with one byte inside a string replaced: in an event's args, or in its name."""
    text = gzip.open(SMALL, "rb").read()
    anchor = {"args": b'"Input type": ["', "name": b'"name": "'}[where]
    at = text.index(anchor) + len(anchor) + 1
    path = tmp_path / f"bad-{where}.json"
    path.write_bytes(text[:at] + bad + text[at + len(bad) :])
    return path


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("where", ["args", "name"])
def test_invalid_utf8_is_replaced_with_a_warning_and_every_reader_works(tmp_path, monkeypatch, where, streamed):
    from readers import check_run_readers

    if streamed:
        monkeypatch.setattr(trace_reader, "STREAM_THRESHOLD_BYTES", 1000)
    path = _with_invalid_utf8(tmp_path, where)
    store = Store(tmp_path / "o.duckdb")
    result = ingest_file(store, path)
    offset = path.read_bytes().index(b"\xff")
    assert result.created and result.warnings == [
        f"1 invalid UTF-8 byte sequence(s) replaced with U+FFFD (the first at byte offset {offset} of the decompressed JSON)"
    ]
    check_run_readers(store, result.run_id)
    with store.connect() as con:
        column = "args" if where == "args" else "name"
        hits = con.execute(f"SELECT count(*) FROM events WHERE contains({column}, '\ufffd')").fetchone()[0]
        environment = json.loads(con.execute("SELECT environment FROM runs").fetchone()[0])
    assert hits == 1 and environment["import_warnings"] == result.warnings


def test_ingest_warns_naming_the_file_and_report_works(tmp_path):
    path = _with_invalid_utf8(tmp_path, "args", b"\xc3")
    db = tmp_path / "o.duckdb"
    done = observatory("ingest", str(path), db=db)
    assert done.returncode == 0, done.stderr
    offset = path.read_bytes().index(b"\xc3")
    assert done.stderr.strip() == f"observatory ingest: warning: {path}: 1 invalid UTF-8 byte sequence(s) replaced with U+FFFD " \
        f"(the first at byte offset {offset} of the decompressed JSON)"
    for command in (["report"], ["report", "--format", "json"], ["sql", "SELECT args FROM events", "--format", "json"]):
        done = observatory(*command, db=db)
        assert done.returncode == 0, (command, done.stderr)


def test_a_part_readers_could_not_read_is_never_committed(store):
    import pyarrow as pa

    from store.db import StoreError

    bad = pa.LargeStringArray.from_buffers(1, pa.array([0, 1], pa.int64()).buffers()[1], pa.py_buffer(b"\xff")).cast(pa.string())
    with store.stage() as staged, pytest.raises(StoreError, match="refusing to store a part readers could not read"):
        staged.write("metrics", pa.table({"run_id": ["r-x"], "name": bad}))
    assert store_state(store) == (["_empty"], [])


def test_progress_follows_reading_then_writing(store, monkeypatch):
    monkeypatch.setattr(trace_reader, "STREAM_THRESHOLD_BYTES", 1000)
    monkeypatch.setattr(trace_reader, "BATCH_EVENTS", 700)
    seen = []
    result = ingest_file(store, SMALL, progress=lambda stage, done, total: seen.append((stage, done, total)))
    stages = [stage for stage, _, _ in seen]
    assert stages == sorted(stages, key=["reading", "writing"].index) and {"reading", "writing"} == set(stages)
    assert seen[-1] == ("writing", result.event_count, result.event_count), "the bar ends when the last part is written"
    reading = [s for s in seen if s[0] == "reading"]
    assert reading[-1][1:] == (SMALL.stat().st_size, SMALL.stat().st_size) and len(reading) > 1


def test_a_schema_1_store_reads_under_schema_2_names(store):
    """Parts an older version wrote: events.step, attention_calls.step, latency phase 'step', no settings_key."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    run_id = ingest_file(store, SMALL).run_id
    old = store.runs_dir / "r-schema-1"
    old.mkdir()
    config = '{"workload": "llm-decode", "steps": 6}'
    pq.write_table(pa.Table.from_pylist([{"run_id": "r-schema-1", "source": "profile", "status": "ok", "workload": "llm-decode",
                                          "variant": "eager", "preset": "tiny", "batch": 1, "dtype": "float32", "device": "cpu",
                                          "config": config}]), old / "runs.parquet")
    events = pq.read_table(store.runs_dir / run_id / "events.parquet").drop_columns(["part"]).rename_columns(
        ["step" if c == "profiler_step" else c for c in pq.read_schema(store.runs_dir / run_id / "events.parquet").names if c != "part"])
    pq.write_table(events.set_column(0, "run_id", pa.array(["r-schema-1"] * events.num_rows)), old / "events.parquet")
    pq.write_table(pa.table({"run_id": ["r-schema-1"] * 2, "phase": ["step", "prefill"], "repeat": [0, 0], "latency_us": [10.0, 4.0]}),
                   old / "latency.parquet")
    pq.write_table(pa.table({"run_id": ["r-schema-1"], "step": pa.array([3], pa.int32()), "q_len": [1], "kv_len": [7]}),
                   old / "attention_calls.parquet")
    with store.connect() as con:
        steps = con.execute("SELECT count(profiler_step) FROM events WHERE run_id = 'r-schema-1'").fetchone()[0]
        assert steps == con.execute(f"SELECT count(profiler_step) FROM events WHERE run_id = '{run_id}'").fetchone()[0] > 0
        assert con.execute("SELECT phase, role FROM latency ORDER BY latency_us DESC").fetchall() == [("iteration", "iteration"), ("prefill", "part")]
        assert con.execute("SELECT model_call FROM attention_calls").fetchall() == [(3,)]
        key = con.execute("SELECT settings_key FROM runs WHERE run_id = 'r-schema-1'").fetchone()[0]
        assert json.loads(key) == {"preset": "tiny", "batch": 1, "dtype": "float32", "device": "cpu", "legacy_steps": 6}
        assert "step" not in [c[0] for c in con.execute("DESCRIBE events").fetchall()]
