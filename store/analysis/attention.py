"""Time in each attention module, from the `attention::<module path>` ranges of profiled runs.

A profiled run marks every attention module's forward with a range named
`attention::<module path>` (profilers/scopes.py): a `user_annotation` on the CPU thread that
ran it and, on a GPU, a `gpu_user_annotation` over the kernels it launched. One row per run,
side and module path:

- `calls`, `time_us`: how many ranges, and their summed durations (the whole forward: q/k/v/out
  projections and the attention itself);
- `self_us`: the same less the attention ranges nested inside it (transformers'
  `T5LayerSelfAttention` around its `T5Attention`), so summing `self_us` over modules counts
  every microsecond once;
- `attention_us` (CPU side; NULL on the device side): self time of the CPU operators the import
  counts as `attention` (every operator inside an attention range but the linear projections:
  matmul and softmax of an unfused module, the SDPA call of a fused one), each given to the
  innermost range holding it. Summed over modules it is op_time_by_category's attention time
  spent inside attention modules;
- `axis` and `kind`: from the run's attention_calls rows of that module (`temporal` /
  `spatial` in video models; NULL for a module that records no calls itself, such as the
  outer one of a nested pair).

Compiled modules are not marked (profilers/scopes.py), so a compiled model has no rows.
"""
from __future__ import annotations

import duckdb
import pandas as pd

from store.analysis._sql import check_choice, run_frame
from store.analysis.categories import SIDES
from store.enrich import ATTENTION_SCOPE_PREFIX


VIEWS = [
    f"""CREATE OR REPLACE VIEW attention_time AS
WITH scopes AS (
    SELECT run_id, rank, coalesce(rank, -1) AS rank_key, event_idx,
           CASE WHEN cat = 'gpu_user_annotation' THEN 'device' ELSE 'cpu' END AS side,
           pid, tid, ts_us AS start_us, ts_us + dur_us AS end_us, dur_us,
           substr(name, {len(ATTENTION_SCOPE_PREFIX) + 1}) AS module_path
    FROM events
    WHERE ph = 'X' AND cat IN ('user_annotation', 'gpu_user_annotation') AND starts_with(name, '{ATTENTION_SCOPE_PREFIX}')
          AND dur_us IS NOT NULL
),
inside AS (  -- every (enclosing, enclosed) pair of ranges on one thread or stream
    SELECT o.run_id, o.rank_key, o.event_idx AS outer_idx, i.event_idx AS inner_idx, i.dur_us AS inner_us
    FROM scopes o JOIN scopes i
      ON i.run_id = o.run_id AND i.rank_key = o.rank_key AND i.side = o.side AND i.pid = o.pid AND i.tid = o.tid
     AND i.start_us >= o.start_us AND i.end_us <= o.end_us AND i.event_idx <> o.event_idx
),
depth AS (SELECT run_id, rank_key, inner_idx AS event_idx, count(*) AS depth FROM inside GROUP BY ALL),
nested AS (  -- time of the ranges directly inside each range (one level down)
    SELECT p.run_id, p.rank_key, p.outer_idx AS event_idx, sum(p.inner_us) AS nested_us
    FROM inside p
    LEFT JOIN depth di ON di.run_id = p.run_id AND di.rank_key = p.rank_key AND di.event_idx = p.inner_idx
    LEFT JOIN depth d0 ON d0.run_id = p.run_id AND d0.rank_key = p.rank_key AND d0.event_idx = p.outer_idx
    WHERE coalesce(di.depth, 0) = coalesce(d0.depth, 0) + 1
    GROUP BY ALL
),
ops AS (  -- attention operators, each in the innermost CPU range holding it (the latest started)
    SELECT o.run_id, coalesce(o.rank, -1) AS rank_key, arg_max(s.event_idx, s.start_us) AS event_idx,
           any_value(o.self_us) AS self_us
    FROM events o JOIN scopes s
      ON s.run_id = o.run_id AND s.rank_key = coalesce(o.rank, -1) AND s.side = 'cpu' AND s.pid = o.pid AND s.tid = o.tid
     AND o.ts_us >= s.start_us AND o.ts_us < s.end_us
    WHERE o.ph = 'X' AND o.cat = 'cpu_op' AND o.category = 'attention' AND o.self_us IS NOT NULL
    GROUP BY o.run_id, o.rank, o.event_idx
),
op_time AS (SELECT run_id, rank_key, event_idx, sum(self_us) AS attention_us FROM ops GROUP BY ALL),
calls AS (
    SELECT run_id, module_path, any_value(axis) AS axis, string_agg(DISTINCT kind, ',' ORDER BY kind) AS kind
    FROM attention_calls GROUP BY ALL
),
per_module AS (
    SELECT s.run_id, s.rank, s.side, s.module_path, count(*) AS calls, sum(s.dur_us) AS time_us,
           sum(s.dur_us - coalesce(n.nested_us, 0)) AS self_us,
           CASE WHEN s.side = 'cpu' THEN coalesce(sum(t.attention_us), 0) END AS attention_us
    FROM scopes s
    LEFT JOIN nested n ON n.run_id = s.run_id AND n.rank_key = s.rank_key AND n.event_idx = s.event_idx
    LEFT JOIN op_time t ON t.run_id = s.run_id AND t.rank_key = s.rank_key AND t.event_idx = s.event_idx
    GROUP BY s.run_id, s.rank, s.side, s.module_path
)
SELECT m.run_id, m.rank, m.side, m.module_path, c.axis, c.kind, m.calls, m.time_us, m.self_us, m.attention_us
FROM per_module m LEFT JOIN calls c ON c.run_id = m.run_id AND c.module_path = m.module_path""",
]


def attention_time(con: duckdb.DuckDBPyConnection, run_id: str, side: str | None = None) -> pd.DataFrame:
    """(run_id, rank, side, module_path, axis, kind, calls, time_us, self_us, attention_us), largest first."""
    if side is None:
        return run_frame(con, "attention_time", run_id, order_by="side, self_us DESC")
    check_choice("side", side, SIDES)
    return run_frame(con, "attention_time", run_id, "side = ?", [side], order_by="self_us DESC")
