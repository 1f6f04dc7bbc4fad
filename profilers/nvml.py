"""GPU telemetry from NVML, sampled on a background thread.

    with NvmlSampler(interval_s=0.1) as sampler:
        run()
    sampler.status  # "ok" or "telemetry unavailable: <reason>"
    sampler.rows    # one dict per GPU per sample, schema in ROW_COLUMNS

Timestamps `ts_us` are wall-clock microseconds since the Unix epoch (time.time_ns() / 1000):
the clock of a Kineto trace's events once its `baseTimeNanoseconds / 1000` is added to `ts`.
A sample is taken when sampling starts, every `interval_s` after (on a fixed grid, so a slow
read does not shift later samples), and once more when it stops. GPUs are NVML's indices
(all GPUs on the machine, whatever CUDA_VISIBLE_DEVICES says). A metric that a GPU does not
support (NVMLError_NotSupported, e.g. power on some boards) is None in its row.

Without NVML (no GPU, no driver library) nothing raises: `status` says why and `rows` stays
empty. The NVML module is a parameter (default: pynvml) so tests can inject a fake one.
"""
from __future__ import annotations

import threading
import time
from typing import Any

ROW_COLUMNS = (
    "ts_us", "gpu_index", "gpu_name", "gpu_util_pct", "memory_used_bytes", "memory_total_bytes",
    "power_w", "sm_clock_mhz", "temperature_c",
)
UNAVAILABLE = "telemetry unavailable: "


def _default_nvml() -> Any:
    import pynvml

    return pynvml


def _reason(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


class NvmlSampler:
    """Context manager sampling every GPU's telemetry at a set interval; see the module docstring."""

    def __init__(self, interval_s: float = 0.1, nvml: Any = None):
        if not interval_s > 0:
            raise ValueError(f"NvmlSampler: interval_s must be > 0 seconds, got {interval_s!r}")
        self.interval_s = interval_s
        self.nvml = _default_nvml() if nvml is None else nvml
        self.rows: list[dict[str, Any]] = []
        self.status = UNAVAILABLE + "not started"
        self._handles: list[tuple[int, str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    def __enter__(self) -> "NvmlSampler":
        nvml = self.nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as error:
            self.status = UNAVAILABLE + _reason(error)
            return self
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                self._handles.append((index, str(nvml.nvmlDeviceGetName(handle)), handle))
        except nvml.NVMLError as error:
            nvml.nvmlShutdown()
            self.status = UNAVAILABLE + _reason(error)
            return self
        if not self._handles:
            nvml.nvmlShutdown()
            self.status = UNAVAILABLE + "NVML reports no GPU"
            return self
        self.status = "ok"
        self.sample()
        self._thread = threading.Thread(target=self._run, name="nvml-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        if self._failure is None:
            self._guarded_sample()
        self.nvml.nvmlShutdown()
        if isinstance(self._failure, self.nvml.NVMLError):
            self.status = UNAVAILABLE + f"sampling stopped after {len(self.rows)} rows: {_reason(self._failure)}"
        elif self._failure is not None:
            raise RuntimeError("NvmlSampler: the sampling thread failed") from self._failure

    def _run(self) -> None:
        start = time.monotonic()
        tick = 1
        while not self._stop.wait(max(0.0, start + tick * self.interval_s - time.monotonic())):
            if not self._guarded_sample():
                return
            tick = max(tick + 1, int((time.monotonic() - start) / self.interval_s) + 1)

    def _guarded_sample(self) -> bool:
        try:
            self.sample()
        except Exception as error:  # reported (NVMLError) or re-raised on exit
            self._failure = error
            return False
        return True

    def sample(self) -> None:
        """Append one row per GPU, all stamped with the same wall-clock time."""
        ts_us = time.time_ns() / 1000
        for index, name, handle in self._handles:
            self.rows.append(read_gpu(self.nvml, handle, ts_us, index, name))


def _optional(nvml: Any, read: Any) -> Any:
    try:
        return read()
    except nvml.NVMLError_NotSupported:
        return None


def read_gpu(nvml: Any, handle: Any, ts_us: float, index: int, name: str) -> dict[str, Any]:
    """One telemetry row for one GPU."""
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    power_mw = _optional(nvml, lambda: nvml.nvmlDeviceGetPowerUsage(handle))
    return {
        "ts_us": ts_us,
        "gpu_index": index,
        "gpu_name": name,
        "gpu_util_pct": _optional(nvml, lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
        "memory_used_bytes": memory.used,
        "memory_total_bytes": memory.total,
        "power_w": None if power_mw is None else power_mw / 1000,
        "sm_clock_mhz": _optional(nvml, lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)),
        "temperature_c": _optional(
            nvml, lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
        ),
    }


def driver_version(nvml: Any = None) -> str | None:
    """The NVIDIA driver version, or None where NVML cannot be loaded."""
    nvml = _default_nvml() if nvml is None else nvml
    try:
        nvml.nvmlInit()
    except nvml.NVMLError:
        return None
    try:
        return str(nvml.nvmlSystemGetDriverVersion())
    finally:
        nvml.nvmlShutdown()
