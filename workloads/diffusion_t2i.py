"""diffusion-t2i: Stable-Diffusion-style text-to-image (studies.md section 1).

A diffusers StableDiffusionPipeline assembled from local, randomly initialised parts: a
byte-level CLIP tokenizer, a CLIP text encoder, a UNet2DConditionModel, a DDIM scheduler and
an AutoencoderKL decoder. One iteration = one batch of images, as numbered steps with a part
each: 1. text encoding (prompt and empty negative prompt, part "text_encoder"), 2.
`denoising_steps` UNet forwards at batch 2x (classifier-free guidance, part "unet") each
followed by the scheduler's update (part "scheduler"), 3. VAE decode (part "vae").

Baseline: diffusers' plain AttnProcessor (unfused attention) everywhere. Variants stack
techniques on it: `sdpa` fuses attention, `sdpa-compile` also compiles the UNet forward.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import torch

from workloads.base import Built, Params, RunSpec, Workload, register
from workloads.common import byte_level_clip_tokenizer, compile_forward, param_stats, place, seed_everything, synchronize

PROMPT = "an astronaut riding a horse on the moon, detailed oil painting"


@dataclass(frozen=True)
class ImageParams(Params):
    image_size: int  # pixels per side
    denoising_steps: int
    guidance_scale: float = 7.5

    def check(self) -> None:
        if self.denoising_steps < 1:
            raise ValueError(f"--param denoising_steps must be at least 1, got {self.denoising_steps}")
        if self.image_size < 8 or self.image_size % 8:
            raise ValueError(f"--param image_size must be a multiple of 8 (the VAE and UNet downsample), got {self.image_size}")


@dataclass(frozen=True)
class SDPreset:
    """Model dimensions as plain data. `unet_heads` is what diffusers calls
    `attention_head_dim` in SD 1.x configs: it is the number of heads."""

    unet_channels: tuple[int, ...]
    unet_down_blocks: tuple[str, ...]
    unet_up_blocks: tuple[str, ...]
    unet_layers_per_block: int
    unet_heads: int
    cross_attention_dim: int  # = text_hidden
    vae_channels: tuple[int, ...]
    vae_layers_per_block: int
    text_hidden: int
    text_layers: int
    text_heads: int
    text_intermediate: int
    text_vocab: int
    text_max_len: int = 77
    text_activation: str = "quick_gelu"


PRESETS = {
    # Seconds on a 2-core CPU: 64x64 image -> 32x32 latent; attention at 32x32 (1024 tokens)
    # in the first block and 16x16 (256) in the middle block, a 4x change as in SD.
    "tiny": SDPreset(
        unet_channels=(32, 64),
        unet_down_blocks=("CrossAttnDownBlock2D", "DownBlock2D"),
        unet_up_blocks=("UpBlock2D", "CrossAttnUpBlock2D"),
        unet_layers_per_block=1, unet_heads=2, cross_attention_dim=32,
        vae_channels=(32, 64), vae_layers_per_block=1,
        text_hidden=32, text_layers=2, text_heads=4, text_intermediate=64, text_vocab=1000,
    ),
    # Stable Diffusion 1.5: 512x512, UNet 860M, CLIP ViT-L/14 text encoder, 50 DDIM steps.
    "paper": SDPreset(
        unet_channels=(320, 640, 1280, 1280),
        unet_down_blocks=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        unet_up_blocks=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        unet_layers_per_block=2, unet_heads=8, cross_attention_dim=768,
        vae_channels=(128, 256, 512, 512), vae_layers_per_block=2,
        text_hidden=768, text_layers=12, text_heads=12, text_intermediate=3072, text_vocab=49408,
    ),
}


def text_config(p: SDPreset):
    from transformers import CLIPTextConfig

    # Token ids follow the local byte-level tokenizer: 0 start, 1 end and pad.
    return CLIPTextConfig(
        vocab_size=p.text_vocab, hidden_size=p.text_hidden, intermediate_size=p.text_intermediate,
        num_hidden_layers=p.text_layers, num_attention_heads=p.text_heads,
        max_position_embeddings=p.text_max_len, hidden_act=p.text_activation,
        projection_dim=p.text_hidden, bos_token_id=0, eos_token_id=1, pad_token_id=1,
        attn_implementation="eager",
    )


PARAMS = {
    "tiny": ImageParams(image_size=64, denoising_steps=2),
    "paper": ImageParams(image_size=512, denoising_steps=50),  # SD 1.5's 512x512, 50 DDIM steps
}


def unet_config(p: SDPreset, image_size: int) -> dict:
    """UNet2DConditionModel's config; UNet3DConditionModel takes the same."""
    vae_scale = 2 ** (len(p.vae_channels) - 1)
    return dict(
        sample_size=image_size // vae_scale, in_channels=4, out_channels=4,
        block_out_channels=p.unet_channels, down_block_types=p.unet_down_blocks,
        up_block_types=p.unet_up_blocks, layers_per_block=p.unet_layers_per_block,
        attention_head_dim=p.unet_heads, cross_attention_dim=p.cross_attention_dim,
        norm_num_groups=32,
    )


