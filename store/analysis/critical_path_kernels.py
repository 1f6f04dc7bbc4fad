"""Device-side edges of the critical path graph (HTA's CPGraph._construct_graph_from_kernels): kernel
spans, launch delays, kernel-to-kernel gaps and the synchronizations between the host and the device
and between streams. Frames carry HTA's columns (see critical_path_graph.build_graph)."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from store.analysis.critical_path_graph import (
    DEVICE_SYNCS, KERNEL_KERNEL, KERNEL_KERNEL_MAX_US, LAUNCH, LAUNCH_CALLS, OPERATOR, SYNC, Graph,
)


def _launches(full: pd.DataFrame) -> pd.DataFrame:
    """Runtime calls that launched a device event, in start order, with that event's stream and device and a
    sequential launch_id (HTA's _get_cuda_runtime_calls_df)."""
    kernels = full[(full["stream"] != -1) & (full["icorr"] > 0)][["idx", "stream", "pid"]]
    calls = full[full["name"].isin(LAUNCH_CALLS) & (full["icorr"] > 0)].sort_values("ts", kind="stable")
    calls = calls.merge(kernels.rename(columns={"idx": "kernel_idx", "stream": "kernel_stream", "pid": "gpu"}),
                        left_on="icorr", right_on="kernel_idx")
    return calls.reset_index(drop=True).assign(launch_id=lambda f: f.index)


def queue_lengths(full: pd.DataFrame) -> pd.Series:
    """Outstanding operations of each stream after each launch call and each device event (by event idx)."""
    calls = full[full["name"].isin(LAUNCH_CALLS) & (full["icorr"] > 0)][["idx", "ts", "correlation"]]
    kernels = full[full["stream"] != -1][["idx", "ts", "correlation", "stream"]]
    calls = calls.join(kernels.drop_duplicates("correlation", keep="last").set_index("correlation")[["stream"]], on="correlation")
    kernels = kernels[kernels["correlation"].isin(calls["correlation"])]
    merged = pd.concat([calls.assign(step=1), kernels.assign(step=-1)]).sort_values("ts", kind="stable")
    merged["queue"] = merged.groupby("stream")["step"].cumsum()
    return merged.set_index("idx")["queue"]


def _event_records(full: pd.DataFrame, launches: pd.DataFrame) -> dict | None:
    """cudaEventRecord calls that a sync waits on -> the launch call on the recorded stream just before them
    (HTA's _get_cuda_event_record_df); -1 when none. None when the trace records no events."""
    records = full[full["name"] == "cudaEventRecord"].sort_values("ts", kind="stable")
    if records.empty:
        return None
    waits = full[full["wait_stream"] > -1][["wait_corr", "wait_stream", "pid"]].drop_duplicates()
    waits = waits.rename(columns={"wait_corr": "correlation", "wait_stream": "stream", "pid": "gpu"})
    records = records[["ts", "correlation"]].merge(waits, on="correlation", how="left").dropna(subset=["stream"])
    previous = {}
    for (gpu, stream), mine in records.groupby(["gpu", "stream"]):
        launched = launches[(launches["gpu"] == gpu) & (launches["kernel_stream"] == stream)]
        both = pd.concat([launched[["ts", "launch_id", "idx"]], mine[["ts", "correlation"]].assign(launch_id=-1)]).sort_values("ts", kind="stable")
        latest = np.maximum.accumulate(both["launch_id"].to_numpy())
        ids = dict(zip(launched["launch_id"], launched["idx"]))
        is_record = both["correlation"].notna().to_numpy()
        previous.update({c: ids.get(i, -1) for c, i in zip(both["correlation"].to_numpy()[is_record], latest[is_record])})
    return previous


def _stream_waits(full: pd.DataFrame, launches: pd.DataFrame) -> dict:
    """cudaStreamWaitEvent call idx -> idx of the next launch from its thread onto the stream that waits
    (HTA's _get_cuda_stream_wait_event_df); -1 when none."""
    names = set(full["name"])
    if "cudaStreamWaitEvent" not in names or "Stream Wait Event" not in names:
        return {}
    kernels = full[(full["stream"] != -1) & (full["icorr"] > 0)][["idx", "stream"]]
    calls = full[(full["name"] == "cudaStreamWaitEvent") & (full["icorr"] > 0)].sort_values("ts", kind="stable")
    calls = calls[["idx", "ts", "pid", "tid", "icorr"]].merge(kernels.rename(columns={"idx": "icorr"}), on="icorr")
    next_launch = {}
    for (pid, tid, stream), mine in calls.groupby(["pid", "tid", "stream"]):
        launched = launches[(launches["pid"] == pid) & (launches["tid"] == tid) & (launches["kernel_stream"] == stream)]
        both = pd.concat([launched[["ts", "launch_id", "idx"]].assign(wait=False), mine[["ts", "idx"]].assign(launch_id=sys.maxsize, wait=True)])
        both = both.sort_values("ts", kind="stable")
        following = np.minimum.accumulate(both["launch_id"].to_numpy()[::-1])[::-1]
        ids = dict(zip(launched["launch_id"], launched["idx"]))
        is_wait = both["wait"].to_numpy(dtype=bool)
        next_launch.update({int(i): ids.get(n, -1) for i, n in zip(both["idx"].to_numpy()[is_wait], following[is_wait])})
    return next_launch


@dataclass
class _DeviceWalk:
    """The device events of the window in order (syncs at their end), with each stream's last kernel."""
    graph: Graph
    icorr: dict  # event idx -> its correlated event's idx
    ts: dict  # event idx -> start
    previous_launch: dict | None  # cudaEventRecord correlation -> launch call just before it
    waits: dict  # cudaStreamWaitEvent call -> next launch onto the waiting stream
    last: dict = field(default_factory=dict)  # stream -> end node of its last kernel
    kernel_sync: dict = field(default_factory=dict)  # kernel idx -> idx of the kernel it waits for

    def sync(self, row) -> None:
        """A cuda_sync event: the host call (or a later kernel on another stream) waits for a kernel's end."""
        if row.name in ("Stream Wait Event", "Event Sync"):
            launch = self.previous_launch.get(row.wait_corr, -1) if self.previous_launch is not None else -1
            if launch == -1:
                return  # no cudaEventRecord to follow
            source = self.icorr[launch]
            if row.name == "Stream Wait Event":
                if (target_launch := self.waits.get(int(row.icorr), -1)) >= 0:
                    self.kernel_sync[self.icorr[target_launch]] = source
            elif (end := self.graph.end_of.get(int(source))) is not None:
                self._to_host(end, row.icorr)
            return
        targets = self.last.values() if row.name == "Context Sync" else [self.last.get(row.stream)]
        for node in list(targets):
            if node is not None:
                self._to_host(node, row.icorr)

    def _to_host(self, gpu_node: int, runtime: int) -> None:
        if (end := self.graph.end_of.get(int(runtime))) is not None:
            self.graph.add(gpu_node, end, SYNC)

    def kernel(self, row) -> None:
        """A kernel, copy or set: its span, what it waited for, and the launch delay or the gap before it."""
        graph, ev = self.graph, int(row.idx)
        start, end = graph.start_of.get(ev), graph.end_of.get(ev)
        if start is None or end is None:
            return
        graph.attribute(graph.add(start, end, OPERATOR), -1)
        waited, waited_end = self.kernel_sync.get(ev), None
        if waited is not None:
            waited_end = graph.end_of.get(int(waited))
            if waited_end is None:
                waited = None
            else:
                graph.add(waited_end, start, SYNC)
            self.kernel_sync[ev] = None
        runtime_ts, previous = self.ts.get(row.icorr), self.last.get(row.stream)
        if (row.queue_runtime == 1 and row.queue == 0
                and (previous is None or graph.node_ts[previous] < runtime_ts)
                and (waited is None or graph.node_ts[waited_end] < runtime_ts)):
            if (launch_start := graph.start_of.get(int(row.icorr))) is not None:
                graph.add(launch_start, start, LAUNCH)
        elif (previous is not None and graph.node_ts[start] - graph.node_ts[previous] < KERNEL_KERNEL_MAX_US
              and (waited is None or graph.node_ts[waited_end] < graph.node_ts[previous])):
            graph.attribute(graph.add(previous, start, KERNEL_KERNEL), -1)
        self.last[row.stream] = end


def kernel_edges(graph: Graph, clipped: pd.DataFrame, full: pd.DataFrame) -> None:
    """Add the device-side edges of the window's events (`clipped`) to `graph`; launches, records and queue
    lengths come from the whole trace (`full`), as in HTA."""
    queue, launches = queue_lengths(full), _launches(full)
    walk = _DeviceWalk(graph, dict(zip(full["idx"], full["icorr"])), dict(zip(full["idx"], full["ts"])),
                       _event_records(full, launches), _stream_waits(full, launches))
    rows = clipped[((clipped["stream"] != -1) | clipped["name"].isin(DEVICE_SYNCS)) & (clipped["icorr"] >= 0)].copy()
    rows["queue_runtime"], rows["queue"] = rows["icorr"].map(queue), rows["idx"].map(queue)
    rows["sort_by"] = rows["ts"].where(rows["cat"] != "cuda_sync", rows["ts"] + rows["dur"])
    for row in rows.sort_values("sort_by", kind="stable").itertuples(index=False):
        if row.cat == "cuda_sync":
            walk.sync(row)
        else:
            walk.kernel(row)
