"""`observatory demo`, the main job: import the shared real traces, profile both first workloads
in their baseline and variants, compare them, then serve the dashboard."""
from __future__ import annotations

import argparse
from pathlib import Path

from app.commands import print_runs_summary
from app.context import EXIT_OK, open_store
from app.output import console
from app.workload_commands import print_comparisons, print_sweep
from store import summaries
from store.ingest import find_traces, ingest_file
from store.trace_reader import TraceError

SHARED_TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"
DEMO_SWEEP = Path(__file__).resolve().parents[1] / "sweeps" / "demo.toml"


def cmd_demo(args: argparse.Namespace) -> int:
    if not SHARED_TRACES.is_dir():
        raise ValueError(f"{SHARED_TRACES}: the shared traces are not there (expected beside the project folder)")
    store = open_store(args).ensure()
    # 1. the real GPU traces
    console.print(f"importing the real GPU traces under {SHARED_TRACES} into {store.path}", highlight=False)
    created = skipped = 0
    for file in find_traces(SHARED_TRACES):
        try:
            created += ingest_file(store, file, label="shared-traces").created
        except TraceError as exc:
            skipped += 1
            console.print(f"  not imported: {exc}", markup=False, highlight=False)
    console.print(f"{created} new runs imported, {skipped} files not imported (reasons above)")
    summaries.refresh(store)
    print_runs_summary(store)
    # 2. our own workloads, baseline and variants, compared
    console.rule("profiling our own workloads")
    print_sweep(store, DEMO_SWEEP)
    for workload in ("diffusion-t2i", "llm-decode"):
        console.rule(f"{workload}: variants vs baseline")
        print_comparisons(store, workload)
    if args.no_dashboard:
        return EXIT_OK
    # 3. the dashboard
    from app.dashboard.command import DEFAULT_PORT, LOOPBACK, serve

    console.rule("the dashboard")
    return serve(store, LOOPBACK, DEFAULT_PORT)
