"""sd-adapters: the adapters do something, each variant keeps (or knowingly changes) the
baseline's output, and each technique works by the mechanism it claims."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from profilers.parts import untimed_part
from profilers.timing import make_clock, time_repeats
from workloads.base import RunOptions
from workloads.controlnet_parallel import controlnet_residuals
from workloads.sd_adapters import (
    LORA_TARGETS, VARIANTS, WORKLOAD, apply_loras, build_server, read_loras, remove_loras, serve,
)


def lora_layers(unet) -> list:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]


@pytest.fixture(scope="module")
def server():
    """The tiny baseline server (1 ControlNet, 1 LoRA), with the baseline's final latents."""
    s = build_server(WORKLOAD.resolve(RunOptions()))
    serve(s, untimed_part)
    return s


@pytest.fixture(scope="module")
def step_inputs(server):
    torch.manual_seed(1)
    p, config = server.spec.params, server.pipe.unet.config
    size = p.image_size // server.pipe.vae_scale_factor
    return (torch.randn(2, config.in_channels, size, size), torch.tensor(500),
            torch.randn(2, server.pipe.tokenizer.model_max_length, config.cross_attention_dim))


def unet_out(server, inputs):
    latents, t, embeddings = inputs
    with torch.inference_mode():
        return server.pipe.unet(latents, t, encoder_hidden_states=embeddings, return_dict=False)[0]


def test_controlnet_residuals_are_not_zero_and_follow_the_control_image(server, step_inputs):
    with torch.inference_mode():
        down, mid = controlnet_residuals(server.controlnets, server.control_images, *step_inputs)
        other, _ = controlnet_residuals(server.controlnets, [1 - i for i in server.control_images], *step_inputs)
    assert all(r.abs().max() > 0 for r in (*down, mid)), "from_unet's zero convs were given weights"
    assert not torch.allclose(down[0], other[0]), "the control image changes the residuals"


def test_lora_files_change_the_unet_and_leave_it_plain(server, step_inputs):
    plain = unet_out(server, step_inputs)
    loras = read_loras(server.lora_files, torch.device("cpu"))
    state, config = loras[0]
    assert config["r"] == server.spec.params.lora_rank and not config["init_lora_weights"]
    assert {t for t in LORA_TARGETS if any(f".{t}.lora_B" in k for k in state)} == set(LORA_TARGETS)
    assert all(v.abs().max() > 0 for k, v in state.items() if "lora_B" in k), "up-projections are not zero"
    apply_loras(server, loras, untimed_part)
    patched = unet_out(server, step_inputs)
    merged = replace(server, merge=True)
    with torch.inference_mode():
        server.pipe.unet.fuse_lora()
    fused = unet_out(server, step_inputs)
    remove_loras(merged, untimed_part)
    assert not torch.allclose(patched, plain, atol=1e-3), "the LoRA changes the UNet's output"
    assert torch.allclose(fused, patched, rtol=1e-4, atol=1e-5), "merged weights compute what the LoRA layers do"
    assert not lora_layers(server.pipe.unet)
    assert torch.allclose(unet_out(server, step_inputs), plain, atol=1e-5), "unmerged and unloaded: the plain UNet again"


@pytest.fixture(scope="module")
def variant_runs():
    """Each variant built (its reference: a baseline request) and timed for one request."""
    runs = {}
    for variant in VARIANTS:
        built = WORKLOAD.build(WORKLOAD.resolve(RunOptions(variant=variant)))
        rows = time_repeats(built, 1, make_clock("cpu"))
        runs[variant] = built, {(r["phase"], r["role"]) for r in rows}, {r["metric"]: r["value"] for r in built.numerics()}
    return runs


