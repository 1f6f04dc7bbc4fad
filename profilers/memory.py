"""Memory figures of a workload: its parameters, its KV cache, and the peak memory of one step.

Peak host memory is the kernel's own high-water mark of the resident set. Writing "5" to
/proc/self/clear_refs resets VmHWM to the current RSS (Linux >= 4.0); after the step, VmHWM
in /proc/self/status is the exact peak RSS during it, however brief: no sampling gaps and no
thread competing with the step. `resource.getrusage().ru_maxrss` is the same mark without a
reset: once model loading has pushed it up, a step rarely exceeds it and its delta reads 0.
Where clear_refs cannot be written (some containers), a thread samples /proc/self/statm every
millisecond instead, which gives a lower bound; each metric row's `source` says which was used.

The step measured runs after warm-up, so the growth is what a steady-state step makes resident
beyond what the process already holds (activations, workspaces), not first-call allocations.
Before it, the C allocator's free pages go back to the OS (glibc `malloc_trim(0)`): glibc keeps
freed blocks below its (self-raising) mmap threshold resident, so without the trim a step whose
buffers fit in what earlier steps or earlier runs in the same process freed reads as 0 growth.
"""
from __future__ import annotations

import ctypes
import os
import re
import threading
from typing import Any, Callable, Mapping

import torch

from profilers.timing import is_cuda

METRIC_COLUMNS = ("name", "value", "unit", "source")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
_HWM = re.compile(r"^VmHWM:\s+(\d+) kB$", re.MULTILINE)


def metric(name: str, value: float | int, unit: str, source: str) -> dict[str, Any]:
    return {"name": name, "value": value, "unit": unit, "source": source}


# A workload's info entries named with these suffixes are figures (metric rows) in this unit.
INFO_UNITS = {"_bytes": "bytes", "_count": "count", "_us": "us"}


def model_metrics(info: Mapping[str, Any], model: torch.nn.Module | None) -> list[dict[str, Any]]:
    """Every number in the workload's info named `*_bytes`, `*_count` or `*_us` (param_count,
    kv_cache_bytes, optimizer_state_bytes, ...); param_count and param_bytes counted from the
    model's parameters when info lacks them. Read after the run's iterations: some figures
    (a cache's size, an optimizer's state) exist only once an iteration ran."""
    rows = [
        metric(name, value, unit, "built.info")
        for name, value in info.items()
        for suffix, unit in INFO_UNITS.items()
        if name.endswith(suffix) and isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    if model is not None:
        params = list(model.parameters())
        if info.get("param_count") is None:
            rows.append(metric("param_count", sum(p.numel() for p in params), "count", "model.parameters()"))
        if info.get("param_bytes") is None:
            nbytes = sum(p.numel() * p.element_size() for p in params)
            rows.append(metric("param_bytes", nbytes, "bytes", "model.parameters()"))
    return rows


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE_BYTES


def _hwm_bytes() -> int:
    with open("/proc/self/status") as f:
        return int(_HWM.search(f.read()).group(1)) * 1024


class PeakRss:
    """Context manager: `growth_bytes` = peak RSS inside the block minus RSS on entry."""

    def __init__(self) -> None:
        self.source = ""
        self.growth_bytes = 0
        self._start = 0
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakRss":
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.source = "VmHWM after a /proc/self/clear_refs reset"
        except OSError as error:
            self.source = f"/proc/self/statm sampled every 1 ms (lower bound; clear_refs: {error.strerror})"
            self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._start = self._peak = rss_bytes()
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._thread is None:
            peak = _hwm_bytes()
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, rss_bytes())
        self.growth_bytes = max(0, peak - self._start)

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._peak = max(self._peak, rss_bytes())


def release_free_memory() -> bool:
    """Give the C allocator's free pages back to the OS (glibc malloc_trim); False where there is none."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl)
        return False
    trim(0)
    return True


def step_memory(step: Callable[[], Any], device: str) -> list[dict[str, Any]]:
    """Run `step` once, unprofiled and untimed; its peak memory figures as metric rows."""
    rows = []
    trimmed = release_free_memory()
    with PeakRss() as rss:
        if is_cuda(device):
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            step()
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device)
            rows.append(metric("peak_allocated_bytes", peak, "bytes", "torch.cuda.max_memory_allocated"))
        else:
            step()
    source = rss.source + ("; free heap trimmed first" if trimmed else "")
    rows.append(metric("peak_rss_growth_bytes", rss.growth_bytes, "bytes", source))
    return rows
