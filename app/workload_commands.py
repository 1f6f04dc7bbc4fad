"""Workload commands: list, run, sweep, compare."""
from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from app.context import EXIT_ERROR, EXIT_OK, open_store, resolve_run
from app.executors import CLUSTER_EXECUTORS, ClusterOptions
from app.output import console, err_console, print_frame, print_json, records


def cmd_list(args: argparse.Namespace) -> int:
    from workloads.base import all_workloads

    rows = [
        {"workload": w.name, "kind": w.kind, "baseline": w.baseline, "variants": ", ".join(w.variants[1:]), "presets": ", ".join(w.presets),
         "params": ", ".join(f"{k}={v}" for k, v in w.presets[next(iter(w.presets))].as_dict().items()), "study": w.study}
        for w in all_workloads()
    ]
    print_frame(pd.DataFrame(rows), args.format, title="workloads (`observatory run WORKLOAD --variant V`)")
    return EXIT_OK


def _request(args: argparse.Namespace):
    from app.runner import RunRequest
    from workloads.base import RunOptions, parse_overrides

    options = RunOptions(preset=args.preset, variant=args.variant, batch=args.batch, device=args.device, dtype=args.dtype,
                         seed=args.seed, params=parse_overrides(args.param))
    return RunRequest(args.workload, options, repeats=args.repeats, warmup=args.warmup, sweep=args.sweep, sweep_key=args.sweep_key)


def cmd_run(args: argparse.Namespace) -> int:
    from app.runner import RunFailed, execute
    from store.analysis.run_summary import run_summary

    store = open_store(args)
    request = _request(args)
    try:
        run_id = execute(store, request, run_id=args.run_id)
    except RunFailed as exc:
        if args.format == "json":
            print_json({"run_id": exc.run_id, "status": "failed", "error": exc.error})
        err_console.print(f"observatory run: error: {exc} (stored as a failed run)", markup=False, highlight=False)
        return EXIT_ERROR
    with store.connect() as con:
        summary = run_summary(con, run_id)
    if args.format == "json":
        print_json({"run_id": run_id, "status": "ok", **summary})
    else:
        _print_run_summary(summary)
        console.print(f"run id: {run_id}  (observatory report {run_id})", highlight=False)
    return EXIT_OK


def _print_run_summary(summary: dict) -> None:
    run = summary["run"]
    console.print(f"[bold]{run['workload']} {run['variant']}[/bold] preset={run['preset']} batch={run['batch']} {run['dtype']} on {run['device']} ({run.get('device_name') or ''})", highlight=False)
    print_frame(pd.DataFrame(summary["latency"]), title="latency (unprofiled timed repeats)")
    if summary["categories"]:
        print_frame(pd.DataFrame(summary["categories"]), title="CPU operator time by category (profiled pass, self time)")
    for line in summary["notes"]:
        console.print(line, highlight=False)


def cmd_sweep(args: argparse.Namespace) -> int:
    cluster = ClusterOptions(address=args.address, partition=args.partition, time_min=args.time_min, cpus_per_run=args.cpus_per_run,
                             gpus_per_run=args.gpus_per_run, slurm_cluster=args.slurm_cluster)
    print_sweep(open_store(args), Path(args.file), args.executor, args.retry_failed, cluster=cluster)
    return EXIT_OK


