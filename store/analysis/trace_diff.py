"""Trace diff: what changed between two runs, per event name, with HTA's TraceDiff definitions.

Holistic Trace Analysis's TraceDiff.compare_traces and ops_diff (hta/trace_diff.py), as defaults:
- the events compared are every event with a duration (complete events of any category: CPU
  operators, annotations, runtime calls, kernels, copies) in the run's **first ProfilerStep**
  (`scope="first_step"`; HTA compares its first iteration by default); `scope="steps"` takes
  every ProfilerStep (HTA given all iterations), `scope="trace"` every event of the trace. A
  device event belongs to the step of the runtime call that launched it (events.profiler_step,
  as HTA's iteration). A run without ProfilerSteps is compared whole whatever the scope;
- per name: the count and total duration in A (HTA's control) and B (its test), and the
  differences B - A;
- each name is `added` (only in B), `deleted` (only in A), `increased` (in both, more calls
  in B), `decreased` (in B, fewer calls than in A) or `unchanged` (in B, as many calls).

`side` restricts the events to the host (`cpu`: HTA's DeviceType.CPU) or the accelerator
(`device`: kernels, copies, sets; HTA's DeviceType.GPU, i.e. the per-kernel diff).
"""
from __future__ import annotations

import duckdb
import pandas as pd

from store.analysis._sql import check_choice, check_run
from store.rows import plain_rows

SCOPES = ("first_step", "steps", "trace")
SIDES = ("all", "cpu", "device")
CHANGES = ("added", "deleted", "increased", "decreased", "unchanged")

# One run's compared events: $run, $scope (SCOPES), $side (SIDES).
_EVENTS_SQL = """
SELECT name, CASE WHEN on_device THEN 'device' ELSE 'cpu' END AS side,
       coalesce(category, cat) AS category, dur_us
FROM events
WHERE run_id = {run} AND dur_us IS NOT NULL AND cat_raw IS NOT NULL AND cat_raw <> 'Trace'
  AND ($side = 'all' OR ($side = 'device') = coalesce(on_device, false))
  AND ($scope = 'trace'
       OR NOT EXISTS (SELECT 1 FROM events s WHERE s.run_id = {run} AND s.profiler_step IS NOT NULL)
       OR ($scope = 'steps' AND profiler_step IS NOT NULL)
       OR profiler_step = (SELECT min(profiler_step) FROM events s WHERE s.run_id = {run}))
"""

_NAMES_SQL = f"""
WITH a AS ({_EVENTS_SQL.format(run="$run_a")}),
     b AS ({_EVENTS_SQL.format(run="$run_b")}),
     ga AS (SELECT name, count(*) AS n, sum(dur_us) AS d, bool_and(side = 'device') AS dev, bool_or(side = 'device') AS any_dev FROM a GROUP BY name),
     gb AS (SELECT name, count(*) AS n, sum(dur_us) AS d, bool_and(side = 'device') AS dev, bool_or(side = 'device') AS any_dev FROM b GROUP BY name)
SELECT coalesce(ga.name, gb.name) AS name,
       CASE WHEN coalesce(ga.dev, true) AND coalesce(gb.dev, true) THEN 'device'
            WHEN coalesce(ga.any_dev, false) OR coalesce(gb.any_dev, false) THEN 'both' ELSE 'cpu' END AS side,
       coalesce(ga.n, 0) AS count_a, coalesce(gb.n, 0) AS count_b,
       coalesce(ga.d, 0) AS dur_a_us, coalesce(gb.d, 0) AS dur_b_us,
       coalesce(gb.n, 0) - coalesce(ga.n, 0) AS diff_count,
       coalesce(gb.d, 0) - coalesce(ga.d, 0) AS diff_dur_us
FROM ga FULL OUTER JOIN gb ON ga.name = gb.name
"""

