"""Analyses over the store: SQL views in the catalog, and thin functions returning one run's rows.

Each module holds its views' SQL (VIEWS, listed in store/views.py in dependency order) and a
function `f(con, run_id, ...) -> pandas.DataFrame` reading them; docs/analyses.md describes
every view, column and definition.
"""
from store.analysis.attention import attention_time
from store.analysis.categories import op_time_by_category
from store.analysis.gpu_time import gpu_kernel_set, gpu_time_breakdown
from store.analysis.host import host_overhead
from store.analysis.idle import gpu_idle_breakdown
from store.analysis.kernels import kernel_launches, kernel_stats

__all__ = [
    "attention_time",
    "op_time_by_category",
    "gpu_kernel_set",
    "gpu_time_breakdown",
    "gpu_idle_breakdown",
    "kernel_launches",
    "kernel_stats",
    "host_overhead",
]
