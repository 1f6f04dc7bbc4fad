"""protein-distogram: structure from a sequence encoder and a pairwise decoder (studies.md section 7).

The architecture of "Accurate Protein Structure Prediction by Embeddings and Deep Learning
Representations" (Drori et al., 2019), written here in plain PyTorch with random weights:
residue embeddings -> a sequence encoder (a bidirectional GRU, or a transformer) -> two heads:
the backbone torsion angles (phi, psi) per residue, and a pairwise decoder that turns every
pair of residues (outer concatenation and product of their features) into an L x L distance
matrix through residual 2D convolutions. 3D coordinates are then recovered from the distances
by gradient descent on the stress sum_{i<j} (|x_i - x_j| - D_ij)^2.

One iteration = one protein of `length` residues, as numbered steps with a part each:
1. "encoder": embeddings and the sequence encoder (O(L) for the GRU, O(L^2) attention for
   the transformer);
2. "torsion": the phi/psi head (O(L));
3. "pairwise": the L x L pair features and the 2D convolutions (O(L^2) time and memory);
4. "coordinates": `recovery_steps` gradient-descent steps on the coordinates (O(L^2) each).

Baseline `bigru`. Variants, stacked: `transformer` (a transformer encoder of the same width
instead of the GRU, eager attention) -> `sdpa` (its attention fused).

Dimensions: the paper preset follows the architecture at a plausible published scale; the
paper's exact layer widths were not available here, so the widths below are our choice
(stated in DIMS), not the authors'.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from profilers.attention_adapters import Call, Site, SiteRule
from workloads.base import Built, Params, RunSpec, Workload, register
from workloads.common import param_stats, place, seed_everything, synchronize

RESIDUE_TYPES = 21  # the 20 amino acids and X


@dataclass(frozen=True)
class DistogramParams(Params):
    length: int  # residues L
    recovery_steps: int  # gradient-descent steps from distances to 3D coordinates

    def check(self) -> None:
        if self.length < 2:
            raise ValueError(f"--param length must be at least 2 residues (one pair), got {self.length}")
        if self.recovery_steps < 1:
            raise ValueError(f"--param recovery_steps must be at least 1, got {self.recovery_steps}")


@dataclass(frozen=True)
class DistogramDims:
    embed: int  # residue embedding width
    hidden: int  # GRU hidden size per direction; the encoder's output is 2 * hidden wide
    gru_layers: int
    transformer_layers: int
    heads: int
    pair_channels: int
    decoder_blocks: int  # residual 2D conv blocks
    dilations: tuple[int, ...]  # cycled over the blocks


DIMS = {
    "tiny": DistogramDims(embed=16, hidden=32, gru_layers=1, transformer_layers=2, heads=4,
                          pair_channels=16, decoder_blocks=2, dilations=(1, 2)),
    # Our widths at the published architecture: 2-layer BiGRU of 256 per direction (a 6-layer,
    # 8-head transformer of the same 512 width), 64 pair channels, 16 dilated residual blocks.
    "paper": DistogramDims(embed=128, hidden=256, gru_layers=2, transformer_layers=6, heads=8,
                           pair_channels=64, decoder_blocks=16, dilations=(1, 2, 4, 8)),
}
PARAMS = {"tiny": DistogramParams(length=64, recovery_steps=20), "paper": DistogramParams(length=256, recovery_steps=200)}


# --- the model -------------------------------------------------------------------------------
class BiGRUEncoder(nn.Module):
    def __init__(self, dims: DistogramDims):
        super().__init__()
        self.gru = nn.GRU(dims.embed, dims.hidden, num_layers=dims.gru_layers, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x)[0]


class SelfAttention(nn.Module):
    """Multi-head self-attention over residues: eager matmul-softmax-matmul, or fused SDPA."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads, self.head_dim, self.fused = heads, width // heads, False
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.fused:
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            o = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim), dim=-1) @ v
        return self.out(o.transpose(1, 2).reshape(batch, length, width))


