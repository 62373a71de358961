"""The gateway's heap and CPython's cycle collector.

A gateway holding 10,000 desktops has about a million objects the collector tracks (sockets,
sessions, their tasks and buffers), and they live as long as the desktops do. CPython's
collector scans every one of them in each full collection, which it starts whenever the
objects that survived since the last one reach a quarter of the heap: with offers flowing that
was a 0.7-0.9 s stop of the event loop every ~4 s at 10,000 desktops, and every offer in flight
waited for it (docs/ARCHITECTURE.md, "Agent gateway").

So the long-lived objects are moved out of the collector's way: every ``interval_s`` the young
objects are collected (cyclic garbage among them is freed: only what survived since the last
round is scanned, a few milliseconds) and the survivors are frozen (``gc.freeze``, the
permanent generation: never scanned, still freed by reference counting). The interval bounds
what any collection scans: every frame a socket reads or writes leaves a new waiting chain
(coroutine, future, handle) alive in place of a frozen one, about ten objects, and the frozen
one's death lowers the count that starts CPython's own collections, so the young generation
grows by what the sockets did since the last round: at 5,000 frames/s a 1 s interval made each
round, and the full collections CPython starts over what was promoted since, 40-70 ms (the bench
client's own heap 100-200 ms: 5,000 sockets' chains) once a second; 0.1 s makes them a few
milliseconds (docs/ARCHITECTURE.md, "Agent gateway"). What becomes cyclic
garbage after it was frozen (a closed socket's objects that refer to each other) is reclaimed
by a sweep (unfreeze, full collection, freeze), which costs the full scan: it runs only once
``sweep_after`` sockets closed since the last one, and not more often than every
``sweep_min_s``.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass

from router import logs

log = logs.get("gateway")


@dataclass(frozen=True, slots=True)
class HeapPolicy:
    interval_s: float  # collect the young objects and freeze the survivors this often (0: off)
    sweep_after: int  # sockets closed since the last sweep before the next one
    sweep_min_s: float  # and at least this long after it


def settle() -> int:
    """Collect the young objects and freeze every survivor; the objects collected. The old
    generation is not scanned: it holds only what the collector promoted since the last
    settle, and what of it died as cyclic garbage waits for a sweep."""
    collected = gc.collect(1)
    gc.freeze()
    return collected


def sweep() -> int:
    """The full collection: every object scanned (garbage among frozen ones freed), then the
    survivors frozen again; the objects collected."""
    gc.unfreeze()
    collected = gc.collect()
    gc.freeze()
    return collected


class Heap:
    """Keeps the long-lived objects frozen; ``closed`` counts the sockets closed so far."""

    def __init__(self, policy: HeapPolicy, closed: Callable[[], int]) -> None:
        self.policy = policy
        self.closed = closed
        self._closed_at_sweep = 0
        self._swept_at = time.monotonic()

    def step(self) -> None:
        """One round: a sweep when it is due, otherwise a settle."""
        now = time.monotonic()
        closed = self.closed()
        if (closed - self._closed_at_sweep >= self.policy.sweep_after
                and now - self._swept_at >= self.policy.sweep_min_s):
            started = time.perf_counter()
            collected = sweep()
            self._closed_at_sweep, self._swept_at = closed, now
            log.info("gateway_heap_swept", extra=logs.fields(
                collected=collected, frozen=gc.get_freeze_count(),
                ms=round((time.perf_counter() - started) * 1000, 1)))
            return
        settle()

    async def run(self, stopping: Callable[[], bool]) -> None:
        if self.policy.interval_s <= 0:
            return
        settle()
        try:
            while not stopping():
                await asyncio.sleep(self.policy.interval_s)
                self.step()
        finally:  # a gateway stopped inside a longer-lived process (the demo, tests)
            gc.unfreeze()
