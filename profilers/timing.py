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

from profilers.parts import ITERATION, UNMARKED, Parts, untimed_part
from workloads.base import Built

LATENCY_COLUMNS = ("phase", "role", "repeat", "latency_us", "items", "item_unit", "items_per_s", "start_ts_us")


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


def warm_up(built: Built, iterations: int, clock: Callable[[], int]) -> list[float]:
    """Run the iteration unprofiled `iterations` times (reset before each); the microseconds of
    each, to be reported apart (they include torch.compile's compilation)."""
    times = []
    for _ in range(iterations):
        if built.reset is not None:
            built.reset()
        times.append(time_call(lambda: built.iteration(untimed_part), clock))
    return times


def time_repeats(built: Built, repeats: int, clock: Callable[[], int]) -> list[dict[str, Any]]:
    """`repeats` timed iterations; per repeat one row for the whole iteration and one per part
    (schema LATENCY_COLUMNS), all from the same timed call.

    A training workload's `reset` runs before each repeat, untimed, so every repeat does the
    same work from the same weights. `start_ts_us` is the wall clock (Unix epoch, µs) read just
    before the timed interval, to line rows up with telemetry and traces.
    """
    rows = []
    parts = Parts(clock)
    for repeat in range(repeats):
        if built.reset is not None:
            built.reset()
        start_ts_us = time.time_ns() / 1000
        start = clock()
        parts.start()
        built.iteration(parts)
        parts.stop()
        latency_us = (clock() - start) / 1000
        rows.append(_row(ITERATION, "iteration", repeat, latency_us, built.items, built.item_unit, start_ts_us))
        for name, ns in parts.totals_ns.items():
            role = "unmarked" if name == UNMARKED else "part"
            rows.append(_row(name, role, repeat, ns / 1000, built.part_items.get(name), built.item_unit, start_ts_us))
        for name, ns in parts.background_ns.items():
            rows.append(_row(name, "background", repeat, ns / 1000, built.part_items.get(name), built.item_unit, start_ts_us))
    return rows


def _row(phase: str, role: str, repeat: int, latency_us: float, items: int | None, unit: str, start_ts_us: float) -> dict[str, Any]:
    return {
        "phase": phase,
        "role": role,
        "repeat": repeat,
        "latency_us": latency_us,
        "items": items,
        "item_unit": unit,
        "items_per_s": items / (latency_us / 1e6) if items is not None and latency_us > 0 else None,
        "start_ts_us": start_ts_us,
    }
