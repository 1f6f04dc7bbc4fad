"""llm-decode: Llama-style greedy decoding with a KV cache (studies.md section 2).

A randomly initialised LlamaForCausalLM decodes a fixed number of new tokens after a random
prompt, with an explicit loop (no generate()) so prefill and decode are timed apart:
prefill = one forward over the prompt, producing the first new token; decode = one forward
per remaining token, reading the KV cache. Greedy, and EOS never stops the loop.

Baseline: eager attention, dynamic KV cache. Variants stack one technique each: `sdpa` fuses
attention, `no-kv-cache` recomputes the whole prefix for every token (what the cache buys),
`sdpa-compile` compiles the forward over a static (preallocated) cache.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch.profiler import record_function

from workloads.base import Built, RunOptions, Workload, register
from workloads.common import compile_forward, param_stats, place, resolve_device, seed_everything, synchronize


@dataclass(frozen=True)
class LlamaPreset:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    prompt_len: int
    new_tokens: int
    max_positions: int


PRESETS = {
    "tiny": LlamaPreset(hidden=128, layers=2, heads=4, kv_heads=4, intermediate=256, vocab=1000,
                        prompt_len=32, new_tokens=16, max_positions=512),
    # Llama-2-7B; prompt 512, 128 new tokens.
    "paper": LlamaPreset(hidden=4096, layers=32, heads=32, kv_heads=32, intermediate=11008, vocab=32000,
                         prompt_len=512, new_tokens=128, max_positions=4096),
}


def llama_config(p: LlamaPreset):
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=p.hidden, num_hidden_layers=p.layers, num_attention_heads=p.heads,
        num_key_value_heads=p.kv_heads, intermediate_size=p.intermediate, vocab_size=p.vocab,
        max_position_embeddings=p.max_positions, attn_implementation="eager",
    )


def rewind(cache, length: int) -> None:
    """Forget every cached position from `length` on (a dynamic cache drops them; a static
    cache only moves its write position: later slots are overwritten before they are read)."""
    from transformers.cache_utils import StaticLayer

    for layer in cache.layers:
        if isinstance(layer, StaticLayer):
            layer.cumulative_length.fill_(length)
        elif length == 0:
            layer.reset()
        else:
            layer.crop(length - layer.get_seq_length())


def kv_cache_bytes(cache) -> int:
    """Bytes of key/value storage the cache object really holds (0 without a cache)."""
    if cache is None:
        return 0
    tensors = [t for layer in cache.layers for t in (layer.keys, layer.values) if t is not None]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


@dataclass
class Decoder:
    """Greedy decoding as prefill + decode; `cache` None = recompute the prefix every token."""

    model: torch.nn.Module
    prompt: torch.Tensor  # (batch, prompt_len) token ids
    new_tokens: int
    cache: object | None
    first: torch.Tensor | None = None  # the token the last prefill produced

    def next_token(self, ids: torch.Tensor) -> torch.Tensor:
        logits = self.model(
            input_ids=ids, past_key_values=self.cache, use_cache=self.cache is not None, logits_to_keep=1,
        ).logits
        return logits[:, -1].argmax(dim=-1, keepdim=True)

    @torch.inference_mode()
    def prefill(self) -> torch.Tensor:
        with record_function("prefill"):
            if self.cache is not None:
                rewind(self.cache, 0)
            self.first = self.next_token(self.prompt)
        return self.first

    @torch.inference_mode()
    def decode(self) -> torch.Tensor:
        """The new_tokens - 1 tokens after the first, from the state the prefill left."""
        if self.first is None:
            self.prefill()
        with record_function("decode"):
            tokens = [self.first]
            if self.cache is not None:
                rewind(self.cache, self.prompt.shape[1])
            for _ in range(self.new_tokens - 1):
                ids = tokens[-1] if self.cache is not None else torch.cat([self.prompt, *tokens], dim=1)
                tokens.append(self.next_token(ids))
        return torch.cat(tokens, dim=1)

    def generate(self) -> torch.Tensor:
        """(batch, new_tokens) greedy tokens."""
        self.prefill()
        return self.decode()


def build_decoder(p: LlamaPreset, options: RunOptions, new_tokens: int, device: torch.device) -> Decoder:
    """The baseline: eager attention, dynamic KV cache."""
    from transformers import DynamicCache, LlamaForCausalLM

    config = llama_config(p)
    model = place(LlamaForCausalLM(config), device, options.torch_dtype)
    generator = torch.Generator().manual_seed(options.seed)
    prompt = torch.randint(0, p.vocab, (options.batch, p.prompt_len), generator=generator).to(device)
    return Decoder(model=model, prompt=prompt, new_tokens=new_tokens, cache=DynamicCache(config=config))


# --- variants: each applies one technique --------------------------------------------------

def use_sdpa(decoder: Decoder) -> Decoder:
    """Fused attention: torch's scaled_dot_product_attention instead of matmul-softmax-matmul."""
    decoder.model.set_attn_implementation("sdpa")
    return decoder


