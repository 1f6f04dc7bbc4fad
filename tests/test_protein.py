"""protein-fold and protein-distogram: what the contract tests cannot see (optimizations that keep
the result, the parts' order, the triangle-attention rows, the coordinate recovery, the paper dims)."""
from __future__ import annotations

import math
from collections import Counter
from contextlib import contextmanager

import pytest
import torch

from profilers.parts import untimed_part
from profilers.seqlen import SeqLenRecorder
from workloads.base import RunOptions, get

FOLD_LENGTH = 12  # short: the tests check results and mechanisms, not speed


def built(workload: str, variant: str, **params):
    w = get(workload)
    return w.build(w.resolve(RunOptions(variant=variant, params=params)))


@pytest.fixture(scope="module")
def fold():
    return {v: built("protein-fold", v, length=FOLD_LENGTH, recycles=1) for v in ("eager", "sdpa", "chunked")}


@pytest.fixture(scope="module")
def distogram():
    return {v: built("protein-distogram", v, length=24, recovery_steps=30) for v in ("bigru", "transformer", "sdpa")}


def recorded_parts(b) -> list[str]:
    """The parts one iteration enters, in order."""
    entered = []

    @contextmanager
    def part(name, background=False):
        entered.append(name)
        yield

    b.iteration(part)
    return entered


