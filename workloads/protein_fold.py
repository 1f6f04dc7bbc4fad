"""protein-fold: ESMFold-style structure prediction (studies.md section 7).

A randomly initialised transformers `EsmForProteinFolding` folds one random protein of
`length` residues: an ESM-2 language-model stem over the sequence, the folding trunk (blocks
that update a per-residue state and an L x L pair representation with pair-biased sequence
attention, triangular multiplicative updates and triangle attention), the structure module
(invariant point attention, IPA, producing 3D frames and atom positions), then the output
heads (distogram, pLDDT, pTM). The trunk and structure module run `1 + recycles` times.

Input: residue indices 0..20 (AlphaFold's restypes "ARNDCQEGHILKMFPSTWYV" and X), not ESM
tokenizer ids: the model maps them to ESM ids itself. `num_recycles` is always passed (with
None the model reads config.max_recycles).

One iteration = one model forward, its parts marked at module boundaries (the forward runs
its stages itself): "esm_stem" (ESM-2 and the mapping of its layers to the trunk's inputs),
"trunk" (every trunk pass, recycling included), "structure_module" (every pass of it),
"heads" (distogram, pLDDT, pTM heads after the last pass).

Baseline: eager attention everywhere, the pair representation's triangle attention over all
rows at once. Variants, stacked:
    eager -> sdpa (fused attention in the ESM stem, the only part of the model that allows it)
          -> chunked (the trunk's triangle attention `chunk_size` rows at a time: peak memory
             of the attention logits O(chunk * L^2) instead of O(L^3), for more, smaller calls)

Attention kinds recorded: ESM-2 self-attention "self" (library rule); the trunk's sequence
attention with pair bias "self"; triangle attention "triangle" (one row per call of the inner
attention: batch = the pair rows in the call, q_len = kv_len = L); IPA "ipa".
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from profilers.attention_adapters import Call, Site, SiteRule
from workloads.base import Built, Params, RunSpec, Workload, register
from workloads.common import ModuleParts, param_stats, place, seed_everything, synchronize

MAX_RESIDUES = 1022  # ESM-2's 1026 positions less <cls>, <eos> and two spare


@dataclass(frozen=True)
class FoldParams(Params):
    length: int  # residues L
    recycles: int  # trunk + structure module passes after the first

    def check(self) -> None:
        if not 1 <= self.length <= MAX_RESIDUES:
            raise ValueError(f"--param length must be between 1 and {MAX_RESIDUES} residues, got {self.length}")
        if self.recycles < 0:
            raise ValueError(f"--param recycles must be 0 or more, got {self.recycles}")


@dataclass(frozen=True)
class FoldDims:
    esm_hidden: int
    esm_layers: int
    esm_heads: int
    esm_intermediate: int
    trunk_blocks: int
    sequence_state: int
    pairwise_state: int
    sequence_head_width: int
    pairwise_head_width: int
    structure_module: dict | None  # None: transformers' StructureModuleConfig defaults (ESMFold's)
    lddt_hidden: int
    chunk_size: int  # pair rows per triangle-attention call in the `chunked` variant


DIMS = {
    "tiny": FoldDims(
        esm_hidden=64, esm_layers=2, esm_heads=4, esm_intermediate=128,
        trunk_blocks=2, sequence_state=64, pairwise_state=32, sequence_head_width=16, pairwise_head_width=16,
        structure_module=dict(sequence_dim=64, pairwise_dim=32, ipa_dim=8, resnet_dim=32, num_heads_ipa=4,
                              num_qk_points=4, num_v_points=4, num_blocks=2, num_resnet_blocks=1),
        lddt_hidden=32, chunk_size=8,
    ),
    # ESMFold (facebook/esmfold_v1): ESM-2 3B stem (36 layers, 2560 wide, 40 heads), 48 trunk blocks,
    # sequence state 1024, pair state 128, the AlphaFold-sized structure module (8 IPA blocks, 12 heads).
    "paper": FoldDims(
        esm_hidden=2560, esm_layers=36, esm_heads=40, esm_intermediate=10240,
        trunk_blocks=48, sequence_state=1024, pairwise_state=128, sequence_head_width=32, pairwise_head_width=32,
        structure_module=None, lddt_hidden=128, chunk_size=64,
    ),
}
# ESMFold infers with 4 recycles; the tiny preset keeps one so the recycle loop runs.
PARAMS = {"tiny": FoldParams(length=64, recycles=1), "paper": FoldParams(length=256, recycles=4)}


def esmfold_config(dims: FoldDims):
    """The model's config: random weights, the stem kept in the run's dtype (fp16_esm off: the
    runner casts the whole model), eager attention, no trunk chunking."""
    from transformers import EsmConfig
    from transformers.models.esm.configuration_esm import get_default_vocab_list

    trunk = dict(num_blocks=dims.trunk_blocks, sequence_state_dim=dims.sequence_state, pairwise_state_dim=dims.pairwise_state,
                 sequence_head_width=dims.sequence_head_width, pairwise_head_width=dims.pairwise_head_width, chunk_size=None)
    if dims.structure_module is not None:
        trunk["structure_module"] = dims.structure_module
    return EsmConfig(
        vocab_size=33, pad_token_id=1, mask_token_id=32, vocab_list=get_default_vocab_list(),
        hidden_size=dims.esm_hidden, num_hidden_layers=dims.esm_layers, num_attention_heads=dims.esm_heads,
        intermediate_size=dims.esm_intermediate, max_position_embeddings=1026, position_embedding_type="rotary",
        emb_layer_norm_before=False, token_dropout=True, is_folding_model=True,
        esmfold_config=dict(fp16_esm=False, lddt_head_hid_dim=dims.lddt_hidden, trunk=trunk),
        attn_implementation="eager",
    )


# --- attention sites the library rules cannot read ----------------------------------------------
def _read_triangle(site: Site, module, args, kwargs) -> Call:
    """EsmFoldAttention, called by triangle attention with q_x / kv_x of shape (*rows, L, C)."""
    q, kv = kwargs["q_x"].shape, kwargs["kv_x"].shape
    return Call(site, site.implementation, "triangle", False, math.prod(q[:-2]), q[-2], kv[-2])


def _read_sequence(site: Site, module, args, kwargs) -> Call:
    """EsmFoldSelfAttention(x, mask, bias): x is (B, L, C); the pair representation is a bias."""
    shape = (args[0] if args else kwargs["x"]).shape
    return Call(site, site.implementation, "self", False, shape[0], shape[-2], shape[-2])


def _read_ipa(site: Site, module, args, kwargs) -> Call:
    """EsmFoldInvariantPointAttention(s, z, r, mask): s is (B, L, C)."""
    shape = (args[0] if args else kwargs["s"]).shape
    return Call(site, site.implementation, "ipa", False, shape[0], shape[-2], shape[-2])


def _rule(class_name: str, read, heads: str, head_dim: str) -> SiteRule:
    def site(module, path, axis):
        return Site(path, class_name, "transformers", f"{class_name} (eager)", axis, getattr(module, heads),
                    getattr(module, heads), getattr(module, head_dim), None, read)

    return SiteRule(matches=lambda module, path: type(module).__name__ == class_name, site=site)


SITES = (
    _rule("EsmFoldAttention", _read_triangle, "no_heads", "c_hidden"),
    _rule("EsmFoldSelfAttention", _read_sequence, "num_heads", "head_width"),
    _rule("EsmFoldInvariantPointAttention", _read_ipa, "num_heads", "hidden_dim"),
)


# --- variants: each applies one technique --------------------------------------------------
def use_sdpa(model, dims: FoldDims):
    """Fused attention (F.scaled_dot_product_attention) in the ESM-2 stem; the trunk's and
    structure module's attention have no fused path."""
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # it warns that the folding sub-configs have no sub-model to check: true, and harmless
    try:
        model.esm.set_attn_implementation("sdpa")
    finally:
        logging.set_verbosity(verbosity)
    return model


