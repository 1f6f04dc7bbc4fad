"""Analysis views created in the catalog, so plain SQL users get the same figures as the CLI.

Each analysis module under store/analysis/ holds its views' SQL; this list orders them so a
view comes after the views it reads. Changing it rebuilds the catalog (Store.ensure()).
"""
from store.analysis import attention, categories, communication, gpu_time, host, idle, kernels

ANALYSIS_VIEWS: list[str] = [
    *categories.VIEWS,  # op_time_by_category
    *kernels.VIEWS,  # kernel_launches, kernel_stats
    *gpu_time.VIEWS,  # gpu_kernel_set, gpu_time_breakdown
    *idle.VIEWS,  # gpu_idle_gaps, gpu_idle_breakdown
    *host.VIEWS,  # host_overhead
    *attention.VIEWS,  # attention_time
    *communication.VIEWS,  # comm_comp_overlap, collectives, collective_stats
]
