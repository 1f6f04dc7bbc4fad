"""The driver of a sweep on a cluster: claim each point, submit it, collect results as they come.

Each point is claimed before it is submitted and released once its result is back, as the
local executors do (app/sweep.py's `run_point`): a point claimed by a live sweep is skipped, a
point stored meanwhile is not submitted, and a dead sweep's claims are taken over by the next.
Every task runs `app.sweep.run_stored` with the store's path, so it stores its own run, ok or
failed (the commit is one atomic rename: many writers at once are fine). A task whose worker
or job dies stores nothing: the driver stores that failure (`record_lost_run`).

When the driver dies, Ray ends its tasks with it (they belong to its Ray job), so the next
sweep takes over the claims and runs the points again. A Slurm job outlives the sweep that
submitted it: the claim names the job (`store.claims.hand_to_job`), and holds while the job is
in Slurm's queue (or, for the local executor, while its process lives). A driver that is
interrupted cancels what it submitted and releases the claims.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Hashable, Protocol

from app.executors import ClusterOptions
from app.runner import new_run_id
from app.sweep import PROJECT_ROOT, PointOutcome, Sweep, SweepRun, claim_point, done_keys, record_lost_run
from store.claims import Claim, hand_to_job, release
from store.db import Store
from store.owners import Job


class TaskLost(RuntimeError):
    """The task's worker or job died, or it ended without a result: nothing says the run stored itself."""


class Backend(Protocol):
    capacity: int | None  # runs at once; None: as many as the scheduler takes

    def check(self, runs: list[SweepRun]) -> None:
        """Refuse, before anything is scheduled, runs the cluster can never start (ValueError)."""

    def submit(self, run: SweepRun, store: Store, run_id: str) -> tuple[Hashable, Job | None]:
        """Start the run; its handle, and the job that may outlive this driver (None if it cannot)."""

    def wait_any(self, handles: list[Hashable]) -> list[Hashable]:
        """Block until at least one of `handles` has finished; the finished ones."""

    def result(self, handle: Hashable) -> tuple[str, str]:
        """(status, detail) as the task returned it; TaskLost with the reason when it returned nothing."""

    def cancel(self, handle: Hashable) -> None: ...

    def close(self) -> None: ...


def open_backend(executor: str, sweep: Sweep, store: Store, options: ClusterOptions) -> Backend:
    if executor == "ray":
        from app.executors.ray_executor import RayBackend

        return RayBackend(sweep, options)
    from app.executors.slurm_executor import SubmititBackend

    return SubmititBackend(sweep, store, options)


def task_environment() -> dict[str, str]:
    """What a task in another process or on another host needs: the project on its path, and the
    OBSERVATORY_* variables (OBSERVATORY_ADAPTERS names extra workloads)."""
    path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, **{k: v for k, v in os.environ.items() if k.startswith("OBSERVATORY_")}}


@dataclass(frozen=True)
class Submitted:
    run: SweepRun
    claim: Claim
    run_id: str


def run_on_cluster(store: Store, sweep: Sweep, runs: list[SweepRun], executor: str, options: ClusterOptions, retry_failed: bool,
                   on_start: Callable[[SweepRun], None] | None = None,
                   on_outcome: Callable[[SweepRun, PointOutcome], None] | None = None) -> dict[str, PointOutcome]:
    """Submit every point of `runs` (the ones not done yet) and collect the outcomes; {sweep key: outcome}."""
    outcomes: dict[str, PointOutcome] = {}
    pending: dict[Hashable, Submitted] = {}

    def report(run: SweepRun, outcome: PointOutcome) -> None:
        outcomes[run.key] = outcome
        if on_outcome:
            on_outcome(run, outcome)

    def collect(backend: Backend) -> None:
        for handle in backend.wait_any(list(pending)):
            point = pending.pop(handle)
            try:
                status, detail = backend.result(handle)
            except TaskLost as lost:
                status, detail = "failed", record_lost_run(store, point.run, point.run_id, str(lost))
            finally:
                release(point.claim)
            report(point.run, PointOutcome(status, detail, point.claim.taken_from))

    backend = open_backend(executor, sweep, store, options)
    try:
        backend.check(runs)  # 1. refuse what could never be scheduled, before anything is
        for run in runs:  # 2. claim and submit each point
            while backend.capacity is not None and len(pending) >= backend.capacity:
                collect(backend)
            if on_start:
                on_start(run)
            held = claim_point(store, sweep, run)
            if not held.ours:
                report(run, PointOutcome("busy", f"being run by {held.holder()}"))
                continue
            if run.key in done_keys(store, sweep, retry_failed):
                release(held)
                report(run, PointOutcome("done", "stored meanwhile by another sweep", held.taken_from))
                continue
            run_id = new_run_id()
            try:
                handle, job = backend.submit(run, store, run_id)
            except BaseException:
                release(held)
                raise
            pending[handle] = Submitted(run, held, run_id)
            if job is not None:  # the claim holds while the job lives, should this driver die
                pending[handle] = Submitted(run, hand_to_job(held, job), run_id)
        while pending:  # 3. collect the results as they come
            collect(backend)
    finally:
        for handle, point in pending.items():  # interrupted: what was submitted is cancelled, its claim released
            backend.cancel(handle)
            release(point.claim)
        backend.close()
    return outcomes
