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


# What a variant's run must share with the baseline run it is compared to: runs.settings_key, the
# canonical text of preset, batch, dtype, device, seed and every workload parameter (workloads/base.py).
SETTINGS = ["settings_key"]
PAIRING_COLUMNS = ["run_id", "workload", "variant", "status", "stored_at", *SETTINGS]


def pair_latest(runs: pd.DataFrame, workload: str, baseline_variant: str, settings_key: str | None = None) -> tuple[str, dict[str, str]]:
    """The latest successful baseline run of a workload among `runs`, and the latest successful run of each
    other variant with its settings (runs.settings_key: preset, batch, dtype, device, seed and every
    parameter); latest by stored_at, then run_id.

    `runs` is a frame of `runs` rows with at least PAIRING_COLUMNS: the dashboard's cached runs list, or the
    store's rows for the CLI (latest_per_variant), so both pair by this one rule.
    """
    ok = runs[(runs["workload"] == workload) & (runs["status"] == "ok")].sort_values(["stored_at", "run_id"])
    base = ok[ok["variant"] == baseline_variant]
    if settings_key is not None:  # the latest baseline run at these settings, not at the latest run's
        base = base[base["settings_key"] == settings_key]
    if base.empty:
        raise ValueError(f"--workload {workload}: no successful {baseline_variant!r} (baseline) run in the store; run `observatory run {workload}` first")
    latest = base.iloc[[-1]]
    same = ok[ok["settings_key"].notna()].merge(latest[SETTINGS], on=SETTINGS).sort_values(["stored_at", "run_id"])
    newest = same[same["variant"] != baseline_variant].groupby("variant").tail(1)
    return str(latest["run_id"].iloc[0]), dict(zip(newest["variant"], newest["run_id"]))


def latest_per_variant(con: duckdb.DuckDBPyConnection, workload: str, baseline_variant: str) -> tuple[str, dict[str, str]]:
    """pair_latest over the store's runs of `workload`."""
    columns = ", ".join(PAIRING_COLUMNS)
    return pair_latest(con.execute(f"SELECT {columns} FROM runs WHERE workload = ?", [workload]).df(), workload, baseline_variant)
