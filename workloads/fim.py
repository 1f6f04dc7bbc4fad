"""fim-classifier and fim-train: flow-imaging-microscopy particle classifiers (studies.md section 8).

A ResNet or a ViT (transformers configs, random weights) classifies particle images by stress
source (heat or mechanical: two labels), in colour (3 channels) or monochrome (1 channel).
The images are synthetic stand-ins for the paper's unpublished data set
(`workloads.vision.particle_images`, deterministic per seed), generated once at build as a
camera stores them (uint8).

Two workloads, because the contract gives a workload one kind:
- `fim-classifier` (inference): one iteration classifies `batch` images as numbered steps, a
  part each: 1. "preprocess" (camera bytes to normalized floats), 2. "forward" (the model),
  3. "postprocess" (softmax, predicted class and its probability).
- `fim-train` (training): one supervised Adam step on the same batch: "forward" (logits and
  cross-entropy), "backward", "optimizer" (Adam step, gradients cleared). `reset` restores
  weights, BatchNorm statistics and Adam state before each repeat.

Parameters: `arch` (resnet | vit), `channels` (1 | 3), `image_size`. The architecture is a
parameter, not a variant: a variant is an optimization of one model, and a ResNet is not an
optimized ViT. Model dimensions per preset are plain data below.

Baseline `eager`: unfused attention (ViT), contiguous NCHW tensors. Variants, stacked:
    eager -> sdpa (fused attention; the ResNet has no attention: the same work there)
          -> channels-last (NHWC memory format for convolutions: every ResNet layer, the ViT's
             patch projection)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from workloads.base import Built, Params, RunSpec, Workload, register
from workloads.common import param_stats, place, seed_everything, synchronize
from workloads.vision import (RESNET50, VIT_B16, ResNetDims, Trainer, ViTDims, adam_step, normalize, particle_images, resnet_classifier,
                              training_built, vit_classifier)

LABELS = ("heat", "mechanical")  # the paper's stress sources


@dataclass(frozen=True)
class FimParams(Params):
    arch: Literal["resnet", "vit"]
    channels: int  # 1 monochrome, 3 colour
    image_size: int  # pixels per side

    def check(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"--param channels must be 1 (monochrome) or 3 (colour), got {self.channels}")
        if self.image_size < 32:
            raise ValueError(f"--param image_size must be at least 32 (the ResNets downsample 32x), got {self.image_size}")


@dataclass(frozen=True)
class FimDims:
    resnet: ResNetDims
    vit: ViTDims


DIMS = {
    # A quarter of the paper's pixels on the same feature grids: the tiny ResNet (16x
    # downsampling) ends on 2x2 like ResNet-50 (32x) at 64x64, and the tiny ViT's 8-pixel
    # patches make the same 4x4 patches (16 tokens + CLS) as ViT-B/16 at 64x64.
    "tiny": FimDims(resnet=ResNetDims(embedding=32, hidden=(64, 128, 256), depths=(1, 1, 1), layer_type="basic"),
                    vit=ViTDims(patch=8, hidden=128, layers=4, heads=4, intermediate=512)),
    # ResNet-50 and ViT-B/16, the paper's two backbone families, at the particles' 64x64.
    "paper": FimDims(resnet=RESNET50, vit=VIT_B16),
}
PARAMS = {
    "tiny": FimParams(arch="vit", channels=3, image_size=32),
    "paper": FimParams(arch="vit", channels=3, image_size=64),
}


@dataclass
class Classifier:
    model: torch.nn.Module
    images: torch.Tensor  # (batch, channels, size, size) uint8
    labels: torch.Tensor
    memory_format: torch.memory_format = torch.contiguous_format

    def pixels(self, dtype: torch.dtype) -> torch.Tensor:
        return normalize(self.images, dtype).contiguous(memory_format=self.memory_format)


def build_classifier(spec: RunSpec) -> Classifier:
    """The baseline: eager attention, NCHW."""
    dims, p = DIMS[spec.preset], spec.params
    if p.arch == "resnet":
        model = resnet_classifier(dims.resnet, p.channels, len(LABELS))
    else:
        model = vit_classifier(dims.vit, p.channels, len(LABELS), p.image_size)
    images, labels = particle_images(spec.batch, p.channels, p.image_size, len(LABELS), spec.seed)
    return Classifier(model, images.to(spec.torch_device), labels.to(spec.torch_device))


# --- variants: each applies one technique --------------------------------------------------

def use_sdpa(classifier: Classifier) -> Classifier:
    """Fused attention (torch's scaled_dot_product_attention) in the ViT; a ResNet has no attention."""
    if classifier.model.config.model_type == "vit":
        classifier.model.set_attn_implementation("sdpa")
    return classifier


def use_channels_last(classifier: Classifier) -> Classifier:
    """NHWC memory format for weights and input: convolutions without layout conversions."""
    classifier.model.to(memory_format=torch.channels_last)
    classifier.memory_format = torch.channels_last
    return classifier


VARIANTS = {
    "eager": (),
    "sdpa": (use_sdpa,),
    "channels-last": (use_sdpa, use_channels_last),
}


def prepare(spec: RunSpec) -> Classifier:
    seed_everything(spec.seed)
    classifier = build_classifier(spec)
    for technique in VARIANTS[spec.variant]:
        classifier = technique(classifier)
    return classifier


def describe(classifier: Classifier, spec: RunSpec) -> dict:
    config = classifier.model.config
    return {
        **param_stats(classifier.model),
        "arch": spec.params.arch,
        "input_bytes": classifier.images.numel() * classifier.images.element_size(),
        "attn_implementation": config._attn_implementation if config.model_type == "vit" else "none",
        "memory_format": "channels_last" if classifier.memory_format is torch.channels_last else "contiguous",
    }


# --- fim-classifier: inference ---------------------------------------------------------------

def build_inference(spec: RunSpec) -> Built:
    classifier = prepare(spec)
    model = place(classifier.model, spec.torch_device, spec.torch_dtype)

    @torch.inference_mode()
    def iteration(part):
        # 1. camera bytes to model input
        with part("preprocess"):
            pixels = classifier.pixels(spec.torch_dtype)
        # 2. the classifier
        with part("forward"):
            logits = model(pixel_values=pixels).logits
        # 3. predicted stress source and its probability
        with part("postprocess"):
            confidence, predicted = logits.float().softmax(dim=-1).max(dim=-1)
        synchronize(spec.torch_device)
        return predicted, confidence

    return Built(iteration=iteration, items=spec.batch, item_unit="images", model=model, info=describe(classifier, spec))


# --- fim-train: one supervised training step ---------------------------------------------------

def build_training(spec: RunSpec) -> Built:
    classifier = prepare(spec)
    model = classifier.model.to(spec.torch_device, spec.torch_dtype).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    trainer = Trainer(model, optimizer, classifier.pixels(spec.torch_dtype), classifier.labels, step=adam_step)
    return training_built(trainer, spec.torch_device, describe(classifier, spec))


DESCRIPTION = "flow-imaging-microscopy particle classifier (ResNet or ViT, colour or monochrome, synthetic particle images)"
INFERENCE = register(Workload(
    name="fim-classifier", study="8", description=DESCRIPTION + ": inference", kind="inference",
    presets=PARAMS, variants=tuple(VARIANTS), build=build_inference,
))
TRAINING = register(Workload(
    name="fim-train", study="8", description=DESCRIPTION + ": one Adam training step", kind="training",
    presets=PARAMS, variants=tuple(VARIANTS), build=build_training,
))
