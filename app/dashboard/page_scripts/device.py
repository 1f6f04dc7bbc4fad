"""Device time: GPU temporal and idle breakdowns per rank and stream, a kernel timeline, NVML telemetry; host overhead on CPUs."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app.dashboard import charts, data, layout
from store.analysis.idle import KERNEL_WAIT_THRESHOLD_US

MAX_KERNELS = 2000
MAX_DEFAULT_RANKS = 3  # other ranks drawn beside the chosen run unless the user picks others
DEFINITIONS = {"hta": "HTA (step-filtered, as Holistic Trace Analysis)", "all_kernels": "All kernels in the trace"}
QUANTITIES = {
    "gpu_util_pct": "GPU utilization (%)", "power_w": "power (W)", "memory_used_gib": "memory used (GiB)",
    "sm_clock_mhz": "SM clock (MHz)", "temperature_c": "temperature (C)",
}

path = data.store_path()
runs = data.runs(path)
st.title("Device time")
ok = runs[runs["status"] == "ok"]
if ok.empty:
    st.info("No successful run yet.")
    st.stop()
top = st.columns([3, 2])
gpu_runs = ok[ok["device"].fillna("cpu") != "cpu"]
with top[0]:
    run_id = layout.run_picker(ok, key="device_run", default=None if gpu_runs.empty else gpu_runs["run_id"].iloc[0])
definition = top[1].radio("GPU time definition", list(DEFINITIONS), format_func=DEFINITIONS.get, key="device_definition",
                          help="docs/analyses.md: which device events count, and HTA's step filter and rounding.")
run = ok[ok["run_id"] == run_id].iloc[0]
st.markdown(layout.run_caption(run))
temporal, idle = data.device_breakdowns(path, run_id, definition)

if temporal.empty:
    st.info(f"No GPU data: this run has no device events (device: {run['device']}). GPU temporal and idle breakdowns, "
            "kernel timelines and NVML telemetry exist only for runs on an accelerator.")
    overhead = data.host(path, run_id)
    if overhead.empty:
        st.caption("No CPU operators in this run either.")
    else:
        row = overhead.iloc[0]
        st.subheader("Host overhead")
        cols = st.columns(3)
        cols[0].metric("profiled wall time", f"{row['wall_us'] / 1e3:,.1f} ms")
        cols[1].metric("in leaf operators", f"{row['op_us'] / 1e3:,.1f} ms")
        cols[2].metric("host overhead", f"{row['host_overhead_pct']:.1f}%")
        region = "the ProfilerStep ranges" if row["region_is_steps"] else "the span of the CPU operators (no ProfilerStep)"
        st.caption(f"Host overhead: time in {region} when no leaf operator runs on any thread (dispatch, Python, framework "
                   "code between operators, waiting). Definition: docs/analyses.md.")
    status = data.run_details(path, run_id)["environment"].get("telemetry_status")
    if status:
        st.caption(f"NVML: {status}")
    st.stop()

# -- per rank: this run and, on request, the other ranks of its job -------------------------------------
siblings = ok[(ok["facet"] == run["facet"]) & (ok["group"] == run["group"]) & (ok["run_id"] != run_id) & ok["rank"].notna()]
siblings = siblings.sort_values("rank")
extra = st.multiselect(
    "Other ranks of this job", list(siblings["run_id"]), default=list(siblings["run_id"][:MAX_DEFAULT_RANKS]),
    format_func=dict(zip(siblings["run_id"], siblings["name"])).get, key="device_ranks",
    help="Runs of the same import label and folder: one trace per rank.",
) if not siblings.empty else []
temporals, idles = [temporal], [idle]
for other in extra:
    t, i = data.device_breakdowns(path, other, definition)
    temporals.append(t)
    idles.append(i)
names = dict(zip(runs["run_id"], runs["name"]))
temporal = pd.concat(temporals, ignore_index=True)
temporal["label"] = temporal["run_id"].map(names)
idle = pd.concat(idles, ignore_index=True)
idle["label"] = idle["run_id"].map(names) + " · s" + idle["stream"].astype(str)

one, two = st.columns(2)
one.subheader("Temporal breakdown")
one.plotly_chart(charts.temporal_bars(temporal), key="device_temporal")
one.dataframe(temporal[["label", "kernel_span_us", "idle_us", "compute_us", "non_compute_us", "idle_pct"]], hide_index=True)
two.subheader("Idle time per stream")
two.plotly_chart(charts.idle_bars(idle), key="device_idle")
two.caption(f"Host wait: the kernel was launched after the previous one ended; kernel wait: gaps under {KERNEL_WAIT_THRESHOLD_US:.0f} us; other: the rest.")

# -- kernel timeline --------------------------------------------------------------------------------------
def kernel_timeline(gaps: pd.DataFrame) -> None:
    """Kernels per stream in a time window (at most MAX_KERNELS), and the gap before each colored by its cause."""
    origin = gaps["start_us"].min()
    span_ms = max((gaps["end_us"].max() - origin) / 1e3, 0.001)
    starts = gaps["start_us"].sort_values().reset_index(drop=True)
    default_end = span_ms if len(starts) <= MAX_KERNELS else (starts.iloc[MAX_KERNELS] - origin) / 1e3
    low, high = st.slider("Window (ms after the first kernel)", 0.0, float(span_ms), (0.0, float(default_end)),
                          step=float(span_ms) / 1000, key="device_window")
    lo_us, hi_us = origin + low * 1e3, origin + high * 1e3
    window = gaps[(gaps["end_us"] > lo_us) & (gaps["start_us"] < hi_us)].sort_values("start_us")
    if len(window) > MAX_KERNELS:
        st.warning(f"{len(window):,} kernels in this window; drawing the first {MAX_KERNELS:,}. Narrow the window to see the rest.")
        window = window.head(MAX_KERNELS)
    stream = "stream " + window["stream"].astype(str)
    kernels = pd.DataFrame({"stream": stream, "start_ms": (window["start_us"] - lo_us) / 1e3,
                            "dur_ms": (window["end_us"] - window["start_us"]) / 1e3, "what": "kernel", "name": window["name"]})
    cause = window["host_wait"].map({True: "host wait", False: None}).fillna(
        window["gap_us"].lt(KERNEL_WAIT_THRESHOLD_US).map({True: "kernel wait", False: "other idle"}))
    idle_spans = pd.DataFrame({"stream": stream, "start_ms": (window["prev_end_us"] - lo_us) / 1e3, "dur_ms": window["gap_us"] / 1e3,
                               "what": cause, "name": "idle " + window["gap_us"].round(1).astype(str) + " us before " + window["name"]})
    idle_spans = idle_spans[window["gap_us"].gt(0) & window["prev_end_us"].notna()]
    st.plotly_chart(charts.timeline(pd.concat([idle_spans, kernels], ignore_index=True)), key="device_timeline")


st.subheader("Kernel timeline")
gaps = data.idle_gaps(path, run_id, definition)
if gaps.empty:
    st.info(f"No kernel, memcpy or memset in this run's {definition} set (only synchronization ranges): nothing to draw.")
else:
    kernel_timeline(gaps)
    st.caption(f"{len(gaps):,} kernels in all ({definition} definition); gaps colored by cause, as in the idle breakdown.")

# -- NVML telemetry -----------------------------------------------------------------------------------------
st.subheader("NVML telemetry")
samples = data.telemetry(path, run_id)
if samples.empty:
    status = data.run_details(path, run_id)["environment"].get("telemetry_status")
    st.info(f"No NVML samples for this run: {status or 'imported traces carry no telemetry; runs profiled here on a GPU record it.'}")
else:
    samples = samples.assign(time_s=(samples["ts_us"] - samples["ts_us"].min()) / 1e6, memory_used_gib=samples["memory_used_bytes"] / 2**30,
                             gpu=samples["gpu_index"].astype(str) + ": " + samples["gpu_name"].fillna(""))
    long = samples.melt(id_vars=["time_s", "gpu"], value_vars=list(QUANTITIES), var_name="quantity").dropna(subset=["value"])
    long["quantity"] = long["quantity"].map(QUANTITIES)
    st.plotly_chart(charts.telemetry_lines(long), key="device_telemetry")
