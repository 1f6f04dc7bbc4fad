"""The command line's shape: every command, argument and help text, and nothing heavy.

Only argparse is imported here, so `observatory --help` (and a usage error) answers without
loading pandas, DuckDB or torch; each command's module is imported when that command runs
(app/cli.py's HANDLERS).
"""
from __future__ import annotations

import argparse

from app.executors import EXECUTORS, SLURM_CLUSTERS  # names only

DEFAULT_PORT = 8501  # the dashboard's
LOOPBACK = "127.0.0.1"


def add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="PATH", help="the store (default: $OBSERVATORY_DB or ./observatory.duckdb)")


def add_format(parser: argparse.ArgumentParser, choices=("table", "json")) -> None:
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
    add_db(p)
    add_format(p)

    p = sub.add_parser("runs", help="list runs and imported traces", description="List every run and imported trace in the store.")
    add_db(p)
    add_format(p, ("table", "csv", "json"))

    p = sub.add_parser("report", help="analyses of one run", description="Time by category, GPU temporal and idle breakdowns, kernel launch statistics and host overhead of one run.")
    p.add_argument("run_id", metavar="RUN", nargs="?", help="a run id (a unique prefix is enough); without it, one summary line per run")
    p.add_argument("--definition", choices=("hta", "all_kernels"), default="hta", help="GPU time definition: Holistic Trace Analysis's (default) or every kernel in the trace")
    add_db(p)
    add_format(p)

    p = sub.add_parser("sql", help="run one read statement (SELECT ...) on the store",
                       description="Run one read statement on the store: SELECT (WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN). "
                       "Nothing is written: COPY, INSERT, ATTACH, INSTALL, SET ... are refused; to export, use --format csv > FILE. "
                       "Tables: runs, events, latency, attention_calls, telemetry, metrics, and the analysis views; see docs/schema.md.")
    p.add_argument("query", metavar="QUERY")
    add_db(p)
    add_format(p, ("table", "csv", "json"))

    add_demo(sub, add_db)
    add_workload_commands(sub, add_db, add_format)
    add_reproduce(sub, add_db, add_format)
    add_numerics(sub, add_db, add_format)
    add_diff(sub, add_db, add_format)
    add_dashboard(sub, add_db)
    return parser


