"""fim-classifier and fim-train (study 8): variants keep the predictions, colour changes only the
first layer, the ViT's attention calls, a training step that learns."""
from __future__ import annotations

import pytest
import torch

from profilers.parts import untimed_part
from profilers.seqlen import SeqLenRecorder
from workloads import fim
from workloads.base import RunOptions, get

BATCH = 8
_BUILT: dict[tuple, object] = {}


def built(name: str, variant: str = "eager", **params):
    """Build once per (workload, variant, params) for the whole module."""
    key = (name, variant, tuple(sorted(params.items())))
    if key not in _BUILT:
        workload = get(name)
        _BUILT[key] = workload.build(workload.resolve(RunOptions(variant=variant, batch=BATCH, params=params)))
    return _BUILT[key]


@pytest.mark.parametrize("arch", ["resnet", "vit"])
@pytest.mark.parametrize("variant", ["sdpa", "channels-last"])
def test_variants_keep_the_predictions(arch, variant):
    predicted, confidence = built("fim-classifier", "eager", arch=arch).iteration(untimed_part)
    other_predicted, other_confidence = built("fim-classifier", variant, arch=arch).iteration(untimed_part)
    assert torch.equal(predicted, other_predicted)
    torch.testing.assert_close(other_confidence, confidence, rtol=1e-4, atol=1e-5)


def test_variants_apply_their_technique():
    assert built("fim-classifier", "eager", arch="vit").info["attn_implementation"] == "eager"
    assert built("fim-classifier", "sdpa", arch="vit").info["attn_implementation"] == "sdpa"
    b = built("fim-classifier", "channels-last", arch="resnet")
    assert b.info["memory_format"] == "channels_last"
    assert b.model.resnet.embedder.embedder.convolution.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("arch", ["resnet", "vit"])
def test_colour_changes_only_the_first_layer(arch):
    colour, mono = built("fim-classifier", arch=arch, channels=3), built("fim-classifier", arch=arch, channels=1)
    dims = fim.DIMS["tiny"]
    stem = 7 * 7 * dims.resnet.embedding if arch == "resnet" else dims.vit.patch ** 2 * dims.vit.hidden
    assert colour.info["param_count"] - mono.info["param_count"] == 2 * stem  # two more input channels
    assert colour.info["input_bytes"] == 3 * mono.info["input_bytes"] == 3 * BATCH * 32 * 32


def test_vit_attention_is_self_attention_over_patches_and_cls():
    b = built("fim-classifier", "sdpa", arch="vit")
    with SeqLenRecorder(b.model, model=b.model) as recorder:
        b.iteration(untimed_part)
    dims, tokens = fim.DIMS["tiny"].vit, (32 // fim.DIMS["tiny"].vit.patch) ** 2 + 1
    assert len(recorder.rows) == dims.layers
    assert {(r["kind"], r["q_len"], r["kv_len"], r["batch"], r["model_call"]) for r in recorder.rows} == {("self", tokens, tokens, BATCH, 0)}


def test_inference_parts_and_items():
    b = built("fim-classifier", arch="resnet")
    names = []
    b.iteration(lambda name, background=False: (names.append(name), untimed_part(name))[1])
    assert names == ["preprocess", "forward", "postprocess"] and b.items == BATCH


def test_a_training_step_learns_the_batch():
    b = built("fim-train", arch="resnet")
    b.reset()
    losses = [b.iteration(untimed_part).item() for _ in range(4)]
    assert losses[-1] < losses[0]
    assert b.info["trainable_param_count"] == b.info["param_count"]
    assert b.info["optimizer_state_bytes"] >= 2 * 4 * b.info["param_count"]  # Adam: two moments per weight


def test_image_size_must_fit_the_patches():
    with pytest.raises(ValueError, match="--param image_size must be a multiple"):
        built("fim-classifier", arch="vit", image_size=36)
    with pytest.raises(ValueError, match="--param channels must be 1 .monochrome. or 3"):
        get("fim-classifier").resolve(RunOptions(params={"channels": "2"}))
