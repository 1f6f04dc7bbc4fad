"""chai: clustered head attention (CHAI) in a Llama-style decoder (studies.md section 3).

Greedy decoding as in llm-decode (a random prompt, prefill then one forward per new token, EOS
never stops it), over our own attention (workloads/chai_attention.py) with a preallocated K/V
cache per request.

Variants:
- `mha`: the baseline, multi-head attention; every head computes its scores and keeps its K.
- `chai`: offline, each layer's cluster count (`cluster_counts = "elbow"`: k-means over sampled
  attention scores for k = 1..heads, the elbow of the inertia curve; cached per model, its cost
  reported as `offline_elbow_us`; `"reference"`: the paper's setup, all heads in the first
  18/32 of the layers and 4 clusters after). Online, per request (part "clustering"): one
  multi-head forward over the first `feature_tokens` prompt tokens, each head's scores its
  feature, average-linkage clustering by cosine distance into the layer's count; membership is
  then frozen for the prefill and decode. Layers with fewer clusters than heads keep only the
  representatives' K.

Random weights give heads no redundancy. `heads_mode = "correlated"` builds redundancy in where
the paper found it, in the later layers: after the first 18/32 of the layers, the heads form
`head_groups` groups (members drawn at random) whose Wq and Wk rows share 99.75% of their
variance (w = 0.9987 * group + 0.05 * own noise), so the clustering should find the groups
there, keep every head before, and CHAI's output stay close to MHA's. In both modes Wq and Wk
are drawn with std QK_SCALE / sqrt(hidden), scores with std ~1: at Llama's init (std 0.02)
every head's scores are nearly uniform and every head looks alike; much sharper scores turn
a small difference between heads into a large one in the output.

Parts: "clustering" (chai, when some layer clusters its heads), "prefill", "decode". Figures
(info): k_cache_bytes, v_cache_bytes, kv_cache_bytes (from the tensors held), key_heads_count
(K heads kept over all layers), offline_elbow_us. Numerics rows, against MHA on the same weights:
the logits' largest absolute deviation (teacher-forced on MHA's tokens) beside MHA's own largest
logit, the fraction of next tokens (teacher-forced) and of greedy tokens equal to MHA's; and per
layer (position), the cluster count beside the groups of heads built into the weights.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Literal

import torch

from profilers.parts import untimed_part
from workloads.base import Built, RunSpec, Workload, register
from workloads.chai_attention import SITE_RULE, ChaiLlama, RequestState
from workloads.common import param_stats, place, seed_everything, synchronize, tensor_bytes
from workloads.head_clustering import layer_cluster_count
from workloads.llm_decode import DecodeParams, LlamaDims, llama_config

QK_SCALE = 1.0  # Wq, Wk std = QK_SCALE / sqrt(hidden): scores with std ~ QK_SCALE**2
GROUP_NOISE = 0.05  # correlated heads: each head's own share of its Wq/Wk rows
SAMPLE_PROMPTS, SAMPLE_TOKENS = 4, 16  # offline: attention scores sampled from these random prompts
REFERENCE_FULL_SHARE, REFERENCE_CLUSTERS = 18 / 32, 4  # the paper's LLaMA-7B setup


@dataclass(frozen=True)
class ChaiParams(DecodeParams):
    heads_mode: Literal["random", "correlated"] = "random"
    head_groups: int = 2  # correlated heads: groups per layer
    feature_tokens: int = 5  # prompt tokens whose attention scores are a head's feature
    cluster_counts: Literal["elbow", "reference"] = "elbow"

    def check(self) -> None:
        super().check()
        if not 1 <= self.feature_tokens <= self.prompt_len:
            raise ValueError(f"--param feature_tokens must be in 1..prompt_len ({self.prompt_len}), got {self.feature_tokens}")
        if self.head_groups < 1:
            raise ValueError(f"--param head_groups must be at least 1, got {self.head_groups}")


DIMS = {
    "tiny": LlamaDims(hidden=256, layers=4, heads=8, kv_heads=8, intermediate=512, vocab=1000, max_positions=512),
    # LLaMA-7B
    "paper": LlamaDims(hidden=4096, layers=32, heads=32, kv_heads=32, intermediate=11008, vocab=32000, max_positions=2048),
}
PARAMS = {
    "tiny": ChaiParams(prompt_len=32, new_tokens=16, heads_mode="correlated"),  # the mechanism at work by default
    "paper": ChaiParams(prompt_len=512, new_tokens=128, head_groups=4, cluster_counts="reference"),
}


def init_query_key(model: ChaiLlama, mode: str, groups: int, generator: torch.Generator) -> list[torch.Tensor | None]:
    """Wq and Wk drawn again: independent per head (random), or, in the layers after the paper's
    first 18/32 (correlated), per group of heads plus a little own noise. Returns each layer's
    group of every head (None: independent heads)."""
    heads, head_dim, layers = model.heads, model.head_dim, len(model.attention)
    grouped_from = round(layers * REFERENCE_FULL_SHARE) if mode == "correlated" else layers
    group_of = []
    for index, attention in enumerate(model.attention):
        hidden = attention.q_proj.in_features
        group_of.append(torch.randperm(heads, generator=generator) % groups if index >= grouped_from else None)
        for proj in (attention.q_proj, attention.k_proj):
            std = QK_SCALE / hidden ** 0.5
            rows = torch.randn(heads, head_dim, hidden, generator=generator) * std
            if group_of[-1] is not None:
                shared = torch.randn(groups, head_dim, hidden, generator=generator) * std
                rows = (1 - GROUP_NOISE ** 2) ** 0.5 * shared[group_of[-1]] + GROUP_NOISE * rows
            with torch.no_grad():
                proj.weight.copy_(rows.reshape(heads * head_dim, hidden))
    return group_of


@dataclass
class Decoder:
    """Greedy decoding: (clustering) + prefill + decode over one RequestState."""

    model: ChaiLlama
    prompt: torch.Tensor  # (batch, prompt_len)
    new_tokens: int
    feature_tokens: int
    counts: tuple[int, ...]  # clusters per layer; every layer at `heads`: multi-head attention
    groups_built: tuple[int, ...] = ()  # per layer, the groups of heads built into Wq/Wk (heads: independent)
    state: RequestState | None = None
    first: torch.Tensor | None = None

    @property
    def clustered(self) -> bool:
        return any(k < self.model.heads for k in self.counts)

    def allocate(self) -> "Decoder":
        p = self.model.llama.lm_head.weight
        positions = self.prompt.shape[1] + self.new_tokens
        self.state = RequestState.allocate(self.counts, self.prompt.shape[0], positions, self.model.heads,
                                           self.model.head_dim, p.dtype, p.device)
        return self

    @torch.inference_mode()
    def cluster(self) -> None:
        """Each layer's heads clustered by their scores over the first prompt tokens; frozen for the request."""
        self.state.clustering = True
        try:
            self.model(self.prompt[:, :self.feature_tokens], 0, self.state)
        finally:
            self.state.clustering = False

    @torch.inference_mode()
    def prefill(self) -> torch.Tensor:
        self.first = self.model(self.prompt, 0, self.state).argmax(dim=-1, keepdim=True)
        return self.first

    @torch.inference_mode()
    def decode(self, forced: torch.Tensor | None = None, logits: list | None = None) -> torch.Tensor:
        """The new_tokens - 1 tokens after the first; `forced` feeds those tokens instead (teacher forcing)."""
        tokens, start = [self.first], self.prompt.shape[1]
        for step in range(self.new_tokens - 1):
            fed = tokens[-1] if forced is None else forced[:, step:step + 1]
            out = self.model(fed, start + step, self.state)
            if logits is not None:
                logits.append(out)
            tokens.append(out.argmax(dim=-1, keepdim=True))
        return torch.cat(tokens, dim=1)

    def generate(self, part) -> torch.Tensor:
        if self.clustered:
            with part("clustering"):
                self.cluster()
        with part("prefill"):
            self.prefill()
        with part("decode"):
            return self.decode()

    @torch.inference_mode()
    def logits_along(self, tokens: torch.Tensor) -> torch.Tensor:
        """(new_tokens, batch, vocab) logits of every step, fed `tokens` (teacher forcing)."""
        if self.clustered:
            self.cluster()
        logits = [self.model(self.prompt, 0, self.state)]
        self.first = tokens[:, :1]
        self.decode(forced=tokens, logits=logits)
        return torch.stack(logits)


