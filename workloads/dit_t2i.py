"""dit-t2i: PixArt-alpha-style diffusion-transformer text-to-image (studies.md section 1).

A diffusers PixArtAlphaPipeline assembled from local, randomly initialised parts: a
character-level T5 tokenizer built in memory, a T5 encoder, a PixArtTransformer2DModel (a DiT:
patchified latents through transformer blocks with self-attention, cross-attention to the
text and a GELU MLP, conditioned on the timestep by adaLN-single), a DPM-Solver++ scheduler and
an AutoencoderKL decoder. Only the pipeline's parts are used, never its `__call__`: its
resolution binning would resize the requested image to the nearest aspect-ratio bin.

One iteration = one batch of images, the loop of diffusion-t2i (`diffusion_t2i.denoise`) with
the transformer in the UNet's place: 1. text encoding (prompt and empty negative prompt,
padded to 120 tokens with their attention masks, part "text_encoder"), 2. `denoising_steps`
transformer forwards at batch 2x (classifier-free guidance, part "transformer"; the learned
variance channels are dropped) each followed by the scheduler's update (part "scheduler"),
3. VAE decode (part "vae").

Baseline: diffusers' plain AttnProcessor (unfused attention) and eager T5 attention; `sdpa`
fuses attention everywhere (diffusion_t2i.use_sdpa).
"""
from __future__ import annotations

import string
from dataclasses import dataclass

import torch

from workloads.base import Built, RunSpec, Workload, register
from workloads.common import param_stats, place, seed_everything, synchronize
from workloads.diffusion_t2i import PROMPT, ImageParams, denoise, use_sdpa, vae_config

TEXT_TOKENS = 120  # PixArt-alpha's max_sequence_length


@dataclass(frozen=True)
class DiTDims:
    """Model dimensions as plain data: transformer, T5 encoder, VAE."""

    heads: int
    head_dim: int
    layers: int
    patch_size: int
    text_hidden: int  # T5 d_model = the transformer's caption_channels
    text_kv: int
    text_ff: int
    text_layers: int
    text_heads: int
    text_vocab: int
    vae_channels: tuple[int, ...]
    vae_layers_per_block: int


DIMS = {
    # Seconds on a 2-core CPU: 64x64 image -> 32x32 latent -> 16x16 patches = 256 tokens, a
    # quarter of the tiny UNet's 1024-token first level (as PixArt-alpha 512's 1024 tokens are
    # a quarter of SD 1.5's 4096); about half the tiny UNet's parameters (PixArt 0.6B, SD 0.86B).
    "tiny": DiTDims(heads=4, head_dim=16, layers=8, patch_size=2, text_hidden=32, text_kv=8, text_ff=64,
                    text_layers=2, text_heads=4, text_vocab=1000, vae_channels=(32, 64), vae_layers_per_block=1),
    # PixArt-alpha XL-2 512x512 (28 blocks of 16 heads x 72, 1152 wide, patch 2: 611M), T5 v1.1
    # XXL encoder, SD's VAE.
    "paper": DiTDims(heads=16, head_dim=72, layers=28, patch_size=2, text_hidden=4096, text_kv=64, text_ff=10240,
                     text_layers=24, text_heads=64, text_vocab=32128, vae_channels=(128, 256, 512, 512),
                     vae_layers_per_block=2),
}
PARAMS = {
    "tiny": ImageParams(image_size=64, denoising_steps=2, guidance_scale=4.5),
    "paper": ImageParams(image_size=512, denoising_steps=20, guidance_scale=4.5),  # PixArt-alpha's defaults
}


