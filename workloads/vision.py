"""Image classifiers and synthetic particle images, shared by the vision workloads
(fim.py: study 8, fewshot.py: study 9).

Models: transformers' ResNet and ViT image classifiers built from configs (random weights,
nothing downloaded), their dimensions plain data (`ResNetDims`, `ViTDims`).

Images: the flow-imaging-microscopy data set of study 8 (16,000 particles, eight antibodies)
is not public, so `particle_images` draws stand-ins, deterministic per seed. A particle is a
dark, translucent blob on the bright background of a flow cell: its outline a circle with
random low-order harmonics, its optical density higher at the rim (a refractive edge). Its
class sets the morphology, from compact, round and smooth (class 0, like heat-stressed
aggregates) to elongated, ragged and striated (the last class, like fragments of mechanical
stress), and its colour, from yellow-brown (absorbing blue) to blue-grey. A colour camera
also shows chromatic fringes (the red outline a little larger than the blue); a monochrome
image is the luminance of the colour one. The content does not change what a classifier
costs; it makes a loss mean something and lets a test see the classes apart.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from workloads.base import Built
from workloads.common import TrainingState, synchronize, training_info

LUMINANCE = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights: a monochrome sensor's view of RGB
ABSORPTION = {"first": (1.0, 1.2, 1.6), "last": (1.3, 1.1, 0.9)}  # per RGB channel, class 0 and the last class
FRINGE_PX = (0.6, 0.0, -0.6)  # outline offset per RGB channel: chromatic aberration


@dataclass(frozen=True)
class ResNetDims:
    embedding: int  # stem channels
    hidden: tuple[int, ...]  # output channels per stage
    depths: tuple[int, ...]  # blocks per stage
    layer_type: str  # "basic" (two 3x3 convs) or "bottleneck" (1x1, 3x3, 1x1)


@dataclass(frozen=True)
class ViTDims:
    patch: int
    hidden: int
    layers: int
    heads: int
    intermediate: int


RESNET50 = ResNetDims(embedding=64, hidden=(256, 512, 1024, 2048), depths=(3, 4, 6, 3), layer_type="bottleneck")
VIT_B16 = ViTDims(patch=16, hidden=768, layers=12, heads=12, intermediate=3072)


def resnet_classifier(dims: ResNetDims, channels: int, labels: int):
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(num_channels=channels, embedding_size=dims.embedding, hidden_sizes=list(dims.hidden),
                          depths=list(dims.depths), layer_type=dims.layer_type, num_labels=labels)
    return ResNetForImageClassification(config)


def vit_classifier(dims: ViTDims, channels: int, labels: int, image_size: int):
    """A ViT with eager (unfused) attention: the portable baseline."""
    from transformers import ViTConfig, ViTForImageClassification

    if image_size % dims.patch:
        raise ValueError(f"--param image_size must be a multiple of the ViT's {dims.patch}-pixel patches, got {image_size}")
    config = ViTConfig(image_size=image_size, patch_size=dims.patch, num_channels=channels, hidden_size=dims.hidden,
                       num_hidden_layers=dims.layers, num_attention_heads=dims.heads, intermediate_size=dims.intermediate,
                       num_labels=labels, attn_implementation="eager")
    return ViTForImageClassification(config)


def _harmonics(generator: torch.Generator, count: int, orders: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(count, orders, generator=generator), 2 * math.pi * torch.rand(count, orders, generator=generator)


def particle_images(count: int, channels: int, size: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` particle images (uint8, count x channels x size x size, as a camera stores them)
    and their labels (0..classes-1 in turn, so every class has count // classes images)."""
    if channels not in (1, 3):
        raise ValueError(f"--param channels must be 1 (monochrome) or 3 (colour), got {channels}")
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % classes
    t = (labels.float() / max(classes - 1, 1))[:, None, None]  # 0 compact and smooth .. 1 elongated and ragged
    n = lambda *shape: torch.rand(count, *shape, generator=g)  # noqa: E731  (uniform draws per particle)
    # 1. geometry: centre, size, orientation, elongation, pixel grid in the particle's frame
    centre, radius = size * (0.4 + 0.2 * n(2, 1, 1)), size * (0.12 + 0.1 * n(1, 1))
    angle, aspect = math.pi * n(1, 1), 1 + 1.8 * t * (0.5 + 0.5 * n(1, 1))
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    dx, dy = x - centre[:, 0], y - centre[:, 1]
    u = (dx * torch.cos(angle) + dy * torch.sin(angle)) / aspect.sqrt()
    v = (-dx * torch.sin(angle) + dy * torch.cos(angle)) * aspect.sqrt()
    rho, theta = torch.hypot(u, v), torch.atan2(v, u)
    # 2. outline: harmonics 2..7, rougher for higher classes
    amplitude, phase = _harmonics(g, count, 6)
    orders = torch.arange(2, 8, dtype=torch.float32)
    roughness = (0.04 + 0.12 * t[:, :, 0]) * amplitude / orders  # (count, 6)
    outline = radius * (1 + (roughness[:, :, None, None] * torch.cos(orders[:, None, None] * theta[:, None] + phase[:, :, None, None])).sum(1))
    # 3. optical density: darker rim, striations whose frequency grows with the class
    freq, direction = 0.05 + 0.3 * t, math.pi * n(1, 1)
    stripes = torch.cos(2 * math.pi * freq * (x * torch.cos(direction) + y * torch.sin(direction)) + 2 * math.pi * n(1, 1))
    density = (0.4 + 0.5 * n(1, 1)) * (0.6 + 0.4 * (rho / outline).clamp(max=1) ** 2) * (1 + 0.3 * stripes)
    # 4. transmitted light per colour channel: tint, fringe, illumination, sensor noise
    first, last = torch.tensor(ABSORPTION["first"]), torch.tensor(ABSORPTION["last"])
    absorption = (first + (last - first) * t[:, :, 0])[:, :, None, None] * (0.9 + 0.2 * n(3, 1, 1))
    inside = torch.stack([torch.sigmoid((outline + off - rho) / 0.7) for off in FRINGE_PX], dim=1)
    light = 0.9 + 0.05 * (x / size - 0.5)
    rgb = light * torch.exp(-inside * density[:, None] * absorption) + 0.02 * torch.randn(count, 3, size, size, generator=g)
    image = rgb if channels == 3 else (rgb * torch.tensor(LUMINANCE)[:, None, None]).sum(1, keepdim=True)
    return (image.clamp(0, 1) * 255).round().to(torch.uint8), labels


