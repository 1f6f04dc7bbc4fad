"""Host overhead of CPU-side execution: wall time of the profiled region that no leaf operator covers.

Region: the union of ProfilerStep#N ranges when the trace has them, else the span of its CPU
operators. Leaf operators: cpu_op events with no cpu_op nested inside them on their thread
(the framework's innermost ops: aten::mm, aten::add_, ...). op_us is the union of leaf-op
intervals over all threads, clipped to the region, so time in which any thread runs a leaf op
counts as covered once; host_overhead_us = wall_us - op_us is time spent in parent ops
between their children (dispatch, Python), runtime calls outside ops, and gaps between ops.
Summing leaf self time instead would double count parallel threads and can exceed wall time.
"""
from __future__ import annotations

import duckdb
import pandas as pd

from store.analysis._sql import run_frame, union_sql

VIEWS = [
    f"""CREATE OR REPLACE VIEW host_overhead AS
WITH ops AS (
    -- sorted as store/nesting.py nests them: an op's first child, if any, comes right after it
    SELECT run_id, rank, ts_us AS start_us, ts_us + dur_us AS end_us, depth,
           lead(depth) OVER (PARTITION BY run_id, pid, tid ORDER BY ts_us, dur_us DESC, depth) AS next_depth
    FROM events WHERE ph = 'X' AND cat = 'cpu_op' AND ts_us IS NOT NULL AND dur_us IS NOT NULL
),
leaves AS (SELECT run_id, start_us, end_us FROM ops WHERE next_depth IS NULL OR next_depth <= depth),
steps AS (
    SELECT run_id, ts_us AS start_us, ts_us + dur_us AS end_us FROM events
    WHERE ph = 'X' AND NOT on_device AND name LIKE 'ProfilerStep#%' AND dur_us IS NOT NULL
),
region_parts AS (
    SELECT * FROM steps
    UNION ALL
    SELECT run_id, min(start_us), max(end_us) FROM ops WHERE run_id NOT IN (SELECT run_id FROM steps) GROUP BY run_id
),
region AS ({union_sql("SELECT * FROM region_parts", "run_id")}),
clipped AS (
    SELECT l.run_id, greatest(l.start_us, r.start_us) AS start_us, least(l.end_us, r.end_us) AS end_us
    FROM leaves l JOIN region r ON r.run_id = l.run_id AND l.start_us < r.end_us AND l.end_us > r.start_us
),
covered AS ({union_sql("SELECT * FROM clipped", "run_id")}),
wall AS (SELECT run_id, sum(end_us - start_us) AS wall_us FROM region GROUP BY run_id),
op AS (SELECT run_id, sum(end_us - start_us) AS op_us FROM covered GROUP BY run_id),
ranks AS (SELECT run_id, any_value(rank) AS rank FROM ops GROUP BY run_id)
SELECT w.run_id, k.rank, w.run_id IN (SELECT run_id FROM steps) AS region_is_steps,
       w.wall_us, coalesce(o.op_us, 0) AS op_us, w.wall_us - coalesce(o.op_us, 0) AS host_overhead_us,
       100 * (w.wall_us - coalesce(o.op_us, 0)) / nullif(w.wall_us, 0) AS host_overhead_pct
FROM wall w JOIN ranks k USING (run_id) LEFT JOIN op o USING (run_id)""",
]


def host_overhead(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """(run_id, rank, region_is_steps, wall_us, op_us, host_overhead_us, host_overhead_pct); no row without CPU ops."""
    return run_frame(con, "host_overhead", run_id)