def drop_kv_cache(decoder: Decoder) -> Decoder:
    """No KV cache: every new token runs the model over the whole prefix again."""
    return replace(decoder, cache=None)


def compile_with_static_cache(decoder: Decoder) -> Decoder:
    """torch.compile the forward over a preallocated cache, so every decode step has the
    same shapes (one graph for the prompt, one for a single token; a growing cache would
    recompile)."""
    from transformers import StaticCache

    max_len = decoder.prompt.shape[1] + decoder.new_tokens
    compile_forward(decoder.model)
    return replace(decoder, cache=StaticCache(config=decoder.model.config, max_cache_len=max_len))


VARIANTS = {
    "eager": (),
    "sdpa": (use_sdpa,),
    "no-kv-cache": (drop_kv_cache,),
    "sdpa-compile": (use_sdpa, compile_with_static_cache),
}


def build(options: RunOptions) -> Built:
    options = WORKLOAD.check(options)
    device = resolve_device(options.device)
    p = PRESETS[options.preset]
    new_tokens = options.steps or p.new_tokens
    if p.prompt_len + new_tokens > p.max_positions:
        raise ValueError(f"--steps {new_tokens}: prompt ({p.prompt_len}) + new tokens exceeds the "
                         f"{options.preset} preset's {p.max_positions} positions")
    seed_everything(options.seed)
    decoder = build_decoder(p, options, new_tokens, device)
    for technique in VARIANTS[options.variant]:
        decoder = technique(decoder)
    info = {
        **param_stats(decoder.model),
        # Measured from the cache object after every step (None until the first one ends).
        "kv_cache_bytes": 0 if decoder.cache is None else None,
        "kv_cache": type(decoder.cache).__name__ if decoder.cache is not None else "none",
        "prompt_len": p.prompt_len,
        "new_tokens": new_tokens,
        "layers": p.layers,
        "heads": p.heads,
        "kv_heads": p.kv_heads,
        "head_dim": p.hidden // p.heads,
        "hidden": p.hidden,
        "vocab": p.vocab,
        "attn_implementation": decoder.model.config._attn_implementation,
    }

    def synced(run, records_cache: bool):
        def call():
            out = run()
            if records_cache:  # a full step or decode leaves the cache at its largest
                info["kv_cache_bytes"] = kv_cache_bytes(decoder.cache)
            synchronize(device)
            return out
        return call

    return Built(
        step=synced(decoder.generate, records_cache=True),
        items_per_step=options.batch * new_tokens,  # generated tokens
        item_unit="tokens",
        model=decoder.model,  # one forward per generated token
        phases={"prefill": synced(decoder.prefill, False), "decode": synced(decoder.decode, True)},
        # prefill counts prompt tokens (time per token = per prompt token); decode, new tokens
        phase_items={"prefill": options.batch * p.prompt_len, "decode": options.batch * (new_tokens - 1)},
        info=info,
    )


WORKLOAD = register(Workload(
    name="llm-decode",
    study="2",
    description="Llama-style greedy decoding with a KV cache; prefill and decode timed apart",
    presets=tuple(PRESETS),
    variants=tuple(VARIANTS),
    build=build,
))
