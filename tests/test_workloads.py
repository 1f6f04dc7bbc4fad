"""What is particular to each of the first two workloads (the contract every workload keeps is in
test_contract.py): KV-cache bytes and identical greedy tokens along the llm-decode ladder, the
diffusion variants' images, options, and the paper presets' published dimensions.

Compile variants are marked slow: a cold inductor cache costs about a minute on a 2-core CPU.
"""
from __future__ import annotations

import pytest
import torch

from profilers.parts import untimed_part
from workloads import diffusion_t2i, llm_decode
from workloads.base import RunOptions, UnknownWorkload, get

LADDER = ["eager", "sdpa", "static-cache", pytest.param("compile", marks=pytest.mark.slow),
          pytest.param("int8-weights", marks=pytest.mark.slow), "no-kv-cache"]
_RUNS: dict[tuple, tuple] = {}


def run(name: str, variant: str, **params):
    """Build and run one iteration, once per (workload, variant, params) for the whole module."""
    key = (name, variant, tuple(sorted(params.items())))
    if key not in _RUNS:
        workload = get(name)
        built = workload.build(workload.resolve(RunOptions(variant=variant, params=params)))
        _RUNS[key] = (built, built.iteration(untimed_part))
    return _RUNS[key]


def count_forwards(module: torch.nn.Module, iteration) -> list[int]:
    """Batch size of the first input of every forward of `module` during `iteration()`."""
    batches = []
    handle = module.register_forward_pre_hook(
        lambda _m, args, kwargs: batches.append((args[0] if args else next(iter(kwargs.values()))).shape[0]),
        with_kwargs=True,
    )
    try:
        iteration()
    finally:
        handle.remove()
    return batches


