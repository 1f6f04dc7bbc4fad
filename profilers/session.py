"""One profiling session of a built workload: `profile(built, config) -> ProfileResult`.

The stages, in order, all on the same `Built`:
1. Warm-up: `warmup_iterations` unprofiled iterations, timed apart; they include
   torch.compile's compilation when a variant compiles.
2. Timed: `timed_repeats` unprofiled iterations, each with its parts timed inside it
   (profilers/parts.py), clock read after a device synchronize: the only latency rows.
3. Memory: one unprofiled, untimed iteration for its peak host RSS growth (and on CUDA the
   peak allocated bytes).
4. Profiled: 1 + `active_iterations` iterations under torch.profiler (one profiler step
   each), written as a TensorBoard trace; parts show as ranges.
5. Sequence lengths: one eager iteration under SeqLenRecorder (when `record_seq_lengths`).
6. Numerics: the workload's numerical figures (a numerics workload's, or what a variant changes
   in the output), computed once.
A training workload's `reset` runs before every warm-up, timed and memory iteration.
NVML telemetry is sampled from stage 1 to stage 4; without NVML it says why and the run goes on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from workloads.base import Built, check_device
from profilers import environment
from profilers.memory import model_metrics, step_memory
from profilers.parts import untimed_part
from profilers.nvml import NvmlSampler
from profilers.seqlen import SeqLenRecorder
from profilers.timing import make_clock, time_repeats, warm_up
from profilers.scopes import attention_scopes
from profilers.trace import record_trace


@dataclass(frozen=True)
class ProfileConfig:
    logdir: Path
    worker_name: str
    warmup_iterations: int = 1
    active_iterations: int = 2
    timed_repeats: int = 5
    device: str = "cpu"
    nvml_interval_s: float = 0.1
    record_seq_lengths: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "logdir", Path(self.logdir))
        if not self.worker_name or any(c in self.worker_name for c in "/\\*?["):
            raise ValueError(f"ProfileConfig.worker_name must be a plain non-empty file name part, got {self.worker_name!r}")
        for name, least in (("warmup_iterations", 0), ("active_iterations", 1), ("timed_repeats", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < least:
                raise ValueError(f"ProfileConfig.{name} must be an integer >= {least}, got {value!r}")
        if not self.nvml_interval_s > 0:
            raise ValueError(f"ProfileConfig.nvml_interval_s must be > 0 seconds, got {self.nvml_interval_s!r}")
        object.__setattr__(self, "device", check_device(self.device))  # the one rule for --device (workloads/base.py)


@dataclass
class ProfileResult:
    trace_path: Path
    warmup_us: list[float]  # one per warm-up iteration
    latency: list[dict[str, Any]]  # timing.LATENCY_COLUMNS
    attention_calls: list[dict[str, Any]]  # seqlen.ROW_COLUMNS
    telemetry: list[dict[str, Any]]  # nvml.ROW_COLUMNS
    telemetry_status: str  # "ok" or "telemetry unavailable: <reason>"
    metrics: list[dict[str, Any]]  # memory.METRIC_COLUMNS
    numerics: list[dict[str, Any]] = field(default_factory=list)  # subject, metric, value, position
    environment: dict[str, Any] = field(default_factory=dict)


def _check(built: Built, config: ProfileConfig) -> None:
    if not callable(built.iteration):
        raise TypeError(f"built.iteration must be callable, got {type(built.iteration).__name__}")


def profile(built: Built, config: ProfileConfig) -> ProfileResult:
    _check(built, config)
    clock = make_clock(config.device)
    iteration = lambda: built.iteration(untimed_part)  # noqa: E731  (outside timed repeats: trace ranges only)
    with NvmlSampler(config.nvml_interval_s) as sampler:
        # 1. warm-up, reported apart
        warmup_us = warm_up(built, config.warmup_iterations, clock)
        # 2. timed repeats: the latency rows, parts inside each
        latency = time_repeats(built, config.timed_repeats, clock)
        # 3. peak memory of one iteration
        if built.reset is not None:
            built.reset()
        memory = step_memory(iteration, config.device)
        # 4. the profiled pass
        with attention_scopes(built.recorded_modules or built.model, built.attention_sites):
            trace_path = record_trace(iteration, config.logdir, config.worker_name, config.active_iterations, config.device)
    # 5. sequence lengths of every attention call, in one eager iteration
    attention_calls: list[dict[str, Any]] = []
    if config.record_seq_lengths:
        with SeqLenRecorder(built.recorded_modules or built.model, model=built.model, rules=built.attention_sites) as recorder:
            iteration()
        attention_calls = recorder.rows
    # 6. figures that are not time
    numerics = built.numerics() if built.numerics is not None else []
    return ProfileResult(
        trace_path=trace_path,
        warmup_us=warmup_us,
        latency=latency,
        attention_calls=attention_calls,
        telemetry=sampler.rows,
        telemetry_status=sampler.status,
        metrics=model_metrics(built.info, built.model) + memory,
        numerics=numerics,
        environment=environment.collect(config.device),
    )
