"""Workloads that fail on purpose, for the sweep's failure handling (OBSERVATORY_ADAPTERS=tests.fault_workloads)."""
from __future__ import annotations

import os
import signal

from workloads.base import Built, NoParams, RunSpec, Workload, register


def _raises(spec: RunSpec) -> Built:
    raise RuntimeError("this workload fails on purpose while building")


def _killed(spec: RunSpec) -> Built:
    os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer does
    raise AssertionError("unreachable")


def _out_of_memory(spec: RunSpec) -> Built:
    hog = bytearray(64 * 1024**3)  # beyond the sweep's memory_limit_gb: MemoryError
    raise AssertionError(f"allocated {len(hog)} bytes")


for name, build in (("fault-raise", _raises), ("fault-killed", _killed), ("fault-oom", _out_of_memory)):
    register(Workload(name=name, study="test only", description="fails on purpose", kind="inference", presets={"tiny": NoParams()},
                      variants=("base",), build=build))
