"""Redis memory per logged-in agent, per waiting contact and per finished contact, measured on a
redis-server of its own through the routing store (the worker's own scripts), for sizing
(docs/OPERATIONS.md).

    python -m load_tests.redis_memory --agents 5000 --contacts 20000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from agents.simulated import roster
from router.events import (
    AgentLoggedIn,
    ContactCompleted,
    Event,
    Language,
    OfferAccepted,
    RoutingRequested,
    Speaker,
    Turn,
)
from router.routing import state
from router.routing.config import load_policy
from router.routing.store import RoutingStore
from router.settings import Settings
from router.stack import standalone_redis

BATCH = 500
TURN_TEXT = "我的订单什么时候发货？已经三天了，物流一直没有更新" * 2  # a typical chat line


async def used(client: aioredis.Redis) -> int:
    info = await client.info("memory")
    return int(info["used_memory"])


async def apply_all(store: RoutingStore, events: list[Event], now: int) -> list[Any]:
    results: list[Any] = []
    for start in range(0, len(events), BATCH):
        results.extend(await store.apply(events[start:start + BATCH], now))
    return results


async def measure(url: str, agents: int, contacts: int, turns: int) -> dict[str, Any]:
    client = aioredis.Redis.from_url(url)
    store = RoutingStore(client, Settings(), load_policy())
    now = int(time.time() * 1000)
    rng = random.Random(5)
    await client.flushdb()
    await store.apply([], now)  # loads the scripts before the baseline
    base = await used(client)

    logins: list[Event] = [
        AgentLoggedIn(event_id=f"l-{p.agent_id}", ts_ms=now, agent_id=p.agent_id,
                      domain="staffed", skills=p.skills, capacity=p.capacity, ready=False)
        for p in roster(agents, "staffed")
    ]
    await apply_all(store, logins, now)
    after_agents = await used(client)

    transcript = tuple(Turn(speaker=Speaker.CUSTOMER, text=TURN_TEXT, ts_ms=now)
                       for _ in range(turns))
    requests: list[Event] = [
        RoutingRequested(event_id=f"r-{i}", ts_ms=now, contact_id=f"c-{i:08d}", domain="empty",
                         language=Language.ZH if rng.random() < 0.8 else Language.EN,
                         intent="order_status", reason="low_confidence", confidence=0.4,
                         transcript=transcript)
        for i in range(contacts)
    ]
    await apply_all(store, requests, now)
    after_waiting = await used(client)

    # Finished contacts: a domain with one always-free agent answers and completes each one.
    await store.apply([AgentLoggedIn(event_id="l-solo", ts_ms=now, agent_id="solo",
                                     domain="done", skills={"general": 3, "zh": 3, "en": 3,
                                                            "orders": 3},
                                     capacity={"chat": 1})], now)
    finished_before = await used(client)
    done = 0
    for i in range(min(contacts, 5000)):
        cid = f"d-{i:08d}"
        results = await store.apply([RoutingRequested(
            event_id=f"dr-{i}", ts_ms=now, contact_id=cid, domain="done",
            language=Language.ZH, intent="order_status")], now)
        first = results[0]
        offers = [t for t in state.rows(first) if isinstance(t, state.Offered)] \
            if not isinstance(first, Exception) else []
        if not offers:
            break
        await store.apply([OfferAccepted(event_id=f"da-{i}", ts_ms=now, agent_id="solo",
                                         domain="done", contact_id=cid,
                                         offer_id=offers[0].offer_id)], now)
        await store.apply([ContactCompleted(event_id=f"dc-{i}", ts_ms=now, agent_id="solo",
                                            domain="done", contact_id=cid)], now)
        done += 1
    finished_after = await used(client)
    await client.aclose()
    return {
        "bytes_per_agent": round((after_agents - base) / agents),
        "bytes_per_waiting_contact": round((after_waiting - after_agents) / contacts),
        "transcript_turns_per_waiting_contact": turns,
        "bytes_per_finished_contact": round((finished_after - finished_before) / done)
        if done else None,
        "finished_contacts_measured": done,
        "agents": agents,
        "waiting_contacts": contacts,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.redis_memory",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=5000)
    parser.add_argument("--contacts", type=int, default=20000)
    parser.add_argument("--turns", type=int, default=3,
                        help="transcript turns each escalation carries")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with standalone_redis(Path(tempfile.mkdtemp(prefix="peakroute-mem-"))) as url:
        result = asyncio.run(measure(url, args.agents, args.contacts, args.turns))
    print(orjson.dumps(result, option=0 if args.json else orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
