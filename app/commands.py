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

from app.context import EXIT_ERROR, EXIT_OK, open_store, resolve_run


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


def cmd_report(args: argparse.Namespace) -> int:
    from app.report_view import print_report
    from store.analysis.report import build_report

    store = open_store(args)
    if args.run_id is None:
        print_runs_summary(store, args.definition, args.format)
        return EXIT_OK
    with store.connect() as con:
        run_id = resolve_run(con, args.run_id)
    with store.connect_runs([run_id]) as con:  # reads only this run's files
        report = build_report(con, run_id, definition=args.definition)
    if args.format == "json":
        print_json(report)
    else:
        print_report(report)
    return EXIT_OK


def print_runs_summary(store: Store, definition: str = "hta", fmt: str = "table") -> None:
    """One line per run: `observatory report` without a run."""
    from store.analysis.summary import runs_summary

    with store.connect() as con:
        summary = runs_summary(con, definition)
    if fmt == "json":
        print_json(records(summary))
    else:
        print_frame(summary, title=f"{len(summary)} runs in {store.path} (`observatory report RUN` for one run)")


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


__all__ = ["cmd_ingest", "cmd_runs", "cmd_report", "cmd_sql", "print_runs_summary", "StoreError"]
