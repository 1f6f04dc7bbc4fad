"""The store's tables: one place that says every column, its type and unit.

docs/schema.md documents the same tables for users; tests check the two agree.
"""
from __future__ import annotations

import pyarrow as pa

# 1: first release.
# 2: runs.kind, runs.params, runs.settings_key; tables params and numerics; "step" named once:
#    events.step -> profiler_step, attention_calls.step -> model_call, latency phase 'step' -> 'iteration'.
# Bump when a column is added or renamed; older parts stay readable because views read parts
# with union_by_name, an empty part of the current schema fills new columns, and RENAMED maps
# an old column onto its new name.
SCHEMA_VERSION = 2

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
            ("workload_kind", pa.string()),  # inference | training | numerics (profiled runs)
            ("params", pa.string()),  # JSON: the workload's parameters, every one (defaults included)
            ("settings_key", pa.string()),  # JSON: what makes two runs' work equal but the variant
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
            ("profiler_step", pa.int32()),  # ProfilerStep#N around the event (device events: of their launch)
            ("depth", pa.int32()),  # nesting depth among CPU operators on their thread
            ("self_us", pa.float64()),  # CPU operators: duration minus child operators
            ("category", pa.string()),  # operator category (store/category_rules.csv)
            ("args", pa.string()),  # JSON
            ("part", pa.string()),  # profiled runs: the part of the iteration the event lies in (forward, unet, decode, ...)
        ]
    ),
    # Tables below are filled by runs profiled here (issue 3); imports leave them empty.
    "latency": pa.schema(
        [
            ("run_id", pa.string()),
            ("phase", pa.string()),  # 'iteration' (the whole), a part ('prefill', 'unet', ...) or 'unmarked'
            ("role", pa.string()),  # iteration | part | unmarked (in no part) | background (overlaps, not in the sum)
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
            ("model_call", pa.int32()),
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
    "params": pa.schema(
        [
            ("run_id", pa.string()),
            ("name", pa.string()),
            ("value", pa.string()),  # as the workload declares it: '8', 'true', 'bf16'
            ("number", pa.float64()),  # the value as a number (ints, floats, booleans as 0/1); NULL for text
            ("type", pa.string()),  # int | float | bool | str
        ]
    ),
    "numerics": pa.schema(
        [
            ("run_id", pa.string()),
            ("subject", pa.string()),  # what was measured, e.g. an attention implementation
            ("metric", pa.string()),  # e.g. max_abs, mean_abs, wasserstein
            ("value", pa.float64()),
            ("position", pa.int64()),  # where in a series (training step, attention call); NULL for one figure
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


# Columns an older schema wrote under another name: {table: {old name: new name}}. The empty
# part carries both, so every view can read `coalesce(new, old) AS new`.
RENAMED: dict[str, dict[str, str]] = {
    "events": {"step": "profiler_step"},
    "attention_calls": {"step": "model_call"},
}


def empty_schema(name: str) -> pa.Schema:
    """The table's schema plus its renamed columns' old names (what the `_empty` part holds)."""
    schema = TABLES[name]
    for old, new in RENAMED.get(name, {}).items():
        schema = schema.append(pa.field(old, schema.field(new).type))
    return schema


def empty_table(name: str) -> pa.Table:
    return empty_schema(name).empty_table()


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
