"""Parts of one iteration, timed inside the timed repeat itself.

An adapter's iteration marks its parts:

    def iteration(part):
        with part("text_encoder"):
            ...
        for t in timesteps:
            with part("unet"):      # a part entered many times accumulates
                ...

Each part is a `record_function` range (so traces show it) and, while a `Parts` timer is
active, a pair of clock reads (the device synchronized first, so queued work lands in the
part it belongs to). Time of the iteration outside every part is measured too, between the
same clock reads, as the part `unmarked`: the parts and `unmarked` then sum to the iteration,
up to the timer's own cost. Parts do not nest. A part run in the background, overlapping
the others (an adapter loading on a thread while denoising runs), is timed on its own and
left out of the sum: `part("load", background=True)`.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator

from torch.profiler import record_function

UNMARKED = "unmarked"
ITERATION = "iteration"  # the latency phase of the whole iteration


@contextmanager
def untimed_part(name: str, background: bool = False) -> Iterator[None]:
    """The part marker outside timed repeats: only the trace range."""
    with record_function(name):
        yield


class Parts:
    """Times one iteration's parts; `start()` before the iteration, `stop()` after, then `totals_ns`."""

    def __init__(self, clock: Callable[[], int]):
        self.clock = clock
        self.totals_ns: dict[str, int] = {}
        self.background_ns: dict[str, int] = {}
        self._open: str | None = None
        self._last = 0
        self._owner = threading.get_ident()

    def start(self) -> None:
        self.totals_ns, self.background_ns, self._open = {}, {}, None
        self._last = self.clock()

    def stop(self) -> None:
        if self._open is not None:
            raise RuntimeError(f"part {self._open!r} is still open at the end of the iteration")
        self._add(UNMARKED, self.clock() - self._last)

    def _add(self, name: str, ns: int, into: dict | None = None) -> None:
        into = self.totals_ns if into is None else into
        into[name] = into.get(name, 0) + ns

    @contextmanager
    def __call__(self, name: str, background: bool = False) -> Iterator[None]:
        if name in (UNMARKED, ITERATION):
            raise ValueError(f"part name {name!r} is reserved")
        if background or threading.get_ident() != self._owner:
            start = self.clock()
            with record_function(name):
                yield
            self._add(name, self.clock() - start, self.background_ns)
            return
        if self._open is not None:
            raise RuntimeError(f"part {name!r} opened inside part {self._open!r}: parts do not nest")
        start = self.clock()
        self._add(UNMARKED, start - self._last)
        self._open = name
        try:
            with record_function(name):
                yield
        finally:
            self._open = None
            self._last = self.clock()
            self._add(name, self._last - start)
