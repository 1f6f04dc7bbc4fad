"""Per-kernel statistics: durations and launch delay, for every kernel name (no "top N" folding).

Launch delay = kernel start - start of the runtime call that launched it (cudaLaunchKernel,
cuLaunchKernel, ...), joined by correlation id. It includes the launch call's own duration and
the time the kernel waited in its stream's queue behind earlier work.
"""
from __future__ import annotations

import duckdb
import pandas as pd

from store.analysis._sql import DEVICE_OP_CATS, LAUNCH_CATS, quoted, run_frame

VIEWS = [
    # One row per device op with the runtime call that launched it (NULL when the trace has none).
    # Several launch events with one correlation id (not seen in practice): the last in file order.
    f"""CREATE OR REPLACE VIEW kernel_launches AS
WITH launch AS (
    SELECT run_id, correlation, max(event_idx) AS launch_event_idx,
           arg_max(name, event_idx) AS launch_name, arg_max(ts_us, event_idx) AS launch_ts_us
    FROM events
    WHERE ph = 'X' AND cat IN ({quoted(LAUNCH_CATS)}) AND correlation IS NOT NULL
    GROUP BY run_id, correlation
)
SELECT k.run_id, k.rank, k.event_idx, k.cat, k.name, k.category, k.device, k.stream, k.profiler_step, k.correlation,
       k.ts_us, k.dur_us, l.launch_event_idx, l.launch_name, l.launch_ts_us,
       k.ts_us - l.launch_ts_us AS launch_delay_us
FROM events k
LEFT JOIN launch l ON l.run_id = k.run_id AND l.correlation = k.correlation
WHERE k.ph = 'X' AND k.cat IN ({quoted(DEVICE_OP_CATS)})""",
    """CREATE OR REPLACE VIEW kernel_stats AS
SELECT run_id, rank, cat, name, any_value(category) AS category,
       count(*) AS count, sum(dur_us) AS total_us, avg(dur_us) AS mean_us,
       min(dur_us) AS min_us, max(dur_us) AS max_us,
       quantile_cont(dur_us, 0.5) AS p50_us, quantile_cont(dur_us, 0.9) AS p90_us,
       quantile_cont(dur_us, 0.99) AS p99_us,
       100 * sum(dur_us) / nullif(sum(sum(dur_us)) OVER (PARTITION BY run_id), 0) AS share_pct,
       count(launch_delay_us) AS launched_count,
       avg(launch_delay_us) AS launch_delay_mean_us, quantile_cont(launch_delay_us, 0.5) AS launch_delay_p50_us,
       quantile_cont(launch_delay_us, 0.9) AS launch_delay_p90_us, max(launch_delay_us) AS launch_delay_max_us
FROM kernel_launches
GROUP BY run_id, rank, cat, name""",
]


def kernel_stats(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """One row per (cat, name) of device op, by total time, largest first. Percentiles interpolate linearly."""
    return run_frame(con, "kernel_stats", run_id, order_by="total_us DESC, name")


def kernel_launches(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """One row per device op with its launching runtime call and launch_delay_us (NULL when unlinked)."""
    return run_frame(con, "kernel_launches", run_id, order_by="ts_us, event_idx")
