"""Per-run summaries: equal to the views, brought up to date incrementally, never stale."""
from __future__ import annotations

from pathlib import Path

import pytest

from store import summaries
from store.db import Store, StoreError
from store.ingest import ingest_file

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"
FIRST = TRACES / "hta/trace_filter/sampled_rank-0.json.gz"
SECOND = TRACES / "hta/trace_filter/sampled_rank-1.json.gz"


def view_rows(store: Store) -> list:
    with store.connect() as con:
        return con.execute("SELECT run_id, side, category, time_us, count FROM op_time_by_category ORDER BY ALL").fetchall()


def summary_rows(store: Store) -> list:
    table = summaries.category_times(store).select(["run_id", "side", "category", "time_us", "count"])
    return sorted(tuple(row.values()) for row in table.to_pylist())


def test_summaries_match_the_views_and_follow_new_runs(tmp_path):
    store = Store(tmp_path / "o.duckdb").ensure()
    first = ingest_file(store, FIRST).run_id
    assert summary_rows(store) == view_rows(store) and {r[0] for r in summary_rows(store)} == {first}
    assert summaries.runs_table(store)["run_id"].to_pylist() == [first]

    second = ingest_file(store, SECOND).run_id  # committed after the summary was written
    assert summary_rows(store) == view_rows(store)
    assert sorted(summaries.runs_table(store)["run_id"].to_pylist()) == sorted([first, second])
    files = list((store.parts / "summaries").glob("*.parquet"))
    assert len(files) == 2, "one file per summary, rewritten in place"


def test_a_summary_file_that_is_unreadable_is_rebuilt(tmp_path):
    store = Store(tmp_path / "o.duckdb").ensure()
    ingest_file(store, FIRST)
    summaries.category_times(store)
    for file in (store.parts / "summaries").glob("op_time_by_category-*.parquet"):
        file.write_bytes(b"not parquet")
    assert summary_rows(store) == view_rows(store)


def test_no_store_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="no store here yet"):
        summaries.runs_table(Store(tmp_path / "none.duckdb"))


def test_top_cpu_operators_add_up_to_the_cpu_category_time(tmp_path):
    from store.analysis.operators import top_cpu_operators

    store = Store(tmp_path / "o.duckdb").ensure()
    run_id = ingest_file(store, FIRST).run_id
    with store.connect_runs([run_id]) as con:
        operators = top_cpu_operators(con, run_id, limit=100_000)
        cpu_total = con.execute("SELECT sum(time_us) FROM op_time_by_category WHERE side = 'cpu'").fetchone()[0]
    assert operators["self_us"].sum() == pytest.approx(cpu_total)
    assert list(operators["self_us"]) == sorted(operators["self_us"], reverse=True)
    assert operators["self_share_pct"].sum() == pytest.approx(100)
