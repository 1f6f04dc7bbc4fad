"""Every workload x variant at preset tiny, plus the paper presets' published dimensions.

Compile variants are marked slow: a cold inductor cache costs about a minute on a 2-core CPU
(a warm one, a few seconds); `-m "not slow"` skips them.
"""
from __future__ import annotations

import pytest
import torch
from torch.profiler import profile

from workloads import diffusion_t2i, llm_decode
from workloads.base import RunOptions, UnknownWorkload, all_workloads, get

CASES = [
    pytest.param(w.name, v, id=f"{w.name}-{v}", marks=[pytest.mark.slow] if "compile" in v else [])
    for w in all_workloads() for v in w.variants
]
_RUNS: dict[tuple, tuple] = {}


def run(name: str, variant: str, **options):
    """Build and run one step, once per (workload, variant, options) for the whole module."""
    key = (name, variant, tuple(sorted(options.items())))
    if key not in _RUNS:
        built = get(name).build(RunOptions(preset="tiny", variant=variant, **options))
        _RUNS[key] = (built, built.step())
    return _RUNS[key]


def count_forwards(module: torch.nn.Module, step) -> list[int]:
    """Batch size of the first input of every forward of `module` during `step()`."""
    batches = []
    handle = module.register_forward_pre_hook(
        lambda _m, args, kwargs: batches.append((args[0] if args else next(iter(kwargs.values()))).shape[0]),
        with_kwargs=True,
    )
    try:
        step()
    finally:
        handle.remove()
    return batches


# --- every workload x variant ----------------------------------------------------------------

@pytest.mark.parametrize("name,variant", CASES)
def test_step_runs(name, variant):
    built, out = run(name, variant)
    assert built.info["param_count"] > 0 and built.info["param_bytes"] >= 4 * built.info["param_count"]
    assert isinstance(built.model, torch.nn.Module)
    if name == "diffusion-t2i":
        size = diffusion_t2i.PRESETS["tiny"].image_size
        assert out.shape == (1, 3, size, size)
        assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
        assert (built.items_per_step, built.item_unit) == (1, "images")
        assert built.info["unet_batch"] == 2
    else:
        p = llm_decode.PRESETS["tiny"]
        assert out.shape == (1, p.new_tokens) and out.dtype == torch.long
        assert 0 <= out.min() and out.max() < p.vocab
        for field in ("kv_cache_bytes", "prompt_len", "new_tokens", "layers", "heads", "head_dim"):
            assert field in built.info, field
        assert (built.items_per_step, built.item_unit) == (p.new_tokens, "tokens")
        assert built.phase_items == {"prefill": p.prompt_len, "decode": p.new_tokens - 1}


