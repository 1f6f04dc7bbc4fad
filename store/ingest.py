"""Import one Kineto/Chrome trace into the store: read, enrich in DuckDB, write parts, commit.

Every trace goes through here: a trace imported from a cluster and a run profiled on this
machine alike (profiled runs pass their own run row and extra tables).
"""
from __future__ import annotations

import hashlib
import json
import os

from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable

import duckdb
import pyarrow as pa

from store.db import Store
from store.nesting import cpu_op_nesting
from store.schema import SCHEMA_VERSION, TABLES
from store.trace_reader import TraceHeader, read_trace

LEGACY_CATEGORIES = {
    "Operator": "cpu_op",
    "Runtime": "cuda_runtime",
    "Driver": "cuda_driver",
    "Kernel": "kernel",
    "Memcpy": "gpu_memcpy",
    "Memset": "gpu_memset",
    "Python": "python_function",
}
DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset", "gpu_user_annotation", "mtia_ccp_events")
LAUNCH_CATS = ("cuda_runtime", "cuda_driver", "mtia_runtime")
OPERATOR_CATS = ("cpu_op", "kernel", "gpu_memcpy", "gpu_memset", "mtia_ccp_events")
TRACE_SUFFIXES = (".json", ".json.gz")
STAGING_MEMORY_LIMIT = "1GB"


@dataclass
class IngestResult:
    path: Path
    run_id: str
    created: bool  # False: the same content was already in the store
    event_count: int = 0


@dataclass
class RunInfo:
    """Fields a caller knows about the run beyond what the trace says (profiled runs)."""

    run_id: str | None = None
    fields: dict = field(default_factory=dict)
    extra_tables: dict[str, pa.Table] = field(default_factory=dict)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 * 1024**2):
            digest.update(chunk)
    return digest.hexdigest()


def find_traces(path: Path) -> list[Path]:
    """A trace file, or every trace file under a folder (TensorBoard logdirs, multi-rank folders)."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(TRACE_SUFFIXES))
    return [path]


def category_rules_path() -> Path:
    user = os.environ.get("OBSERVATORY_CATEGORY_RULES")
    if user:
        return Path(user)
    return Path(str(resources.files("store") / "category_rules.csv"))


def _load_rules(con: duckdb.DuckDBPyConnection) -> None:
    path = category_rules_path()
    if not path.is_file():
        raise ValueError(f"OBSERVATORY_CATEGORY_RULES={path}: no such file")
    con.execute(
        "CREATE TEMP TABLE rules AS SELECT * FROM read_csv(?, header = true, "
        "columns = {'priority': 'INTEGER', 'category': 'VARCHAR', 'applies_to': 'VARCHAR', 'name_regex': 'VARCHAR'})",
        [str(path)],
    )


def _quoted(values: Iterable[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


ENRICH_SQL = f"""
CREATE TEMP TABLE ev AS
SELECT event_idx, ph, coalesce(legacy.cat, raw.cat) AS cat, raw.cat AS cat_raw, name, pid, tid, ts_us, dur_us, flow_id, args,
       coalesce(legacy.cat, raw.cat) IN ({_quoted(DEVICE_CATS)}) AS on_device
FROM raw LEFT JOIN legacy ON raw.cat = legacy.raw_cat;

CREATE TEMP TABLE ids AS
SELECT event_idx,
       TRY_CAST(json_extract_string(args, '$.correlation') AS BIGINT) AS correlation,
       TRY_CAST(coalesce(json_extract_string(args, '$."External id"'), json_extract_string(args, '$."external id"')) AS BIGINT) AS external_id,
       CASE WHEN on_device THEN coalesce(TRY_CAST(json_extract_string(args, '$.device') AS INTEGER), TRY_CAST(pid AS INTEGER)) END AS device,
       CASE WHEN on_device THEN coalesce(TRY_CAST(json_extract_string(args, '$.stream') AS BIGINT),
                                         TRY_CAST(regexp_extract(tid, '(\\d+)$', 1) AS BIGINT)) END AS stream
FROM ev WHERE args IS NOT NULL OR on_device;

CREATE TEMP TABLE steps AS
SELECT DISTINCT TRY_CAST(regexp_extract(name, 'ProfilerStep#(\\d+)', 1) AS INTEGER) AS step, ts_us AS start_us, ts_us + dur_us AS end_us
FROM ev WHERE ph = 'X' AND NOT on_device AND name LIKE 'ProfilerStep#%';

CREATE TEMP TABLE host_step AS
SELECT e.event_idx, s.step
FROM (SELECT event_idx, ts_us FROM ev WHERE NOT on_device AND ts_us IS NOT NULL) e
ASOF JOIN steps s ON e.ts_us >= s.start_us
WHERE e.ts_us <= s.end_us;

CREATE TEMP TABLE launch_step AS
SELECT i.correlation, any_value(h.step) AS step
FROM ev JOIN ids i USING (event_idx) JOIN host_step h USING (event_idx)
WHERE ev.cat IN ({_quoted(LAUNCH_CATS)}) AND i.correlation IS NOT NULL
GROUP BY i.correlation;

CREATE TEMP TABLE name_category AS
SELECT n.name, n.on_device, coalesce(arg_min(r.category, r.priority), 'other') AS category
FROM (SELECT DISTINCT name, on_device FROM ev WHERE ph = 'X' AND cat IN ({_quoted(OPERATOR_CATS)}) AND name IS NOT NULL) n
LEFT JOIN rules r
  ON (r.applies_to = 'any' OR (r.applies_to = 'device') = n.on_device) AND regexp_matches(n.name, r.name_regex)
