"""SQL: one read query over the store, its rows as a table and CSV, the schema beside it."""
from __future__ import annotations

import streamlit as st

from app.dashboard import data
from app.dashboard.sandbox import QueryRefused, run_query
from store.db import Store
from store.schema import TABLES

MAX_ROWS = 10_000
EXAMPLE = """-- runs per workload (imports: per label), variant and device
SELECT coalesce(workload, label) AS workload_or_label, variant, device, status, count(*) AS runs, sum(event_count) AS events
FROM runs
GROUP BY ALL
ORDER BY runs DESC"""

path = data.store_path()
st.title("SQL")
st.caption(
    "A read-only DuckDB connection to the store: SELECT (WITH, FROM, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN) over the tables and "
    "analysis views. It cannot write, attach, install or read any file outside the store's parts. "
    f"Up to {MAX_ROWS:,} rows are shown; `observatory sql QUERY --format csv` exports everything."
)
def _run(query: str) -> tuple:
    """(rows, error message): a refusal or failure is a message for the page, never a traceback."""
    try:
        return run_query(Store(path), query, max_rows=MAX_ROWS), None
    except QueryRefused as exc:
        return None, f"Refused. {exc}"
    except ValueError as exc:
        return None, str(exc)


query_col, schema_col = st.columns([3, 1])
with query_col:
    with st.form("sql_form", border=False):
        query = st.text_area("Query", value=EXAMPLE, height=180, key="sql_query")
        submitted = st.form_submit_button("Run", type="primary", key="sql_run")
    if submitted or "sql_result" not in st.session_state:  # the example runs on the first visit
        st.session_state["sql_result"] = _run(query)
    result, error = st.session_state["sql_result"]
    if error:
        st.error(error)
    else:
        more = f" (the first {MAX_ROWS:,}; there are more)" if result.truncated else ""
        st.caption(f"{len(result.frame):,} rows{more} in {result.seconds:.2f} s")
        st.dataframe(result.frame, hide_index=True)
        st.download_button("Download CSV", result.frame.to_csv(index=False), file_name="observatory-query.csv",
                           mime="text/csv", key="sql_csv", on_click="ignore")

with schema_col:
    st.markdown("**Schema**")
    st.caption("Tables first, then the analysis views; docs/schema.md and docs/analyses.md give every column's meaning.")
    columns = data.schema(path)
    order = {name: i for i, name in enumerate(TABLES)}
    names = sorted(columns["table_name"].unique(), key=lambda n: (order.get(n, len(order)), n))
    for table in names:
        rows = columns[columns["table_name"] == table]
        with st.expander(table):
            st.markdown("\n".join(f"- `{r.column_name}` {r.data_type.lower()}" for r in rows.itertuples()))
