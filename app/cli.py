"""`observatory`: the command line. Exit codes: 0 ok, 1 error, 2 usage."""
from __future__ import annotations

import argparse
import sys

from app.output import err_console

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="PATH", help="the store (default: $OBSERVATORY_DB or ./observatory.duckdb)")


def _add_format(parser: argparse.ArgumentParser, choices=("table", "json")) -> None:
    parser.add_argument("--format", choices=choices, default="table", help="output format (default: table)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="observatory",
        description="Profile ML workloads and import their traces into one DuckDB store; query, compare and report.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("ingest", help="import Kineto/Chrome traces (files or folders)", description="Import Kineto / Chrome trace JSON (.json, .json.gz, TensorBoard logdirs, multi-rank folders) into the store.")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--label", help="a label stored with every run this import creates")
    _add_db(p)
    _add_format(p)

    p = sub.add_parser("runs", help="list runs and imported traces", description="List every run and imported trace in the store.")
    _add_db(p)
    _add_format(p, ("table", "csv", "json"))

    p = sub.add_parser("report", help="analyses of one run", description="Time by category, GPU temporal and idle breakdowns, kernel launch statistics and host overhead of one run.")
    p.add_argument("run_id", metavar="RUN", nargs="?", help="a run id (a unique prefix is enough); without it, one summary line per run")
    p.add_argument("--definition", choices=("hta", "all_kernels"), default="hta", help="GPU time definition: Holistic Trace Analysis's (default) or every kernel in the trace")
    _add_db(p)
    _add_format(p)

    p = sub.add_parser("sql", help="run one read statement (SELECT ...) on the store",
                       description="Run one read statement on the store: SELECT (WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN). "
                       "Nothing is written: COPY, INSERT, ATTACH, INSTALL, SET ... are refused; to export, use --format csv > FILE. "
                       "Tables: runs, events, latency, attention_calls, telemetry, metrics, and the analysis views; see docs/schema.md.")
    p.add_argument("query", metavar="QUERY")
    _add_db(p)
    _add_format(p, ("table", "csv", "json"))

    from app import demo, diff_command, reproduce, workload_commands
    from app.dashboard import command as dashboard_command

    demo.add_parser(sub, _add_db)
    workload_commands.add_parsers(sub, _add_db, _add_format)
    diff_command.add_parser(sub, _add_db, _add_format)
    reproduce.add_parsers(sub, _add_db, _add_format)
    dashboard_command.add_parser(sub, _add_db)
    return parser


# The module that holds each command's `cmd_<name>`.
HANDLERS = {
    "ingest": "app.commands", "runs": "app.commands", "report": "app.commands", "sql": "app.commands",
    "demo": "app.demo",
    "list": "app.workload_commands", "run": "app.workload_commands", "sweep": "app.workload_commands", "compare": "app.workload_commands",
    "diff": "app.diff_command",
    "reproduce": "app.reproduce",
    "dashboard": "app.dashboard.command",
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 0 for --help, 2 for usage errors
        return int(exc.code or 0)
    from importlib import import_module

    handler = getattr(import_module(HANDLERS[args.command]), f"cmd_{args.command}")
    try:
        return handler(args)
    except KeyboardInterrupt:
        err_console.print("observatory: interrupted; nothing half-written was kept")
        return EXIT_ERROR
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        err_console.print(f"observatory {args.command}: error: {exc}", markup=False, highlight=False)
        return EXIT_ERROR


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
