"""`observatory report` on the terminal: the report document as a few readable tables."""
from __future__ import annotations

import pandas as pd

from app.output import console, print_frame

TOP_KERNELS = 15
NAME_WIDTH = 70
KERNEL_COLUMNS = ["name", "category", "count", "total_us", "mean_us", "p50_us", "p90_us", "max_us", "share_pct", "launch_delay_p50_us"]
ROOFLINE_COLUMNS = ["name", "dtype", "calls", "flops", "bytes", "time_us", "achieved_flops_per_s", "intensity", "bound", "peak_pct"]
TOP_OPERATORS = 15


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
    _print_roofline(report)
    _print_communication(report)
    _print_critical_path(report)
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


def _absent(report: dict, section: str, what: str) -> None:
    console.print(f"{what}: absent ({report['absent'].get(section, 'not in this trace')})", highlight=False)


def _print_roofline(report: dict) -> None:
    if report["roofline"] is None:
        return _absent(report, "roofline", "operator roofline")
    roofs = report["roofs"]
    where = (f"roofs: {roofs['device']}, {roofs['memory_bytes_per_s'] / 1e9:,.0f} GB/s ({roofs['source']})" if roofs
             else f"roofs absent: {report['absent'].get('roofs')}")
    rows = pd.DataFrame(report["roofline"]).head(TOP_OPERATORS).assign(name=lambda f: f["name"].map(_short))
    print_frame(rows[ROOFLINE_COLUMNS], title=f"operator roofline, top {TOP_OPERATORS} by time (all: --format json); {where}")


def _print_communication(report: dict) -> None:
    if report["comm_comp_overlap"] is None:
        return _absent(report, "comm_comp_overlap", "communication")
    print_frame(pd.DataFrame(report["comm_comp_overlap"]), title="computation/communication overlap (HTA: share of communication time under computation)")
    if report["collectives"]:
        print_frame(pd.DataFrame(report["collectives"]), title="collectives by kind (message sizes and bandwidths where the trace carries them)")
    if report["stragglers"] is None:
        _absent(report, "stragglers", "stragglers")
    else:
        print_frame(pd.DataFrame(report["stragglers"]).assign(name=lambda f: f["name"].map(_short)), title="stragglers across the job's ranks (HTA)")


def _print_critical_path(report: dict) -> None:
    path = report["critical_path"]
    if path is None:
        return _absent(report, "critical_path", "critical path")
    print_frame(pd.DataFrame(path["bounds"]),
                title=f"critical path of the {path['window']}: {path['length_us']:,.0f} us over {path['events']} events, by bound (HTA)")
    top = pd.DataFrame(path["top_events"])
    if not top.empty:
        print_frame(top.assign(name=top["name"].map(_short)), title="events on the critical path with the most time")
