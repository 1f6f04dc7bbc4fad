"""Sweeps: a TOML grid of runs, resumable, each point run once.

    name = "video-frames"             # runs already done under this name are skipped
    [grid]
    workloads = ["video-t2v"]
    variants = ["all"]                # or names; a workload without a named variant skips it
    presets = ["tiny"]
    batches = [1]                     # optional, default [1]
    dtypes = ["float32"]              # optional, default ["float32"]
    [grid.params]                     # optional: workload parameters, each a list of values
    frames = [2, 4, 8, 16]            # applies to the workloads that have the parameter
    length = {tiny = [16, 32], paper = [64, 512]}  # or values per preset (a size range that fits each)
    [run]
    repeats = 5                       # optional: warmup, device, seed, timeout_s, memory_limit_gb

A run that raises, crashes or runs out of memory is stored as a failed run with its error,
and the sweep goes on. Executors: `process` (default: each run in its own process, which a
crash or an out-of-memory kill cannot take the sweep down with; `timeout_s` and
`memory_limit_gb` apply), `inline` (each run in this process: no import cost per run, for
many short runs such as `observatory reproduce --preset tiny`), and the cluster executors
`ray` and `slurm` (app/executors/: every point a task or job on a cluster, all at once, each
committing to the store on a shared path; claims and failures as here).

Each point is run once, however many sweeps of the file run at once: a sweep claims a point
before running it (`store.claims`, under `<db>.parts/claims/`), skips points a live sweep has
claimed, takes over the claim of a sweep that died, and releases the claim once the run is
stored. A run's process dies with its sweep, so a dead sweep leaves no run going.
"""
from __future__ import annotations

import ctypes
import hashlib
import itertools
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from app.executors import CLUSTER_EXECUTORS, EXECUTORS, ClusterOptions
from app.runner import RunFailed, RunRequest, execute, new_run_id, run_fields
from store.claims import Claim, Owner, claim, release
from store.db import Store
from store.ingest import record_failed_run
from workloads.base import RunOptions, all_workloads, get, unknown_name

PROJECT_ROOT = Path(__file__).resolve().parents[1]
GRID_KEYS = {"workloads": str, "variants": str, "presets": str, "batches": int, "dtypes": str}
GRID_DEFAULTS = {"batches": [1], "dtypes": ["float32"]}
RUN_KEYS = {"repeats": int, "warmup": int, "device": str, "seed": int, "timeout_s": (int, float), "memory_limit_gb": (int, float)}
ZERO_ALLOWED = {"warmup", "seed"}  # `observatory run --warmup 0` is allowed too


class SweepFileError(ValueError):
    pass


@dataclass(frozen=True)
class SweepRun:
    request: RunRequest
    key: str

    @property
    def label(self) -> str:
        o = self.request.options
        params = " ".join(f"{k}={v}" for k, v in sorted(o.params.items()))
        return " ".join(x for x in (self.request.workload, o.variant, o.preset, f"batch={o.batch}", o.dtype, params) if x)


@dataclass
class Sweep:
    path: Path
    name: str
    runs: list[SweepRun]
    settings: dict = field(default_factory=dict)
    skipped_combinations: int = 0

def _line_of(text: str, key: str) -> int | None:
    for number, line in enumerate(text.splitlines(), start=1):
        if re.match(rf"\s*{re.escape(key)}\s*=", line):
            return number
    return None


def _error(path: Path, text: str, key: str | None, problem: str) -> SweepFileError:
    line = _line_of(text, key) if key else None
    return SweepFileError(f"{path}{f', line {line}' if line else ''}: {problem}")


def _checked_list(path: Path, text: str, table: dict, key: str, kind) -> list:
    if key not in table and key not in GRID_DEFAULTS:
        raise _error(path, text, None, f"[grid] needs {key!r}")
    values = table.get(key, GRID_DEFAULTS.get(key))
    if not isinstance(values, list) or not values or not all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
        raise _error(path, text, key, f"{key} must be a non-empty list of {kind.__name__}s, got {values!r}")
    return values


