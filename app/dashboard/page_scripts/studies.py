"""Studies: each published study's findings beside ours, with a verdict, and the chart of each trend."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app.dashboard import charts, data
from store.analysis.studies import studies_dir

VERDICT_MARKS = {"holds": "✓ holds", "differs": "✗ differs", "gpu-only": "◐ gpu-only", "no data": "· no data"}

path = data.store_path()
runs = data.runs(path)
st.title("Studies")
st.caption(
    "The nine studies Observatory reproduces (../shared/docs/studies.md). Each finding: the published claim and figure, ours from "
    "the runs in this store at the chosen preset and device, and a verdict. On a CPU, verdicts judge orderings and trends, never a "
    "GPU's percentages; `observatory reproduce STUDY` runs what is missing."
)
all_studies = data.studies(str(studies_dir()))
if not all_studies:
    st.info("No study files under studies/.")
    st.stop()
left, middle, right = st.columns([3, 1, 1])
names = [s.name for s in all_studies]
titles = {s.name: f"{s.number}. {s.title} ({s.name})" for s in all_studies}
study_name = left.selectbox("Study", names, format_func=titles.get, key="studies_study")
preset = middle.selectbox("Preset", ["tiny", "paper"], key="studies_preset")
device = right.selectbox("Device", ["cpu", "cuda"], key="studies_device")
study = next(s for s in all_studies if s.name == study_name)
if study.notes:
    st.caption(study.notes)

findings, figures, matched, points = data.study_results(path, runs, study_name, preset, device)
st.markdown(f"**{matched}** of {points} runs this study needs are in the store"
            + ("" if matched == points else f": `observatory reproduce {study_name} --preset {preset} --device {device}` runs the rest."))
if 0 < matched < points:
    st.warning("Verdicts below come from part of the study's runs: a trend judged on some of its points can read differently.")
table = pd.DataFrame(findings)
st.dataframe(
    table.assign(verdict=table["verdict"].map(VERDICT_MARKS), runs=table["run_ids"].map(len))[["id", "claim", "published", "ours", "verdict", "runs"]],
    hide_index=True, width="stretch",
    column_config={"claim": st.column_config.TextColumn(width="large"), "ours": st.column_config.TextColumn(width="large")},
)
for finding, result in zip(study.findings, findings):
    st.subheader(f"{finding.id}: {VERDICT_MARKS[result['verdict']]}")
    st.markdown(f"{finding.claim}. Published: {finding.published}. Ours: {result['ours'] or 'no figure (the runs are missing)'}.")
    frame = figures.get(finding.id)
    if frame is not None and not frame.empty:
        st.plotly_chart(charts.finding_chart(frame, finding.figure), key=f"study_{finding.id}")
    if result["run_ids"]:
        links = " · ".join(f"[{run_id}](/runs?run={run_id})" for run_id in result["run_ids"][:12])
        st.caption(f"Runs: {links}" + (f" and {len(result['run_ids']) - 12} more" if len(result["run_ids"]) > 12 else ""))
