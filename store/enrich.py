"""Columns the import adds to every event, computed with Arrow and numpy.

Two passes. `local_columns` works on one batch alone (category names, device, stream);
`global_columns` needs every event at once but only a few narrow columns of each
(ProfilerStep ranges, launch correlations, cpu_op nesting), so a multi-GB trace is
enriched without holding its args in memory.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

LEGACY_CATEGORIES = {
    "Operator": "cpu_op",
    "Runtime": "cuda_runtime",
    "Driver": "cuda_driver",
    "Kernel": "kernel",
    "Memcpy": "gpu_memcpy",
    "Memset": "gpu_memset",
    "Python": "python_function",
}
DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset", "gpu_user_annotation", "mtia_ccp_events")
LAUNCH_CATS = ("cuda_runtime", "cuda_driver", "mtia_runtime")
OPERATOR_CATS = ("cpu_op", "kernel", "gpu_memcpy", "gpu_memset", "mtia_ccp_events")
MEMORY_CATS = ("gpu_memcpy", "gpu_memset")
# Profiled runs mark each attention module's forward with a user_annotation of this prefix
# (profilers/scopes.py); CPU operators inside it, except its linear projections, are attention.
ATTENTION_SCOPE_PREFIX = "attention::"
PROJECTION_OPS = ("aten::linear",)


# -- operator categories ---------------------------------------------------------------
def category_rules_path() -> Path:
    user = os.environ.get("OBSERVATORY_CATEGORY_RULES")
    return Path(user) if user else Path(str(resources.files("store") / "category_rules.csv"))


@lru_cache(maxsize=4)
def load_rules(path: Path) -> tuple[tuple[str, str, re.Pattern], ...]:
    """(category, applies_to, regex) sorted by priority; errors name the file and line."""
    if not path.is_file():
        raise ValueError(f"category rules {path}: no such file (OBSERVATORY_CATEGORY_RULES)")
    rules = []
    with path.open(newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                rules.append((int(row["priority"]), row["category"], row["applies_to"], re.compile(row["name_regex"])))
            except (KeyError, TypeError, ValueError, re.error) as exc:
                raise ValueError(f"category rules {path}, line {line}: {exc}; expected priority,category,applies_to,name_regex") from None
            if row["applies_to"] not in ("any", "host", "device"):
                raise ValueError(f"category rules {path}, line {line}: applies_to must be any, host or device")
    return tuple((c, a, rx) for _, c, a, rx in sorted(rules, key=lambda r: r[0]))


@lru_cache(maxsize=65536)
def categorize(name: str, on_device: bool, rules_path: Path) -> str:
    side = "device" if on_device else "host"
    for category, applies_to, regex in load_rules(rules_path):
        if applies_to in ("any", side) and regex.search(name):
            return category
    return "other"


# -- per batch -------------------------------------------------------------------------
def _int_or_null(text: pa.Array, pattern: str) -> pa.Array:
    """The integer a string column holds (e.g. tid 'stream 7' -> 7), null where none."""
    digits = pc.struct_field(pc.extract_regex(text, pattern), [0])
    return pc.cast(digits, pa.int64())


def local_columns(batch: pa.RecordBatch, rules_path: Path) -> dict[str, pa.Array]:
    cat_raw = batch.column("cat")
    legacy = pa.array(list(LEGACY_CATEGORIES)), pa.array(list(LEGACY_CATEGORIES.values()))
    index = pc.index_in(cat_raw, legacy[0])
    cat = pc.if_else(pc.is_null(index), cat_raw, pc.take(legacy[1], index))
    on_device = pc.fill_null(pc.is_in(cat, pa.array(DEVICE_CATS)), False)
    device = pc.if_else(on_device, pc.coalesce(batch.column("arg_device"), _int_or_null(batch.column("pid"), r"^(?P<n>-?\d+)$")), pa.scalar(None, pa.int64()))
    stream = pc.if_else(on_device, pc.coalesce(batch.column("arg_stream"), _int_or_null(batch.column("tid"), r"(?P<n>\d+)$")), pa.scalar(None, pa.int64()))

    is_op = pc.and_(pc.equal(batch.column("ph"), "X"), pc.is_in(cat, pa.array(OPERATOR_CATS)))
    is_op = pc.fill_null(is_op, False)
    # categorize each distinct (name, side) once, then map back to the rows
    keys = pc.if_else(is_op, pc.binary_join_element_wise(pc.cast(on_device, pa.string()), batch.column("name"), "|"), None)
    distinct = pc.unique(keys).drop_null()
    labels = [categorize(key.split("|", 1)[1], key.startswith("true"), rules_path) for key in distinct.to_pylist()]
    category = pc.take(pa.array(labels, pa.string()), pc.index_in(keys, distinct))
    category = pc.if_else(pc.is_in(cat, pa.array(MEMORY_CATS)), "memory", category)
    return {
        "cat": cat,
        "on_device": on_device,
        "device": pc.cast(device, pa.int32()),
        "stream": stream,
        "category": pa.array(category, pa.string()),
    }


# -- across the whole trace ------------------------------------------------------------
@dataclass
class Narrow:
    """The few columns of every event the whole-trace pass needs."""

    ts: list[np.ndarray] = field(default_factory=list)
    dur: list[np.ndarray] = field(default_factory=list)
    on_device: list[np.ndarray] = field(default_factory=list)
    correlation: list[np.ndarray] = field(default_factory=list)
    is_launch: list[np.ndarray] = field(default_factory=list)
    is_step: list[np.ndarray] = field(default_factory=list)
    step_number: list[np.ndarray] = field(default_factory=list)
    is_cpu_op: list[np.ndarray] = field(default_factory=list)
    is_projection: list[np.ndarray] = field(default_factory=list)
    is_attention_scope: list[np.ndarray] = field(default_factory=list)
    thread: list[np.ndarray] = field(default_factory=list)
    threads: dict[str, int] = field(default_factory=dict)
    part_code: list[np.ndarray] = field(default_factory=list)  # index in `parts` of a part's own range, else -1
    parts: tuple[str, ...] = ()  # a profiled run's part names (profilers/parts.py): their ranges label the events inside

    def add(self, batch: pa.RecordBatch, local: dict[str, pa.Array]) -> None:
        def numpy(array: pa.Array, fill) -> np.ndarray:
            return pc.fill_null(array, fill).to_numpy(zero_copy_only=False)

        name, cat, ph = batch.column("name"), local["cat"], batch.column("ph")
        complete = pc.fill_null(pc.equal(ph, "X"), False)
        step_match = pc.struct_field(pc.extract_regex(name, r"^ProfilerStep#(?P<n>\d{1,9})(?:\D|$)"), [0])
        on_device = numpy(local["on_device"], False)
        self.ts.append(numpy(batch.column("ts_us"), np.nan))
        self.dur.append(numpy(batch.column("dur_us"), np.nan))
        self.on_device.append(on_device)
        self.correlation.append(numpy(batch.column("correlation"), -1))
        self.is_launch.append(numpy(pc.is_in(cat, pa.array(LAUNCH_CATS)), False))
        self.is_step.append(numpy(pc.and_(complete, pc.is_valid(step_match)), False) & ~on_device)
        self.step_number.append(numpy(pc.cast(step_match, pa.int32()), -1))
        self.is_cpu_op.append(numpy(pc.and_(complete, pc.equal(cat, "cpu_op")), False))
        self.is_projection.append(numpy(pc.is_in(name, pa.array(PROJECTION_OPS)), False))
        scope = pc.and_(pc.and_(complete, pc.equal(cat, "user_annotation")), pc.starts_with(name, ATTENTION_SCOPE_PREFIX))
        self.is_attention_scope.append(numpy(scope, False))
        is_part = pc.and_(pc.and_(complete, pc.equal(cat, "user_annotation")), pc.is_in(name, pa.array(self.parts, pa.string())))
        self.part_code.append(np.where(numpy(is_part, False), numpy(pc.index_in(name, pa.array(self.parts, pa.string())), -1), -1))
        thread = pc.binary_join_element_wise(pc.fill_null(batch.column("pid"), ""), pc.fill_null(batch.column("tid"), ""), "/")
        self.thread.append(self._thread_codes(thread))

    def _thread_codes(self, thread: pa.Array) -> np.ndarray:
        """Small integer per pid/tid pair, stable across batches (a trace has few threads)."""
        encoded = pc.dictionary_encode(thread)
        codes = np.array([self.threads.setdefault(t, len(self.threads)) for t in encoded.dictionary.to_pylist()], dtype=np.int32)
        return codes[encoded.indices.to_numpy(zero_copy_only=False)] if len(codes) else np.zeros(len(thread), np.int32)

    def concat(self, name: str) -> np.ndarray:
        parts = getattr(self, name)
        return np.concatenate(parts) if parts else np.empty(0)


def host_steps(ts: np.ndarray, on_device: np.ndarray, is_step: np.ndarray, step_number: np.ndarray, dur: np.ndarray) -> np.ndarray:
    """ProfilerStep#N that contains each host event (-1 where none)."""
    starts, order = np.unique(ts[is_step], return_index=True)
    ends = (ts[is_step] + dur[is_step])[order]
    numbers = step_number[is_step][order]
    steps = np.full(len(ts), -1, dtype=np.int64)
    if len(starts) == 0:
        return steps
    slot = np.searchsorted(starts, ts, side="right") - 1
    inside = (slot >= 0) & ~on_device & ~np.isnan(ts)
    inside[inside] &= ts[inside] <= ends[slot[inside]]
    steps[inside] = numbers[slot[inside]]
    return steps