def build_decoder(dims: LlamaDims, spec: RunSpec) -> Decoder:
    """The baseline: every layer multi-head."""
    from transformers import LlamaForCausalLM

    llama = LlamaForCausalLM(llama_config(dims))
    model = ChaiLlama(llama)
    generator = torch.Generator().manual_seed(spec.seed)
    group_of = init_query_key(model, spec.params.heads_mode, spec.params.head_groups, generator)
    model = place(model, spec.torch_device, spec.torch_dtype)
    prompt = torch.randint(0, dims.vocab, (spec.batch, spec.params.prompt_len), generator=generator).to(spec.torch_device)
    groups_built = tuple(dims.heads if g is None else int(g.max()) + 1 for g in group_of)
    return Decoder(model, prompt, spec.params.new_tokens, spec.params.feature_tokens, (dims.heads,) * dims.layers, groups_built)


# --- the offline step: cluster counts per layer ------------------------------------------------
_ELBOWS: dict[tuple, tuple[tuple[int, ...], float]] = {}


def elbow_counts(decoder: Decoder, key: tuple, seed: int) -> tuple[tuple[int, ...], float]:
    """Per layer, the elbow of k-means over the heads' scores on SAMPLE_PROMPTS random prompts; with
    the seconds it took. Cached by `key` (everything that decides the weights)."""
    if key not in _ELBOWS:
        started = time.perf_counter()
        model = decoder.model
        generator = torch.Generator().manual_seed(seed + 1)
        samples = torch.randint(0, model.llama.config.vocab_size, (SAMPLE_PROMPTS, SAMPLE_TOKENS), generator=generator)
        layers = len(model.attention)
        probe = Decoder(model, samples.to(decoder.prompt.device), 2, SAMPLE_TOKENS, (model.heads,) * layers).allocate()
        probe.cluster()  # all heads: records each layer's features, clusters nothing
        counts = []
        for features in probe.state.features:  # (samples, heads, n) -> (heads, samples * n)
            counts.append(layer_cluster_count(features.transpose(0, 1).flatten(1), seed=seed)[0])
        _ELBOWS[key] = (tuple(counts), time.perf_counter() - started)
    return _ELBOWS[key]


