"""Communication per rank: computation/communication overlap, collectives by kind with message
sizes and bandwidths, and stragglers across the ranks of one job.

- comm_comp_overlap: HTA's get_comm_comp_overlap (hta/analyzers/communication_analysis.py): of
  the time communication kernels run (union of their intervals), the share during which a
  computation kernel runs too. Kernels and their classification are gpu_time's (`gpu_kernel_set`,
  HTA's get_kernel_type), per definition: 'hta' reproduces HTA's figure.
- collectives: one row per communication kernel (category `communication` on the device) with
  its collective (the trace's `Collective name`, else the kernel name's), NCCL algorithm and
  protocol (from the kernel name), message size (`In/Out msg nelems` x the size of `dtype`),
  algorithm bandwidth (message bytes / duration) and bus bandwidth (algorithm bandwidth x
  NCCL's factor for the collective and group size, as nccl-tests' PERFORMANCE.md defines it).
  Absent figures are NULL: most traces carry no message sizes.
- stragglers(): HTA's get_potential_stragglers (hta/analyzers/straggler.py) over the runs of
  one job, one run per rank.
"""
from __future__ import annotations

import duckdb
import pandas as pd

from store.analysis._sql import check_choice, check_run, run_frame, union_sql
from store.analysis.gpu_time import DEFINITIONS

# Bytes per element of the ScalarType names NCCL kernel args carry in `dtype`.
DTYPE_BYTES = {
    "Double": 8, "Long": 8, "ComplexFloat": 8, "Float": 4, "Int": 4, "Half": 2, "BFloat16": 2, "Short": 2,
    "Byte": 1, "Char": 1, "Bool": 1, "Float8_e4m3fn": 1, "Float8_e5m2": 1, "Float8_e4m3fnuz": 1, "Float8_e5m2fnuz": 1,
}
_DTYPE_SQL = "CASE dtype " + " ".join(f"WHEN '{k}' THEN {v}" for k, v in DTYPE_BYTES.items()) + " END"

# NCCL's bus bandwidth factor (nccl-tests doc/PERFORMANCE.md), n = ranks in the group.
_BUS_FACTOR_SQL = """CASE
        WHEN collective = 'allreduce' THEN 2.0 * (group_size - 1) / group_size
        WHEN collective IN ('allgather', 'reducescatter', 'alltoall') THEN (group_size - 1)::DOUBLE / group_size
        WHEN collective IN ('broadcast', 'reduce', 'sendrecv', 'send', 'recv') THEN 1.0
    END"""

