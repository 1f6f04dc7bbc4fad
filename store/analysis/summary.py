"""Headline figures of every run in the store: one row per run, from the analysis views."""
from __future__ import annotations

import duckdb
import pandas as pd

SUMMARY_SQL = """
WITH top AS (
    SELECT run_id, side, arg_max(category, time_us) AS category, max(share_pct) AS share_pct
    FROM op_time_by_category GROUP BY run_id, side
)
SELECT r.run_id,
       coalesce(r.workload || coalesce(' ' || r.variant, ''), regexp_extract(r.source_path, '[^/]+$')) AS run, r.label,
       r.device, r.device_name, r.rank, r.status, r.event_count,
       g.idle_pct AS gpu_idle_pct,
       d.category || ' ' || round(d.share_pct)::INTEGER || '%' AS top_device_category,
       c.category || ' ' || round(c.share_pct)::INTEGER || '%' AS top_cpu_category,
       h.host_overhead_pct
FROM runs r
LEFT JOIN gpu_time_breakdown g ON g.run_id = r.run_id AND g.definition = ?
LEFT JOIN top d ON d.run_id = r.run_id AND d.side = 'device'
LEFT JOIN top c ON c.run_id = r.run_id AND c.side = 'cpu'
LEFT JOIN host_overhead h ON h.run_id = r.run_id
ORDER BY r.stored_at DESC, r.run_id
"""


def runs_summary(con: duckdb.DuckDBPyConnection, definition: str = "hta") -> pd.DataFrame:
    """GPU idle share, the top operator categories and host overhead per run; NULL where absent."""
    return con.execute(SUMMARY_SQL, [definition]).df()
