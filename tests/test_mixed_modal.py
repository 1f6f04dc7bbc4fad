"""mixed-modal: the token plan and its modalities, the same tokens and pixels along the ladder,
what the KV cache holds, image codes as the VQ decoder reads them, and Chameleon-7B's dimensions.
(The contract every workload keeps is in test_contract.py.)"""
from __future__ import annotations

import pytest
import torch

from profilers.parts import untimed_part
from workloads import mixed_modal
from workloads.base import RunOptions, get

_RUNS: dict[tuple, tuple] = {}
D, P = mixed_modal.DIMS["tiny"], mixed_modal.PARAMS["tiny"]


def run(variant: str, **params):
    key = (variant, tuple(sorted(params.items())))
    if key not in _RUNS:
        workload = get("mixed-modal")
        built = workload.build(workload.resolve(RunOptions(variant=variant, params=params)))
        _RUNS[key] = (built, built.iteration(untimed_part))
    return _RUNS[key]


def test_plan_interleaves_text_and_image_tokens_of_their_modality():
    built, (tokens, pixels) = run("eager")
    plan = mixed_modal.token_plan(P, D.grid)
    assert plan.count("image") == D.grid ** 2 * P.images and plan.count("boi") == plan.count("eoi") == P.images
    assert tokens.shape == (1, len(plan)) and built.items == len(plan)
    image_ids = set(range(len(mixed_modal.SPECIAL), len(mixed_modal.SPECIAL) + D.image_codes))
    for token, modality in zip(tokens[0].tolist(), plan):
        if modality == "image":
            assert token in image_ids
        elif modality == "text":
            assert token not in image_ids and token >= len(mixed_modal.SPECIAL)
        else:
            assert token == mixed_modal.SPECIAL[f"<{modality}>"]
    side = D.grid * 2 ** (len(D.vq_multipliers) - 1)
    assert pixels.shape == (P.images, 3, side, side) and torch.isfinite(pixels).all()
    assert built.part_items == {"prefill": P.prompt_len, "decode_text": len(plan) - 1 - D.grid ** 2,
                                "decode_image": D.grid ** 2, "vq_decode": D.grid ** 2}


def test_image_tokens_map_to_their_codebook_entries():
    config = mixed_modal.chameleon_config(D)
    assert mixed_modal.image_token_name(0) == "IMGIMGAZ" and mixed_modal.image_token_name(12) == "IMGIMGBCZ"
    assert config.vocabulary_map[mixed_modal.image_token_name(12)] == len(mixed_modal.SPECIAL) + 12
    decoder = mixed_modal.build_decoder(D, get("mixed-modal").resolve(RunOptions()))
    assert torch.equal(decoder.code_of[decoder.image_ids], torch.arange(D.image_codes))


@pytest.mark.parametrize("variant", ["sdpa", "static-cache", "no-kv-cache",
                                     pytest.param("compile", marks=pytest.mark.slow)])
def test_ladder_generates_the_eager_tokens_and_pixels(variant):
    built, (tokens, pixels) = run(variant)
    eager_tokens, eager_pixels = run("eager")[1]
    assert torch.equal(tokens, eager_tokens)
    torch.testing.assert_close(pixels, eager_pixels)
    again, _ = built.iteration(untimed_part)
    assert torch.equal(again, tokens), "a second iteration rewinds the cache"


def test_kv_cache_bytes_dynamic_static_and_none():
    per_position = 2 * D.layers * D.heads * (D.hidden // D.heads) * 4  # keys and values, float32
    generated = len(mixed_modal.token_plan(P, D.grid))
    assert run("eager")[0].info["kv_cache_bytes"] == per_position * (P.prompt_len + generated - 1)  # the last token is never fed
    assert run("static-cache")[0].info["kv_cache_bytes"] == per_position * (P.prompt_len + generated)
    assert run("no-kv-cache")[0].info["kv_cache_bytes"] == 0


def test_parameters_are_checked():
    workload = get("mixed-modal")
    with pytest.raises(ValueError, match="--param text_tokens must be at least 1"):
        workload.resolve(RunOptions(params={"text_tokens": 0}))
    with pytest.raises(ValueError, match="--param text_tokens=400"):
        workload.build(workload.resolve(RunOptions(params={"text_tokens": 400})))
    built, (tokens, pixels) = run("sdpa", images=0)
    assert tokens.shape == (1, P.text_tokens) and pixels.numel() == 0


def test_paper_preset_is_chameleon_7b():
    from transformers import ChameleonForConditionalGeneration, JanusVQVAE

    d = mixed_modal.DIMS["paper"]
    with torch.device("meta"):
        model = ChameleonForConditionalGeneration(mixed_modal.chameleon_config(d))
        vq = JanusVQVAE(mixed_modal.vq_decoder_config(d))
    backbone = sum(p.numel() for n, p in model.named_parameters() if "vqmodel" not in n)
    assert 6.9e9 < backbone < 7.1e9, backbone  # Chameleon-7B
    assert d.grid ** 2 == 1024 and d.grid * 2 ** (len(d.vq_multipliers) - 1) == 512  # 512 px images of 1024 tokens
    assert vq.config.num_embeddings == 8192 and sum(p.numel() for p in vq.parameters()) > 5e7
