"""Seeded mutations of a real trace: the broken files a new user's cluster may hand us.

`mutants(source, seed, count)` yields (name, bytes) pairs, each a plain-JSON or gzip file made
from the real trace at `source` by one mutation: truncations, byte flips (anywhere, and inside
strings as invalid UTF-8), wrong types, dropped fields, wrong containers, odd values (huge or
negative numbers, NUL characters, lone surrogate escapes, empty names). The same seed gives the
same files, so a failure names a mutant that can be made again.
"""
from __future__ import annotations

import copy
import gzip
import json
import random
import re
from pathlib import Path
from typing import Callable, Iterator

EVENT_FIELDS = ("ph", "cat", "name", "pid", "tid", "ts", "dur", "id", "args")
ODD_VALUES = [
    None, True, 0, -1, 2**63, 2**70, -(2**70), 1e300, -1e300, 0.5, "", "x", "0x0", "stream 7", "\u0000", "\ud800",
    "\u00e9\u4e2d\U0001f600", "a" * 5000, [], [1, "a"], {}, {"a": {"b": [1]}},
]
INVALID_UTF8 = [b"\xff", b"\xc3", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82", b"\xfe\xff", b"\x80"]


def _dump(trace, compress: bool) -> bytes:
    text = json.dumps(trace, indent=1).encode("utf-8", "surrogatepass")
    return gzip.compress(text, mtime=0) if compress else text


def _events(trace) -> list:
    return trace["traceEvents"] if isinstance(trace, dict) and isinstance(trace.get("traceEvents"), list) else []


def _some_event(trace, rng: random.Random) -> dict | None:
    events = [e for e in _events(trace) if isinstance(e, dict)]
    return rng.choice(events) if events else None


# -- structured mutations: each changes the decoded trace in place ------------------------------
def drop_field(trace, rng):
    event = _some_event(trace, rng)
    field = rng.choice([f for f in EVENT_FIELDS if f in event] or ["ph"])
    event.pop(field, None)
    return f"drop {field}"


def drop_field_everywhere(trace, rng):
    field = rng.choice(EVENT_FIELDS)
    for event in _events(trace):
        if isinstance(event, dict):
            event.pop(field, None)
    return f"drop {field} in every event"


def wrong_type(trace, rng):
    event = _some_event(trace, rng)
    field, value = rng.choice(EVENT_FIELDS), rng.choice(ODD_VALUES)
    event[field] = value
    return f"{field} = {value!r:.30}"


def wrong_arg(trace, rng):
    event = _some_event(trace, rng)
    args = event.setdefault("args", {})
    if not isinstance(args, dict):
        return "args already odd"
    key = rng.choice(["stream", "correlation", "External id", "external id", "device", "Input Dims", "name", "\u0000k"])
    args[key] = rng.choice(ODD_VALUES)
    return f"args[{key!r}] = {args[key]!r:.30}"


def wrong_container(trace, rng):
    choice = rng.randrange(8)
    if choice == 0:
        trace["traceEvents"] = rng.choice([{}, "events", None, 7, {"a": 1}])
    elif choice == 1:
        _events(trace).insert(rng.randrange(len(_events(trace)) + 1), rng.choice([[], "event", 7, None, [1, 2]]))
    elif choice == 2:
        _some_event(trace, rng)["args"] = rng.choice([[], "args", 7, [{"stream": 7}]])
    elif choice == 3:
        trace["deviceProperties"] = rng.choice([{}, "gpu", 7, [None, "x", {"name": 7}]])
    elif choice == 4:
        trace["distributedInfo"] = rng.choice([[], "rank", 7, {"rank": "zero", "world_size": [2]}, {"rank": 2**70}])
    elif choice == 5:
        trace["schemaVersion"] = rng.choice([[], {}, 1.5, None, "v2"])
    elif choice == 6:
        trace["traceEvents"] = []
    else:
        return "bare array: " + str(len(_events(trace)))
    return f"container {choice}"


def odd_timing(trace, rng):
    event = _some_event(trace, rng)
    event["ts"], event["dur"] = rng.choice([(1e300, 1), (-1e18, 5), (0, -10), (2**62, 2**62), (1.5e15, 1e300), (1e16, None)])
    return f"ts={event['ts']!r} dur={event['dur']!r}"


def duplicate_events(trace, rng):
    events = _events(trace)
    events.extend(copy.deepcopy(events[: rng.randrange(1, 30)]))
    return "duplicates"


def odd_names(trace, rng):
    value = rng.choice(["", "\u0000", "ProfilerStep#", "ProfilerStep#99999999999999999999", "nccl\u0000Kernel", "\ud83d", "\\", "%s%n"])
    for event in rng.sample(_events(trace), min(5, len(_events(trace)))):
        if isinstance(event, dict):
            event["name"] = value
    return f"names = {value!r}"


STRUCTURED: list[Callable] = [drop_field, drop_field_everywhere, wrong_type, wrong_arg, wrong_container, odd_timing,
                              duplicate_events, odd_names]


# -- byte mutations: each changes the file's bytes -------------------------------------------------
def truncate(data: bytes, rng) -> tuple[bytes, str]:
    cut = rng.randrange(0, len(data))
    return data[:cut], f"truncated at {cut}"


def flip_byte(data: bytes, rng) -> tuple[bytes, str]:
    at = rng.randrange(len(data))
    return data[:at] + bytes([rng.randrange(256)]) + data[at + 1 :], f"byte {at} flipped"


_STRING = re.compile(rb'"(?:[^"\\\n]|\\.){3,}"')


def invalid_utf8_in_string(data: bytes, rng) -> tuple[bytes, str]:
    strings = list(_STRING.finditer(data))
    target = rng.choice(strings)
    at = rng.randrange(target.start() + 1, target.end() - 1)
    bad = rng.choice(INVALID_UTF8)
    return data[:at] + bad + data[at + len(bad) :], f"invalid UTF-8 {bad!r} at {at} in {target.group()[:30]!r}"


def raw_control_byte(data: bytes, rng) -> tuple[bytes, str]:
    strings = list(_STRING.finditer(data))
    target = rng.choice(strings)
    at = rng.randrange(target.start() + 1, target.end() - 1)
    byte = rng.choice([b"\x00", b"\x01", b"\x1f", b"\t"])
    return data[:at] + byte + data[at + 1 :], f"control byte {byte!r} at {at}"


BYTES: list[Callable] = [truncate, flip_byte, invalid_utf8_in_string, invalid_utf8_in_string, raw_control_byte]


def mutants(source: Path, seed: int, count: int) -> Iterator[tuple[str, bytes]]:
    """`count` mutants of the trace at `source` (.json or .json.gz): (description, file bytes)."""
    raw = Path(source).read_bytes()
    text = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    original = json.loads(text)
    rng = random.Random(seed)
    for index in range(count):
        compress = rng.random() < 0.3
        if rng.random() < 0.55:
            trace = copy.deepcopy(original)
            mutation = rng.choice(STRUCTURED)
            what = mutation(trace, rng)
            if what.startswith("bare array"):
                trace = trace["traceEvents"]
            data = _dump(trace, compress)
        else:
            mutation = rng.choice(BYTES)
            data, what = mutation(text, rng)
            data = gzip.compress(data, mtime=0) if compress else data
            if compress and rng.random() < 0.3:  # damage the compressed stream itself
                data, extra = rng.choice([truncate, flip_byte])(data, rng)
                what += f", gzip {extra}"
        yield f"{index:03d} {mutation.__name__}: {what}{' (gzip)' if compress else ''}", data
