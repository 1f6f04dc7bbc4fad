"""Honest wall-clock timing of unprofiled calls.

Every clock read is `time.perf_counter_ns()`, preceded by `torch.cuda.synchronize()` when
the device is CUDA, so queued kernels are inside the interval they belong to. Warm-up calls
(which include torch.compile's compilation when a variant compiles) are timed but kept apart
from the timed repeats.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import torch

LATENCY_COLUMNS = ("phase", "repeat", "latency_us", "items", "item_unit", "items_per_s", "start_ts_us")
STEP = "step"  # the phase name of Built.step in latency rows


def is_cuda(device: str) -> bool:
    return device == "cuda" or device.startswith("cuda:")


def make_clock(device: str) -> Callable[[], int]:
    """A nanosecond clock that first waits for `device` to finish its queued work."""
    if not is_cuda(device):
        return time.perf_counter_ns

    def clock() -> int:
        torch.cuda.synchronize(device)
        return time.perf_counter_ns()

    return clock


def time_call(fn: Callable[[], Any], clock: Callable[[], int]) -> float:
    """Microseconds that one call of `fn` takes, device work included."""
    start = clock()
    fn()
    return (clock() - start) / 1000


def warm_up(fn: Callable[[], Any], iterations: int, clock: Callable[[], int]) -> list[float]:
    """Run `fn` unprofiled `iterations` times; the microseconds of each, to be reported apart."""
    return [time_call(fn, clock) for _ in range(iterations)]


def time_repeats(
    phases: Mapping[str, Callable[[], Any]],
    items: Mapping[str, int | None],
    item_unit: str,
    repeats: int,
    clock: Callable[[], int],
) -> list[dict[str, Any]]:
    """`repeats` timed calls of each phase, one latency row per call (schema LATENCY_COLUMNS).

    `start_ts_us` is the wall clock (Unix epoch, µs) read just before the timed interval, to
    line rows up with telemetry and traces; it is not part of the latency.
    """
    rows = []
    for phase, fn in phases.items():
        count = items.get(phase)
        for repeat in range(repeats):
            start_ts_us = time.time_ns() / 1000
            latency_us = time_call(fn, clock)
            rows.append({
                "phase": phase,
                "repeat": repeat,
                "latency_us": latency_us,
                "items": count,
                "item_unit": item_unit,
                "items_per_s": count / (latency_us / 1e6) if count is not None and latency_us > 0 else None,
                "start_ts_us": start_ts_us,
            })
    return rows
