"""attention-numerics, mode "weights": how far flash attention moves a model's weights in training.

Four short trainings of the same tiny Llama (workloads.attention_numerics.numerics_llama) on
the same random token batch, AdamW, `train_steps` steps each, from weights that are restored
at the start of every iteration (so iterations repeat exactly):
- plain:       autocast to compute_dtype, attention = plain attention in compute_dtype
- tiled-flash: the same, attention = tiled flash attention in compute_dtype (same seed)
- other-init:  as plain, from another random initialization (seed + 1): reference band 1
- fp32:        as plain, all in float32 (no autocast): reference band 2, low-precision training
After every step, each of the last three is compared with `plain`: the max |difference| of the
flattened weights and their 1-D Wasserstein distance -> rows (subject, metric, value,
position = step). Parts: one per training, then "distance".
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from workloads.attention_math import COMPUTE_DTYPES, sorted_values, subjects, wasserstein_sorted
from workloads.base import Built, RunSpec
from workloads.common import param_stats

LEARNING_RATE = 1e-3
# name: (attention subject, low precision, init seed offset)
TRAININGS = {
    "plain": ("plain", True, 0),
    "tiled-flash": ("tiled-flash", True, 0),
    "other-init": ("plain", True, 1),
    "fp32": ("plain", False, 0),
}
BASELINE = "plain"


@dataclass(frozen=True)
class Snapshot:
    """A model's weights after one step: flattened, and their values sorted (for the Wasserstein distance)."""

    flat: torch.Tensor
    sorted: torch.Tensor

    @classmethod
    def of(cls, model: torch.nn.Module) -> "Snapshot":
        flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])
        return cls(flat, sorted_values(flat))

    def distance(self, other: "Snapshot") -> dict[str, float]:
        return {"max_abs": (self.flat - other.flat).abs().max().item(), "wasserstein": wasserstein_sorted(self.sorted, other.sorted)}


class Training:
    """One of the four trainings: its model (built once), its initial weights, its precision."""

    def __init__(self, spec: RunSpec, subject: str, low_precision: bool, seed_offset: int):
        from workloads.attention_numerics import numerics_llama

        p = spec.params
        self.device = spec.torch_device
        self.dtype = COMPUTE_DTYPES[p.compute_dtype] if low_precision else torch.float32
        implementation = subjects(p.block_size)[subject]

        def attend(q, k, v):
            with torch.autocast(self.device.type, enabled=False):
                return implementation(q.to(self.dtype), k.to(self.dtype), v.to(self.dtype), causal=True).to(q.dtype)

        self.model = numerics_llama(spec, attend, spec.seed + seed_offset).train()
        self.initial = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    @torch.no_grad()
    def restore(self) -> None:
        for key, value in self.model.state_dict().items():
            value.copy_(self.initial[key])

    def run(self, tokens: torch.Tensor, steps: int) -> list[Snapshot]:
        """Train from the initial weights; the flattened weights after each step."""
        self.restore()
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=LEARNING_RATE)
        low = self.dtype != torch.float32
        snapshots = []
        for _ in range(steps):
            with torch.autocast(self.device.type, dtype=self.dtype) if low else nullcontext():
                loss = self.model(input_ids=tokens, labels=tokens, use_cache=False).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            snapshots.append(Snapshot.of(self.model))
        return snapshots


def build_weights(spec: RunSpec) -> Built:
    p = spec.params
    trainings = {name: Training(spec, *how) for name, how in TRAININGS.items()}
    generator = torch.Generator().manual_seed(spec.seed)
    vocab = trainings[BASELINE].model.config.vocab_size
    tokens = torch.randint(0, vocab, (spec.batch, p.seq_len), generator=generator).to(spec.torch_device)
    rows: list[dict] = []

    def iteration(part):
        weights = {}
        for name, training in trainings.items():
            with part(name):
                weights[name] = training.run(tokens, p.train_steps)
        with part("distance"):
            rows[:] = [
                {"subject": name, "metric": metric, "value": value, "position": step + 1}
                for name in trainings if name != BASELINE
                for step, (ours, base) in enumerate(zip(weights[name], weights[BASELINE]))
                for metric, value in ours.distance(base).items()
            ]

    baseline = trainings[BASELINE].model
    return Built(
        iteration=iteration, items=len(trainings) * p.train_steps, item_unit="training steps", model=baseline,
        recorded_modules={name: t.model for name, t in trainings.items()},
        part_items={name: p.train_steps for name in trainings},
        numerics=lambda: list(rows),
        info={**param_stats(baseline), "trainings": ", ".join(trainings), "learning_rate": LEARNING_RATE},
    )
