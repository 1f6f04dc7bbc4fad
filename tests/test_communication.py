"""Communication analyses against Holistic Trace Analysis on the shared multi-rank traces."""
from __future__ import annotations

import gzip
import json

import pytest

from store.analysis.communication import DTYPE_BYTES, collective_stats, collectives, comm_comp_overlap, job_runs, stragglers
from tests.conftest import SHARED_TRACES

TF0 = "hta/trace_filter/sampled_rank-0.json.gz"
TF1 = "hta/trace_filter/sampled_rank-1.json.gz"
NCCL = "hta/nccl_parser_config/nccl_data.json.gz"
NEG = "hta/negative_queue_length_values_check/rank0.json.gz"
CPU_ONLY = "hta/cpu_only/rank-34.Jul_15_10_52_41.1074.pt.trace.json.gz"

# HTA (traceinsight 0.6.1) TraceAnalysis(trace_dir).get_comm_comp_overlap(), run once by hand in a
# throwaway venv: comp_comm_overlap_pctg per rank (HTA rounds to 2 decimals).
HTA_OVERLAP_PCT = {TF0: 11.81, TF1: 20.05, NCCL: 14.31, NEG: 1.37}


@pytest.mark.parametrize("trace", list(HTA_OVERLAP_PCT), ids=lambda t: t.split("/")[1] + t[-9:-8])
def test_comm_comp_overlap_matches_hta(trace_store, trace):
    got = comm_comp_overlap(trace_store.con, trace_store.run_id(trace))
    assert len(got) == 1
    assert got.overlap_pct.iloc[0] == pytest.approx(HTA_OVERLAP_PCT[trace], abs=0.5)
    assert got.overlap_pct.iloc[0] == pytest.approx(HTA_OVERLAP_PCT[trace], abs=0.006)  # in fact to HTA's rounding


def test_no_communication_is_absent(trace_store):
    run_id = trace_store.run_id(CPU_ONLY)
    assert comm_comp_overlap(trace_store.con, run_id).empty
    assert collective_stats(trace_store.con, run_id).empty
    assert job_runs(trace_store.con, run_id) == [run_id]


def test_collectives_carry_nccl_message_sizes(trace_store):
    """nccl_parser_config's NCCL kernels name their collective, element count and dtype; the sizes and
    bandwidths follow from the raw args."""
    run_id = trace_store.run_id(NCCL)
    with gzip.open(SHARED_TRACES / NCCL) as f:
        raw = [e for e in json.load(f)["traceEvents"] if e.get("cat") == "kernel" and e["name"].startswith("ncclKernel")]
    rows = collectives(trace_store.con, run_id)
    assert len(rows) == len(raw) == 21
    by_kind = collective_stats(trace_store.con, run_id).set_index("collective")
    for kind, arg in (("allreduce", "allreduce"), ("broadcast", "broadcast")):
        mine = [e for e in raw if e["args"]["Collective name"] == arg]
        size = sum(DTYPE_BYTES[e["args"]["dtype"]] * e["args"]["In msg nelems"] for e in mine)  # Float, and Long for some broadcasts
        row = by_kind.loc[kind]
        assert (row.calls, row.message_bytes) == (len(mine), size)
        assert row.time_us == pytest.approx(sum(e["dur"] for e in mine))
        assert row.algbw_bytes_per_s == pytest.approx(size / row.time_us * 1e6)
        assert row.busbw_bytes_per_s == pytest.approx(row.algbw_bytes_per_s)  # 2 ranks: allreduce 2(n-1)/n = 1
    assert set(rows.algorithm) == {"RING"} and set(rows.protocol) == {"LL"}


def test_collectives_without_sizes_are_absent_not_zero(trace_store):
    rows = collective_stats(trace_store.con, trace_store.run_id(TF0))
    assert list(rows.collective) == ["sendrecv"]  # from the kernel name: the trace has no collective args
    assert rows.message_bytes.isna().all() and rows.busbw_bytes_per_s.isna().all()


def test_stragglers_match_hta(trace_store):
    """HTA's get_potential_stragglers(num_candidates=1) on trace_filter finds rank 1; its metric (normalized
    start of the last long SendRecv kernel on stream 84 in step 551) is 0.442700 on rank 0 and 0.712708 on
    rank 1 (HTA 0.6.1 by hand)."""
    runs = job_runs(trace_store.con, trace_store.run_id(TF0))
    runs = job_runs(trace_store.con, trace_store.run_id(TF1))  # both imported now
    assert len(runs) == 2
    got = stragglers(trace_store.con, runs).set_index("rank")
    assert list(got.iteration.unique()) == [551] and set(got.stream) == {84}
    assert got.normalized_start.to_dict() == pytest.approx({0: 0.442700, 1: 0.712708}, abs=1e-6)
    assert got.straggler.to_dict() == {0: False, 1: True}
    assert got.late_us.loc[1] == pytest.approx(164191)  # rank 1 starts it 164 ms after rank 0
    assert stragglers(trace_store.con, runs, candidates=2).straggler.all()  # HTA's default of 2 names both
    assert stragglers(trace_store.con, [trace_store.run_id(NCCL)]).empty  # one rank: nothing to compare
    with pytest.raises(ValueError, match="candidates=0"):
        stragglers(trace_store.con, runs, candidates=0)
