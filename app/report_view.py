"""`observatory report` on the terminal: the report document as a few readable tables."""
from __future__ import annotations

import pandas as pd

from app.output import console, print_frame

TOP_KERNELS = 15
NAME_WIDTH = 70
KERNEL_COLUMNS = ["name", "category", "count", "total_us", "mean_us", "p50_us", "p90_us", "max_us", "share_pct", "launch_delay_p50_us"]


def _short(name: str | None) -> str:
    name = name or ""
    return name if len(name) <= NAME_WIDTH else name[: NAME_WIDTH - 3] + "..."


def print_report(report: dict) -> None:
    run = report["run"]
    title = " ".join(str(v) for v in (run["run_id"], run.get("workload") or run.get("label") or "", run.get("device") or "", run.get("device_name") or "") if v)
    console.print(f"[bold]{title}[/bold]  {run.get('source_path') or ''}", highlight=False)
    for side in ("cpu", "device"):
        rows = report["categories"][side]
        if rows is None:
            console.print(f"device time by category: absent (no device events in this trace)")
        elif rows:
            print_frame(pd.DataFrame(rows), title=f"{side} time by operator category ({'self time of cpu_op' if side == 'cpu' else 'kernels, memcpy, memset'})")
    if report["host_overhead"]:
        print_frame(pd.DataFrame(report["host_overhead"]), title="host overhead (profiled wall time not covered by leaf operators)")
    if report["temporal_breakdown"] is None:
        console.print("GPU temporal and idle breakdowns, kernel launches: absent (no device events in this trace)")
        return
    definition = report["definition"]
    print_frame(pd.DataFrame(report["temporal_breakdown"]), title=f"GPU temporal breakdown ({definition} definition)")
    print_frame(pd.DataFrame(report["idle_breakdown"]), title=f"GPU idle time per stream ({definition} definition)")
    launch = report["kernel_launch"]
    kernels = pd.DataFrame(launch["kernels"])
    if not kernels.empty:
        kernels = kernels.head(TOP_KERNELS).assign(name=lambda f: f["name"].map(_short))
        print_frame(kernels[[c for c in KERNEL_COLUMNS if c in kernels]], title=f"top {TOP_KERNELS} kernels by total time (all kernels: --format json)")
    delay = launch["launch_delay"]
    if delay.get("launched_kernels"):
        console.print(
            f"launch delay over {delay['launched_kernels']} kernels: mean {delay['mean_us']:.1f} us, "
            f"p50 {delay['p50_us']:.1f} us, p90 {delay['p90_us']:.1f} us, max {delay['max_us']:.1f} us"
        )
