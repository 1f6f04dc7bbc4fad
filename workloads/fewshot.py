"""fewshot-finetune: few-shot fine-tuning of a ResNet for source-free domain adaptation
(studies.md section 9).

A source-pretrained ResNet (here random weights: nothing is downloaded) is fine-tuned on a
few labelled target images: `shots` per class for `classes` classes, one step on all of them
(batch = shots x classes; the images are synthetic, `workloads.vision.particle_images`, one
morphology per class). One iteration = one optimizer step. `reset` restores weights,
BatchNorm statistics and optimizer state before each repeat.

`strategy` (a parameter: it changes what is trained, so runs compare only within one):
- `full`: every weight trained, BatchNorm in training mode.
- `linear-probe`: the first stage of linear-probe-then-fine-tune: the backbone frozen (no
  gradients, BatchNorm statistics fixed), only the classifier head trained. The second stage
  is a `full` step.

Baseline `adam`: plain Adam, parts "forward" (logits and cross-entropy), "backward",
"optimizer" (Adam step, gradients cleared). Variant `sam`: Adam with sharpness-aware
minimization (Foret et al., 2021), the paper's optimizer: a first forward and backward at the
weights w ("forward", "backward"), "perturb" (w + rho g / ||g||, the old weights kept),
a second forward and backward at the perturbed weights ("forward_2", "backward_2", BatchNorm
statistics left untouched), "restore" (w copied back), then "optimizer" with the second
gradient. SAM is not a speed-up but the paper's choice; as a variant it is compared with Adam
at equal settings, and forward_2 + backward_2 measure the cost of its second pass.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch

from workloads.base import Built, Params, RunSpec, Workload, register
from workloads.common import param_stats, seed_everything
from workloads.vision import RESNET50, ResNetDims, Trainer, adam_step, normalize, particle_images, resnet_classifier, training_built

SAM_RHO = 0.05  # the neighbourhood radius of SAM's perturbation (Foret et al.'s default)
LEARNING_RATE = 1e-4


@dataclass(frozen=True)
class FewShotParams(Params):
    shots: int  # labelled target images per class
    classes: int
    strategy: Literal["full", "linear-probe"]
    image_size: int

    def check(self) -> None:
        if self.shots < 1:
            raise ValueError(f"--param shots must be at least 1, got {self.shots}")
        if self.classes < 2:
            raise ValueError(f"--param classes must be at least 2, got {self.classes}")
        if self.image_size < 32:
            raise ValueError(f"--param image_size must be at least 32 (the ResNet downsamples 32x), got {self.image_size}")


DIMS = {
    # A small bottleneck ResNet: ResNet-50's four stages, one block each, a quarter of its width.
    "tiny": ResNetDims(embedding=16, hidden=(64, 128, 256, 512), depths=(1, 1, 1, 1), layer_type="bottleneck"),
    "paper": RESNET50,
}
PARAMS = {
    "tiny": FewShotParams(shots=1, classes=8, strategy="full", image_size=64),
    # Office-31 (31 classes) at 224x224: one shot per class is a batch of 31, within the paper's batch of 32.
    # (--param shots=3 there steps on all 93 images at once, where the paper's loader would take 32.)
    "paper": FewShotParams(shots=1, classes=31, strategy="full", image_size=224),
}


def batchnorm_momentum(model: torch.nn.Module, momentum: list | float) -> list:
    """Set every BatchNorm's momentum (one value, or one each); the old ones. Momentum 0 keeps
    the running statistics as they are."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    old = [m.momentum for m in norms]
    for m, value in zip(norms, momentum if isinstance(momentum, list) else [momentum] * len(norms)):
        m.momentum = value
    return old


def sam_step(trainer: Trainer, part) -> torch.Tensor:
    """Sharpness-aware minimization around the Adam update: the gradient taken at w + e."""
    params = trainer.trainable()
    with part("forward"):
        loss = trainer.loss()
    with part("backward"):
        loss.backward()
    with part("perturb"), torch.no_grad():
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        scale = SAM_RHO / (norm + 1e-12)
        saved = [p.detach().clone() for p in params]
        for p in params:
            p.add_(p.grad * scale)
        trainer.optimizer.zero_grad(set_to_none=True)
    with part("forward_2"):
        momentum = batchnorm_momentum(trainer.model, 0.0)  # the second pass leaves BatchNorm statistics alone
        perturbed_loss = trainer.loss()
    with part("backward_2"):
        perturbed_loss.backward()
        batchnorm_momentum(trainer.model, momentum)
    with part("restore"), torch.no_grad():
        for p, w in zip(params, saved):
            p.copy_(w)
    with part("optimizer"):
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def build_trainer(spec: RunSpec) -> Trainer:
    """The baseline: plain Adam over what the strategy trains."""
    p = spec.params
    model = resnet_classifier(DIMS[spec.preset], 3, p.classes).to(spec.torch_device, spec.torch_dtype).train()
    if p.strategy == "linear-probe":
        model.resnet.requires_grad_(False).eval()  # frozen backbone: no gradients, fixed BatchNorm statistics
    optimizer = torch.optim.Adam([w for w in model.parameters() if w.requires_grad], lr=LEARNING_RATE)
    images, labels = particle_images(p.shots * p.classes, 3, p.image_size, p.classes, spec.seed)
    pixels = normalize(images.to(spec.torch_device), spec.torch_dtype)
    return Trainer(model, optimizer, pixels, labels.to(spec.torch_device), step=adam_step)


# --- variants: each applies one technique --------------------------------------------------

def use_sam(trainer: Trainer) -> Trainer:
    """Sharpness-aware minimization: a second forward and backward at perturbed weights per step."""
    return replace(trainer, step=sam_step)


VARIANTS = {
    "adam": (),
    "sam": (use_sam,),
}


def build(spec: RunSpec) -> Built:
    if spec.batch != 1:
        raise ValueError(f"--batch {spec.batch}: fewshot-finetune's batch is shots x classes (--param shots, --param classes); "
                         "leave --batch at 1")
    seed_everything(spec.seed)
    trainer = build_trainer(spec)
    for technique in VARIANTS[spec.variant]:
        trainer = technique(trainer)
    info = {**param_stats(trainer.model), "strategy": spec.params.strategy, "step_batch": len(trainer.labels),
            "sam_rho": SAM_RHO if trainer.step is sam_step else 0.0}
    return training_built(trainer, spec.torch_device, info)


WORKLOAD = register(Workload(
    name="fewshot-finetune",
    study="9",
    description="few-shot fine-tuning of a ResNet (full or linear probe) with Adam or Adam+SAM, one step per iteration",
    kind="training",
    presets=PARAMS,
    variants=tuple(VARIANTS),
    build=build,
))
