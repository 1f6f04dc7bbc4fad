"""Import one Kineto/Chrome trace into the store: read, enrich, write parts, commit.

Every trace goes through here: a trace imported from a cluster and a run profiled on this
machine alike (profiled runs pass their own run row and extra tables).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from store.db import StagedRun, Store, readable
from store.enrich import Narrow, category_rules_path, global_columns, load_rules, local_columns
from store.schema import SCHEMA_VERSION, TABLES
from store.trace_reader import TraceHeader, read_trace

TRACE_SUFFIXES = (".json", ".json.gz")

# Arrow's default pool (mimalloc) keeps freed batches for reuse; the import frees one batch
# after another, and the system allocator gives that memory back: ~15% lower peak RSS.
pa.set_memory_pool(pa.system_memory_pool())


@dataclass
class IngestResult:
    path: Path
    run_id: str
    created: bool  # False: the same content was already in the store
    event_count: int = 0
    warnings: list[str] = field(default_factory=list)  # what the import repaired, one line each


@dataclass
class RunInfo:
    """Fields a caller knows about the run beyond what the trace says (profiled runs)."""

    run_id: str | None = None
    fields: dict = field(default_factory=dict)
    extra_tables: dict[str, pa.Table] = field(default_factory=dict)
    owns_trace: bool = False  # the trace was made for this run: it moves into the run's folder
    parts: tuple[str, ...] = ()  # the run's part names: the events inside each part's range are labelled with it


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


class _BatchStore:
    """Batches between the two passes: in memory for ordinary traces, on disk for huge ones."""

    def __init__(self, spill: Path | None):
        self.spill, self.batches, self.writer = spill, [], None

    def add(self, batch: pa.RecordBatch) -> None:
        if self.spill is None:
            self.batches.append(batch)
            return
        if self.writer is None:
            self.spill.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.spill, batch.schema, compression="lz4")
        self.writer.write_batch(batch)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        if self.spill is None:
            yield from self.batches
            return
        if self.writer is not None:
            self.writer.close()
            yield from pq.ParquetFile(self.spill).iter_batches(batch_size=200_000)


def _device_summary(header: TraceHeader, cats: set[str], runtime_names_hip: bool, device_events: int) -> dict:
    device = "cpu"
    if any(c.startswith("mtia") for c in cats):
        device = "mtia"
    elif device_events:
        device = "rocm" if runtime_names_hip else "cuda"
    names = [p.get("name") for p in header.device_properties if isinstance(p, dict) and p.get("name")]
    info = header.distributed_info if isinstance(header.distributed_info, dict) else {}

    def as_int(value):
        try:
            return int(value)
        except (TypeError, ValueError):
            return None

    return {
        "device": device,
        "device_name": names[0] if names and device != "cpu" else None,
        "rank": as_int(info.get("rank")),
        "world_size": as_int(info.get("world_size")),
    }


def _bytes_read(path: Path, progress: Callable[[str, int, int], None] | None) -> Callable[[int], None] | None:
    """The reader's callback (bytes read since its last call) as `progress("reading", done, total)`."""
    if progress is None:
        return None
    total, done = path.stat().st_size, 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        progress("reading", done, total)

    return advance


def _write_events(staged: StagedRun, run_id: str, rank, batches: Iterable[pa.RecordBatch], extra: dict[str, np.ndarray],
                  parts: tuple[str, ...] = (), progress: Callable[[str, int, int], None] | None = None) -> None:
    schema = TABLES["events"]
    offset, total = 0, len(extra["profiler_step"])
    with pq.ParquetWriter(staged.path_for("events"), schema, compression="lz4") as writer:
        for batch in batches:
            n = batch.num_rows
            columns = {name: batch.column(name) for name in batch.schema.names}
            columns["run_id"] = pa.array([run_id] * n, pa.string()) if n else pa.array([], pa.string())
            columns["rank"] = pa.nulls(n, pa.int32()) if rank is None else pa.array(np.full(n, rank, dtype=np.int32))
            columns["profiler_step"] = pc.cast(_nullable(extra["profiler_step"][offset : offset + n], -1), pa.int32())
            columns["depth"] = pc.cast(_nullable(extra["depth"][offset : offset + n], -1), pa.int32())
            columns["self_us"] = pa.array(extra["self_us"][offset : offset + n], pa.float64(), from_pandas=True)
            codes = extra["part"][offset : offset + n]
            columns["part"] = pa.array(np.array(parts + ("",), dtype=object)[codes], pa.string(), mask=codes < 0)
            in_attention = pa.array(extra["attention_scope"][offset : offset + n])
            columns["category"] = pc.if_else(in_attention, pa.scalar("attention"), columns["category"])
            offset += n
            if progress is not None:
                progress("writing", offset, total)
            writer.write_table(readable("events", pa.Table.from_arrays([columns[f.name].cast(f.type) for f in schema], schema=schema)))


def _nullable(values: np.ndarray, missing: int) -> pa.Array:
    return pa.array(values, mask=values == missing)


