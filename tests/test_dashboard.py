"""The dashboard: every page with Streamlit's AppTest on a real store, the SQL sandbox's refusals, and
an end-to-end run of the real server in headless Chromium that saves docs/screenshots/<page>.png.

The fixture store holds real traces from ../shared/traces (two ranks of one job, a CUDA-sync
microbenchmark, a CPU-only trace), three runs profiled here (`observatory run`: llm-decode eager
and sdpa, diffusion-t2i), a failed run, and a copy of a GPU trace with NVML-like samples (no GPU
here to record real ones).
"""
from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from store.db import Store, StoreError
from store.ingest import ingest_file, record_failed_run, run_row

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT.parent / "shared" / "traces"
MAIN = ROOT / "app" / "dashboard" / "main.py"
# The README's screenshots: rewritten only when asked (OBSERVATORY_UPDATE_SCREENSHOTS=1), so an
# ordinary test run leaves the working tree clean; otherwise they go to a temporary folder.
SCREENSHOTS = ROOT / "docs" / "screenshots" if os.environ.get("OBSERVATORY_UPDATE_SCREENSHOTS") == "1" else None
CHROMIUM = Path("/usr/bin/chromium")
IMPORTS = {
    "rank0": "hta/trace_filter/sampled_rank-0.json.gz",
    "rank1": "hta/trace_filter/sampled_rank-1.json.gz",
    "alexnet": "hta/critical_path/alexnet/benchmark_result_2869224_1695835535_trace.json.gz",
    "cpu_only": "hta/cpu_only/rank-34.Jul_15_10_52_41.1074.pt.trace.json.gz",
}
PROFILED = {
    "llm_eager": ["llm-decode", "--variant", "eager", "--param", "new_tokens=4", "--repeats", "3"],
    "llm_sdpa": ["llm-decode", "--variant", "sdpa", "--param", "new_tokens=4", "--repeats", "3"],
    "diffusion": ["diffusion-t2i", "--param", "denoising_steps=1", "--repeats", "2", "--warmup", "0"],
}
PAGES = ["runs", "breakdown", "compare", "seqlen", "device", "sql", "trace"]
FAILED_ERROR = "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"


def _copy_run(source: Store, target: Store, run_id: str, new_id: str, extra: dict[str, pa.Table] | None = None, **fields) -> str:
    """Commit a copy of `source`'s run `run_id` into `target` as `new_id`, stored now: every part with its run_id
    rewritten, the runs row updated with `fields`, and the `extra` tables added."""
    folder = source.runs_dir / run_id
    row = pq.read_table(folder / "runs.parquet").to_pylist()[0]
    row.update(run_id=new_id, stored_at=run_row(new_id)["stored_at"], **fields)
    with target.stage() as staged:
        staged.write("runs", pa.Table.from_pylist([row]))
        for part in folder.glob("*.parquet"):
            if part.stem != "runs":
                table = pq.read_table(part)
                staged.write(part.stem, table.set_column(table.schema.get_field_index("run_id"), "run_id", pa.array([new_id] * table.num_rows)))
        for name, table in (extra or {}).items():
            staged.write(name, table)
        staged.commit(new_id)
    return new_id


def _telemetry_copy(store: Store, source_run: str) -> str:
    """A copy of a real GPU trace's run with NVML-like samples over its span (this machine has no GPU)."""
    run_id = "t-telemetry-copy"
    start, end = pq.read_table(store.runs_dir / source_run / "events.parquet", columns=["ts_us"]).column("ts_us").to_pandas().agg(["min", "max"])
    rng = random.Random(0)
    ts = [start + i * (end - start) / 39 for i in range(40)]
    util = [rng.uniform(20, 95) for _ in ts]
    telemetry = pa.table({
        "run_id": [run_id] * 40, "ts_us": ts, "gpu_index": [0] * 40, "gpu_name": ["NVIDIA A100-SXM4-40GB"] * 40,
        "gpu_util_pct": util, "memory_used_bytes": [int(2e10 + 1e8 * u) for u in util], "memory_total_bytes": [40 * 2**30] * 40,
        "power_w": [80 + 2.5 * u for u in util], "sm_clock_mhz": [1410.0] * 40, "temperature_c": [40 + 0.3 * u for u in util],
    })
    return _copy_run(store, store, source_run, run_id, extra={"telemetry": telemetry}, label="telemetry-copy", rank=None)


