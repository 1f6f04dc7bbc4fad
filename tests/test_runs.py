"""Profiled runs, sweeps and comparisons, end to end through the CLI on a real store."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from store.db import Store

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--repeats", "2", "--warmup", "1"]


def observatory(*args: str, db: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args, "--db", str(db)], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})})


def query(db: Path, sql: str, params=None) -> list:
    with Store(db).connect() as con:
        return con.execute(sql, params or []).fetchall()


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    """One sweep of llm-decode eager and sdpa, shared by the tests below."""
    folder = tmp_path_factory.mktemp("sweep")
    sweep = folder / "llm.toml"
    sweep.write_text(
        'name = "llm-test"\n[grid]\nworkloads = ["llm-decode"]\nvariants = ["eager", "sdpa"]\npresets = ["tiny"]\n'
        'batches = [1]\ndtypes = ["float32"]\n[run]\nrepeats = 3\nwarmup = 1\n[grid.params]\nnew_tokens = [6]\n'
    )
    db = folder / "o.duckdb"
    done = observatory("sweep", str(sweep), db=db)
    assert done.returncode == 0, done.stderr
    assert "run" in done.stderr and "2/2" in done.stderr, "the progress bar shows run i/N"
    return db


def test_sweep_stores_every_run_through_the_import_path(swept):
    rows = query(swept, "SELECT variant, status, source, event_count > 0, trace_path FROM runs ORDER BY variant")
    assert [r[:4] for r in rows] == [("eager", "ok", "profile", True), ("sdpa", "ok", "profile", True)]
    for *_, trace_path in rows:
        path = Path(trace_path)
        assert path.is_file() and path.name.endswith(".pt.trace.json.gz")
        assert path.parent.parent == Store(swept).runs_dir, "TensorBoard logdir layout: <logdir>/<run id>/<worker>.pt.trace.json.gz"
        assert path.parent.name == path.name.split(".")[0], "the trace lives in its own run's folder"
    latency = query(swept, "SELECT phase, count(*) FROM latency GROUP BY 1 ORDER BY 1")
    assert latency == [("decode", 6), ("iteration", 6), ("prefill", 6), ("unmarked", 6)], "3 timed repeats per phase per run"
    cpu_ops = query(swept, "SELECT count(*) FROM events WHERE cat = 'cpu_op' AND category IS NOT NULL")[0][0]
    assert cpu_ops > 100


def test_attention_calls_are_recorded_per_model_call(swept):
    rows = query(swept, """SELECT kind, min(q_len), max(q_len), min(kv_len), max(kv_len), count(DISTINCT model_call)
                          FROM attention_calls JOIN runs USING (run_id) WHERE variant = 'eager' GROUP BY kind ORDER BY kind""")
    (decode, prefill) = rows
    assert decode[0] == "decode" and decode[1] == decode[2] == 1 and decode[5] == 5, "5 decode steps of q_len 1 after prefill"
    assert prefill[0] == "prefill" and prefill[1] == prefill[2] > 1
    assert decode[3] == prefill[2] + 1 and decode[4] == prefill[2] + 5, "the KV length grows by one per decode step"


def test_run_records_environment_and_missing_gpu(swept):
    (environment,) = query(swept, "SELECT environment FROM runs WHERE variant = 'eager'")[0]
    env = json.loads(environment)
    assert env["torch_version"].startswith("2.13.0") and env["telemetry_status"].startswith("telemetry unavailable:")
    assert query(swept, "SELECT count(*) FROM telemetry")[0][0] == 0
    metrics = dict(query(swept, "SELECT name, value FROM metrics JOIN runs USING (run_id) WHERE variant = 'eager'"))
    assert metrics["param_count"] > 0 and metrics["kv_cache_bytes"] > 0


def test_same_sweep_again_skips_done_runs(swept, tmp_path):
    sweep = next(swept.parent.glob("*.toml"))
    done = observatory("sweep", str(sweep), db=swept)
    assert done.returncode == 0 and "2 already done, 0 to run" in done.stdout
    assert query(swept, "SELECT count(*) FROM runs")[0][0] == 2


def test_compare_workload_and_two_runs(swept):
    done = observatory("compare", "--workload", "llm-decode", "--format", "json", db=swept)
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)
    assert result["variant"] == "sdpa"
    phases = {row["phase"]: row for row in result["speedup"]}
    assert set(phases) == {"iteration", "prefill", "decode", "unmarked"}
    for row in phases.values():
        assert row["speedup_low"] <= row["speedup"] <= row["speedup_high"]
        assert row["speedup"] == pytest.approx(row["baseline_median_us"] / row["median_us"])
    assert {r["side"] for r in result["category_shift"]} == {"cpu"}
    ids = [r[0] for r in query(swept, "SELECT run_id FROM runs ORDER BY variant")]
    pair = observatory("compare", ids[0], ids[1], db=swept)
    assert pair.returncode == 0 and "speedup" in pair.stdout


def test_failed_runs_are_stored_and_the_sweep_goes_on(tmp_path):
    sweep = tmp_path / "faults.toml"
    sweep.write_text(
        'name = "faults"\n[grid]\nworkloads = ["fault-raise", "fault-killed", "fault-oom"]\nvariants = ["all"]\n'
        'presets = ["tiny"]\nbatches = [1]\ndtypes = ["float32"]\n[run]\nrepeats = 1\nmemory_limit_gb = 6\n'
    )
    db = tmp_path / "o.duckdb"
    env = {"OBSERVATORY_ADAPTERS": "tests.fault_workloads"}
    done = observatory("sweep", str(sweep), db=db, env=env)
    assert done.returncode == 0, done.stderr
    errors = dict(query(db, "SELECT workload, error FROM runs WHERE status = 'failed'"))
    assert "fails on purpose" in errors["fault-raise"]
    assert "killed by SIGKILL" in errors["fault-killed"]
    assert "MemoryError" in errors["fault-oom"] and "out of memory" in errors["fault-oom"]
    again = observatory("sweep", str(sweep), db=db, env=env)
    assert "3 already done, 0 to run" in again.stdout


@pytest.mark.parametrize(
    "content, message",
    [
        ('name = "x"\n[grid\nworkloads = ["llm-decode"]\n', "line 2"),
        ('name = "x"\n[grid]\nworkloads = ["llm-decoder"]\nvariants = ["all"]\npresets = ["tiny"]\nbatches = [1]\ndtypes = ["float32"]\n', "line 3: unknown workload 'llm-decoder'"),
        ('name = "x"\n[grid]\nworkloads = ["llm-decode"]\nvariants = ["all"]\npresets = ["huge"]\nbatches = [1]\ndtypes = ["float32"]\n', "line 5"),
        ('name = "x"\n[grid]\nworkloads = ["llm-decode"]\nvariants = ["all"]\npresets = ["tiny"]\nbatches = ["one"]\ndtypes = ["float32"]\n', "line 6: batches must be a non-empty list of ints"),
        ('name = "x"\n[grid]\nworkloads = ["llm-decode"]\nvariants = ["all"]\npresets = ["tiny"]\nbatches = [1]\ndtypes = ["float32"]\n[run]\nrepeat = 3\n', "line 9: unknown run setting 'repeat'"),
    ],
)
def test_malformed_sweep_fails_before_anything_runs(tmp_path, content, message):
    sweep = tmp_path / "bad.toml"
    sweep.write_text(content)
    db = tmp_path / "o.duckdb"
    done = observatory("sweep", str(sweep), db=db)
    assert done.returncode == 1
    assert str(sweep) in done.stderr and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not db.exists(), "nothing ran, nothing was stored"


def test_run_errors_name_the_argument(tmp_path):
    db = tmp_path / "o.duckdb"
    unknown = observatory("run", "llm-decoder", db=db)
    assert unknown.returncode == 1 and "unknown workload 'llm-decoder'; did you mean llm-decode" in unknown.stderr
    variant = observatory("run", "llm-decode", "--variant", "sdp", db=db)
    assert variant.returncode == 1 and "unknown variant 'sdp'; did you mean sdpa? (known: eager, sdpa" in variant.stderr
    preset = observatory("run", "llm-decode", "--preset", "tini", db=db)
    assert preset.returncode == 1 and "unknown preset 'tini'; did you mean tiny? (known: tiny, paper)" in preset.stderr
    batch = observatory("run", "llm-decode", "--batch", "0", db=db)
    assert batch.returncode == 1 and "--batch" in batch.stderr
    import torch

    if not torch.cuda.is_available():
        cuda = observatory("run", "llm-decode", "--device", "cuda", db=db)
        assert cuda.returncode == 1 and "--device cuda: no CUDA device on this machine" in cuda.stderr
    assert not (db.exists() and query(db, "SELECT count(*) FROM runs")[0][0])


def test_list_shows_workloads_variants_presets(tmp_path):
    done = subprocess.run([sys.executable, "-m", "app.cli", "list", "--format", "json"], capture_output=True, text=True, cwd=ROOT)
    rows = {r["workload"]: r for r in json.loads(done.stdout)}
    assert rows["llm-decode"]["baseline"] == "eager" and "no-kv-cache" in rows["llm-decode"]["variants"]
    assert rows["diffusion-t2i"]["presets"] == "tiny, paper"


def test_attention_modules_count_as_attention_except_projections(swept):
    rows = query(swept, """
        SELECT variant,
               sum(self_us) FILTER (WHERE category = 'attention') AS attention_us,
               count(*) FILTER (WHERE category = 'attention' AND name IN ('aten::linear', 'aten::addmm', 'aten::mm')) AS projections_as_attention,
               count(*) FILTER (WHERE cat = 'user_annotation' AND name LIKE 'attention::model.layers.%') AS scopes
        FROM events JOIN runs USING (run_id) GROUP BY variant ORDER BY variant""")
    for variant, attention_us, projections, scopes in rows:
        assert attention_us > 0 and scopes > 0, variant
        assert projections == 0, f"{variant}: q/k/v/o projections must stay gemm"


# -- one run per point, whoever runs the sweep ------------------------------------------------------
def quick_sweep(folder: Path, name: str, variants: tuple[str, ...]) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\n[grid]\nworkloads = ["llm-decode"]\nvariants = {json.dumps(list(variants))}\npresets = ["tiny"]\n'
        'batches = [1]\ndtypes = ["float32"]\n[run]\nrepeats = 1\nwarmup = 0\n[grid.params]\nnew_tokens = [2]\n'
    )
    return path


def start_sweep(sweep: Path, db: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "app.cli", "sweep", str(sweep), "--db", str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def runs_per_point(db: Path) -> list[int]:
    return [n for (n,) in query(db, "SELECT count(*) FROM runs GROUP BY json_extract_string(config, '$.sweep_key') ORDER BY 1")]


def children_of(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid:
            children.append(int(stat.parent.name))
    return children


def is_running(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        state = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State:"))
    except FileNotFoundError:
        return False
    return "zombie" not in state and "dead" not in state


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.05)
    raise AssertionError(f"waited {timeout_s} s for {what}")


def test_two_sweeps_of_one_file_at_once_store_each_point_once(tmp_path):
    sweep = quick_sweep(tmp_path, "twice", ("eager", "sdpa"))
    db = tmp_path / "o.duckdb"
    Store(db).ensure()
    sweeps = [start_sweep(sweep, db) for _ in range(2)]
    for process in sweeps:
        _, stderr = process.communicate(timeout=180)
        assert process.returncode == 0, stderr
    assert runs_per_point(db) == [1, 1]


def test_killed_sweep_takes_its_run_along_and_a_restart_runs_the_point_once(tmp_path):
    sweep = quick_sweep(tmp_path, "killed", ("eager",))
    db = tmp_path / "o.duckdb"
    Store(db).ensure()
    first = start_sweep(sweep, db)
    (child,) = wait_for(lambda: children_of(first.pid), 60, "the sweep's run process")
    first.kill()
    first.communicate()
    wait_for(lambda: not is_running(child), 10, f"the run process {child} to die with its sweep")
    again = observatory("sweep", str(sweep), db=db)
    assert again.returncode == 0, again.stderr
    assert "took over the claim" in again.stderr and f"pid {first.pid}" in again.stderr, again.stderr
    assert runs_per_point(db) == [1]
    assert query(db, "SELECT status FROM runs") == [("ok",)]


def test_a_point_claimed_by_a_live_sweep_is_skipped(tmp_path):
    from app.sweep import claim_point, load_sweep

    sweep_path = quick_sweep(tmp_path, "claimed", ("eager",))
    db = tmp_path / "o.duckdb"
    store = Store(db).ensure()
    sweep = load_sweep(sweep_path)
    claim = claim_point(store, sweep, sweep.runs[0])  # this test process is the live owner
    assert claim.ours
    done = observatory("sweep", str(sweep_path), db=db)
    assert done.returncode == 0, done.stderr
    assert f"being run by pid {os.getpid()}" in done.stderr, done.stderr
    assert "1 being run by another sweep" in done.stdout, done.stdout
    assert query(db, "SELECT count(*) FROM runs") == [(0,)]


def test_sweep_parameter_values_may_differ_per_preset(tmp_path):
    """`length = {tiny = [...], paper = [...]}`: each preset sweeps its own range; a preset the table
    lacks is an error naming the parameter and the line."""
    from app.sweep import SweepFileError, load_sweep

    sweep = tmp_path / "s.toml"
    sweep.write_text('name = "s"\n[grid]\nworkloads = ["llm-decode"]\nvariants = ["eager"]\npresets = ["tiny"]\n'
                     '[grid.params]\nnew_tokens = {tiny = [4, 8], paper = [64]}\nprompt_len = [16]\n')
    def grid(preset=None):
        return sorted((p.request.options.preset, p.request.options.params["new_tokens"], p.request.options.params["prompt_len"])
                      for p in load_sweep(sweep, preset=preset).runs)
    assert grid() == [("tiny", 4, 16), ("tiny", 8, 16)]
    assert grid("paper") == [("paper", 64, 16)]
    sweep.write_text(sweep.read_text().replace(", paper = [64]", ""))
    with pytest.raises(SweepFileError, match=r"line 7: \[grid.params\] new_tokens has no values for preset 'paper'"):
        load_sweep(sweep, preset="paper")
