"""Dashboard speed on a big store: every page ready in under 1 s with 1,000 runs and 10M events.

1. A source store of real runs: the GPU traces in ../shared/traces (imported) and profiled CPU
   runs of both workloads (`observatory run`, baseline and variants), built once into
   bench/out/dashboard-source.duckdb (or --source PATH, e.g. a store `observatory demo` filled).
2. The big store, bench/out/dashboard-1000.duckdb: 1,000 runs written through the store API
   (Store.stage() / StagedRun.write / commit), each a copy of a real run's tables under a new
   run id, date, host and rank, about 10M events in all; 2% of them failed runs (no tables but
   the run row, with an error), and GPU copies carry synthetic NVML telemetry.
3. Each page timed with Streamlit's AppTest (the page's script run, server side, no browser),
   cold (caches cleared, a fresh connection) and warm (cached), and the data functions a page
   calls timed on their own, against the 1 s target.

    .venv/bin/python bench/bench_dashboard.py                 # build what is missing, then time
    .venv/bin/python bench/bench_dashboard.py --rebuild       # rebuild the big store
    .venv/bin/python bench/bench_dashboard.py --source /tmp/x/observatory.duckdb
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the project's packages

from store.db import Store  # noqa: E402
from store.schema import TABLES  # noqa: E402

OUT = ROOT / "bench" / "out"
TRACES = ROOT.parent / "shared" / "traces"
TARGET_S = 1.0
RUNS = 1000
TARGET_EVENTS = 10_000_000
SOURCE_TRACES = [
    "hta/nccl_parser_config/nccl_data.json.gz",
    "hta/ns_resolution_trace/rank-0.Apr_03_18_51_38.1102.pt.trace.json.gz",
    "hta/negative_queue_length_values_check/rank0.json.gz",
    "hta/trace_filter/sampled_rank-0.json.gz",
    "hta/trace_filter/sampled_rank-1.json.gz",
    "hta/critical_path/alexnet/benchmark_result_2869224_1695835535_trace.json.gz",
    "hta/amd_trace/mi250_minitoy_train_ROCm6_2_kineto.json.gz",
    "hta/with_gpu_user_annotation/step_based_trace_2543932.json.gz",
    "hta/cpu_only/rank-34.Jul_15_10_52_41.1074.pt.trace.json.gz",
    "kineto/resnet50_num_workers_0/worker0.1623143566756.pt.trace.json.gz",
]
SOURCE_RUNS = [("llm-decode", "eager"), ("llm-decode", "sdpa"), ("llm-decode", "no-kv-cache"), ("diffusion-t2i", "eager"), ("diffusion-t2i", "sdpa")]
OBSERVATORY = [sys.executable, "-m", "app.cli"]


# -- 1. the source store ------------------------------------------------------------------
def build_source(path: Path) -> Store:
    from store.ingest import ingest_file

    store = Store(path).ensure()
    for relative in SOURCE_TRACES:
        ingest_file(store, TRACES / relative, label="bench-source")
    for workload, variant in SOURCE_RUNS:
        print(f"  profiling {workload} {variant} ...", flush=True)
        subprocess.run([*OBSERVATORY, "run", workload, "--variant", variant, "--db", str(path), "--format", "json"],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return store


def load_templates(store: Store) -> list[dict[str, pa.Table]]:
    """Each ok run of the source store as its tables (pyarrow), read once."""
    templates = []
    for folder in sorted(store.runs_dir.iterdir()):
        if folder.name.startswith("_") or not (folder / "runs.parquet").exists():
            continue
        tables = {t: pa.parquet.read_table(folder / f"{t}.parquet") for t in TABLES if (folder / f"{t}.parquet").exists()}
        if tables["runs"].column("status")[0].as_py() == "ok" and "events" in tables:
            templates.append(tables)
    if not templates:
        raise SystemExit(f"{store.path}: no ok runs with events to copy")
    return templates


# -- 2. the big store ---------------------------------------------------------------------
def _telemetry(run_id: str, events: pa.Table, rng: random.Random) -> pa.Table:
    """NVML-like samples every 50 ms over the trace's device span (synthetic, plausible ranges)."""
    start = pc.min(events.column("ts_us")).as_py() or 0.0
    end = pc.max(events.column("ts_us")).as_py() or start
    count = max(10, min(400, int((end - start) / 50_000)))
    ts = [start + i * (end - start) / (count - 1) for i in range(count)]
    util = [min(100.0, max(0.0, 60 + 35 * rng.uniform(-1, 1))) for _ in ts]
    return pa.table({
        "run_id": [run_id] * count, "ts_us": ts, "gpu_index": [0] * count, "gpu_name": ["NVIDIA A100-SXM4-80GB"] * count,
        "gpu_util_pct": util, "memory_used_bytes": [int(30e9 + 20e9 * u / 100) for u in util],
        "memory_total_bytes": [80 * 2**30] * count, "power_w": [90 + 3.1 * u for u in util],
        "sm_clock_mhz": [1410.0] * count, "temperature_c": [45 + 0.3 * u for u in util],
    })


def _with_run_id(table: pa.Table, run_id: str) -> pa.Table:
    return table.set_column(table.schema.get_field_index("run_id"), "run_id", pa.array([run_id] * table.num_rows, pa.string()))


