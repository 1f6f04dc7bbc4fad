"""Workload adapters. Each module in ADAPTERS registers its workloads when imported."""
from importlib import import_module

ADAPTERS = ()  # e.g. ("workloads.diffusion_t2i", "workloads.llm_decode"): filled as adapters land

for _module in ADAPTERS:
    import_module(_module)