def device_steps(steps: np.ndarray, on_device: np.ndarray, is_launch: np.ndarray, correlation: np.ndarray) -> np.ndarray:
    """Device events take the step of the runtime call that launched them (by correlation)."""
    launches = is_launch & (correlation >= 0) & (steps >= 0)
    keys, first = np.unique(correlation[launches], return_index=True)
    values = steps[launches][first]
    wanted = on_device & (correlation >= 0)
    slot = np.searchsorted(keys, correlation[wanted])
    slot = np.minimum(slot, max(len(keys) - 1, 0))
    found = len(keys) > 0
    result = steps.copy()
    matched = np.zeros(wanted.sum(), dtype=bool) if not found else keys[slot] == correlation[wanted]
    device_values = np.full(wanted.sum(), -1, dtype=np.int64)
    if found:
        device_values[matched] = values[slot[matched]]
    result[wanted] = device_values
    result[on_device & (correlation < 0)] = -1
    return result


def cpu_op_nesting(thread: np.ndarray, ts: np.ndarray, dur: np.ndarray, is_cpu_op: np.ndarray,
                   is_projection: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth, self time (duration minus child operators) and 'inside a linear projection' of
    cpu_op events; -1 / NaN / False elsewhere."""
    depth = np.full(len(ts), -1, dtype=np.int64)
    self_us = np.full(len(ts), np.nan)
    in_projection = np.zeros(len(ts), dtype=bool)
    ops = np.flatnonzero(is_cpu_op & ~np.isnan(ts) & ~np.isnan(dur))
    if len(ops) == 0:
        return depth, self_us, in_projection
    order = ops[np.lexsort((-dur[ops], ts[ops], thread[ops]))]
    threads, starts, durs = thread[order].tolist(), ts[order].tolist(), dur[order].tolist()
    projection = is_projection[order].tolist()
    op_depth, children, under = [0] * len(order), [0.0] * len(order), [False] * len(order)
    stack: list[int] = []
    current = None
    for i, start in enumerate(starts):
        if threads[i] != current:
            current, stack = threads[i], []
        while stack and starts[stack[-1]] + durs[stack[-1]] <= start:
            stack.pop()
        if stack:
            children[stack[-1]] += durs[i]
            op_depth[i] = len(stack)
            under[i] = under[stack[-1]]
        under[i] = under[i] or projection[i]
        stack.append(i)
    depth[order] = op_depth
    self_us[order] = np.maximum(np.asarray(durs) - np.asarray(children), 0.0)
    in_projection[order] = under
    return depth, self_us, in_projection


def inside_scopes(thread: np.ndarray, ts: np.ndarray, is_scope: np.ndarray, dur: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """True for candidate events that start inside a scope range on their own thread."""
    inside = np.zeros(len(ts), dtype=bool)
    scopes = np.flatnonzero(is_scope & ~np.isnan(dur))
    for code in np.unique(thread[scopes]):
        mine = scopes[thread[scopes] == code]
        order = np.argsort(ts[mine])
        starts, ends = ts[mine][order], (ts[mine] + dur[mine])[order]
        ends = np.maximum.accumulate(ends)  # nested scopes: the enclosing one's end counts
        events = np.flatnonzero(candidates & (thread == code))
        slot = np.searchsorted(starts, ts[events], side="right") - 1
        hit = slot >= 0
        hit[hit] = ts[events][hit] < ends[slot[hit]]
        inside[events[hit]] = True
    return inside


def part_of(ts: np.ndarray, dur: np.ndarray, on_device: np.ndarray, part_code: np.ndarray) -> np.ndarray:
    """The part (code in Narrow.parts) whose range holds each host event's start; -1 outside every part.

    Parts run one after another within an iteration, so a range holds the events of every thread
    that start inside it (backward's autograd threads too); device events take their launch's part.
    """
    ranges = np.flatnonzero((part_code >= 0) & ~np.isnan(ts) & ~np.isnan(dur))
    codes = np.full(len(ts), -1, dtype=np.int64)
    if len(ranges) == 0:
        return codes
    order = ranges[np.argsort(ts[ranges])]
    starts, ends = ts[order], ts[order] + dur[order]
    slot = np.searchsorted(starts, ts, side="right") - 1
    inside = (slot >= 0) & ~on_device & ~np.isnan(ts)
    inside[inside] &= ts[inside] < ends[slot[inside]]
    codes[inside] = part_code[order][slot[inside]]
    return codes


def global_columns(narrow: Narrow) -> dict[str, np.ndarray]:
    ts, dur, on_device = narrow.concat("ts"), narrow.concat("dur"), narrow.concat("on_device").astype(bool)
    steps = host_steps(ts, on_device, narrow.concat("is_step").astype(bool), narrow.concat("step_number").astype(np.int64), dur)
    steps = device_steps(steps, on_device, narrow.concat("is_launch").astype(bool), narrow.concat("correlation").astype(np.int64))
    thread, is_cpu_op = narrow.concat("thread"), narrow.concat("is_cpu_op").astype(bool)
    depth, self_us, in_projection = cpu_op_nesting(thread, ts, dur, is_cpu_op, narrow.concat("is_projection").astype(bool))
    attention = inside_scopes(thread, ts, narrow.concat("is_attention_scope").astype(bool), dur, is_cpu_op & ~in_projection)
    launch = narrow.concat("is_launch").astype(bool), narrow.concat("correlation").astype(np.int64)
    parts = part_of(ts, dur, on_device, narrow.concat("part_code").astype(np.int64))
    parts = device_steps(parts, on_device, *launch)  # device events: the part of the call that launched them
    return {"profiler_step": steps, "depth": depth, "self_us": self_us, "attention_scope": attention, "part": parts}
