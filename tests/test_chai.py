"""What is particular to the chai workload (the contract is in test_contract.py): the clustering
algorithms on data with a known answer, CHAI equal to MHA where heads are identical, the clusters
found against the groups built into the weights, a K cache really allocated smaller, attention
calls marked, and the paper preset's LLaMA-7B dimensions and reference setup."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from profilers.parts import untimed_part
from profilers.seqlen import SeqLenRecorder
from workloads import chai
from workloads.base import RunOptions, get
from workloads.head_clustering import average_linkage, cosine_distances, elbow, kmeans_inertia, layer_cluster_count, representatives

WORKLOAD = get("chai")
TINY = chai.DIMS["tiny"]
_BUILT: dict[tuple, tuple] = {}


def built(variant: str, **params):
    """Build and run one iteration, once per (variant, params) for the whole module."""
    key = (variant, tuple(sorted(params.items())))
    if key not in _BUILT:
        b = WORKLOAD.build(WORKLOAD.resolve(RunOptions(variant=variant, params=params)))
        _BUILT[key] = (b, b.iteration(untimed_part))
    return _BUILT[key]


def decoder(variant: str, **params) -> chai.Decoder:
    """The variant's decoder after one request, once per (variant, params) for the whole module."""
    key = ("decoder", variant, tuple(sorted(params.items())))
    if key not in _BUILT:
        d, _ = chai.build_variant(WORKLOAD.resolve(RunOptions(variant=variant, params=params)), {})
        d.generate(untimed_part)
        _BUILT[key] = d
    return _BUILT[key]


def partition(labels) -> set[frozenset[int]]:
    labels = list(map(int, labels))
    return {frozenset(h for h, x in enumerate(labels) if x == c) for c in set(labels)}


# -- the algorithms ------------------------------------------------------------------------------------
def test_average_linkage_merges_by_mean_pair_distance():
    # 0-1 close, 2-3 close; 4 is closer to 2 (0.5) than to 3 (0.9): average 0.7 to {2, 3}, 0.75 to {0, 1}
    d = np.array([[0, .1, .9, .9, .8], [.1, 0, .9, .9, .7], [.9, .9, 0, .2, .5], [.9, .9, .2, 0, .9], [.8, .7, .5, .9, 0]])
    assert partition(average_linkage(d, 2)) == {frozenset({0, 1}), frozenset({2, 3, 4})}
    assert list(average_linkage(d, 3)) == [0, 0, 1, 1, 2], "labels numbered by each cluster's lowest head"
    assert list(average_linkage(d, 5)) == [0, 1, 2, 3, 4]
    assert list(representatives(d, average_linkage(d, 2))) == [0, 2]  # 2 is the medoid of {2, 3, 4}
    with pytest.raises(ValueError, match="clusters must be in 1..5"):
        average_linkage(d, 0)


def test_elbow_finds_groups_and_keeps_independent_heads():
    generator = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 64, generator=generator)
    grouped = centers[torch.arange(9) % 3] + 0.05 * torch.randn(9, 64, generator=generator)
    k, inertias = layer_cluster_count(grouped)
    assert k == 3 and inertias[-1] == pytest.approx(0, abs=1e-9)
    assert layer_cluster_count(torch.randn(9, 4096, generator=generator))[0] == 9, "independent heads: no elbow"
    assert elbow([0.0, 0.0, 0.0]) == 1, "identical heads: one cluster"
    assert kmeans_inertia(grouped.double(), 1) == pytest.approx(float(((grouped - grouped.mean(0)) ** 2).sum()), rel=1e-6)


def test_cosine_distances():
    f = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]]])
    assert torch.allclose(cosine_distances(f), torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]]))


# -- the mechanism ---------------------------------------------------------------------------------------
def test_identical_heads_in_a_group_give_mha_exactly(monkeypatch):
    monkeypatch.setattr(chai, "GROUP_NOISE", 0.0)
    spec = WORKLOAD.resolve(RunOptions(variant="chai", seed=7))
    mha = chai.build_decoder(TINY, spec)
    counts = mha.groups_built
    assert counts[-1] < TINY.heads
    clustered = replace(mha, counts=counts).allocate()
    mha.allocate()
    tokens = mha.generate(untimed_part)
    assert torch.equal(clustered.generate(untimed_part), tokens)
    assert torch.allclose(clustered.logits_along(tokens), mha.logits_along(tokens), atol=1e-5)


