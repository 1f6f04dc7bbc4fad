"""A Llama decoder whose attention can share scores between clustered heads (CHAI), in plain PyTorch.

The body (embeddings, RMSNorms, SwiGLU MLPs, rotary tables, LM head) is transformers'
LlamaForCausalLM built from a config with random weights; each layer's attention is replaced by
`ChaiAttention`, driven by `ChaiLlama.forward` (embed, layers, norm, head), so the K/V cache
and the head clusters are ours. Per request, a `RequestState` holds each layer's caches and
frozen clusters; a layer with as many clusters as heads is plain multi-head attention.

A clustered layer (k < heads clusters, one representative head each):
- only the representatives project Q and K (their rows of Wq, Wk gathered per request), so the
  K cache holds k heads: (batch, k, positions, head_dim), really allocated that small;
- scores = softmax(Q_rep K_rep^T / sqrt(d)) per cluster, shared by the cluster's heads;
- every head multiplies its cluster's scores by its own V (the V cache keeps every head).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from profilers.attention_adapters import Call, Site, SiteRule
from workloads.head_clustering import average_linkage, cosine_distances, head_features, representatives


@dataclass
class Membership:
    """One layer's frozen head clusters for every request of a batch."""

    labels: torch.Tensor  # (batch, heads) the cluster of each head
    wq: list[torch.Tensor]  # per request: (k * head_dim, hidden) the representatives' rows of Wq
    wk: list[torch.Tensor]  # per request: likewise of Wk


@dataclass
class RequestState:
    """Per request (a batch of them): each layer's cluster count, K and V cache, and clusters."""

    counts: tuple[int, ...]  # clusters per layer; = heads: multi-head attention
    keys: list[torch.Tensor]  # (batch, counts[l], positions, head_dim)
    values: list[torch.Tensor]  # (batch, heads, positions, head_dim)
    members: list[Membership | None]
    clustering: bool = False  # the pass that computes features and freezes the clusters
    features: list[torch.Tensor | None] = field(default_factory=list)  # (batch, heads, n) of the last clustering pass

    @classmethod
    def allocate(cls, counts, batch: int, positions: int, heads: int, head_dim: int, dtype, device) -> "RequestState":
        keys = [torch.zeros(batch, k, positions, head_dim, dtype=dtype, device=device) for k in counts]
        values = [torch.zeros(batch, heads, positions, head_dim, dtype=dtype, device=device) for _ in counts]
        return cls(tuple(counts), keys, values, [None] * len(counts), features=[None] * len(counts))


