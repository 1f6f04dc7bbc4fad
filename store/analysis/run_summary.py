"""What `observatory run` prints about the run it just stored: one document from the store."""
from __future__ import annotations

import json

import duckdb

from store.analysis.categories import op_time_by_category
from store.analysis.compare import latency_stats
from store.analysis.gpu_time import gpu_time_breakdown
from store.analysis.host import host_overhead
from store.rows import plain_rows as _rows

RUN_FIELDS = ["run_id", "workload", "variant", "preset", "batch", "dtype", "device", "device_name", "trace_path", "environment"]
SEQ_SQL = """
SELECT coalesce(kind, '?') AS kind, count(*) AS calls, min(q_len) AS q_len_min, max(q_len) AS q_len_max,
       min(kv_len) AS kv_len_min, max(kv_len) AS kv_len_max
FROM attention_calls WHERE run_id = ? GROUP BY 1 ORDER BY 1
"""


def _mib(value: float) -> str:
    return f"{value / 2**20:,.1f} MiB"


def run_summary(con: duckdb.DuckDBPyConnection, run_id: str) -> dict:
    run = _rows(con.execute(f"SELECT {', '.join(RUN_FIELDS)} FROM runs WHERE run_id = ?", [run_id]).df())[0]
    environment = json.loads(run.pop("environment") or "{}")
    latency = latency_stats(con, [run_id]).drop(columns=["run_id"])
    categories = op_time_by_category(con, run_id)
    metrics = dict(con.execute("SELECT name, value FROM metrics WHERE run_id = ?", [run_id]).fetchall())
    seq = _rows(con.execute(SEQ_SQL, [run_id]).df())
    notes = []
    gpu = gpu_time_breakdown(con, run_id, "all_kernels")
    if gpu.empty:
        host = host_overhead(con, run_id)
        if not host.empty:
            notes.append(f"host overhead: {host.host_overhead_pct.iloc[0]:.1f}% of the profiled wall time outside leaf operators (no GPU: device idle time does not exist here)")
    else:
        notes.append(f"GPU idle: {gpu.idle_pct.iloc[0]:.1f}% of the kernel span")
    for row in seq:
        notes.append(f"attention {row['kind']}: {row['calls']} calls, q_len {row['q_len_min']}-{row['q_len_max']}, kv_len {row['kv_len_min']}-{row['kv_len_max']}")
    for name in ("param_count",):
        if name in metrics:
            notes.append(f"parameters: {metrics[name]:,.0f} ({_mib(metrics.get('param_bytes', 0))})")
    for name, label in (("kv_cache_bytes", "KV cache"), ("peak_rss_growth_bytes", "peak RSS growth of an iteration"), ("peak_allocated_bytes", "peak CUDA memory allocated")):
        if name in metrics:
            notes.append(f"{label}: {_mib(metrics[name])}")
    notes.append(environment.get("telemetry_status", "telemetry: not recorded"))
    return {
        "run": run,
        "latency": _rows(latency),
        "categories": _rows(categories[categories.side == "cpu"].drop(columns=["run_id", "rank", "side"], errors="ignore").head(8)),
        "attention": seq,
        "metrics": metrics,
        "notes": notes,
    }
