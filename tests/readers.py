"""Every reader of a store, run as a user would: the invariant that whatever the store accepted stays readable.

- `check_run_readers(store, run_id)`: every table and analysis view, fetched whole, and the run's report (both
  GPU time definitions), on a connection scoped to the run.
- `check_store_readers(path, monkeypatch)`: `observatory report` of all runs (table and JSON), `observatory sql`
  over every table and view (table and JSON), and every dashboard page in AppTest.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from store.db import Store

PAGE_SCRIPTS = Path(__file__).resolve().parents[1] / "app" / "dashboard" / "page_scripts"
MAIN = PAGE_SCRIPTS.parent / "main.py"


def relations(con) -> list[str]:
    """Every table and view a user can query."""
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' AND table_name <> 'observatory_meta' ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]


def check_run_readers(store: Store, run_id: str) -> None:
    """Every table and view over this run, fetched whole (Arrow and pandas), and its report."""
    from store.analysis.report import build_report

    with store.connect_runs([run_id]) as con:
        for name in relations(con):
            con.execute(f"SELECT * FROM {name}").to_arrow_table()
            con.execute(f"SELECT * FROM {name}").df()
        for definition in ("hta", "all_kernels"):
            json.dumps(build_report(con, run_id, definition), default=str)


def cli(*argv: str) -> tuple[int, str, str]:
    """`observatory ARGV` in this process: (exit code, stdout, stderr)."""
    from app.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def check_store_readers(path: str | Path, monkeypatch, pages: bool = True) -> None:
    path = str(path)
    for fmt in ("table", "json"):
        code, out, err = cli("report", "--db", path, "--format", fmt)
        assert code == 0, f"observatory report --format {fmt}: {err}"
        if fmt == "json":
            json.loads(out)
    with Store(path).connect() as con:
        names = relations(con)
    for name in names:
        for fmt in ("table", "json"):
            code, out, err = cli("sql", f"SELECT * FROM {name}", "--db", path, "--format", fmt)
            assert code == 0, f"observatory sql 'SELECT * FROM {name}' --format {fmt}: {err}"
    if pages:
        check_pages(path, monkeypatch)


def check_pages(path: str, monkeypatch) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("OBSERVATORY_DB", path)
    at = AppTest.from_file(str(MAIN), default_timeout=120)
    at.run()
    for page in sorted(PAGE_SCRIPTS.glob("*.py")):
        at.switch_page(f"page_scripts/{page.name}").run()
        assert not at.exception, (page.name, [e.message for e in at.exception])
        errors = [str(e.value) for e in at.error]
        assert not any("Could not read the store" in e for e in errors), (page.name, errors)
