"""Baseline vs variant: latency with its spread, speedup, and how time moved between categories.

Pure functions over the store's tables; `observatory compare` and the dashboard print them.
"""
from __future__ import annotations

import duckdb
import pandas as pd

from store.analysis._sql import check_run

LATENCY_SQL = """
SELECT run_id, phase, count(*) AS repeats,
       median(latency_us) AS median_us, quantile_cont(latency_us, 0.1) AS p10_us, quantile_cont(latency_us, 0.9) AS p90_us,
       median(items_per_s) AS items_per_s, any_value(item_unit) AS item_unit,
       median(latency_us) / nullif(any_value(items), 0) AS us_per_item
FROM latency WHERE run_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY run_id, phase
"""


def latency_stats(con: duckdb.DuckDBPyConnection, run_ids: list[str]) -> pd.DataFrame:
    """Median, p10 and p90 latency per run and phase, over the unprofiled timed repeats."""
    return con.execute(LATENCY_SQL, [run_ids]).df()


def speedup(con: duckdb.DuckDBPyConnection, baseline: str, other: str) -> pd.DataFrame:
    """Per phase: baseline median / other median, and its spread from the p10-p90 bands.

    speedup_low pairs the slow end of `other` with the fast end of the baseline (p10 / p90),
    speedup_high the reverse: the speedup lies in that range unless a tail dominates.
    """
    for run_id in (baseline, other):
        check_run(con, run_id)
    stats = latency_stats(con, [baseline, other])
    base = stats[stats.run_id == baseline].set_index("phase")
    treat = stats[stats.run_id == other].set_index("phase")
    phases = [p for p in base.index if p in treat.index]
    return pd.DataFrame(
        {
            "phase": phases,
            "baseline_median_us": [base.at[p, "median_us"] for p in phases],
            "median_us": [treat.at[p, "median_us"] for p in phases],
            "speedup": [base.at[p, "median_us"] / treat.at[p, "median_us"] for p in phases],
            "speedup_low": [base.at[p, "p10_us"] / treat.at[p, "p90_us"] for p in phases],
            "speedup_high": [base.at[p, "p90_us"] / treat.at[p, "p10_us"] for p in phases],
            "baseline_repeats": [int(base.at[p, "repeats"]) for p in phases],
            "repeats": [int(treat.at[p, "repeats"]) for p in phases],
        }
    )


CATEGORY_SHIFT_SQL = """
WITH t AS (
    SELECT run_id, side, category, time_us, share_pct FROM op_time_by_category WHERE run_id IN (?, ?)
)
SELECT coalesce(b.side, o.side) AS side, coalesce(b.category, o.category) AS category,
       coalesce(b.time_us, 0) AS baseline_time_us, coalesce(o.time_us, 0) AS time_us,
       coalesce(o.time_us, 0) - coalesce(b.time_us, 0) AS delta_us,
       coalesce(b.share_pct, 0) AS baseline_share_pct, coalesce(o.share_pct, 0) AS share_pct,
       coalesce(o.share_pct, 0) - coalesce(b.share_pct, 0) AS delta_share_pct
FROM (SELECT * FROM t WHERE run_id = ?) b
FULL OUTER JOIN (SELECT * FROM t WHERE run_id = ?) o ON b.side = o.side AND b.category = o.category
ORDER BY side, abs(coalesce(o.time_us, 0) - coalesce(b.time_us, 0)) DESC
"""


def category_shift(con: duckdb.DuckDBPyConnection, baseline: str, other: str) -> pd.DataFrame:
    """Per side and operator category: time and share in each run, and the change."""
    return con.execute(CATEGORY_SHIFT_SQL, [baseline, other, baseline, other]).df()


LATEST_SQL = """
SELECT variant, arg_max(run_id, stored_at) AS run_id
FROM runs
WHERE workload = ? AND status = 'ok' AND preset = ? AND batch = ? AND dtype = ? AND device = ?
GROUP BY variant
"""


def latest_per_variant(con: duckdb.DuckDBPyConnection, workload: str, baseline_variant: str) -> tuple[str, dict[str, str]]:
    """The latest baseline run of a workload, and the latest run of each variant at its settings."""
    base = con.execute(
        "SELECT run_id, preset, batch, dtype, device FROM runs WHERE workload = ? AND variant = ? AND status = 'ok' "
        "ORDER BY stored_at DESC LIMIT 1",
        [workload, baseline_variant],
    ).fetchone()
    if base is None:
        raise ValueError(f"--workload {workload}: no successful {baseline_variant!r} (baseline) run in the store; run `observatory run {workload}` first")
    run_id, preset, batch, dtype, device = base
    rows = con.execute(LATEST_SQL, [workload, preset, batch, dtype, device]).fetchall()
    return run_id, {variant: rid for variant, rid in rows if variant != baseline_variant}
