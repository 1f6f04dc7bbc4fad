"""attention-numerics: the tiled flash attention is right, the deviation it shows is real, and
the in-model and weights modes compare what they say they compare."""
from __future__ import annotations

import json

import pytest
import torch

from profilers.parts import untimed_part
from workloads.attention_math import (deviation, plain_attention, random_qkv, reference_attention, tiled_flash_attention,
                                      wasserstein_1d)
from workloads.attention_numerics import kernel_deviation
from workloads.base import RunOptions, get

WORKLOAD = get("attention-numerics")
SMALL_MODEL = {"seq_len": "32", "heads": "2", "head_dim": "8", "block_size": "8", "train_steps": "2"}


def built(**params):
    spec = WORKLOAD.resolve(RunOptions(params=params))
    return spec, WORKLOAD.build(spec)


@pytest.mark.parametrize("seq_len,block_size", [(64, 16), (100, 16), (100, 7), (100, 100), (50, 256)])
@pytest.mark.parametrize("causal", [False, True])
def test_tiled_flash_equals_the_reference_in_float64(seq_len, block_size, causal):
    q, k, v = random_qkv(2, 3, seq_len, 16, torch.float64, seed=1)
    expected = reference_attention(q, k, v, causal)
    assert torch.allclose(tiled_flash_attention(q, k, v, block_size, causal), expected, rtol=0, atol=1e-12)


def test_tiled_flash_in_fp32_is_within_fp32_error():
    q, k, v = random_qkv(1, 2, 300, 32, torch.float32, seed=2)  # 300 = 18 blocks of 16 and one of 12
    reference = reference_attention(q, k, v)
    tiled = deviation(tiled_flash_attention(q, k, v, 16), reference)
    plain = deviation(plain_attention(q, k, v), reference)
    assert tiled["max_abs"] < 1e-5 and tiled["max_abs"] < 10 * plain["max_abs"]


def test_block_size_below_one_is_refused_naming_the_knob():
    q, k, v = random_qkv(1, 1, 8, 4, torch.float32, seed=0)
    with pytest.raises(ValueError, match="block_size"):
        tiled_flash_attention(q, k, v, 0)
    with pytest.raises(ValueError, match="--param block_size must be at least 1"):
        WORKLOAD.resolve(RunOptions(params={"block_size": "0"}))


def test_run_dtype_stays_float32():
    spec = WORKLOAD.resolve(RunOptions(dtype="bfloat16"))
    with pytest.raises(ValueError, match="--dtype bfloat16: .*compute_dtype"):
        WORKLOAD.build(spec)


def test_bf16_tiled_flash_deviates_more_than_plain_and_fp32_does_not():
    bf16 = {r["impl"]: r for r in kernel_deviation("bf16", 512, 16)}
    assert bf16["tiled-flash"]["max_abs"] > 1.5 * bf16["plain"]["max_abs"]
    assert bf16["tiled-flash"]["mean_abs"] > 1.5 * bf16["plain"]["mean_abs"]
    fp32 = {r["impl"]: r for r in kernel_deviation("fp32", 512, 16)}
    assert fp32["tiled-flash"]["max_abs"] < 1e-5 and bf16["plain"]["max_abs"] > 100 * fp32["plain"]["max_abs"]


def test_deviation_command_prints_one_row_per_implementation(capsys):
    from app.cli import main

    assert main(["deviation", "--dtype", "fp16", "--seq-len", "40", "--block-size", "16", "--heads", "2", "--head-dim", "8",
                 "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["impl"] for r in rows] == ["plain", "sdpa-flash", "sdpa-math", "tiled-flash"]
    assert all(list(r) == ["impl", "dtype", "seq_len", "block_size", "max_abs", "mean_abs", "std_abs"] for r in rows)
    assert all(r["dtype"] == "fp16" and r["seq_len"] == 40 and r["block_size"] == 16 and r["max_abs"] > 0 for r in rows)


def test_kernel_rows_match_the_command_on_the_same_inputs():
    _, b = built(seq_len="64", heads="1", block_size="16")
    b.iteration(untimed_part)
    stored = {(r["subject"], r["metric"]): r["value"] for r in b.numerics()}
    direct = kernel_deviation("bf16", 64, 16, heads=1)
    assert {(r["impl"], m): r[m] for r in direct for m in ("max_abs", "mean_abs", "std_abs")} == stored


def test_wasserstein_is_the_mean_gap_of_sorted_values():
    a = torch.tensor([3.0, 1.0, 2.0])
    assert wasserstein_1d(a, a[[2, 0, 1]]) == 0
    assert wasserstein_1d(a, a + 0.5) == pytest.approx(0.5)
    assert wasserstein_1d(torch.tensor([0.0, 0.0]), torch.tensor([0.0, 4.0])) == pytest.approx(2.0)


def test_in_model_compares_every_attention_call_and_leaves_the_model_unchanged():
    spec, b = built(mode="in-model", **SMALL_MODEL)
    b.iteration(untimed_part)
    rows = b.numerics()
    layers = b.model.config.num_hidden_layers
    assert {r["position"] for r in rows} == set(range(layers))
    assert {r["subject"] for r in rows} == {"plain", "tiled-flash"}
    # the recording attention computes what eager attention does: same logits
    tokens = torch.randint(0, b.model.config.vocab_size, (1, 32), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ours = b.model(input_ids=tokens, use_cache=False).logits
        b.model.set_attn_implementation("eager")
        eager = b.model(input_ids=tokens, use_cache=False).logits
    assert torch.allclose(ours, eager, atol=1e-5)


def test_weights_mode_gives_each_band_per_step_and_repeats_exactly():
    spec, b = built(mode="weights", **SMALL_MODEL)
    b.iteration(untimed_part)
    first = b.numerics()
    b.iteration(untimed_part)
    assert b.numerics() == first, "every iteration trains from the same restored weights"
    figures = {(r["subject"], r["metric"], r["position"]): r["value"] for r in first}
    assert set(figures) == {(s, m, step) for s in ("tiled-flash", "other-init", "fp32") for m in ("max_abs", "wasserstein")
                            for step in (1, 2)}
    assert all(v > 0 for v in figures.values()), "every comparison differs from the plain bf16 training"
    assert figures[("other-init", "wasserstein", 2)] > 10 * figures[("tiled-flash", "wasserstein", 2)]