def normalize(images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Camera bytes as model input: [0, 255] -> [-1, 1] (mean 0.5, std 0.5 per channel)."""
    return images.to(dtype).div_(127.5).sub_(1.0)


# --- one supervised training step ------------------------------------------------------------

Step = Callable[["Trainer", Callable], torch.Tensor]


@dataclass
class Trainer:
    """A classifier, its optimizer, one labelled batch, and how one step runs (`step(trainer, part)`)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    pixels: torch.Tensor
    labels: torch.Tensor
    step: Step

    def loss(self) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(self.model(pixel_values=self.pixels).logits, self.labels)

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]


def adam_step(trainer: Trainer, part) -> torch.Tensor:
    """The plain step: parts "forward" (logits and cross-entropy), "backward", "optimizer" (step, gradients cleared)."""
    with part("forward"):
        loss = trainer.loss()
    with part("backward"):
        loss.backward()
    with part("optimizer"):
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def training_built(trainer: Trainer, device: torch.device, info: dict) -> Built:
    """One step per iteration; `reset` restores weights, BatchNorm statistics and optimizer state."""
    state = TrainingState(trainer.model, trainer.optimizer)

    def iteration(part):
        loss = trainer.step(trainer, part)
        synchronize(device)
        info.update(training_info(trainer.model, trainer.optimizer))
        return loss

    return Built(iteration=iteration, items=len(trainer.labels), item_unit="images", model=trainer.model,
                 reset=state.restore, info=info)