GROUP BY n.name, n.on_device;
"""

EVENTS_SELECT = f"""
SELECT $run_id AS run_id, ev.event_idx, $rank AS rank, ev.ph, ev.cat, ev.cat_raw, ev.name, ev.pid, ev.tid, ev.ts_us, ev.dur_us,
       ev.on_device, i.device, i.stream, i.correlation, i.external_id, ev.flow_id,
       CASE WHEN ev.on_device THEN ls.step ELSE hs.step END AS step,
       n.depth, n.self_us,
       CASE WHEN ev.cat IN ('gpu_memcpy', 'gpu_memset') THEN 'memory'
            WHEN ev.ph = 'X' AND ev.cat IN ({_quoted(OPERATOR_CATS)}) THEN nc.category END AS category,
       ev.args
FROM ev
LEFT JOIN ids i USING (event_idx)
LEFT JOIN host_step hs USING (event_idx)
LEFT JOIN launch_step ls ON ls.correlation = i.correlation
LEFT JOIN nesting n USING (event_idx)
LEFT JOIN name_category nc ON nc.name = ev.name AND nc.on_device = ev.on_device
ORDER BY ev.event_idx
"""


def _load_raw(con: duckdb.DuckDBPyConnection, batches: Iterable[pa.RecordBatch]) -> int:
    count = 0
    for batch in batches:
        batch = batch.append_column("event_idx", pa.array(range(count, count + batch.num_rows), pa.int64()))
        con.register("batch_view", batch)
        if count == 0:
            con.execute("CREATE TEMP TABLE raw AS SELECT * FROM batch_view")
        else:
            con.execute("INSERT INTO raw SELECT * FROM batch_view")
        con.unregister("batch_view")
        count += batch.num_rows
    if count == 0:
        con.execute(
            "CREATE TEMP TABLE raw (ph VARCHAR, cat VARCHAR, name VARCHAR, pid VARCHAR, tid VARCHAR, ts_us DOUBLE, "
            "dur_us DOUBLE, flow_id VARCHAR, args VARCHAR, event_idx BIGINT)"
        )
    return count


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _trace_run_fields(con: duckdb.DuckDBPyConnection, header: TraceHeader) -> dict:
    """What the trace itself says about the run: device, rank, start."""
    device_events, mtia, rocm, first_ts = con.execute(
        """SELECT count(*) FILTER (WHERE on_device), bool_or(cat LIKE 'mtia%'),
                  bool_or(name LIKE 'hip%' AND cat = 'cuda_runtime'), min(ts_us)
           FROM ev"""
    ).fetchone()
    device = "cpu"
    if mtia:
        device = "mtia"
    elif device_events:
        device = "rocm" if rocm else "cuda"
    names = [p.get("name") for p in header.device_properties if isinstance(p, dict) and p.get("name")]
    info = header.distributed_info if isinstance(header.distributed_info, dict) else {}
    started = None
    if first_ts and first_ts > 1e15:  # microseconds since the epoch (Kineto); else a relative clock
        started = datetime.fromtimestamp(first_ts / 1e6, tz=timezone.utc)
    return {
        "device": device,
        "device_name": names[0] if names and device != "cpu" else None,
        "rank": _int_or_none(info.get("rank")),
        "world_size": _int_or_none(info.get("world_size")),
        "started_at": started,
    }


def ingest_file(
    store: Store,
    path: Path,
    label: str | None = None,
    run: RunInfo | None = None,
    progress: Callable[[int], None] | None = None,
) -> IngestResult:
    """Import one trace file as one run; all-or-nothing, and a no-op for content already stored."""
    run = run or RunInfo()
    path = Path(path)
    header, batches = read_trace(path, progress)  # raises TraceError naming the file before any work
    sha = file_sha256(path)
    run_id = run.run_id or f"t-{sha[:16]}"
    if store.has_run(run_id):
        return IngestResult(path, run_id, created=False)

    with store.stage() as staged:
        con = duckdb.connect(config={"memory_limit": STAGING_MEMORY_LIMIT, "temp_directory": str(staged.dir / "spill")})
        try:
            count = _load_raw(con, batches)
            con.execute("CREATE TEMP TABLE legacy (raw_cat VARCHAR, cat VARCHAR)")
            con.executemany("INSERT INTO legacy VALUES (?, ?)", list(LEGACY_CATEGORIES.items()))
            _load_rules(con)
            con.execute(ENRICH_SQL)
            con.register("nesting", cpu_op_nesting(con))
            fields = _trace_run_fields(con, header)
            rank = run.fields.get("rank", fields["rank"])
            con.execute(
                f"COPY ({EVENTS_SELECT}) TO '{staged.path_for('events')}' (FORMAT parquet, COMPRESSION zstd)",
                {"run_id": run_id, "rank": rank},
            )
        finally:
            con.close()
        row = {
            **{name: None for name in TABLES["runs"].names},
            "run_id": run_id,
            "source": "import",
            "source_path": str(path.absolute()),
            "content_sha256": sha,
            "label": label,
            "host": None,
            "stored_at": datetime.now(timezone.utc),
            "status": "ok",
            "config": json.dumps({}),
            "environment": json.dumps({"trace_schema_version": header.schema_version, "device_properties": header.device_properties}),
            "trace_path": str(path.absolute()),
            "event_count": count,
            "schema_version": SCHEMA_VERSION,
            **fields,
            **run.fields,
        }
        staged.write("runs", pa.Table.from_pylist([row]))
        for table, data in run.extra_tables.items():
            staged.write(table, data.append_column("run_id", pa.array([run_id] * data.num_rows, pa.string())) if "run_id" not in data.column_names else data)
        created = staged.commit(run_id)
    return IngestResult(path, run_id, created=created, event_count=count)


