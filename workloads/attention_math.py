"""The attention implementations study 5 compares, and the figures that compare them.

Every implementation takes q, k, v of shape (batch, heads, length, head_dim) and computes in
their dtype; `reference_attention` is the golden value: plain attention in float64.
- `plain_attention`: matmul, softmax, matmul (the whole score matrix at once).
- `sdpa_attention`: torch's scaled_dot_product_attention held to one backend (flash or math).
- `tiled_flash_attention`: flash attention's algorithm written out in PyTorch: key/value
  tiles of `block_size` positions, an online softmax whose running max, running sum and
  output accumulator stay in the inputs' dtype, so each tile's rescaling rounds them.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

COMPUTE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
SDPA_BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "math": SDPBackend.MATH}
METRICS = ("max_abs", "mean_abs", "std_abs")


def _causal_mask(q_len: int, kv_start: int, kv_stop: int, kv_len: int, device) -> torch.Tensor:
    """True where a key lies after its query (queries aligned to the end of the keys)."""
    queries = torch.arange(q_len, device=device)[:, None] + (kv_len - q_len)
    keys = torch.arange(kv_start, kv_stop, device=device)[None, :]
    return keys > queries


def plain_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v, every step in the inputs' dtype."""
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    if causal:
        scores = scores.masked_fill(_causal_mask(q.shape[-2], 0, k.shape[-2], k.shape[-2], q.device), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """The golden value: plain attention on the same inputs, computed in float64."""
    return plain_attention(q.double(), k.double(), v.double(), causal)


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str, causal: bool = False) -> torch.Tensor:
    """torch's fused attention, held to one backend ('flash' or 'math'); an error if it cannot run it."""
    with sdpa_kernel(SDPA_BACKENDS[backend]):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def tiled_flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int,
                          causal: bool = False) -> torch.Tensor:
    """Flash attention's online softmax over key/value tiles of `block_size` positions (the
    last tile shorter when it does not divide the length), every running figure in q's dtype.

    Per tile j: scores s_j; new max m' = max(m, rowmax s_j); p_j = exp(s_j - m');
    sum l = exp(m - m') l + rowsum p_j; output acc = exp(m - m') acc + p_j v_j. At the end, acc / l.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    scale, kv_len = q.shape[-1] ** -0.5, k.shape[-2]
    running_max = running_sum = acc = None
    for start in range(0, kv_len, block_size):
        stop = min(start + block_size, kv_len)
        scores = (q @ k[..., start:stop, :].transpose(-2, -1)) * scale
        if causal:
            scores = scores.masked_fill(_causal_mask(q.shape[-2], start, stop, kv_len, q.device), float("-inf"))
        tile_max = scores.amax(dim=-1, keepdim=True)
        if acc is None:  # the first tile starts the running figures (every query sees key 0)
            running_max = tile_max
            p = torch.exp(scores - running_max)
            running_sum, acc = p.sum(dim=-1, keepdim=True), p @ v[..., start:stop, :]
            continue
        new_max = torch.maximum(running_max, tile_max)
        rescale = torch.exp(running_max - new_max)
        p = torch.exp(scores - new_max)
        running_sum = rescale * running_sum + p.sum(dim=-1, keepdim=True)
        acc = rescale * acc + p @ v[..., start:stop, :]
        running_max = new_max
    return acc / running_sum


def subjects(block_size: int) -> dict:
    """The compared implementations by name: each f(q, k, v, causal) -> output in q's dtype."""
    return {
        "plain": plain_attention,
        "sdpa-flash": lambda q, k, v, causal=False: sdpa_attention(q, k, v, "flash", causal),
        "sdpa-math": lambda q, k, v, causal=False: sdpa_attention(q, k, v, "math", causal),
        "tiled-flash": lambda q, k, v, causal=False: tiled_flash_attention(q, k, v, block_size, causal),
    }


def deviation(output: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """max, mean and std of |output - reference| (computed in float64)."""
    diff = (output.double() - reference.double()).abs()
    return {"max_abs": diff.max().item(), "mean_abs": diff.mean().item(), "std_abs": diff.std().item() if diff.numel() > 1 else 0.0}


def wasserstein_1d(a: torch.Tensor, b: torch.Tensor) -> float:
    """1-D Wasserstein (earth mover's) distance between the values of two equal-size tensors:
    the mean absolute difference of their sorted values."""
    return wasserstein_sorted(sorted_values(a), sorted_values(b))


def sorted_values(t: torch.Tensor) -> torch.Tensor:
    """The tensor's values, flattened and sorted, in float64 (numpy's sort: many times faster than torch's on CPU)."""
    return torch.from_numpy(np.sort(t.detach().double().flatten().cpu().numpy()))


def wasserstein_sorted(a: torch.Tensor, b: torch.Tensor) -> float:
    """`wasserstein_1d` of two 1-D tensors already sorted (sort each once, compare many times)."""
    if a.numel() != b.numel():
        raise ValueError(f"the 1-D Wasserstein distance here needs equal sizes, got {a.numel()} and {b.numel()}")
    return (a - b).abs().mean().item()


def random_qkv(batch: int, heads: int, seq_len: int, head_dim: int, dtype: torch.dtype, seed: int,
               device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v drawn from N(0, 1) in float32 and rounded to `dtype` once, so the reference sees
    exactly the values the tested implementations see: any deviation is the computation's."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, heads, seq_len, head_dim)
    return tuple(torch.randn(shape, generator=generator).to(device=device, dtype=dtype) for _ in range(3))
