"""Nesting of CPU operators on their thread: depth and self time (duration minus children).

A stack walk over operators sorted by (thread, start, longest first); the one loop in the
import that SQL cannot say well.
"""
from __future__ import annotations

import duckdb
import pyarrow as pa


def cpu_op_nesting(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """Table (event_idx, depth, self_us) for every complete cpu_op event in temp table `ev`."""
    ops = con.execute(
        """SELECT event_idx, pid, tid, ts_us, dur_us FROM ev
           WHERE cat = 'cpu_op' AND ph = 'X' AND ts_us IS NOT NULL AND dur_us IS NOT NULL
           ORDER BY pid, tid, ts_us, dur_us DESC"""
    ).fetchnumpy()
    idx, pids, tids = ops["event_idx"].tolist(), ops["pid"].tolist(), ops["tid"].tolist()
    starts, durs = ops["ts_us"].tolist(), ops["dur_us"].tolist()
    n = len(idx)
    depth = [0] * n
    children_us = [0.0] * n
    stack: list[int] = []
    thread = None
    for i in range(n):
        if (pids[i], tids[i]) != thread:
            thread, stack = (pids[i], tids[i]), []
        start = starts[i]
        while stack and starts[stack[-1]] + durs[stack[-1]] <= start:
            stack.pop()
        if stack:
            children_us[stack[-1]] += durs[i]
            depth[i] = len(stack)
        stack.append(i)
    self_us = [max(d - c, 0.0) for d, c in zip(durs, children_us)]
    return pa.table(
        {
            "event_idx": pa.array(idx, pa.int64()),
            "depth": pa.array(depth, pa.int32()),
            "self_us": pa.array(self_us, pa.float64()),
        }
    )
