"""Reading the store for the dashboard: one cached function per table a page draws.

Every function takes the store path first, so each store has its own cache entries; Refresh
(`clear_caches`) drops them and the connection, and the next page run reads the last committed
state. Reading never blocks a writer: the catalog is opened read-only (any number of processes
may) and its views read only committed run folders, each whole or absent.

One snapshot per page: `runs(path)` is the list of runs a page works from, read once and cached
until Refresh. Runs committed since are in the store but not in that list, so a reader over all
runs takes the page's runs frame and answers for its runs only (`_within`), and a reader of one
run is given a run id from it. No page can then meet a run its runs frame does not have.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pandas as pd
import streamlit as st

from store.analysis import gpu_idle_breakdown, gpu_time_breakdown, host_overhead, kernel_stats
from store.analysis.operators import top_cpu_operators
from store.analysis.compare import category_shift, latency_stats, speedup
from store import summaries
from store.db import Store, default_path

RUN_COLUMNS = [
    "run_id", "source", "workload", "variant", "label", "preset", "batch", "dtype", "device", "device_name",
    "host", "rank", "world_size", "started_at", "stored_at", "status", "error", "event_count", "trace_path", "source_path",
    "workload_kind", "params", "settings_key",
]
TRACE_SUFFIXES = (".pt.trace.json.gz", ".pt.trace.json", ".json.gz", ".json")


def store_path() -> str:
    """The store this dashboard shows: $OBSERVATORY_DB (set by `observatory dashboard --db`) or ./observatory.duckdb."""
    return str(default_path().absolute())


def committed_run_count(path: str) -> int | None:
    """Run folders in the store now (not cached: a directory listing); None without a store."""
    store = Store(path)
    return len(summaries.committed_runs(store)) if store.exists() else None


@st.cache_resource(show_spinner=False, max_entries=4)
def _connection(path: str) -> duckdb.DuckDBPyConnection:
    return Store(path).connect()  # read-only; raises StoreError when there is no store (not cached)


@contextmanager
def _cursor(path: str, run_ids: tuple[str, ...] | None = None):
    """A connection for one read: scoped to `run_ids` when given (reads only those runs' files,
    Store.connect_runs), else this thread's cursor on the shared read-only catalog."""
    con = Store(path).connect_runs(run_ids) if run_ids else _connection(path).cursor()
    try:
        yield con
    finally:
        con.close()


def clear_caches() -> None:
    """Refresh: forget every cached read and the connection; the next read sees the latest commits."""
    st.cache_data.clear()
    _connection.clear()


@st.cache_data(show_spinner=False)
def loaded_at(path: str) -> datetime:
    """When the cached reads started (cleared with them)."""
    return datetime.now(timezone.utc)


# -- runs ---------------------------------------------------------------------------------
def _display_names(frame: pd.DataFrame) -> pd.DataFrame:
    """name: short and unique; group: workload and variant, or an import's folder; facet: workload or import label."""
    profiled = frame["workload"].notna()
    source = frame["source_path"].fillna("").map(Path)
    folder = source.map(lambda p: p.parent.name or "trace")
    rank = frame["rank"].map(lambda r: "" if pd.isna(r) else f" r{int(r)}")
    short = frame["run_id"].str[-6:]
    frame["name"] = (frame["variant"].fillna("") + " " + short).where(profiled, folder + rank)
    clash = frame["name"].duplicated(keep=False) & ~profiled  # several files in one folder: add the file's name
    frame.loc[clash, "name"] = folder[clash] + "/" + source[clash].map(lambda p: _strip_suffix(p.name)[:20]) + rank[clash]
    clash = frame["name"].duplicated(keep=False)  # the same file under several labels, copies: add the id
    frame.loc[clash, "name"] = frame.loc[clash, "name"] + " " + short[clash]
    frame["group"] = (frame["workload"].fillna("") + " · " + frame["variant"].fillna("")).where(profiled, "imported " + folder)
    frame["facet"] = frame["workload"].where(profiled, frame["label"].fillna("imported traces"))
    frame["date"] = frame["started_at"].fillna(frame["stored_at"])
    return frame


