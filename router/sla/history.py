"""The router's own history, read back from the SLA minute buckets in Redis (they live
PEAKROUTE_SLA_BUCKET_TTL_S, 48 h by default): per minute, the counts of every queue of the chosen
domains summed, and the domains' books (contacts arrived and contained by the bot, since they
first counted). `peakroute plan --history` turns them into a forecast."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as aioredis

from router.routing.state import domains, prefix, stats
from router.sla import buckets
from router.sla.windows import MINUTE_MS, Counts, epoch_minute

_PIPELINE_CHUNK = 5000  # HGETALLs per round trip


@dataclass(frozen=True, slots=True)
class History:
    """Counts per epoch minute (escalated contacts are ``offered``: they entered a queue) and
    the books of the domains read (arrived, contained, escalated: running totals)."""

    domains: list[str]
    minutes: dict[int, Counts] = field(default_factory=dict)
    arrived: int = 0
    contained: int = 0

    @property
    def containment(self) -> float | None:
        """Share of arrived contacts the bot closed (None before any arrived)."""
        return self.contained / self.arrived if self.arrived else None


async def read_history(client: aioredis.Redis, start_ms: int, end_ms: int,
                       only: str = "") -> History:
    """Minute buckets from ``start_ms`` to ``end_ms`` (every queue of every domain, or of the
    domain ``only``), summed per minute. Finished buckets do not change, so the reads need
    not be atomic."""
    names = [d for d in await domains(client) if not only or d == only]
    first, last = epoch_minute(start_ms), epoch_minute(end_ms - 1)
    keys: list[tuple[int, str]] = []
    arrived = contained = 0
    for domain in names:
        p = prefix(domain)
        keys += [(m, buckets.minute_key_of(p, m)) for m in range(first, last + 1)]
        books = await stats(client, domain)
        arrived += books["arrived"]
        contained += books["contained"]
    minutes: dict[int, Counts] = {}
    for i in range(0, len(keys), _PIPELINE_CHUNK):
        chunk = keys[i:i + _PIPELINE_CHUNK]
        async with client.pipeline(transaction=False) as pipe:
            for _, key in chunk:
                pipe.hgetall(key)
            rows = await pipe.execute()
        for (minute, _), raw in zip(chunk, rows, strict=True):
            for counts in buckets.per_queue(raw).values():  # every queue of the domain
                minutes[minute] = minutes.get(minute, Counts()) + counts
    return History(names, minutes, arrived, contained)


def per_interval(history: History, start_ms: int, end_ms: int, interval_s: int
                 ) -> list[tuple[int, Counts]]:
    """The minutes summed into intervals of ``interval_s`` (a whole number of minutes),
    aligned on the epoch (so 30-minute intervals start at :00 and :30): (start ms, counts)."""
    step = max(1, interval_s // 60)
    first = epoch_minute(start_ms) // step * step
    out = []
    for m0 in range(first, epoch_minute(end_ms - 1) + 1, step):
        total = Counts()
        for m in range(m0, m0 + step):
            total = total + history.minutes.get(m, Counts())
        out.append((m0 * MINUTE_MS, total))
    return out
