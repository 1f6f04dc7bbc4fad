"""dit-t2i: the image and its denoising loop (no resolution binning), fused vs unfused attention,
the attention calls of a DiT (image tokens, 120 text tokens), the in-memory T5 tokenizer and
the paper preset's PixArt-alpha 512 dimensions."""
from __future__ import annotations

import torch

from profilers.parts import untimed_part
from profilers.seqlen import SeqLenRecorder
from workloads import dit_t2i
from workloads.base import RunOptions, get

_RUNS: dict[tuple, tuple] = {}


def run(variant: str, **params):
    """Build and run one iteration, once per (variant, params) for the whole module."""
    key = (variant, tuple(sorted(params.items())))
    if key not in _RUNS:
        workload = get("dit-t2i")
        spec = workload.resolve(RunOptions(variant=variant, params=params))
        built = workload.build(spec)
        _RUNS[key] = (spec, built, built.iteration(untimed_part))
    return _RUNS[key]


def test_image_and_one_transformer_forward_per_denoising_step():
    spec, built, image = run("eager")
    p = spec.params
    assert image.shape == (1, 3, p.image_size, p.image_size) and 0 <= image.min() and image.max() <= 1
    calls = []
    handle = built.model.register_forward_pre_hook(
        lambda _m, args, kwargs: calls.append((tuple(args[0].shape), tuple(kwargs["encoder_hidden_states"].shape),
                                               tuple(kwargs["encoder_attention_mask"].shape))), with_kwargs=True)
    try:
        again = built.iteration(untimed_part)
    finally:
        handle.remove()
    latent, width = p.image_size // 2, dit_t2i.DIMS["tiny"].text_hidden
    expected = ((2, 4, latent, latent), (2, dit_t2i.TEXT_TOKENS, width), (2, dit_t2i.TEXT_TOKENS))
    assert calls == [expected] * p.denoising_steps, "classifier-free guidance at batch 2, padded text with its mask"
    assert torch.equal(again, image), "the same latents every iteration"


def test_sdpa_matches_eager():
    (_, eager, reference), (_, fused, image) = run("eager"), run("sdpa")
    assert eager.info["attn_processor"] == "AttnProcessor" and fused.info["attn_processor"] == "AttnProcessor2_0"
    assert fused.recorded_modules["text_encoder"].config._attn_implementation == "sdpa"
    torch.testing.assert_close(image, reference, atol=1e-4, rtol=1e-4)


def test_the_requested_size_is_generated_without_binning():
    _, built, image = run("sdpa", image_size=32)
    assert image.shape == (1, 3, 32, 32) and built.info["image_tokens_count"] == 64


def test_attention_calls_over_image_tokens_and_text():
    _, built, _ = run("sdpa")
    with SeqLenRecorder(built.recorded_modules, model=built.model) as recorder:
        built.iteration(untimed_part)
    rows = recorder.rows
    blocks = [r for r in rows if r["module_path"].startswith("transformer.") and r["model_call"] == 0]
    assert len(blocks) == 2 * dit_t2i.DIMS["tiny"].layers
    tokens = built.info["image_tokens_count"]
    assert {(r["kind"], r["q_len"], r["kv_len"], r["batch"]) for r in blocks} == {
        ("self", tokens, tokens, 2), ("cross", tokens, dit_t2i.TEXT_TOKENS, 2)}
    text = [r for r in rows if r["module_path"].startswith("text_encoder.")]
    assert text and {(r["kind"], r["q_len"]) for r in text} == {("self", dit_t2i.TEXT_TOKENS)}
    assert all(r["axis"] is None for r in rows), "an image model has no temporal axis"


def test_character_tokenizer_fits_the_text_encoder():
    tokenizer = dit_t2i.character_t5_tokenizer()
    text = "an astronaut, 42!"
    ids = tokenizer(text).input_ids
    assert tokenizer.convert_ids_to_tokens(ids) == ["\u2581", *text.replace(" ", "\u2581"), "</s>"]
    assert max(ids) < dit_t2i.DIMS["tiny"].text_vocab and tokenizer.pad_token_id == 0


def test_paper_preset_is_pixart_alpha_512():
    from diffusers import PixArtTransformer2DModel
    from transformers import T5EncoderModel

    d, p = dit_t2i.DIMS["paper"], dit_t2i.PARAMS["paper"]
    assert (p.image_size, p.denoising_steps, p.guidance_scale) == (512, 20, 4.5)
    with torch.device("meta"):
        transformer = PixArtTransformer2DModel(**dit_t2i.transformer_config(d, p.image_size))
        text_encoder = T5EncoderModel(dit_t2i.t5_config(d))
    count = lambda m: sum(t.numel() for t in m.parameters())  # noqa: E731
    assert round(count(transformer) / 1e6) == 611 and transformer.config.sample_size == 64  # PixArt-XL-2-512x512
    assert round(count(text_encoder) / 1e9, 2) == 4.76  # T5 v1.1 XXL encoder
