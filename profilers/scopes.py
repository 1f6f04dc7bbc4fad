"""Attention scopes in the profiled trace: each attention module's forward inside a
`record_function("attention::<module path>")` range.

The import (store/enrich.py) counts the CPU operators inside such a range as attention,
except the linear projections (q, k, v, out), so the eager baseline's matmul + softmax show
up as attention just as a fused SDPA kernel does. Compiled modules are left alone: hooks
inside a compiled graph would break it, and their fused kernels carry no module anyway.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Any, Iterator

from torch import nn
from torch.profiler import record_function

from profilers.seqlen import find_sites

PREFIX = "attention::"  # store.enrich.ATTENTION_SCOPE_PREFIX


def _compiled(module: nn.Module) -> bool:
    return hasattr(module.forward, "_torchdynamo_orig_callable") or hasattr(module, "_orig_mod")


def _roots(model_or_modules: Any) -> list[nn.Module]:
    if isinstance(model_or_modules, nn.Module):
        return [model_or_modules]
    return [m for m in (model_or_modules or {}).values() if isinstance(m, nn.Module)]


@contextmanager
def attention_scopes(model_or_modules: Any, rules=()) -> Iterator[int]:
    """Mark every attention module's calls while entered; yields how many modules were marked."""
    compiled = {id(m) for root in _roots(model_or_modules) for m in root.modules() if _compiled(m)}
    roots = {name: m for name, m in (model_or_modules.items() if isinstance(model_or_modules, dict) else [("", model_or_modules)])
             if isinstance(m, nn.Module) and id(m) not in compiled}
    sites = [(module, site) for module, site in find_sites(roots, rules) if site.path]
    open_ranges: dict[int, list] = {}
    with ExitStack() as hooks:
        for module, site in sites:
            name = PREFIX + site.path

            def enter(mod, args, name=name):
                scope = record_function(name)
                scope.__enter__()
                open_ranges.setdefault(id(mod), []).append(scope)

            def leave(mod, args, output):
                open_ranges[id(mod)].pop().__exit__(None, None, None)

            hooks.callback(module.register_forward_pre_hook(enter).remove)
            hooks.callback(module.register_forward_hook(leave, always_call=True).remove)
        yield len(sites)