def chunk_trunk(model, dims: FoldDims):
    """Triangle attention over `chunk_size` pair rows at a time instead of all L rows at once."""
    model.trunk.set_chunk_size(dims.chunk_size)
    return model


VARIANTS = {
    "eager": (),
    "sdpa": (use_sdpa,),
    "chunked": (use_sdpa, chunk_trunk),
}


def mark_parts(model) -> ModuleParts:
    marks = ModuleParts()
    marks.switch_at(model, "esm_stem")
    marks.switch_at(model.trunk, "trunk", on_leave="heads")
    marks.switch_at(model.trunk.structure_module, "structure_module", on_leave="trunk")
    return marks


def build(spec: RunSpec) -> Built:
    from transformers import EsmForProteinFolding

    dims, params = DIMS[spec.preset], spec.params
    seed_everything(spec.seed)
    model = EsmForProteinFolding(esmfold_config(dims))
    for technique in VARIANTS[spec.variant]:
        model = technique(model, dims)
    model = place(model, spec.torch_device, spec.torch_dtype)
    generator = torch.Generator().manual_seed(spec.seed)
    residues = torch.randint(0, 20, (spec.batch, params.length), generator=generator).to(spec.torch_device)
    marks = mark_parts(model)

    def iteration(part):
        with marks.run(part), torch.inference_mode():
            out = model(input_ids=residues, num_recycles=params.recycles)
        synchronize(spec.torch_device)
        return out.positions

    return Built(
        iteration=iteration,
        items=spec.batch * params.length,
        item_unit="residues",
        model=model,
        attention_sites=SITES,
        info={
            **param_stats(model),
            "esm_param_count": sum(p.numel() for p in model.esm.parameters()),
            "trunk_param_count": sum(p.numel() for p in model.trunk.parameters()),
            "pair_state_bytes": spec.batch * params.length ** 2 * dims.pairwise_state * torch.finfo(spec.torch_dtype).bits // 8,
            "trunk_blocks": dims.trunk_blocks,
            "chunk_size": model.trunk.chunk_size or 0,
            "esm_attn_implementation": model.esm.config._attn_implementation,
        },
    )


WORKLOAD = register(Workload(
    name="protein-fold",
    study="7",
    description="ESMFold-style folding (ESM-2 stem, folding trunk, structure module) of one protein; time and memory vs length",
    kind="inference",
    presets=PARAMS,
    variants=tuple(VARIANTS),
    build=build,
))