def _pick(templates: list[dict], rng: random.Random) -> list[int]:
    """RUNS template indexes whose events sum to about TARGET_EVENTS (small traces fill the gap)."""
    sizes = [t["events"].num_rows for t in templates]
    picks = [rng.randrange(len(templates)) for _ in range(RUNS)]
    by_size = sorted(range(len(templates)), key=sizes.__getitem__)
    total = sum(sizes[i] for i in picks)
    for slot in range(RUNS):  # too many events: swap big picks for smaller ones until near the target
        if total <= TARGET_EVENTS * 1.02:
            break
        i = picks[slot]
        smaller = [j for j in by_size if sizes[j] < sizes[i]]
        if smaller:
            j = smaller[rng.randrange(len(smaller))]
            picks[slot], total = j, total - sizes[i] + sizes[j]
    rng.shuffle(picks)  # big and small runs spread over the dates
    return picks


def build_big(path: Path, templates: list[dict], seed: int = 0) -> None:
    rng = random.Random(seed)
    store = Store(path).ensure()
    start = datetime(2026, 1, 5, tzinfo=timezone.utc)
    total = 0
    for n, index in enumerate(_pick(templates, rng)):
        tables = templates[index]
        run = tables["runs"].to_pylist()[0]
        run_id = f"{run['run_id'][:2]}bench-{n:04d}-{rng.getrandbits(24):06x}"
        when = start + timedelta(minutes=37 * n)
        failed = rng.random() < 0.02
        run.update(run_id=run_id, started_at=when, stored_at=when + timedelta(seconds=40), host=f"node-{n % 16:02d}")
        if run["source"] == "import":
            run.update(label=f"cluster-job-{n // 50:02d}", rank=n % 8, world_size=8)
        if failed:
            run.update(status="failed", error="RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", event_count=0)
        with store.stage() as staged:
            staged.write("runs", pa.Table.from_pylist([run], schema=TABLES["runs"]))
            if not failed:
                for name, table in tables.items():
                    if name != "runs":
                        staged.write(name, _with_run_id(table, run_id))
                if run["device"] in ("cuda", "rocm") and "telemetry" not in tables:
                    staged.write("telemetry", _telemetry(run_id, tables["events"], rng))
                total += tables["events"].num_rows
            staged.commit(run_id)
        if n % 100 == 99:
            print(f"  {n + 1} runs, {total:,} events", flush=True)
    print(f"big store: {RUNS} runs, {total:,} events at {path}")


# -- 3. timing ----------------------------------------------------------------------------
PAGES = ["runs", "breakdown", "compare", "seqlen", "device", "sql", "trace"]


def time_pages(path: Path, repeats: int) -> list[dict]:
    """Seconds per page with AppTest: cold (caches cleared) and warm (the same session again)."""
    os.environ["OBSERVATORY_DB"] = str(path)
    from streamlit.testing.v1 import AppTest

    from app.dashboard import data

    results = []
    for page in PAGES:
        cold, warm = [], []
        for _ in range(repeats):
            data.clear_caches()
            at = AppTest.from_file(str(ROOT / "app" / "dashboard" / "main.py"), default_timeout=120)
            at.switch_page(f"pages/{page}.py")
            t0 = time.perf_counter()
            at.run()
            cold.append(time.perf_counter() - t0)
            _check(at, page)
            t0 = time.perf_counter()
            at.run()
            warm.append(time.perf_counter() - t0)
        results.append({"page": page, "cold_s": min(cold), "warm_s": min(warm)})
    return results


def _check(at, page: str) -> None:
    if at.exception:
        raise SystemExit(f"page {page}: exception {at.exception[0].message}")


def time_data_functions(path: Path) -> list[dict]:
    """The data functions behind each page, uncached, one fresh connection each."""
    from app.dashboard import data

    results = []
    for name, call in data.bench_calls(str(path)):
        data.clear_caches()
        t0 = time.perf_counter()
        call()
        results.append({"function": name, "seconds": time.perf_counter() - t0})
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="a store of real runs to copy (default: build bench/out/dashboard-source.duckdb)")
    parser.add_argument("--db", type=Path, default=OUT / "dashboard-1000.duckdb", help="the big store (built when missing)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the big store")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per page (the best is reported)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    big = Store(args.db)
    if args.rebuild or not big.exists():
        if big.parts.exists():
            import shutil

            shutil.rmtree(big.parts)
            big.path.unlink(missing_ok=True)
        source_path = args.source or OUT / "dashboard-source.duckdb"
        source = Store(source_path)
        if not source.exists():
            print(f"building the source store {source_path} (imports and 5 profiled runs, a few minutes)")
            build_source(source_path)
        build_big(args.db, load_templates(source))
    with big.connect() as con:
        runs, events = con.execute("SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM events)").fetchone()
    print(f"store {args.db}: {runs:,} runs, {events:,} events, {len(list(big.runs_dir.iterdir())) - 1} run folders")
    print("\ndata functions (uncached, fresh connection):")
    for row in time_data_functions(args.db):
        print(f"  {row['function']:<40} {row['seconds']:7.3f} s")
    print(f"\npages (AppTest script run, best of {args.repeats}; target {TARGET_S:.1f} s):")
    print(f"  {'page':<12} {'cold':>8} {'warm':>8}")
    failed = False
    for row in time_pages(args.db, args.repeats):
        verdict = "ok" if row["cold_s"] < TARGET_S else "SLOW"
        failed |= verdict != "ok"
        print(f"  {row['page']:<12} {row['cold_s']:7.3f}s {row['warm_s']:7.3f}s  {verdict}")
    print(json.dumps({"target_s": TARGET_S, "all_under_target": not failed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