def attend(q: torch.Tensor, keys: torch.Tensor, start: int) -> torch.Tensor:
    """softmax(q keys^T / sqrt(d)), causal: query i (position start + i) sees keys 0..start + i."""
    scores = (q @ keys.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if q.shape[-2] > 1:
        visible = torch.ones(q.shape[-2], keys.shape[-2], dtype=torch.bool, device=q.device).tril(diagonal=start)
        scores = scores.masked_fill(~visible, float("-inf"))
    return scores.float().softmax(dim=-1).to(q.dtype)  # softmax(dtype=...) is 1000x slower on small CPU inputs


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of (batch, heads, L, d) with (1, L, d) tables (Llama's rotate_half form)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1)


def per_request_linear(x: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    """(batch, L, hidden) through each request's own weight (its representatives' rows)."""
    if len(weights) == 1:
        return F.linear(x, weights[0])
    return torch.cat([F.linear(x[b:b + 1], w) for b, w in enumerate(weights)])


class ChaiAttention(nn.Module):
    """Llama self-attention over a RequestState: multi-head, or clustered once the state's clusters are frozen."""

    def __init__(self, q_proj: nn.Linear, k_proj: nn.Linear, v_proj: nn.Linear, o_proj: nn.Linear,
                 heads: int, head_dim: int, layer_idx: int):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = q_proj, k_proj, v_proj, o_proj
        self.heads, self.head_dim, self.layer_idx = heads, head_dim, layer_idx

    def split(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], heads, self.head_dim).transpose(1, 2)

    def forward(self, hidden_states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, start: int,
                state: RequestState) -> torch.Tensor:
        batch, length, _ = hidden_states.shape
        layer = self.layer_idx
        v = self.split(self.v_proj(hidden_states), self.heads)
        members = None if state.clustering else state.members[layer]
        if members is None:  # every head computes its own scores
            q = rotate(self.split(self.q_proj(hidden_states), self.heads), cos, sin)
            k = rotate(self.split(self.k_proj(hidden_states), self.heads), cos, sin)
        else:  # only the representatives do
            k_heads = len(members.wq[0]) // self.head_dim
            q = rotate(self.split(per_request_linear(hidden_states, members.wq), k_heads), cos, sin)
            k = rotate(self.split(per_request_linear(hidden_states, members.wk), k_heads), cos, sin)
        if state.clustering:  # the first prompt tokens, no cache: features, then clusters frozen
            probs = attend(q, k, 0)
            self.freeze_clusters(probs, state)
        else:
            state.keys[layer][:, :, start:start + length] = k
            state.values[layer][:, :, start:start + length] = v
            k, v = state.keys[layer][:, :, :start + length], state.values[layer][:, :, :start + length]
            probs = attend(q, k, start)
            if members is not None:  # each head takes its cluster's scores
                probs = probs[torch.arange(batch, device=probs.device)[:, None], members.labels]
        out = (probs @ v).transpose(1, 2).reshape(batch, length, self.heads * self.head_dim)
        return self.o_proj(out)

    def freeze_clusters(self, probs: torch.Tensor, state: RequestState) -> None:
        """Group the heads by the cosine distance of their scores (average linkage) into the layer's
        count, per request; keep each cluster's representative rows of Wq and Wk."""
        layer, clusters = self.layer_idx, state.counts[self.layer_idx]
        features = head_features(probs)
        state.features[layer] = features
        if clusters >= self.heads:
            state.members[layer] = None
            return
        labels, wq, wk = [], [], []
        q_rows = self.q_proj.weight.view(self.heads, self.head_dim, -1)
        k_rows = self.k_proj.weight.view(self.heads, self.head_dim, -1)
        for distances in cosine_distances(features).cpu().numpy():
            request_labels = average_linkage(distances, clusters)
            reps = torch.as_tensor(representatives(distances, request_labels), device=probs.device)
            labels.append(torch.as_tensor(request_labels, device=probs.device))
            wq.append(q_rows[reps].reshape(-1, q_rows.shape[-1]))
            wk.append(k_rows[reps].reshape(-1, k_rows.shape[-1]))
        state.members[layer] = Membership(torch.stack(labels), wq, wk)


class ChaiLlama(nn.Module):
    """LlamaForCausalLM's body with ChaiAttention in every layer; forward returns the last position's logits."""

    def __init__(self, llama: nn.Module):
        super().__init__()
        self.llama = llama
        config = llama.config
        self.heads, self.head_dim = config.num_attention_heads, config.hidden_size // config.num_attention_heads
        for index, layer in enumerate(llama.model.layers):
            old = layer.self_attn
            layer.self_attn = ChaiAttention(old.q_proj, old.k_proj, old.v_proj, old.o_proj, self.heads, self.head_dim, index)

    @property
    def attention(self) -> list[ChaiAttention]:
        return [layer.self_attn for layer in self.llama.model.layers]

    def forward(self, ids: torch.Tensor, start: int, state: RequestState) -> torch.Tensor:
        body = self.llama.model
        h = body.embed_tokens(ids)
        positions = torch.arange(start, start + ids.shape[1], device=ids.device)[None]
        cos, sin = body.rotary_emb(h, positions)
        for layer in body.layers:
            h = h + layer.self_attn(layer.input_layernorm(h), cos, sin, start, state)
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return self.llama.lm_head(body.norm(h[:, -1]))


def _read_chai(site: Site, module: ChaiAttention, args: tuple, kwargs: dict) -> Call:
    hidden = args[0] if args else kwargs["hidden_states"]
    start = args[3] if len(args) > 3 else kwargs["start"]
    state = args[4] if len(args) > 4 else kwargs["state"]
    if state.clustering:
        implementation = "clustering"  # all heads, the first prompt tokens: features for the clusters
    else:
        implementation = "clustered" if state.members[module.layer_idx] is not None else "mha"
    batch, length = hidden.shape[0], hidden.shape[1]
    kind = "decode" if start > 0 and length == 1 else "prefill"
    return Call(site, implementation, kind, False, batch, length, start + length)


def _chai_site(module: ChaiAttention, path: str, axis: str | None) -> Site:
    return Site(path, type(module).__name__, "module", None, axis, module.heads, module.heads, module.head_dim,
                module.layer_idx, _read_chai)


SITE_RULE = SiteRule(matches=lambda module, path: isinstance(module, ChaiAttention), site=_chai_site)
