"""The graph of Holistic Trace Analysis's lightweight critical path (hta/analyzers/critical_path_analysis.py,
CPGraph), built from one rank's events as HTA builds it; store/analysis/critical_path.py finds the path.

Nodes are the start and the end of every CPU operator, runtime call and device event (kernel,
copy, set, and the cuda_sync events that have a launch). Edges, with their weight in microseconds:
- operator: from a node to the next one of the same operator stack on its thread (time spent
  in that operator) and from a device event's start to its end;
- dependency: between consecutive top-level operators of a thread, and the order in which runtime
  calls that hold the CUDA runtime lock complete (weight 0);
- launch: from a runtime call's start to the start of the kernel it launched, when the kernel
  waited for nothing else (its stream was empty and the previous kernel had ended);
- kernel_kernel: from the end of the previous kernel on a stream to the next one's start (gaps
  under 1.5 ms);
- sync: from a kernel's end to the end of the runtime call that waited for it (stream, context
  and event synchronization) or to the start of a kernel on another stream that waited for it
  (cudaStreamWaitEvent) (weight 0).
The backward thread is merged into the forward thread when each is the only one with
"autograd" / "forward" operators.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

OPERATOR, DEPENDENCY, LAUNCH, KERNEL_KERNEL, SYNC = "operator", "dependency", "launch", "kernel_kernel", "sync"
RUNTIME_LOCK_CALLS = frozenset(["cudaHostAlloc", "cudaLaunchKernel", "cudaMemcpyAsync"])
BLOCKING_CALLS = frozenset(["cudaDeviceSynchronize", "cudaStreamSynchronize", "cudaEventQuery", "cudaEventSynchronize",
                            "cudaMemcpy", "cudaMemcpyAsync"])
LAUNCH_CALLS = frozenset(["cudaMemsetAsync", "cudaMemcpyAsync", "cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel",
                          "cuLaunchKernelEx", "runFunction - job_prep_and_submit_for_execution", "hipLaunchKernel",
                          "hipExtModuleLaunchKernel", "hipMemcpyAsync", "hipMemsetAsync", "hipMemcpyWithStream"])
HOST_CATS = ("cpu_op", "cuda_runtime", "cuda_driver")
DEVICE_SYNCS = ("Event Sync", "Context Sync")
KERNEL_KERNEL_MAX_US = 1500  # a longer gap between kernels of a stream is an unrecognized dependency


@dataclass
class Graph:
    """The digraph (networkx: what HTA runs dag_longest_path on) and what its nodes and edges stand for."""
    node_event: np.ndarray  # node -> event_idx
    node_ts: np.ndarray  # node -> time (us)
    node_start: np.ndarray  # node -> start (True) or end of its event
    start_of: dict  # event_idx -> its start node
    end_of: dict  # event_idx -> its end node
    g: "nx.DiGraph" = field(default_factory=lambda: __import__("networkx").DiGraph())  # networkx on first use
    attributed: dict = field(default_factory=dict)  # (u, v) -> event_idx the edge's time belongs to

    def add(self, u: int, v: int, kind: str, zero: bool = False) -> tuple[int, int]:
        weight = 0 if kind in (DEPENDENCY, SYNC) or zero else float(self.node_ts[v] - self.node_ts[u])
        self.g.add_edge(u, v, weight=weight, raw_weight=weight, kind=kind)
        return u, v

    def attribute(self, edge: tuple[int, int], src_parent: int | None) -> None:
        """HTA's _attribute_edge: the event an operator or kernel_kernel edge's time belongs to."""
        u, v = edge
        kind = self.g.edges[u, v]["kind"]
        if kind not in (OPERATOR, KERNEL_KERNEL):
            return
        if kind == KERNEL_KERNEL or self.node_start[u]:
            self.attributed[edge] = int(self.node_event[u])
        elif not self.node_start[v]:
            self.attributed[edge] = int(self.node_event[v])
        else:  # from the end of one operator to the start of the next: time in their parent
            self.attributed[edge] = int(src_parent)


def _nodes(clipped: pd.DataFrame, data_load: list[str]) -> Graph:
    host = clipped["cat"].isin(HOST_CATS)
    loading = clipped["name"].map(lambda n: any(p in n for p in data_load)) if data_load else False
    device = (clipped["stream"] != -1) & (clipped["icorr"] >= 0)
    events = clipped[host | loading | device]
    starts = pd.DataFrame({"ev": events["idx"], "ts": events["ts"], "is_start": True})
    ends = pd.DataFrame({"ev": events["idx"], "ts": events["ts"] + events["dur"], "is_start": False})
    nodes = pd.concat([starts, ends]).sort_values(["ts", "ev"], kind="stable").reset_index(drop=True)
    ev, is_start = nodes["ev"].to_numpy(), nodes["is_start"].to_numpy()
    return Graph(ev, nodes["ts"].to_numpy(), is_start,
                 {int(e): i for i, e in enumerate(ev) if is_start[i]}, {int(e): i for i, e in enumerate(ev) if not is_start[i]})


def _runtime_lock_edges(graph: Graph, names: dict) -> None:
    """Runtime calls that take the CUDA runtime lock complete one at a time: chain them by completion."""
    pending, last = [], None
    for node, ev in enumerate(graph.node_event):
        if names[int(ev)] not in RUNTIME_LOCK_CALLS:
            continue
        if graph.node_start[node]:
            pending.append(node)
        else:
            while pending:
                previous = pending.pop()
                if graph.node_event[previous] == ev:
                    graph.attribute(graph.add(previous, node, OPERATOR), int(ev))
                else:
                    graph.add(previous, node, DEPENDENCY)
            if last is not None and not graph.node_start[last]:
                graph.add(last, node, DEPENDENCY)
        last = node


def _compare(x: tuple, y: tuple) -> int:
    """HTA's compare_events for (idx, time, dur, is_start) on one thread."""
    if x[0] == y[0]:
        return -1 if x[3] else 1
    if x[1] != y[1]:
        return -1 if x[1] < y[1] else 1
    if x[3] == y[3]:
        if x[2] == y[2]:
            return (-1 if x[0] < y[0] else 1) if x[3] else (1 if x[0] < y[0] else -1)
        return (1 if x[2] < y[2] else -1) if x[3] else (-1 if x[2] < y[2] else 1)
    if x[2] > 0 and y[2] > 0:
        return 1 if x[3] else -1
    if x[2] == 0 and y[2] == 0:
        return x[0] - y[0]
    return -1 if x[3] else 1