def add_workload_commands(sub, add_db, add_format) -> None:
    p = sub.add_parser("list", help="workloads, their variants and presets", description="List the workloads, their variants (the first is the baseline) and size presets.")
    add_format(p)

    p = sub.add_parser("run", help="profile one workload and store the run", description="Build a workload from its config (random weights), time it, profile it and store the run.")
    p.add_argument("workload", metavar="WORKLOAD")
    p.add_argument("--variant", help="optimized variant (default: the baseline)")
    p.add_argument("--preset", default="tiny", help="size preset: tiny (tests, CPU) or paper (the published dimensions)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a workload parameter, repeatable (e.g. --param frames=8; `observatory list` shows each workload's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0, help="random weights and inputs (default 0)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--repeats", type=int, default=5, help="unprofiled timed iterations (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="unprofiled warm-up iterations, reported apart (default 1)")
    p.add_argument("--run-id", help=argparse.SUPPRESS)
    p.add_argument("--sweep", help=argparse.SUPPRESS)
    p.add_argument("--sweep-key", help=argparse.SUPPRESS)
    add_db(p)
    add_format(p)

    p = sub.add_parser("sweep", help="run a grid of workloads x variants x presets x parameters", description="Run every point of a sweep file (TOML); runs already done are skipped.")
    p.add_argument("file", metavar="FILE.toml")
    p.add_argument("--retry-failed", action="store_true", help="run again the points whose earlier run failed")
    add_executor(p)
    add_db(p)

    p = sub.add_parser("compare", help="speedup and category shifts: two runs, or a workload's variants vs its baseline", description="Compare RUN_A (baseline) with RUN_B, or with --workload the latest run of each variant with the latest baseline run.")
    p.add_argument("runs", nargs="*", metavar="RUN", help="RUN_A RUN_B")
    p.add_argument("--workload", help="compare each variant's latest run with the baseline's")
    add_db(p)
    add_format(p)


def add_executor(p) -> None:
    p.add_argument("--executor", choices=EXECUTORS, default="process",
                   help="process: each run in its own process (default; survives crashes, honours timeout_s and memory_limit_gb); "
                   "inline: each run in this process (no start-up cost per run); ray: each run a Ray task; "
                   "slurm: each run a Slurm job (submitit). On ray and slurm the store must be on a path every worker sees")
    g = p.add_argument_group("cluster executors (ray, slurm)")
    g.add_argument("--cpus-per-run", type=int, metavar="N", help="CPUs each run asks for (default 1)")
    g.add_argument("--gpus-per-run", type=int, metavar="N", help="GPUs each run asks for (default: 1 for device cuda, else 0)")
    g.add_argument("--address", metavar="ADDR", help="ray: the address of a running Ray cluster (default: start one on this machine)")
    g.add_argument("--partition", help="slurm: the partition to submit to (default: Slurm's)")
    g.add_argument("--time-min", type=int, metavar="MIN", help="slurm: each job's time limit in minutes (default: the sweep's "
                   "timeout_s, else 60)")
    g.add_argument("--slurm-cluster", choices=SLURM_CLUSTERS, help="slurm: slurm (default) or local: submitit's local executor, "
                   "every job on this machine (to try a sweep out)")


def add_demo(sub, add_db) -> None:
    p = sub.add_parser("demo", help="the main job: import ../shared/traces, profile both workloads, compare, open the dashboard",
                       description="Import the real GPU traces in ../shared/traces and print one summary line per run; profile both "
                       "workloads in their baseline and variants (sweeps/demo.toml) and compare them; then serve the dashboard.")
    p.add_argument("--no-dashboard", action="store_true", help="stop after the comparison instead of serving the dashboard")
    add_db(p)


def add_reproduce(sub, add_db, add_format) -> None:
    p = sub.add_parser("reproduce", help="a published study's findings from runs here, with a verdict each",
                       description="Run a study's sweeps (reusing runs already in the store at the same settings unless --fresh), "
                       "then print each finding: the published claim and figure, ours, and a verdict (holds, differs, gpu-only).")
    p.add_argument("study", nargs="?", metavar="STUDY", help="a study name (see --list)")
    p.add_argument("--all", action="store_true", help="every study")
    p.add_argument("--list", action="store_true", help="list the studies and stop")
    p.add_argument("--preset", default="tiny", help="size preset of every run: tiny (default, CPU) or paper (the published dimensions)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--fresh", action="store_true", help="run every point again instead of reusing runs at the same settings")
    p.add_argument("--executor", choices=("inline", "process"), default="inline",
                   help="inline (default: every run in this process, no start-up cost per run) or process (one process per run)")
    add_db(p)
    add_format(p)


def add_dashboard(sub, add_db) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "dashboard",
        help="browse the store in a web dashboard",
        description="Start the Observatory dashboard (Streamlit) over the store: runs, breakdowns, comparisons, sequence "
        "lengths, device time, SQL and traces. It reads the store read-only, so sweeps and imports can write meanwhile "
        "(Refresh shows their runs).",
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to serve on (default {DEFAULT_PORT})")
    p.add_argument(
        "--host", default=LOOPBACK, metavar="ADDRESS",
        help=f"address to bind (default {LOOPBACK}: this machine only). Another address, e.g. 0.0.0.0, lets anyone who can "
        "reach it read the whole store, SQL box included.",
    )
    add_db(p)
    return p


DTYPE_NAMES = {"bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16", "fp32": "fp32", "float32": "fp32"}


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_numerics(sub, add_db, add_format) -> None:
    p = sub.add_parser("deviation", help="attention's deviation from a float64 reference, per implementation",
                       description="Max, mean and std of |output - reference| of plain attention, torch SDPA's flash and math "
                       "backends and a tiled flash attention, each computed in --dtype, against plain attention in float64 "
                       "(random q, k, v; the attention-numerics workload's kernel mode, computed directly, nothing stored).")
    p.add_argument("--dtype", required=True, choices=tuple(DTYPE_NAMES), help="the compared dtype: bf16, fp16 or fp32")
    p.add_argument("--seq-len", type=_at_least_one, required=True, help="query and key length")
    p.add_argument("--block-size", type=_at_least_one, required=True, help="the tiled flash attention's key/value block (positions)")
    p.add_argument("--heads", type=_at_least_one, default=1, help="attention heads (default 1)")
    p.add_argument("--head-dim", type=_at_least_one, default=64, help="head dimension (default 64)")
    p.add_argument("--batch", type=_at_least_one, default=1, help="batch size (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random q, k, v (default 0)")
    add_format(p)


def add_diff(sub, add_db, add_format) -> None:
    p = sub.add_parser("diff", help="what changed between two traces: event counts and durations per name",
                       description="Compare RUN_A (control) with RUN_B (test) as Holistic Trace Analysis's TraceDiff does: per event "
                       "name, the count and total duration in each and the change (added, deleted, increased, decreased, unchanged); "
                       "also per operator category and per kernel.")
    p.add_argument("runs", nargs=2, metavar="RUN", help="RUN_A RUN_B (a unique prefix is enough)")
    p.add_argument("--scope", choices=("first_step", "steps", "trace"), default="first_step",
                   help="events compared: the first ProfilerStep of each run (HTA's default), every ProfilerStep, or the whole trace")
    add_db(p)
    add_format(p)
