"""Critical path of one step or annotation: Holistic Trace Analysis's lightweight critical path analysis
(TraceAnalysis.critical_path_analysis, hta/analyzers/critical_path_analysis.py), over the store's events.

1. The window: the `instance`-th event (file order) whose name contains `annotation` (HTA's default
   use: "ProfilerStep", 0), or a range of them (first, last); the whole trace for annotation "".
   Host events that start inside it with a positive duration and device events whose launch
   call does are kept, as HTA clips them.
2. The graph of those events (critical_path_graph.py, critical_path_kernels.py): nodes at each
   event's start and end, edges for time in operators and kernels, launch delays, gaps between
   kernels, dependencies and synchronizations.
3. The critical path: the longest path through that graph (networkx's dag_longest_path, as HTA).
4. Each edge of the path is charged to a bound: the time in a host operator or runtime call to
   `cpu_bound` (or `data_loading` for events named by `data_load_events`), in a kernel to
   `gpu_compute_bound` or, for NCCL/RCCL/HCCL kernels, `gpu_communication_bound`; launch delays to
   `gpu_kernel_launch_overhead`, gaps between kernels to `gpu_kernel_kernel_overhead`.

Where this differs from HTA: legacy (2021) category names count as their modern ones (an
`Operator` is a cpu_op); ties in timestamps are ordered stably (HTA's pandas sorts are not).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from store.analysis._sql import check_run
from store.analysis.critical_path_graph import DEPENDENCY, KERNEL_KERNEL, LAUNCH, SYNC, Graph, build_graph
from store.analysis.gpu_time import HTA_STREAM_SQL

BOUNDS = ("cpu_bound", "data_loading", "gpu_compute_bound", "gpu_communication_bound",
          "gpu_kernel_launch_overhead", "gpu_kernel_kernel_overhead")
COMM_KERNEL = re.compile(r"(^nccl.*)|(^hip)|(^hccl)|(.*ncclKernel.*)")  # HTA's CommunicateKernelGroupingPattern

_EVENTS_SQL = f"""
SELECT event_idx AS idx, cat, coalesce(name, '') AS name, pid, tid, ts_us AS ts, dur_us AS dur,
       coalesce(CASE WHEN contains(args, '"stream"') THEN {HTA_STREAM_SQL} END, -1) AS stream,
       coalesce(correlation, -1) AS correlation,
       coalesce(TRY_CAST(json_extract(args, '$.wait_on_stream') AS BIGINT), -1) AS wait_stream,
       coalesce(TRY_CAST(json_extract(args, '$.wait_on_cuda_event_record_corr_id') AS BIGINT), -1) AS wait_corr