def _value_lists(values) -> bool:
    """A parameter's values: a non-empty list, or a table of non-empty lists by preset."""
    if isinstance(values, dict):
        return bool(values) and all(isinstance(v, list) and v for v in values.values())
    return isinstance(values, list) and bool(values)


def _check_run_setting(path: Path, text: str, key: str, value) -> None:
    if key not in RUN_KEYS:
        raise _error(path, text, key, f"unknown run setting {key!r}; expected {', '.join(RUN_KEYS)}")
    zero_allowed = key in ZERO_ALLOWED
    too_small = isinstance(value, (int, float)) and (value < 0 if zero_allowed else value <= 0)
    if not isinstance(value, RUN_KEYS[key]) or isinstance(value, bool) or too_small:
        name = getattr(RUN_KEYS[key], "__name__", "number")
        expected = f"an {name} of 0 or more" if zero_allowed else f"a positive {name}"
        raise _error(path, text, key, f"{key} must be {expected}, got {value!r}")


def load_sweep(path: Path, preset: str | None = None, device: str | None = None, device_here: bool = True) -> Sweep:
    """Parse and validate a sweep file completely before anything runs; `preset` and `device`
    replace the file's own (`observatory reproduce --preset paper --device cuda`). Without
    `device_here` the device need not be on this machine (a cluster executor's sweep)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SweepFileError(f"{path}: cannot read the sweep file ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SweepFileError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - {"name", "grid", "run"}
    if unknown:
        raise _error(path, text, sorted(unknown)[0], f"unknown key {sorted(unknown)[0]!r}; expected name, [grid], [run]")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _error(path, text, "name", "needs name = \"...\" (runs done under this name are skipped when it runs again)")
    grid, settings = data.get("grid"), data.get("run", {})
    if not isinstance(grid, dict):
        raise SweepFileError(f"{path}: needs a [grid] table")
    grid_params = grid.get("params", {})
    for key in set(grid) - set(GRID_KEYS) - {"params"}:
        raise _error(path, text, key, f"unknown grid key {key!r}; expected {', '.join(GRID_KEYS)} or [grid.params]")
    for key, value in settings.items():
        _check_run_setting(path, text, key, value)
    if device is not None:
        settings = {**settings, "device": device}
    lists = {key: _checked_list(path, text, grid, key, kind) for key, kind in GRID_KEYS.items()}
    if preset is not None:
        lists["presets"] = [preset]
    if not isinstance(grid_params, dict) or not all(_value_lists(v) for v in grid_params.values()):
        raise _error(path, text, "params", "[grid.params] holds parameter = [values, ...] lists, "
                     "or {preset = [values, ...], ...} tables of them")
    for param, values in grid_params.items():
        missing = [p for p in lists["presets"] if isinstance(values, dict) and p not in values]
        if missing:
            raise _error(path, text, param, f"[grid.params] {param} has no values for preset {missing[0]!r}")

    known = [w.name for w in all_workloads()]
    for workload in lists["workloads"]:
        if workload not in known:
            raise _error(path, text, "workloads", unknown_name("workload", workload, known))
    wanted = lists["variants"]
    everywhere = sorted({v for w in lists["workloads"] for v in get(w).variants})
    for variant in wanted:
        if variant != "all" and variant not in everywhere:
            raise _error(path, text, "variants", unknown_name("variant", variant, everywhere))
    declared = {p for w in lists["workloads"] for p in get(w).param_names}
    for param in grid_params:
        if param not in declared:
            raise _error(path, text, param, "[grid.params]: " + unknown_name("parameter", param, declared))

    runs, skipped = [], 0
    for workload, preset_, batch, dtype in itertools.product(lists["workloads"], lists["presets"], lists["batches"], lists["dtypes"]):
        adapter = get(workload)
        variants = adapter.variants if "all" in wanted else [v for v in wanted if v in adapter.variants]
        skipped += 0 if "all" in wanted else len(wanted) - len(variants)
        mine = {k: v[preset_] if isinstance(v, dict) else v for k, v in grid_params.items() if k in adapter.param_names}
        for variant, values in itertools.product(variants, itertools.product(*mine.values())):
            if "all" in wanted and variant in adapter.gpu_variants and not settings.get("device", "cpu").startswith("cuda"):
                skipped += 1  # "all" on a CPU: the GPU-only rungs are not part of it
                continue
            options = RunOptions(preset=preset_, variant=variant, batch=batch, dtype=dtype, device=settings.get("device", "cpu"),
                                 seed=settings.get("seed", 0), params=dict(zip(mine, values)))
            request = RunRequest(workload, options, repeats=settings.get("repeats", 5), warmup=settings.get("warmup", 1), sweep=name)
            try:
                spec = request.spec(device_here)
            except ValueError as exc:
                key = next((k for k in ("presets", "dtypes", "device", *mine) if k.rstrip("s") in str(exc)), None)
                raise _error(path, text, key, str(exc)) from None
            identity = json.dumps([name, workload, spec.variant, spec.settings(), request.repeats, request.warmup], sort_keys=True)
            key = hashlib.sha256(identity.encode()).hexdigest()[:16]
            runs.append(SweepRun(replace(request, sweep_key=key), key))
    return Sweep(path, name, runs, settings, skipped)


def done_keys(store: Store, sweep: Sweep, retry_failed: bool) -> set[str]:
    if not store.exists():
        return set()
    statuses = ("ok",) if retry_failed else ("ok", "failed")
    with store.connect() as con:
        rows = con.execute(
            "SELECT DISTINCT json_extract_string(config, '$.sweep_key') FROM runs "
            "WHERE json_extract_string(config, '$.sweep') = ? AND status IN (SELECT unnest(?::VARCHAR[]))",
            [sweep.name, list(statuses)],
        ).fetchall()
    return {r[0] for r in rows}


@dataclass(frozen=True)
class PointOutcome:
    status: str  # "ok", "failed", "done" (stored meanwhile by another sweep), "busy" (a live sweep is running it)
    detail: str
    taken_from: Owner | None = None  # a gone sweep whose claim on the point was taken over


def claims_folder(store: Store, sweep: Sweep) -> Path:
    return store.parts / "claims" / hashlib.sha256(sweep.name.encode()).hexdigest()[:16]


def claim_point(store: Store, sweep: Sweep, run: SweepRun) -> Claim:
    return claim(claims_folder(store, sweep), run.key)


def run_point(run: SweepRun, sweep: Sweep, store: Store, retry_failed: bool, executor: str = "process",
              force: bool = False) -> PointOutcome:
    """Claim the point, run it unless it was stored meanwhile (or `force`), and release the claim once the run is stored."""
    held = claim_point(store, sweep, run)
    if not held.ours:
        return PointOutcome("busy", f"being run by {held.holder()}")
    try:
        if not force and run.key in done_keys(store, sweep, retry_failed):
            return PointOutcome("done", "stored meanwhile by another sweep", held.taken_from)
        execute_point = execute_inline if executor == "inline" else execute_one
        status, detail = execute_point(run, sweep, store, new_run_id())
        return PointOutcome(status, detail, held.taken_from)
    finally:
        release(held)


def run_sweep(store: Store, sweep: Sweep, executor: str = "process", retry_failed: bool = False,
              on_start: Callable[[SweepRun], None] | None = None,
              on_outcome: Callable[[SweepRun, PointOutcome], None] | None = None,
              cluster: ClusterOptions = ClusterOptions()) -> dict[str, PointOutcome]:
    """Every point of the sweep not yet done; {sweep key: outcome} of the points it ran or skipped."""
    if executor not in EXECUTORS:
        raise ValueError(f"--executor: " + unknown_name("executor", executor, EXECUTORS))
    cluster.check(executor, sweep.settings.get("device", "cpu"))
    store.ensure()
    done = done_keys(store, sweep, retry_failed)
    todo = [r for r in sweep.runs if r.key not in done]
    if executor in CLUSTER_EXECUTORS and todo:
        from app.executors.cluster import run_on_cluster

        return run_on_cluster(store, sweep, todo, executor, cluster, retry_failed, on_start, on_outcome)
    outcomes = {}
    for run in todo:
        if on_start:
            on_start(run)
        outcomes[run.key] = outcome = run_point(run, sweep, store, retry_failed, executor)
        if on_outcome:
            on_outcome(run, outcome)
    return outcomes


def run_command(run: SweepRun, db: Path, run_id: str) -> list[str]:
    request, o = run.request, run.request.options
    command = [sys.executable, "-m", "app.cli", "run", request.workload, "--variant", o.variant, "--preset", o.preset,
               "--batch", str(o.batch), "--dtype", o.dtype, "--device", o.device, "--seed", str(o.seed),
               "--repeats", str(request.repeats), "--warmup", str(request.warmup),
               "--db", str(db), "--format", "json", "--run-id", run_id, "--sweep", request.sweep, "--sweep-key", run.key]
    for name, value in sorted(o.params.items()):
        command += ["--param", f"{name}={value}"]
    return command


def execute_inline(run: SweepRun, sweep: Sweep | None, store: Store, run_id: str) -> tuple[str, str]:
    """Run in this process; returns (status, detail). A failure is stored by the runner."""
    try:
        execute(store, run.request, run_id=run_id)
    except RunFailed as exc:
        return "failed", exc.error
    return "ok", run_id


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _death_signal_setter() -> Callable[[], None]:
    """A call that has the kernel SIGKILL the calling process when its parent dies (Linux; elsewhere nothing)."""
    if not sys.platform.startswith("linux"):
        return lambda: None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here, in the parent, not between fork and exec

    def set_death_signal() -> None:
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")

    return set_death_signal


def child_setup(memory_limit_gb: float | None) -> Callable[[], None]:
    """What a run's process does before it starts: die with the sweep, and stay under the memory limit if one is set."""
    sweep_pid = os.getpid()
    set_death_signal = _death_signal_setter()
    limit = int(memory_limit_gb * 1024**3) if memory_limit_gb else None

    def setup() -> None:
        set_death_signal()
        if os.getppid() != sweep_pid:  # the sweep died before the death signal was set
            os._exit(1)
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return setup


