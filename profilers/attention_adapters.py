"""How to read one attention call from each library's module inputs.

`site_for(module, path, axis)` reads what is fixed about an attention module once, when the
recorder is built (family, heads, head_dim, implementation); per call, the site's `read`
turns the forward inputs into a `Call` (batch, q_len, kv_len, kind) reading only `.shape`
and Python attributes: no tensor op, nothing that would synchronize a device.

Kinds, decided per call:
- diffusers `Attention` / `AttentionModuleMixin`: "cross" when `encoder_hidden_states` is
  given, "joint" when it is given to a module with `added_kv_proj_dim` (SD3/Flux-style
  attention over image + text tokens concatenated), else "self".
- transformers `*Attention` (class in a `transformers.` module): "cross" when
  `key_value_states` / `encoder_hidden_states` is given; with a KV cache "decode" when
  q_len == 1 and kv_len > 1, else "prefill"; with neither, "self" (encoders, no-cache runs).
- `nn.MultiheadAttention`: "self" when `key is query` (the same tensor object), else "cross".
- a bare `F.scaled_dot_product_attention` call or an unknown `*Attention` module:
  "decode" when q_len == 1 < kv_len, "self" when q_len == kv_len, else None (a function
  call alone cannot tell cross attention from a prefill over a cache).

Axis (video models): "temporal" for attention under a temporal container (diffusers'
`TransformerTemporalModel`, `TemporalBasicTransformerBlock`, AnimateDiff motion modules, or a
path segment naming `temporal` / `temp_attentions` / `motion_modules`); when a model has any
temporal attention, its other attention modules are "spatial"; in image models and LLMs, None.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

TEMPORAL_CLASSES = frozenset(
    {"TransformerTemporalModel", "TemporalBasicTransformerBlock", "AnimateDiffTransformer3D", "MotionModules"}
)
TEMPORAL_SEGMENTS = frozenset({"temp_attentions", "motion_modules", "temporal_transformer_blocks"})


@dataclass(frozen=True)
class Site:
    """What is fixed about one hooked attention module (or the bare SDPA function)."""

    path: str | None
    module_class: str | None
    family: str  # "diffusers" | "transformers" | "torch.nn" | "module" | "functional"
    implementation: str | None  # None: the diffusers processor class, read per call
    axis: str | None
    heads: int | None
    kv_heads: int | None
    head_dim: int | None
    layer_idx: int | None
    read: Callable[["Site", nn.Module, tuple, dict], "Call"]


@dataclass(slots=True)
class Call:
    """One attention module call in flight; mutable runtime state, not a config."""

    site: Site
    implementation: str | None
    kind: str | None  # fixed kind; None: decided from the lengths
    cached: bool  # a KV cache was passed: the kind is prefill / decode
    batch: int | None = None
    q_len: int | None = None  # None: the inputs do not tell; only SDPA calls inside are recorded
    kv_len: int | None = None
    covered: bool = False  # a row was recorded inside this call


def resolve_kind(kind: str | None, cached: bool, q_len: int | None, kv_len: int | None) -> str | None:
    if cached:
        return "decode" if q_len == 1 and (kv_len or 0) > 1 else "prefill"
    if kind is not None:
        return kind
    if q_len == 1 and (kv_len or 0) > 1:
        return "decode"
    return "self" if q_len is not None and q_len == kv_len else None


def is_temporal(class_name: str, segment: str) -> bool:
    return class_name in TEMPORAL_CLASSES or segment in TEMPORAL_SEGMENTS or "temporal" in segment.lower()


def _first_int(obj: Any, names: tuple[str, ...]) -> int | None:
    for name in names:
        value = getattr(obj, name, None)
        if isinstance(value, int):
            return value
    return None


def _arg(args: tuple, kwargs: dict, name: str, index: int) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else None


# -- diffusers ---------------------------------------------------------------------------------
def _read_diffusers(site: Site, module: nn.Module, args: tuple, kwargs: dict) -> Call:
    shape = _arg(args, kwargs, "hidden_states", 0).shape
    batch = shape[0]
    q_len = shape[1] if len(shape) == 3 else shape[2] * shape[3]  # (B, L, C) or (B, C, H, W)
    encoder = _arg(args, kwargs, "encoder_hidden_states", 1)
    processor = type(module.processor).__name__
    if encoder is None:
        return Call(site, processor, "self", False, batch, q_len, q_len)
    if getattr(module, "added_kv_proj_dim", None) is not None:
        joint = q_len + encoder.shape[-2]
        return Call(site, processor, "joint", False, batch, joint, joint)
    return Call(site, processor, "cross", False, batch, q_len, encoder.shape[-2])


def _diffusers_site(module: nn.Module, path: str, axis: str | None) -> Site:
    heads = module.heads
    head_dim = _first_int(module, ("head_dim",)) or (_first_int(module, ("inner_dim",)) or 0) // heads or None
    return Site(path, type(module).__name__, "diffusers", None, axis, heads, heads, head_dim, None, _read_diffusers)


# -- transformers ------------------------------------------------------------------------------
def _kv_length(cache: Any, layer_idx: int | None, q_len: int) -> int | None:
    """Key length the kernel will see, from the cache's Python-side bookkeeping (no tensor read)."""
    cache = getattr(cache, "self_attention_cache", cache)  # EncoderDecoderCache
    if layer_idx is None or not hasattr(cache, "get_mask_sizes"):
        return None
    kv_len, _offset = cache.get_mask_sizes(q_len, layer_idx)
    return kv_len if isinstance(kv_len, int) else None


