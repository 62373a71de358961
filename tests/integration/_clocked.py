"""A routing store driven on a real Redis with a simulated clock: the harness of the store-level
scenario tests (preferred agents, wait notices, callbacks). Each test gets a domain of its own;
``now`` moves only when the test moves it."""

from __future__ import annotations

import uuid

import redis.asyncio as aioredis

from router.events import Event
from router.routing.config import parse_policy
from router.routing.state import Transition, rows
from router.routing.store import RoutingStore
from router.settings import Settings

T0 = 1_800_000_000_000


class ClockedRun:
    def __init__(self, client: aioredis.Redis, policy: str, *, name: str,
                 settings: Settings | None = None) -> None:
        self.store = RoutingStore(client, settings or Settings(), parse_policy(policy, "<test>"))
        self.client = client
        self.domain = f"{name}-{uuid.uuid4().hex[:10]}"
        self.now = T0
        self.n = 0

    def eid(self) -> str:
        self.n += 1
        return f"e{self.n}"

    async def apply(self, *events: Event) -> list[Transition]:
        """The events in one batch at ``now``; their transitions (Kafka has them: acked)."""
        out: list[Transition] = []
        for r in await self.store.apply(list(events), self.now):
            assert not isinstance(r, Exception), r
            self.store.ack_entries(r)
            out.extend(rows(r))
        return out

    async def tick(self, ms: int) -> list[Transition]:
        """``ms`` later, the timer's step: this domain's transitions."""
        self.now += ms
        mine = [e for e in await self.store.tick(self.now) if e.rows
                and e.rows[0].domain == self.domain]
        self.store.ack_entries(mine)
        return rows(mine)