_CATEGORY_SQL = f"""
WITH a AS ({_EVENTS_SQL.format(run="$run_a")}),
     b AS ({_EVENTS_SQL.format(run="$run_b")}),
     ga AS (SELECT side, category, count(*) AS n, sum(dur_us) AS d FROM a GROUP BY ALL),
     gb AS (SELECT side, category, count(*) AS n, sum(dur_us) AS d FROM b GROUP BY ALL)
SELECT coalesce(ga.side, gb.side) AS side, coalesce(ga.category, gb.category) AS category,
       coalesce(ga.n, 0) AS count_a, coalesce(gb.n, 0) AS count_b,
       coalesce(ga.d, 0) AS dur_a_us, coalesce(gb.d, 0) AS dur_b_us,
       coalesce(gb.n, 0) - coalesce(ga.n, 0) AS diff_count,
       coalesce(gb.d, 0) - coalesce(ga.d, 0) AS diff_dur_us
FROM ga FULL OUTER JOIN gb ON ga.side = gb.side AND ga.category = gb.category
ORDER BY side, abs(coalesce(gb.d, 0) - coalesce(ga.d, 0)) DESC, category
"""


def _params(con: duckdb.DuckDBPyConnection, run_a: str, run_b: str, scope: str, side: str) -> dict:
    check_choice("scope", scope, SCOPES)
    check_choice("side", side, SIDES)
    check_run(con, run_a)
    check_run(con, run_b)
    return {"run_a": run_a, "run_b": run_b, "scope": scope, "side": side}


def change_of(count_a: int, count_b: int) -> str:
    """HTA's ops_diff class of one name from its counts in A (control) and B (test)."""
    if count_a == 0:
        return "added"
    if count_b == 0:
        return "deleted"
    return "increased" if count_b > count_a else "decreased" if count_b < count_a else "unchanged"


def trace_diff(con: duckdb.DuckDBPyConnection, run_a: str, run_b: str, scope: str = "first_step", side: str = "all") -> pd.DataFrame:
    """Per event name: count_a, count_b, dur_a_us, dur_b_us, diff_count, diff_dur_us and change (CHANGES);
    largest duration change first. `side='device'` is the per-kernel diff."""
    frame = con.execute(_NAMES_SQL, _params(con, run_a, run_b, scope, side)).df()
    frame["change"] = [change_of(a, b) for a, b in zip(frame["count_a"], frame["count_b"])]
    order = frame["diff_dur_us"].abs().sort_values(ascending=False, kind="stable").index
    return frame.loc[order].reset_index(drop=True)


def diff_by_category(con: duckdb.DuckDBPyConnection, run_a: str, run_b: str, scope: str = "first_step", side: str = "all") -> pd.DataFrame:
    """Per side (cpu/device) and operator category (events.category; runtime calls and annotations by their
    event category): counts and durations in A and B, and the differences."""
    return con.execute(_CATEGORY_SQL, _params(con, run_a, run_b, scope, side)).df()


def ops_diff(names: pd.DataFrame) -> dict[str, list[str]]:
    """HTA's ops_diff from a trace_diff frame: the names in each change class, sorted."""
    return {change: sorted(names.loc[names["change"] == change, "name"]) for change in CHANGES}


def diff_document(con: duckdb.DuckDBPyConnection, run_a: str, run_b: str, scope: str = "first_step") -> dict:
    """`observatory diff`'s document (and the Compare page's frames as rows): names, ops_diff counts and
    names, categories and kernels."""
    names = trace_diff(con, run_a, run_b, scope)
    changes = ops_diff(names)
    return {
        "run_a": run_a,
        "run_b": run_b,
        "scope": scope,
        "names": plain_rows(names),
        "ops_diff": {change: len(listed) for change, listed in changes.items()},
        "ops_diff_names": changes,
        "categories": plain_rows(diff_by_category(con, run_a, run_b, scope)),
        "kernels": plain_rows(trace_diff(con, run_a, run_b, scope, side="device")),
    }
