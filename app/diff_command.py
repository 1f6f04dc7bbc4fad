"""`observatory diff RUN_A RUN_B`: what changed between two traces, per event name, category and kernel."""
from __future__ import annotations

import argparse

import pandas as pd

from app.context import EXIT_OK, open_store, resolve_run
from app.output import console, print_frame, print_json

TOP_NAMES = 25
NAME_WIDTH = 70


def _short(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(name=frame["name"].map(lambda n: n if len(n) <= NAME_WIDTH else n[: NAME_WIDTH - 3] + "..."))


def cmd_diff(args: argparse.Namespace) -> int:
    from store.analysis.trace_diff import diff_document

    store = open_store(args)
    with store.connect() as con:
        run_a, run_b = (resolve_run(con, r) for r in args.runs)
    with store.connect_runs([run_a, run_b]) as con:
        document = diff_document(con, run_a, run_b, args.scope)
    if args.format == "json":
        print_json(document)
        return EXIT_OK
    counts = ", ".join(f"{n} {change}" for change, n in document["ops_diff"].items())
    console.print(f"[bold]{run_b}[/bold] vs {run_a} ({args.scope.replace('_', ' ')}): {counts}", highlight=False)
    names = pd.DataFrame(document["names"])
    if not names.empty:
        changed = names[names["change"] != "unchanged"]
        shown = (changed if not changed.empty else names).head(TOP_NAMES)
        print_frame(_short(shown), title=f"event names by duration change (B - A), top {TOP_NAMES}; all: --format json")
    if document["categories"]:
        print_frame(pd.DataFrame(document["categories"]), title="by side and operator category")
    kernels = pd.DataFrame(document["kernels"])
    if kernels.empty:
        console.print("kernels: absent (no device events in the compared events)")
    else:
        print_frame(_short(kernels.head(TOP_NAMES)), title=f"kernels by duration change, top {TOP_NAMES}")
    return EXIT_OK
