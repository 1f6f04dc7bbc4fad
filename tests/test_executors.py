"""Sweeps on a cluster: Ray (a local Ray instance) and Slurm (submitit's local executor).

Each cluster runs one sweep of two tiny llm-decode points and two points that fail on purpose
(tests/fault_workloads.py: one raises, one is killed), through the command line; the store
holds each point once, the failures with their errors, and a rerun skips all four.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict

import pytest

from store.claims import Claim, claim, hand_to_job
from store.owners import Job, Owner
from tests.test_runs import observatory, query, runs_per_point

ENV = {"OBSERVATORY_ADAPTERS": "tests.fault_workloads"}  # the cluster's workers must see it too
MIXED = (  # llm-decode has eager and sdpa; the fault workloads have only base
    'name = "{name}"\n[grid]\nworkloads = ["llm-decode", "fault-raise", "fault-killed"]\nvariants = ["eager", "sdpa", "base"]\n'
    'presets = ["tiny"]\n[run]\nrepeats = 1\nwarmup = 0\n{run}[grid.params]\nnew_tokens = [2]\n'
)


def sweep_file(folder, name: str, run: str = "") -> str:
    path = folder / f"{name}.toml"
    path.write_text(MIXED.format(name=name, run=run))
    return str(path)


def check_swept(db, done: subprocess.CompletedProcess, killed: str) -> None:
    assert done.returncode == 0, done.stderr
    assert "2 runs stored, 2 failed" in done.stdout, done.stdout
    assert runs_per_point(db) == [1, 1, 1, 1]
    rows = dict(query(db, "SELECT workload || ' ' || variant, coalesce(error, status) FROM runs"))
    assert rows["llm-decode eager"] == rows["llm-decode sdpa"] == "ok"
    assert "fails on purpose" in rows["fault-raise base"], "the task stored its own failure through the runner"
    assert killed in rows["fault-killed base"], "the driver stored the failure of a task whose worker died"
    assert query(db, "SELECT count(*) FROM events WHERE cat = 'cpu_op'")[0][0] > 0, "the runs' traces reached the store"


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray instance for this module's sweeps, ended with ray.shutdown() (never `ray stop`)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def test_ray_sweep_stores_each_point_once_with_failures_and_resumes(tmp_path, ray_address):
    sweep, db = sweep_file(tmp_path, "on-ray"), tmp_path / "o.duckdb"
    done = observatory("sweep", sweep, "--executor", "ray", "--address", ray_address, db=db, env=ENV)
    check_swept(db, done, killed="Ray worker died")
    again = observatory("sweep", sweep, "--executor", "ray", "--address", ray_address, db=db, env=ENV)
    assert again.returncode == 0 and "4 already done, 0 to run" in again.stdout, again.stdout + again.stderr
    assert runs_per_point(db) == [1, 1, 1, 1]


def test_cuda_point_on_a_cpu_only_ray_cluster_is_refused_before_scheduling(tmp_path, ray_address):
    from app.sweep import load_sweep, run_sweep
    from store.db import Store

    path = tmp_path / "cuda.toml"
    path.write_text('name = "cuda"\n[grid]\nworkloads = ["llm-decode"]\nvariants = ["eager"]\npresets = ["tiny"]\n'
                    '[run]\nrepeats = 1\ndevice = "cuda"\n')
    sweep = load_sweep(path, device_here=False)  # the driver needs no GPU: the workers would
    store = Store(tmp_path / "o.duckdb")
    with pytest.raises(ValueError) as refused:
        run_sweep(store, sweep, "ray")  # this process's Ray instance: 2 CPUs, no GPU
    message = str(refused.value)
    assert "\n" not in message and "llm-decode eager" in message and "1 GPU" in message and "2 CPU, 0 GPU" in message, message
    assert query(store.path, "SELECT count(*) FROM runs") == [(0,)]
    assert not list(store.parts.glob("claims/*/*.json")), "nothing was claimed"


def test_slurm_sweep_on_submitits_local_executor(tmp_path):
    pytest.importorskip("submitit")
    sweep, db = sweep_file(tmp_path, "on-slurm"), tmp_path / "o.duckdb"
    args = ("sweep", sweep, "--executor", "slurm", "--slurm-cluster", "local", "--time-min", "10")
    done = observatory(*args, db=db, env=ENV)
    check_swept(db, done, killed="ended without a result")
    again = observatory(*args, db=db, env=ENV)
    assert again.returncode == 0 and "4 already done, 0 to run" in again.stdout, again.stdout + again.stderr


def test_cluster_options_are_refused_with_another_executor(tmp_path):
    done = observatory("sweep", sweep_file(tmp_path, "local"), "--address", "127.0.0.1:6379", db=tmp_path / "o.duckdb", env=ENV)
    assert done.returncode == 1 and "--address applies to --executor ray only, not --executor process" in done.stderr, done.stderr


def test_a_claim_handed_to_a_live_job_outlives_its_sweep(tmp_path):
    """A Slurm job goes on after the sweep that submitted it dies: its point stays claimed until the job ends."""
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    gone_sweep = Owner.of(finished.pid)  # its process has ended: a gone owner
    path = tmp_path / "point.json"
    path.write_text(json.dumps(asdict(gone_sweep)))
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        hand_to_job(Claim(path, gone_sweep, ours=True), Job("local", str(job.pid), Owner.of(job.pid)))
        held = claim(tmp_path, "point")
        assert not held.ours and f"local job {job.pid} (its sweep, pid {finished.pid}" in held.holder(), held.holder()
    finally:
        job.kill()
        job.wait()
    taken = claim(tmp_path, "point")
    assert taken.ours and taken.taken_from == gone_sweep
