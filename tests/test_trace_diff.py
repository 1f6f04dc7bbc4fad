"""Trace diff against Holistic Trace Analysis's TraceDiff on its own pair hta/trace_compare/{base,test}."""
from __future__ import annotations

import json

import pytest

from store.analysis.trace_diff import CHANGES, change_of, diff_by_category, ops_diff, trace_diff

BASE = "hta/trace_compare/base/base.json.gz"
TEST = "hta/trace_compare/test/test.json.gz"
ADD_INT = "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<int>, at::detail::Array<char*, 3> >(int, at::native::CUDAFunctor_add<int>, at::detail::Array<char*, 3>)"

# HTA (traceinsight 0.6.1) TraceDiff.compare_traces(LabeledTrace(base), LabeledTrace(test)), run once by hand
# in a throwaway venv: name -> (control_counts, test_counts, control_total_duration, test_total_duration).
# Default arguments: first rank, first iteration (ProfilerStep#1009), all device types.
HTA_FIRST_STEP = {
    "ProfilerStep#1009": (1, 1, 100298, 100298),
    "aten::as_strided": (1, 1, 0, 0),
    "aten::empty": (1, 1, 2, 2),
    "cudaEventQuery": (1, 1, 10, 10),
    "cudaLaunchKernel": (1, 1, 4, 4),
    "nccl:all_reduce": (1, 1, 66, 66),
    ADD_INT: (1, 1, 4, 4),
}
# The same with control_iteration=test_iteration=[1009, 1010] (every ProfilerStep).
HTA_STEPS = {
    "ProfilerStep#1009": (1, 1, 100298, 100298),
    "ProfilerStep#1010": (1, 1, 122149, 122149),
    "aten::as_strided": (2, 2, 0, 0),
    "aten::empty": (2, 2, 2, 2),
    "cudaEventQuery": (2, 2, 14, 14),
    "cudaLaunchKernel": (2, 2, 8, 8),
    "nccl:all_reduce": (2, 1, 133, 66),
    ADD_INT: (2, 1, 8, 4),
    "AddmmBackward0": (0, 1, 0, 207),
    "All2All_Pooled_Req": (0, 1, 0, 311),
    "CatBackward0": (0, 1, 0, 11),
}
# HTA's ops_diff with every ProfilerStep.
HTA_STEPS_OPS_DIFF = {
    "added": ["AddmmBackward0", "All2All_Pooled_Req", "CatBackward0"],
    "deleted": [],
    "increased": [],
    "decreased": ["nccl:all_reduce", ADD_INT],
    "unchanged": ["ProfilerStep#1009", "ProfilerStep#1010", "aten::as_strided", "aten::empty", "cudaEventQuery", "cudaLaunchKernel"],
}


def as_table(frame) -> dict:
    return {r.name: (r.count_a, r.count_b, r.dur_a_us, r.dur_b_us) for r in frame.itertuples()}


@pytest.mark.parametrize("scope,expected", [("first_step", HTA_FIRST_STEP), ("steps", HTA_STEPS)])
def test_trace_diff_matches_hta(trace_store, scope, expected):
    a, b = trace_store.run_id(BASE), trace_store.run_id(TEST)
    names = trace_diff(trace_store.con, a, b, scope)
    assert as_table(names) == expected
    assert (names.diff_count == names.count_b - names.count_a).all()
    assert (names.diff_dur_us == names.dur_b_us - names.dur_a_us).all()
    if scope == "steps":
        assert ops_diff(names) == HTA_STEPS_OPS_DIFF
    else:
        assert ops_diff(names)["unchanged"] == sorted(HTA_FIRST_STEP)


def test_kernel_and_category_diffs(trace_store):
    a, b = trace_store.run_id(BASE), trace_store.run_id(TEST)
    kernels = trace_diff(trace_store.con, a, b, "steps", side="device")
    assert as_table(kernels) == {ADD_INT: (2, 1, 8, 4)}  # HTA with DeviceType.GPU
    whole = trace_diff(trace_store.con, a, b, "trace")
    assert whole.count_a.sum() == 33 and whole.count_b.sum() == 34  # every event of the two files (all have a duration)
    categories = diff_by_category(trace_store.con, a, b, "steps").set_index(["side", "category"])
    assert categories.loc[("cpu", "communication")].count_b == 1  # All2All_Pooled_Req
    assert categories.count_a.sum() == sum(v[0] for v in HTA_STEPS.values())


def test_change_classes():
    assert [change_of(0, 2), change_of(2, 0), change_of(1, 2), change_of(2, 1), change_of(2, 2)] == list(CHANGES)


def test_diff_command_json(trace_store, capsys):
    from app.cli import main

    a, b = trace_store.run_id(BASE), trace_store.run_id(TEST)
    assert main(["diff", a, b, "--scope", "steps", "--format", "json", "--db", str(trace_store.store.path)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["ops_diff"] == {"added": 3, "deleted": 0, "increased": 0, "decreased": 2, "unchanged": 6}
    row = next(r for r in document["names"] if r["name"] == "nccl:all_reduce")
    assert {k: row[k] for k in ("count_a", "count_b", "dur_a_us", "dur_b_us")} == {"count_a": 2, "count_b": 1, "dur_a_us": 133, "dur_b_us": 66}
    assert main(["diff", a, "--db", str(trace_store.store.path)]) == 2
