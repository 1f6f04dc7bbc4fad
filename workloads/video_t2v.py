"""video-t2v: ModelScope-style text-to-video (studies.md section 1).

A diffusers TextToVideoSDPipeline assembled from local, randomly initialised parts: the
byte-level CLIP tokenizer and CLIP text encoder, a UNet3DConditionModel, a DDIM scheduler and
the image AutoencoderKL. The UNet3D interleaves, at every level, spatial attention (inside a
frame: `*.attentions.*`, self- and cross-attention over the H*W positions of each frame) with
temporal attention (across frames: `transformer_in` and `*.temp_attentions.*`, diffusers'
TransformerTemporalModel, self-attention over the frames at each position). The sequence-length
recorder marks calls under a temporal container `axis = temporal`, the others `spatial`.

One iteration = one video per prompt, as numbered steps with a part each (the loop of
diffusion-t2i, `diffusion_t2i.denoise`, over 5-D latents): 1. text encoding (part
"text_encoder"), 2. `denoising_steps` UNet3D forwards at batch 2x (classifier-free guidance,
part "unet") each followed by the scheduler's update (part "scheduler"), 3. VAE decode of the
frames as independent images (part "vae"; the VAE is 2-D, as in ModelScope).

Baseline: diffusers' plain AttnProcessor (unfused attention) everywhere; `sdpa` fuses attention
(diffusion_t2i.use_sdpa). Parameter `frames` (with the per-frame size, steps and guidance).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from workloads.base import Built, RunSpec, Workload, register
from workloads.common import byte_level_clip_tokenizer, param_stats, place, seed_everything, synchronize
from workloads.diffusion_t2i import (ImageParams, SDPreset, denoise, encode_text, plain_unet, scheduler_config,
                                     text_encoder_and_vae, unet_config, use_sdpa)


@dataclass(frozen=True)
class VideoParams(ImageParams):
    """`image_size` is the pixels per side of each frame."""

    frames: int = 16

    def check(self) -> None:
        super().check()
        if self.frames < 1:
            raise ValueError(f"--param frames must be at least 1, got {self.frames}")


PRESETS = {
    # Under a second per iteration on a 2-core CPU at 16 frames: 16x16-pixel frames -> 8x8 latents;
    # spatial attention over 64 positions at the first level and 16 in the middle block,
    # temporal attention over the frames at each of them.
    "tiny": SDPreset(
        unet_channels=(32, 64),
        unet_down_blocks=("CrossAttnDownBlock3D", "DownBlock3D"),
        unet_up_blocks=("UpBlock3D", "CrossAttnUpBlock3D"),
        unet_layers_per_block=1, unet_heads=8, cross_attention_dim=32,
        vae_channels=(32, 64), vae_layers_per_block=1,
        text_hidden=32, text_layers=2, text_heads=4, text_intermediate=64, text_vocab=1000,
    ),
    # ModelScope text-to-video-ms-1.7b (damo-vilab): UNet3D 1.4B with diffusers' config naming
    # (attention_head_dim=64 is the number of heads of the blocks; transformer_in has 8 heads of
    # 64), OpenCLIP ViT-H/14 text encoder (24 layers, the last one skipped), SD's VAE.
    "paper": SDPreset(
        unet_channels=(320, 640, 1280, 1280),
        unet_down_blocks=("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
        unet_up_blocks=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3,
        unet_layers_per_block=2, unet_heads=64, cross_attention_dim=1024,
        vae_channels=(128, 256, 512, 512), vae_layers_per_block=2,
        text_hidden=1024, text_layers=23, text_heads=16, text_intermediate=4096, text_vocab=49408,
        text_activation="gelu",
    ),
}
PARAMS = {
    "tiny": VideoParams(image_size=16, denoising_steps=2, guidance_scale=9.0, frames=8),
    # ModelScope's defaults in diffusers: 16 frames of 256x256, 50 DDIM steps, guidance 9
    "paper": VideoParams(image_size=256, denoising_steps=50, guidance_scale=9.0, frames=16),
}


def build_pipeline(p: SDPreset, image_size: int, device: torch.device, dtype: torch.dtype):
    """The baseline: random-init components, unfused attention everywhere."""
    from diffusers import DDIMScheduler, TextToVideoSDPipeline, UNet3DConditionModel
    from diffusers.models.attention_processor import AttnProcessor

    text_encoder, vae = text_encoder_and_vae(p, image_size, device, dtype)
    unet = place(UNet3DConditionModel(**unet_config(p, image_size)), device, dtype)
    unet.set_attn_processor(AttnProcessor())
    pipe = TextToVideoSDPipeline(vae=vae, text_encoder=text_encoder, tokenizer=byte_level_clip_tokenizer(p.text_max_len),
                                 unet=unet, scheduler=DDIMScheduler(**scheduler_config()))
    pipe.set_progress_bar_config(disable=True)
    return pipe


VARIANTS = {
    "eager": (),
    "sdpa": (use_sdpa,),  # fused attention in UNet3D (spatial and temporal), VAE and text encoder
}


def decode_frames(pipe, latents: torch.Tensor) -> torch.Tensor:
    """(B, C, frames, h, w) latents -> (B, 3, frames, H, W) video in [0, 1], every frame decoded
    as an image in one batch (the pipeline's decode_latents)."""
    batch, channels, frames, height, width = latents.shape
    flat = latents.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, height, width)
    images = pipe.vae.decode(flat / pipe.vae.config.scaling_factor, return_dict=False)[0]
    video = images.reshape(batch, frames, *images.shape[1:]).permute(0, 2, 1, 3, 4)
    return (video / 2 + 0.5).clamp(0, 1)


