"""`observatory sweep FILE --executor ray [--address ADDR]`: every run a Ray task.

Each task asks for `--cpus-per-run` CPUs (default 1) and, for device cuda, `--gpus-per-run`
GPUs (default 1), runs `app.sweep.run_stored` on the store's path and returns (status,
detail). A task is never retried by Ray (`max_retries=0`): a run that fails is stored as failed,
and a worker that dies is recorded by the driver. Without `--address` a local Ray instance is
started for the sweep and stopped after it; with one, the sweep connects to that cluster and
disconnects. Workers import the project from the driver's folder (a shared path, as the
store's is) and see the driver's OBSERVATORY_* variables.
"""
from __future__ import annotations

import logging
import re

import ray
import ray.exceptions

from app.executors import ClusterOptions
from app.executors.cluster import TaskLost, task_environment
from app.sweep import Sweep, SweepRun, run_stored
from store.db import Store

UNAPPLIED_SETTINGS = ("timeout_s", "memory_limit_gb")  # a Ray task has no time or memory limit of its own


class RayBackend:
    capacity = None  # Ray queues tasks until their resources are free

    def __init__(self, sweep: Sweep, options: ClusterOptions):
        for key in UNAPPLIED_SETTINGS:
            if key in sweep.settings:
                raise ValueError(f"{sweep.path}: [run] {key} is not applied by --executor ray; "
                                 "remove it, or use --executor process or slurm, which apply it")
        self.needs = {"CPU": options.cpus(), "GPU": options.gpus(sweep.settings.get("device", "cpu"))}
        self.where = f"at {options.address}" if options.address else "started here"
        self.connected_here = not ray.is_initialized()
        if self.connected_here:
            local = {} if options.address else {"include_dashboard": False}
            ray.init(address=options.address, logging_level=logging.WARNING, log_to_driver=False, **local)
        self.task = ray.remote(run_stored).options(num_cpus=self.needs["CPU"], num_gpus=self.needs["GPU"], max_retries=0,
                                                   runtime_env={"env_vars": task_environment()})

    def check(self, runs: list[SweepRun]) -> None:
        have = ray.cluster_resources()
        if runs and any(n > have.get(name, 0) for name, n in self.needs.items()):
            more = f" (and {len(runs) - 1} more point{'s' if len(runs) > 2 else ''})" if len(runs) > 1 else ""
            raise ValueError(f"{runs[0].label}{more}: a run needs {self.needs['CPU']} CPU and {self.needs['GPU']} GPU, but the Ray "
                             f"cluster {self.where} has {_resources(have)}: nothing was scheduled (Ray would leave the run pending forever)")

    def submit(self, run: SweepRun, store: Store, run_id: str):
        return self.task.remote(str(store.path), run, run_id), None  # the task ends with this driver's Ray job

    def wait_any(self, handles: list) -> list:
        ready, _ = ray.wait(handles, num_returns=1)
        return ready

    def result(self, handle) -> tuple[str, str]:
        try:
            return ray.get(handle)
        except ray.exceptions.RayError as exc:
            raise TaskLost(lost_reason(exc)) from None

    def cancel(self, handle) -> None:
        ray.cancel(handle, force=True)

    def close(self) -> None:
        if self.connected_here:
            ray.shutdown()


def _resources(have: dict) -> str:
    return f"{have.get('CPU', 0):g} CPU, {have.get('GPU', 0):g} GPU, {have.get('memory', 0) / 1024**3:.1f} GB memory"


def lost_reason(exc: ray.exceptions.RayError) -> str:
    """One line on why a task returned nothing."""
    if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause is not None:
        return f"the run's task raised {type(exc.cause).__name__}: {_first_line(str(exc.cause))}"
    if isinstance(exc, ray.exceptions.OutOfMemoryError):
        return "the run's Ray worker was killed by Ray's memory monitor (out of memory)"
    if isinstance(exc, ray.exceptions.WorkerCrashedError):
        detail = re.search(r"Worker exit detail: (.+?\.)(?: |$)", str(exc))
        return f"the run's Ray worker died (killed, out of memory?){': ' + detail[1] if detail else ''}"
    return f"the run's Ray task was lost: {type(exc).__name__}: {_first_line(str(exc))}"


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "no message")
