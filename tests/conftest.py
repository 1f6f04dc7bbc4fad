"""Shared fixtures: the real traces in ../shared/traces, imported once per session."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as app/cli.py does: before torch loads, no spinning threads

import pytest

SHARED_TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"


class TraceStore:
    """One store for the session; each trace is imported the first time a test asks for it."""

    def __init__(self, path: Path):
        from store.db import Store

        self.store = Store(path).ensure()
        self._run_ids: dict[Path, str] = {}
        self._con = None

    def run_id(self, relative: str) -> str:
        """The run id of a trace file under ../shared/traces (imported on first use)."""
        from store.ingest import ingest_file

        path = SHARED_TRACES / relative
        if not path.is_file():
            pytest.skip(f"shared trace {path} not present")
        if path not in self._run_ids:
            self._run_ids[path] = ingest_file(self.store, path).run_id
        return self._run_ids[path]

    @property
    def con(self):
        if self._con is None:
            self._con = self.store.connect()
        return self._con


@pytest.fixture(scope="session")
def trace_store(tmp_path_factory) -> TraceStore:
    traces = TraceStore(tmp_path_factory.mktemp("traces") / "observatory.duckdb")
    yield traces
    if traces._con is not None:
        traces._con.close()