def reference_counts(layers: int, heads: int) -> tuple[int, ...]:
    """The paper's setup: every head in the first 18/32 of the layers, REFERENCE_CLUSTERS after."""
    full = round(layers * REFERENCE_FULL_SHARE)
    return (heads,) * full + (min(REFERENCE_CLUSTERS, heads),) * (layers - full)


# --- variants --------------------------------------------------------------------------------------

def cluster_heads(decoder: Decoder, spec: RunSpec, info: dict) -> Decoder:
    """CHAI: each layer's cluster count from the offline step; heads clustered per request."""
    if spec.params.cluster_counts == "reference":
        counts = reference_counts(len(decoder.counts), decoder.model.heads)
    else:
        key = (spec.preset, spec.dtype, spec.device, spec.seed, spec.params.heads_mode, spec.params.head_groups)
        counts, seconds = elbow_counts(decoder, key, spec.seed)
        info["offline_elbow_us"] = seconds * 1e6
    return replace(decoder, counts=counts)


VARIANTS = {"mha": (), "chai": (cluster_heads,)}


def numerics_rows(decoder: Decoder, reference: Decoder) -> list[dict]:
    """Logits and greedy tokens of `decoder` against multi-head attention on the same weights
    (`reference`); each layer's cluster count beside the groups of heads built into its weights."""
    ours = decoder.generate(untimed_part)
    theirs = reference.generate(untimed_part)
    logits, mha_logits = decoder.logits_along(theirs), reference.logits_along(theirs)
    figures = {
        ("logits", "max_abs_diff_vs_mha"): (logits - mha_logits).abs().max(),
        ("logits", "mha_max_abs"): mha_logits.abs().max(),
        ("greedy_tokens", "fraction_equal_vs_mha"): (ours == theirs).float().mean(),
        # teacher-forced: every step from the same inputs, so one early difference does not carry on
        ("next_token", "fraction_equal_vs_mha"): (logits.argmax(-1) == mha_logits.argmax(-1)).float().mean(),
    }
    rows = [{"subject": s, "metric": m, "value": float(v), "position": None} for (s, m), v in figures.items()]
    for subject, counts in (("clusters", decoder.counts), ("head_groups_built", decoder.groups_built)):
        rows += [{"subject": subject, "metric": "count", "value": float(k), "position": layer} for layer, k in enumerate(counts)]
    return rows


