"""The books: where every contact is, summed over routing domains from Redis (one truth for
all workers). published = contained + answered + abandoned + deadlettered + open."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import redis.asyncio as aioredis

from router.routing.state import domains, live, stats


@dataclass(frozen=True, slots=True)
class Books:
    arrived: int = 0  # contacts the bot stage saw (once each)
    contained: int = 0  # closed by the bot
    escalated: int = 0  # entered a human queue (the 30-second clock started)
    answered: int = 0  # an agent accepted
    answered_within_target: int = 0
    abandoned: int = 0  # the customer left before an agent accepted
    short_abandoned: int = 0
    wait_sum_ms: int = 0
    escalating: int = 0  # the bot handed off, the routing stage has not seen it yet
    waiting: int = 0  # in a queue now
    offered: int = 0  # offered to an agent now, not yet accepted

    @property
    def open(self) -> int:
        """Contacts not yet in a terminal state."""
        return self.escalating + self.waiting + self.offered

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "open": self.open}


async def read_books(client: aioredis.Redis) -> Books:
    totals: dict[str, int] = dict.fromkeys(Books.__dataclass_fields__, 0)
    for domain in await domains(client):
        figures = await stats(client, domain)
        figures.update(await live(client, domain))
        for name in totals:
            totals[name] += figures.get(name, 0)
    return Books(**totals)