def _strip_suffix(name: str) -> str:
    for suffix in TRACE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


@st.cache_data(show_spinner="Reading the runs ...")
def runs(path: str) -> pd.DataFrame:
    """Every run and imported trace, newest first, with display columns name, group, facet, date."""
    loaded_at(path)
    frame = summaries.runs_table(Store(path)).select(RUN_COLUMNS).to_pandas()
    frame = frame.sort_values(["stored_at", "run_id"], ascending=[False, True], ignore_index=True)
    return _display_names(frame)


@st.cache_data(show_spinner=False)
def run_details(path: str, run_id: str) -> dict:
    """A run's configuration and environment (JSON documents) and its metrics rows."""
    with _cursor(path, (run_id,)) as con:
        config, environment = con.execute("SELECT config, environment FROM runs WHERE run_id = ?", [run_id]).fetchone()
        metrics = con.execute("SELECT name, value, unit, source FROM metrics WHERE run_id = ? ORDER BY name", [run_id]).df()
    return {"config": _json(config), "environment": _json(environment), "metrics": metrics}


def _within(frame: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The rows of `frame` whose run is in `runs` (a page's runs frame): what an all-runs read answers for that page."""
    return frame[frame["run_id"].isin(runs["run_id"])].reset_index(drop=True)


def json_object(text) -> dict:
    """A JSON object column's value as a dict ({} for NULL, text that is not an object, or not JSON)."""
    value = _json(text if isinstance(text, str) else None)
    return {} if "unparsed" in value and len(value) == 1 else value


def _json(text: str | None) -> dict:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {"unparsed": text}
    return value if isinstance(value, dict) else {"value": value}


# -- breakdown ----------------------------------------------------------------------------
def category_times(path: str, runs: pd.DataFrame) -> pd.DataFrame:
    """The op_time_by_category view for the runs of `runs`: (run_id, rank, side, category, time_us, count, share_pct)."""
    return _within(_category_times(path), runs)


@st.cache_data(show_spinner="Summing operator time by category over every run ...")
def _category_times(path: str) -> pd.DataFrame:
    frame = summaries.category_times(Store(path)).to_pandas()
    return frame.sort_values(["run_id", "side", "time_us"], ascending=[True, True, False], ignore_index=True)


@st.cache_data(show_spinner="Reading the run's parts ...")
def part_times(path: str, run_id: str) -> pd.DataFrame:
    """The op_time_by_part view for one run, both sides (no rows for imported traces)."""
    with _cursor(path, (run_id,)) as con:
        return con.execute("SELECT * FROM op_time_by_part WHERE run_id = ? ORDER BY side, part, time_us DESC", [run_id]).df()


@st.cache_data(show_spinner="Reading the run's kernels ...")
def top_kernels(path: str, run_id: str) -> pd.DataFrame:
    with _cursor(path, (run_id,)) as con:
        return kernel_stats(con, run_id)


@st.cache_data(show_spinner="Reading the run's operators ...")
def top_operators(path: str, run_id: str, limit: int = 25) -> pd.DataFrame:
    with _cursor(path, (run_id,)) as con:
        return top_cpu_operators(con, run_id, limit)


# -- compare ------------------------------------------------------------------------------
@st.cache_resource(show_spinner="Loading the workload registry ...")
def baseline_variant(workload: str) -> str | None:
    """The registry's baseline variant of a workload (imports torch once per process); None for an unknown name."""
    from workloads.base import get

    try:
        return get(workload).baseline
    except (KeyError, ValueError):
        return None


@st.cache_data(show_spinner=False)
def latency(path: str, run_ids: tuple[str, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """latency_stats per run and phase, and the raw timed repeats (for their spread)."""
    with _cursor(path, run_ids) as con:
        stats = latency_stats(con, list(run_ids))
        repeats = con.execute("SELECT * FROM latency WHERE run_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY run_id, phase, repeat", [list(run_ids)]).df()
    return stats, repeats


@st.cache_data(show_spinner="Comparing with the baseline ...")
def comparison(path: str, baseline: str, other: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """speedup per phase and category_shift per side and category, baseline vs other."""
    with _cursor(path, (baseline, other)) as con:
        return speedup(con, baseline, other), category_shift(con, baseline, other)


# -- sequence lengths ---------------------------------------------------------------------
def attention_runs(path: str, runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of `runs` with attention calls recorded, and how many."""
    return _within(_attention_runs(path), runs)


@st.cache_data(show_spinner=False)
def _attention_runs(path: str) -> pd.DataFrame:
    with _cursor(path) as con:
        return con.execute("SELECT run_id, count(*) AS calls FROM attention_calls GROUP BY run_id").df()


@st.cache_data(show_spinner=False)
def attention_calls(path: str, run_id: str) -> pd.DataFrame:
    with _cursor(path, (run_id,)) as con:
        return con.execute("SELECT * FROM attention_calls WHERE run_id = ? ORDER BY iteration, call_index", [run_id]).df()


# -- device time --------------------------------------------------------------------------
@st.cache_data(show_spinner="Computing the GPU temporal and idle breakdowns ...")
def device_breakdowns(path: str, run_id: str, definition: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """gpu_time_breakdown and gpu_idle_breakdown of one run (no rows without device events)."""
    with _cursor(path, (run_id,)) as con:
        return gpu_time_breakdown(con, run_id, definition), gpu_idle_breakdown(con, run_id, definition)


@st.cache_data(show_spinner="Reading the kernel timeline ...")
def idle_gaps(path: str, run_id: str, definition: str) -> pd.DataFrame:
    """The gpu_idle_gaps view for one run: every kernel per stream with the gap before it."""
    with _cursor(path, (run_id,)) as con:
        return con.execute(
            "SELECT * FROM gpu_idle_gaps WHERE run_id = ? AND definition = ? ORDER BY stream, start_us", [run_id, definition]
        ).df()


@st.cache_data(show_spinner=False)
def telemetry(path: str, run_id: str) -> pd.DataFrame:
    with _cursor(path, (run_id,)) as con:
        return con.execute("SELECT * FROM telemetry WHERE run_id = ? ORDER BY gpu_index, ts_us", [run_id]).df()


@st.cache_data(show_spinner="Computing host overhead ...")
def host(path: str, run_id: str) -> pd.DataFrame:
    with _cursor(path, (run_id,)) as con:
        return host_overhead(con, run_id)


# -- SQL ----------------------------------------------------------------------------------
@st.cache_data(show_spinner=False)
def schema(path: str) -> pd.DataFrame:
    """Columns of every table and view of the store, as the SQL box sees them."""
    from app.dashboard.sandbox import sandboxed

    with sandboxed(Store(path)) as con:
        return con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_catalog = current_database() AND table_name <> 'observatory_meta' ORDER BY table_name, ordinal_position"
        ).df()


# -- studies ------------------------------------------------------------------------------
@st.cache_data(show_spinner=False)
def studies() -> list:
    """Every study file (studies/*.toml), by number."""
    from store.analysis.studies import all_studies

    return all_studies()


@st.cache_data(show_spinner="Judging the study's findings ...")
def study_results(path: str, runs: pd.DataFrame, study_name: str, preset: str, device: str) -> tuple[list[dict], dict[str, pd.DataFrame], int, int]:
    """(findings with verdicts, each finding's figure frame, points with a run, points in all) for the study's
    runs among `runs` (the page's one runs list) at this preset and device."""
    from app.reproduce import match_runs, study_points
    from store.analysis.studies import add_study_views, figure_frame, get_study, judge

    study = get_study(study_name)
    points = study_points(study, preset, device)
    matched = match_runs(runs, points)
    run_ids = tuple(sorted(set(matched.values())))
    with Store(path).connect_runs(run_ids) as con:
        add_study_views(con)
        findings = [judge(con, finding, on_gpu=device.startswith("cuda")) for finding in study.findings]
        figures = {f.id: figure_frame(con, f.figure) for f in study.findings if f.figure is not None}
    return findings, figures, len(matched), len(points)
