"""How to read one attention call from each library's module inputs.

Each adapter turns a module's forward inputs into a `Frame`: what the call is (module path,
implementation, kind) and the shapes the module inputs imply. Adapters only read `.shape`
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


@dataclass
class Frame:
    """One attention module call in flight; mutable runtime state, not a config."""

    family: str  # "diffusers" | "transformers" | "torch.nn" | "module" | "functional"
    module_path: str | None
    module_class: str | None
    implementation: str
    kind: str | None  # fixed kind; None: decided from q/kv lengths
    cached: bool  # a KV cache was passed: kind is prefill/decode
    axis: str | None
    batch: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    q_len: int | None = None  # None: the module inputs do not tell (context-only frame)
    kv_len: int | None = None
    covered: bool = False  # a row was recorded inside this call


@dataclass(frozen=True)
class Site:
    """What is known about a hooked module before it is called."""

    path: str
    axis: str | None
    describe: Callable[["Site", nn.Module, tuple, dict], Frame]


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


def _batch_tokens(hidden_states: Any) -> tuple[int | None, int | None]:
    """(B, L, C) -> (B, L); (B, C, H, W) -> (B, H*W); anything else -> (None, None)."""
    shape = getattr(hidden_states, "shape", None)
    if shape is None:
        return None, None
    if len(shape) == 3:
        return shape[0], shape[1]
    if len(shape) == 4:
        return shape[0], shape[2] * shape[3]
    return None, None


def _diffusers(site: Site, module: nn.Module, args: tuple, kwargs: dict) -> Frame:
    batch, q_len = _batch_tokens(_arg(args, kwargs, "hidden_states", 0))
    encoder = _arg(args, kwargs, "encoder_hidden_states", 1)
    heads = module.heads
    head_dim = getattr(module, "head_dim", None) or getattr(module, "inner_dim", 0) // heads or None
    if encoder is None:
        kind, kv_len = "self", q_len
    elif getattr(module, "added_kv_proj_dim", None) is not None:
        kind = "joint"
        q_len = kv_len = None if q_len is None else q_len + encoder.shape[-2]
    else:
        kind, kv_len = "cross", encoder.shape[-2]
    return Frame("diffusers", site.path, type(module).__name__, type(module.processor).__name__, kind, False,
                 site.axis, batch, heads, heads, head_dim, q_len, kv_len)


def _kv_length(cache: Any, layer_idx: int | None, q_len: int) -> int | None:
    """Key length the kernel will see, from the cache's Python-side bookkeeping (no tensor read)."""
    cache = getattr(cache, "self_attention_cache", cache)  # EncoderDecoderCache
    if layer_idx is None or not hasattr(cache, "get_mask_sizes"):
        return None
    kv_len, _offset = cache.get_mask_sizes(q_len, layer_idx)
    return kv_len if isinstance(kv_len, int) else None


def _transformers(site: Site, module: nn.Module, args: tuple, kwargs: dict) -> Frame:
    hidden = _arg(args, kwargs, "hidden_states", 0)
    batch, q_len = (hidden.shape[0], hidden.shape[-2]) if hidden is not None else (None, None)
    source = kwargs.get("key_value_states")
    if source is None:
        source = kwargs.get("encoder_hidden_states")
    cache = kwargs.get("past_key_values", kwargs.get("past_key_value"))
    config = getattr(module, "config", None)
    heads = getattr(config, "num_attention_heads", None) or getattr(module, "num_heads", None)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = _first_int(module, ("head_dim", "attention_head_size")) or _first_int(config, ("head_dim",))
    if head_dim is None and heads:
        head_dim = getattr(config, "hidden_size", 0) // heads or None
    impl = getattr(config, "_attn_implementation", None) or type(module).__name__
    kind, cached, kv_len = None, False, q_len
    if source is not None:
        kind, kv_len = "cross", source.shape[-2]
    elif cache is not None and q_len is not None:
        cached, kv_len = True, _kv_length(cache, getattr(module, "layer_idx", None), q_len)
    else:
        kind = "self"
    return Frame("transformers", site.path, type(module).__name__, impl, kind, cached, site.axis,
                 batch, heads, kv_heads, head_dim, q_len, kv_len)


def _multihead(site: Site, module: nn.Module, args: tuple, kwargs: dict) -> Frame:
    query, key = _arg(args, kwargs, "query", 0), _arg(args, kwargs, "key", 1)
    if len(query.shape) == 2:  # unbatched (L, E)
        batch, q_len, kv_len = 1, query.shape[0], key.shape[0]
    elif module.batch_first:
        batch, q_len, kv_len = query.shape[0], query.shape[1], key.shape[1]
    else:
        batch, q_len, kv_len = query.shape[1], query.shape[0], key.shape[0]
    kind = "self" if key is query else "cross"
    return Frame("torch.nn", site.path, "MultiheadAttention", "nn.MultiheadAttention", kind, False, site.axis,
                 batch, module.num_heads, module.num_heads, module.head_dim, q_len, kv_len)


def _context_only(site: Site, module: nn.Module, args: tuple, kwargs: dict) -> Frame:
    """An attention module we cannot read: it names the SDPA calls made inside it."""
    name = type(module).__name__
    return Frame("module", site.path, name, name, None, False, site.axis)


def _from_library(module: nn.Module, library: str, names: tuple[str, ...]) -> bool:
    return any(c.__module__.startswith(library) and c.__name__ in names for c in type(module).__mro__)


def adapter_for(module: nn.Module) -> Callable[[Site, nn.Module, tuple, dict], Frame] | None:
    """The adapter for a module, or None when it is not an attention module.

    Matching reads class names and modules, so neither diffusers nor transformers is imported.
    """
    if _from_library(module, "diffusers.", ("Attention", "AttentionModuleMixin")) and hasattr(module, "heads"):
        return _diffusers
    if isinstance(module, nn.MultiheadAttention):
        return _multihead
    name = type(module).__name__
    if not name.endswith("Attention"):
        return None
    if type(module).__module__.startswith("transformers."):
        return _transformers
    return _context_only