# -- protein-fold -----------------------------------------------------------------------------
def test_fused_stem_and_chunked_trunk_keep_the_structure(fold):
    positions = {v: b.iteration(untimed_part) for v, b in fold.items()}
    assert positions["eager"].shape[-3:] == (FOLD_LENGTH, 14, 3), "atom14 positions per residue"
    torch.testing.assert_close(positions["sdpa"], positions["eager"], atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(positions["chunked"], positions["sdpa"], atol=1e-4, rtol=1e-4)


def test_fold_parts_follow_the_forward_with_every_recycle(fold):
    assert recorded_parts(fold["eager"]) == [
        "esm_stem", "trunk", "structure_module", "trunk", "structure_module", "trunk", "heads"]


def test_triangle_attention_rows_cover_the_pair_representation_chunked_or_not(fold):
    rows = {}
    for variant in ("eager", "sdpa", "chunked"):
        b = fold[variant]
        with SeqLenRecorder(b.model, model=b.model, rules=b.attention_sites) as recorder:
            b.iteration(untimed_part)
        rows[variant] = recorder.rows
    kinds = Counter(r["kind"] for r in rows["sdpa"])
    # per pass: 2 trunk blocks x (1 sequence + 2 triangle), 2 IPA; 2 passes; 2 ESM layers once
    assert kinds == {"self": 2 + 2 * 2, "triangle": 2 * 2 * 2, "ipa": 2 * 2}
    for variant, chunk in (("sdpa", FOLD_LENGTH), ("chunked", 8)):
        triangle = [r for r in rows[variant] if r["kind"] == "triangle"]
        assert {(r["q_len"], r["kv_len"]) for r in triangle} == {(FOLD_LENGTH, FOLD_LENGTH)}
        assert max(r["batch"] for r in triangle) == chunk, "one row per call: the pair rows it attends over"
        assert sum(r["batch"] for r in triangle) == 8 * FOLD_LENGTH, "the calls cover every pair row of the 8 triangle attentions"
    stem = {v: {(r["q_len"], r["shape_source"]) for r in rows[v] if r["module_class"] == "EsmSelfAttention"} for v in ("eager", "sdpa")}
    assert stem == {"eager": {(FOLD_LENGTH + 2, "module_inputs")}, "sdpa": {(FOLD_LENGTH + 2, "sdpa_call")}}, "<cls> and <eos>; fused"


def test_fold_paper_preset_is_esmfold_size():
    from transformers import EsmForProteinFolding

    from workloads.protein_fold import DIMS, PARAMS, esmfold_config

    with torch.device("meta"):
        model = EsmForProteinFolding(esmfold_config(DIMS["paper"]))
    esm = sum(p.numel() for p in model.esm.parameters())
    total = sum(p.numel() for p in model.parameters())
    assert 2.8e9 < esm < 2.9e9, "ESM-2 3B stem"
    assert 3.4e9 < total < 3.6e9 and len(model.trunk.blocks) == 48
    assert (PARAMS["paper"].length, PARAMS["paper"].recycles) == (256, 4)


def test_fold_params_name_the_knob():
    with pytest.raises(ValueError, match="--param length"):
        get("protein-fold").params("tiny", {"length": "2000"})
    with pytest.raises(ValueError, match="--param recycles"):
        get("protein-fold").params("tiny", {"recycles": "-1"})


# -- protein-distogram ------------------------------------------------------------------------------
def test_distogram_outputs_are_a_distance_matrix_and_angles(distogram):
    out = distogram["bigru"].iteration(untimed_part)
    d = out["distances"][0]
    assert d.shape == (24, 24) and torch.equal(d, d.T) and torch.all(d.diagonal() == 0)
    assert torch.all(d + torch.eye(24) > 0), "positive off the diagonal"
    angles = out["angles"]
    assert angles.shape == (1, 24, 2) and torch.all(angles.abs() <= math.pi), "phi and psi in radians"
    assert out["coordinates"].shape == (1, 24, 3)


def test_fused_attention_keeps_the_transformer_output(distogram):
    eager, fused = (distogram[v].iteration(untimed_part) for v in ("transformer", "sdpa"))
    torch.testing.assert_close(fused["distances"], eager["distances"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fused["angles"], eager["angles"], atol=1e-5, rtol=1e-4)


def test_distogram_parts_and_attention_kinds(distogram):
    assert recorded_parts(distogram["bigru"]) == ["encoder", "torsion", "pairwise", "coordinates"]
    for variant, source in (("transformer", "module_inputs"), ("sdpa", "sdpa_call")):
        b = distogram[variant]
        with SeqLenRecorder(b.recorded_modules, model=b.model, rules=b.attention_sites) as recorder:
            b.iteration(untimed_part)
        assert {(r["kind"], r["q_len"], r["kv_len"], r["shape_source"], r["model_call"]) for r in recorder.rows} == {
            ("self", 24, 24, source, 0)}
        assert len(recorder.rows) == 2, "one row per transformer layer"


def test_coordinates_recovered_from_true_distances_reproduce_them():
    """From a real structure's distances and a random start, the descent (a SMACOF step) never
    increases the stress and recovers the distances (coordinates up to a rigid motion)."""
    from workloads.protein_distogram import recover_coordinates, stress

    generator = torch.Generator().manual_seed(0)
    truth = torch.cumsum(torch.nn.functional.normalize(torch.randn(1, 30, 3, generator=generator), dim=-1) * 3.8, dim=1)
    distances = torch.cdist(truth, truth)
    start = torch.randn(1, 30, 3, generator=generator) * 5
    stresses = [stress(recover_coordinates(distances, start, steps), distances).item() for steps in (1, 10, 50, 300)]
    assert all(later <= earlier * (1 + 1e-5) for earlier, later in zip(stresses, stresses[1:])), stresses
    assert stresses[-1] < 0.01 * stresses[0], stresses
    recovered = recover_coordinates(distances, start, 300)
    assert (torch.cdist(recovered, recovered) - distances).abs().mean() < 0.5, "within half an angstrom on average"


def test_distogram_paper_preset_dims():
    from workloads.protein_distogram import DIMS, PARAMS, DistogramNet, use_transformer

    with torch.device("meta"):
        net = DistogramNet(DIMS["paper"])
        gru = sum(p.numel() for p in net.parameters())
        transformer = sum(p.numel() for p in use_transformer(net, DIMS["paper"]).parameters())
    assert 2.5e6 < gru < 3.5e6 and 15e6 < transformer < 25e6
    assert len(net.pairwise.blocks) == 16 and PARAMS["paper"].length == 256


def test_protein_sweeps_span_a_range_per_preset():
    from pathlib import Path

    from app.sweep import load_sweep

    sweeps = Path(__file__).resolve().parents[1] / "sweeps"
    lengths = {preset: sorted({p.request.options.params["length"] for p in load_sweep(sweeps / "protein-fold.toml", preset=preset).runs})
               for preset in ("tiny", "paper")}
    assert lengths == {"tiny": [32, 64, 128], "paper": [64, 128, 256, 512]}
