"""One run's analyses gathered into one document, for `observatory report` and scripts."""
from __future__ import annotations

import duckdb
import pandas as pd

from store.analysis._sql import check_run
from store.analysis.categories import op_time_by_category
from store.analysis.gpu_time import gpu_time_breakdown
from store.analysis.host import host_overhead
from store.analysis.idle import gpu_idle_breakdown
from store.analysis.kernels import kernel_launches, kernel_stats
from store.rows import plain_rows as _rows

RUN_FIELDS = ["run_id", "source", "source_path", "label", "workload", "variant", "preset", "device", "device_name", "rank", "world_size", "status", "error", "event_count", "trace_path"]
TEMPORAL_FIELDS = ["rank", "idle_us", "compute_us", "non_compute_us", "kernel_span_us", "idle_pct", "compute_pct", "non_compute_pct"]


def _launch_delay_summary(con: duckdb.DuckDBPyConnection, run_id: str) -> dict:
    launches = kernel_launches(con, run_id)
    delay = launches["launch_delay_us"].dropna()
    if delay.empty:
        return {"launched_kernels": 0}
    return {
        "launched_kernels": int(delay.size),
        "mean_us": float(delay.mean()),
        "p50_us": float(delay.quantile(0.5)),
        "p90_us": float(delay.quantile(0.9)),
        "max_us": float(delay.max()),
    }


def build_report(con: duckdb.DuckDBPyConnection, run_id: str, definition: str = "hta") -> dict:
    """The run, and each analysis as rows. GPU sections are None (absent, not zero) without device events."""
    check_run(con, run_id)
    run = _rows(con.execute(f"SELECT {', '.join(RUN_FIELDS)} FROM runs WHERE run_id = ?", [run_id]).df())[0]
    categories = op_time_by_category(con, run_id)
    has_device = bool((categories["side"] == "device").any()) or bool(
        con.execute("SELECT count(*) FROM events WHERE run_id = ? AND on_device", [run_id]).fetchone()[0]
    )
    by_side = {
        side: _rows(categories[categories["side"] == side].drop(columns=["run_id", "side"]))
        for side in ("cpu", "device")
    }
    report = {
        "run": run,
        "definition": definition,
        "categories": {"cpu": by_side["cpu"], "device": by_side["device"] if has_device else None},
        "host_overhead": _rows(host_overhead(con, run_id).drop(columns=["run_id"])),
        "temporal_breakdown": None,
        "idle_breakdown": None,
        "kernel_launch": None,
    }
    if has_device:
        report["temporal_breakdown"] = _rows(gpu_time_breakdown(con, run_id, definition)[TEMPORAL_FIELDS])
        report["idle_breakdown"] = _rows(gpu_idle_breakdown(con, run_id, definition).drop(columns=["run_id"]))
        report["kernel_launch"] = {
            "launch_delay": _launch_delay_summary(con, run_id),
            "kernels": _rows(kernel_stats(con, run_id).drop(columns=["run_id"])),
        }
    return report
