"""The one contract every workload adapter implements, and the registry.

Words, each with one meaning (docs/schema.md uses the same):
- **iteration**: the unit a workload repeats and a latency row times: one image generated,
  one sequence decoded, one optimizer step, one numerics evaluation. `Built.iteration`.
- **part**: a named piece of one iteration (prefill, decode; text encoder, UNet, VAE; forward,
  backward, optimizer), timed inside the same timed repeat: the parts sum to the iteration.
- **model call**: one forward of `Built.model` inside an iteration (a denoising step's UNet
  forward, one generated token's LLM forward); attention rows count them (`model_call`).
- **profiler step**: torch.profiler's `ProfilerStep#N` range (`events.profiler_step`).
- **params**: a workload's own knobs (frames, denoising steps, new tokens, LoRA count...), a
  frozen dataclass with defaults per preset; with preset, batch, dtype, device and seed they
  are a run's **settings**: runs are compared only when their settings are equal.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import torch

Kind = Literal["inference", "training", "numerics"]
KINDS = ("inference", "training", "numerics")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def unknown_name(what: str, name: str, known) -> str:
    """The one wording for an unknown name: the close matches, then everything known (in the order given)."""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"unknown {what} {name!r}{hint} (known: {', '.join(known) or 'none'})"


def check_device(name: str, here: bool = True) -> str:
    """`--device` checked once, here: 'cpu', 'cuda' or 'cuda:N', usable on this machine (with `here`;
    without, only well formed: the run goes to a cluster's worker, which has the device or not)."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device: unknown device {name!r}; expected cpu or cuda[:index]") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device: unsupported device {name!r}; expected cpu or cuda[:index]")
    if device.type == "cpu" and device.index is not None:
        raise ValueError(f"--device {name}: expected cpu, without an index")
    if not here:
        return str(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return str(device)


# -- parameters -------------------------------------------------------------------------------
class Params:
    """Base of every workload's parameter dataclass (frozen, fields with plain types).

    Subclasses may define `check(self)` raising ValueError naming the knob for values out of range.
    """

    def check(self) -> None:
        pass

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class NoParams(Params):
    """For a workload without knobs of its own."""

_PARAM_TYPES = (bool, int, float, str)


def _field_type(params_type: type, name: str) -> type:
    hints = typing.get_type_hints(params_type)
    kind = hints[name]
    if typing.get_origin(kind) is Literal:
        return str
    if kind not in _PARAM_TYPES:
        raise TypeError(f"{params_type.__name__}.{name}: parameters are bool, int, float, str or Literal[...], not {kind}")
    return kind


def _choices(params_type: type, name: str) -> tuple | None:
    kind = typing.get_type_hints(params_type)[name]
    return typing.get_args(kind) if typing.get_origin(kind) is Literal else None


def parse_value(params_type: type, name: str, value: Any) -> Any:
    """`value` (text from the command line, or a TOML value) as the field's type; a one-line error naming the knob."""
    kind, choices = _field_type(params_type, name), _choices(params_type, name)
    text = str(value).strip()
    if kind is bool:
        if isinstance(value, bool):
            return value
        if text.lower() in ("true", "1", "yes", "on"):
            return True
        if text.lower() in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"--param {name}: expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"--param {name}: expected an integer, got {value!r}")
        try:
            return int(value) if isinstance(value, (int, float)) else int(text)
        except ValueError:
            raise ValueError(f"--param {name}: expected an integer, got {value!r}") from None
    if kind is float:
        if isinstance(value, bool):
            raise ValueError(f"--param {name}: expected a number, got {value!r}")
        try:
            return float(value) if isinstance(value, (int, float)) else float(text)
        except ValueError:
            raise ValueError(f"--param {name}: expected a number, got {value!r}") from None
    if choices is not None and text not in choices:
        raise ValueError(f"--param {name}: expected one of {', '.join(map(str, choices))}, got {value!r}")
    return text


def parse_overrides(pairs: Sequence[str]) -> dict[str, str]:
    """`["frames=8", "loras=2"]` (repeatable `--param NAME=VALUE`) as a mapping."""
    overrides = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--param {pair!r}: expected NAME=VALUE, e.g. --param frames=8")
        overrides[name.strip()] = value
    return overrides


def param_rows(params: Params) -> list[dict[str, Any]]:
    """One row per parameter for the `params` table: its text, its number, its type."""
    rows = []
    for name, value in params.as_dict().items():
        kind = type(value).__name__
        number = float(value) if isinstance(value, (bool, int, float)) else None
        rows.append({"name": name, "value": json.dumps(value) if not isinstance(value, str) else value, "number": number, "type": kind})
    return rows


# -- what the user asks for, and what is run -------------------------------------------------------
@dataclass(frozen=True)
class RunOptions:
    """What the user chose (command line, sweep grid); `Workload.resolve` checks it."""

    preset: str = "tiny"
    variant: str | None = None  # None: the workload's baseline
    batch: int = 1
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    params: Mapping[str, Any] = field(default_factory=dict)  # overrides of the preset's parameters


@dataclass(frozen=True)
class RunSpec:
    """A run's complete, checked settings: what `Workload.build` receives."""

    workload: str
    variant: str
    preset: str
    batch: int
    device: str
    dtype: str
    seed: int
    params: Params
    code: str = ""  # Workload.code_version: runs of different adapter code do different work

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def settings(self) -> dict[str, Any]:
        """Everything that decides the work but the variant."""
        return {"preset": self.preset, "batch": self.batch, "dtype": self.dtype, "device": self.device.split(":")[0],
                "seed": self.seed, "params": self.params.as_dict(), "code": self.code}

    def settings_key(self) -> str:
        """Canonical text of `settings()`: runs with equal keys did the same work (variants aside)."""
        return json.dumps(self.settings(), sort_keys=True, separators=(",", ":"))


# -- what an adapter builds -----------------------------------------------------------------------
class PartTimer(typing.Protocol):
    def __call__(self, name: str, background: bool = False) -> typing.ContextManager: ...


@dataclass
class Built:
    """A workload ready on its device.

    `iteration(part)` runs one iteration; it wraps each of its parts in `with part("name"):`
    (profilers/parts.py times them inside the timed repeat and marks them in the trace; a part
    run in the background, overlapping others, is `part("name", background=True)` and is not
    in the sum). `items` is the throughput count per iteration, `part_items` per part.
    """

    iteration: Callable[[PartTimer], Any]
    items: int
    item_unit: str
    model: torch.nn.Module | None = None  # its forwards are the attention rows' model calls
    recorded_modules: Mapping[str, torch.nn.Module] | None = None  # where attention is recorded; default: model
    attention_sites: Sequence[Any] = ()  # profilers.attention_adapters.SiteRule: the adapter's own attention modules
    part_items: Mapping[str, int] = field(default_factory=dict)
    reset: Callable[[], None] | None = None  # training: restore weights and optimizer state (untimed, before each repeat)
    # rows (subject, metric, value, position), computed once after the run: a numerics workload's figures, or
    # what an inference variant changes in its output against the baseline's
    numerics: Callable[[], list[dict[str, Any]]] | None = None
    info: dict[str, Any] = field(default_factory=dict)  # param_count, param_bytes, kv_cache_bytes, trainable_param_count, ...


@dataclass(frozen=True)
class Workload:
    name: str
    study: str  # the section of shared/docs/studies.md it reproduces
    description: str
    kind: Kind
    presets: Mapping[str, Params]  # each preset's parameter defaults (the model dimensions live with the adapter)
    variants: tuple[str, ...]  # the first is the baseline
    build: Callable[[RunSpec], Built]
    gpu_variants: tuple[str, ...] = ()  # variants that only exist on a GPU (CUDA graphs, streams)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"workload {self.name!r}: kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if not self.variants or not self.presets:
            raise ValueError(f"workload {self.name!r} needs at least one variant and one preset")
        types = {type(p) for p in self.presets.values()}
        if len(types) != 1 or not dataclasses.is_dataclass(next(iter(types))):
            raise ValueError(f"workload {self.name!r}: every preset's parameters must be one frozen dataclass type")
        for name in self.param_names:
            _field_type(self.params_type, name)

    @property
    def baseline(self) -> str:
        return self.variants[0]

    @property
    def params_type(self) -> type:
        return type(next(iter(self.presets.values())))

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.params_type))

    def params(self, preset: str, overrides: Mapping[str, Any] | None = None) -> Params:
        """The preset's parameters with `overrides` applied, parsed and checked."""
        if preset not in self.presets:
            raise ValueError(f"workload {self.name!r}: " + unknown_name("preset", preset, self.presets))
        changes = {}
        for name, value in (overrides or {}).items():
            if name not in self.param_names:
                raise ValueError(f"--param {name}: workload {self.name!r} has no such parameter; "
                                 + unknown_name("parameter", name, self.param_names))
            changes[name] = parse_value(self.params_type, name, value)
        params = dataclasses.replace(self.presets[preset], **changes)
        params.check()
        return params

    def resolve(self, options: RunOptions, device_here: bool = True) -> RunSpec:
        """Check options at the edge; the complete settings of the run (`device_here`: see `check_device`)."""
        variant = options.variant or self.baseline
        if variant not in self.variants:
            raise ValueError(f"workload {self.name!r}: " + unknown_name("variant", variant, self.variants))
        if options.dtype not in DTYPES:
            raise ValueError(f"--dtype: unknown dtype {options.dtype!r}; expected {', '.join(DTYPES)}")
        if not isinstance(options.batch, int) or options.batch < 1:
            raise ValueError(f"--batch must be at least 1, got {options.batch}")
        device = check_device(options.device, here=device_here)
        if variant in self.gpu_variants and not device.startswith("cuda"):
            raise ValueError(f"workload {self.name!r}: variant {variant!r} needs a CUDA device (--device cuda)")
        params = self.params(options.preset, options.params)
        return RunSpec(self.name, variant, options.preset, options.batch, device, options.dtype, options.seed, params, self.code_version)

    @property
    def code_version(self) -> str:
        """A hash of the adapter's source and the workloads modules it imports: a preset's model
        dimensions or a variant's code may change between versions, and runs of other code are not
        reused by `reproduce` nor paired by `compare`."""
        return _code_version(self.build.__module__)


@functools.lru_cache(maxsize=None)
def _code_version(module_name: str) -> str:
    module = sys.modules[module_name]
    used = {module_name} | {
        getattr(value, "__module__", None) or getattr(value, "__name__", "")
        for value in vars(module).values()
    }
    files = sorted({sys.modules[name].__file__ for name in used
                    if name and name.startswith("workloads.") and getattr(sys.modules.get(name), "__file__", None)})
    digest = hashlib.sha256()
    for file in files:
        digest.update(Path(file).read_bytes())
    return digest.hexdigest()[:12]


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
        raise UnknownWorkload(unknown_name("workload", name, _REGISTRY))
    return _REGISTRY[name]


def all_workloads() -> list[Workload]:
    from workloads import ADAPTERS  # noqa: F401

    return [_REGISTRY[k] for k in sorted(_REGISTRY)]
