"""The store commands: ingest, runs, report, sql."""
from __future__ import annotations

import argparse
from pathlib import Path

import duckdb
from rich.progress import BarColumn, Progress, TaskProgressColumn, TimeRemainingColumn

from app.output import console, err_console, print_arrow, print_frame, print_json, records
from store import summaries
from store.db import Store, StoreError
from store.ingest import find_traces, ingest_file
from store.read_statement import check_read_statement, first_line
from store.trace_reader import STREAM_THRESHOLD_BYTES, TraceError, decompressed_size

EXIT_OK, EXIT_ERROR = 0, 1


def open_store(args: argparse.Namespace) -> Store:
    return Store(args.db) if args.db else Store()


def _ingest_one(store: Store, path: Path, label: str | None, show_progress: bool):
    if not show_progress or decompressed_size(path) <= STREAM_THRESHOLD_BYTES:
        return ingest_file(store, path, label=label)
    columns = ("[progress.description]{task.description}", BarColumn(), TaskProgressColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        tasks = {stage: bar.add_task(f"{stage} {path.name}", total=None, start=False) for stage in ("reading", "writing")}

        def show(stage: str, done: int, total: int) -> None:
            bar.start_task(tasks[stage])
            bar.update(tasks[stage], completed=done, total=total)

        return ingest_file(store, path, label=label, progress=show)


def cmd_ingest(args: argparse.Namespace) -> int:
    store = open_store(args)  # created by the first import that succeeds, not before
    results, failures = [], []
    for given in args.paths:
        path = Path(given)
        if not path.exists():
            failures.append(f"{path}: no such file or folder")
            continue
        files = find_traces(path)
        if not files:
            failures.append(f"{path}: no trace files (*.json, *.json.gz) in this folder")
        for file in files:
            try:
                results.append(_ingest_one(store, file, args.label, show_progress=args.format == "table"))
            except (TraceError, OSError) as exc:
                failures.append(str(exc) if isinstance(exc, TraceError) else f"{file}: {exc.strerror or exc}")
    if any(r.created for r in results):
        summaries.refresh(store)
    for r in results:
        for warning in r.warnings:
            err_console.print(f"observatory ingest: warning: {r.path}: {warning}", markup=False, highlight=False)
    for failure in failures:
        err_console.print(f"observatory ingest: error: {failure}", markup=False, highlight=False)
    if args.format == "json":
        print_json(
            {
                "runs": [{"run_id": r.run_id, "path": str(r.path), "created": r.created, "events": r.event_count, "warnings": r.warnings}
                         for r in results],
                "errors": failures,
            }
        )
    else:
        for r in results:
            what = f"{r.event_count} events" if r.created else "already in the store"
            console.print(f"{r.run_id}  {r.path}  ({what})", markup=False, highlight=False)
    return EXIT_ERROR if failures else EXIT_OK


RUNS_SQL = """
SELECT run_id, source, coalesce(workload, label) AS workload_or_label, variant, preset, device, device_name, rank,
       status, event_count, started_at, error
FROM runs ORDER BY stored_at DESC
"""


def cmd_runs(args: argparse.Namespace) -> int:
    store = open_store(args)
    if not store.exists():
        console.print(f"No store at {store.path} yet: `observatory ingest PATH` or `observatory run WORKLOAD` fills it.")
        return EXIT_OK
    with store.connect() as con:
        print_arrow(con.execute(RUNS_SQL).to_arrow_table(), args.format, title=f"runs in {store.path}")
    return EXIT_OK


def resolve_run(con: duckdb.DuckDBPyConnection, prefix: str) -> str:
    matches = [r[0] for r in con.execute("SELECT run_id FROM runs WHERE starts_with(run_id, ?) ORDER BY run_id", [prefix]).fetchall()]
    if not matches:
        raise ValueError(f"run {prefix!r}: no such run in the store (see `observatory runs`)")
    if len(matches) > 1 and prefix not in matches:
        raise ValueError(f"run {prefix!r} is ambiguous: {', '.join(matches[:5])}{' ...' if len(matches) > 5 else ''}")
    return prefix if prefix in matches else matches[0]


def cmd_report(args: argparse.Namespace) -> int:
    from app.report_view import print_report
    from store.analysis.report import build_report

    store = open_store(args)
    if args.run_id is None:
        return _print_summary(store, args)
    with store.connect() as con:
        run_id = resolve_run(con, args.run_id)
    with store.connect_runs([run_id]) as con:  # reads only this run's files
        report = build_report(con, run_id, definition=args.definition)
    if args.format == "json":
        print_json(report)
    else:
        print_report(report)
    return EXIT_OK


def _print_summary(store: Store, args: argparse.Namespace) -> int:
    from store.analysis.summary import runs_summary

    with store.connect() as con:
        summary = runs_summary(con, args.definition)
    if args.format == "json":
        print_json(records(summary))
    else:
        print_frame(summary, title=f"{len(summary)} runs in {store.path} (`observatory report RUN` for one run)")
    return EXIT_OK


SHARED_TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job: import the shared real traces into the store and print the summary report."""
    if not SHARED_TRACES.is_dir():
        raise ValueError(f"{SHARED_TRACES}: the shared traces are not there (expected beside the project folder)")
    store = open_store(args).ensure()
    console.print(f"importing the real GPU traces under {SHARED_TRACES} into {store.path}", highlight=False)
    created = skipped = 0
    for file in find_traces(SHARED_TRACES):
        try:
            result = ingest_file(store, file, label="shared-traces")
            created += result.created
        except TraceError as exc:
            skipped += 1
            console.print(f"  not imported: {exc}", markup=False, highlight=False)
    console.print(f"{created} new runs imported, {skipped} files not imported (reasons above)")
    summaries.refresh(store)
    summary_args = argparse.Namespace(db=args.db, run_id=None, definition="hta", format="table")
    _print_summary(store, summary_args)
    _demo_sweep(args)
    if args.no_dashboard:
        return EXIT_OK
    from app.dashboard.command import DEFAULT_PORT, LOOPBACK, cmd_dashboard

    console.rule("the dashboard")
    return cmd_dashboard(argparse.Namespace(db=str(store.path), port=DEFAULT_PORT, host=LOOPBACK))


DEMO_SWEEP = Path(__file__).resolve().parents[1] / "sweeps" / "demo.toml"


def _demo_sweep(args: argparse.Namespace) -> int:
    """Profile both workloads (baseline and variants) on this machine and compare them."""
    from app.workload_commands import cmd_compare, cmd_sweep

    console.rule("profiling our own workloads")
    cmd_sweep(argparse.Namespace(file=str(DEMO_SWEEP), db=args.db, retry_failed=False))
    for workload in ("diffusion-t2i", "llm-decode"):
        console.rule(f"{workload}: variants vs baseline")
        cmd_compare(argparse.Namespace(db=args.db, runs=[], workload=workload, format="table"))


SQL_REFUSED_BECAUSE = "`observatory sql` only reads; to export, use --format csv > FILE (or --format json)"


def cmd_sql(args: argparse.Namespace) -> int:
    check_read_statement(args.query, SQL_REFUSED_BECAUSE)
    store = open_store(args)
    with store.connect() as con:
        try:
            table = con.execute(args.query).to_arrow_table()
        except duckdb.Error as exc:
            raise ValueError(f"query failed: {first_line(exc)}") from None
    print_arrow(table, args.format)
    return EXIT_OK


__all__ = ["cmd_ingest", "cmd_runs", "cmd_report", "cmd_sql", "StoreError"]
