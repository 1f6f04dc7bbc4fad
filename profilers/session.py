"""One profiling session of a built workload: `profile(built, config) -> ProfileResult`.

The steps, in order, all on the same `Built`:
1. Warm-up: `warmup_steps` unprofiled calls of `step` (and of each phase), timed apart; they
   include torch.compile's compilation when a variant compiles.
2. Timed: `timed_repeats` unprofiled calls of `step` and of each phase, clock read after a
   device synchronize: the only latency rows.
3. Memory: one unprofiled, untimed `step` for its peak host RSS growth (and on CUDA the peak
   allocated bytes).
4. Profiled: 1 + `active_steps` calls under torch.profiler, written as a TensorBoard trace.
5. Sequence lengths: one eager `step` under SeqLenRecorder (when `record_seq_lengths`).
NVML telemetry is sampled from step 1 to step 4; without NVML it says why and the run goes on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from workloads.base import Built
from profilers import environment
from profilers.memory import model_metrics, step_memory
from profilers.nvml import NvmlSampler
from profilers.seqlen import SeqLenRecorder
from profilers.timing import STEP, is_cuda, make_clock, time_repeats, warm_up
from profilers.scopes import attention_scopes
from profilers.trace import record_trace


@dataclass(frozen=True)
class ProfileConfig:
    logdir: Path
    worker_name: str
    warmup_steps: int = 1
    active_steps: int = 2
    timed_repeats: int = 5
    device: str = "cpu"
    nvml_interval_s: float = 0.1
    record_seq_lengths: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "logdir", Path(self.logdir))
        if not self.worker_name or any(c in self.worker_name for c in "/\\*?["):
            raise ValueError(f"ProfileConfig.worker_name must be a plain non-empty file name part, got {self.worker_name!r}")
        for name, least in (("warmup_steps", 0), ("active_steps", 1), ("timed_repeats", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < least:
                raise ValueError(f"ProfileConfig.{name} must be an integer >= {least}, got {value!r}")
        if not self.nvml_interval_s > 0:
            raise ValueError(f"ProfileConfig.nvml_interval_s must be > 0 seconds, got {self.nvml_interval_s!r}")
        if not (self.device == "cpu" or is_cuda(self.device)):
            raise ValueError(f"ProfileConfig.device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")


@dataclass
class ProfileResult:
    trace_path: Path
    warmup_us: list[float]  # one per warm-up call of `step`
    phase_warmup_us: dict[str, list[float]]  # the same, for each of built.phases
    latency: list[dict[str, Any]]  # timing.LATENCY_COLUMNS
    attention_calls: list[dict[str, Any]]  # seqlen.ROW_COLUMNS
    telemetry: list[dict[str, Any]]  # nvml.ROW_COLUMNS
    telemetry_status: str  # "ok" or "telemetry unavailable: <reason>"
    metrics: list[dict[str, Any]]  # memory.METRIC_COLUMNS
    environment: dict[str, Any] = field(default_factory=dict)


def _check(built: Built, config: ProfileConfig) -> None:
    if not callable(built.step):
        raise TypeError(f"built.step must be callable, got {type(built.step).__name__}")
    if STEP in built.phases:
        raise ValueError(f"built.phases: the name {STEP!r} is reserved for built.step; rename that phase")
    if is_cuda(config.device) and not torch.cuda.is_available():
        raise ValueError(f"ProfileConfig.device is {config.device!r} but torch.cuda.is_available() is False")


def profile(built: Built, config: ProfileConfig) -> ProfileResult:
    _check(built, config)
    clock = make_clock(config.device)
    phases = {STEP: built.step, **built.phases}
    items = {STEP: built.items_per_step, **built.phase_items}
    with NvmlSampler(config.nvml_interval_s) as sampler:
        # 1. warm-up, reported apart
        warmups = {name: warm_up(fn, config.warmup_steps, clock) for name, fn in phases.items()}
        # 2. timed repeats: the latency rows
        latency = time_repeats(phases, items, built.item_unit, config.timed_repeats, clock)
        # 3. peak memory of one step
        metrics = model_metrics(built.info, built.model) + step_memory(built.step, config.device)
        # 4. the profiled pass
        with attention_scopes(built.recorded_modules or built.model):
            trace_path = record_trace(built.step, config.logdir, config.worker_name, config.active_steps, config.device)
    # 5. sequence lengths of every attention call, in one eager step
    attention_calls: list[dict[str, Any]] = []
    if config.record_seq_lengths:
        with SeqLenRecorder(built.recorded_modules or built.model, step_module=built.model) as recorder:
            built.step()
        attention_calls = recorder.rows
    return ProfileResult(
        trace_path=trace_path,
        warmup_us=warmups.pop(STEP),
        phase_warmup_us=warmups,
        latency=latency,
        attention_calls=attention_calls,
        telemetry=sampler.rows,
        telemetry_status=sampler.status,
        metrics=metrics,
        environment=environment.collect(config.device),
    )
