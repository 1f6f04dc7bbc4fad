"""Runs: every profiled run and imported trace; filters; a failed run's error; one run's details."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app.dashboard import data, layout

path = data.store_path()
runs = data.runs(path)
st.title("Runs")
st.caption("Every run profiled here and every imported trace. Pick one below for its configuration, environment and metrics.")


def _options(column: str) -> list[str]:
    return sorted(runs[column].dropna().unique().tolist())


workloads = ["(imported trace)"] + _options("workload")
cols = st.columns(5)
chosen_workloads = cols[0].multiselect("Workload", workloads, key="runs_workload")
chosen_variants = cols[1].multiselect("Variant", _options("variant"), key="runs_variant")
chosen_devices = cols[2].multiselect("Device", _options("device"), key="runs_device")
chosen_status = cols[3].multiselect("Status", _options("status"), key="runs_status")
dates = runs["date"].dropna().dt.date
first, last = (dates.min(), dates.max()) if not dates.empty else (None, None)
date_range = cols[4].date_input("Date", value=(first, last), min_value=first, max_value=last,
                                key=f"runs_dates_{first}_{last}")  # new dates after a Refresh: the whole range again

shown = runs
if chosen_workloads:
    shown = shown[shown["workload"].fillna("(imported trace)").isin(chosen_workloads)]
if chosen_variants:
    shown = shown[shown["variant"].isin(chosen_variants)]
if chosen_devices:
    shown = shown[shown["device"].isin(chosen_devices)]
if chosen_status:
    shown = shown[shown["status"].isin(chosen_status)]
if isinstance(date_range, tuple) and len(date_range) == 2:
    day = shown["date"].dt.date
    shown = shown[(day >= date_range[0]) & (day <= date_range[1])]

failed = int((shown["status"] == "failed").sum())
st.markdown(f"**{len(shown)}** of {len(runs)} runs" + (f", **{failed} failed** (their errors in the table)" if failed else ""))
st.dataframe(
    shown.assign(status=shown["status"].map({"ok": "✓ ok", "failed": "✗ failed"}).fillna(shown["status"])),
    hide_index=True,
    column_order=["status", "name", *(["error"] if failed else []), "workload", "variant", "params", "label", "device", "device_name",
                  "rank", "date", "event_count", "run_id"],
    column_config={
        "date": st.column_config.DatetimeColumn("started", format="YYYY-MM-DD HH:mm"),
        "event_count": st.column_config.NumberColumn("events", format="localized"),
        "error": st.column_config.TextColumn("error", width="large"),
    },
)

st.subheader("One run")
run_id = layout.run_picker(shown, help="The pages Breakdown, Device time, Sequence lengths and Trace start from this run.")
if run_id is None:
    st.info("No run matches the filters.")
    st.stop()
run = runs[runs["run_id"] == run_id].iloc[0]
st.markdown(layout.run_caption(run))
details = data.run_details(path, run_id)
if run["status"] == "failed":
    st.error(f"This run failed: {run['error'] or 'no error recorded'}")
    stored_traceback = details["environment"].get("traceback")
    if stored_traceback:
        with st.expander("The workload's traceback, as the run recorded it"):
            st.code(stored_traceback, language="text")

fields = run[["source", "workload_kind", "preset", "batch", "dtype", "host", "world_size", "event_count", "started_at", "stored_at", "source_path", "trace_path"]]
left, right = st.columns(2)
left.dataframe(fields.dropna().astype(str).rename("value").to_frame(), width="stretch")
params = data.json_object(run.get("params"))
if params:
    left.dataframe(pd.Series(params, name="value").astype(str).rename_axis("parameter").to_frame(), width="stretch")
if not details["metrics"].empty:
    right.dataframe(details["metrics"], hide_index=True, width="stretch")
with st.expander("Configuration"):
    st.json(details["config"], expanded=True)
with st.expander("Environment"):
    st.json({k: v for k, v in details["environment"].items() if k != "traceback"}, expanded=False)
