"""The Streamlit script `observatory dashboard` runs: navigation, sidebar, then the chosen page.

The store is $OBSERVATORY_DB (the command sets it from --db) or ./observatory.duckdb.
"""
from __future__ import annotations

from pathlib import Path

import duckdb
import streamlit as st

from app.dashboard import data, layout
from store.db import StoreError

# Not "pages/": Streamlit treats a pages/ folder beside the main script as the old multipage layout and
# runs a requested page without this script on a session's first run.
PAGES = Path(__file__).parent / "page_scripts"

st.set_page_config(page_title="Observatory", page_icon=":material/monitoring:", layout="wide")

navigation = st.navigation([
    # The Runs page is the root URL's, and answers at its own name too (/runs): a default page is served only at /.
    st.Page(PAGES / "runs.py", title="Runs", icon=":material/list:", default=True, url_path=""),
    st.Page(PAGES / "runs.py", title="Runs", icon=":material/list:", url_path="runs", visibility="hidden"),
    st.Page(PAGES / "studies.py", title="Studies", icon=":material/science:"),
    st.Page(PAGES / "breakdown.py", title="Breakdown", icon=":material/stacked_bar_chart:"),
    st.Page(PAGES / "compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page(PAGES / "seqlen.py", title="Sequence lengths", icon=":material/straighten:"),
    st.Page(PAGES / "device.py", title="Device time", icon=":material/memory:"),
    st.Page(PAGES / "sql.py", title="SQL", icon=":material/database:"),
    st.Page(PAGES / "trace.py", title="Trace", icon=":material/download:"),
])

path = data.store_path()
count = data.committed_run_count(path)
if not count:  # no store, or no run in it yet: every page says how to fill it
    layout.sidebar(path, None)
    layout.empty_store(path, exists=count is not None)
else:
    try:
        layout.sidebar(path, data.runs(path))
        navigation.run()
    except (duckdb.Error, StoreError, OSError, ValueError, KeyError) as exc:
        # A store problem (a catalog being upgraded, a part unreadable) or bad input: say what, no traceback.
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        st.error(f"Could not read the store: {message}")
        st.caption("Press Refresh in the sidebar to read it again.")