def _call_stack(thread: pd.DataFrame) -> tuple[dict, dict]:
    """HTA's CallStackGraph of one CPU thread: children lists and parents, from start/end events."""
    dur = np.maximum(thread["dur"].to_numpy(), 0)
    marks = [(int(i), t, d, True) for i, t, d in zip(thread["idx"], thread["ts"], dur)]
    marks += [(int(i), t + d, d, False) for i, t, d in zip(thread["idx"], thread["ts"], dur)]
    marks.sort(key=functools.cmp_to_key(_compare))
    children, parent, stack = {-1: []}, {}, []
    for idx, _, _, is_start in marks:
        if is_start:
            if idx in parent:
                continue
            up = stack[-1] if stack else -1
            children.setdefault(up, []).append(idx)
            children[idx], parent[idx] = [], up
            stack.append(idx)
        elif stack:
            stack.pop()
    return children, parent


def sort_key(value) -> tuple:
    """pid and tid order as HTA's (numeric) groupby has it; text ids after numbers."""
    try:
        return (0, int(value), "")
    except (TypeError, ValueError):
        return (1, 0, str(value))


def _thread_of(clipped: pd.DataFrame, word: str) -> object | None:
    """The one thread with cpu_op or user_annotation events whose name contains `word`, else None."""
    rows = clipped[clipped["cat"].isin(("cpu_op", "user_annotation")) & clipped["name"].str.contains(word, regex=False)]
    tids = set(rows["tid"])
    return next(iter(tids)) if len(tids) == 1 else None


def _call_stack_edges(graph: Graph, clipped: pd.DataFrame, names: dict) -> None:
    """Edges along each CPU thread's operator stacks, visited depth first (HTA's _construct_graph_from_call_stacks)."""
    frame = clipped.copy()
    forward, backward = _thread_of(frame, "forward"), _thread_of(frame, "autograd")
    if forward is not None and backward is not None and forward != backward:
        frame.loc[frame["tid"] == backward, "tid"] = forward
    frame["pid_key"], frame["tid_key"] = frame["pid"].map(sort_key), frame["tid"].map(sort_key)
    for _, thread in frame.groupby(["pid_key", "tid_key"], sort=True):
        if (thread["stream"] > 0).any():
            continue  # a device stream
        if not (thread["stream"] < 0).all():
            continue  # neither CPU nor device (HTA's UNKNOWN)
        children, parent = _call_stack(thread)
        _walk(graph, children, parent, names)


def _walk(graph: Graph, children: dict, parent: dict, names: dict) -> None:
    state = {"last": None, "depth": 0, "parent": None}

    def visit(ev: int, entering: bool) -> None:
        start, end = graph.start_of.get(ev), graph.end_of.get(ev)
        if start is None or end is None:
            return
        node, last = (start if entering else end), state["last"]
        lock = last is not None and names[int(graph.node_event[last])] in RUNTIME_LOCK_CALLS and names[ev] in RUNTIME_LOCK_CALLS \
            and (graph.node_start[last] or not graph.node_start[node])
        if last is not None and not lock:
            if entering:
                kind = DEPENDENCY if state["depth"] == 0 else OPERATOR
                graph.attribute(graph.add(last, node, kind), state["parent"])
            else:
                graph.attribute(graph.add(last, node, OPERATOR, zero=names[ev] in BLOCKING_CALLS), state["parent"])
        state["last"], state["parent"] = node, parent.get(ev, -1)
        state["depth"] += 1 if entering else -1

    def dfs(ev: int) -> None:
        visit(ev, True)
        for child in children.get(ev, []):
            dfs(child)
        visit(ev, False)

    dfs(-1)


def build_graph(clipped: pd.DataFrame, full: pd.DataFrame, data_load: list[str]) -> Graph:
    """The critical path graph of the events in `clipped` (a window of `full`, one rank's events with HTA's columns:
    idx, cat, name, pid, tid, ts, dur, stream, correlation, icorr, wait_stream, wait_corr)."""
    from store.analysis.critical_path_kernels import kernel_edges

    names = dict(zip(full["idx"].astype(int), full["name"]))
    graph = _nodes(clipped, data_load)
    _runtime_lock_edges(graph, names)
    _call_stack_edges(graph, clipped, names)
    kernel_edges(graph, clipped, full)
    return graph
