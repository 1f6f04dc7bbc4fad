"""mixed-modal: Chameleon-style generation of interleaved text and image tokens (studies.md section 2).

A randomly initialised Chameleon (one decoder-only transformer over one vocabulary holding
text tokens and a VQ codebook's image tokens) generates, after a random text prompt, a
fixed plan of tokens: for each image, `text_tokens` text tokens, <boi>, grid x grid image
tokens, <eoi>; then `text_tokens` closing text tokens. Each token is the most likely one of
its modality (logits restricted to the text ids or to the image ids; <boi> and <eoi> forced),
so every iteration does the same work. The image tokens are then turned into pixels by a VQ
decoder: transformers' Chameleon VQ-VAE has only its encoder, so Janus's VQ-VAE (same
VQGAN family) decodes the codes.

Explicit prefill/decode loop with a KV cache, one iteration =
    prefill       one forward over the prompt, producing the first text token
    decode_text   one forward per further text token (and per <boi> / <eoi>)
    decode_image  one forward per image token
    vq_decode     image codes -> pixels
Variants: llm-decode's ladder, technique by technique (eager -> sdpa -> static-cache ->
compile -> int8-weights; cuda-graphs on a GPU), applied to the Chameleon backbone (the
language-model head, a single matmul per token, and the VQ decoder stay eager, in float32).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from workloads.base import Built, Params, RunSpec, Workload, register
from workloads.common import param_stats, place, seed_everything, synchronize
from workloads.llm_decode import VARIANTS, kv_cache_bytes, rewind


@dataclass(frozen=True)
class ChameleonDims:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    max_positions: int
    image_codes: int  # VQ codebook entries = image tokens in the vocabulary
    grid: int  # an image is grid x grid tokens
    vq_channels: int  # VQ decoder: base channels, multipliers, latent and code dims
    vq_multipliers: tuple[int, ...]
    vq_latent: int
    vq_embed: int
    vq_res_blocks: int


@dataclass(frozen=True)
class MixedModalParams(Params):
    prompt_len: int
    text_tokens: int  # text tokens before each image, and after the last one
    images: int

    def check(self) -> None:
        if self.prompt_len < 1:
            raise ValueError(f"--param prompt_len must be at least 1, got {self.prompt_len}")
        if self.text_tokens < 1:
            raise ValueError(f"--param text_tokens must be at least 1 (the prefill produces a text token), got {self.text_tokens}")
        if self.images < 0:
            raise ValueError(f"--param images must be 0 or more, got {self.images}")


DIMS = {
    "tiny": ChameleonDims(hidden=128, layers=2, heads=4, intermediate=256, vocab=512, max_positions=512, image_codes=64,
                          grid=6, vq_channels=32, vq_multipliers=(1, 1, 2), vq_latent=32, vq_embed=8, vq_res_blocks=1),
    # Chameleon-7B; its VQGAN: 8192 codes, 16x downsampling, 512 px images = 32 x 32 = 1024 tokens
    "paper": ChameleonDims(hidden=4096, layers=32, heads=32, intermediate=11008, vocab=65536, max_positions=4096, image_codes=8192,
                           grid=32, vq_channels=128, vq_multipliers=(1, 1, 2, 2, 4), vq_latent=256, vq_embed=256, vq_res_blocks=2),
}
PARAMS = {"tiny": MixedModalParams(prompt_len=16, text_tokens=4, images=1),
          "paper": MixedModalParams(prompt_len=64, text_tokens=32, images=1)}
SPECIAL = {"<pad>": 0, "<s>": 1, "</s>": 2, "<image>": 3, "<boi>": 4, "<eoi>": 5}
BOI, EOI = SPECIAL["<boi>"], SPECIAL["<eoi>"]


def image_token_name(code: int) -> str:
    """Chameleon's name of codebook entry `code`: IMGIMG, its digits as letters (A = 0), Z."""
    return "IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(code)) + "Z"


def vocabulary(dims: ChameleonDims) -> dict[str, int]:
    """Specials, then the image tokens, then text: ids [len(SPECIAL), + image_codes) are images."""
    return {**SPECIAL, **{image_token_name(c): len(SPECIAL) + c for c in range(dims.image_codes)}}