# --- llm-decode ---------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", LADDER)
def test_llm_ladder_kv_cache_bytes_and_identical_greedy_tokens(variant):
    built, tokens = run("llm-decode", variant)
    d, p = llm_decode.DIMS["tiny"], llm_decode.PARAMS["tiny"]
    assert tokens.shape == (1, p.new_tokens) and tokens.dtype == torch.long
    if variant == "no-kv-cache":
        assert built.info["kv_cache_bytes"] == 0
    else:  # dynamic: prompt + new - 1 positions held; static: all prompt + new preallocated
        positions = p.prompt_len + p.new_tokens - (1 if variant in ("eager", "sdpa") else 0)
        assert built.info["kv_cache_bytes"] == 2 * d.layers * d.kv_heads * positions * (d.hidden // d.heads) * 4
    assert torch.equal(built.iteration(untimed_part), tokens), "a second iteration rewinds the cache"
    if variant != "int8-weights":  # weight-only int8 changes the logits a little, and may change a greedy token
        assert torch.equal(tokens, run("llm-decode", "eager")[1])
    assert count_forwards(built.model, lambda: built.iteration(untimed_part)) == [1] * p.new_tokens


def test_llm_eager_and_sdpa_logits_close():
    eager, sdpa = run("llm-decode", "eager")[0], run("llm-decode", "sdpa")[0]
    prompt = torch.randint(0, 1000, (1, 32), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a, b = (built.model(input_ids=prompt, use_cache=False).logits for built in (eager, sdpa))
    assert eager.info["attn_implementation"] == "eager" and sdpa.info["attn_implementation"] == "sdpa"
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_llm_loop_matches_transformers_generate():
    built, tokens = run("llm-decode", "eager")
    spec = get("llm-decode").resolve(RunOptions())
    prompt = llm_decode.build_decoder(llm_decode.DIMS["tiny"], spec).prompt
    p = spec.params
    with torch.inference_mode():
        reference = built.model.generate(prompt, max_new_tokens=p.new_tokens, min_new_tokens=p.new_tokens, do_sample=False)
    assert torch.equal(reference[:, p.prompt_len:], tokens)


def test_static_cache_is_allocated_at_build():
    """Allocated lazily, the cache would be empty in the first prefill and full in the next:
    two different inputs to torch.compile, so the compile rung would compile the prompt twice."""
    spec = get("llm-decode").resolve(RunOptions(variant="static-cache"))
    decoder = llm_decode.use_static_cache(llm_decode.build_decoder(llm_decode.DIMS["tiny"], spec))
    assert all(layer.is_initialized for layer in decoder.cache.layers)
    assert llm_decode.kv_cache_bytes(decoder.cache) == run("llm-decode", "static-cache")[0].info["kv_cache_bytes"]


@pytest.mark.slow
def test_compiled_rungs_compile_once():
    from torch._dynamo.utils import counters

    for variant in ("compile", "int8-weights"):
        built, _ = run("llm-decode", variant)  # the first iteration compiled the prompt and the token graphs
        graphs = counters["stats"]["unique_graphs"]
        built.iteration(untimed_part)
        assert counters["stats"]["unique_graphs"] == graphs, f"{variant}: the second iteration compiled again"


def test_int8_weights_store_a_quarter_of_the_linear_bytes():
    from workloads.common import WeightOnlyInt8Linear

    linear = torch.nn.Linear(64, 32)
    quantized = WeightOnlyInt8Linear(linear)
    assert quantized.weight.dtype == torch.int8 and quantized.weight.numel() * 1 == linear.weight.numel() * linear.weight.element_size() // 4
    x = torch.randn(5, 64)
    torch.testing.assert_close(quantized(x), linear(x), atol=0.02, rtol=0.05)


def test_llm_parameters_and_options():
    built, tokens = run("llm-decode", "sdpa", new_tokens=3)
    assert tokens.shape == (1, 3) and built.items == 3 and built.part_items == {"prefill": 32, "decode": 2}
    workload = get("llm-decode")
    b = workload.build(workload.resolve(RunOptions(variant="sdpa", batch=2, dtype="bfloat16", params={"new_tokens": "3"})))
    assert b.iteration(untimed_part).shape == (2, 3) and next(b.model.parameters()).dtype == torch.bfloat16
    assert b.part_items == {"prefill": 64, "decode": 4}
    with pytest.raises(ValueError, match="--param new_tokens=1000"):
        workload.build(workload.resolve(RunOptions(params={"new_tokens": 1000})))
    with pytest.raises(ValueError, match="--param new_tokens must be at least 2"):
        workload.resolve(RunOptions(params={"new_tokens": 1}))


# --- diffusion-t2i ------------------------------------------------------------------------------
def test_diffusion_image_and_one_unet_forward_per_denoising_step():
    built, image = run("diffusion-t2i", "eager")
    p = diffusion_t2i.PARAMS["tiny"]
    assert image.shape == (1, 3, p.image_size, p.image_size) and torch.isfinite(image).all()
    assert image.min() >= 0 and image.max() <= 1 and (built.items, built.item_unit) == (1, "images")
    assert count_forwards(built.model, lambda: built.iteration(untimed_part)) == [2] * p.denoising_steps  # classifier-free guidance


@pytest.mark.parametrize("variant", ["sdpa", pytest.param("sdpa-compile", marks=pytest.mark.slow)])
def test_diffusion_variants_match_eager(variant):
    (eager, reference), (built, image) = run("diffusion-t2i", "eager"), run("diffusion-t2i", variant)
    assert (eager.info["attn_processor"], built.info["attn_processor"]) == ("AttnProcessor", "AttnProcessor2_0")
    torch.testing.assert_close(image, reference, atol=1e-4, rtol=0)


def test_diffusion_parameters():
    built, image = run("diffusion-t2i", "sdpa", denoising_steps=1, image_size=32)
    assert image.shape == (1, 3, 32, 32) and count_forwards(built.model, lambda: built.iteration(untimed_part)) == [2]
    with pytest.raises(ValueError, match="--param image_size must be a multiple of 8"):
        get("diffusion-t2i").resolve(RunOptions(params={"image_size": 30}))


# --- options ------------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_without_a_device_is_refused_and_gpu_rungs_need_one():
    with pytest.raises(ValueError, match="--device cuda: no CUDA device on this machine"):
        get("llm-decode").resolve(RunOptions(device="cuda"))
    with pytest.raises(ValueError, match="variant 'cuda-graphs' needs a CUDA device"):
        get("llm-decode").resolve(RunOptions(variant="cuda-graphs"))


def test_unknown_workload_suggests_close_names():
    with pytest.raises(UnknownWorkload, match="did you mean llm-decode"):
        get("llm-decod")


# --- paper presets: configs only, no weights ----------------------------------------------------
def test_llm_paper_preset_is_llama2_7b():
    d, p = llm_decode.DIMS["paper"], llm_decode.PARAMS["paper"]
    c = llm_decode.llama_config(d)
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size, c.vocab_size) == (
        4096, 32, 32, 11008, 32000)
    assert c.num_key_value_heads == 32 and c.hidden_size // c.num_attention_heads == 128
    assert (p.prompt_len, p.new_tokens) == (512, 128)


def test_diffusion_paper_preset_is_sd15():
    d, p = diffusion_t2i.PRESETS["paper"], diffusion_t2i.PARAMS["paper"]
    assert (p.image_size, p.denoising_steps, p.guidance_scale) == (512, 50, 7.5)
    unet = diffusion_t2i.unet_config(d, p.image_size)
    assert unet["block_out_channels"] == (320, 640, 1280, 1280) and unet["cross_attention_dim"] == 768
    assert unet["sample_size"] == 64 and unet["layers_per_block"] == 2 and unet["attention_head_dim"] == 8
    assert unet["down_block_types"] == ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    text = diffusion_t2i.text_config(d)  # CLIP ViT-L/14 text tower
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.intermediate_size) == (
        768, 12, 12, 3072)
    assert (text.vocab_size, text.max_position_embeddings) == (49408, 77)
    assert diffusion_t2i.vae_config(d, p.image_size)["block_out_channels"] == (128, 256, 512, 512)
