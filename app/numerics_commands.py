"""Numerics commands: `observatory deviation`, attention's deviation from a float64 reference.

    observatory deviation --dtype bf16 --seq-len 4096 --block-size 64 [--heads H --head-dim E --batch B --seed S] [--format json]

Computes directly (no store): the attention-numerics workload's kernel mode, on the same random
q, k, v a run with these settings uses; one row per implementation.
"""
from __future__ import annotations

import argparse

import pandas as pd

from app.context import EXIT_OK
from app.output import print_frame

DTYPE_NAMES = {"bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16", "fp32": "fp32", "float32": "fp32"}
COLUMNS = ("impl", "dtype", "seq_len", "block_size", "max_abs", "mean_abs", "std_abs")


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_parsers(sub, add_db, add_format) -> None:
    p = sub.add_parser("deviation", help="attention's deviation from a float64 reference, per implementation",
                       description="Max, mean and std of |output - reference| of plain attention, torch SDPA's flash and math "
                       "backends and a tiled flash attention, each computed in --dtype, against plain attention in float64 "
                       "(random q, k, v; the attention-numerics workload's kernel mode, computed directly, nothing stored).")
    p.add_argument("--dtype", required=True, choices=tuple(DTYPE_NAMES), help="the compared dtype: bf16, fp16 or fp32")
    p.add_argument("--seq-len", type=_at_least_one, required=True, help="query and key length")
    p.add_argument("--block-size", type=_at_least_one, required=True, help="the tiled flash attention's key/value block (positions)")
    p.add_argument("--heads", type=_at_least_one, default=1, help="attention heads (default 1)")
    p.add_argument("--head-dim", type=_at_least_one, default=64, help="head dimension (default 64)")
    p.add_argument("--batch", type=_at_least_one, default=1, help="batch size (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random q, k, v (default 0)")
    add_format(p)


def cmd_deviation(args: argparse.Namespace) -> int:
    from workloads.attention_numerics import kernel_deviation

    rows = kernel_deviation(DTYPE_NAMES[args.dtype], args.seq_len, args.block_size, heads=args.heads, head_dim=args.head_dim,
                            batch=args.batch, seed=args.seed)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    if args.format == "table":
        frame[["max_abs", "mean_abs", "std_abs"]] = frame[["max_abs", "mean_abs", "std_abs"]].map(lambda v: f"{v:.3e}")
    print_frame(frame, args.format, title=f"attention deviation from float64 ({args.dtype}, length {args.seq_len}, block {args.block_size})")
    return EXIT_OK