def _read_transformers(site: Site, module: nn.Module, args: tuple, kwargs: dict) -> Call:
    hidden = _arg(args, kwargs, "hidden_states", 0)
    if hidden is None:  # an unfamiliar signature: name the SDPA calls inside, nothing more
        return Call(site, site.implementation, None, False)
    batch, q_len = hidden.shape[0], hidden.shape[-2]
    source = kwargs.get("key_value_states")
    if source is None:
        source = kwargs.get("encoder_hidden_states")
    if source is not None:
        return Call(site, site.implementation, "cross", False, batch, q_len, source.shape[-2])
    cache = kwargs.get("past_key_values", kwargs.get("past_key_value"))
    if cache is not None:
        return Call(site, site.implementation, None, True, batch, q_len, _kv_length(cache, site.layer_idx, q_len))
    return Call(site, site.implementation, "self", False, batch, q_len, q_len)


def _transformers_site(module: nn.Module, path: str, axis: str | None) -> Site:
    config = getattr(module, "config", None)
    heads = _first_int(config, ("num_attention_heads",)) or _first_int(module, ("num_heads", "num_attention_heads"))
    kv_heads = _first_int(config, ("num_key_value_heads",)) or heads
    head_dim = _first_int(module, ("head_dim", "attention_head_size")) or _first_int(config, ("head_dim",))
    if head_dim is None and heads:
        head_dim = (_first_int(config, ("hidden_size",)) or 0) // heads or None
    impl = getattr(config, "_attn_implementation", None) or type(module).__name__
    layer_idx = _first_int(module, ("layer_idx",))
    return Site(path, type(module).__name__, "transformers", impl, axis, heads, kv_heads, head_dim, layer_idx,
                _read_transformers)


# -- torch.nn and unknown modules -----------------------------------------------------------
def _read_multihead(site: Site, module: nn.Module, args: tuple, kwargs: dict) -> Call:
    query, key = _arg(args, kwargs, "query", 0), _arg(args, kwargs, "key", 1)
    q, k = query.shape, key.shape
    if len(q) == 2:  # unbatched (L, E)
        batch, q_len, kv_len = 1, q[0], k[0]
    elif module.batch_first:
        batch, q_len, kv_len = q[0], q[1], k[1]
    else:
        batch, q_len, kv_len = q[1], q[0], k[0]
    return Call(site, site.implementation, "self" if key is query else "cross", False, batch, q_len, kv_len)


def _read_context_only(site: Site, module: nn.Module, args: tuple, kwargs: dict) -> Call:
    """An attention module we cannot read: it only names the SDPA calls made inside it."""
    return Call(site, site.implementation, None, False)


def _multihead_site(module: nn.Module, path: str, axis: str | None) -> Site:
    heads = module.num_heads
    return Site(path, "MultiheadAttention", "torch.nn", "nn.MultiheadAttention", axis, heads, heads,
                module.head_dim, None, _read_multihead)


def _context_site(module: nn.Module, path: str, axis: str | None) -> Site:
    name = type(module).__name__
    return Site(path, name, "module", name, axis, None, None, None, None, _read_context_only)


def _read_nothing(site: Site, module: nn.Module, args: tuple, kwargs: dict) -> Call:
    raise RuntimeError("the bare SDPA site is never hooked on a module")


FUNCTIONAL = Site(None, None, "functional", "F.scaled_dot_product_attention", None, None, None, None, None,
                  _read_nothing)


def _from_library(module: nn.Module, library: str, names: tuple[str, ...]) -> bool:
    return any(c.__module__.startswith(library) and c.__name__ in names for c in type(module).__mro__)


@dataclass(frozen=True)
class SiteRule:
    """A workload's own attention modules: which (`matches(module, path)`), and how to read their
    calls (`site(module, path, axis)` -> a Site whose `read` gives each call's lengths and kind).

    Workloads pass these in `Built.attention_sites` for modules no library rule knows (temporal
    attention with its own layout, clustered heads, triangle attention over a pair
    representation); they are tried before the library rules below.
    """

    matches: Callable[[nn.Module, str], bool]
    site: Callable[[nn.Module, str, str | None], Site]


def site_builder(module: nn.Module, path: str = "", rules: tuple[SiteRule, ...] = ()) -> Callable[[nn.Module, str, str | None], Site] | None:
    """How to build the module's Site, or None when it is not an attention module.

    Matching reads class names and modules, so neither diffusers nor transformers is imported.
    """
    for rule in rules:
        if rule.matches(module, path):
            return rule.site
    if _from_library(module, "diffusers.", ("Attention", "AttentionModuleMixin")) and hasattr(module, "heads"):
        return _diffusers_site
    if isinstance(module, nn.MultiheadAttention):
        return _multihead_site
    name = type(module).__name__
    if not name.endswith("Attention"):
        return None
    if type(module).__module__.startswith("transformers."):
        return _transformers_site
    return _context_site
