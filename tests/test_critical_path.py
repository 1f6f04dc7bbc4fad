"""Critical path against Holistic Trace Analysis: its own end-to-end reference output, the edges its unit
tests check, and its figures on the shared traces."""
from __future__ import annotations

import gzip
import json

import pytest

from store.analysis.critical_path import critical_path, critical_path_graph, path_arrows
from tests.conftest import SHARED_TRACES

E2E_IN = "hta/critical_path/end_to_end/simple_add/input/trace.json.gz"
E2E_OUT = SHARED_TRACES / "hta/critical_path/end_to_end/simple_add/output/overlaid_critical_path_trace.json.gz"
SIMPLE_ADD = "hta/critical_path/simple_add/benchmark_result_493459_1694039959_trace.json.gz"
ALEXNET = "hta/critical_path/alexnet/benchmark_result_2869224_1695835535_trace.json.gz"
EVENT_SYNC = "hta/critical_path/cuda_event_sync/event_sync_trace.json.gz"
MULTI_STREAM = "hta/critical_path/cuda_event_sync_multi_stream/event_sync_trace.json.gz"
TF0 = "hta/trace_filter/sampled_rank-0.json.gz"
FORWARD = "[param|pytorch.model.alex_net|0|0|0|measure|forward]"

# HTA (traceinsight 0.6.1) critical_path_analysis(rank, annotation, instance_id) then summary(), run once by hand
# in a throwaway venv (default options): (annotation, instance) -> (nodes on the path, events on the path,
# microseconds per bound).
HTA = {
    SIMPLE_ADD: (FORWARD, 1, 315, 159, {"cpu_bound": 241190, "gpu_compute_bound": 508, "gpu_kernel_launch_overhead": 17, "gpu_kernel_kernel_overhead": 9}),
    ALEXNET: (FORWARD, 1, 149, 77, {"cpu_bound": 32042, "gpu_compute_bound": 3712, "gpu_kernel_kernel_overhead": 50, "gpu_kernel_launch_overhead": 30}),
    EVENT_SYNC: ("ProfilerStep", 0, 40, 21, {"cpu_bound": 2365, "gpu_compute_bound": 36, "gpu_kernel_launch_overhead": 10}),
    MULTI_STREAM: ("", 0, 59, 31, {"cpu_bound": 1025, "gpu_compute_bound": 124, "gpu_kernel_kernel_overhead": 15, "gpu_kernel_launch_overhead": 14}),
    TF0: ("ProfilerStep", 0, 3528, 1765, {"cpu_bound": 300492, "gpu_compute_bound": 948, "gpu_kernel_kernel_overhead": 30, "gpu_kernel_launch_overhead": 6}),
}


def test_end_to_end_matches_hta_overlaid_trace(trace_store):
    """HTA's EndToEndTestCase: the whole trace, data_load_events=["data_load"]; the events its overlaid output
    marks critical are, by position, the events on our path."""
    with gzip.open(E2E_OUT) as f:
        marked = {i for i, e in enumerate(json.load(f)["traceEvents"]) if e.get("ph") == "X" and e.get("args", {}).get("critical") == 1}
    path = critical_path(trace_store.con, trace_store.run_id(E2E_IN), annotation="", instance=0, data_load_events=["data_load"])
    assert len(marked) == 624
    assert set(path.events.event_idx) == marked
    assert path.length_us == path.edges.weight_us.sum() == pytest.approx(path.bounds.time_us.sum())


@pytest.mark.parametrize("trace", list(HTA), ids=lambda t: t.split("/")[-2])
def test_critical_path_matches_hta(trace_store, trace):
    annotation, instance, nodes, events, bounds = HTA[trace]
    path = critical_path(trace_store.con, trace_store.run_id(trace), annotation, instance)
    assert len(path.edges) + 1 == nodes and len(path.events) == events
    assert dict(zip(path.bounds.bound, path.bounds.time_us)) == bounds
    assert path.bounds.share_pct.sum() == pytest.approx(100)
    # the path is a chain: each edge starts where the previous one ended, forward in time
    assert (path.edges.from_event_idx.iloc[1:].to_numpy() == path.edges.to_event_idx.iloc[:-1].to_numpy()).all()
    arrows = path_arrows(path)
    assert (arrows.from_ts_us.iloc[1:].to_numpy() == arrows.to_ts_us.iloc[:-1].to_numpy()).all()
    assert (arrows.to_ts_us - arrows.from_ts_us >= -1).all()


def test_graph_edges_hta_checks(trace_store):
    """The edges HTA's test_critical_path_analysis checks on simple_add and alexnet (event ids are positions in the file)."""
    _, _, _, graph = critical_path_graph(trace_store.con, trace_store.run_id(SIMPLE_ADD), FORWARD, 1)
    s, e = graph.start_of, graph.end_of
    relu, clamp_min, launch = 286, 287, 1005  # aten::relu_ > aten::clamp_min_ > cudaLaunchKernel
    expected = [((s[relu], s[clamp_min]), 15, relu), ((s[clamp_min], s[launch]), 14, clamp_min), ((s[launch], e[launch]), 17, launch),
                ((e[launch], e[clamp_min]), 15, clamp_min), ((e[clamp_min], e[relu]), 32, relu)]
    for edge, weight, charged in expected:
        assert (graph.g.edges[edge]["kind"], graph.g.edges[edge]["weight"], graph.attributed[edge]) == ("operator", weight, charged)
    fft, sgemm, epilogue, device_sync = 1051, 1067, 1275, 1281
    assert graph.g.edges[e[fft], s[sgemm]]["kind"] == "kernel_kernel" and graph.g.edges[e[fft], s[sgemm]]["weight"] == 7
    assert graph.g.edges[e[epilogue], e[device_sync]]["kind"] == "sync"
    _, _, _, graph = critical_path_graph(trace_store.con, trace_store.run_id(ALEXNET), FORWARD, 1)
    assert graph.g.edges[graph.end_of[1109], graph.start_of[1161]]["kind"] == "sync"  # stream 20 -> stream 7 (cudaStreamWaitEvent)
    _, _, _, graph = critical_path_graph(trace_store.con, trace_store.run_id(EVENT_SYNC), "ProfilerStep", 0)
    kernel, event_sync, device_sync = 33, 41, 51
    assert graph.g.edges[graph.end_of[kernel], graph.end_of[event_sync]]["kind"] == "sync"
    assert graph.g.edges[graph.end_of[kernel], graph.end_of[device_sync]]["kind"] == "sync"


def test_missing_annotation_is_an_error(trace_store):
    with pytest.raises(ValueError, match="annotation='NoSuchStep', instance=0"):
        critical_path(trace_store.con, trace_store.run_id(EVENT_SYNC), "NoSuchStep", 0)
