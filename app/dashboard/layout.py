"""Pieces every page shares: the empty-store explanation, the sidebar, the run picker."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app.dashboard import data

SELECTED = "run_id"  # session state: the run the user last picked, followed from page to page


def empty_store(path: str, exists: bool) -> None:
    """What to do when there is nothing to show yet."""
    st.title("Observatory")
    where = f"`{path}`"
    st.info(f"{'The store ' + where + ' has no runs yet.' if exists else 'There is no store at ' + where + ' yet.'} "
            "Put some data in, then press **Refresh** in the sidebar:")
    db = f" --db {path}"
    st.code(
        f"observatory demo{db}                          # import the real GPU traces in ../shared/traces, profile both workloads\n"
        f"observatory ingest PATH{db}                   # import Kineto / Chrome traces (files, TensorBoard logdirs)\n"
        f"observatory run llm-decode{db}                # profile one workload on this machine\n"
        f"observatory sweep sweeps/demo.toml{db}        # a grid of workloads x variants",
        language="sh",
    )
    st.caption("The dashboard reads the store read-only: runs committed while it is open appear after Refresh.")


def sidebar(path: str, runs: pd.DataFrame | None) -> None:
    with st.sidebar:
        st.caption(f"store `{path}`")
        if runs is not None:
            now = data.committed_run_count(path) or 0
            loaded = data.loaded_at(path)
            st.caption(f"{len(runs)} runs as of {loaded:%H:%M:%S} UTC")
            if now > len(runs):
                st.warning(f"{now - len(runs)} new run(s) committed since: Refresh to see them.")
        st.button("Refresh", on_click=data.clear_caches, help="Read the store again: runs committed since the last read appear.", width="stretch")


def run_picker(runs: pd.DataFrame, label: str = "Run", key: str = "run_picker", help: str | None = None,
               default: str | None = None) -> str | None:
    """A selectbox over `runs` (a frame from data.runs) starting at the run last picked on any page, else the
    page's `?run=` query parameter, else `default`, else the first; a pick is remembered across pages."""
    if runs.empty:
        return None
    options = list(runs["run_id"])
    candidates = (st.session_state.get(SELECTED), st.query_params.get("run"), default)
    index = next((options.index(c) for c in candidates if c in options), 0)
    names = dict(zip(runs["run_id"], runs["name"] + "  ·  " + runs["run_id"]))
    return st.selectbox(label, options, index=index, format_func=names.get, key=key, help=help, on_change=_remember, args=(key,))


def _remember(key: str) -> None:
    st.session_state[SELECTED] = st.session_state[key]


def run_caption(run: pd.Series) -> str:
    parts = [run.get("workload"), run.get("variant"), run.get("label"), run.get("device"), run.get("device_name")]
    rank = run.get("rank")
    text = " · ".join(str(p) for p in parts if isinstance(p, str) and p)
    return text + (f" · rank {int(rank)}" if pd.notna(rank) else "") + f" · `{run['run_id']}`"


def facet_filter(runs: pd.DataFrame, key: str, default_max: int = 4) -> list[str]:
    """Workloads and import labels to show (the most recent few by default)."""
    facets = list(dict.fromkeys(runs.sort_values("stored_at", ascending=False)["facet"]))
    return st.multiselect("Workloads and import labels", facets, default=facets[:default_max], key=key)
