"""Operator time by category within each part of an iteration (text encoder, UNet, VAE; prefill,
decode; forward, backward, optimizer), CPU and device apart.

Parts are the ranges an iteration marks (profilers/parts.py: a `user_annotation` named after
the part, on the thread that ran it); the names are the run's latency phases of role `part` or
`background`, so runs timed here have rows and imported traces have none. An operator belongs
to the part range open on its thread when it starts (parts do not nest). CPU side: self time of
`cpu_op` events, as in op_time_by_category; device side: durations of kernels, memory copies
and sets, placed by the runtime call that launched them (by correlation id).
"""
from __future__ import annotations

import duckdb
import pandas as pd

from store.analysis._sql import DEVICE_OP_CATS, LAUNCH_CATS, quoted, side_frame


VIEWS = [
    f"""CREATE OR REPLACE VIEW op_time_by_part AS
WITH names AS (SELECT DISTINCT run_id, phase AS part FROM latency WHERE role IN ('part', 'background')),
parts AS (
    SELECT e.run_id, coalesce(e.rank, -1) AS rank_key, e.pid, e.tid, e.name AS part, e.ts_us AS start_us,
           e.ts_us + e.dur_us AS end_us
    FROM events e JOIN names n ON n.run_id = e.run_id AND n.part = e.name
    WHERE e.ph = 'X' AND e.cat = 'user_annotation' AND e.dur_us IS NOT NULL
),
launches AS (
    SELECT run_id, coalesce(rank, -1) AS rank_key, correlation, arg_max(pid, event_idx) AS pid,
           arg_max(tid, event_idx) AS tid, arg_max(ts_us, event_idx) AS ts_us
    FROM events WHERE ph = 'X' AND cat IN ({quoted(LAUNCH_CATS)}) AND correlation IS NOT NULL
    GROUP BY ALL
),
ops AS (
    SELECT run_id, rank, coalesce(rank, -1) AS rank_key, 'cpu' AS side, coalesce(category, 'other') AS category,
           self_us AS time_us, pid, tid, ts_us AS at_us
    FROM events WHERE ph = 'X' AND cat = 'cpu_op' AND self_us IS NOT NULL
    UNION ALL
    SELECT d.run_id, d.rank, coalesce(d.rank, -1), 'device', coalesce(d.category, 'other'), d.dur_us, l.pid, l.tid, l.ts_us
    FROM events d JOIN launches l ON l.run_id = d.run_id AND l.rank_key = coalesce(d.rank, -1) AND l.correlation = d.correlation
    WHERE d.ph = 'X' AND d.cat IN ({quoted(DEVICE_OP_CATS)})
),
placed AS (
    SELECT o.run_id, o.rank, o.side, o.category, o.time_us, o.at_us, p.part, p.end_us
    FROM ops o ASOF JOIN parts p
      ON p.run_id = o.run_id AND p.rank_key = o.rank_key AND p.pid = o.pid AND p.tid = o.tid AND o.at_us >= p.start_us
)
SELECT run_id, rank, part, side, category, sum(time_us) AS time_us, count(*) AS count,
       100 * sum(time_us) / nullif(sum(sum(time_us)) OVER (PARTITION BY run_id, rank, part, side), 0) AS share_pct
FROM placed WHERE at_us < end_us
GROUP BY run_id, rank, part, side, category""",
]


def op_time_by_part(con: duckdb.DuckDBPyConnection, run_id: str, side: str | None = None) -> pd.DataFrame:
    """(run_id, rank, part, side, category, time_us, count, share_pct), largest first within each part and side."""
    return side_frame(con, "op_time_by_part", run_id, side, "part, time_us DESC")