def death_reason(returncode: int, stderr: str) -> str:
    if returncode < 0:
        name = signal.Signals(-returncode).name
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"the run's process was killed by {name}{hint}"
    last = [line for line in stderr.strip().splitlines() if line.strip()]
    return f"the run's process exited with code {returncode}: {last[-1] if last else 'no error message'}"


def execute_one(run: SweepRun, sweep: Sweep, store: Store, run_id: str) -> tuple[str, str]:
    """Run in a child process; returns (status, detail). A child that dies is recorded here."""
    command = run_command(run, store.path, run_id)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=sweep.settings.get("timeout_s"),
                              preexec_fn=child_setup(sweep.settings.get("memory_limit_gb")), cwd=PROJECT_ROOT)
    except subprocess.TimeoutExpired:
        error = f"timed out after {sweep.settings['timeout_s']} s"
        done = None
    else:
        if done.returncode == 0:
            return "ok", run_id
        error = death_reason(done.returncode, done.stderr)
    stored = record_lost_run(store, run, run_id, error)
    return "failed", error if done is None else stored


def run_stored(store_path: str, run: SweepRun, run_id: str) -> tuple[str, str]:
    """A cluster's task: run the point against the store at `store_path` (a path every worker sees)."""
    return execute_inline(run, None, Store(store_path), run_id)


def record_lost_run(store: Store, run: SweepRun, run_id: str, error: str) -> str:
    """A run whose process, worker or job died before it could store its own failure is stored here
    as failed with `error`; returns the error the store holds for the run."""
    if not store.has_run(run_id):
        spec = run.request.spec(device_here=False)  # checked when the sweep was loaded; the device may be on a worker only
        record_failed_run(store, run_id, error=error, **run_fields(run.request, spec, datetime.now(timezone.utc)))
        return error
    return _stored_error(store, run_id) or error


def _stored_error(store: Store, run_id: str) -> str | None:
    with store.connect() as con:
        row = con.execute("SELECT error FROM runs WHERE run_id = ?", [run_id]).fetchone()
    return row[0] if row else None
