"""Sequence lengths: attention calls per module, UNet level and step; spatial vs temporal (video); prefill vs decode (LLMs)."""
from __future__ import annotations

import re

import streamlit as st

from app.dashboard import charts, data, layout

LEVEL_PATTERNS = [
    (re.compile(r"(?:^|\.)down_blocks\.(\d+)"), "down {}"),
    (re.compile(r"(?:^|\.)mid_block"), "mid"),
    (re.compile(r"(?:^|\.)up_blocks\.(\d+)"), "up {}"),
    (re.compile(r"(?:^|\.)layers\.(\d+)"), "layer {}"),
    (re.compile(r"(?:^|\.)(?:blocks|h|layer)\.(\d+)"), "block {}"),
]


def level_of(module_path: str | None) -> tuple[str, int, int, str]:
    """(component, order, index, name) of the UNet level or transformer layer a module sits in, named with its
    component when the path has one: `unet.down_blocks.0...` -> "unet down 0", `vae.decoder.mid_block...` -> "vae.decoder mid"."""
    if not isinstance(module_path, str):
        return ("", 9, 0, "(outside modules)")
    for order, (pattern, name) in enumerate(LEVEL_PATTERNS):
        match = pattern.search(module_path)
        if match:
            index = int(match.group(1)) if match.groups() else 0
            component = module_path[: match.start()]
            return (component, order, index, f"{component} {name.format(index)}".strip())
    return ("", 8, 0, module_path.split(".")[0])


path = data.store_path()
runs = data.runs(path)
st.title("Sequence lengths")
st.caption(
    "Every attention call of one eager iteration of a profiled run, from the sequence-length recorder: query length "
    "(q_len; H*W of the feature map in a UNet) and key/value length (kv_len: text tokens for cross-attention, the cache for decode)."
)
recorded = runs[runs["run_id"].isin(data.attention_runs(path, runs)["run_id"])]
if recorded.empty:
    st.info("No run has attention calls yet: they are recorded by runs profiled here (`observatory run diffusion-t2i`, "
            "`observatory run llm-decode`); imported traces carry none.")
    st.stop()
run_id = layout.run_picker(recorded, key="seqlen_run")
st.markdown(layout.run_caption(recorded[recorded["run_id"] == run_id].iloc[0]))
calls = data.attention_calls(path, run_id)
calls["module"] = calls["module_path"].fillna("(sdpa outside modules)")
calls["kind"] = calls["kind"].fillna("?")
levels = calls["module_path"].map(level_of)
calls["level"] = levels.map(lambda l: l[3])
first_call = calls.groupby(levels.map(lambda l: l[0]))["call_index"].transform("min")  # components in call order
calls["level_order"] = [(first, *level[1:3]) for first, level in zip(first_call, levels)]

cols = st.columns(4)
cols[0].metric("attention calls", f"{len(calls):,}")
cols[1].metric("modules", calls["module"].nunique())
cols[2].metric("q_len", f"{calls['q_len'].min():,} - {calls['q_len'].max():,}")
cols[3].metric("kv_len", f"{calls['kv_len'].min():,} - {calls['kv_len'].max():,}")

st.subheader("Per module")
st.plotly_chart(charts.lengths_by_module(calls), key="seqlen_modules")
left, right = st.columns(2)
with left:
    st.subheader("Per level")
    grouped = (
        calls.groupby(["level", "kind"]).agg(calls=("call_index", "count"), q_len=("q_len", "max"), kv_len=("kv_len", "max"),
                                             order=("level_order", "first")).reset_index().sort_values(["order", "kind"])
    )
    st.plotly_chart(charts.calls_by_level(grouped.drop(columns=["order"])), key="seqlen_levels")
    st.caption("UNet levels (down / mid / up blocks) or transformer layers, from each module's path; bars say the longest lengths.")
with right:
    st.subheader("Per model call")
    stepped = calls.dropna(subset=["model_call"])
    if stepped.empty:
        st.info("No call lies inside a model call (a forward of the run's model).")
    else:
        means = stepped.groupby(["model_call", "kind"])[["q_len", "kv_len"]].mean().reset_index()
        st.plotly_chart(charts.lengths_by_step(means), key="seqlen_steps")
        outside = len(calls) - len(stepped)
        st.caption("Model calls: denoising steps (UNet forwards) or generated tokens (LLM forwards)."
                   + (f" {outside} calls lie outside them (text encoder, VAE) and are not drawn." if outside else ""))
with st.container():
    axis = calls.dropna(subset=["axis"])
    stats, _ = data.latency(path, (run_id,))
    phases = stats[stats["phase"].isin(["prefill", "decode"])]
    is_llm = bool(set(calls["kind"]) & {"prefill", "decode"}) or not phases.empty
    if not axis.empty:
        st.subheader("Spatial vs temporal")
        # Attention work per call: QK^T and PV are each 2*b*h*q*kv*d multiply-adds.
        work = axis.assign(gflop=4 * axis["batch"] * axis["heads"] * axis["q_len"] * axis["kv_len"] * axis["head_dim"] / 1e9)
        share = work.groupby("axis").agg(calls=("call_index", "count"), gflop=("gflop", "sum")).reset_index()
        one, two = st.columns(2)
        one.plotly_chart(charts.share_pie(share, "axis", "gflop", "Attention work (GFLOP, from shapes)"), key="seqlen_axis_work")
        two.plotly_chart(charts.share_pie(share, "axis", "calls", "Attention calls"), key="seqlen_axis_calls")
        st.caption("Work is estimated from each call's shapes (4*b*h*q*kv*d); the trace has no per-module time to measure it.")
    if is_llm:
        st.subheader("Prefill vs decode")
        if phases.empty:
            st.info("No prefill / decode timings for this run.")
        else:
            cols = st.columns(len(phases))
            for column, row in zip(cols, phases.itertuples()):
                unit = row.item_unit.rstrip("s") if isinstance(row.item_unit, str) else "item"
                column.metric(f"{row.phase}: median", f"{row.median_us / 1e3:,.2f} ms", f"{row.us_per_item / 1e3:,.3f} ms per {unit}",
                              delta_color="off", delta_arrow="off")
            st.caption("From the unprofiled timed repeats of each phase (p10-p90 on the Compare page).")
        counts = calls.groupby("kind").agg(calls=("call_index", "count"), q_len_min=("q_len", "min"), q_len_max=("q_len", "max"),
                                           kv_len_min=("kv_len", "min"), kv_len_max=("kv_len", "max"))
        st.dataframe(counts)
        st.caption("Attention calls by kind: with a KV cache, decode calls have q_len 1 and a growing kv_len; without one, "
                   "every token recomputes the whole sequence (kind self).")
    if axis.empty and not is_llm:
        st.subheader("Video and LLM splits")
        st.info("Neither applies to this run: no call is marked spatial or temporal (video models), "
                "and none is a prefill or decode (LLMs).")
