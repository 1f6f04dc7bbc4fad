"""Operator roofline: per operator, FLOPs and bytes moved (store/analysis/op_flops.py, from the
input shapes the trace records), the time it took, the achieved FLOP/s and bytes/s, arithmetic
intensity, whether it is compute- or memory-bound and its share of the attainable peak.

Which calls count: an operator call with a formula (GEMM, batched GEMM, linear, matmul,
convolution, attention, normalization, elementwise, activation) that no other such call on its
thread encloses: aten::linear counts, not the aten::addmm it calls; a convolution counts once,
not again as aten::_convolution and cudnn_convolution. Time of a call: on a run with device
events, the device time of the kernels and copies launched inside it (its thread, its span);
calls that launched nothing ran on the host and are left out (and so is every call of a trace
recorded with an accelerator but without its device events: time absent). On a CPU run, its
duration.

Roofs: an accelerator's peaks from store/device_peaks.csv (matched on runs.device_name, per
the operands' precision; float32 calls whose kernels are TF32 take the TF32 peak); a CPU run's
from its own measured metrics `cpu_peak_flops_per_s`, `cpu_peak_bytes_per_s`. Ridge point =
peak FLOP/s / peak bytes/s; a call group below it (intensity = FLOPs / bytes) is memory-bound.
peak_pct = achieved FLOP/s over the attainable min(peak FLOP/s, intensity x peak bytes/s).
Absent data is None: no shapes (FLOPs), no matching device (bound, peak_pct).
"""
from __future__ import annotations

import json
import re

import duckdb
import numpy as np
import pandas as pd

from store.analysis._sql import check_run
from store.analysis.op_flops import AUTOGRAD_NODE, Call, family_of, flops_and_bytes
from store.device_peaks import PRECISIONS, DevicePeaks, peaks_for

TF32_KERNEL = re.compile(r"(?i)tf32|s1688")

_OPS_SQL = """
SELECT event_idx, name, pid, tid, ts_us, dur_us
FROM events WHERE run_id = ? AND ph = 'X' AND cat = 'cpu_op' AND name IS NOT NULL AND ts_us IS NOT NULL AND dur_us IS NOT NULL
ORDER BY pid, tid, ts_us, dur_us DESC, event_idx
"""
_ARGS_SQL = """
SELECT event_idx, json_extract(args, '$."Input Dims"')::VARCHAR AS dims, json_extract(args, '$."Input type"')::VARCHAR AS types,
       json_extract(args, '$."Concrete Inputs"')::VARCHAR AS concrete, json_extract(args, '$."Input Strides"')::VARCHAR AS strides,
       TRY_CAST(json_extract(args, '$."Sequence number"') AS BIGINT) AS sequence
FROM events WHERE run_id = $run AND event_idx IN (SELECT unnest($events::BIGINT[]))
"""
_LAUNCHES_SQL = """
SELECT l.pid, l.tid, k.launch_ts_us, k.dur_us, k.name
FROM kernel_launches k JOIN events l ON l.run_id = k.run_id AND l.event_idx = k.launch_event_idx
WHERE k.run_id = ? AND k.dur_us IS NOT NULL
"""
CALL_COLUMNS = ["event_idx", "name", "family", "dtype", "flops", "bytes", "time_us", "kernels", "tf32"]
ROOFLINE_COLUMNS = ["name", "family", "dtype", "calls", "flops", "bytes", "time_us", "achieved_flops_per_s", "achieved_bytes_per_s",
                    "intensity", "bound", "peak_pct", "peak_flops_per_s", "peak_bytes_per_s"]


def _outermost(ops: pd.DataFrame, families: dict) -> tuple[list[int], dict[int, set]]:
    """Rows of the operators with a formula that no such operator on their thread encloses, and for each of
    them the names of every operator nested in it (ops sorted by thread, start, longest first)."""
    keep, descendants, stack = [], {}, []  # stack: (end_us, row, counted)
    thread = None
    columns = (ops[c].tolist() for c in ("pid", "tid", "name", "ts_us", "dur_us"))
    for row, (pid, tid, name, start, dur) in enumerate(zip(*columns)):
        if (pid, tid) != thread:
            thread, stack = (pid, tid), []
        while stack and stack[-1][0] <= start:
            stack.pop()
        for _, parent, counted in stack:
            if counted:
                descendants[parent].add(name)
        counted = families[name] is not None and not any(c for _, _, c in stack)
        if counted:
            keep.append(row)
            descendants[row] = set()
        stack.append((start + dur, row, counted))
    return keep, descendants


