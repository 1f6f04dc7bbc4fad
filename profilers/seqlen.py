"""Records the sequence lengths of every attention call in one or more iterations.

    with SeqLenRecorder(built.model, model=built.model) as rec:
        built.step()
    rec.rows  # one dict per attention call, schema in ROW_COLUMNS

Coverage: diffusers `Attention` / `AttentionModuleMixin` modules, transformers `*Attention`
modules, `nn.MultiheadAttention`, other `*Attention` modules (which only name the SDPA calls
made inside them), and calls of `torch.nn.functional.scaled_dot_product_attention` looked up
at call time (the attribute is patched while the recorder is entered and restored after; code
that imported the function by name beforehand is not seen). How each library's inputs are
read lives in `attention_adapters.py`.

Mechanism: each attention module's `forward` is wrapped on the instance while entered (and
restored on exit). The wrapper sees what a forward pre-hook with kwargs plus an always-called
forward hook would, but nn.Module's hook path costs several microseconds per call, which on
a tiny LLM decode step was half the recorder's overhead. The `model` is wrapped alike.

One row per attention computation, recorded at the most specific level that sees it:
1. An SDPA call made inside a recorded attention module is recorded at the call, with the
   exact shapes of the query and key tensors, and named by the enclosing module (path,
   processor / implementation, kind): `shape_source == "sdpa_call"`.
2. A module call with no SDPA call inside (eager attention, `AttnProcessor`,
   `nn.MultiheadAttention` with `need_weights=True`) is recorded once when it returns, with
   the shapes its inputs imply: `shape_source == "module_inputs"`.
3. An SDPA call outside any recorded module is recorded at the call with `module_path` None.
A row recorded inside nested attention modules (a transformers `BertAttention` around a
`BertSelfAttention`) covers all of them, so a call is never counted twice.

`model_call` is the 0-based index of the `model` forward call (one UNet forward per
denoising step, one LLM forward per token) enclosing the attention call, counted from the
start of the iteration; None for calls outside it (text encoder, VAE). `next_iteration()`
starts a new iteration.

torch.compile: while entered, the recorder sets `torch.compiler.set_stance("force_eager")`, so
compiled modules run their eager code and every wrapper runs: the sequence lengths are those
the compiled model sees, but the pass is an eager one, never a timing pass. (Letting Dynamo
trace the recording code instead gives wrong rows: in trials, calls lost their module or were
counted twice, once as a bare SDPA call.)
CUDA graphs replayed by hand bypass Python and cannot be recorded.

The wrappers only read `.shape` and Python attributes: no tensor op, no device sync.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from profilers.attention_adapters import FUNCTIONAL, Call, Site, is_temporal, resolve_kind, site_builder

ROW_COLUMNS = (
    "iteration", "call_index", "model_call", "module_path", "module_class", "family", "implementation",
    "shape_source", "kind", "axis", "batch", "heads", "kv_heads", "head_dim", "q_len", "kv_len",
)
_COMPILED_PREFIX = "_orig_mod"


def _roots(model_or_modules: Any) -> dict[str, nn.Module]:
    if model_or_modules is None:
        return {}
    if isinstance(model_or_modules, nn.Module):
        return {"": model_or_modules}
    if isinstance(model_or_modules, Mapping):
        mapping = model_or_modules
    elif isinstance(getattr(model_or_modules, "components", None), Mapping):  # a diffusers pipeline
        mapping = model_or_modules.components
    else:
        raise TypeError(
            "SeqLenRecorder: model_or_modules must be an nn.Module, a mapping of name to nn.Module, "
            f"a pipeline with .components, or None; got {type(model_or_modules).__name__}"
        )
    return {name: m for name, m in mapping.items() if isinstance(m, nn.Module)}


def _join(prefix: str, name: str) -> str:
    if name == _COMPILED_PREFIX:
        return prefix
    return f"{prefix}.{name}" if prefix else name


def _wrap_forward(
    module: nn.Module, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> Callable[[], str | None]:
    """Replace `module.forward` (on the instance) by `wrap(forward)`; return the undo, which
    answers a complaint instead of undoing when someone else replaced the wrapper meanwhile.

    The wrapper keeps the forward's name and signature (transformers' generate inspects it on
    every call; `__signature__` makes that as cheap as before).
    """
    had_own = "forward" in module.__dict__  # e.g. accelerate's offload hooks, OptimizedModule
    previous = module.__dict__.get("forward")
    forward = module.forward
    wrapper = functools.wraps(forward)(wrap(forward))
    try:
        wrapper.__signature__ = inspect.signature(forward)
    except (TypeError, ValueError):  # a forward without a signature: inspect follows __wrapped__
        pass
    module.__dict__["forward"] = wrapper

    def restore() -> str | None:
        if module.__dict__.get("forward") is not wrapper:
            return f"{type(module).__name__}.forward was replaced while SeqLenRecorder was entered; left as it is"
        if had_own:
            module.__dict__["forward"] = previous
        else:
            del module.__dict__["forward"]
        return None

    return restore


def find_sites(model_or_modules: Any, rules=()) -> list[tuple[nn.Module, Site]]:
    """Every attention module under the roots with its Site, each module once; `rules` (SiteRule)
    are a workload's own attention modules, tried before the library rules."""
    rules = tuple(rules)
    found: list[tuple[nn.Module, str, bool]] = []
    seen: set[int] = set()

    def walk(module: nn.Module, path: str, segment: str, temporal: bool) -> None:
        if id(module) in seen:
            return
        seen.add(id(module))
        temporal = temporal or is_temporal(type(module).__name__, segment)
        if site_builder(module, path, rules) is not None:
            found.append((module, path, temporal))
        for name, child in module.named_children():
            walk(child, _join(path, name), name, temporal)

    for prefix, root in _roots(model_or_modules).items():
        walk(root, prefix, prefix, False)
    video = any(temporal for _, _, temporal in found)
    return [
        (m, site_builder(m, path, rules)(m, path, ("temporal" if t else "spatial") if video else None))
        for m, path, t in found
    ]