def test_clusters_found_are_the_groups_built():
    d = decoder("chai")
    assert d.counts == d.groups_built == (8, 8, 2, 2), "the elbow: every head early, the built groups later"
    for layer, attention in enumerate(d.model.attention):
        members = d.state.members[layer]
        if d.counts[layer] == TINY.heads:
            assert members is None
            continue
        rows = torch.nn.functional.normalize(attention.q_proj.weight.view(TINY.heads, -1), dim=-1)
        built_groups = partition(average_linkage((1 - rows @ rows.T).numpy(), d.counts[layer]))
        assert partition(members.labels[0]) == built_groups


def test_k_cache_really_smaller_and_v_cache_whole():
    b, tokens = built("chai")
    mha, mha_tokens = built("mha")
    p = chai.PARAMS["tiny"]
    per_head = (p.prompt_len + p.new_tokens) * (TINY.hidden // TINY.heads) * 4
    assert b.info["k_cache_bytes"] == sum(decoder("chai").counts) * per_head
    assert b.info["v_cache_bytes"] == mha.info["v_cache_bytes"] == mha.info["k_cache_bytes"] == TINY.layers * TINY.heads * per_head
    assert [k.shape[1] for k in decoder("chai").state.keys] == [8, 8, 2, 2]
    assert b.info["key_heads_count"] == 20 and b.info["offline_elbow_us"] > 0
    assert tokens.shape == mha_tokens.shape == (1, p.new_tokens)


def test_deviation_small_with_correlated_heads_and_none_for_mha():
    figures = {(r["subject"], r["metric"]): r["value"] for r in built("chai")[0].numerics() if r["position"] is None}
    assert 0 < figures["logits", "max_abs_diff_vs_mha"] < 0.05 * figures["logits", "mha_max_abs"]
    assert figures["next_token", "fraction_equal_vs_mha"] >= 0.9
    mha = {(r["subject"], r["metric"]): r["value"] for r in built("mha")[0].numerics() if r["position"] is None}
    assert mha["logits", "max_abs_diff_vs_mha"] == 0 and mha["greedy_tokens", "fraction_equal_vs_mha"] == 1


def test_random_heads_are_all_kept():
    b, tokens = built("chai", heads_mode="random")
    assert decoder("chai", heads_mode="random").counts == (TINY.heads,) * TINY.layers
    assert torch.equal(tokens, built("mha", heads_mode="random")[1])


def test_attention_calls_marked_clustering_clustered_and_mha():
    b, _ = built("chai")
    with SeqLenRecorder(b.model, model=b.model, rules=b.attention_sites) as recorder:
        b.iteration(untimed_part)
    rows, p = recorder.rows, chai.PARAMS["tiny"]
    assert {r["model_call"] for r in rows} == set(range(1 + p.new_tokens)), "the clustering forward, then one per token"
    first = [r for r in rows if r["model_call"] == 0]
    assert {(r["implementation"], r["kind"], r["q_len"]) for r in first} == {("clustering", "prefill", p.feature_tokens)}
    by_layer = {(r["module_path"].split(".")[-2], r["implementation"]) for r in rows if r["model_call"] > 0}
    assert by_layer == {("0", "mha"), ("1", "mha"), ("2", "clustered"), ("3", "clustered")}
    decode = [r for r in rows if r["kind"] == "decode"]
    assert len(decode) == TINY.layers * (p.new_tokens - 1) and max(r["kv_len"] for r in decode) == p.prompt_len + p.new_tokens - 1


# -- presets and parameters -------------------------------------------------------------------------------
def test_paper_preset_is_llama_7b_with_the_reference_setup():
    from transformers import LlamaForCausalLM

    from workloads.chai_attention import ChaiLlama
    from workloads.llm_decode import llama_config

    with torch.device("meta"):
        model = ChaiLlama(LlamaForCausalLM(llama_config(chai.DIMS["paper"])))
    assert sum(p.numel() for p in model.parameters()) == 6_738_415_616
    assert chai.reference_counts(32, 32) == (32,) * 18 + (4,) * 14
    assert chai.PARAMS["paper"].cluster_counts == "reference"


def test_parameters_name_the_knob():
    with pytest.raises(ValueError, match="--param head_groups must divide"):
        WORKLOAD.build(WORKLOAD.resolve(RunOptions(params={"head_groups": 3})))
    with pytest.raises(ValueError, match="--param feature_tokens"):
        WORKLOAD.resolve(RunOptions(params={"feature_tokens": 40}))