def vae_config(p: SDPreset, image_size: int) -> dict:
    n = len(p.vae_channels)
    return dict(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=p.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=p.vae_layers_per_block, norm_num_groups=32, sample_size=image_size,
        scaling_factor=0.18215,
    )


def scheduler_config() -> dict:
    # SD 1.5's DDIM settings (eta 0: deterministic given the initial latents).
    return dict(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )


def text_encoder_and_vae(p: SDPreset, image_size: int, device: torch.device, dtype: torch.dtype):
    """The random-init CLIP text encoder (eager attention) and VAE (unfused attention) of the
    Stable-Diffusion-style pipelines."""
    from diffusers import AutoencoderKL
    from diffusers.models.attention_processor import AttnProcessor
    from transformers import CLIPTextModel

    text_encoder = place(CLIPTextModel(text_config(p)), device, dtype)
    vae = place(AutoencoderKL(**vae_config(p, image_size)), device, dtype)
    vae.set_attn_processor(AttnProcessor())  # diffusers' default here is already SDPA
    return text_encoder, vae


def build_pipeline(p: SDPreset, image_size: int, device: torch.device, dtype: torch.dtype):
    """The baseline: random-init components, unfused attention everywhere."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor

    text_encoder, vae = text_encoder_and_vae(p, image_size, device, dtype)
    unet = place(UNet2DConditionModel(**unet_config(p, image_size)), device, dtype)
    unet.set_attn_processor(AttnProcessor())
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=byte_level_clip_tokenizer(p.text_max_len),
        unet=unet, scheduler=DDIMScheduler(**scheduler_config()),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --- variants: each applies one technique --------------------------------------------------

def use_sdpa(pipe):
    """Fused attention (torch's scaled_dot_product_attention) in the denoiser (a UNet, or a
    pipeline's transformer), VAE and text encoder."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    for denoiser in (getattr(pipe, "unet", None), getattr(pipe, "transformer", None), pipe.vae):
        if denoiser is not None:
            denoiser.set_attn_processor(AttnProcessor2_0())
    pipe.text_encoder.set_attn_implementation("sdpa")
    return pipe


def compile_unet(pipe):
    """torch.compile the UNet forward (the denoising loop's body; text encoder and VAE stay eager)."""
    compile_forward(pipe.unet)
    return pipe


VARIANTS = {
    "eager": (),
    "sdpa": (use_sdpa,),
    "sdpa-compile": (use_sdpa, compile_unet),
}


# --- one iteration ---------------------------------------------------------------------------

UNetCall = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


def plain_unet(pipe) -> UNetCall:
    """The UNet's noise prediction for (latent input, timestep, text embeddings, step index)."""
    return lambda latents, t, embeddings, index: pipe.unet(latents, t, encoder_hidden_states=embeddings, return_dict=False)[0]


def encode_text(pipe, spec: RunSpec) -> torch.Tensor:
    """Embeddings of the empty negative prompt and the prompt, concatenated in that order for
    classifier-free guidance (a CLIP text encoder: StableDiffusion-style pipelines)."""
    positive, negative = pipe.encode_prompt([PROMPT] * spec.batch, spec.torch_device, 1, True, [""] * spec.batch)
    return torch.cat([negative, positive])


def denoise(pipe, spec: RunSpec, part, shape: tuple[int, ...], embeddings: torch.Tensor, unet_call: UNetCall,
            model_part: str | None = "unet") -> torch.Tensor:
    """Latents of `shape` (image (B, C, h, w) or video (B, C, frames, h, w)) drawn from the run's
    seed, then denoised: per step one model forward at batch 2B (part `model_part`: unconditional
    and conditional halves for classifier-free guidance; None leaves the parts to `unet_call`, e.g.
    a ControlNet before the UNet), then the guidance and the scheduler's update (part "scheduler")."""
    params = spec.params
    generator = torch.Generator(spec.torch_device).manual_seed(spec.seed)  # the same latents every iteration
    latents = torch.randn(shape, generator=generator, device=spec.torch_device, dtype=embeddings.dtype)
    pipe.scheduler.set_timesteps(params.denoising_steps, device=spec.torch_device)
    latents = latents * pipe.scheduler.init_noise_sigma
    for index, t in enumerate(pipe.scheduler.timesteps):
        with part(model_part) if model_part else nullcontext():
            both = pipe.scheduler.scale_model_input(torch.cat([latents] * 2), t)
            noise = unet_call(both, t, embeddings, index)
        with part("scheduler"):
            unconditional, conditional = noise.chunk(2)
            noise = unconditional + params.guidance_scale * (conditional - unconditional)
            latents = pipe.scheduler.step(noise, t, latents, return_dict=False)[0]
    return latents


def image_latents(pipe, spec: RunSpec, part, unet_call: UNetCall | None = None, unet_part: str | None = "unet") -> torch.Tensor:
    """Steps 1 and 2 of an image: the prompt encoded (part "text_encoder"), then the final latents."""
    with torch.inference_mode():
        with part("text_encoder"):
            embeddings = encode_text(pipe, spec)
        latent_size = spec.params.image_size // pipe.vae_scale_factor
        shape = (spec.batch, pipe.unet.config.in_channels, latent_size, latent_size)
        return denoise(pipe, spec, part, shape, embeddings, unet_call or plain_unet(pipe), unet_part)


def decode(pipe, spec: RunSpec, part, latents: torch.Tensor) -> torch.Tensor:
    """Step 3: the VAE decodes the final latents into images in [0, 1] (part "vae")."""
    with torch.inference_mode(), part("vae"):
        image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
        image = pipe.image_processor.postprocess(image, output_type="pt")
    synchronize(spec.torch_device)
    return image


def generate(pipe, spec: RunSpec, part, unet_call: UNetCall | None = None) -> torch.Tensor:
    """Images in [0, 1] for `spec.batch` prompts: 1. encode, 2. denoise, 3. decode; `unet_call`
    replaces the plain UNet forward (ControlNet residuals, adapters applied mid-way)."""
    return decode(pipe, spec, part, image_latents(pipe, spec, part, unet_call))


def pipeline_info(pipe, spec: RunSpec) -> dict:
    return {
        **param_stats(pipe.unet, pipe.text_encoder, pipe.vae),
        "unet_param_count": param_stats(pipe.unet)["param_count"],
        "text_encoder_param_count": param_stats(pipe.text_encoder)["param_count"],
        "vae_param_count": param_stats(pipe.vae)["param_count"],
        "latent_size": spec.params.image_size // pipe.vae_scale_factor,
        "unet_batch": 2 * spec.batch,  # classifier-free guidance: conditional + unconditional
        "text_seq_len": pipe.tokenizer.model_max_length,
        "scheduler": type(pipe.scheduler).__name__,
        "attn_processor": type(next(iter(pipe.unet.attn_processors.values()))).__name__,
    }


def build(spec: RunSpec) -> Built:
    seed_everything(spec.seed)
    pipe = build_pipeline(PRESETS[spec.preset], spec.params.image_size, spec.torch_device, spec.torch_dtype)
    for technique in VARIANTS[spec.variant]:
        pipe = technique(pipe)
    return Built(
        iteration=lambda part: generate(pipe, spec, part),
        items=spec.batch,
        item_unit="images",
        model=pipe.unet,  # one UNet forward per denoising step
        recorded_modules={"text_encoder": pipe.text_encoder, "unet": pipe.unet, "vae": pipe.vae},
        info=pipeline_info(pipe, spec),
    )


WORKLOAD = register(Workload(
    name="diffusion-t2i",
    study="1",
    description="Stable-Diffusion-style text-to-image: CLIP text encoder, UNet with cross-attention, DDIM, VAE decode",
    kind="inference",
    presets=PARAMS,
    variants=tuple(VARIANTS),
    build=build,
))
