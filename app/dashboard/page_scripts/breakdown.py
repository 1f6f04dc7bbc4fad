"""Breakdown: time by operator category per run, grouped by workload and variant; one run's top kernels and operators."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app.dashboard import charts, data, layout

MAX_BARS = 150
SIDES = {"device": "Device (kernel, memcpy, memset time)", "cpu": "CPU (self time of CPU operators)"}
VALUES = {"share_pct": "Share of time (%)", "time_ms": "Time (ms)"}

path = data.store_path()
runs = data.runs(path)
st.title("Breakdown")
st.caption(
    "Operator time by category, one stacked bar per run, a panel per workload (imported traces: per import label), "
    "bars grouped by variant (imports: by folder). Device time sums kernel durations, so overlapping streams can exceed wall "
    "time; CPU time is operator self time. Categories: docs/analyses.md."
)
times = data.category_times(path, runs)
measured = runs[runs["run_id"].isin(times["run_id"])]
if measured.empty:
    st.info("No run has operator events yet (failed runs have none).")
    st.stop()

top = st.columns([3, 2, 1, 1])
with top[0]:
    facets = layout.facet_filter(measured, key="breakdown_facets")
if not facets:
    st.info("Choose at least one workload or import label.")
    st.stop()
selected = measured[measured["facet"].isin(facets)]
has_device = bool(times[times["run_id"].isin(selected["run_id"]) & (times["side"] == "device")].shape[0])
side = top[1].radio("Side", list(SIDES), index=0 if has_device else 1, format_func=SIDES.get, key="breakdown_side")
value = top[2].radio("Value", list(VALUES), format_func=VALUES.get, key="breakdown_value")
per_group = top[3].number_input("Latest runs per group", min_value=1, max_value=50, value=10, key="breakdown_per_group")

# The latest runs of each group, then the bars: every run gets every category (zeros), so bars line up.
latest = selected.sort_values("date", ascending=False).groupby("group", sort=False).head(per_group)
rows = times[(times["side"] == side) & times["run_id"].isin(latest["run_id"])]
if rows.empty:
    st.info(f"No {side} time in the selected runs: " + ("runs profiled on a CPU have no device side; choose CPU." if side == "device" else "these traces have no CPU operators."))
    st.stop()
bars = latest[latest["run_id"].isin(rows["run_id"])].sort_values(["facet", "group", "date"]).head(MAX_BARS)
if len(latest[latest["run_id"].isin(rows["run_id"])]) > MAX_BARS:
    st.warning(f"Showing {MAX_BARS} runs; choose fewer workloads or fewer runs per group.")
grid = pd.MultiIndex.from_product([bars["run_id"], sorted(rows["category"].unique())], names=["run_id", "category"])
frame = (
    rows.groupby(["run_id", "category"])[["time_us", "count", "share_pct"]].sum().reindex(grid, fill_value=0).reset_index()
    .merge(bars[["run_id", "name", "group", "facet"]], on="run_id")
)
frame["time_ms"] = frame["time_us"] / 1e3
frame["order"] = frame["run_id"].map({r: i for i, r in enumerate(bars["run_id"])})
frame = frame.sort_values(["order", "category"])
shown_facets = [f for f in facets if f in set(frame["facet"])]
st.plotly_chart(charts.category_bars(frame, value, shown_facets), key="breakdown_chart")

st.subheader("One run: top kernels and operators")
run_id = layout.run_picker(bars.sort_values("date", ascending=False), key="breakdown_run")
run = runs[runs["run_id"] == run_id].iloc[0]
st.markdown(layout.run_caption(run))
own = times[times["run_id"] == run_id]
left, right = st.columns(2)
for column, run_side in ((left, "device"), (right, "cpu")):
    part = own[own["side"] == run_side][["category", "time_us", "count", "share_pct"]]
    column.markdown(f"**{SIDES[run_side]}**")
    if part.empty:
        column.caption("none in this run" + (" (no device events: profiled on a CPU, or a CPU-only trace)" if run_side == "device" else ""))
    else:
        column.dataframe(part, hide_index=True, width="stretch", column_config={"share_pct": st.column_config.ProgressColumn("share", format="%.1f%%", min_value=0, max_value=100)})

by_part = data.part_times(path, run_id)
if not by_part.empty:
    st.markdown("**By part of the iteration** (forward, backward, optimizer; text encoder, UNet, VAE; prefill, decode; ...)")
    part_side = "device" if (by_part["side"] == "device").any() else "cpu"
    shown_parts = by_part[by_part["side"] == part_side].assign(time_ms=lambda f: f["time_us"] / 1e3)
    st.plotly_chart(charts.part_bars(shown_parts), key="breakdown_parts")

if not own[own["side"] == "device"].empty:
    kernels = data.top_kernels(path, run_id)
    shown = kernels.head(20).assign(total_ms=lambda f: f["total_us"] / 1e3)
    st.plotly_chart(charts.top_bar(shown, "total_ms", "total time (ms)", f"Top {len(shown)} of {len(kernels)} device ops by total time"), key="breakdown_kernels")
    with st.expander(f"All {len(kernels)} device ops (kernel_stats)"):
        st.dataframe(kernels.drop(columns=["run_id"]), hide_index=True)
if not own[own["side"] == "cpu"].empty:
    operators = data.top_operators(path, run_id)
    shown = operators.assign(self_ms=operators["self_us"] / 1e3)
    st.plotly_chart(charts.top_bar(shown, "self_ms", "self time (ms)", f"Top {len(shown)} CPU operators by self time"), key="breakdown_operators")