def _device_time(calls: pd.DataFrame, launches: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per call: device time and count of the device ops launched on its thread inside its span, and TF32 kernels among them."""
    device_us, kernels, tf32 = np.zeros(len(calls)), np.zeros(len(calls), dtype=np.int64), np.zeros(len(calls), dtype=bool)
    for (pid, tid), mine in launches.groupby(["pid", "tid"], sort=False):
        mine = mine.sort_values("launch_ts_us")
        ts = mine["launch_ts_us"].to_numpy()
        cum = np.concatenate([[0.0], np.cumsum(mine["dur_us"].to_numpy())])
        cum_tf32 = np.concatenate([[0], np.cumsum(mine["name"].str.contains(TF32_KERNEL).to_numpy())])
        at = np.flatnonzero((calls["pid"].to_numpy() == pid) & (calls["tid"].to_numpy() == tid))
        lo = np.searchsorted(ts, calls["ts_us"].to_numpy()[at], side="left")
        hi = np.searchsorted(ts, (calls["ts_us"] + calls["dur_us"]).to_numpy()[at], side="right")
        device_us[at], kernels[at], tf32[at] = cum[hi] - cum[lo], hi - lo, (cum_tf32[hi] - cum_tf32[lo]) > 0
    return device_us, kernels, tf32


def _accelerator_trace(con: duckdb.DuckDBPyConnection, run_id: str) -> bool:
    """A trace recorded on a machine with an accelerator (deviceProperties) but without device events: its
    operators' host durations are launch times, not the work's."""
    environment = con.execute("SELECT environment FROM runs WHERE run_id = ?", [run_id]).fetchone()[0]
    return bool(json.loads(environment or "{}").get("device_properties"))


def _parsed(text):
    return json.loads(text) if isinstance(text, str) and text else None


def operator_calls(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """One row per counted operator call: CALL_COLUMNS. time_us is device time on runs with device events
    (calls that launched nothing are dropped), the call's duration otherwise."""
    check_run(con, run_id)
    ops = con.execute(_OPS_SQL, [run_id]).df()
    families = {name: family_of(name) for name in ops["name"].unique()}
    rows, descendants = _outermost(ops, families)
    calls = ops.iloc[rows].reset_index(drop=True)
    if calls.empty:
        return pd.DataFrame(columns=CALL_COLUMNS)
    launches = con.execute(_LAUNCHES_SQL, [run_id]).df()
    on_device = not launches.empty or _accelerator_trace(con, run_id)
    device_us, kernels, tf32 = _device_time(calls, launches)
    nodes = ops.loc[ops["name"].map(lambda n: bool(AUTOGRAD_NODE.match(n))), "event_idx"]
    args = con.execute(_ARGS_SQL, {"run": run_id, "events": [*calls["event_idx"].tolist(), *nodes.tolist()]}).df()
    node_args = args[args["event_idx"].isin(set(nodes)) & args["sequence"].notna() & args["dims"].notna()]
    grad_out = {int(s): _parsed(d) for s, d in zip(node_args["sequence"], node_args["dims"])}
    calls = calls.merge(args, on="event_idx", how="left")
    out = []
    for i, call in enumerate(calls.itertuples(index=False)):
        dims, types = _parsed(call.dims), _parsed(call.types)
        if on_device and kernels[i] == 0:
            continue
        figures, dtype = (None, None), None
        if isinstance(dims, list) and isinstance(types, list):
            seq_out = grad_out.get(int(call.sequence)) if pd.notna(call.sequence) else None
            parsed = Call(call.name, dims, types, _parsed(call.concrete), (seq_out or [None])[0], frozenset(descendants[rows[i]]),
                          _parsed(call.strides))
            figures = flops_and_bytes(parsed, families[call.name])
            dtype = next((t for _, t in parsed.tensors()), None)
        out.append((call.event_idx, call.name, families[call.name], dtype, *figures,
                    device_us[i] if on_device else call.dur_us, int(kernels[i]), bool(tf32[i])))
    return pd.DataFrame(out, columns=CALL_COLUMNS)


def run_roofs(con: duckdb.DuckDBPyConnection, run_id: str) -> DevicePeaks | None:
    """The roofs of a run: its accelerator's row of the peaks table, or for a CPU run its measured
    cpu_peak_* metrics (one FLOP/s figure, measured in the run's dtype, for every precision); None if absent."""
    check_run(con, run_id)
    device, device_name = con.execute("SELECT device, device_name FROM runs WHERE run_id = ?", [run_id]).fetchone()
    has_device = con.execute("SELECT count(*) FROM kernel_launches WHERE run_id = ?", [run_id]).fetchone()[0] > 0
    if has_device or (device or "cpu") != "cpu":
        return peaks_for(device_name)
    rows = con.execute("SELECT name, value, source FROM metrics WHERE run_id = ? AND name LIKE 'cpu_peak_%'", [run_id]).fetchall()
    measured = {name: (value, source) for name, value, source in rows}
    if "cpu_peak_flops_per_s" not in measured or "cpu_peak_bytes_per_s" not in measured:
        return None
    flops = measured["cpu_peak_flops_per_s"][0]
    return DevicePeaks("this CPU, measured", {p: flops for p in PRECISIONS}, measured["cpu_peak_bytes_per_s"][0],
                       "; ".join(source for _, source in measured.values()))


def operator_roofline(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """Per operator name and operand dtype: ROOFLINE_COLUMNS, most time first. `calls` counts every counted call;
    FLOPs, bytes, time and the rates cover the calls whose shapes give them (a name none of whose calls do has no row)."""
    calls = operator_calls(con, run_id)
    if calls.empty:
        return pd.DataFrame(columns=ROOFLINE_COLUMNS)
    roofs = run_roofs(con, run_id)
    calls = calls.assign(dtype=calls["dtype"].fillna(""), sized=calls["flops"].notna() & calls["bytes"].notna())
    rows = []
    for (name, dtype), group in calls.groupby(["name", "dtype"], sort=False):
        sized = group[group["sized"]]
        if sized.empty:
            continue  # no call's shapes give its FLOPs: nothing to place on the roofline
        flops, moved, time_us = float(sized["flops"].sum()), float(sized["bytes"].sum()), float(sized["time_us"].sum())
        achieved = flops / time_us * 1e6 if time_us > 0 else None
        achieved_bytes = moved / time_us * 1e6 if time_us > 0 else None
        intensity = flops / moved if moved else None
        peak_flops = roofs.flops_for(dtype, bool(group["tf32"].any())) if roofs else None
        peak_bytes = roofs.memory_bytes_per_s if roofs else None
        bound, peak_pct = None, None
        if intensity is not None and peak_flops and peak_bytes:
            bound = "compute" if intensity >= peak_flops / peak_bytes else "memory"
            if achieved is not None:
                peak_pct = 100 * achieved / min(peak_flops, intensity * peak_bytes)
        rows.append((name, group["family"].iloc[0], dtype or None, len(group), flops, moved, time_us, achieved, achieved_bytes,
                     intensity, bound, peak_pct, peak_flops, peak_bytes))
    frame = pd.DataFrame(rows, columns=ROOFLINE_COLUMNS)
    return frame.sort_values(["time_us", "name"], ascending=[False, True], kind="stable").reset_index(drop=True)


def roof_curves(con: duckdb.DuckDBPyConnection, run_id: str, low: float = 1e-2, high: float = 1e4, points: int = 49) -> pd.DataFrame:
    """The roofs to draw under a run's roofline points: per distinct peak of the device, attainable FLOP/s =
    min(peak FLOP/s, intensity x peak bytes/s) at log-spaced intensities (FLOP/byte); empty without roofs."""
    roofs = run_roofs(con, run_id)
    if roofs is None:
        return pd.DataFrame(columns=["precision", "intensity", "attainable_flops_per_s", "ridge_intensity"])
    intensity = np.logspace(np.log10(low), np.log10(high), points)
    sharing: dict[float, list[str]] = {}
    for precision, peak in roofs.flops_per_s.items():
        sharing.setdefault(peak, []).append(precision)
    peaks = {"/".join(precisions): peak for peak, precisions in sharing.items()}  # one roof per distinct peak ("bf16/fp16")
    frames = [pd.DataFrame({"precision": precision, "intensity": intensity,
                            "attainable_flops_per_s": np.minimum(peak, intensity * roofs.memory_bytes_per_s),
                            "ridge_intensity": peak / roofs.memory_bytes_per_s})
              for precision, peak in peaks.items()]
    return pd.concat(frames, ignore_index=True)