def run_row(run_id: str, **fields) -> dict:
    """A `runs` row: every column present, defaults for a successful run stored now."""
    row = {name: None for name in TABLES["runs"].names}
    row.update(run_id=run_id, stored_at=datetime.now(timezone.utc), status="ok", config="{}", schema_version=SCHEMA_VERSION)
    unknown = set(fields) - set(row)
    if unknown:
        raise ValueError(f"runs: unknown columns {sorted(unknown)}")
    row.update(fields)
    return row


def record_failed_run(store: Store, run_id: str, error: str, extra_tables: dict[str, pa.Table] | None = None, **fields) -> bool:
    """Store a run that produced no trace (an exception, a crash, out of memory) with its error."""
    with store.stage() as staged:
        staged.write("runs", pa.Table.from_pylist([run_row(run_id, status="failed", error=error, event_count=0, **fields)]))
        for table, data in (extra_tables or {}).items():
            staged.write(table, with_run_id(data, run_id))
        return staged.commit(run_id)


def with_run_id(data: pa.Table, run_id: str) -> pa.Table:
    if "run_id" in data.column_names:
        return data
    return data.append_column("run_id", pa.array([run_id] * data.num_rows, pa.string()))


def ingest_file(
    store: Store,
    path: Path,
    label: str | None = None,
    run: RunInfo | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> IngestResult:
    """Import one trace file as one run; all-or-nothing, and a no-op for content already stored.

    `progress(stage, done, total)` follows a streamed import: stage "reading" counts the file's
    bytes, then "writing" counts events written to the run's parts.
    """
    run = run or RunInfo()
    path = Path(path)
    rules = category_rules_path()
    load_rules(rules)  # a broken rules file fails before any work
    header, batches = read_trace(path, _bytes_read(path, progress))  # raises TraceError naming the file
    sha = file_sha256(path)
    run_id = run.run_id or f"t-{sha[:16]}"
    if store.has_run(run_id):
        return IngestResult(path, run_id, created=False)

    with store.stage() as staged:
        held = _BatchStore(staged.scratch / "events.parquet" if header.streamed else None)
        narrow, cats, hip, device_events, count, first_ts = Narrow(parts=tuple(run.parts)), set(), False, 0, 0, None
        for batch in batches:  # pass 1: per-batch columns, and the narrow columns pass 2 needs
            local = local_columns(batch, rules)
            narrow.add(batch, local)
            cats.update(c for c in pc.unique(local["cat"]).to_pylist() if c)
            device_events += pc.sum(local["on_device"]).as_py() or 0
            hip = hip or bool(pc.any(pc.starts_with(pc.fill_null(batch.column("name"), ""), "hip")).as_py())
            low = pc.min(batch.column("ts_us")).as_py()
            first_ts = low if first_ts is None or (low is not None and low < first_ts) else first_ts
            count += batch.num_rows
            columns = {name: batch.column(name) for name in batch.schema.names if name in TABLES["events"].names}
            columns.update(local, cat_raw=batch.column("cat"), event_idx=pa.array(np.arange(count - batch.num_rows, count)))
            held.add(pa.RecordBatch.from_pydict(columns))
        extra = global_columns(narrow)  # pass 2: steps and nesting across the whole trace
        del narrow
        fields = _device_summary(header, cats, hip, device_events)
        rank = run.fields.get("rank", fields["rank"])
        _write_events(staged, run_id, rank, held, extra, tuple(run.parts), progress)
        started = run.fields.get("started_at") or _wall_clock(first_ts)
        warnings = [w for w in (header.repair.warning(),) if w]
        row = run_row(
            run_id,
            source="import",
            source_path=str(path.absolute()),
            content_sha256=sha,
            label=label,
            environment=json.dumps({"trace_schema_version": header.schema_version, "device_properties": header.device_properties,
                                    "import_warnings": warnings}),
            trace_path=str(path.absolute()),
            event_count=count,
            **fields,
            started_at=started,
        )
        for table, data in run.extra_tables.items():
            staged.write(table, with_run_id(data, run_id))
        row.update(run.fields)
        if run.owns_trace:
            row["trace_path"] = row["source_path"] = str(store.runs_dir / run_id / staged.attach(path))
        staged.write("runs", pa.Table.from_pylist([row]))
        created = staged.commit(run_id)
    return IngestResult(path, run_id, created=created, event_count=count, warnings=warnings)


# Kineto timestamps are microseconds since the Unix epoch; a trace with others (relative clocks,
# a corrupt value) has no start time rather than an impossible one.
_EPOCH_RANGE_US = (1e15, 4.1e15)  # 2001 to 2099


def _wall_clock(ts_us: float | None) -> datetime | None:
    if ts_us is None or not _EPOCH_RANGE_US[0] < ts_us < _EPOCH_RANGE_US[1]:
        return None
    return datetime.fromtimestamp(ts_us / 1e6, tz=timezone.utc)
