"""Import speed and memory: Observatory's `ingest` vs Holistic Trace Analysis's trace load.

Reference: HTA 0.5.0 (`TraceAnalysis(trace_dir=...)`), installed by this script into its own
venv (bench/.hta-venv), never into the project's. Each load runs in a fresh process; we
report the median wall time over --repeats and the peak RSS, both total and above the
process's RSS after its imports (what the load itself costs). Targets (issue 2): at least
5x faster than HTA, at most half its peak memory; a 2 GB trace imports under 3 GB peak.

    .venv/bin/python bench/bench_ingest.py             # shared traces + the 2 GB trace
    .venv/bin/python bench/bench_ingest.py --huge-gb 0 # shared traces only
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRACES = ROOT.parent / "shared" / "traces"
HTA_VENV = ROOT / "bench" / ".hta-venv"
OUT = ROOT / "bench" / "out"
LARGEST = [
    "hta/mtia_trace_single_rank/mtia_rank_0.json.gz",
    "kineto/resnet50_num_workers_0/worker0.1623143566756.pt.trace.json.gz",
    "hta/negative_queue_length_values_check/rank0.json.gz",
    "hta/ns_resolution_trace/rank-0.Apr_03_18_51_38.1102.pt.trace.json.gz",
]

# Each loader prints {"seconds", "base_rss_mib", "peak_rss_mib"}; imports happen before the clock.
OURS = """
import json, resource, sys, tempfile, time
from pathlib import Path
import pandas, pyarrow, duckdb  # imported by the CLI anyway; kept out of the measured load
from store.db import Store
from store.ingest import ingest_file
store = Store(Path(tempfile.mkdtemp()) / "bench.duckdb").ensure()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
result = ingest_file(store, Path(sys.argv[1]))
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "base_rss_mib": base / 1024, "peak_rss_mib": peak / 1024, "events": result.event_count}))
"""

HTA = """
import json, logging, os, resource, shutil, sys, tempfile, time
logging.disable(logging.CRITICAL)
from hta.trace_analysis import TraceAnalysis
folder = tempfile.mkdtemp()
os.symlink(os.path.abspath(sys.argv[1]), os.path.join(folder, os.path.basename(sys.argv[1])))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
analysis = TraceAnalysis(trace_dir=folder)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "base_rss_mib": base / 1024, "peak_rss_mib": peak / 1024}))
"""


def ensure_hta() -> Path:
    python = HTA_VENV / "bin" / "python"
    if not python.exists():
        print("creating the HTA reference venv (bench/.hta-venv) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(HTA_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "holistictraceanalysis==0.5.0"], check=True)
    return python


def measure(python: Path, code: str, trace: Path) -> dict:
    done = subprocess.run([str(python), "-c", code, str(trace)], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarize(runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[0]["error"]}
    return {
        "seconds": statistics.median(r["seconds"] for r in ok),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in ok),
        "load_rss_mib": max(r["peak_rss_mib"] - r["base_rss_mib"] for r in ok),
    }


def build_huge_trace(target_bytes: int) -> Path:
    """A real trace's events repeated (timestamps shifted) until the JSON reaches target_bytes."""
    import gzip

    path = OUT / f"huge_{target_bytes // 1024**2}MiB.json"
    if path.exists() and path.stat().st_size >= target_bytes:
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    source = json.loads(gzip.open(TRACES / LARGEST[3], "rt").read())
    events = source.pop("traceEvents")
    start = min(e["ts"] for e in events if "ts" in e)
    span = max(e["ts"] + e.get("dur", 0) for e in events if "ts" in e) - start
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        head = json.dumps(source)[:-1]
        f.write(head + ', "traceEvents": [\n')
        written, copy, first = 0, 0, True
        while written < target_bytes:
            shift = copy * (span + 1000.0)
            for e in events:
                e2 = dict(e)
                if "ts" in e2:
                    e2["ts"] = e["ts"] + shift
                line = ("" if first else ",\n") + json.dumps(e2)
                first = False
                f.write(line)
                written += len(line)
            copy += 1
        f.write("\n]}\n")
    tmp.rename(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--huge-gb", type=float, default=2.0, help="size of the synthetic huge trace; 0 skips it")
    args = parser.parse_args()
    ours_python = ROOT / ".venv" / "bin" / "python"
    hta_python = ensure_hta()

    print(f"{'trace':58} {'ours s':>8} {'HTA s':>8} {'speedup':>8} {'ours MiB':>9} {'HTA MiB':>8} {'mem ratio':>9}")
    print(f"{'':58} {'':>8} {'':>8} {'':>8} {'(load/peak)':>9} {'(load/peak)':>8}")
    for name in LARGEST:
        trace = TRACES / name
        ours_runs, hta_runs = [], []
        for _ in range(args.repeats):  # interleaved so both see the same machine state
            ours_runs.append(measure(ours_python, OURS, trace))
            hta_runs.append(measure(hta_python, HTA, trace))
        ours, hta = summarize(ours_runs), summarize(hta_runs)
        label = name if len(name) <= 58 else "..." + name[-55:]
        if "error" in ours or "error" in hta:
            print(f"{label:58} ours: {ours.get('error', 'ok')} | HTA: {hta.get('error', 'ok')}")
            continue
        print(
            f"{label:58} {ours['seconds']:8.3f} {hta['seconds']:8.3f} {hta['seconds'] / ours['seconds']:7.1f}x "
            f"{ours['load_rss_mib']:4.0f}/{ours['peak_rss_mib']:4.0f} {hta['load_rss_mib']:4.0f}/{hta['peak_rss_mib']:4.0f} "
            f"{ours['load_rss_mib'] / hta['load_rss_mib']:5.2f}/{ours['peak_rss_mib'] / hta['peak_rss_mib']:4.2f}"
        )
    print("speedup = HTA seconds / ours (target >= 5x); mem ratio = ours / HTA, load-only / total peak (target <= 0.5)")

    if args.huge_gb > 0:
        start = time.perf_counter()
        huge = build_huge_trace(int(args.huge_gb * 1024**3))
        print(f"\nhuge trace: {huge.stat().st_size / 1024**3:.2f} GiB built in {time.perf_counter() - start:.0f} s")
        result = measure(ours_python, OURS, huge)
        if "error" in result:
            print(f"ours: {result['error']}")
        else:
            print(
                f"ours: {result['events']:,} events in {result['seconds']:.1f} s "
                f"({huge.stat().st_size / 1024**2 / result['seconds']:.0f} MiB/s), peak RSS {result['peak_rss_mib']:.0f} MiB "
                f"(target < 3072 MiB: {'met' if result['peak_rss_mib'] < 3072 else 'NOT met'})"
            )


if __name__ == "__main__":
    main()
