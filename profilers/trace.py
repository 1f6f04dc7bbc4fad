"""One profiled pass written as a Kineto trace in TensorBoard's profiler logdir layout.

The file lands as `<logdir>/<worker_name>.<timestamp>.pt.trace.json.gz`, which TensorBoard's
torch-tb-profiler plugin (`tensorboard --logdir <parent of logdir>`, one run per directory)
and Perfetto / chrome://tracing open. Its events' `ts + baseTimeNanoseconds / 1000` is
wall-clock µs since the Unix epoch, the clock of telemetry rows. Nothing timed here is a
latency: the profiler's own overhead is inside every event.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

from profilers.timing import is_cuda


def activities(device: str) -> list[ProfilerActivity]:
    cuda = is_cuda(device) and torch.cuda.is_available()
    return [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])


def record_trace(step: Callable[[], Any], logdir: Path, worker_name: str, active_steps: int, device: str) -> Path:
    """Run `step` 1 + active_steps times under torch.profiler (the first is the profiler's
    warm-up, not recorded); return the path of the trace file it wrote."""
    logdir.mkdir(parents=True, exist_ok=True)
    pattern = f"{worker_name}.*.pt.trace.json.gz"
    before = set(logdir.glob(pattern))
    with profile(
        activities=activities(device),
        record_shapes=True,
        with_stack=False,
        profile_memory=True,
        schedule=schedule(wait=0, warmup=1, active=active_steps, repeat=1),
        on_trace_ready=tensorboard_trace_handler(str(logdir), worker_name=worker_name, use_gzip=True),
    ) as prof:
        for _ in range(1 + active_steps):
            step()
            prof.step()
    written = sorted(set(logdir.glob(pattern)) - before)
    if len(written) != 1:
        raise RuntimeError(f"torch.profiler wrote {len(written)} trace files matching {pattern} in {logdir}, expected 1")
    return written[0]