@pytest.mark.parametrize("variant,parts", [
    ("diffusers-baseline", {("adapter_load", "part"), ("lora_patch", "part"), ("controlnet", "part"), ("lora_unload", "part")}),
    ("fused-lora", {("adapter_load", "part"), ("lora_merge", "part"), ("lora_unmerge", "part")}),
    ("async-lora", {("adapter_load", "background"), ("adapter_wait", "part"), ("lora_merge", "part")}),
    ("parallel-controlnet", {("controlnet", "background"), ("adapter_load", "part")}),
])
def test_each_variant_marks_its_parts(variant_runs, variant, parts):
    built, phases, _ = variant_runs[variant]
    assert parts <= phases, parts - phases
    assert built.info["request_cpu_us"] >= built.info["unet_forward_cpu_us"] > 0
    if variant == "parallel-controlnet":
        assert ("controlnet", "part") not in phases, "the ControlNet is off the request's path"


def test_what_each_variant_costs_in_output(variant_runs):
    relative = {v: n["max_abs_diff"] / n["reference_max_abs"] for v, (_, _, n) in variant_runs.items()}
    assert relative["diffusers-baseline"] == 0, "requests repeat exactly"
    assert relative["fused-lora"] < 1e-4 and relative["parallel-controlnet"] < 1e-4, relative
    assert variant_runs["async-lora"][2]["cosine_similarity"] < 0.9999, "a step without the LoRA moves the output"


def test_async_lora_applies_the_merged_lora_after_k_steps(server):
    s = server
    for technique in VARIANTS["async-lora"]:
        s = technique(s)
    seen = []
    hook = s.pipe.unet.register_forward_pre_hook(lambda unet, _: seen.append([m.merged for m in lora_layers(unet)]))
    try:
        serve(s, untimed_part)
    finally:
        hook.remove()
    k = s.spec.params.async_steps
    assert len(seen) == s.spec.params.denoising_steps
    assert all(not layers for layers in seen[:k]) and all(layers and all(layers) for layers in seen[k:])
    assert not lora_layers(s.pipe.unet), "the request ends on the plain UNet"


def test_parallel_controlnet_runs_in_another_process(variant_runs):
    built, _, _ = variant_runs["parallel-controlnet"]
    controlnets = built.recorded_modules["controlnets"]
    calls = []
    hook = controlnets.register_forward_hook(lambda *_: calls.append(1))
    try:
        built.iteration(untimed_part)
    finally:
        hook.remove()
    assert not calls, "no ControlNet forward in the serving process"
    assert built.info["controlnet_wait_us"] >= 0


def test_parameters_are_checked_by_name():
    for params, knob in (({"controlnets": "4"}, "controlnets"), ({"loras": "3"}, "loras"), ({"lora_rank": "0"}, "lora_rank"),
                         ({"async_steps": "2", "denoising_steps": "2"}, "async_steps")):
        with pytest.raises(ValueError, match=f"--param {knob}"):
            WORKLOAD.params("tiny", params)


def test_paper_preset_is_sd15_with_its_controlnet_and_a_rank_128_lora():
    from diffusers import ControlNetModel, UNet2DConditionModel
    from peft import LoraConfig

    from workloads.diffusion_t2i import PRESETS, unet_config

    p = WORKLOAD.presets["paper"]
    assert (p.image_size, p.denoising_steps, p.controlnets, p.loras, p.lora_rank) == (512, 50, 1, 1, 128)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_config(PRESETS["paper"], p.image_size))
        controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 96, 256), load_weights_from_unet=False)
        unet.add_adapter(LoraConfig(r=p.lora_rank, lora_alpha=p.lora_rank, target_modules=list(LORA_TARGETS)))
    lora = sum(t.numel() for name, t in unet.named_parameters() if "lora_" in name)
    assert round(sum(t.numel() for t in controlnet.parameters()) / 1e6) == 361  # SD 1.5 ControlNet
    assert round((sum(t.numel() for t in unet.parameters()) - lora) / 1e6) == 860  # SD 1.5 UNet
    assert 200 < lora * 4 / 2**20 < 210, "hundreds of MiB in float32"
