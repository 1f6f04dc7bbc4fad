"""llm-decode: Llama-style greedy decoding with a KV cache (studies.md section 2).

A randomly initialised LlamaForCausalLM decodes a fixed number of new tokens after a random
prompt, with an explicit loop (no generate()) so prefill and decode are timed apart:
prefill = one forward over the prompt, producing the first new token; decode = one forward
per remaining token, reading the KV cache. Greedy, and EOS never stops the loop.

Baseline: eager attention, dynamic KV cache. The optimization ladder of studies.md section 2,
each rung one technique stacked on the rung before:
    eager -> sdpa (fused attention) -> static-cache (preallocated) -> compile (torch.compile)
          -> int8-weights (weight-only int8) -> cuda-graphs (GPU only: compile's reduce-overhead)
and one ablation beside it: `no-kv-cache` recomputes the whole prefix for every token (what
the cache buys).

Parameters: prompt_len and new_tokens. One iteration = prefill (part "prefill": one forward over
the prompt, producing the first new token) + decode (part "decode": one forward per remaining
token, reading the KV cache).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from workloads.base import Built, Params, RunSpec, Workload, register
from workloads.common import compile_forward, param_stats, place, quantize_int8_weights, seed_everything, synchronize, tensor_bytes


@dataclass(frozen=True)
class LlamaDims:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    max_positions: int


@dataclass(frozen=True)
class DecodeParams(Params):
    prompt_len: int
    new_tokens: int

    def check(self) -> None:
        if self.prompt_len < 1:
            raise ValueError(f"--param prompt_len must be at least 1, got {self.prompt_len}")
        if self.new_tokens < 2:
            raise ValueError(f"--param new_tokens must be at least 2 (a prefill token and a decoded one), got {self.new_tokens}")


DIMS = {
    "tiny": LlamaDims(hidden=128, layers=2, heads=4, kv_heads=4, intermediate=256, vocab=1000, max_positions=512),
    # Llama-2-7B
    "paper": LlamaDims(hidden=4096, layers=32, heads=32, kv_heads=32, intermediate=11008, vocab=32000, max_positions=4096),
}
PARAMS = {"tiny": DecodeParams(prompt_len=32, new_tokens=16), "paper": DecodeParams(prompt_len=512, new_tokens=128)}


def llama_config(p: LlamaDims):
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
    return tensor_bytes(t for layer in cache.layers for t in (layer.keys, layer.values) if t is not None)


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
        if self.cache is not None:
            rewind(self.cache, 0)
        self.first = self.next_token(self.prompt)
        return self.first

    @torch.inference_mode()
    def decode(self) -> torch.Tensor:
        """The new_tokens - 1 tokens after the first, from the state the prefill left."""
        tokens = [self.first]
        for _ in range(self.new_tokens - 1):
            ids = tokens[-1] if self.cache is not None else torch.cat([self.prompt, *tokens], dim=1)
            tokens.append(self.next_token(ids))
        return torch.cat(tokens, dim=1)

    def generate(self, part) -> torch.Tensor:
        """(batch, new_tokens) greedy tokens; prefill and decode marked as parts."""
        with part("prefill"):
            self.prefill()
        with part("decode"):
            return self.decode()


def build_decoder(dims: LlamaDims, spec: RunSpec) -> Decoder:
    """The baseline: eager attention, dynamic KV cache."""
    from transformers import DynamicCache, LlamaForCausalLM

    config = llama_config(dims)
    model = place(LlamaForCausalLM(config), spec.torch_device, spec.torch_dtype)
    generator = torch.Generator().manual_seed(spec.seed)
    prompt = torch.randint(0, dims.vocab, (spec.batch, spec.params.prompt_len), generator=generator).to(spec.torch_device)
    return Decoder(model=model, prompt=prompt, new_tokens=spec.params.new_tokens, cache=DynamicCache(config=config))


# --- variants: each applies one technique --------------------------------------------------

def use_sdpa(decoder: Decoder) -> Decoder:
    """Fused attention: torch's scaled_dot_product_attention instead of matmul-softmax-matmul."""
    decoder.model.set_attn_implementation("sdpa")
    return decoder


