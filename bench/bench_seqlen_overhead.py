"""Overhead of SeqLenRecorder on a step: tiny diffusers UNet forward, tiny Llama generate.

    .venv/bin/python bench/bench_seqlen_overhead.py [--repeats 40]

Each repeat times one step without the recorder and one with it, interleaved (so drift in
clock speed or cache state hits both alike); the clock is read inside the `with` block, so
hook installation and removal (paid once per recording, not per step) are left out and
reported apart. Reported: the median latency of each and their ratio, recorder / reference,
and the ratio of the minima (less sensitive to other processes on a shared machine).
Tiny models are the worst case: their steps are short, so a fixed per-call hook cost weighs
more than it would on a real model.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import torch

from profilers.seqlen import SeqLenRecorder


def tiny_unet_step() -> tuple[torch.nn.Module, Callable[[], Any]]:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=16,
    ).eval()
    latents, text = torch.randn(2, 4, 32, 32), torch.randn(2, 77, 32)

    def step() -> Any:
        with torch.no_grad():
            return unet(latents, 10, text)

    return unet, step


def tiny_llama_generate() -> tuple[torch.nn.Module, Callable[[], Any]]:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    llm = LlamaForCausalLM(config).eval()
    prompt = torch.randint(1, 256, (1, 32))

    def step() -> Any:
        with torch.no_grad():
            return llm.generate(prompt, max_new_tokens=32, min_new_tokens=32, do_sample=False, pad_token_id=0)

    return llm, step


def measure(model: torch.nn.Module, step: Callable[[], Any], repeats: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        step()
        with SeqLenRecorder(model, model=model):
            step()
    reference, recorded, setup = [], [], []
    calls = 0
    for _ in range(repeats):
        start = time.perf_counter_ns()
        step()
        reference.append(time.perf_counter_ns() - start)
        recorder = SeqLenRecorder(model, model=model)
        enter = time.perf_counter_ns()
        with recorder:
            start = time.perf_counter_ns()
            step()
            recorded.append(time.perf_counter_ns() - start)
            leave = time.perf_counter_ns()
        setup.append(time.perf_counter_ns() - leave + start - enter)
        calls = len(recorder.rows)
    ref, rec = statistics.median(reference) / 1000, statistics.median(recorded) / 1000
    return {"reference_us": ref, "recorder_us": rec, "ratio": rec / ref, "attention_calls": calls,
            "min_ratio": min(recorded) / min(reference),
            "per_call_overhead_us": (rec - ref) / calls if calls else float("nan"),
            "enter_exit_us": statistics.median(setup) / 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40, help="interleaved pairs per workload (default 40)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed pairs first (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.repeats < 1 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
        parser.error("--repeats and --threads must be >= 1, --warmup >= 0")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} interleaved repeats, medians")
    print(f"{'workload':<34}{'reference_us':>14}{'recorder_us':>13}{'ratio':>8}{'min_ratio':>10}{'calls':>7}{'us/call':>9}{'enter+exit_us':>15}")
    for name, build in (("unet2d 32x32 cfg-batch 2 (1 step)", tiny_unet_step),
                        ("llama 2L generate 32+32 tokens", tiny_llama_generate)):
        model, step = build()
        r = measure(model, step, args.repeats, args.warmup)
        print(f"{name:<34}{r['reference_us']:>14.0f}{r['recorder_us']:>13.0f}{r['ratio']:>8.3f}{r['min_ratio']:>10.3f}"
              f"{r['attention_calls']:>7}{r['per_call_overhead_us']:>9.1f}{r['enter_exit_us']:>15.0f}")


if __name__ == "__main__":
    main()