def generate(pipe, spec: RunSpec, part) -> torch.Tensor:
    """(batch, 3, frames, H, W) videos in [0, 1]."""
    params = spec.params
    with torch.inference_mode():
        # 1. text: prompt and empty negative prompt, concatenated for classifier-free guidance
        with part("text_encoder"):
            embeddings = encode_text(pipe, spec)
        # 2. denoise all frames together
        latent_size = params.image_size // pipe.vae_scale_factor
        shape = (spec.batch, pipe.unet.config.in_channels, params.frames, latent_size, latent_size)
        latents = denoise(pipe, spec, part, shape, embeddings, plain_unet(pipe))
        # 3. decode frame by frame (as one batch of images)
        with part("vae"):
            video = decode_frames(pipe, latents)
    synchronize(spec.torch_device)
    return video


def build(spec: RunSpec) -> Built:
    seed_everything(spec.seed)
    pipe = build_pipeline(PRESETS[spec.preset], spec.params.image_size, spec.torch_device, spec.torch_dtype)
    for technique in VARIANTS[spec.variant]:
        pipe = technique(pipe)
    latent_size = spec.params.image_size // pipe.vae_scale_factor
    return Built(
        iteration=lambda part: generate(pipe, spec, part),
        items=spec.batch * spec.params.frames,
        item_unit="frames",
        model=pipe.unet,  # one UNet3D forward per denoising step
        recorded_modules={"text_encoder": pipe.text_encoder, "unet": pipe.unet, "vae": pipe.vae},
        part_items={"vae": spec.batch * spec.params.frames},
        info={
            **param_stats(pipe.unet, pipe.text_encoder, pipe.vae),
            "unet_param_count": param_stats(pipe.unet)["param_count"],
            "latent_size": latent_size,
            "latent_tokens_per_frame_count": latent_size * latent_size,
            "unet_batch": 2 * spec.batch,  # classifier-free guidance: conditional + unconditional
            "attn_processor": type(next(iter(pipe.unet.attn_processors.values()))).__name__,
        },
    )


WORKLOAD = register(Workload(
    name="video-t2v",
    study="1",
    description="ModelScope-style text-to-video: CLIP text encoder, UNet3D with spatial and temporal attention, DDIM, VAE per frame",
    kind="inference",
    presets=PARAMS,
    variants=tuple(VARIANTS),
    build=build,
))
