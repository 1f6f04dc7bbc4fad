"""Workload adapters. Each module in ADAPTERS registers its workloads when imported."""
from importlib import import_module

ADAPTERS = ("workloads.diffusion_t2i", "workloads.llm_decode")

for _module in ADAPTERS:
    import_module(_module)
