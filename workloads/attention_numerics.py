"""attention-numerics: is flash attention numerically stable? (studies.md section 5)

The golden value is plain attention in float64. Against it, one iteration measures attention
computed in `compute_dtype` (bf16, fp16, fp32; the run's own --dtype stays float32) by each
subject of workloads/attention_math.py: `plain`, `sdpa-flash`, `sdpa-math`, `tiled-flash`.
Figures (`Built.numerics()`): per subject, max, mean and std of |output - reference|.

Modes (`--param mode=...`):
- kernel (default): random q, k, v of (batch, heads, seq_len, head_dim). Parts: reference,
  each subject, deviation.
- in-model: a tiny Llama (llm-decode's model, with heads x head_dim) runs one forward over
  seq_len random tokens; every attention call's q, k, v is recorded and plain and
  tiled-flash are compared on them. Rows have position = the call's index. Parts: forward,
  reference, plain, tiled-flash, deviation.
- weights: workloads/attention_training.py: two short trainings from one seed (attention plain
  vs tiled-flash), beside two reference bands (another initialization; fp32 training).

One variant: the comparison is the workload (every subject runs in every iteration).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Literal

import torch

from workloads.attention_math import COMPUTE_DTYPES, deviation, plain_attention, random_qkv, reference_attention, subjects
from workloads.base import Built, Params, RunSpec, Workload, register
from workloads.common import param_stats, seed_everything

MODES = ("kernel", "in-model", "weights")
IN_MODEL_SUBJECTS = ("plain", "tiled-flash")


@dataclass(frozen=True)
class NumericsParams(Params):
    mode: Literal["kernel", "in-model", "weights"]
    compute_dtype: Literal["bf16", "fp16", "fp32"]
    seq_len: int
    block_size: int
    heads: int
    head_dim: int
    train_steps: int  # weights mode only

    def check(self) -> None:
        for name in ("seq_len", "block_size", "heads", "head_dim", "train_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--param {name} must be at least 1, got {getattr(self, name)}")


PARAMS = {
    "tiny": NumericsParams(mode="kernel", compute_dtype="bf16", seq_len=1024, block_size=16, heads=1, head_dim=64, train_steps=4),
    # attention of Llama-2-7B (32 heads of 128) at 4096 positions, 64-key tiles (a usual FlashAttention-2 key block);
    # train_steps is ours (the paper trains far longer)
    "paper": NumericsParams(mode="kernel", compute_dtype="bf16", seq_len=4096, block_size=64, heads=32, head_dim=128, train_steps=100),
}


def compare_kernels(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int, part) -> dict[str, dict[str, float]]:
    """{subject: its deviation from the float64 reference} on one q, k, v; each step a part."""
    with part("reference"):
        reference = reference_attention(q, k, v)
    outputs = {}
    for name, attend in subjects(block_size).items():
        with part(name):
            outputs[name] = attend(q, k, v)
    with part("deviation"):
        return {name: deviation(output, reference) for name, output in outputs.items()}


def kernel_deviation(compute_dtype: str, seq_len: int, block_size: int, heads: int = 1, head_dim: int = 64,
                     batch: int = 1, seed: int = 0) -> list[dict]:
    """One row per subject, {impl, dtype, seq_len, block_size, max_abs, mean_abs, std_abs}: the kernel
    mode's figures computed directly (`observatory deviation`), on the inputs a run with these settings uses."""
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute dtype {compute_dtype!r}: expected one of {', '.join(COMPUTE_DTYPES)}")
    q, k, v = random_qkv(batch, heads, seq_len, head_dim, COMPUTE_DTYPES[compute_dtype], seed)
    figures = compare_kernels(q, k, v, block_size, lambda name: nullcontext())
    return [{"impl": name, "dtype": compute_dtype, "seq_len": seq_len, "block_size": block_size, **values}
            for name, values in figures.items()]


def numerics_rows(figures: dict[str, dict[str, float]], position: int | None = None) -> list[dict]:
    return [{"subject": subject, "metric": metric, "value": value, "position": position}
            for subject, values in figures.items() for metric, value in values.items()]


def build_kernel(spec: RunSpec) -> Built:
    p = spec.params
    q, k, v = random_qkv(spec.batch, p.heads, p.seq_len, p.head_dim, COMPUTE_DTYPES[p.compute_dtype], spec.seed, spec.torch_device)
    rows: list[dict] = []

    def iteration(part):
        rows[:] = numerics_rows(compare_kernels(q, k, v, p.block_size, part))

    query_rows = spec.batch * p.heads * p.seq_len
    operands = sum(t.numel() for t in (q, k, v))
    return Built(
        iteration=iteration, items=query_rows, item_unit="query rows",
        part_items={name: query_rows for name in ("reference", *subjects(p.block_size))},
        numerics=lambda: list(rows),
        # a kernel has no weights: its parameters are its operands q, k, v
        info={"param_count": operands, "param_bytes": sum(t.numel() * t.element_size() for t in (q, k, v)),
              "operand_count": operands, "subjects": ", ".join(subjects(p.block_size))},
    )


