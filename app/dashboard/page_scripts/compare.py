"""Compare: a workload's baseline next to its optimized variants: latency, throughput, speedup, where time moved."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app.dashboard import charts, data


def settings_label(key: str) -> str:
    """A settings key as a short line: preset, batch, dtype, device, then the parameters."""
    settings = data.json_object(key)
    params = ", ".join(f"{k}={v}" for k, v in (settings.get("params") or {}).items())
    return " · ".join(str(x) for x in (settings.get("preset"), f"batch {settings.get('batch')}", settings.get("dtype"),
                                        settings.get("device"), params) if x)
from store.analysis.compare import pair_latest

path = data.store_path()
runs = data.runs(path)
st.title("Compare")
st.caption(
    "The latest run of each variant next to the latest baseline run at the same settings (preset, batch, dtype, device, seed, "
    "every parameter and the adapter's code). "
    "Latency comes from unprofiled timed repeats: median, with p10-p90 whiskers; speedup = baseline median / variant median, "
    "its range pairs the p10 and p90 ends of the two runs."
)
profiled = runs[(runs["source"] == "profile") & (runs["status"] == "ok") & runs["workload"].notna()]
if profiled.empty:
    st.info("Compare needs runs profiled here (imported traces have no timed repeats): "
            "`observatory sweep sweeps/demo.toml` profiles both workloads, baseline and variants.")
    st.stop()

left, right = st.columns(2)
variant_counts = profiled.groupby("workload")["variant"].nunique()
workloads = sorted(variant_counts.index, key=lambda w: (-variant_counts[w], w))  # workloads with variants first
workload = left.selectbox("Workload", workloads, key="compare_workload")
variants = sorted(profiled.loc[profiled["workload"] == workload, "variant"].dropna().unique())
registered = data.baseline_variant(workload)
baseline = right.selectbox(
    "Baseline variant", variants, index=variants.index(registered) if registered in variants else 0, key=f"compare_baseline_{workload}",
    help=f"The registry's baseline of {workload} is {registered!r}." if registered else "This workload is not in the registry.",
)
bases = profiled[(profiled["workload"] == workload) & (profiled["variant"] == baseline)].sort_values("stored_at", ascending=False)
choices = list(dict.fromkeys(bases["settings_key"].dropna()))  # newest first
settings = None
if len(choices) > 1:
    labels = {key: settings_label(key) for key in choices}
    settings = st.selectbox("Settings", choices, format_func=labels.get, key=f"compare_settings_{workload}_{baseline}",
                            help="The baseline's runs at different settings (preset, batch, dtype, device, parameters): variants are "
                            "compared only with a baseline of the same settings.")
try:
    base_run, others = pair_latest(runs, workload, baseline, settings)  # from the page's runs list, not the store now
except ValueError as exc:
    st.info(str(exc))
    st.stop()
base = runs[runs["run_id"] == base_run].iloc[0]
params = ", ".join(f"{k}={v}" for k, v in data.json_object(base.get("params")).items())
st.markdown(f"Baseline **{baseline}** `{base_run}` · preset {base['preset']} · batch {base['batch']} · {base['dtype']} · {base['device']}"
            + (f" · {params}" if params else ""))
if not others:
    st.info(f"No variant of {workload} has a run at these settings yet: `observatory run {workload} --variant V`.")

labels = {base_run: f"{baseline} (baseline)", **{run_id: variant for variant, run_id in sorted(others.items())}}
stats, repeats = data.latency(path, tuple(labels))
if stats.empty:
    st.info("These runs have no timed repeats (latency rows).")
else:
    order = {run_id: i for i, run_id in enumerate(labels)}
    stats = stats.assign(label=stats["run_id"].map(labels), order=stats["run_id"].map(order)).sort_values(["order", "phase"])
    repeats = repeats.assign(label=repeats["run_id"].map(labels), order=repeats["run_id"].map(order)).sort_values(["order", "phase", "repeat"])
    st.subheader("Latency and throughput")
    one, two = st.columns(2)
    one.plotly_chart(charts.latency_bars(stats), key="compare_latency")
    two.plotly_chart(charts.throughput_box(repeats), key="compare_throughput")

speedups, shifts = [], []
for variant, run_id in sorted(others.items()):
    speed, shift = data.comparison(path, base_run, run_id)
    speedups.append(speed.assign(variant=variant, run_id=run_id))
    shifts.append(shift.assign(variant=variant))
if speedups:
    speed = pd.concat(speedups, ignore_index=True)
    st.subheader("Speedup over the baseline")
    step = speed[speed["phase"] == "iteration"]
    if not step.empty:
        for column, row in zip(st.columns(len(step)), step.itertuples()):
            column.metric(f"{row.variant}: whole iteration", f"{row.speedup:.2f}x", f"range {row.speedup_low:.2f}x - {row.speedup_high:.2f}x", delta_color="off", delta_arrow="off")
    st.dataframe(
        speed[["variant", "phase", "speedup", "speedup_low", "speedup_high", "baseline_median_us", "median_us", "baseline_repeats", "repeats", "run_id"]],
        hide_index=True,
        column_config={c: st.column_config.NumberColumn(format="%.2fx") for c in ("speedup", "speedup_low", "speedup_high")}
        | {c: st.column_config.NumberColumn(format="%.0f") for c in ("baseline_median_us", "median_us")},
    )
    shift = pd.concat(shifts, ignore_index=True)
    st.subheader("Where time moved")
    st.caption("Change of each operator category's share of time (profiled pass), variant minus baseline.")
    if shift.empty:
        st.info("No operator time in these runs.")
    else:
        st.plotly_chart(charts.shift_bars(shift), key="compare_shift")
        with st.expander("Time per category, baseline and variants"):
            st.dataframe(shift, hide_index=True)
