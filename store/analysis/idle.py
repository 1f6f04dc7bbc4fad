"""GPU idle time per stream, split by cause, with HTA's rules (get_idle_time_breakdown).

Per stream, kernels (and memcpy/memset) in start order; the gap before a kernel is its start
minus the previous kernel's end on that stream. A gap is
- host wait when the kernel's launch call started after the previous kernel ended: the GPU
  waited for the CPU to enqueue work;
- else kernel wait when it is shorter than the threshold (HTA's consecutive_kernel_delay,
  default 30; HTA's docstring says ns but compares it with microsecond timestamps, so 30 us):
  the ordinary delay between back-to-back kernels;
- else other (e.g. waiting on an event from another stream).
As in HTA, a kernel that overlaps the previous one on its stream gives a negative gap, summed
as it is, and a kernel with no launch event in the trace is never host wait. The kernel set
follows gpu_time's `definition` ('hta': step-filtered as HTA; 'all_kernels': everything).
"""
from __future__ import annotations

import duckdb
import pandas as pd

from store.analysis._sql import DEVICE_OP_CATS, check_choice, check_run, quoted, run_frame
from store.analysis.gpu_time import DEFINITIONS

KERNEL_WAIT_THRESHOLD_US = 30.0

# {threshold} is a literal in the view and a bound parameter when a caller asks for another one.
_BREAKDOWN_SQL = """
SELECT *, 100 * host_wait_us / nullif(idle_us, 0) AS host_wait_pct,
       100 * kernel_wait_us / nullif(idle_us, 0) AS kernel_wait_pct,
       100 * other_us / nullif(idle_us, 0) AS other_pct
FROM (
    SELECT run_id, rank, definition, stream, count(*) AS kernels,
           coalesce(sum(gap_us), 0) AS idle_us,
           coalesce(sum(gap_us) FILTER (WHERE host_wait), 0) AS host_wait_us,
           coalesce(sum(gap_us) FILTER (WHERE NOT host_wait AND gap_us < {threshold}), 0) AS kernel_wait_us,
           coalesce(sum(gap_us) FILTER (WHERE NOT host_wait AND gap_us >= {threshold}), 0) AS other_us
    FROM gpu_idle_gaps
    GROUP BY run_id, rank, definition, stream
)"""

VIEWS = [
    # One row per kernel; gap_us is NULL for the first kernel of a stream.
    f"""CREATE OR REPLACE VIEW gpu_idle_gaps AS
SELECT run_id, rank, definition, stream, event_idx, name, start_us, end_us, launch_start_us, prev_end_us,
       start_us - prev_end_us AS gap_us,
       coalesce(launch_start_us > prev_end_us, false) AS host_wait
FROM (
    SELECT *, lag(end_us) OVER (PARTITION BY run_id, definition, stream ORDER BY start_us, end_us, event_idx) AS prev_end_us
    FROM gpu_kernel_set
    WHERE cat IN ({quoted(DEVICE_OP_CATS)})
)""",
    f"CREATE OR REPLACE VIEW gpu_idle_breakdown AS {_BREAKDOWN_SQL.format(threshold=KERNEL_WAIT_THRESHOLD_US)}",
]


def gpu_idle_breakdown(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    definition: str = "hta",
    kernel_wait_threshold_us: float = KERNEL_WAIT_THRESHOLD_US,
) -> pd.DataFrame:
    """(run_id, rank, definition, stream, kernels, idle_us, host_wait_us, kernel_wait_us, other_us, *_pct) per stream."""
    check_choice("definition", definition, DEFINITIONS)
    if kernel_wait_threshold_us == KERNEL_WAIT_THRESHOLD_US:
        return run_frame(con, "gpu_idle_breakdown", run_id, "definition = ?", [definition], order_by="stream")
    if not kernel_wait_threshold_us >= 0:
        raise ValueError(f"kernel_wait_threshold_us={kernel_wait_threshold_us!r}: expected a duration >= 0 in microseconds")
    sql = f"SELECT * FROM ({_BREAKDOWN_SQL.format(threshold='$threshold')}) WHERE run_id = $run_id AND definition = $definition ORDER BY stream"
    check_run(con, run_id)
    return con.execute(sql, {"threshold": kernel_wait_threshold_us, "run_id": run_id, "definition": definition}).df()