@pytest.fixture(scope="session")
def dash(tmp_path_factory):
    """The fixture store's path and run ids by name."""
    path = tmp_path_factory.mktemp("dashboard") / "observatory.duckdb"
    store = Store(path).ensure()
    runs = {}
    workers = {name: subprocess.Popen([sys.executable, "-m", "app.cli", "run", *argv, "--db", str(path), "--format", "json"],
                                      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for name, argv in PROFILED.items()}
    for name, relative in IMPORTS.items():
        if not (TRACES / relative).is_file():
            pytest.skip(f"shared trace {TRACES / relative} not present")
        runs[name] = ingest_file(store, TRACES / relative, label="shared-traces").run_id
    for name, worker in workers.items():
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, f"observatory run {' '.join(PROFILED[name])} failed: {err[-2000:]}"
        runs[name] = json.loads(out)["run_id"]
    record_failed_run(store, "r-failed-0001", error=FAILED_ERROR, source="profile", workload="llm-decode", variant="sdpa",
                      preset="tiny", batch=1, dtype="float32", device="cuda")
    runs["failed"] = "r-failed-0001"
    runs["telemetry"] = _telemetry_copy(store, runs["rank0"])
    return {"path": str(path), "runs": runs}


def app(path: str, monkeypatch, page: str | None = None, run_id: str | None = None):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("OBSERVATORY_DB", path)
    at = AppTest.from_file(str(MAIN), default_timeout=120)
    if run_id:
        at.session_state["run_id"] = run_id
    at.run()
    if page:
        at.switch_page(f"page_scripts/{page}.py").run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def charts(at) -> list:
    return at.get("plotly_chart")


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


# -- every page -----------------------------------------------------------------------------------
@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_errors(dash, monkeypatch, page):
    at = app(dash["path"], monkeypatch, page, run_id=dash["runs"]["rank0"])
    assert at.title and not at.error, texts(at.error)
    if page in ("breakdown", "compare", "device"):
        assert charts(at), f"{page}: no chart"


def test_runs_lists_every_run_and_a_failed_runs_error(dash, monkeypatch):
    at = app(dash["path"], monkeypatch, "runs")
    table = at.dataframe[0].value
    assert set(dash["runs"].values()) <= set(table["run_id"])
    assert FAILED_ERROR in set(table["error"].dropna())
    at.multiselect(key="runs_status").select("failed").run()
    assert list(at.dataframe[0].value["run_id"]) == ["r-failed-0001"]
    at.selectbox(key="run_picker").select("r-failed-0001").run()
    assert FAILED_ERROR in texts(at.error)
    at.multiselect(key="runs_status").unselect("failed").run()
    at.multiselect(key="runs_workload").select("(imported trace)").run()
    assert set(at.dataframe[0].value["source"]) == {"import"}


def test_breakdown_stacks_categories_per_run_and_drills_into_kernels(dash, monkeypatch):
    at = app(dash["path"], monkeypatch, "breakdown", run_id=dash["runs"]["rank0"])
    assert at.radio(key="breakdown_side").value == "device"
    specs = [c.proto.spec for c in charts(at)]
    assert "trace_filter r0" in specs[0] and "trace_filter r1" in specs[0] and "communication" in specs[0]
    assert any("device ops by total time" in s for s in specs) and any("CPU operators by self time" in s for s in specs)
    at.radio(key="breakdown_side").set_value("cpu").run()
    assert not at.exception and charts(at)
    spec = charts(at)[0].proto.spec
    assert "llm-decode" in spec and "diffusion-t2i" in spec  # profiled CPU runs have a CPU side


def test_compare_shows_speedup_and_category_shift(dash, monkeypatch):
    at = app(dash["path"], monkeypatch, "compare")
    at.selectbox(key="compare_workload").select("llm-decode").run()
    assert at.selectbox(key="compare_baseline_llm-decode").value == "eager"  # the registry's baseline
    speed = at.dataframe[0].value
    assert set(speed["variant"]) == {"sdpa"} and {"iteration", "prefill", "decode"} <= set(speed["phase"])
    assert (speed["speedup"] > 0).all()
    assert any("whole iteration" in m.label for m in at.metric)
    assert len(charts(at)) == 3  # latency, throughput, where time moved


def test_sequence_lengths_per_level_and_llm_phases(dash, monkeypatch):
    at = app(dash["path"], monkeypatch, "seqlen", run_id=dash["runs"]["diffusion"])
    levels = next(c.proto.spec for c in charts(at) if "attention calls" in c.proto.spec)
    assert all(level in levels for level in ("down 0", "mid", "up 1"))
    assert "Neither applies" in texts(at.info)
    at = app(dash["path"], monkeypatch, "seqlen", run_id=dash["runs"]["llm_eager"])
    labels = [m.label for m in at.metric]
    assert "prefill: median" in labels and "decode: median" in labels


def test_device_time_matches_the_analyses_for_both_ranks(dash, monkeypatch):
    at = app(dash["path"], monkeypatch, "device", run_id=dash["runs"]["rank0"])
    assert at.multiselect(key="device_ranks").value == [dash["runs"]["rank1"]]
    temporal = at.dataframe[0].value.set_index("label")
    assert round(temporal.loc["trace_filter r0", "idle_us"]) == 321378  # HTA 0.5.0's figure (docs/analyses.md)
    assert round(temporal.loc["trace_filter r1", "idle_us"]) == 328671
    assert len(charts(at)) == 3  # temporal, idle per stream, timeline
    assert "No NVML samples" in texts(at.info)


def test_device_time_draws_telemetry(dash, monkeypatch):
    at = app(dash["path"], monkeypatch, "device", run_id=dash["runs"]["telemetry"])
    assert any("GPU utilization" in c.proto.spec for c in charts(at))


def test_device_time_on_a_cpu_run_says_there_is_no_gpu_data(dash, monkeypatch):
    at = app(dash["path"], monkeypatch, "device", run_id=dash["runs"]["llm_eager"])
    assert "No GPU data" in texts(at.info)
    assert [m.label for m in at.metric] == ["profiled wall time", "in leaf operators", "host overhead"]
    assert not charts(at)


def test_trace_page_offers_the_file_and_viewers(dash, monkeypatch):
    at = app(dash["path"], monkeypatch, "trace", run_id=dash["runs"]["llm_eager"])
    assert at.get("download_button")
    markdown = texts(at.markdown) + texts(at.code)
    assert "ui.perfetto.dev" in markdown
    assert f"tensorboard --logdir {Store(dash['path']).runs_dir}" in markdown


# -- SQL ------------------------------------------------------------------------------------------
REFUSED = {
    "DROP VIEW runs": "DROP statements are refused",
    "INSERT INTO runs SELECT * FROM runs": "INSERT statements are refused",
    "COPY (SELECT * FROM runs) TO '/tmp/observatory-leak.csv'": "COPY statements are refused",
    "ATTACH '/tmp/other.duckdb' AS other": "ATTACH statements are refused",
    "INSTALL httpfs": "INSTALL statements are refused",
    "SELECT * FROM read_text('/etc/passwd')": "Cannot access file \"/etc/passwd\"",
    "SELECT 1; DROP VIEW runs": "one statement at a time",
}


def test_sql_page_runs_a_query_with_csv_and_schema(dash, monkeypatch):
    at = app(dash["path"], monkeypatch, "sql")
    assert len(at.dataframe[0].value) >= 4 and at.get("download_button")
    at.text_area(key="sql_query").input("SELECT run_id, status FROM runs WHERE status = 'failed'")
    at.button(key="sql_run").click().run()
    assert list(at.dataframe[0].value["run_id"]) == ["r-failed-0001"]
    assert "gpu_time_breakdown" in [e.label for e in at.expander]


@pytest.mark.parametrize("query", list(REFUSED))
def test_sql_page_refuses_writes_files_and_extensions(dash, monkeypatch, query):
    at = app(dash["path"], monkeypatch, "sql")
    at.text_area(key="sql_query").input(query)
    at.button(key="sql_run").click().run()
    assert not at.exception
    assert REFUSED[query] in texts(at.error)
    assert not Path("/tmp/observatory-leak.csv").exists()


ENGINE_REFUSALS = [  # the engine alone, with the statement check bypassed: each still fails
    "DROP VIEW runs", "INSERT INTO runs SELECT * FROM runs", "CREATE TABLE t AS SELECT 1",
    "COPY (SELECT 1) TO '/tmp/observatory-leak.csv'", "ATTACH '/tmp/other.duckdb' AS other", "INSTALL httpfs", "LOAD httpfs",
    "SELECT * FROM read_text('/etc/passwd')", "SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM glob('/*')",
    "SET enable_external_access = true", "SET allowed_directories = ['/']", "RESET lock_configuration", "USE memory",
]


@pytest.mark.parametrize("statement", ENGINE_REFUSALS)
def test_sandbox_engine_refuses_without_the_statement_check(dash, statement):
    from app.dashboard.sandbox import sandboxed

    with sandboxed(Store(dash["path"])) as con:
        with pytest.raises(duckdb.Error):
            con.execute(statement).fetchall()
        assert con.execute("SELECT count(*) FROM events").fetchone()[0] > 0  # the store's parts stay readable
    assert not Path("/tmp/observatory-leak.csv").exists()


def test_sandbox_reads_views_and_stops_long_queries(dash):
    from app.dashboard.sandbox import run_query

    store = Store(dash["path"])
    result = run_query(store, "SELECT * FROM gpu_time_breakdown WHERE definition = 'hta'")
    assert len(result.frame) >= 2
    assert run_query(store, "SELECT * FROM events", max_rows=100).truncated
    with pytest.raises(ValueError, match="ran longer than 1 s"):
        run_query(store, "SELECT count(*) FROM range(100000000000) a(x), range(1000) b(y)", timeout_s=1)


# -- empty stores, refresh, errors ------------------------------------------------------------------
def test_no_store_explains_how_to_get_data(tmp_path, monkeypatch):
    for page in PAGES:
        at = app(str(tmp_path / "none.duckdb"), monkeypatch, page)
        assert "no store at" in texts(at.info).lower() and "observatory demo" in texts(at.code)
    assert not (tmp_path / "none.duckdb").exists()  # the dashboard never creates a store


def test_empty_store_explains_how_to_get_data(tmp_path, monkeypatch):
    path = tmp_path / "empty.duckdb"
    Store(path).ensure()
    at = app(str(path), monkeypatch, "breakdown")
    assert "has no runs yet" in texts(at.info)


def test_refresh_shows_runs_committed_meanwhile(tmp_path, monkeypatch):
    store = Store(tmp_path / "o.duckdb").ensure()
    ingest_file(store, TRACES / IMPORTS["cpu_only"])
    at = app(str(store.path), monkeypatch, "runs")
    assert len(at.dataframe[0].value) == 1
    ingest_file(store, TRACES / IMPORTS["alexnet"])  # a writer commits while the dashboard has the store open
    at.run()
    assert len(at.dataframe[0].value) == 1  # the cached, last read state ...
    assert "1 new run(s) committed since" in texts(at.sidebar.warning)
    at.sidebar.button[0].click().run()  # ... until Refresh
    assert len(at.dataframe[0].value) == 2 and not at.sidebar.warning


WRITER = """
import sys, time
from store.db import Store
from store.ingest import record_failed_run
store = Store(sys.argv[1])
for i in range(40):
    record_failed_run(store, f"r-writer-{i:04d}", error="RuntimeError: from the writer", source="profile",
                      workload="llm-decode", variant="eager", device="cpu")
    time.sleep(0.02)
"""


def test_pages_work_while_another_process_commits_runs(tmp_path, monkeypatch):
    store = Store(tmp_path / "o.duckdb").ensure()
    ingest_file(store, TRACES / IMPORTS["rank0"])
    at = app(str(store.path), monkeypatch, "runs")  # the dashboard holds the catalog open from here on
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(store.path)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        while writer.poll() is None:
            for page in PAGES:
                at.switch_page(f"page_scripts/{page}.py").run()
                assert not at.exception and "Could not read" not in texts(at.error), (page, [e.message for e in at.exception], texts(at.error))
            at.sidebar.button[0].click().run()  # Refresh mid-write: reads whatever is committed by now
    finally:
        _, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err  # never blocked or broken by the reader
    at.sidebar.button[0].click().run()
    at.switch_page("page_scripts/runs.py").run()
    assert len(at.dataframe[0].value) == 41


def test_every_page_keeps_to_its_runs_list_while_runs_arrive(dash, tmp_path, monkeypatch):
    """Runs committed between page runs of one session, no Refresh: each page works from the runs list it read."""
    from store.analysis.compare import latest_per_variant

    source, store = Store(dash["path"]), Store(tmp_path / "o.duckdb").ensure()
    ids = dash["runs"]
    _copy_run(source, store, ids["llm_eager"], "r-eager-first")
    at = app(str(store.path), monkeypatch, "runs")  # the runs list is read and cached here: one baseline run
    _copy_run(source, store, ids["llm_eager"], "r-eager-later")  # a newer baseline and a variant at its settings
    _copy_run(source, store, ids["llm_sdpa"], "r-sdpa-later")
    arriving = ["rank0", "diffusion", "telemetry", "cpu_only", "rank1", "alexnet", "failed"]
    for page, name in zip(PAGES, arriving):
        _copy_run(source, store, ids[name], f"r-arriving-{name}")
        at.switch_page(f"page_scripts/{page}.py").run()
        assert not at.exception, (page, [e.message for e in at.exception])
        assert "Could not read" not in texts(at.error), (page, texts(at.error))
        if page == "compare":  # the baseline of the list it read, and no variant yet
            assert "`r-eager-first`" in texts(at.markdown) and "No variant of llm-decode" in texts(at.info)
    assert f"{len(arriving) + 2} new run(s) committed since" in texts(at.sidebar.warning)
    at.sidebar.button[0].click().run()  # Refresh: the newest baseline and its variant
    at.switch_page("page_scripts/compare.py").run()
    assert "`r-eager-later`" in texts(at.markdown)
    assert set(at.dataframe[0].value["run_id"]) == {"r-sdpa-later"}
    with store.connect() as con:  # the CLI's `observatory compare --workload` pairs by the same rule
        assert latest_per_variant(con, "llm-decode", "eager") == ("r-eager-later", {"sdpa": "r-sdpa-later"})


def test_a_store_error_is_a_message_not_a_traceback(dash, monkeypatch):
    from app.dashboard import data

    def broken(path, runs):
        raise duckdb.IOException('IO Error: No files found that match the pattern "runs/*/events.parquet"')

    monkeypatch.setattr(data, "category_times", broken)
    at = app(dash["path"], monkeypatch, "breakdown")
    assert "Could not read the store: IO Error" in texts(at.error)


def test_command_line(tmp_path):
    import argparse

    from app.dashboard.command import cmd_dashboard, streamlit_argv
    from app.parsers import add_dashboard

    parser = argparse.ArgumentParser()
    add_dashboard(parser.add_subparsers(dest="command"), lambda p: p.add_argument("--db"))
    args = parser.parse_args(["dashboard", "--db", str(tmp_path)])
    assert (args.host, args.port) == ("127.0.0.1", 8501)
    with pytest.raises(StoreError, match="is a folder"):
        cmd_dashboard(args)
    with pytest.raises(ValueError, match="--port 0"):
        cmd_dashboard(parser.parse_args(["dashboard", "--db", str(tmp_path / "x.duckdb"), "--port", "0"]))
    argv = streamlit_argv("127.0.0.1", 8600)
    assert argv[argv.index("--server.address") + 1] == "127.0.0.1" and str(MAIN) in argv


# -- end to end: the real server in headless Chromium -------------------------------------------------
URLS = {"runs": "", "breakdown": "breakdown", "compare": "compare", "seqlen": "seqlen", "device": "device", "sql": "sql", "trace": "trace"}
CHART_PAGES = {"breakdown", "compare", "seqlen", "device"}
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load(page, url: str) -> None:
    """Open `url` and wait until its script has run: a title drawn, no "running" status left."""
    page.goto(url)
    page.wait_for_selector("h1", timeout=30_000)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=30_000)


