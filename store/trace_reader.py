"""Read Kineto / Chrome trace JSON into Arrow record batches, whole or streamed.

Small and medium files are decoded in one typed msgspec pass (the fast path); files whose
decompressed JSON is larger than STREAM_THRESHOLD_BYTES are streamed with ijson so a
multi-GB trace never sits in memory whole. Both paths yield the same raw columns.
"""
from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from store import utf8

STREAM_THRESHOLD_BYTES = 256 * 1024**2
BATCH_EVENTS = 25_000

RAW_SCHEMA = pa.schema(
    [
        ("ph", pa.string()),
        ("cat", pa.string()),
        ("name", pa.string()),
        ("pid", pa.string()),
        ("tid", pa.string()),
        ("ts_us", pa.float64()),
        ("dur_us", pa.float64()),
        ("flow_id", pa.string()),
        ("args", pa.string()),
        # the few args every analysis joins on, decoded once here
        ("correlation", pa.int64()),
        ("external_id", pa.int64()),
        ("arg_device", pa.int64()),
        ("arg_stream", pa.int64()),
    ]
)


_NO_EVENTS = "no events: its 'traceEvents' array is empty"
_EXECUTION_TRACE = (
    "this is a PyTorch Execution Trace (it has 'nodes', no 'traceEvents'), not a Kineto trace; "
    "import the Kineto trace recorded beside it"
)


class TraceError(ValueError):
    """A file that is not a readable Kineto/Chrome trace; the message names file and problem."""


class _Event(msgspec.Struct, gc=False):
    ph: str | None = None
    cat: str | None = None
    name: str | None = None
    pid: msgspec.Raw = msgspec.Raw(b"")  # int or string ("Spans", "stream 7"): kept as text
    tid: msgspec.Raw = msgspec.Raw(b"")
    ts: float | None = None
    dur: float | None = None
    id: msgspec.Raw = msgspec.Raw(b"")
    args: msgspec.Raw = msgspec.Raw(b"")


_Number = int | float | str | None


class _Ids(msgspec.Struct, gc=False):
    correlation: _Number = None
    external_id: _Number = msgspec.field(default=None, name="External id")
    external_id_legacy: _Number = msgspec.field(default=None, name="external id")
    device: _Number = None
    stream: _Number = None


class _Trace(msgspec.Struct, gc=False):
    traceEvents: list[msgspec.Raw] | None = None  # decoded into _Event a batch at a time
    distributedInfo: msgspec.Raw = msgspec.Raw(b"")
    deviceProperties: msgspec.Raw = msgspec.Raw(b"")
    schemaVersion: msgspec.Raw = msgspec.Raw(b"")  # 1, "1.0.3", ...: kept as text
    nodes: msgspec.Raw = msgspec.Raw(b"")  # present only in PyTorch Execution Traces


@dataclass
class TraceHeader:
    """What a trace says about itself outside traceEvents."""

    distributed_info: dict = field(default_factory=dict)
    device_properties: list = field(default_factory=list)
    schema_version: str | None = None
    streamed: bool = False  # read with ijson in batches (a file over STREAM_THRESHOLD_BYTES)
    # what the import repaired (invalid UTF-8); a streamed file's is known once its batches are read
    repair: utf8.Repair = field(default_factory=utf8.Repair)

    def __post_init__(self) -> None:  # a header of the wrong JSON type tells nothing
        if not isinstance(self.distributed_info, dict):
            self.distributed_info = {}
        if not isinstance(self.device_properties, list):
            self.device_properties = []


def _json_or_empty(raw: msgspec.Raw, empty):
    return msgspec.json.decode(raw) if len(raw) else empty


def _text(value) -> str | None:
    return None if value is None else str(value)


def _raw_text(raws: list[msgspec.Raw]) -> pa.Array:
    """A JSON scalar kept as text: 7 -> '7', "stream 7" -> 'stream 7'."""
    return pc.utf8_trim(_raw_strings(raws), '"')


