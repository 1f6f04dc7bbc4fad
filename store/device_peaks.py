"""Accelerators' peak FLOP/s per precision and memory bandwidth: the roofs of the operator roofline.

One table, `store/device_peaks.csv`: `device_regex,name,fp32_flops_per_s,tf32_flops_per_s,
bf16_flops_per_s,fp16_flops_per_s,memory_bytes_per_s,source`, dense (no sparsity) vendor
datasheet figures; an empty cell is a precision the device has no peak for. A run's
`device_name` takes the first row whose Python regular expression it matches (a search, so
specific rows come first). To add or override devices, write rows in the same format to a file
and point `OBSERVATORY_DEVICE_PEAKS` at it: its rows are tried before the built-in ones.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
COLUMNS = ("device_regex", "name", *(f"{p}_flops_per_s" for p in PRECISIONS), "memory_bytes_per_s", "source")
# Trace dtype names (events' "Input type") and run dtypes -> the precision whose peak applies.
DTYPE_PRECISION = {
    "float": "fp32", "float32": "fp32",
    "c10::BFloat16": "bf16", "bfloat16": "bf16",
    "c10::Half": "fp16", "float16": "fp16", "half": "fp16",
}


@dataclass(frozen=True)
class DevicePeaks:
    name: str
    flops_per_s: dict  # precision -> FLOP/s, only the precisions the device has
    memory_bytes_per_s: float
    source: str

    def flops_for(self, dtype: str | None, tf32: bool = False) -> float | None:
        """Peak FLOP/s for operands of `dtype` (a trace "Input type" or a run dtype); TF32 when the kernels say so."""
        precision = DTYPE_PRECISION.get(dtype or "")
        if precision == "fp32" and tf32 and "tf32" in self.flops_per_s:
            precision = "tf32"
        return self.flops_per_s.get(precision)


def builtin_path() -> Path:
    return Path(str(resources.files("store") / "device_peaks.csv"))


def _number(text: str, path: Path, line: int, column: str) -> float | None:
    if not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"device peaks {path}, line {line}: {column}={text!r} is not a number") from None
    if not value > 0:
        raise ValueError(f"device peaks {path}, line {line}: {column}={text!r} must be positive")
    return value


@lru_cache(maxsize=8)
def load_peaks(path: Path) -> tuple[tuple[re.Pattern, DevicePeaks], ...]:
    """The rows of one peaks file in order; errors name the file, the line and the column."""
    if not path.is_file():
        raise ValueError(f"device peaks {path}: no such file (OBSERVATORY_DEVICE_PEAKS)")
    rows = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"device peaks {path}: header {reader.fieldnames}; expected {','.join(COLUMNS)}")
        for line, row in enumerate(reader, start=2):
            try:
                pattern = re.compile(row["device_regex"])
            except re.error as exc:
                raise ValueError(f"device peaks {path}, line {line}: device_regex: {exc}") from None
            flops = {p: _number(row[f"{p}_flops_per_s"], path, line, f"{p}_flops_per_s") for p in PRECISIONS}
            memory = _number(row["memory_bytes_per_s"], path, line, "memory_bytes_per_s")
            if memory is None:
                raise ValueError(f"device peaks {path}, line {line}: memory_bytes_per_s is required")
            rows.append((pattern, DevicePeaks(row["name"], {p: v for p, v in flops.items() if v is not None}, memory, row["source"])))
    return tuple(rows)


def peaks_for(device_name: str | None) -> DevicePeaks | None:
    """The peaks of the first row (the user's file first, then the built-in table) matching `device_name`; None if none."""
    if not device_name:
        return None
    user = os.environ.get("OBSERVATORY_DEVICE_PEAKS")
    paths = ([Path(user)] if user else []) + [builtin_path()]
    for path in paths:
        for pattern, peaks in load_peaks(path):
            if pattern.search(device_name):
                return peaks
    return None