class SeqLenRecorder:
    """Context manager that records one row per attention call; see the module docstring."""

    def __init__(self, model_or_modules: Any, model: nn.Module | None = None, rules=()):
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"SeqLenRecorder: model must be an nn.Module or None, got {type(model).__name__}")
        self.sites = find_sites(model_or_modules, rules)
        self.model = model
        self._records: list[tuple] = []
        self._stack: list[Call] = []
        self._restores: list[Callable[[], str | None]] = []
        self._stance: Any = None
        self._original_sdpa: Any = None
        self._iteration = 0
        self._calls_in_iteration = 0
        self._steps_started = 0
        self._step: int | None = None

    @property
    def rows(self) -> list[dict[str, Any]]:
        """One dict per attention call, keys ROW_COLUMNS (built here, off the hot path)."""
        return [
            {
                "iteration": iteration, "call_index": index, "model_call": step, "module_path": site.path,
                "module_class": site.module_class, "family": site.family, "implementation": impl,
                "shape_source": source, "kind": kind, "axis": site.axis, "batch": batch, "heads": heads,
                "kv_heads": kv_heads, "head_dim": head_dim, "q_len": q_len, "kv_len": kv_len,
            }
            for (iteration, index, step, site, impl, source, kind, batch, heads, kv_heads, head_dim, q_len, kv_len)
            in self._records
        ]

    # -- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> "SeqLenRecorder":
        if self._original_sdpa is not None:
            raise RuntimeError("SeqLenRecorder is already entered; use one `with` block at a time")
        try:
            for module, site in self.sites:
                self._restores.append(_wrap_forward(module, self._attention_forward(module, site)))
            if self.model is not None:
                self._restores.append(_wrap_forward(self.model, self._step_forward))
            self._original_sdpa = F.scaled_dot_product_attention
            F.scaled_dot_product_attention = self._sdpa
            self._stance = torch.compiler.set_stance("force_eager")
            self._stance.__enter__()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._stance is not None:
            self._stance.__exit__(*exc)
            self._stance = None
        if self._original_sdpa is not None:
            F.scaled_dot_product_attention = self._original_sdpa
            self._original_sdpa = None
        complaints = [c for c in (restore() for restore in reversed(self._restores)) if c]
        self._restores.clear()
        self._stack.clear()
        if complaints and exc[0] is None:
            raise RuntimeError("; ".join(complaints))

    def next_iteration(self) -> None:
        """Start counting steps and calls again, as a new iteration."""
        self._iteration += 1
        self._calls_in_iteration = 0
        self._steps_started = 0

    # -- the wrappers: only .shape reads and appends -------------------------------------------
    def _step_forward(self, forward: Callable[..., Any]) -> Callable[..., Any]:
        def step_forward(*args: Any, **kwargs: Any) -> Any:
            self._step = self._steps_started
            self._steps_started += 1
            try:
                return forward(*args, **kwargs)
            finally:
                self._step = None

        return step_forward

    def _attention_forward(self, module: nn.Module, site: Site) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        read, stack = site.read, self._stack

        def wrap(forward: Callable[..., Any]) -> Callable[..., Any]:
            def attention_forward(*args: Any, **kwargs: Any) -> Any:
                stack.append(read(site, module, args, kwargs))
                try:
                    return forward(*args, **kwargs)
                finally:
                    self._finish(stack.pop())

            return attention_forward

        return wrap

    def _finish(self, call: Call) -> None:
        if not call.covered and call.q_len is not None:
            site = call.site
            self._record(call, "module_inputs", call.batch, site.heads, site.kv_heads, site.head_dim,
                         call.q_len, call.kv_len)
        if call.covered and self._stack:  # a row inside covers the enclosing attention module too
            self._stack[-1].covered = True

    def _sdpa(self, *args: Any, **kwargs: Any) -> Any:
        q = (args[0] if args else kwargs["query"]).shape
        k = (args[1] if len(args) > 1 else kwargs["key"]).shape
        call = self._stack[-1] if self._stack else Call(FUNCTIONAL, FUNCTIONAL.implementation, None, False)
        if len(q) >= 4:  # (B, ..., H, L, E)
            batch, heads, kv_heads = q[0], q[-3], k[-3]
        elif len(q) == 3:  # (N, L, E): N is batch * heads inside a module, which knows both
            batch = call.batch if call.batch is not None else q[0]
            heads, kv_heads = call.site.heads, call.site.kv_heads
        else:
            batch, heads, kv_heads = 1, call.site.heads, call.site.kv_heads
        self._record(call, "sdpa_call", batch, heads, kv_heads, q[-1], q[-2], k[-2])
        return self._original_sdpa(*args, **kwargs)

    def _record(self, call: Call, source: str, batch, heads, kv_heads, head_dim, q_len, kv_len) -> None:
        call.covered = True
        kind = resolve_kind(call.kind, call.cached, q_len, kv_len)
        self._records.append((self._iteration, self._calls_in_iteration, self._step, call.site,
                              call.implementation, source, kind, batch, heads, kv_heads, head_dim, q_len, kv_len))
        self._calls_in_iteration += 1