VIEWS = [
    f"""CREATE OR REPLACE VIEW comm_comp_overlap AS
WITH comm AS ({union_sql("SELECT * FROM gpu_kernel_set WHERE kernel_type = 'communication'", "run_id, rank, definition")}),
comp AS ({union_sql("SELECT * FROM gpu_kernel_set WHERE kernel_type = 'computation'", "run_id, rank, definition")}),
overlap AS (
    SELECT m.run_id, m.definition, sum(least(m.end_us, c.end_us) - greatest(m.start_us, c.start_us)) AS overlap_us
    FROM comm m JOIN comp c ON c.run_id = m.run_id AND c.definition = m.definition
                             AND c.start_us < m.end_us AND c.end_us > m.start_us
    GROUP BY m.run_id, m.definition
)
SELECT m.run_id, any_value(m.rank) AS rank, m.definition, sum(m.end_us - m.start_us) AS comm_us,
       coalesce(any_value(o.overlap_us), 0) AS overlap_us,
       100 * coalesce(any_value(o.overlap_us), 0) / nullif(sum(m.end_us - m.start_us), 0) AS overlap_pct
FROM comm m LEFT JOIN overlap o ON o.run_id = m.run_id AND o.definition = m.definition
GROUP BY m.run_id, m.definition""",
    f"""CREATE OR REPLACE VIEW collectives AS
WITH k AS (
    SELECT run_id, rank, event_idx, name, stream, ts_us, dur_us,
           json_extract_string(args, '$."Collective name"') AS collective_arg,
           json_extract_string(args, '$.dtype') AS dtype,
           TRY_CAST(json_extract(args, '$."In msg nelems"') AS BIGINT) AS in_nelems,
           TRY_CAST(json_extract(args, '$."Out msg nelems"') AS BIGINT) AS out_nelems,
           TRY_CAST(json_extract(args, '$."Group size"') AS BIGINT) AS group_size,
           json_extract_string(args, '$."Process Group Name"') AS process_group,
           regexp_extract(name, '^(?:nccl|rccl)(?:Dev)?Kernel_([A-Za-z]+)', 1) AS name_collective,
           nullif(regexp_extract(name, '_(RING|TREE|COLLNET_DIRECT|COLLNET_CHAIN|COLLNET|NVLS_TREE|NVLS|PAT)_(LL128|LL|SIMPLE)', 1), '') AS algorithm,
           nullif(regexp_extract(name, '_(RING|TREE|COLLNET_DIRECT|COLLNET_CHAIN|COLLNET|NVLS_TREE|NVLS|PAT)_(LL128|LL|SIMPLE)', 2), '') AS protocol
    FROM events
    WHERE ph = 'X' AND on_device AND category = 'communication' AND dur_us IS NOT NULL
),
named AS (
    SELECT *, nullif(regexp_replace(regexp_replace(lower(coalesce(collective_arg, name_collective)), '_base$', ''), '[^a-z]', '', 'g'), '') AS collective,
           {_DTYPE_SQL} * greatest(in_nelems, out_nelems) AS message_bytes
    FROM k
)
SELECT run_id, rank, event_idx, name, stream, ts_us, dur_us, coalesce(collective, 'unknown') AS collective, algorithm, protocol,
       dtype, in_nelems, out_nelems, group_size, process_group, message_bytes,
       message_bytes / nullif(dur_us, 0) * 1e6 AS algbw_bytes_per_s,
       message_bytes / nullif(dur_us, 0) * 1e6 * {_BUS_FACTOR_SQL} AS busbw_bytes_per_s
FROM named""",
    """CREATE OR REPLACE VIEW collective_stats AS
SELECT run_id, rank, collective, count(*) AS calls, sum(dur_us) AS time_us,
       100 * sum(dur_us) / sum(sum(dur_us)) OVER (PARTITION BY run_id) AS share_pct,
       count(message_bytes) AS sized_calls, sum(message_bytes) AS message_bytes,
       sum(message_bytes) / nullif(sum(dur_us) FILTER (WHERE message_bytes IS NOT NULL), 0) * 1e6 AS algbw_bytes_per_s,
       sum(busbw_bytes_per_s * dur_us) / nullif(sum(dur_us) FILTER (WHERE busbw_bytes_per_s IS NOT NULL), 0) AS busbw_bytes_per_s,
       string_agg(DISTINCT algorithm, ', ' ORDER BY algorithm) AS algorithms
FROM collectives
GROUP BY run_id, rank, collective""",
]


def comm_comp_overlap(con: duckdb.DuckDBPyConnection, run_id: str, definition: str = "hta") -> pd.DataFrame:
    """(run_id, rank, definition, comm_us, overlap_us, overlap_pct); no row without communication kernels."""
    check_choice("definition", definition, DEFINITIONS)
    return run_frame(con, "comm_comp_overlap", run_id, "definition = ?", [definition])