def build_variant(spec: RunSpec, info: dict) -> tuple[Decoder, Decoder]:
    """The variant's decoder, its cache allocated, and the baseline's (no cache yet) on the same weights."""
    seed_everything(spec.seed)
    baseline = build_decoder(DIMS[spec.preset], spec)
    decoder = baseline
    for technique in VARIANTS[spec.variant]:
        decoder = technique(decoder, spec, info)
    return replace(decoder).allocate(), baseline


def build(spec: RunSpec) -> Built:
    dims, params = DIMS[spec.preset], spec.params
    if params.prompt_len + params.new_tokens > dims.max_positions:
        raise ValueError(f"--param new_tokens={params.new_tokens}: prompt ({params.prompt_len}) + new tokens exceeds the "
                         f"{spec.preset} preset's {dims.max_positions} positions")
    if dims.heads % params.head_groups:
        raise ValueError(f"--param head_groups must divide the {spec.preset} preset's {dims.heads} heads, got {params.head_groups}")
    info = {"layers": dims.layers, "heads": dims.heads, "head_dim": dims.hidden // dims.heads, "hidden": dims.hidden}
    decoder, baseline = build_variant(spec, info)
    info.update(param_stats(decoder.model), clusters_per_layer=",".join(map(str, decoder.counts)),
                key_heads_count=sum(decoder.counts))

    def iteration(part):
        tokens = decoder.generate(part)
        info["k_cache_bytes"] = tensor_bytes(decoder.state.keys)
        info["v_cache_bytes"] = tensor_bytes(decoder.state.values)
        info["kv_cache_bytes"] = info["k_cache_bytes"] + info["v_cache_bytes"]
        synchronize(spec.torch_device)
        return tokens

    def numerics() -> list[dict]:
        reference = replace(baseline).allocate()  # multi-head attention on the same weights
        return numerics_rows(decoder, reference)

    part_items = {"prefill": spec.batch * params.prompt_len, "decode": spec.batch * (params.new_tokens - 1)}
    if decoder.clustered:
        part_items["clustering"] = spec.batch * params.feature_tokens
    return Built(
        iteration=iteration,
        items=spec.batch * params.new_tokens,
        item_unit="tokens",
        model=decoder.model,  # one forward per generated token, and one for the clustering
        attention_sites=(SITE_RULE,),
        part_items=part_items,
        numerics=numerics,
        info=info,
    )


WORKLOAD = register(Workload(
    name="chai",
    study="3",
    description="Clustered head attention (CHAI) in a Llama-style decoder: MHA vs heads sharing their representative's scores",
    kind="inference",
    presets=PARAMS,
    variants=tuple(VARIANTS),
    build=build,
))
