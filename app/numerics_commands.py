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
from app.parsers import DTYPE_NAMES

COLUMNS = ("impl", "dtype", "seq_len", "block_size", "max_abs", "mean_abs", "std_abs")


def cmd_deviation(args: argparse.Namespace) -> int:
    from workloads.attention_numerics import kernel_deviation

    rows = kernel_deviation(DTYPE_NAMES[args.dtype], args.seq_len, args.block_size, heads=args.heads, head_dim=args.head_dim,
                            batch=args.batch, seed=args.seed)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    if args.format == "table":
        frame[["max_abs", "mean_abs", "std_abs"]] = frame[["max_abs", "mean_abs", "std_abs"]].map(lambda v: f"{v:.3e}")
    print_frame(frame, args.format, title=f"attention deviation from float64 ({args.dtype}, length {args.seq_len}, block {args.block_size})")
    return EXIT_OK