def _raw_strings(raws: list[msgspec.Raw]) -> pa.Array:
    """Raw JSON slices as one Arrow string array, built from a joined buffer (no per-event decode)."""
    lengths = np.array(list(map(len, raws)), dtype=np.int64)
    offsets = np.zeros(len(raws) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    validity = pa.array(lengths > 0).buffers()[1]
    data = pa.py_buffer(b"".join(raws))
    return pa.LargeStringArray.from_buffers(len(raws), pa.py_buffer(offsets), data, validity).cast(pa.string())


def _ints(values: list) -> pa.Array:
    """Integers where the trace has integers; null for strings ("0x0"), floats and huge values."""
    try:
        return pa.array(values, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        return pa.array([v if type(v) is int and -(2**63) <= v < 2**63 else None for v in values], pa.int64())


_NO_IDS = _Ids()


def _ids_of(raw: msgspec.Raw) -> _Ids:
    """One event's ids; args that are not an object, or ids of odd types, give none."""
    try:
        return msgspec.json.decode(raw, type=_Ids) if len(raw) else _NO_IDS
    except msgspec.ValidationError:
        return _NO_IDS


def _batch(events: list[_Event]) -> pa.RecordBatch:
    raws = [e.args for e in events]
    try:
        ids = msgspec.json.decode(b"[" + b",".join([r if len(r) else b"{}" for r in raws]) + b"]", type=list[_Ids])
    except msgspec.ValidationError:  # some event's args are odd: decode them one by one
        ids = [_ids_of(raw) for raw in raws]
    columns = [
        pa.array([e.ph for e in events], pa.string()),
        pa.array([e.cat for e in events], pa.string()),
        pa.array([e.name for e in events], pa.string()),
        _raw_text([e.pid for e in events]),
        _raw_text([e.tid for e in events]),
        pa.array([e.ts for e in events], pa.float64()),
        pa.array([e.dur for e in events], pa.float64()),
        _raw_text([e.id for e in events]),
        _raw_strings(raws),
        _ints([i.correlation for i in ids]),
        _ints([i.external_id if i.external_id is not None else i.external_id_legacy for i in ids]),
        _ints([i.device for i in ids]),
        _ints([i.stream for i in ids]),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=RAW_SCHEMA)


def decompressed_size(path: Path) -> int:
    """Bytes of JSON in the file: exact for plain files, gzip's ISIZE trailer (mod 4 GiB) for .gz."""
    size = path.stat().st_size
    if not _is_gzip(path):
        return size
    with path.open("rb") as f:
        f.seek(max(size - 4, 0))
        isize = int.from_bytes(f.read(4), "little")
    # ISIZE wraps at 4 GiB; a compressed file already larger than it is surely larger still
    return max(isize, size)


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = zlib.decompress(data, wbits=31)
        except zlib.error as exc:
            raise TraceError(f"{path}: corrupt gzip data ({exc})") from None
    return data


def _check_not_execution_trace(path: Path, trace: _Trace) -> None:
    if trace.traceEvents is None:
        if len(trace.nodes):
            raise TraceError(f"{path}: {_EXECUTION_TRACE}")
        raise TraceError(f"{path}: JSON without a 'traceEvents' array; not a Kineto/Chrome trace")


def _decode_error(path: Path, exc: Exception) -> TraceError:
    text = str(exc)
    if "truncated" in text:
        return TraceError(f"{path}: truncated JSON (the file ends mid-document)")
    if isinstance(exc, msgspec.ValidationError):
        return TraceError(f"{path}: not a Kineto/Chrome trace: {text}")
    return TraceError(f"{path}: not valid JSON: {text}")


def read_whole(path: Path) -> tuple[TraceHeader, Iterator[pa.RecordBatch]]:
    """Decode in memory: events are split as raw slices, then typed a batch at a time."""
    data = _read_bytes(path)
    if len(data) < 64 and not data.strip():
        raise TraceError(f"{path}: empty file")
    data, repair = utf8.repair(data)
    try:
        trace = msgspec.json.decode(data, type=_Trace | list[msgspec.Raw])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise _decode_error(path, exc) from None
    if isinstance(trace, list):  # the bare-array form of the Chrome trace format
        trace = _Trace(traceEvents=trace)
    _check_not_execution_trace(path, trace)
    try:
        header = TraceHeader(
            distributed_info=_json_or_empty(trace.distributedInfo, {}) or {},
            device_properties=_json_or_empty(trace.deviceProperties, []) or [],
            schema_version=_raw_text([trace.schemaVersion])[0].as_py(),
            repair=repair,
        )
    except msgspec.DecodeError as exc:
        raise _decode_error(path, exc) from None
    raws = trace.traceEvents
    if not raws:
        raise TraceError(f"{path}: {_NO_EVENTS}")

    def batches() -> Iterator[pa.RecordBatch]:
        for start in range(0, len(raws), BATCH_EVENTS):
            chunk = b"[" + b",".join(raws[start : start + BATCH_EVENTS]) + b"]"
            try:
                events = msgspec.json.decode(chunk, type=list[_Event])
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise TraceError(f"{path}: not a Kineto/Chrome trace: {_shift_index(str(exc), start)}") from None
            yield _batch(events)

    return header, batches()


def _shift_index(message: str, offset: int) -> str:
    """Turn a chunk-relative `$[i]` in msgspec's message into the event's index in the file."""
    import re

    return re.sub(r"\$\[(\d+)\]", lambda m: f"$.traceEvents[{int(m.group(1)) + offset}]", message)


def _open_stream(path: Path):
    """(the file, its JSON bytes with invalid UTF-8 repaired): read the second, ask the first how far it got."""
    raw = path.open("rb")
    return raw, utf8.RepairingReader(gzip.GzipFile(fileobj=raw) if _is_gzip(path) else raw)


def _stream_error(path: Path, exc: Exception) -> TraceError:
    text = str(exc)
    if isinstance(exc, EOFError) or "end-of-stream" in text:
        return TraceError(f"{path}: truncated gzip data ({text})")
    if isinstance(exc, (gzip.BadGzipFile, zlib.error)):
        return TraceError(f"{path}: corrupt gzip data ({text})")
    if "incomplete" in type(exc).__name__.lower() or "incomplete" in text.lower() or "premature" in text.lower():
        return TraceError(f"{path}: truncated JSON (the file ends mid-document)")
    return TraceError(f"{path}: not valid JSON: {text}")


def _read_header_streaming(path: Path) -> TraceHeader:
    """The keys before traceEvents (Kineto writes distributedInfo and deviceProperties first)."""
    import ijson

    header = TraceHeader()
    raw, stream = _open_stream(path)
    builders: dict[str, ijson.ObjectBuilder] = {}
    keys: set[str] = set()
    try:
        for prefix, event, value in ijson.parse(stream, use_float=True):
            if prefix == "" and event == "map_key":
                keys.add(value)
                if value in ("traceEvents", "nodes"):
                    break
                continue
            top = prefix.split(".", 1)[0]
            if top in ("distributedInfo", "deviceProperties", "schemaVersion"):
                builders.setdefault(top, ijson.ObjectBuilder()).event(event, value)
    except Exception as exc:
        raise _stream_error(path, exc) from None
    finally:
        raw.close()
    if "traceEvents" not in keys:
        raise TraceError(f"{path}: {_EXECUTION_TRACE}" if "nodes" in keys else f"{path}: JSON without a 'traceEvents' array; not a Kineto/Chrome trace")
    if "distributedInfo" in builders and isinstance(builders["distributedInfo"].value, dict):
        header.distributed_info = builders["distributedInfo"].value
    if "deviceProperties" in builders and isinstance(builders["deviceProperties"].value, list):
        header.device_properties = builders["deviceProperties"].value
    if "schemaVersion" in builders:
        header.schema_version = _text(builders["schemaVersion"].value)
    return header


def read_streaming(path: Path, progress: Callable[[int], None] | None = None) -> tuple[TraceHeader, Iterator[pa.RecordBatch]]:
    """Stream events with ijson in batches of BATCH_EVENTS; memory stays bounded by a batch."""
    import ijson

    header = _read_header_streaming(path)
    header.streamed = True

    def batches() -> Iterator[pa.RecordBatch]:
        raw, stream = _open_stream(path)
        encoder = msgspec.json.Encoder()
        pending: list[_Event] = []
        consumed, index = 0, -1
        try:
            for index, ev in enumerate(ijson.items(stream, "traceEvents.item", use_float=True)):
                pending.append(_from_dict(path, index, ev, encoder))
                if len(pending) >= BATCH_EVENTS:
                    yield _batch(pending)
                    pending = []
                    if progress is not None:
                        progress(raw.tell() - consumed)
                        consumed = raw.tell()
            if pending:
                yield _batch(pending)
            elif index < 0:
                raise TraceError(f"{path}: {_NO_EVENTS}")
            header.repair = stream.report
            if progress is not None:
                progress(raw.tell() - consumed)
        except TraceError:
            raise
        except Exception as exc:  # ijson and gzip raise their own types
            raise _stream_error(path, exc) from None
        finally:
            raw.close()

    return header, batches()


_TEXT, _NUMBER = (str,), (int, float)


def _from_dict(path: Path, index: int, ev, encoder: msgspec.json.Encoder) -> _Event:
    """One streamed event, with the types the in-memory path's typed decode demands."""
    if not isinstance(ev, dict):
        raise TraceError(f"{path}: not a Kineto/Chrome trace: $.traceEvents[{index}] is a {type(ev).__name__}, expected an object")

    def typed(key: str, kinds: tuple[type, ...]):
        value = ev.get(key)
        if value is None or type(value) in kinds:
            return value
        expected = "str" if kinds is _TEXT else "float"
        raise TraceError(f"{path}: not a Kineto/Chrome trace: Expected `{expected} | null`, got `{type(value).__name__}` - at `$.traceEvents[{index}].{key}`")

    return _Event(
        ph=typed("ph", _TEXT),
        cat=typed("cat", _TEXT),
        name=typed("name", _TEXT),
        pid=_raw_or_empty(ev.get("pid"), encoder),
        tid=_raw_or_empty(ev.get("tid"), encoder),
        ts=typed("ts", _NUMBER),
        dur=typed("dur", _NUMBER),
        id=_raw_or_empty(ev.get("id"), encoder),
        args=_raw_or_empty(ev.get("args"), encoder),
    )


def _raw_or_empty(value, encoder: msgspec.json.Encoder) -> msgspec.Raw:
    return msgspec.Raw(b"") if value is None else msgspec.Raw(encoder.encode(value))


def read_trace(path: Path, progress: Callable[[int], None] | None = None) -> tuple[TraceHeader, Iterator[pa.RecordBatch]]:
    """Open one trace file; errors name the file and the problem."""
    if not path.exists():
        raise TraceError(f"{path}: no such file")
    if not os.access(path, os.R_OK):
        raise TraceError(f"{path}: permission denied")
    if path.stat().st_size == 0:
        raise TraceError(f"{path}: empty file")
    if decompressed_size(path) > STREAM_THRESHOLD_BYTES:
        return read_streaming(path, progress)
    return read_whole(path)
