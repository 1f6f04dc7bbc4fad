"""GPU temporal breakdown per rank: idle, compute and non-compute time within the kernel span.

Two definitions of which device events count (`definition` column); both classify them the same
way (HTA's get_kernel_type on the kernel name) and compute the same figures:

- 'hta' reproduces Holistic Trace Analysis 0.5.0's get_temporal_breakdown() exactly:
  events with an integer args.stream (any category: kernels, memcpy, memset and also
  cuda_sync 'Stream Sync' ranges). When the trace names two or more distinct ProfilerStep
  events, only device events whose correlation id matches a CPU-side event that starts
  before the last ProfilerStep starts are kept (so kernels launched before the first step
  stay, those of the last step go); with zero or one ProfilerStep nothing is dropped.
  For traces with fractional timestamps, starts are rounded up and ends down to whole
  microseconds, as HTA does.
- 'all_kernels': every kernel, memcpy, memset and MTIA compute event in the trace, its
  stream as the store has it, raw timestamps, no step filtering.

kernel span = last end - first start; idle = span not covered by any event (union of
intervals); compute = union of 'computation' events; non-compute = span - idle - compute.
"""
from __future__ import annotations

import duckdb
import pandas as pd

from store.analysis._sql import check_choice, run_frame, union_sql

DEFINITIONS = ("hta", "all_kernels")

# HTA's get_kernel_type (hta/utils/utils.py), a name regex evaluated with Python's re.match:
# communication ^nccl.*Kernel; memory ^(Memcpy|Memset|dma); computation: none of those nor a
# name containing 'Memcpy' or 'Sync'; the rest (e.g. 'Stream Sync') 'other'.
KERNEL_TYPE_SQL = """CASE
        WHEN regexp_matches(name, '^nccl.*Kernel') THEN 'communication'
        WHEN regexp_matches(name, '^(Memcpy|Memset|dma)') THEN 'memory'
        WHEN name LIKE '%Memcpy%' OR name LIKE '%Sync%' THEN 'other'
        ELSE 'computation' END"""

# HTA's stream: Python int() of args.stream, -1 when absent or not an integer (AMD runtime
# calls say "stream": "0x0", which DuckDB's cast would read as 0 and int() rejects).
HTA_STREAM_SQL = """CASE json_type(args, '$.stream')
               WHEN 'BIGINT' THEN json_extract(args, '$.stream')::BIGINT
               WHEN 'UBIGINT' THEN TRY_CAST(json_extract(args, '$.stream') AS BIGINT)
               WHEN 'DOUBLE' THEN TRY_CAST(trunc(json_extract(args, '$.stream')::DOUBLE) AS BIGINT)
               WHEN 'VARCHAR' THEN CASE WHEN regexp_full_match(trim(json_extract_string(args, '$.stream')), '[+-]?[0-9]+')
                                        THEN TRY_CAST(trim(json_extract_string(args, '$.stream')) AS BIGINT) END
           END"""

