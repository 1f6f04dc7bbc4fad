"""`observatory report`'s roofline, communication and critical path sections: present where the trace
has the data, None (absent, with the reason) where it does not, in JSON and as tables."""
from __future__ import annotations

import json

import pytest

from readers import cli

TF0 = "hta/trace_filter/sampled_rank-0.json.gz"
CPU_ONLY = "hta/cpu_only/rank-34.Jul_15_10_52_41.1074.pt.trace.json.gz"
ROOFLINE_KEYS = {"name", "calls", "flops", "bytes", "time_us", "achieved_flops_per_s", "achieved_bytes_per_s", "intensity", "bound", "peak_pct"}


def report(trace_store, trace: str) -> tuple[dict, str]:
    run_id, db = trace_store.run_id(trace), str(trace_store.store.path)
    code, out, err = cli("report", run_id, "--db", db, "--format", "json")
    assert code == 0, err
    code, table, err = cli("report", run_id, "--db", db)
    assert code == 0, err
    return json.loads(out), table


def test_gpu_trace_sections(trace_store):
    document, table = report(trace_store, TF0)
    assert document["comm_comp_overlap"][0]["rank"] == 0
    assert document["comm_comp_overlap"][0]["overlap_pct"] == pytest.approx(11.81, abs=0.01)  # HTA
    assert document["collectives"][0]["collective"] == "sendrecv" and document["collectives"][0]["message_bytes"] is None
    assert document["stragglers"] is None and "other ranks" in document["absent"]["stragglers"]
    rows = {r["name"]: r for r in document["roofline"]}
    assert ROOFLINE_KEYS <= set(rows["aten::mm"]) and rows["aten::mm"]["flops"] > 0
    assert rows["aten::mm"]["bound"] is None and document["roofs"] is None  # no deviceProperties: no device to look up
    path = document["critical_path"]
    assert path["window"] == "first ProfilerStep" and path["events"] == 1765  # HTA's figures (test_critical_path)
    assert {b["bound"]: b["time_us"] for b in path["bounds"]}["cpu_bound"] == 300492
    for title in ("operator roofline", "computation/communication overlap", "critical path of the first ProfilerStep", "stragglers: absent"):
        assert title in table


def test_absent_sections_are_none_not_zero(trace_store):
    document, table = report(trace_store, CPU_ONLY)
    for section in ("roofline", "comm_comp_overlap", "collectives", "stragglers", "critical_path"):
        assert document[section] is None, section
        assert document["absent"][section], section
    assert "operator roofline: absent" in table and "critical path: absent" in table
