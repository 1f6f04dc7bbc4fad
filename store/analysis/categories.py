"""Operator time by category, CPU and device side apart.

Device side: the durations of kernels, memory copies and sets (and MTIA compute events); CPU
side: the self time of CPU operators, so a parent operator and its children are not counted
twice. Categories come from store/category_rules.csv at import (`events.category`).
"""
from __future__ import annotations

import duckdb
import pandas as pd

from store.analysis._sql import DEVICE_OP_CATS, check_choice, quoted, run_frame

CATEGORIES = (
    "convolution", "gemm", "attention", "normalization", "activation",
    "elementwise", "reduction", "memory", "communication", "other",
)
SIDES = ("cpu", "device")

VIEWS = [
    f"""CREATE OR REPLACE VIEW op_time_by_category AS
WITH ops AS (
    SELECT run_id, rank, 'device' AS side, coalesce(category, 'other') AS category, dur_us AS time_us
    FROM events WHERE ph = 'X' AND cat IN ({quoted(DEVICE_OP_CATS)})
    UNION ALL
    SELECT run_id, rank, 'cpu' AS side, coalesce(category, 'other') AS category, self_us AS time_us
    FROM events WHERE ph = 'X' AND cat = 'cpu_op'
)
SELECT run_id, rank, side, category, sum(time_us) AS time_us, count(*) AS count,
       100 * sum(time_us) / nullif(sum(sum(time_us)) OVER (PARTITION BY run_id, side), 0) AS share_pct
FROM ops
GROUP BY run_id, rank, side, category""",
    # The same, split by the part of the iteration (forward, backward, optimizer; unet, vae; ...):
    # profiled runs only; events outside every part have part NULL.
    f"""CREATE OR REPLACE VIEW op_time_by_part AS
WITH ops AS (
    SELECT run_id, rank, 'device' AS side, part, coalesce(category, 'other') AS category, dur_us AS time_us
    FROM events WHERE ph = 'X' AND cat IN ({quoted(DEVICE_OP_CATS)}) AND part IS NOT NULL
    UNION ALL
    SELECT run_id, rank, 'cpu' AS side, part, coalesce(category, 'other') AS category, self_us AS time_us
    FROM events WHERE ph = 'X' AND cat = 'cpu_op' AND part IS NOT NULL
)
SELECT run_id, rank, side, part, category, sum(time_us) AS time_us, count(*) AS count,
       100 * sum(time_us) / nullif(sum(sum(time_us)) OVER (PARTITION BY run_id, side), 0) AS share_pct
FROM ops
GROUP BY run_id, rank, side, part, category""",
]


def op_time_by_part(con: duckdb.DuckDBPyConnection, run_id: str, side: str = "cpu") -> pd.DataFrame:
    """(run_id, rank, side, part, category, time_us, count, share_pct): operator time per part of the iteration."""
    check_choice("side", side, SIDES)
    return run_frame(con, "op_time_by_part", run_id, "side = ?", [side], order_by="part, time_us DESC")


def op_time_by_category(con: duckdb.DuckDBPyConnection, run_id: str, side: str | None = None) -> pd.DataFrame:
    """(run_id, rank, side, category, time_us, count, share_pct), largest first within each side."""
    if side is None:
        return run_frame(con, "op_time_by_category", run_id, order_by="side, time_us DESC")
    check_choice("side", side, SIDES)
    return run_frame(con, "op_time_by_category", run_id, "side = ?", [side], order_by="time_us DESC")
