"""The shared vision pieces (workloads/vision.py): synthetic particle images and the paper models."""
from __future__ import annotations

import pytest
import torch

from workloads.vision import LUMINANCE, RESNET50, VIT_B16, particle_images, resnet_classifier, vit_classifier


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_particle_images_repeat_per_seed_and_balance_the_classes():
    images, labels = particle_images(16, 3, 32, 4, seed=3)
    again, _ = particle_images(16, 3, 32, 4, seed=3)
    other, _ = particle_images(16, 3, 32, 4, seed=4)
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.equal(images, again) and not torch.equal(images, other)
    assert torch.bincount(labels).tolist() == [4, 4, 4, 4]


def test_monochrome_is_the_luminance_of_colour():
    colour, _ = particle_images(8, 3, 32, 2, seed=0)
    mono, _ = particle_images(8, 1, 32, 2, seed=0)
    luminance = (colour.float() * torch.tensor(LUMINANCE)[:, None, None]).sum(1, keepdim=True)
    assert mono.shape == (8, 1, 32, 32)
    assert (mono.float() - luminance).abs().max() <= 1.5  # both rounded to bytes


def test_classes_differ_in_shape_and_colour():
    """Class 0 (heat-like) is round and yellow-brown, the last class (mechanical-like) elongated and blue-grey."""
    images, labels = particle_images(64, 3, 64, 2, seed=0)
    dark = (255 - images.float()).mean(1)  # optical density, all channels
    mask = dark > 40
    y, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")

    def elongation(m):  # ratio of the principal second moments of the particle's mask
        w = m.float() / m.sum()
        mx, my = (w * x).sum(), (w * y).sum()
        cov = torch.stack([torch.stack([(w * (x - mx) ** 2).sum(), (w * (x - mx) * (y - my)).sum()]),
                           torch.stack([(w * (x - mx) * (y - my)).sum(), (w * (y - my) ** 2).sum()])])
        low, high = torch.linalg.eigvalsh(cov)
        return (high / low).sqrt()

    ratios = torch.stack([elongation(m) for m in mask])
    assert ratios[labels == 1].median() > 1.5 * ratios[labels == 0].median()
    blue_minus_red = images[:, 2].float() - images[:, 0].float()  # inside the particle: blue-grey > yellow-brown
    tint = torch.stack([(blue_minus_red[i][mask[i]]).mean() for i in range(64)])
    assert tint[labels == 1].mean() > tint[labels == 0].mean()


def test_particle_images_name_a_bad_channel_count():
    with pytest.raises(ValueError, match="--param channels must be 1"):
        particle_images(2, 2, 32, 2, seed=0)


def test_paper_models_have_the_published_sizes():
    """ResNet-50 (25,557,032 parameters with 1000 labels, as torchvision's) and ViT-B/16 (86,567,656 at 224x224)."""
    with torch.device("meta"):
        assert count(resnet_classifier(RESNET50, 3, 1000)) == 25_557_032
        assert count(vit_classifier(VIT_B16, 3, 1000, 224)) == 86_567_656
        # at 64x64: 16 patches + CLS instead of 196 + CLS position embeddings
        assert count(vit_classifier(VIT_B16, 3, 1000, 64)) == 86_567_656 - 180 * 768


def test_vit_needs_whole_patches():
    with pytest.raises(ValueError, match="--param image_size must be a multiple of the ViT's 16-pixel patches"):
        with torch.device("meta"):
            vit_classifier(VIT_B16, 3, 2, 72)
