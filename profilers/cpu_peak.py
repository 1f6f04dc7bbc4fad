"""This machine's CPU roofs, measured: a short matmul and a short memory copy, stored with each CPU run.

Vendor tables cannot say what a shared, possibly throttled CPU core delivers, so the roofline of a
CPU run uses what this process measured just after the run, with the same torch threads:
- `cpu_peak_flops_per_s`: 2*n^3 / time of a torch.mm of two n x n matrices in the run's dtype, the
  best of the repeats that fit in the time budget (one warm-up call apart);
- `cpu_peak_bytes_per_s`: 2 x the bytes of a 16 MiB tensor / time of copying it into another (read
  once, written once), the best of its repeats.
The whole measurement takes about 0.1-0.25 s; a busy machine lowers both figures (the run's own
operators ran under the same load).
"""
from __future__ import annotations

import time
from typing import Any, Callable

import torch

from profilers.memory import metric

MATMUL_N = {torch.float32: 256}  # other dtypes: 128 (CPUs without bf16/fp16 units are far slower)
COPY_BYTES = 16 * 2**20
BUDGET_S = 0.06  # per measurement, after the warm-up call


def _best_seconds(call: Callable[[], Any], budget_s: float) -> tuple[float, int]:
    """Best wall time of `call` over the repeats that fit in `budget_s` (at least one), after one warm-up call."""
    call()
    best, repeats, deadline = float("inf"), 0, time.perf_counter() + budget_s
    while True:
        start = time.perf_counter()
        call()
        end = time.perf_counter()
        best, repeats = min(best, end - start), repeats + 1
        if end + (end - start) > deadline:  # the next repeat would overrun the budget
            return best, repeats


def peak_metrics(dtype: str = "float32", budget_s: float = BUDGET_S) -> list[dict[str, Any]]:
    """Metric rows cpu_peak_flops_per_s and cpu_peak_bytes_per_s, measured now (dtype: float32, bfloat16, float16)."""
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype) or not torch_dtype.is_floating_point:
        raise ValueError(f"dtype={dtype!r}: expected a floating point torch dtype name such as 'float32'")
    n = MATMUL_N.get(torch_dtype, 128)
    a, b = torch.randn(n, n).to(torch_dtype), torch.randn(n, n).to(torch_dtype)
    out = torch.empty(n, n, dtype=torch_dtype)
    mm_s, mm_repeats = _best_seconds(lambda: torch.mm(a, b, out=out), budget_s)
    src = torch.ones(COPY_BYTES // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    copy_s, copy_repeats = _best_seconds(lambda: dst.copy_(src), budget_s)
    threads = torch.get_num_threads()
    return [
        metric("cpu_peak_flops_per_s", 2 * n**3 / mm_s, "FLOP/s",
               f"torch.mm {n}x{n} {dtype}, best of {mm_repeats}, {threads} threads (profilers/cpu_peak.py)"),
        metric("cpu_peak_bytes_per_s", 2 * COPY_BYTES / copy_s, "bytes/s",
               f"copy_ of {COPY_BYTES // 2**20} MiB (read + write), best of {copy_repeats}, {threads} threads (profilers/cpu_peak.py)"),
    ]