class TransformerLayer(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1, self.attention = nn.LayerNorm(width), SelfAttention(width, heads)
        self.norm2, self.mlp = nn.LayerNorm(width), nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TransformerEncoder(nn.Module):
    """Pre-norm transformer with sinusoidal positions, as wide as the BiGRU's output."""

    def __init__(self, dims: DistogramDims):
        super().__init__()
        width = 2 * dims.hidden
        self.width = width
        self.proj = nn.Linear(dims.embed, width)
        self.layers = nn.ModuleList(TransformerLayer(width, dims.heads) for _ in range(dims.transformer_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        position = torch.arange(x.shape[1], device=x.device, dtype=x.dtype)[:, None]
        frequency = torch.exp(torch.arange(0, self.width, 2, device=x.device, dtype=x.dtype) * (-math.log(10000.0) / self.width))
        x = self.proj(x) + torch.cat([torch.sin(position * frequency), torch.cos(position * frequency)], dim=-1)
        for layer in self.layers:
            x = layer(x)
        return x


class TorsionHead(nn.Module):
    """phi and psi per residue, in radians (-pi, pi], from a (sin, cos) pair each."""

    def __init__(self, width: int):
        super().__init__()
        self.linear = nn.Linear(width, 4)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        sin_cos = self.linear(h).view(*h.shape[:-1], 2, 2)
        return torch.atan2(sin_cos[..., 0], sin_cos[..., 1])  # (B, L, 2): phi, psi


class ResidualBlock2d(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.norm1, self.norm2 = nn.BatchNorm2d(channels), nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.elu(self.norm2(self.conv1(F.elu(self.norm1(x))))))


class PairwiseDecoder(nn.Module):
    """Residue features -> an L x L distance matrix (symmetric, zero diagonal, positive off it)."""

    def __init__(self, width: int, dims: DistogramDims):
        super().__init__()
        c = dims.pair_channels
        self.left, self.right = nn.Linear(width, c), nn.Linear(width, c)
        self.mix = nn.Conv2d(3 * c, c, 1)
        self.blocks = nn.Sequential(*(ResidualBlock2d(c, dims.dilations[i % len(dims.dilations)]) for i in range(dims.decoder_blocks)))
        self.head = nn.Conv2d(c, 1, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        a, b = self.left(h), self.right(h)  # (B, L, c)
        length = h.shape[1]
        a_i = a[:, :, None, :].expand(-1, -1, length, -1)
        b_j = b[:, None, :, :].expand(-1, length, -1, -1)
        pair = torch.cat([a_i, b_j, a_i * b_j], dim=-1).permute(0, 3, 1, 2)  # outer concat and product: (B, 3c, L, L)
        distances = F.softplus(self.head(self.blocks(self.mix(pair)))).squeeze(1)
        distances = (distances + distances.transpose(1, 2)) / 2
        return distances * (1 - torch.eye(length, device=h.device, dtype=h.dtype))


class DistogramNet(nn.Module):
    def __init__(self, dims: DistogramDims):
        super().__init__()
        self.embed = nn.Embedding(RESIDUE_TYPES, dims.embed)
        self.encoder: nn.Module = BiGRUEncoder(dims)
        self.torsion = TorsionHead(2 * dims.hidden)
        self.pairwise = PairwiseDecoder(2 * dims.hidden, dims)


def stress(x: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """sum_{i<j} (|x_i - x_j| - D_ij)^2 per protein: how far coordinates are from the distances."""
    return (torch.cdist(x, x) - distances).pow(2).sum((-2, -1)) / 2


def recover_coordinates(distances: torch.Tensor, start: torch.Tensor, steps: int) -> torch.Tensor:
    """3D coordinates (B, L, 3) whose pairwise distances approach `distances` (B, L, L).

    Gradient descent on the stress from a centred start, step 1 / (2L): from a centred start
    this step is the Guttman transform (SMACOF), so the stress never increases.
    """
    x = start - start.mean(dim=1, keepdim=True)
    step = 1 / (2 * distances.shape[-1])
    for _ in range(steps):
        diff = x[:, :, None, :] - x[:, None, :, :]  # (B, L, L, 3)
        ratio = distances / diff.norm(dim=-1).clamp_min(1e-6)  # D_ij / d_ij
        gradient = 2 * ((1 - ratio)[..., None] * diff).sum(dim=2)  # d stress / d x_i
        x = x - step * gradient
    return x


def fold(net: DistogramNet, residues: torch.Tensor, start: torch.Tensor, steps: int, part) -> dict[str, torch.Tensor]:
    """One protein's structure, its steps marked as parts."""
    with part("encoder"):
        h = net.encoder(net.embed(residues))
    with part("torsion"):
        angles = net.torsion(h)
    with part("pairwise"):
        distances = net.pairwise(h)
    with part("coordinates"):
        coordinates = recover_coordinates(distances, start, steps)
    return {"angles": angles, "distances": distances, "coordinates": coordinates}


# --- the attention the sequence-length recorder reads ----------------------------------------------
def _read_attention(site: Site, module: SelfAttention, args, kwargs) -> Call:
    shape = (args[0] if args else kwargs["x"]).shape
    return Call(site, "sdpa" if module.fused else "eager", "self", False, shape[0], shape[1], shape[1])


SITES = (SiteRule(
    matches=lambda module, path: isinstance(module, SelfAttention),
    site=lambda module, path, axis: Site(path, "SelfAttention", "module", None, axis, module.heads, module.heads,
                                         module.head_dim, None, _read_attention),
),)


# --- variants: each applies one technique --------------------------------------------------
def use_transformer(net: DistogramNet, dims: DistogramDims) -> DistogramNet:
    """A transformer encoder (eager attention) in place of the BiGRU, as wide as its output."""
    net.encoder = TransformerEncoder(dims)
    return net


def fuse_attention(net: DistogramNet, dims: DistogramDims) -> DistogramNet:
    """Fused attention: F.scaled_dot_product_attention in every encoder layer."""
    for module in net.modules():
        if isinstance(module, SelfAttention):
            module.fused = True
    return net


VARIANTS = {
    "bigru": (),
    "transformer": (use_transformer,),
    "sdpa": (use_transformer, fuse_attention),
}


def build(spec: RunSpec) -> Built:
    dims, params = DIMS[spec.preset], spec.params
    seed_everything(spec.seed)
    net = DistogramNet(dims)
    for technique in VARIANTS[spec.variant]:
        net = technique(net, dims)
    net = place(net, spec.torch_device, spec.torch_dtype)
    generator = torch.Generator().manual_seed(spec.seed)
    residues = torch.randint(0, RESIDUE_TYPES, (spec.batch, params.length), generator=generator).to(spec.torch_device)
    start = torch.randn(spec.batch, params.length, 3, generator=generator).mul(params.length ** (1 / 3)).to(spec.torch_device, spec.torch_dtype)
    itemsize = torch.finfo(spec.torch_dtype).bits // 8

    def iteration(part):
        with torch.inference_mode():
            out = fold(net, residues, start, params.recovery_steps, part)
        synchronize(spec.torch_device)
        return out

    return Built(
        iteration=iteration,
        items=spec.batch * params.length,
        item_unit="residues",
        model=net.encoder,  # one encoder forward per protein
        recorded_modules=net,
        attention_sites=SITES,
        info={
            **param_stats(net),
            "encoder_param_count": sum(p.numel() for p in net.encoder.parameters()),
            "pair_features_bytes": spec.batch * params.length ** 2 * 3 * dims.pair_channels * itemsize,
            "encoder": type(net.encoder).__name__,
        },
    )


WORKLOAD = register(Workload(
    name="protein-distogram",
    study="7",
    description="Sequence encoder (BiGRU or transformer) + pairwise decoder to an L x L distance matrix and phi/psi; coordinates by gradient descent",
    kind="inference",
    presets=PARAMS,
    variants=tuple(VARIANTS),
    build=build,
))
