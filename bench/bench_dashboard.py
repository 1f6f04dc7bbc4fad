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
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet  # noqa: F401  (pa.parquet)

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
        done = subprocess.run([*OBSERVATORY, "run", workload, "--variant", variant, "--db", str(path), "--format", "json"],
                              cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"observatory run {workload} --variant {variant} failed:\n{done.stderr[-2000:]}")
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


def _largest_gpu_run(path: Path) -> str:
    with Store(path).connect() as con:
        return con.execute(
            "SELECT run_id FROM runs WHERE status = 'ok' AND device <> 'cpu' ORDER BY event_count DESC, run_id LIMIT 1"
        ).fetchone()[0]


def time_pages(path: Path, run_id: str, repeats: int) -> list[dict]:
    """Seconds per page script run with AppTest: cold (caches cleared) and warm (the same again)."""
    from streamlit.logger import set_log_level
    from streamlit.testing.v1 import AppTest

    from app.dashboard import data

    results = []
    for page in PAGES:
        cold, warm = [], []
        for _ in range(repeats):
            at = AppTest.from_file(str(ROOT / "app" / "dashboard" / "main.py"), default_timeout=600)
            at.session_state["run_id"] = run_id  # the biggest GPU run: the Device, Breakdown and Trace pages' worst case
            at.run()
            at.switch_page(f"page_scripts/{page}.py")
            set_log_level("error")
            data.clear_caches()
            t0 = time.perf_counter()
            at.run()
            cold.append(time.perf_counter() - t0)
            if at.exception:
                raise SystemExit(f"page {page}: {at.exception[0].message}")
            t0 = time.perf_counter()
            at.run()
            warm.append(time.perf_counter() - t0)
        results.append({"page": page, "cold_s": min(cold), "warm_s": min(warm)})
    return results


def data_calls(path: str, run_id: str) -> list[tuple[str, object]]:
    """The reads behind each page, as (name, call)."""
    from app.dashboard import data
    from app.dashboard.sandbox import run_query
    from store.analysis.compare import pair_latest

    runs = data.runs(path)  # the runs list a page reads first (timed on its own below); the other reads answer for its runs

    def compare():
        base, others = pair_latest(runs, "llm-decode", "eager")
        data.latency(path, (base, *others.values()))
        for other in others.values():
            data.comparison(path, base, other)

    def seqlen():
        recorded = data.attention_runs(path, runs)
        data.attention_calls(path, recorded["run_id"].iloc[0])

    return [
        ("runs (the runs table)", lambda: data.runs(path)),
        ("category_times (all runs)", lambda: data.category_times(path, runs)),
        ("top_kernels (kernel_stats, 1 run)", lambda: data.top_kernels(path, run_id)),
        ("top_operators (1 run)", lambda: data.top_operators(path, run_id)),
        ("compare llm-decode (latest, latency, speedup, shift)", compare),
        ("attention calls (1 run)", seqlen),
        ("device_breakdowns hta (1 run)", lambda: data.device_breakdowns(path, run_id, "hta")),
        ("idle_gaps hta (1 run)", lambda: data.idle_gaps(path, run_id, "hta")),
        ("telemetry (1 run)", lambda: data.telemetry(path, run_id)),
        ("host_overhead (1 run)", lambda: data.host(path, run_id)),
        ("schema (information_schema)", lambda: data.schema(path)),
        ("SQL box: runs per workload", lambda: run_query(Store(path), "SELECT workload, count(*) FROM runs GROUP BY 1")),
    ]


def time_data(path: str, run_id: str) -> list[dict]:
    from streamlit.logger import set_log_level

    set_log_level("error")  # cached reads outside a page run warn "no runtime", "no ScriptRunContext"
    from app.dashboard import data

    data.baseline_variant("llm-decode")  # the registry import (torch, once per process) is not a store read
    results = []
    for name, call in data_calls(path, run_id):
        data.clear_caches()
        t0 = time.perf_counter()
        call()
        results.append({"read": name, "seconds": time.perf_counter() - t0})
    return results


