"""CPU operators of one run by self time: the host-side twin of kernel_stats."""
from __future__ import annotations

import duckdb
import pandas as pd

from store.analysis._sql import check_run

TOP_OPERATORS_SQL = """
SELECT name, any_value(category) AS category, count(*) AS count, sum(self_us) AS self_us, sum(dur_us) AS total_us,
       100 * sum(self_us) / nullif(sum(sum(self_us)) OVER (), 0) AS self_share_pct
FROM events WHERE run_id = ? AND ph = 'X' AND cat = 'cpu_op'
GROUP BY name ORDER BY self_us DESC, name LIMIT ?
"""


def top_cpu_operators(con: duckdb.DuckDBPyConnection, run_id: str, limit: int = 25) -> pd.DataFrame:
    """Per cpu_op name: count, self time (without nested operators), total duration and share."""
    check_run(con, run_id)
    return con.execute(TOP_OPERATORS_SQL, [run_id, limit]).df()
