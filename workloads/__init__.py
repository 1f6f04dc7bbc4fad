"""Workload adapters. Each module in ADAPTERS registers its workloads when imported.

Your own adapters (outside this package) join through OBSERVATORY_ADAPTERS, a comma-separated
list of importable module names: still an explicit list, never discovery.
"""
import os
from importlib import import_module

ADAPTERS = (  # one per line, sorted
    "workloads.attention_numerics",
    "workloads.chai",
    "workloads.diffusion_t2i",
    "workloads.dit_t2i",
    "workloads.dynamar",
    "workloads.fewshot",
    "workloads.fim",
    "workloads.llm_decode",
    "workloads.mixed_modal",
    "workloads.protein_distogram",
    "workloads.protein_fold",
    "workloads.sd_adapters",
    "workloads.video_t2v",
)
EXTRA_ADAPTERS = tuple(m.strip() for m in os.environ.get("OBSERVATORY_ADAPTERS", "").split(",") if m.strip())

for _module in ADAPTERS + EXTRA_ADAPTERS:
    try:
        import_module(_module)
    except ImportError as exc:
        if _module in ADAPTERS:
            raise
        raise ImportError(f"OBSERVATORY_ADAPTERS: cannot import adapter module {_module!r}: {exc}") from exc