def print_sweep(store, file: Path, executor: str = "process", retry_failed: bool = False,
                preset: str | None = None, device: str | None = None, cluster: ClusterOptions = ClusterOptions()) -> dict:
    """Run a sweep file's points not yet done, with a progress bar; {sweep key: outcome}."""
    from app.sweep import done_keys, load_sweep, run_sweep

    # fails, naming file and line, before anything runs (a cluster's workers have devices this machine may lack)
    sweep = load_sweep(file, preset=preset, device=device, device_here=executor not in CLUSTER_EXECUTORS)
    todo = len(sweep.runs) - len(done_keys(store, sweep, retry_failed))
    console.print(f"sweep {sweep.name!r}: {len(sweep.runs)} runs, {len(sweep.runs) - todo} already done, {todo} to run", highlight=False)
    counts = Counter()
    columns = (TextColumn("run"), MofNCompleteColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=err_console) as progress:
        task = progress.add_task("", total=todo)

        def finished(run, outcome) -> None:
            counts[outcome.status] += 1
            _say_outcome(progress.console, run.label, outcome)
            progress.advance(task)

        outcomes = run_sweep(store, sweep, executor, retry_failed, on_start=lambda run: progress.update(task, description=run.label),
                             on_outcome=finished, cluster=cluster)
    others = [f"{counts[status]} {what}" for status, what in SWEPT_BY_OTHERS.items() if counts[status]]
    console.print(f"sweep {sweep.name!r}: {counts['ok']} runs stored, {counts['failed']} failed (stored with their errors)"
                  + "".join(f", {text}" for text in others), highlight=False)
    return outcomes


SWEPT_BY_OTHERS = {"busy": "being run by another sweep", "done": "stored meanwhile by another sweep"}


def _say_outcome(out, label: str, outcome) -> None:
    if outcome.taken_from is not None:
        out.print(f"took over the claim on {label}: its sweep ({outcome.taken_from}) is gone", markup=False, highlight=False)
    if outcome.status == "failed":
        out.print(f"failed: {label}: {outcome.detail}", markup=False, highlight=False)
    elif outcome.status in SWEPT_BY_OTHERS:
        out.print(f"skipped: {label}: {outcome.detail}", markup=False, highlight=False)


def cmd_compare(args: argparse.Namespace) -> int:
    store = open_store(args)
    if args.workload:
        if args.runs:
            raise ValueError("give either RUN_A RUN_B or --workload, not both")
        print_comparisons(store, args.workload, args.format)
        return EXIT_OK
    if len(args.runs) != 2:
        raise ValueError(f"compare takes two runs (RUN_A RUN_B) or --workload W; got {len(args.runs)} run(s)")
    with store.connect() as con:
        pairs = [(resolve_run(con, args.runs[0]), resolve_run(con, args.runs[1]), None)]
    _print_results(store, pairs, args.format)
    return EXIT_OK


def print_comparisons(store, workload: str, fmt: str = "table") -> None:
    """Each variant's latest run against the latest baseline run with the same settings."""
    from store.analysis.compare import latest_per_variant
    from workloads.base import get

    with store.connect() as con:
        baseline, others = latest_per_variant(con, workload, get(workload).baseline)
    pairs = [(baseline, run_id, variant) for variant, run_id in sorted(others.items())]
    if not pairs:
        raise ValueError(f"--workload {workload}: no variant runs with the baseline's settings yet (preset, batch, dtype, device, parameters)")
    _print_results(store, pairs, fmt)


def _print_results(store, pairs: list[tuple[str, str, str | None]], fmt: str) -> None:
    from store.analysis.compare import category_shift, speedup

    with store.connect_runs(sorted({r for pair in pairs for r in pair[:2]})) as con:
        results = [
            {"baseline": a, "run": b, "variant": v, "speedup": records(speedup(con, a, b)), "category_shift": records(category_shift(con, a, b))}
            for a, b, v in pairs
        ]
    if fmt == "json":
        print_json(results)
        return
    for result in results:
        console.print(f"[bold]{result['run']}{' (' + result['variant'] + ')' if result['variant'] else ''}[/bold] vs baseline {result['baseline']}", highlight=False)
        if result["speedup"]:
            print_frame(pd.DataFrame(result["speedup"]), title="speedup = baseline median / median (range from p10-p90 bands)")
        else:
            console.print("no latency rows (imported traces carry none): category shift only")
        shift = pd.DataFrame(result["category_shift"])
        if not shift.empty:
            print_frame(shift, title="where time moved (operator time by category)")
