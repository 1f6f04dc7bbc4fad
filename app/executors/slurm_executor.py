"""`observatory sweep FILE --executor slurm`: every run a Slurm job, through submitit.

Each job asks for `--cpus-per-run` CPUs (default 1), `--gpus-per-run` GPUs (default 1 for
device cuda), the sweep's `memory_limit_gb`, and a time limit of `--time-min` minutes (else
the sweep's `timeout_s`, else 60), on `--partition` if given; it runs `app.sweep.run_stored`
on the store's path. Its set-up exports the project's folder on PYTHONPATH and the driver's
OBSERVATORY_* variables. submitit's files (pickles, logs) go under `<store>.parts/jobs/`, on
the shared path. `--slurm-cluster local` runs every job on this machine with submitit's local
executor instead (for tests, and to try a sweep out), as many at once as there are cores.

A Slurm job outlives its sweep: the point's claim names the job and holds while Slurm has it
queued or running (the local executor's: while its process lives).
"""
from __future__ import annotations

import math
import os
import shlex
import shutil
import time

import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError

from app.executors import DEFAULT_TIME_MIN, ClusterOptions
from app.executors.cluster import TaskLost, task_environment
from app.sweep import Sweep, SweepRun, claims_folder, run_stored
from store.db import Store
from store.owners import Job, Owner

POLL_S = {"slurm": 15.0, "local": 0.5}  # how often the driver looks for finished jobs


class SubmititBackend:
    def __init__(self, sweep: Sweep, store: Store, options: ClusterOptions):
        self.cluster = options.slurm_cluster or "slurm"
        if self.cluster == "slurm" and shutil.which("sbatch") is None:
            raise ValueError("--executor slurm: no `sbatch` on this machine; run the sweep where Slurm's commands are "
                             "(a login node), or add --slurm-cluster local to run the jobs here")
        time_min = options.time_min or math.ceil(sweep.settings.get("timeout_s", DEFAULT_TIME_MIN * 60) / 60)
        self.executor = submitit.AutoExecutor(folder=store.parts / "jobs" / claims_folder(store, sweep).name, cluster=self.cluster)
        setup = [f"export {name}={shlex.quote(value)}" for name, value in task_environment().items()]
        memory = {"mem_gb": sweep.settings["memory_limit_gb"]} if "memory_limit_gb" in sweep.settings else {}
        partition = {"slurm_partition": options.partition} if options.partition else {}
        self.executor.update_parameters(name=f"observatory-{sweep.name}", timeout_min=time_min, cpus_per_task=options.cpus(),
                                        gpus_per_node=options.gpus(sweep.settings.get("device", "cpu")), tasks_per_node=1, nodes=1,
                                        **{f"{self.cluster}_setup": setup}, **memory, **partition)
        self.capacity = None if self.cluster == "slurm" else max(1, (os.cpu_count() or 1) // options.cpus())

    def check(self, runs: list[SweepRun]) -> None:
        """Nothing to ask beforehand: sbatch itself refuses a job its partition cannot run."""

    def submit(self, run: SweepRun, store: Store, run_id: str):
        job = self.executor.submit(run_stored, str(store.path), run, run_id)
        if self.cluster == "local":
            job._results_timeout_s = 0  # a local disk: no shared-filesystem cache to wait out for the result file
            return job, Job("local", job.job_id, Owner.of(int(job.job_id)))  # a local job's id is its process's pid
        return job, Job("slurm", job.job_id)

    def wait_any(self, handles: list) -> list:
        while not (finished := [job for job in handles if job.done()]):
            time.sleep(POLL_S[self.cluster])
        return finished

    def result(self, handle) -> tuple[str, str]:
        try:
            return handle.result()
        except FailedJobError as exc:  # the function raised instead of returning
            raise TaskLost(f"the run's job {handle.job_id} raised {_last_trace_line(str(exc))}") from None
        except UncompletedJobError:  # killed, out of memory, out of time, cancelled, its node died
            raise TaskLost(f"the run's job {handle.job_id} ended without a result (state {handle.state}; killed, out of memory?)") from None

    def cancel(self, handle) -> None:
        handle.cancel(check=False)

    def close(self) -> None:
        pass


def _last_trace_line(message: str) -> str:
    """The exception line of the traceback submitit quotes between dashed lines."""
    lines = [line.strip() for line in message.split("-" * 22)[1].splitlines() if line.strip()] if "-" * 22 in message else []
    return lines[-1] if lines else message.splitlines()[0]
