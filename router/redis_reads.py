"""Reading Redis through refusals and resets, for the processes that only read it: the demo's
books and `peakroute status`.

A read that meets a dependency failure (``router.transient.kind_of``: a reset, a timeout,
LOADING, BUSY, ...) is tried again after 0.1 s, doubling up to a cap, until it answers or its
time is up; ``Refusals`` remembers what is going on, for the progress line. Anything else (a
bug, a key of the wrong type) propagates at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from router.errors import PeakrouteError
from router.transient import Kind, kind_of

T = TypeVar("T")
FIRST_DELAY_S = 0.1
MAX_DELAY_S = 2.0


class RedisRefusing(PeakrouteError):
    """Redis kept failing a read (by kind) for longer than the reader could wait."""

    def __init__(self, kind: Kind, waited_s: float, cause: BaseException) -> None:
        super().__init__(f"Redis kept refusing ({kind.value}) for {waited_s:.0f} s: "
                         f"{type(cause).__name__}: {str(cause)[:200]}")
        self.kind = kind


@dataclass
class Refusals:
    """What a reader met: the failure going on now (its kind and since when) and how many
    of each kind it has met."""

    kind: Kind | None = None
    since: float = 0.0
    counts: Counter[str] = field(default_factory=Counter)

    def failed(self, kind: Kind) -> None:
        if self.kind is None:
            self.since = time.monotonic()
        self.kind = kind
        self.counts[kind.value] += 1

    def recovered(self) -> None:
        self.kind = None

    def describe(self) -> str:
        """``loading for 3 s`` while a failure goes on, else empty."""
        if self.kind is None:
            return ""
        return f"{self.kind.value} for {time.monotonic() - self.since:.0f} s"


async def read_through(read: Callable[[], Awaitable[T]], refusals: Refusals,
                       within_s: float) -> T:
    """``read()``'s answer, retrying dependency failures with capped backoff for up to
    ``within_s`` seconds; then ``RedisRefusing`` (the last failure as its cause)."""
    started = time.monotonic()
    delay = FIRST_DELAY_S
    while True:
        try:
            value = await read()
        except Exception as exc:
            kind = kind_of(exc)
            if kind is None:
                raise
            refusals.failed(kind)
            waited = time.monotonic() - started
            if waited + delay > within_s:
                raise RedisRefusing(kind, waited, exc) from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)
        else:
            refusals.recovered()
            return value
