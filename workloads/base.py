"""The one small interface every workload adapter implements, and the registry."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch


@dataclass(frozen=True)
class RunOptions:
    """What the user chose on the command line; the adapter reads what it needs."""

    preset: str = "tiny"
    variant: str | None = None  # None: the workload's baseline
    batch: int = 1
    steps: int | None = None  # denoising steps / generated tokens; None: the preset's own
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0

    @property
    def torch_dtype(self) -> torch.dtype:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[self.dtype]


@dataclass
class Built:
    """What to run per iteration, ready on its device.

    `step()` runs one full iteration (one image generated, one sequence decoded).
    `phases` optionally names parts that are timed apart (e.g. "prefill", "decode"), each a
    callable timed on its own; `items_per_step` is the throughput unit count per step with
    `item_unit` its name ("images", "tokens").
    """

    step: Callable[[], Any]
    items_per_step: int
    item_unit: str
    model: torch.nn.Module | None = None  # its forward marks one step (UNet per denoising step, LLM per token)
    recorded_modules: Mapping[str, torch.nn.Module] | None = None  # where attention is recorded; default: model
    phases: Mapping[str, Callable[[], Any]] = field(default_factory=dict)
    phase_items: Mapping[str, int] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # param_count, param_bytes, kv_cache_bytes, ...


@dataclass(frozen=True)
class Workload:
    name: str
    study: str  # the section of shared/docs/studies.md it reproduces
    description: str
    presets: tuple[str, ...]
    variants: tuple[str, ...]  # the first is the baseline
    build: Callable[[RunOptions], Built]

    @property
    def baseline(self) -> str:
        return self.variants[0]

    def check(self, options: RunOptions) -> RunOptions:
        """Validate options at the edge; returns them with the variant filled in."""
        if options.preset not in self.presets:
            raise ValueError(f"workload {self.name!r}: {unknown_name('preset', options.preset, self.presets)}")
        variant = options.variant or self.baseline
        if variant not in self.variants:
            raise ValueError(f"workload {self.name!r}: {unknown_name('variant', variant, self.variants)}")
        if options.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"--dtype: unknown dtype {options.dtype!r}; expected float32, bfloat16 or float16")
        if options.batch < 1:
            raise ValueError(f"--batch must be at least 1, got {options.batch}")
        if options.steps is not None and options.steps < 1:
            raise ValueError(f"--steps must be at least 1, got {options.steps}")
        if options.device != "cpu" and not options.device.startswith("cuda"):
            raise ValueError(f"--device: unknown device {options.device!r}; expected cpu or cuda")
        if options.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {options.device}: no CUDA device on this machine")
        return RunOptions(**{**options.__dict__, "variant": variant})


def unknown_name(kind: str, name: str, known) -> str:
    """The error text for a name not in `known`: "unknown variant 'sdp'; did you mean sdpa? (known: eager, sdpa, ...)"."""
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"unknown {kind} {name!r}{hint} (known: {', '.join(known)})"


class UnknownWorkload(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; a user error should not
        return self.args[0]


_REGISTRY: dict[str, Workload] = {}


def register(workload: Workload) -> Workload:
    if workload.name in _REGISTRY:
        raise ValueError(f"workload {workload.name!r} is registered twice")
    _REGISTRY[workload.name] = workload
    return workload


def get(name: str) -> Workload:
    from workloads import ADAPTERS  # noqa: F401  (explicit list; importing it registers them)

    if name not in _REGISTRY:
        raise UnknownWorkload(unknown_name("workload", name, sorted(_REGISTRY)))
    return _REGISTRY[name]


def all_workloads() -> list[Workload]:
    from workloads import ADAPTERS  # noqa: F401

    return [_REGISTRY[k] for k in sorted(_REGISTRY)]