def use_static_cache(decoder: Decoder) -> Decoder:
    """A preallocated KV cache: every decode step has the same shapes (what compile and CUDA graphs need)."""
    from transformers import StaticCache

    config, (batch, prompt_len) = decoder.model.config, decoder.prompt.shape
    cache = StaticCache(config=config, max_cache_len=prompt_len + decoder.new_tokens)
    # allocated now, not lazily in the first forward: a lazily allocated cache changes what the
    # second prefill sees (an initialized cache) and makes torch.compile compile the prompt twice
    cache.early_initialization(batch_size=batch, num_heads=config.num_key_value_heads,
                               head_dim=config.hidden_size // config.num_attention_heads,
                               dtype=decoder.model.dtype, device=decoder.prompt.device)
    return replace(decoder, cache=cache)


def compile_model(decoder: Decoder) -> Decoder:
    """torch.compile the forward: one graph for the prompt, one for a single token."""
    compile_forward(decoder.model)
    return decoder


def int8_weights(decoder: Decoder) -> Decoder:
    """Weight-only int8: every linear layer's weight stored as int8 with a per-channel scale
    (gpt-fast's WeightOnlyInt8Linear), dequantized inside the (compiled) matmul."""
    quantize_int8_weights(decoder.model)
    return decoder


def cuda_graphs(decoder: Decoder) -> Decoder:
    """CUDA graphs: compile's reduce-overhead mode records each shape's kernels once and replays them."""
    decoder.model.forward = torch.compile(decoder.model.forward, mode="reduce-overhead", fullgraph=True, dynamic=False)
    return decoder


def drop_kv_cache(decoder: Decoder) -> Decoder:
    """No KV cache: every new token runs the model over the whole prefix again."""
    return replace(decoder, cache=None)


LADDER = (use_sdpa, use_static_cache, compile_model, int8_weights)
VARIANTS = {
    "eager": (),
    "sdpa": LADDER[:1],
    "static-cache": LADDER[:2],
    "compile": LADDER[:3],
    "int8-weights": LADDER[:4],
    "cuda-graphs": (use_sdpa, use_static_cache, int8_weights, cuda_graphs),
    "no-kv-cache": (drop_kv_cache,),
}


def build(spec: RunSpec) -> Built:
    dims, params = DIMS[spec.preset], spec.params
    if params.prompt_len + params.new_tokens > dims.max_positions:
        raise ValueError(f"--param new_tokens={params.new_tokens}: prompt ({params.prompt_len}) + new tokens exceeds the "
                         f"{spec.preset} preset's {dims.max_positions} positions")
    seed_everything(spec.seed)
    decoder = build_decoder(dims, spec)
    for technique in VARIANTS[spec.variant]:
        decoder = technique(decoder)
    info = {
        **param_stats(decoder.model),
        "kv_cache": type(decoder.cache).__name__ if decoder.cache is not None else "none",
        "layers": dims.layers,
        "heads": dims.heads,
        "kv_heads": dims.kv_heads,
        "head_dim": dims.hidden // dims.heads,
        "hidden": dims.hidden,
        "vocab": dims.vocab,
        "attn_implementation": decoder.model.config._attn_implementation,
    }

    def iteration(part):
        tokens = decoder.generate(part)
        info["kv_cache_bytes"] = kv_cache_bytes(decoder.cache)  # the cache at its largest, measured from the object
        synchronize(spec.torch_device)
        return tokens

    return Built(
        iteration=iteration,
        items=spec.batch * params.new_tokens,  # generated tokens
        item_unit="tokens",
        model=decoder.model,  # one forward per generated token
        # prefill counts prompt tokens (time per token = per prompt token); decode, the tokens it generates
        part_items={"prefill": spec.batch * params.prompt_len, "decode": spec.batch * (params.new_tokens - 1)},
        info=info,
    )


WORKLOAD = register(Workload(
    name="llm-decode",
    study="2",
    description="Llama-style greedy decoding with a KV cache; prefill and decode timed apart; the optimization ladder",
    kind="inference",
    presets=PARAMS,
    variants=tuple(VARIANTS),
    build=build,
    gpu_variants=("cuda-graphs",),
))
