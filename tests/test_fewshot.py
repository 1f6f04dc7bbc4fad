"""fewshot-finetune (study 9): SAM's step is Adam with the gradient taken at the perturbed
weights, its second pass leaves BatchNorm statistics alone, the linear probe trains only the
head, and the batch is shots x classes."""
from __future__ import annotations

import copy

import pytest
import torch

from profilers.parts import untimed_part
from workloads import fewshot
from workloads.base import RunOptions, get

_BUILT: dict[tuple, object] = {}


def built(variant: str, **params):
    """Build once per (variant, params) for the whole module; weights restored to the start."""
    key = (variant, tuple(sorted(params.items())))
    if key not in _BUILT:
        workload = get("fewshot-finetune")
        _BUILT[key] = workload.build(workload.resolve(RunOptions(variant=variant, params=params)))
    _BUILT[key].reset()
    return _BUILT[key]


def parts_of(b) -> list[str]:
    names = []
    b.iteration(lambda name, background=False: (names.append(name), untimed_part(name))[1])
    return names


def test_sam_step_is_adam_with_the_gradient_at_the_perturbed_weights():
    b = built("sam")
    model, start = b.model, copy.deepcopy(b.model)
    optimizer = torch.optim.Adam(start.parameters(), lr=fewshot.LEARNING_RATE)
    tiny = fewshot.PARAMS["tiny"]
    images, labels = fewshot.particle_images(tiny.shots * tiny.classes, 3, tiny.image_size, tiny.classes, seed=0)
    pixels = fewshot.normalize(images, torch.float32)
    loss = lambda: torch.nn.functional.cross_entropy(start(pixel_values=pixels).logits, labels)  # noqa: E731
    # by hand: gradient at w, e = rho g / ||g||, gradient at w + e (statistics frozen), Adam from w
    loss().backward()
    weights = [p.detach().clone() for p in start.parameters()]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in start.parameters()]))
    with torch.no_grad():
        for p in start.parameters():
            p.add_(p.grad * (fewshot.SAM_RHO / (norm + 1e-12)))
    optimizer.zero_grad()
    fewshot.batchnorm_momentum(start, 0.0)
    loss().backward()
    fewshot.batchnorm_momentum(start, 0.1)
    with torch.no_grad():
        for p, w in zip(start.parameters(), weights):
            p.copy_(w)
    optimizer.step()
    b.iteration(untimed_part)
    for (name, ours), expected in zip(model.state_dict().items(), start.state_dict().values()):
        if not name.endswith("num_batches_tracked"):
            torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6, msg=name)


def test_sam_updates_batchnorm_statistics_once_like_adam():
    adam, sam = built("adam"), built("sam")
    adam.iteration(untimed_part)
    sam.iteration(untimed_part)
    stats = lambda m: {k: v for k, v in m.state_dict().items() if "running_" in k}  # noqa: E731
    for name, value in stats(adam.model).items():
        torch.testing.assert_close(stats(sam.model)[name], value, msg=name)


def test_parts_name_both_passes():
    assert parts_of(built("adam")) == ["forward", "backward", "optimizer"]
    assert parts_of(built("sam")) == ["forward", "backward", "perturb", "forward_2", "backward_2", "restore", "optimizer"]


def test_linear_probe_trains_only_the_head():
    b = built("adam", strategy="linear-probe")
    backbone = {k: v.clone() for k, v in b.model.resnet.state_dict().items()}
    head = b.model.classifier[1].weight.detach().clone()
    b.iteration(untimed_part)
    assert all(torch.equal(v, backbone[k]) for k, v in b.model.resnet.state_dict().items()), "backbone and its statistics frozen"
    assert not torch.equal(b.model.classifier[1].weight, head)
    classes, features = fewshot.PARAMS["tiny"].classes, fewshot.DIMS["tiny"].hidden[-1]
    assert b.info["trainable_param_count"] == classes * features + classes
    assert b.info["optimizer_state_bytes"] < 3 * 4 * b.info["trainable_param_count"]  # Adam's two moments, for the head alone


def test_batch_is_shots_times_classes():
    assert built("adam", shots=3).items == 3 * fewshot.PARAMS["tiny"].classes
    with pytest.raises(ValueError, match="--batch 2: fewshot-finetune's batch is shots x classes"):
        workload = get("fewshot-finetune")
        workload.build(workload.resolve(RunOptions(batch=2)))


def test_paper_preset_is_resnet50_on_office31():
    p = fewshot.PARAMS["paper"]
    with torch.device("meta"):
        model = fewshot.resnet_classifier(fewshot.DIMS["paper"], 3, p.classes)
    assert sum(w.numel() for w in model.parameters()) == 23_508_032 + 2048 * 31 + 31  # ResNet-50 backbone + head
    assert p.shots * p.classes <= 32 and p.image_size == 224
