"""Run one workload: build it, profile it, and store the run through the trace import path.

The trace a run writes goes through `store.ingest.ingest_file`, the same code that imports a
trace from a cluster; the run's own measurements (latency, attention calls, telemetry,
metrics) ride along as extra tables in the same atomic commit.
"""
from __future__ import annotations

import json
import secrets
import shutil
import socket
import traceback
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa

from store import summaries
from store.db import Store
from store.ingest import RunInfo, ingest_file, record_failed_run
from store.schema import TABLES
from workloads.base import RunOptions, RunSpec, get, param_rows


@dataclass(frozen=True)
class RunRequest:
    workload: str
    options: RunOptions
    repeats: int = 5
    warmup: int = 1
    active_iterations: int = 2
    sweep: str | None = None  # the sweep this run belongs to
    sweep_key: str | None = None  # its grid point, so a resumed sweep can skip it

    def spec(self, device_here: bool = True) -> RunSpec:
        """The checked settings (bad options fail here, before anything is stored); without `device_here`
        the device need not be on this machine (a cluster's worker runs it)."""
        for name, least in (("repeats", 1), ("warmup", 0), ("active_iterations", 1)):
            if getattr(self, name) < least:
                raise ValueError(f"--{name.replace('_', '-')} must be at least {least}, got {getattr(self, name)}")
        return get(self.workload).resolve(self.options, device_here)

    def config(self, spec: RunSpec) -> dict:
        return {
            "workload": self.workload,
            **{k: v for k, v in asdict(self.options).items() if k != "params"},
            "variant": spec.variant,
            "params": spec.params.as_dict(),
            "repeats": self.repeats,
            "warmup": self.warmup,
            "active_iterations": self.active_iterations,
            "sweep": self.sweep,
            "sweep_key": self.sweep_key,
        }


class RunFailed(RuntimeError):
    def __init__(self, run_id: str, error: str):
        super().__init__(f"run {run_id} failed: {error}")
        self.run_id, self.error = run_id, error


def new_run_id() -> str:
    return f"r-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def run_fields(request: RunRequest, spec: RunSpec, started: datetime) -> dict:
    """The `runs` row a profiled run has whatever happens to it (failed runs too)."""
    return {
        "source": "profile",
        "workload": request.workload,
        "variant": spec.variant,
        "preset": spec.preset,
        "batch": spec.batch,
        "dtype": spec.dtype,
        "device": spec.device.split(":")[0],
        "host": socket.gethostname(),
        "started_at": started,
        "config": json.dumps(request.config(spec)),
        "workload_kind": get(request.workload).kind,
        "params": json.dumps(spec.params.as_dict(), sort_keys=True),
        "settings_key": spec.settings_key(),
    }


def params_table(spec: RunSpec) -> pa.Table:
    return _table("params", param_rows(spec.params))


def _table(name: str, rows: list[dict]) -> pa.Table:
    """Rows as the store's table `name` (its schema, so a key missing from the first row is not lost;
    run_id filled in at commit); an empty table without columns when there are no rows."""
    schema = pa.schema([f for f in TABLES[name] if f.name != "run_id"])
    return pa.Table.from_pylist([{k: row.get(k) for k in schema.names} for row in rows], schema=schema) if rows else pa.table({})


def execute(store: Store, request: RunRequest, run_id: str | None = None) -> str:
    """Profile and store one run; a failure is stored as a failed run with its error, then raised."""
    from profilers.cpu_peak import peak_metrics
    from profilers.session import ProfileConfig, profile

    workload = get(request.workload)
    spec = request.spec()  # bad options fail before anything is stored
    run_id = run_id or new_run_id()
    started = datetime.now(timezone.utc)
    fields = run_fields(request, spec, started)
    scratch = store.scratch_folder()  # the profiler's trace waits here, then moves into the run's folder
    try:
        try:
            built = workload.build(spec)
            config = ProfileConfig(
                logdir=scratch,
                worker_name=run_id,
                warmup_iterations=request.warmup,
                active_iterations=request.active_iterations,
                timed_repeats=request.repeats,
                device=spec.device,
            )
            result = profile(built, config)
        except Exception as exc:  # any failure of the workload is the run's result, stored with its error
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if isinstance(exc, MemoryError):
                error += " (out of memory)"
            record_failed_run(store, run_id, error=error, environment=json.dumps({"traceback": traceback.format_exc(limit=8)}),
                              extra_tables={"params": params_table(spec)}, **fields)
            raise RunFailed(run_id, error) from exc

        # this CPU's roofs for the operator roofline, measured right after the run (~0.2 s)
        cpu_peaks = peak_metrics(spec.dtype) if spec.device == "cpu" else []
        environment = {
            **result.environment,
            "telemetry_status": result.telemetry_status,
            "warmup_us": result.warmup_us,
            "info": {k: v for k, v in built.info.items() if isinstance(v, (int, float, str, bool, type(None)))},
        }
        extra = {
            "latency": _table("latency", result.latency),
            "attention_calls": _table("attention_calls", result.attention_calls),
            "telemetry": _table("telemetry", result.telemetry),
            "metrics": _table("metrics", result.metrics + cpu_peaks),
            "numerics": _table("numerics", result.numerics),
            "params": params_table(spec),
        }
        fields.update(device_name=result.environment.get("device_name"), environment=json.dumps(environment, default=str))
        parts = tuple(sorted({row["phase"] for row in result.latency if row["role"] == "part"}))
        run = RunInfo(run_id=run_id, fields=fields, extra_tables={k: v for k, v in extra.items() if v.num_columns}, owns_trace=True,
                      parts=parts)
        ingest_file(store, Path(result.trace_path), run=run)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    summaries.refresh(store)  # the dashboard's all-runs reads stay incremental
    return run_id
