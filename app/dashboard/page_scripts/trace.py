"""Trace: download a run's Chrome trace, and how to open it in Perfetto or TensorBoard."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from app.dashboard import data, layout
from store.db import Store

path = data.store_path()
runs = data.runs(path)
st.title("Trace")
st.caption("The Chrome trace file a run was imported from or profiled into (runs.trace_path), for a timeline viewer.")
with_trace = runs[runs["trace_path"].notna()]
if with_trace.empty:
    st.info("No run has a trace file (failed runs have none).")
    st.stop()
run_id = layout.run_picker(with_trace, key="trace_run")
run = with_trace[with_trace["run_id"] == run_id].iloc[0]
st.markdown(layout.run_caption(run))
trace = Path(run["trace_path"])
st.code(str(trace), language="text")

if not trace.is_file():
    st.warning(f"The file is not there any more ({trace}); the store keeps its events, not the file. "
               "Re-import it from wherever it moved, or query the events on the SQL page.")
else:
    size_mib = trace.stat().st_size / 2**20
    st.download_button(
        f"Download {trace.name} ({size_mib:,.1f} MiB)", data=trace.read_bytes,  # read when clicked, not on every page run
        file_name=trace.name, mime="application/gzip" if trace.suffix == ".gz" else "application/json", key="trace_download",
        on_click="ignore", type="primary",
    )

store = Store(path)
logdir = store.runs_dir if trace.is_relative_to(store.runs_dir) else store.parts / "traces"  # older stores kept traces apart
perfetto, tensorboard = st.columns(2)
with perfetto:
    st.subheader("Perfetto")
    st.markdown(
        "1. Open [ui.perfetto.dev](https://ui.perfetto.dev) in a browser.\n"
        "2. **Open trace file** (left menu) and choose the downloaded file; `.json.gz` opens as it is.\n\n"
        "The trace stays in your browser: Perfetto's UI loads it locally."
    )
with tensorboard:
    st.subheader("TensorBoard")
    if trace.is_relative_to(logdir):
        st.markdown("Runs profiled here keep their trace in their own folder of the store, a TensorBoard profiler logdir (one run per folder):")
        st.code(f"pip install torch-tb-profiler   # in Observatory's venv already\ntensorboard --logdir {logdir}", language="sh")
    else:
        st.markdown("The PyTorch profiler plugin reads `*.pt.trace.json(.gz)` files from a logdir; put this trace in a folder of its own:")
        name = trace.name if ".pt.trace.json" in trace.name else f"{run_id}.pt.trace.json" + (".gz" if trace.suffix == ".gz" else "")
        st.code(f"mkdir -p tb/{run_id} && cp '{trace}' tb/{run_id}/{name}\npip install torch-tb-profiler\ntensorboard --logdir tb", language="sh")
    st.markdown("Then open http://localhost:6006 and the **PyTorch Profiler** tab.")