# -- a tiny Llama whose attention calls go through our functions ---------------------------------
ATTENTION_NAME = "observatory_numerics"  # a transformers attention implementation, registered once


def _attention_call(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' attention interface: the module's `numerics_attention(q, k, v)` computes the call."""
    if attention_mask is not None:
        raise ValueError("attention-numerics: its Llama runs causal attention without padding, yet got an attention mask")
    if scaling is not None and abs(scaling - query.shape[-1] ** -0.5) > 1e-12:
        raise ValueError(f"attention-numerics: expected the 1/sqrt(head_dim) scaling, got {scaling}")
    output = module.numerics_attention(query, key, value)
    return output.transpose(1, 2).contiguous(), None


def numerics_llama(spec: RunSpec, attend, seed: int) -> torch.nn.Module:
    """llm-decode's Llama at the preset's depth, with heads x head_dim attention; every call is attend(q, k, v)."""
    from transformers import AttentionInterface, LlamaForCausalLM

    from workloads.llm_decode import DIMS, llama_config

    p = spec.params
    dims = replace(DIMS[spec.preset], hidden=p.heads * p.head_dim, heads=p.heads, kv_heads=p.heads,
                   max_positions=max(DIMS[spec.preset].max_positions, p.seq_len))
    AttentionInterface.register(ATTENTION_NAME, _attention_call)
    seed_everything(seed)
    model = LlamaForCausalLM(llama_config(dims)).to(spec.torch_device)
    model.set_attn_implementation(ATTENTION_NAME)
    for module in model.modules():
        if type(module).__name__ == "LlamaAttention":
            module.numerics_attention = attend
    return model


def build_in_model(spec: RunSpec) -> Built:
    p = spec.params
    dtype = COMPUTE_DTYPES[p.compute_dtype]
    calls: list[tuple[torch.Tensor, ...]] = []

    def record(q, k, v):
        """The model goes on with float32 plain attention; the call's inputs are kept in compute_dtype."""
        calls.append(tuple(t.detach().to(dtype) for t in (q, k, v)))
        return plain_attention(q, k, v, causal=True)

    model = numerics_llama(spec, record, spec.seed).eval()
    generator = torch.Generator().manual_seed(spec.seed)
    tokens = torch.randint(0, model.config.vocab_size, (spec.batch, p.seq_len), generator=generator).to(spec.torch_device)
    compared = {name: subjects(p.block_size)[name] for name in IN_MODEL_SUBJECTS}
    rows: list[dict] = []

    def iteration(part):
        calls.clear()
        with part("forward"), torch.inference_mode():
            model(input_ids=tokens, use_cache=False)
        with part("reference"):
            references = [reference_attention(*call, causal=True) for call in calls]
        outputs = {}
        for name, attend in compared.items():
            with part(name):
                outputs[name] = [attend(*call, causal=True) for call in calls]
        with part("deviation"):
            rows[:] = [row for index, reference in enumerate(references)
                       for row in numerics_rows({name: deviation(out[index], reference) for name, out in outputs.items()}, index)]

    layers = model.config.num_hidden_layers
    return Built(
        iteration=iteration, items=layers, item_unit="attention calls", model=model,
        part_items={"forward": spec.batch * p.seq_len},
        numerics=lambda: list(rows),
        info={**param_stats(model), "attention_call_count": layers, "layers": layers, "subjects": ", ".join(compared)},
    )


def build(spec: RunSpec) -> Built:
    if spec.dtype != "float32":
        raise ValueError(f"--dtype {spec.dtype}: attention-numerics runs in float32 and compares attention in "
                         "--param compute_dtype=bf16|fp16|fp32; leave --dtype at float32")
    if spec.params.mode == "weights":
        from workloads.attention_training import build_weights

        return build_weights(spec)
    return build_in_model(spec) if spec.params.mode == "in-model" else build_kernel(spec)


WORKLOAD = register(Workload(
    name="attention-numerics",
    study="5",
    description="Deviation of plain, SDPA flash/math and tiled flash attention in bf16/fp16/fp32 from a float64 reference; "
                "in a model; and in the weights of short trainings",
    kind="numerics",
    presets=PARAMS,
    variants=("compare",),
    build=build,
))