def character_t5_tokenizer():
    """A T5 tokenizer whose pieces are single characters (no sentencepiece file, no download):
    0 <pad>, 1 </s>, 2 <unk>, 3 the word boundary, then letters, digits and punctuation."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -5.0) for c in string.ascii_letters + string.digits + string.punctuation]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def transformer_config(d: DiTDims, image_size: int) -> dict:
    vae_scale = 2 ** (len(d.vae_channels) - 1)
    return dict(
        num_attention_heads=d.heads, attention_head_dim=d.head_dim, in_channels=4, out_channels=8,  # learned sigma
        num_layers=d.layers, cross_attention_dim=d.heads * d.head_dim, caption_channels=d.text_hidden,
        sample_size=image_size // vae_scale, patch_size=d.patch_size, use_additional_conditions=False,
    )


def t5_config(d: DiTDims):
    from transformers import T5Config

    return T5Config(vocab_size=d.text_vocab, d_model=d.text_hidden, d_kv=d.text_kv, d_ff=d.text_ff,
                    num_layers=d.text_layers, num_heads=d.text_heads, feed_forward_proj="gated-gelu",
                    attn_implementation="eager")


def build_pipeline(d: DiTDims, image_size: int, device: torch.device, dtype: torch.dtype):
    """The baseline: random-init components, unfused attention everywhere."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel
    from diffusers.models.attention_processor import AttnProcessor
    from transformers import T5EncoderModel

    text_encoder = place(T5EncoderModel(t5_config(d)), device, dtype)
    transformer = place(PixArtTransformer2DModel(**transformer_config(d, image_size)), device, dtype)
    vae = place(AutoencoderKL(**vae_config(d, image_size)), device, dtype)
    transformer.set_attn_processor(AttnProcessor())
    vae.set_attn_processor(AttnProcessor())
    pipe = PixArtAlphaPipeline(tokenizer=character_t5_tokenizer(), text_encoder=text_encoder, vae=vae,
                               transformer=transformer, scheduler=DPMSolverMultistepScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


VARIANTS = {
    "eager": (),
    "sdpa": (use_sdpa,),  # fused attention in the transformer, VAE and T5
}


def transformer_call(pipe, mask: torch.Tensor):
    """The noise prediction (learned-variance channels dropped) for (latents, timestep, text, step)."""
    no_micro_conditions = {"resolution": None, "aspect_ratio": None}

    def call(latents, t, embeddings, index):
        out = pipe.transformer(latents, encoder_hidden_states=embeddings, encoder_attention_mask=mask,
                               timestep=t.expand(latents.shape[0]), added_cond_kwargs=no_micro_conditions,
                               return_dict=False)[0]
        return out.chunk(2, dim=1)[0]

    return call


def generate(pipe, spec: RunSpec, part) -> torch.Tensor:
    """Images in [0, 1] for `spec.batch` prompts."""
    with torch.inference_mode():
        # 1. text: prompt and empty negative prompt with their masks, for classifier-free guidance
        with part("text_encoder"):
            positive, positive_mask, negative, negative_mask = pipe.encode_prompt(
                [PROMPT] * spec.batch, do_classifier_free_guidance=True, negative_prompt="", device=spec.torch_device,
                clean_caption=False, max_sequence_length=TEXT_TOKENS)
            embeddings, mask = torch.cat([negative, positive]), torch.cat([negative_mask, positive_mask])
        # 2. denoise
        latent_size = spec.params.image_size // pipe.vae_scale_factor
        shape = (spec.batch, pipe.transformer.config.in_channels, latent_size, latent_size)
        latents = denoise(pipe, spec, part, shape, embeddings, transformer_call(pipe, mask), model_part="transformer")
        # 3. decode
        with part("vae"):
            image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
            image = pipe.image_processor.postprocess(image, output_type="pt")
    synchronize(spec.torch_device)
    return image


def build(spec: RunSpec) -> Built:
    seed_everything(spec.seed)
    dims = DIMS[spec.preset]
    if (spec.params.image_size // 2 ** (len(dims.vae_channels) - 1)) % dims.patch_size:
        raise ValueError(f"--param image_size={spec.params.image_size}: the latent side must be a multiple of the "
                         f"patch size {dims.patch_size}")
    pipe = build_pipeline(dims, spec.params.image_size, spec.torch_device, spec.torch_dtype)
    for technique in VARIANTS[spec.variant]:
        pipe = technique(pipe)
    latent_size = spec.params.image_size // pipe.vae_scale_factor
    return Built(
        iteration=lambda part: generate(pipe, spec, part),
        items=spec.batch,
        item_unit="images",
        model=pipe.transformer,  # one transformer forward per denoising step
        recorded_modules={"text_encoder": pipe.text_encoder, "transformer": pipe.transformer, "vae": pipe.vae},
        info={
            **param_stats(pipe.transformer, pipe.text_encoder, pipe.vae),
            "transformer_param_count": param_stats(pipe.transformer)["param_count"],
            "text_encoder_param_count": param_stats(pipe.text_encoder)["param_count"],
            "latent_size": latent_size,
            "image_tokens_count": (latent_size // dims.patch_size) ** 2,
            "text_seq_len": TEXT_TOKENS,
            "transformer_batch": 2 * spec.batch,  # classifier-free guidance
            "attn_processor": type(next(iter(pipe.transformer.attn_processors.values()))).__name__,
        },
    )


WORKLOAD = register(Workload(
    name="dit-t2i",
    study="1",
    description="PixArt-alpha-style diffusion transformer text-to-image: T5 encoder, DiT with cross-attention, DPM-Solver, VAE decode",
    kind="inference",
    presets=PARAMS,
    variants=tuple(VARIANTS),
    build=build,
))