VIEWS = [
    # One row per device event each definition counts, with the start of its launch for the idle
    # analysis: 'hta' any CPU-side event of the same correlation id (as HTA), 'all_kernels' the
    # runtime/driver call (kernel_launches).
    f"""CREATE OR REPLACE VIEW gpu_kernel_set AS
WITH rounding AS (
    SELECT run_id, bool_or(ts_us IS NULL OR ts_us <> floor(ts_us)) AS fractional FROM events GROUP BY run_id
),
hta_base AS (
    SELECT run_id, rank, event_idx, cat, name, ts_us, dur_us,
           coalesce(CASE WHEN contains(args, '"stream"') THEN {HTA_STREAM_SQL} END, -1) AS hta_stream,
           coalesce(correlation, -1) AS hta_corr
    FROM events
    WHERE dur_us IS NOT NULL AND cat_raw IS NOT NULL AND cat_raw <> 'Trace'
),
hta_events AS (
    SELECT b.*, (hta_stream >= 0 AND hta_corr >= 0) OR name IN ('Event Sync', 'Context Sync') AS gpu_side,
           CASE WHEN r.fractional THEN ceil(ts_us) ELSE ts_us END AS start_us,
           CASE WHEN r.fractional THEN floor(ts_us + dur_us) ELSE ts_us + dur_us END AS end_us
    FROM hta_base b JOIN rounding r USING (run_id)
),
hta_steps AS (
    SELECT run_id, count(DISTINCT name) AS step_names, max(start_us) FILTER (WHERE NOT gpu_side) AS last_step_start_us
    FROM hta_events WHERE name LIKE '%ProfilerStep%' GROUP BY run_id
),
hta_launch AS (
    SELECT e.run_id, e.hta_corr, arg_max(e.start_us, e.event_idx) AS launch_start_us,
           bool_or(e.start_us < s.last_step_start_us) AS before_last_step
    FROM hta_events e LEFT JOIN hta_steps s USING (run_id)
    WHERE NOT e.gpu_side AND e.hta_corr >= 0
    GROUP BY e.run_id, e.hta_corr
)
SELECT k.run_id, k.rank, 'hta' AS definition, k.event_idx, k.cat, k.name, k.hta_stream AS stream,
       k.start_us, k.end_us, l.launch_start_us, {KERNEL_TYPE_SQL} AS kernel_type
FROM hta_events k
LEFT JOIN hta_steps s USING (run_id)
LEFT JOIN hta_launch l ON l.run_id = k.run_id AND l.hta_corr = k.hta_corr
WHERE k.hta_stream <> -1
  AND (coalesce(s.step_names, 0) < 2 OR (k.gpu_side AND coalesce(l.before_last_step, false)))
UNION ALL
SELECT k.run_id, k.rank, 'all_kernels' AS definition, k.event_idx, k.cat, k.name, k.stream,
       k.ts_us AS start_us, k.ts_us + k.dur_us AS end_us, k.launch_ts_us AS launch_start_us, {KERNEL_TYPE_SQL} AS kernel_type
FROM kernel_launches k
WHERE k.ts_us IS NOT NULL AND k.dur_us IS NOT NULL""",
    f"""CREATE OR REPLACE VIEW gpu_time_breakdown AS
WITH busy AS ({union_sql("SELECT * FROM gpu_kernel_set", "run_id, rank, definition")}),
computing AS ({union_sql("SELECT * FROM gpu_kernel_set WHERE kernel_type = 'computation'", "run_id, rank, definition")}),
spans AS (
    SELECT run_id, rank, definition, max(end_us) - min(start_us) AS kernel_span_us, sum(end_us - start_us) AS busy_us
    FROM busy GROUP BY run_id, rank, definition
),
compute AS (
    SELECT run_id, definition, sum(end_us - start_us) AS compute_us FROM computing GROUP BY run_id, definition
),
figures AS (
    SELECT s.run_id, s.rank, s.definition, s.kernel_span_us - s.busy_us AS idle_us,
           coalesce(c.compute_us, 0) AS compute_us, s.busy_us - coalesce(c.compute_us, 0) AS non_compute_us, s.kernel_span_us
    FROM spans s LEFT JOIN compute c ON c.run_id = s.run_id AND c.definition = s.definition
)
SELECT *, 100 * idle_us / nullif(kernel_span_us, 0) AS idle_pct,
       100 * compute_us / nullif(kernel_span_us, 0) AS compute_pct,
       100 * non_compute_us / nullif(kernel_span_us, 0) AS non_compute_pct
FROM figures""",
]


def gpu_time_breakdown(con: duckdb.DuckDBPyConnection, run_id: str, definition: str = "hta") -> pd.DataFrame:
    """(run_id, rank, definition, idle_us, compute_us, non_compute_us, kernel_span_us, *_pct); no rows without device events."""
    check_choice("definition", definition, DEFINITIONS)
    return run_frame(con, "gpu_time_breakdown", run_id, "definition = ?", [definition])


def gpu_kernel_set(con: duckdb.DuckDBPyConnection, run_id: str, definition: str = "hta") -> pd.DataFrame:
    """The device events a definition counts, with start_us, end_us, stream, kernel_type and launch_start_us."""
    check_choice("definition", definition, DEFINITIONS)
    return run_frame(con, "gpu_kernel_set", run_id, "definition = ?", [definition], order_by="start_us, event_idx")
