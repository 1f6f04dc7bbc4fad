"""Whatever a trace holds, the store stays readable.

A few hundred seeded mutants of real traces (tests/trace_mutations.py) go through the import one
after another into one store. Each is either refused with one line naming the file, leaving the
store as it was, or accepted. Every CHECKPOINT_EVERY mutants, every reader of the whole store
works (`report` of all runs, `sql` over every table and view, in table and JSON form); at the
end, every dashboard page in AppTest too. Adding runs never makes an unreadable part readable,
so a reader that works at a checkpoint worked after each import before it; when one fails, the
mutant that broke it is found run by run (each table and view, and the run's own report).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from readers import check_run_readers, check_store_readers
from store import summaries
from store.db import Store
from store.ingest import ingest_file
from store.trace_reader import TraceError
from trace_mutations import mutants

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"
SOURCES = {
    "gpu": TRACES / "hta/critical_path/cuda_event_sync_multi_stream/event_sync_trace.json.gz",
    "cpu": TRACES / "hta/cpu_only/rank-34.Jul_15_10_52_41.1074.pt.trace.json.gz",
}
MUTANTS_PER_SOURCE = 120
CHECKPOINT_EVERY = 60
GZIP_MAGIC = b"\x1f\x8b"


def _check_store(store: Store, new: dict[str, str], monkeypatch, pages: bool) -> None:
    try:
        check_store_readers(store.path, monkeypatch, pages=pages)
    except Exception:  # noqa: BLE001 - find and name the mutant that broke a reader
        for run_id, description in new.items():
            try:
                check_run_readers(store, run_id)
            except Exception as exc:  # noqa: BLE001
                raise AssertionError(f"mutant {description!r} ({run_id}) broke a reader: {exc}") from exc
        raise


def test_no_mutant_breaks_a_reader(tmp_path, monkeypatch):
    for source in SOURCES.values():
        if not source.is_file():
            pytest.skip(f"shared trace {source} not present")
    store = Store(tmp_path / "o.duckdb")
    folder = tmp_path / "mutants"
    folder.mkdir()
    accepted, refused, new, done = [], [], {}, 0
    for label, source in SOURCES.items():
        for description, data in mutants(source, seed=7, count=MUTANTS_PER_SOURCE):
            description = f"{label} {description}"
            path = folder / f"{description[:7].replace(' ', '-')}{'.json.gz' if data[:2] == GZIP_MAGIC else '.json'}"
            path.write_bytes(data)
            before = summaries.committed_runs(store) if store.exists() else set()
            try:
                result = ingest_file(store, path)
            except TraceError as exc:
                message = str(exc)
                assert message.startswith(f"{path}: ") and "\n" not in message, (description, message)
                assert (summaries.committed_runs(store) if store.exists() else set()) == before, description
                refused.append(description)
            else:
                if result.created:
                    accepted.append(description)
                    new[result.run_id] = description
            assert not store.staging_dir.exists() or not os.listdir(store.staging_dir), description
            done += 1
            if done % CHECKPOINT_EVERY == 0 and new:
                _check_store(store, new, monkeypatch, pages=False)
                new = {}
    _check_store(store, new, monkeypatch, pages=True)
    # both outcomes happen: the mutations are neither all harmless nor all fatal
    assert len(accepted) > 40 and len(refused) > 40, (len(accepted), len(refused))