def chameleon_config(dims: ChameleonDims):
    from transformers import ChameleonConfig, ChameleonVQVAEConfig

    encoder = ChameleonVQVAEConfig(embed_dim=dims.vq_embed, num_embeddings=dims.image_codes, latent_channels=dims.vq_latent,
                                   resolution=dims.grid * 2 ** (len(dims.vq_multipliers) - 1), base_channels=dims.vq_channels,
                                   channel_multiplier=list(dims.vq_multipliers), num_res_blocks=dims.vq_res_blocks, attn_resolutions=[])
    return ChameleonConfig(
        vocab_size=dims.vocab, hidden_size=dims.hidden, intermediate_size=dims.intermediate, num_hidden_layers=dims.layers,
        num_attention_heads=dims.heads, num_key_value_heads=dims.heads, max_position_embeddings=dims.max_positions,
        vq_config=encoder.to_dict(), vocabulary_map=vocabulary(dims), bos_token_id=1, eos_token_id=2, pad_token_id=0,
        attn_implementation="eager",
    )


def vq_decoder_config(dims: ChameleonDims):
    from transformers import JanusVQVAEConfig

    return JanusVQVAEConfig(embed_dim=dims.vq_embed, num_embeddings=dims.image_codes, latent_channels=dims.vq_latent,
                            base_channels=dims.vq_channels, channel_multiplier=list(dims.vq_multipliers),
                            num_res_blocks=dims.vq_res_blocks, num_patches=dims.grid,
                            projection_dim=dims.vq_latent, image_token_embed_dim=dims.vq_latent)


def token_plan(params: MixedModalParams, grid: int) -> tuple[str, ...]:
    """The modality of each generated token, in order."""
    one_image = ("text",) * params.text_tokens + ("boi",) + ("image",) * (grid * grid) + ("eoi",)
    return one_image * params.images + ("text",) * params.text_tokens