@pytest.mark.parametrize("name,variant", [c for c in CASES if c.values[0] == "llm-decode"])
def test_llm_kv_cache_bytes_and_phases(name, variant):
    built, tokens = run(name, variant)
    p = llm_decode.PRESETS["tiny"]
    if variant == "no-kv-cache":
        assert built.info["kv_cache_bytes"] == 0
    else:  # dynamic: prompt + new - 1 positions held; static: all prompt + new preallocated
        positions = p.prompt_len + p.new_tokens - (0 if "compile" in variant else 1)
        assert built.info["kv_cache_bytes"] == 2 * p.layers * p.kv_heads * positions * (p.hidden // p.heads) * 4
    built.phases["prefill"]()
    assert torch.equal(built.phases["decode"](), tokens)
    assert torch.equal(built.phases["decode"](), tokens)  # decode twice: it rewinds the cache
    eager_tokens = run("llm-decode", "eager")[1]
    assert torch.equal(tokens, eager_tokens)  # greedy tokens identical across variants


@pytest.mark.parametrize("name,variant", [c for c in CASES if "compile" not in c.values[1]])
def test_model_forward_once_per_step(name, variant):
    built, _ = run(name, variant)
    batches = count_forwards(built.model, built.step)
    if name == "diffusion-t2i":
        assert batches == [2] * diffusion_t2i.PRESETS["tiny"].steps  # classifier-free guidance
    else:
        assert batches == [1] * llm_decode.PRESETS["tiny"].new_tokens


@pytest.mark.parametrize("name,ranges", [
    ("diffusion-t2i", {"text_encoder", "unet_step", "vae_decode"}),
    ("llm-decode", {"prefill", "decode"}),
])
def test_profiler_ranges(name, ranges):
    built, _ = run(name, "sdpa")
    with profile() as prof:
        built.step()
    assert ranges <= {event.name for event in prof.events()}


# --- numerics ---------------------------------------------------------------------------------

def test_llm_eager_and_sdpa_logits_close():
    eager, sdpa = run("llm-decode", "eager")[0], run("llm-decode", "sdpa")[0]
    prompt = llm_decode.build_decoder(llm_decode.PRESETS["tiny"], RunOptions(), 1, torch.device("cpu")).prompt
    with torch.inference_mode():
        a, b = (built.model(input_ids=prompt, use_cache=False).logits for built in (eager, sdpa))
    assert eager.info["attn_implementation"] == "eager" and sdpa.info["attn_implementation"] == "sdpa"
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_llm_loop_matches_transformers_generate():
    built, tokens = run("llm-decode", "eager")
    p = llm_decode.PRESETS["tiny"]
    prompt = llm_decode.build_decoder(p, RunOptions(), 1, torch.device("cpu")).prompt
    with torch.inference_mode():
        reference = built.model.generate(prompt, max_new_tokens=p.new_tokens, min_new_tokens=p.new_tokens, do_sample=False)
    assert torch.equal(reference[:, p.prompt_len:], tokens)


@pytest.mark.parametrize("variant", ["sdpa", pytest.param("sdpa-compile", marks=pytest.mark.slow)])
def test_diffusion_variants_match_eager(variant):
    (eager, reference), (built, image) = run("diffusion-t2i", "eager"), run("diffusion-t2i", variant)
    assert (eager.info["attn_processor"], built.info["attn_processor"]) == ("AttnProcessor", "AttnProcessor2_0")
    torch.testing.assert_close(image, reference, atol=1e-4, rtol=0)


# --- options ----------------------------------------------------------------------------------

def test_steps_batch_and_dtype_options():
    built, tokens = run("llm-decode", "sdpa", steps=3, batch=2, dtype="bfloat16")
    assert tokens.shape == (2, 3) and built.items_per_step == 6
    assert built.phase_items == {"prefill": 2 * 32, "decode": 2 * 2}
    assert next(built.model.parameters()).dtype == torch.bfloat16
    built, image = run("diffusion-t2i", "sdpa", steps=1, batch=2)
    assert image.shape[0] == 2 and count_forwards(built.model, built.step) == [4]


@pytest.mark.parametrize("name", ["diffusion-t2i", "llm-decode"])
def test_unknown_variant_and_preset_are_named(name):
    with pytest.raises(ValueError, match="unknown variant 'turbo'"):
        get(name).build(RunOptions(variant="turbo"))
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        get(name).build(RunOptions(preset="huge"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
@pytest.mark.parametrize("name", ["diffusion-t2i", "llm-decode"])
def test_cuda_without_a_device_is_refused(name):
    with pytest.raises(ValueError, match="--device cuda: no CUDA device on this machine"):
        get(name).build(RunOptions(device="cuda"))


def test_unknown_workload_suggests_close_names():
    with pytest.raises(UnknownWorkload, match="did you mean llm-decode"):
        get("llm-decod")


# --- paper presets: configs only, no weights --------------------------------------------------

def test_llm_paper_preset_is_llama2_7b():
    p = llm_decode.PRESETS["paper"]
    c = llm_decode.llama_config(p)
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size, c.vocab_size) == (
        4096, 32, 32, 11008, 32000)
    assert c.num_key_value_heads == 32 and c.hidden_size // c.num_attention_heads == 128
    assert (p.prompt_len, p.new_tokens) == (512, 128)


def test_diffusion_paper_preset_is_sd15():
    p = diffusion_t2i.PRESETS["paper"]
    assert (p.image_size, p.steps, p.guidance_scale) == (512, 50, 7.5)
    unet = diffusion_t2i.unet_config(p)
    assert unet["block_out_channels"] == (320, 640, 1280, 1280) and unet["cross_attention_dim"] == 768
    assert unet["sample_size"] == 64 and unet["layers_per_block"] == 2 and unet["attention_head_dim"] == 8
    assert unet["down_block_types"] == ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    text = diffusion_t2i.text_config(p)  # CLIP ViT-L/14 text tower
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.intermediate_size) == (
        768, 12, 12, 3072)
    assert (text.vocab_size, text.max_position_embeddings) == (49408, 77)
    assert diffusion_t2i.vae_config(p)["block_out_channels"] == (128, 256, 512, 512)


def test_llm_steps_beyond_positions_are_refused():
    with pytest.raises(ValueError, match="--steps 1000"):
        get("llm-decode").build(RunOptions(steps=1000))