def _dashboard_command(path: str, port: int) -> list[str]:
    """`observatory dashboard` from this checkout: run as a module from ROOT, not the venv's console script,
    which imports whichever checkout the venv was installed from (an editable install)."""
    return [sys.executable, "-m", "app.cli", "dashboard", "--db", path, "--port", str(port)]


@pytest.mark.slow
def test_end_to_end_every_page_in_chromium(dash, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is absent (Debian's chromium package; ./setup.sh installs it as root)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    port = _free_port()
    server = subprocess.Popen(_dashboard_command(dash["path"], port), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert server.poll() is None, f"the server exited: {server.stdout.read()}"
                assert time.monotonic() < deadline, "the server did not listen within 60 s"
                time.sleep(0.2)
        shots = SCREENSHOTS or tmp_path
        shots.mkdir(parents=True, exist_ok=True)
        picks = {"device": dash["runs"]["rank0"], "seqlen": dash["runs"]["diffusion"], "breakdown": dash["runs"]["rank0"]}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            for name, url in URLS.items():
                query = f"?run={picks[name]}" if name in picks else ""
                _load(page, f"http://127.0.0.1:{port}/{url}{query}")
                if name in CHART_PAGES:
                    page.wait_for_selector('[data-testid="stPlotlyChart"] .main-svg', timeout=30_000)
                page.wait_for_timeout(800)  # let the last charts lay out
                exceptions = page.query_selector_all('[data-testid="stException"]')
                assert not exceptions, f"{name}: {exceptions[0].inner_text()}"
                assert "Could not read the store" not in page.inner_text("body"), name
                height = page.evaluate("() => document.querySelector('[data-testid=\"stMainBlockContainer\"]').scrollHeight")
                page.set_viewport_size({"width": 1400, "height": min(int(height) + 120, 6000)})
                page.wait_for_timeout(500)
                page.screenshot(path=str(shots / f"{name}.png"))
                assert (shots / f"{name}.png").stat().st_size > 20_000, f"{name}: the screenshot is blank"
                page.set_viewport_size({"width": 1400, "height": 1000})
            _load(page, f"http://127.0.0.1:{port}/runs")  # the Runs page at its own name too, not only at the root
            page.wait_for_timeout(800)  # a "Page not found" dialog comes after the first script run
            assert page.inner_text("h1") == "Runs" and "Page not found" not in page.inner_text("body"), page.inner_text("body")[:500]
            browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