@dataclass
class MixedModalDecoder:
    """Interleaved generation as prefill + decode; the fields llm-decode's ladder reads
    (model, prompt, new_tokens, cache) mean what they mean there."""

    model: torch.nn.Module  # ChameleonModel: one forward per generated token
    lm_head: torch.nn.Module
    vq: torch.nn.Module  # JanusVQVAE: codes -> pixels
    prompt: torch.Tensor  # (batch, prompt_len) text ids
    plan: tuple[str, ...]
    cache: object | None
    text_ids: torch.Tensor
    image_ids: torch.Tensor
    code_of: torch.Tensor  # token id -> codebook entry
    grid: int

    @property
    def new_tokens(self) -> int:
        return len(self.plan)

    def next_token(self, ids: torch.Tensor, modality: str) -> torch.Tensor:
        """(batch, 1): the most likely token of `modality` after `ids` (model forward and head)."""
        hidden = self.model(input_ids=ids, past_key_values=self.cache, use_cache=self.cache is not None).last_hidden_state
        if modality in ("boi", "eoi"):  # the switch of modality is forced; the forward is still run
            return torch.full((ids.shape[0], 1), BOI if modality == "boi" else EOI, dtype=ids.dtype, device=ids.device)
        allowed = self.text_ids if modality == "text" else self.image_ids
        logits = self.lm_head(hidden[:, -1])[:, allowed]
        return allowed[logits.argmax(dim=-1, keepdim=True)]

    @torch.inference_mode()
    def generate(self, part) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens (batch, new_tokens), pixels (batch * images, 3, H, W)); parts marked."""
        with part("prefill"):
            if self.cache is not None:
                rewind(self.cache, 0)
            tokens = [self.next_token(self.prompt, self.plan[0])]
        for modality in self.plan[1:]:
            with part("decode_image" if modality == "image" else "decode_text"):
                ids = tokens[-1] if self.cache is not None else torch.cat([self.prompt, *tokens], dim=1)
                tokens.append(self.next_token(ids, modality))
        with part("vq_decode"):
            tokens = torch.cat(tokens, dim=1)
            pixels = self.decode_images(tokens)
        return tokens, pixels

    def decode_images(self, tokens: torch.Tensor) -> torch.Tensor:
        is_image = torch.tensor([m == "image" for m in self.plan], device=tokens.device)
        if not is_image.any():
            return tokens.new_zeros((0,))
        codes = self.code_of[tokens[:, is_image]].reshape(-1, self.grid * self.grid)  # (batch * images, grid^2)
        return self.vq.decode(codes)


def build_decoder(dims: ChameleonDims, spec: RunSpec) -> MixedModalDecoder:
    """The baseline: eager attention, dynamic KV cache."""
    from transformers import ChameleonForConditionalGeneration, DynamicCache, JanusVQVAE

    config = chameleon_config(dims)
    chameleon = place(ChameleonForConditionalGeneration(config), spec.torch_device, spec.torch_dtype)
    vq = place(JanusVQVAE(vq_decoder_config(dims)), spec.torch_device, spec.torch_dtype)
    mapping = chameleon.model.vocabulary_mapping
    image_ids = torch.tensor(mapping.image_tokens)
    code_of = torch.zeros(dims.vocab, dtype=torch.long)
    code_of[image_ids] = torch.tensor([mapping.bpe2img[int(i)] for i in image_ids])
    text_ids = torch.arange(len(SPECIAL) + dims.image_codes, dims.vocab)
    generator = torch.Generator().manual_seed(spec.seed)
    prompt = text_ids[torch.randint(0, len(text_ids), (spec.batch, spec.params.prompt_len), generator=generator)]
    device = spec.torch_device
    return MixedModalDecoder(model=chameleon.model, lm_head=chameleon.lm_head, vq=vq, prompt=prompt.to(device),
                             plan=token_plan(spec.params, dims.grid), cache=DynamicCache(config=config),
                             text_ids=text_ids.to(device), image_ids=image_ids.to(device), code_of=code_of.to(device), grid=dims.grid)


def build(spec: RunSpec) -> Built:
    dims, params = DIMS[spec.preset], spec.params
    plan = token_plan(params, dims.grid)
    if params.prompt_len + len(plan) > dims.max_positions:
        raise ValueError(f"--param text_tokens={params.text_tokens}, images={params.images}: prompt ({params.prompt_len}) + "
                         f"{len(plan)} generated tokens exceed the {spec.preset} preset's {dims.max_positions} positions")
    seed_everything(spec.seed)
    decoder = build_decoder(dims, spec)
    for technique in VARIANTS[spec.variant]:
        decoder = technique(decoder)
    image_tokens = plan.count("image")
    info = {
        **param_stats(decoder.model, decoder.lm_head),
        "vq_decoder_param_count": param_stats(decoder.vq)["param_count"],
        "kv_cache": type(decoder.cache).__name__ if decoder.cache is not None else "none",
        "layers": dims.layers, "heads": dims.heads, "head_dim": dims.hidden // dims.heads, "hidden": dims.hidden,
        "vocab": dims.vocab, "image_token_count": spec.batch * image_tokens, "text_token_count": spec.batch * (len(plan) - image_tokens),
        "attn_implementation": decoder.model.config._attn_implementation,
    }

    def iteration(part):
        tokens, pixels = decoder.generate(part)
        info["kv_cache_bytes"] = kv_cache_bytes(decoder.cache)
        synchronize(spec.torch_device)
        return tokens, pixels

    return Built(
        iteration=iteration,
        items=spec.batch * len(plan),  # generated tokens
        item_unit="tokens",
        model=decoder.model,
        part_items={"prefill": spec.batch * params.prompt_len, "decode_text": spec.batch * (len(plan) - 1 - image_tokens),
                    "decode_image": spec.batch * image_tokens, "vq_decode": spec.batch * image_tokens},
        info=info,
    )


WORKLOAD = register(Workload(
    name="mixed-modal",
    study="2",
    description="Chameleon-style interleaved text and image token generation with a KV cache, image tokens decoded to pixels "
                "by a VQ decoder; prefill, text decode, image decode and VQ decode timed apart; the optimization ladder",
    kind="inference",
    presets=PARAMS,
    variants=tuple(VARIANTS),
    build=build,
    gpu_variants=("cuda-graphs",),
))