def collectives(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """One row per communication kernel, in start order, with its collective, sizes and bandwidths (NULL where absent)."""
    return run_frame(con, "collectives", run_id, order_by="ts_us, event_idx")


def collective_stats(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """Per collective kind: calls, time_us, share_pct of communication time, message bytes and bandwidths."""
    return run_frame(con, "collective_stats", run_id, order_by="time_us DESC")


JOB_SQL = """
SELECT o.run_id, o.rank FROM runs r JOIN runs o
  ON o.world_size IS NOT DISTINCT FROM r.world_size AND o.rank IS NOT NULL
 AND o.source IS NOT DISTINCT FROM r.source
 AND regexp_replace(coalesce(o.source_path, o.run_id), '/[^/]*$', '') = regexp_replace(coalesce(r.source_path, r.run_id), '/[^/]*$', '')
WHERE r.run_id = ? AND r.rank IS NOT NULL
ORDER BY o.rank, o.run_id
"""


def job_runs(con: duckdb.DuckDBPyConnection, run_id: str) -> list[str]:
    """The runs of `run_id`'s job the connection sees, one per rank: traces with a rank imported from the
    same folder with the same world size (a multi-rank job's files sit together). [] for a run without a rank."""
    check_run(con, run_id)
    rows = con.execute(JOB_SQL, [run_id]).fetchall()
    first = {}
    for other, rank in rows:
        first.setdefault(rank, other)
    return list(first.values())


# HTA's kernels of one job's ranks, with the ProfilerStep of their launch: the 'hta' kernel set
# (last step dropped) and every event's span for the iteration length.
_STRAGGLER_EVENTS_SQL = """
WITH hta AS (SELECT * FROM gpu_kernel_set WHERE definition = 'hta' AND run_id IN (SELECT unnest($runs::VARCHAR[])))
SELECT k.run_id, k.rank, k.event_idx, k.name, k.stream, k.start_us, k.end_us, e.profiler_step AS iteration
FROM hta k JOIN events e ON e.run_id = k.run_id AND e.event_idx = k.event_idx
"""
_STEP_SPANS_SQL = """
SELECT e.run_id, e.profiler_step AS iteration, min(e.ts_us) AS start_us, max(e.ts_us + e.dur_us) AS end_us
FROM events e
WHERE e.run_id IN (SELECT unnest($runs::VARCHAR[])) AND e.profiler_step IS NOT NULL AND e.dur_us IS NOT NULL
  AND e.cat_raw IS NOT NULL AND e.cat_raw <> 'Trace'
GROUP BY ALL
"""


def stragglers(con: duckdb.DuckDBPyConnection, run_ids: list[str], candidates: int = 1,
               min_normalized_duration: float = 0.01) -> pd.DataFrame:
    """HTA's potential stragglers among the ranks of one job (find_stragglers_with_late_start_comm_kernels).

    Over the ProfilerSteps HTA keeps (all but the last), with t0 the earliest event of those steps and
    T their mean length: NCCL kernels of at least `min_normalized_duration` x T; on each rank the last
    one per (stream, kernel name, step); the (stream, name) whose duration varies most across ranks
    (mean over steps of the standard deviation) is the metric kernel; its start, (start - t0) / T, per
    rank and step. Per step the `candidates` ranks that start it latest are stragglers.

    One row per rank and step: run_id, rank, iteration, stream, name, start_us, late_us (start minus the
    earliest rank's), normalized_start, straggler; plus straggler_steps (steps it was one). Empty when
    fewer than two ranks have such kernels.
    """
    if not isinstance(candidates, int) or candidates < 1:
        raise ValueError(f"candidates={candidates!r}: expected an integer >= 1")
    for run_id in run_ids:
        check_run(con, run_id)
    kernels = con.execute(_STRAGGLER_EVENTS_SQL, {"runs": run_ids}).df()
    spans = con.execute(_STEP_SPANS_SQL, {"runs": run_ids}).df()
    steps = sorted(set(kernels["iteration"].dropna().astype(int)) & set(spans["iteration"].astype(int)))
    empty = pd.DataFrame(columns=["run_id", "rank", "iteration", "stream", "name", "start_us", "late_us",
                                  "normalized_start", "straggler", "straggler_steps"])
    if kernels["rank"].nunique() < 2 or not steps:
        return empty
    spans = spans[spans["iteration"].isin(steps)]
    t0, iteration_us = spans["start_us"].min(), (spans["end_us"].max() - spans["start_us"].min()) / len(steps)
    long = kernels[kernels["iteration"].isin(steps) & (kernels["iteration"] > 0) & (kernels["stream"] > 0)
                   & kernels["name"].str.startswith("ncclKernel")
                   & (kernels["end_us"] - kernels["start_us"] >= iteration_us * min_normalized_duration)]
    last = long.sort_values(["start_us", "event_idx"]).groupby(["run_id", "rank", "stream", "iteration", "name"], as_index=False).last()
    if last.empty:
        return empty
    last["duration"] = (last["end_us"] - last["start_us"]) / iteration_us
    spread = last.groupby(["stream", "iteration", "name"])["duration"].std().groupby(["stream", "name"]).mean()
    if spread.isna().all():
        return empty
    stream, name = spread.idxmax()
    metric = last[(last["stream"] == stream) & (last["name"] == name)].copy()
    metric["normalized_start"] = (metric["start_us"] - t0) / iteration_us
    metric["late_us"] = metric["start_us"] - metric.groupby("iteration")["start_us"].transform("min")
    threshold = metric.groupby("iteration")["normalized_start"].transform(
        lambda s: s.sort_values(ascending=False).iloc[min(candidates, len(s)) - 1])
    metric["straggler"] = metric["normalized_start"] >= threshold
    metric["straggler_steps"] = metric.groupby("rank")["straggler"].transform("sum")
    return metric[list(empty.columns)].sort_values(["iteration", "rank"]).reset_index(drop=True)