# -- 4. the store change asked for, prototyped to measure it (not used by the app) -------------
def build_compacted(big: Store, path: Path) -> Store:
    """A copy of the big store with all runs merged into one part per table (runs/_merged/), sorted by run_id:
    what a compaction command would leave. The catalog's views read it unchanged (runs/*/<table>.parquet)."""
    import duckdb

    store = Store(path).ensure()
    merged = store.runs_dir / "_merged"
    merged.mkdir(exist_ok=True)
    with duckdb.connect() as con:
        for table in TABLES:
            source = (big.runs_dir / "*" / f"{table}.parquet").as_posix()
            con.execute(f"COPY (SELECT * FROM read_parquet('{source}', union_by_name = true) ORDER BY run_id) "
                        f"TO '{(merged / f'{table}.parquet').as_posix()}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 100000)")
    return store


def proposed_connection(store: Store, run_ids):
    """A connection whose tables hold only `run_ids`, with every analysis view on top: each run's own parts,
    merged parts filtered by run_id (row-group statistics skip the rest), the empty parts for the schema."""
    import duckdb

    from store.views import ANALYSIS_VIEWS

    con = duckdb.connect()
    ids = ", ".join("'" + r.replace("'", "''") + "'" for r in run_ids)
    for table in TABLES:
        files = [f for r in run_ids if (f := store.runs_dir / r / f"{table}.parquet").exists()]
        files += sorted(store.runs_dir.glob(f"_*/{table}.parquet"))
        listed = ", ".join(f"'{f.as_posix()}'" for f in files)
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet([{listed}], union_by_name = true) WHERE run_id IN ({ids})")
    for sql in ANALYSIS_VIEWS:
        con.execute(sql)
    return con


def use_proposed_store() -> None:
    """Route the dashboard's one-run reads through proposed_connection (its reads of all runs stay as they are)."""
    from contextlib import contextmanager

    from app.dashboard import data

    shared = data._cursor

    @contextmanager
    def cursor(path: str, run_ids=None):
        if run_ids is None:
            with shared(path) as con:
                yield con
            return
        con = proposed_connection(Store(path), run_ids)
        try:
            yield con
        finally:
            con.close()

    data._cursor = cursor


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="a store of real runs to copy (default: build bench/out/dashboard-source.duckdb)")
    parser.add_argument("--db", type=Path, default=OUT / "dashboard-1000.duckdb", help="the big store (built when missing)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the big store")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per page (the best is reported)")
    parser.add_argument("--proposed", action="store_true", help="also time the pages on the store change this asks for: "
                        "merged parts (compaction) and a connection scoped to the runs a read touches (prototypes here)")
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
    report(big, args.repeats, "the store as it is")
    if args.proposed:
        compacted = Store(OUT / "dashboard-1000-compacted.duckdb")
        if args.rebuild or not compacted.exists():
            print("\nbuilding the compacted copy ...", flush=True)
            build_compacted(big, compacted.path)
        use_proposed_store()
        report(compacted, args.repeats, "PROPOSED: compacted parts + connections scoped to a run's parts")
    return 0


def _time_summary_build(store: Store) -> None:
    """The per-run summaries from scratch (once per store; later reads add only new runs)."""
    from store import summaries

    shutil.rmtree(store.parts / "summaries", ignore_errors=True)
    for name, build in (("runs", summaries.runs_table), ("op_time_by_category", summaries.category_times)):
        start = time.perf_counter()
        build(store)
        print(f"summary {name} built from scratch (once per store, then incremental): {time.perf_counter() - start:.2f} s")


def report(store: Store, repeats: int, title: str) -> None:
    with store.connect() as con:
        runs, events = con.execute("SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM events)").fetchone()
    print(f"\n== {title}: {store.path.name}, {runs:,} runs, {events:,} events")
    os.environ["OBSERVATORY_DB"] = str(store.path)
    _time_summary_build(store)
    run_id = _largest_gpu_run(store.path)
    print(f"one-run reads on {run_id} (the largest GPU run); reads uncached:")
    for row in time_data(str(store.path), run_id):
        print(f"  {row['read']:<52} {row['seconds']:7.3f} s")
    print(f"pages (AppTest script run, best of {repeats}; target {TARGET_S:.1f} s):")
    print(f"  {'page':<12} {'cold':>8} {'warm':>8}")
    slow = []
    for row in time_pages(store.path, run_id, repeats):
        verdict = "ok" if row["cold_s"] < TARGET_S else "SLOW"
        slow += [row["page"]] if verdict != "ok" else []
        print(f"  {row['page']:<12} {row['cold_s']:7.3f}s {row['warm_s']:7.3f}s  {verdict}")
    print(json.dumps({"store": title, "target_s": TARGET_S, "slow_cold": slow}))


if __name__ == "__main__":
    sys.exit(main())