FROM events
WHERE run_id = ? AND dur_us IS NOT NULL AND ts_us IS NOT NULL AND cat_raw IS NOT NULL AND cat_raw <> 'Trace'
ORDER BY event_idx
"""


@dataclass(frozen=True)
class CriticalPath:
    """A run's critical path in one window. `events`: the events on it (event_idx, name, cat, pid, tid, stream,
    ts_us, dur_us); `edges`: its edges in path order (from_event_idx, to_event_idx, from_start, to_start, type,
    weight_us, event_idx the time is charged to, bound); `bounds`: time per bound (bound, time_us, share_pct)."""
    run_id: str
    annotation: str
    instance: int | tuple[int, int]
    start_us: float
    end_us: float
    length_us: float
    events: pd.DataFrame
    edges: pd.DataFrame
    bounds: pd.DataFrame


def load_events(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """One run's events as HTA's trace frame: every event with a duration; fractional-microsecond traces with
    starts rounded up and ends down (HTA's round_down_time_stamps); index_correlation as `icorr`."""
    frame = con.execute(_EVENTS_SQL, [run_id]).df()
    frame = frame.astype({c: object for c in ("cat", "name", "pid", "tid")})  # Python strings: the graph walks them one by one
    if (frame["ts"] != frame["ts"].round()).any() or (frame["dur"] != frame["dur"].round()).any():
        end = (frame["ts"] + frame["dur"]).map(math.floor)
        frame["ts"] = frame["ts"].map(math.ceil)
        frame["dur"] = end - frame["ts"]
    frame["icorr"] = frame["correlation"].clip(upper=0)
    linked = frame[frame["correlation"] != -1]
    device = ((linked["stream"] >= 0) & (linked["correlation"] >= 0)) | linked["name"].isin(("Event Sync", "Context Sync"))
    pairs = linked[~device][["idx", "correlation"]].merge(linked[device][["idx", "correlation"]], on="correlation")
    position = {idx: i for i, idx in enumerate(frame["idx"].tolist())}
    icorr = frame["icorr"].to_numpy().copy()
    for host_idx, device_idx in zip(pairs["idx_x"].tolist(), pairs["idx_y"].tolist()):
        icorr[position[host_idx]], icorr[position[device_idx]] = device_idx, host_idx
    frame["icorr"] = icorr
    return frame


def window(frame: pd.DataFrame, annotation: str, instance: int | tuple[int, int]) -> tuple[float, float, pd.DataFrame]:
    """(start_us, end_us, clipped events) of an annotation's instance(s) as HTA clips them."""
    if annotation == "":
        start, end = frame["ts"].min(), (frame["ts"] + frame["dur"]).max()
    else:
        first, last = instance if isinstance(instance, tuple) else (instance, instance)
        marks = frame[frame["name"].str.contains(annotation, regex=False)].iloc[first:last + 1]
        if marks.empty:
            raise ValueError(f"annotation={annotation!r}, instance={instance!r}: the run has no such annotation instance")
        start, end = marks["ts"].min(), (marks["ts"] + marks["dur"]).max()
    host = frame[frame["stream"] == -1]
    inside = host[(host["ts"] >= start) & (host["ts"] <= end) & (host["dur"] > 0)]
    runtime = host.drop_duplicates("icorr", keep="last").set_index("icorr")[["ts", "dur"]].add_suffix("_runtime")
    device = frame[frame["stream"] != -1].join(runtime, on="idx")
    launched = device[((device["ts_runtime"] >= start) & (device["ts_runtime"] <= end) & (device["dur_runtime"] > 0))
                      | (device["name"] == "Stream Wait Event")]
    keep = set(inside["idx"]) | set(launched["idx"])
    return float(start), float(end), frame[frame["idx"].isin(keep)]


def _bound(kind: str, name: str | None, stream: int | None, data_load: list[str]) -> str | None:
    """HTA's bound_by of a path edge, from its type and the event its time is charged to."""
    if kind == KERNEL_KERNEL:
        return "gpu_kernel_kernel_overhead"
    if kind == LAUNCH:
        return "gpu_kernel_launch_overhead"
    if kind in (DEPENDENCY, SYNC) or name is None:
        return None
    if stream < 0:
        return "data_loading" if any(p in name for p in data_load) else "cpu_bound"
    return "gpu_communication_bound" if COMM_KERNEL.match(name) else "gpu_compute_bound"


def longest_path(graph: Graph) -> list[int]:
    """HTA's critical_path(): negative edges of -1 us or less are zeroed (overlapping nanosecond events), then the
    longest path. A graph with cycles or a more negative edge cannot be trusted: ValueError."""
    import networkx as nx  # here: importing it costs the store's other readers time

    for u, v, data in graph.g.edges(data=True):
        if data["weight"] <= -1:
            data["weight"] = 0
    if not nx.is_directed_acyclic_graph(graph.g):
        raise ValueError("the critical path graph has cycles; the trace's event nesting is inconsistent")
    return nx.dag_longest_path(graph.g, weight="weight")


def critical_path_graph(con: duckdb.DuckDBPyConnection, run_id: str, annotation: str = "ProfilerStep",
                        instance: int | tuple[int, int] = 0, data_load_events: list[str] | None = None
                        ) -> tuple[pd.DataFrame, float, float, Graph]:
    """(the run's events, window start, window end, the graph of the window's events)."""
    check_run(con, run_id)
    frame = load_events(con, run_id)
    start, end, clipped = window(frame, annotation, instance)
    return frame, start, end, build_graph(clipped, frame, list(data_load_events or []))


def critical_path(con: duckdb.DuckDBPyConnection, run_id: str, annotation: str = "ProfilerStep",
                  instance: int | tuple[int, int] = 0, data_load_events: list[str] | None = None) -> CriticalPath | None:
    """The critical path of one window of a run (module docstring); None when the window holds no operator."""
    frame, start, end, graph = critical_path_graph(con, run_id, annotation, instance, data_load_events)
    data_load = list(data_load_events or [])
    if graph.g.number_of_edges() == 0:
        return None
    path = longest_path(graph)
    names, streams = dict(zip(frame["idx"], frame["name"])), dict(zip(frame["idx"], frame["stream"]))
    edges = []
    for u, v in zip(path, path[1:]):
        data = graph.g.edges[u, v]
        charged = graph.attributed.get((u, v))
        bound = _bound(data["kind"], names.get(charged), streams.get(charged), data_load)
        edges.append((int(graph.node_event[u]), int(graph.node_event[v]), bool(graph.node_start[u]), bool(graph.node_start[v]),
                      data["kind"], data["raw_weight"], charged, bound))
    edges = pd.DataFrame(edges, columns=["from_event_idx", "to_event_idx", "from_start", "to_start", "type", "weight_us", "event_idx", "bound"])
    on_path = sorted({int(graph.node_event[n]) for n in path})
    events = frame[frame["idx"].isin(on_path)][["idx", "name", "cat", "pid", "tid", "stream", "ts", "dur"]]
    events = events.rename(columns={"idx": "event_idx", "ts": "ts_us", "dur": "dur_us"})
    total = edges["weight_us"].sum()
    bounds = edges.dropna(subset=["bound"]).groupby("bound", as_index=False)["weight_us"].sum().rename(columns={"weight_us": "time_us"})
    bounds["share_pct"] = 100 * bounds["time_us"] / total if total else None
    return CriticalPath(run_id, annotation, instance, start, end, float(total), events.reset_index(drop=True), edges,
                        bounds.sort_values("time_us", ascending=False).reset_index(drop=True))


def path_arrows(path: CriticalPath) -> pd.DataFrame:
    """The path drawn on a trace timeline: per edge, where it leaves (the start or end of its from-event) and
    arrives, on which pid/tid row, its type, weight_us and bound."""
    where = path.events.set_index("event_idx")
    frame = path.edges.copy()
    for side in ("from", "to"):
        rows = where.loc[frame[f"{side}_event_idx"]]
        frame[f"{side}_pid"], frame[f"{side}_tid"] = rows["pid"].to_numpy(), rows["tid"].to_numpy()
        frame[f"{side}_ts_us"] = np.where(frame[f"{side}_start"], rows["ts_us"], rows["ts_us"] + rows["dur_us"])
    return frame[["from_pid", "from_tid", "from_ts_us", "to_pid", "to_tid", "to_ts_us", "type", "weight_us", "bound"]]
