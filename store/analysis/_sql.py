"""Helpers shared by the analyses: interval union as SQL text, and reading one run from a view."""
from __future__ import annotations

import duckdb
import pandas as pd

from store.enrich import LAUNCH_CATS  # noqa: F401  (runtime/driver calls that launch device work)

# Device events that occupy an accelerator engine (gpu_user_annotation only labels time ranges).
DEVICE_OP_CATS = ("kernel", "gpu_memcpy", "gpu_memset", "mtia_ccp_events")


def quoted(values) -> str:
    return ", ".join(f"'{v}'" for v in values)


def union_sql(source: str, keys: str) -> str:
    """SELECT keys, start_us, end_us: the union of the intervals [start_us, end_us] of `source`, per keys.

    Gaps and islands: sorted by start, an interval opens a new island when it starts after every
    earlier interval of its group has ended; an island spans its members. Touching intervals merge.
    """
    window = f"PARTITION BY {keys} ORDER BY start_us, end_us"
    return f"""
        SELECT {keys}, min(start_us) AS start_us, max(end_us) AS end_us
        FROM (
            SELECT *, sum(opens::INTEGER) OVER ({window} ROWS UNBOUNDED PRECEDING) AS island
            FROM (
                SELECT {keys}, start_us, end_us,
                       coalesce(start_us > max(end_us) OVER ({window} ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), true) AS opens
                FROM ({source})
            )
        )
        GROUP BY {keys}, island"""


def check_run(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
    if con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]).fetchone()[0] == 0:
        raise ValueError(f"run_id={run_id!r}: no such run in the store")


def run_frame(con: duckdb.DuckDBPyConnection, view: str, run_id: str, where: str = "", params: list | None = None,
              order_by: str = "") -> pd.DataFrame:
    """Rows of an analysis view for one run; a run id not in the store is an error naming it."""
    check_run(con, run_id)
    sql = f"SELECT * FROM {view} WHERE run_id = ?" + (f" AND {where}" if where else "")
    if order_by:
        sql += f" ORDER BY {order_by}"
    return con.execute(sql, [run_id, *(params or [])]).df()


def check_choice(argument: str, value: str, choices) -> None:
    if value not in choices:
        raise ValueError(f"{argument}={value!r}: expected one of {', '.join(map(repr, choices))}")
