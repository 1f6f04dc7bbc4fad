"""The store's tables: one place that says every column, its type and unit.

docs/schema.md documents the same tables for users; tests check the two agree.
"""
from __future__ import annotations

import pyarrow as pa

# 1: first release. Bump when a column is added; older parts stay readable because views
# read parts with union_by_name and an empty part of the current schema fills new columns.
SCHEMA_VERSION = 1

TABLES: dict[str, pa.Schema] = {
    "runs": pa.schema(
        [
            ("run_id", pa.string()),
            ("source", pa.string()),  # 'import' (a trace from elsewhere) or 'profile' (run here)
            ("source_path", pa.string()),
            ("content_sha256", pa.string()),
            ("label", pa.string()),
            ("workload", pa.string()),
            ("variant", pa.string()),
            ("preset", pa.string()),
            ("batch", pa.int32()),
            ("dtype", pa.string()),
            ("device", pa.string()),  # cpu | cuda | rocm | mtia
            ("device_name", pa.string()),
            ("host", pa.string()),
            ("rank", pa.int32()),
            ("world_size", pa.int32()),
            ("started_at", pa.timestamp("us", tz="UTC")),
            ("stored_at", pa.timestamp("us", tz="UTC")),
            ("status", pa.string()),  # ok | failed
            ("error", pa.string()),
            ("config", pa.string()),  # JSON
            ("environment", pa.string()),  # JSON: torch, cuda, driver, device, git sha, ...
            ("trace_path", pa.string()),
            ("event_count", pa.int64()),
            ("schema_version", pa.int32()),
        ]
    ),
    "events": pa.schema(
        [
            ("run_id", pa.string()),
            ("event_idx", pa.int64()),  # position in the trace file
            ("rank", pa.int32()),
            ("ph", pa.string()),
            ("cat", pa.string()),  # normalised: legacy 'Kernel' -> 'kernel', 'Operator' -> 'cpu_op', ...
            ("cat_raw", pa.string()),
            ("name", pa.string()),
            ("pid", pa.string()),
            ("tid", pa.string()),
            ("ts_us", pa.float64()),
            ("dur_us", pa.float64()),
            ("on_device", pa.bool_()),  # runs on the accelerator (kernel, memcpy, memset, ...)
            ("device", pa.int32()),
            ("stream", pa.int64()),
            ("correlation", pa.int64()),
            ("external_id", pa.int64()),
            ("flow_id", pa.string()),
            ("step", pa.int32()),  # ProfilerStep#N around the event (device events: of their launch)
            ("depth", pa.int32()),  # nesting depth among CPU operators on their thread
            ("self_us", pa.float64()),  # CPU operators: duration minus child operators
            ("category", pa.string()),  # operator category (store/category_rules.csv)
            ("args", pa.string()),  # JSON
        ]
    ),
    # Tables below are filled by runs profiled here (issue 3); imports leave them empty.
    "latency": pa.schema(
        [
            ("run_id", pa.string()),
            ("phase", pa.string()),  # 'step' or a named phase such as 'prefill', 'decode'
            ("repeat", pa.int32()),
            ("latency_us", pa.float64()),
            ("items", pa.int64()),
            ("item_unit", pa.string()),
            ("items_per_s", pa.float64()),
            ("start_ts_us", pa.float64()),
        ]
    ),
    "attention_calls": pa.schema(
        [
            ("run_id", pa.string()),
            ("iteration", pa.int32()),
            ("call_index", pa.int64()),
            ("step", pa.int32()),
            ("module_path", pa.string()),
            ("module_class", pa.string()),
            ("family", pa.string()),
            ("implementation", pa.string()),
            ("shape_source", pa.string()),
            ("kind", pa.string()),
            ("axis", pa.string()),
            ("batch", pa.int64()),
            ("heads", pa.int64()),
            ("kv_heads", pa.int64()),
            ("head_dim", pa.int64()),
            ("q_len", pa.int64()),
            ("kv_len", pa.int64()),
        ]
    ),
    "telemetry": pa.schema(
        [
            ("run_id", pa.string()),
            ("ts_us", pa.float64()),
            ("gpu_index", pa.int32()),
            ("gpu_name", pa.string()),
            ("gpu_util_pct", pa.float64()),
            ("memory_used_bytes", pa.int64()),
            ("memory_total_bytes", pa.int64()),
            ("power_w", pa.float64()),
            ("sm_clock_mhz", pa.float64()),
            ("temperature_c", pa.float64()),
        ]
    ),
    "metrics": pa.schema(
        [
            ("run_id", pa.string()),
            ("name", pa.string()),
            ("value", pa.float64()),
            ("unit", pa.string()),
            ("source", pa.string()),
        ]
    ),
}


def empty_table(name: str) -> pa.Table:
    return TABLES[name].empty_table()


def conform(name: str, table: pa.Table) -> pa.Table:
    """Cast a table to the declared schema (missing columns null); unknown columns are an error."""
    schema = TABLES[name]
    unknown = set(table.column_names) - set(schema.names)
    if unknown:
        raise ValueError(f"table {name!r}: unknown columns {sorted(unknown)}; expected {schema.names}")
    columns = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)
