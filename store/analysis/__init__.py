"""Analyses over the store: SQL views in the catalog, and thin functions returning one run's rows.

Each module holds its views' SQL (VIEWS, listed in store/views.py in dependency order) and a
function `f(con, run_id, ...) -> pandas.DataFrame` reading them; docs/analyses.md describes
every view, column and definition.
"""
from store.analysis.attention import attention_time
from store.analysis.categories import op_time_by_category
from store.analysis.communication import collective_stats, collectives, comm_comp_overlap, job_runs, stragglers
from store.analysis.critical_path import critical_path, path_arrows
from store.analysis.gpu_time import gpu_kernel_set, gpu_time_breakdown
from store.analysis.host import host_overhead
from store.analysis.idle import gpu_idle_breakdown
from store.analysis.kernels import kernel_launches, kernel_stats
from store.analysis.roofline import operator_calls, operator_roofline, roof_curves, run_roofs
from store.analysis.trace_diff import diff_by_category, diff_document, ops_diff, trace_diff

__all__ = [
    "attention_time",
    "op_time_by_category",
    "gpu_kernel_set",
    "gpu_time_breakdown",
    "gpu_idle_breakdown",
    "kernel_launches",
    "kernel_stats",
    "host_overhead",
    "operator_calls",
    "operator_roofline",
    "run_roofs",
    "roof_curves",
    "comm_comp_overlap",
    "collectives",
    "collective_stats",
    "job_runs",
    "stragglers",
    "critical_path",
    "path_arrows",
    "trace_diff",
    "diff_by_category",
    "ops_diff",
    "diff_document",
]
