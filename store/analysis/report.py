"""One run's analyses gathered into one document, for `observatory report` and scripts."""
from __future__ import annotations

import duckdb
import pandas as pd

from store.analysis._sql import check_run
from store.analysis.categories import op_time_by_category
from store.analysis.communication import collective_stats, comm_comp_overlap, job_runs, stragglers
from store.analysis.critical_path import critical_path
from store.analysis.gpu_time import gpu_time_breakdown
from store.analysis.host import host_overhead
from store.analysis.idle import gpu_idle_breakdown
from store.analysis.kernels import kernel_launches, kernel_stats
from store.analysis.roofline import operator_roofline, run_roofs
from store.rows import plain_rows as _rows

RUN_FIELDS = ["run_id", "source", "source_path", "label", "workload", "variant", "preset", "device", "device_name", "rank", "world_size", "status", "error", "event_count", "trace_path"]
TEMPORAL_FIELDS = ["rank", "idle_us", "compute_us", "non_compute_us", "kernel_span_us", "idle_pct", "compute_pct", "non_compute_pct"]
ROOFLINE_FIELDS = ["name", "family", "dtype", "calls", "flops", "bytes", "time_us", "achieved_flops_per_s", "achieved_bytes_per_s",
                   "intensity", "bound", "peak_pct", "peak_flops_per_s", "peak_bytes_per_s"]
CRITICAL_TOP_EVENTS = 15


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


def _roofline(con: duckdb.DuckDBPyConnection, run_id: str, absent: dict) -> tuple[list | None, dict | None]:
    table = operator_roofline(con, run_id)
    roofs = run_roofs(con, run_id)
    if table.empty:
        absent["roofline"] = "no operator call with a FLOP formula and a time (shapes not recorded, or device time not in the trace)"
        return None, None
    if roofs is None:
        absent["roofs"] = "no peaks for this device (store/device_peaks.csv, OBSERVATORY_DEVICE_PEAKS) or no measured CPU peaks"
    roofs_doc = None if roofs is None else {"device": roofs.name, "flops_per_s": roofs.flops_per_s,
                                            "memory_bytes_per_s": roofs.memory_bytes_per_s, "source": roofs.source}
    return _rows(table[ROOFLINE_FIELDS]), roofs_doc


def _communication(con: duckdb.DuckDBPyConnection, run_id: str, definition: str, absent: dict) -> dict:
    overlap = comm_comp_overlap(con, run_id, definition)
    kinds = collective_stats(con, run_id)
    ranks = job_runs(con, run_id)
    found = stragglers(con, ranks) if len(ranks) > 1 else None
    if overlap.empty:
        absent["comm_comp_overlap"] = "no communication kernels"
    if kinds.empty:
        absent["collectives"] = "no communication kernels"
    if found is None or found.empty:
        absent["stragglers"] = ("the job's other ranks are not in this report" if len(ranks) < 2
                                else "no NCCL kernels long enough to compare across ranks")
    return {
        "comm_comp_overlap": None if overlap.empty else _rows(overlap[["rank", "overlap_pct", "comm_us", "overlap_us"]]),
        "collectives": None if kinds.empty else _rows(kinds.drop(columns=["run_id"])),
        "stragglers": None if found is None or found.empty else _rows(found),
    }


def _critical_path(con: duckdb.DuckDBPyConnection, run_id: str, absent: dict) -> dict | None:
    """The first ProfilerStep's critical path (the whole trace without steps): bounds and the events most time is charged to."""
    has_steps = con.execute("SELECT count(*) FROM events WHERE run_id = ? AND name LIKE 'ProfilerStep#%' AND dur_us IS NOT NULL",
                            [run_id]).fetchone()[0] > 0
    annotation = "ProfilerStep" if has_steps else ""
    try:
        path = critical_path(con, run_id, annotation, 0)
    except ValueError as exc:
        absent["critical_path"] = str(exc)
        return None
    if path is None:
        absent["critical_path"] = "no CPU operator or device event in the window"
        return None
    charged = path.edges.dropna(subset=["event_idx", "bound"]).astype({"event_idx": "int64"})
    charged = charged.groupby(["event_idx", "bound"], as_index=False)["weight_us"].sum()
    names = path.events.set_index("event_idx")
    charged = charged.join(names[["name", "cat"]], on="event_idx").sort_values("weight_us", ascending=False).head(CRITICAL_TOP_EVENTS)
    return {
        "window": "first ProfilerStep" if has_steps else "whole trace",
        "start_us": path.start_us, "end_us": path.end_us, "length_us": path.length_us, "events": len(path.events),
        "bounds": _rows(path.bounds),
        "top_events": _rows(charged.rename(columns={"weight_us": "time_us"})[["event_idx", "name", "cat", "bound", "time_us"]]),
    }


def build_report(con: duckdb.DuckDBPyConnection, run_id: str, definition: str = "hta") -> dict:
    """The run, and each analysis as rows. A section the run lacks the data for is None (absent, not zero) and
    `absent` says why."""
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
    absent: dict = {}
    report["roofline"], report["roofs"] = _roofline(con, run_id, absent)
    report.update(_communication(con, run_id, definition, absent))
    report["critical_path"] = _critical_path(con, run_id, absent)
    report["absent"] = absent
    if has_device:
        report["temporal_breakdown"] = _rows(gpu_time_breakdown(con, run_id, definition)[TEMPORAL_FIELDS])
        report["idle_breakdown"] = _rows(gpu_idle_breakdown(con, run_id, definition).drop(columns=["run_id"]))
        report["kernel_launch"] = {
            "launch_delay": _launch_delay_summary(con, run_id),
            "kernels": _rows(kernel_stats(con, run_id).drop(columns=["run_id"])),
        }
    return report
