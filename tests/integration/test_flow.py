"""Contacts through the real broker, the real Redis and a real worker: the books balance."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from agents.client import AgentBus
from agents.simulated import AgentPool, AgentProfile, Behaviour
from router.demo import WorkerProcess
from router.events import ContactArrived, CustomerLeft, Language, Tier
from router.routing.store import domain_live, domain_stats
from router.settings import Settings
from router.stage import now_ms
from tests.conftest import eventually, read_topic

pytestmark = pytest.mark.integration

QUESTIONS = [
    (Language.ZH, "优惠券怎么用"),  # contained
    (Language.ZH, "优惠券用不了"),  # contained
    (Language.ZH, "我要退款，衣服尺码不对"),  # refunds -> human
    (Language.ZH, "转人工"),  # human
    (Language.EN, "whats my order status"),  # contained
    (Language.EN, "I want a refund, the item arrived broken"),  # refunds -> human
]


def contact(domain: str, n: int) -> ContactArrived:
    language, text = QUESTIONS[n % len(QUESTIONS)]
    return ContactArrived(
        event_id=uuid.uuid4().hex, ts_ms=now_ms(), contact_id=f"{domain}-c{n}", domain=domain,
        customer_id=f"u{n}", language=language, text=text,
        tier=Tier.VIP if n % 10 == 0 else Tier.NORMAL,
    )


@contextlib.asynccontextmanager
async def running_agents(settings: Settings, profiles: list[AgentProfile], domain: str,
                         behaviour: Behaviour) -> AsyncIterator[AgentPool]:
    """Simulated agents logged in for the body of the block, logged out after it."""
    bus = AgentBus(settings)
    await bus.start()
    pool = AgentPool(bus, profiles, domain, behaviour)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.stop()
        await bus.stop()


async def publish(prod: AIOKafkaProducer, settings: Settings, events: list[ContactArrived]
                  ) -> None:
    for e in events:
        await prod.send(settings.topic_contacts_inbound, e.to_json(), key=e.contact_id.encode())
    await prod.flush()


async def test_contacts_end_contained_or_answered_and_books_balance(
    stack: Settings, worker: WorkerProcess, redis_client: aioredis.Redis,
    kafka_producer: AIOKafkaProducer, domain: str,
) -> None:
    profiles = [AgentProfile(f"{domain}-a{i}", {"zh": 2, "en": 1, "general": 1, "refunds": 2},
                             {"chat": 2}) for i in range(3)]
    behaviour = Behaviour(accept_delay_s=(0.01, 0.05), handle_mean_s=0.2)
    async with running_agents(stack, profiles, domain, behaviour) as pool:
        contacts = [contact(domain, n) for n in range(60)]
        await publish(kafka_producer, stack, contacts)

        async def settled() -> dict[str, int] | None:
            # What is live first, then the counters: a contact accepted between the two reads
            # is then counted answered, not missed by both (the reads are not one snapshot).
            live = await domain_live(redis_client, domain)
            stats = await domain_stats(redis_client, domain)
            done = stats["arrived"] == len(contacts) and stats["escalating"] == 0
            return {**stats, **live} if done and live["waiting"] + live["offered"] == 0 else None

        books = await eventually(settled, timeout_s=60)
        assert books, f"not settled: {await domain_stats(redis_client, domain)}"

    assert books["contained"] > 0
    assert books["answered"] > 0
    assert books["contained"] + books["answered"] + books["abandoned"] == len(contacts)
    assert books["escalated"] == books["answered"] + books["abandoned"]
    assert pool.stats.accepted == books["answered"]


async def test_audit_log_agrees_with_counters(
    stack: Settings, worker: WorkerProcess, redis_client: aioredis.Redis,
    kafka_producer: AIOKafkaProducer, domain: str,
) -> None:
    """Invariant 4: replaying routing.decisions rebuilds the answered / abandoned figures."""
    profiles = [AgentProfile(f"{domain}-a0", {"zh": 1, "en": 1, "refunds": 2, "general": 1},
                             {"chat": 1})]
    behaviour = Behaviour(accept_delay_s=(0.01, 0.02), handle_mean_s=0.3)
    async with running_agents(stack, profiles, domain, behaviour):
        contacts = [contact(domain, n) for n in (2, 3, 5, 8, 9, 11, 14, 15)]  # all escalate
        await publish(kafka_producer, stack, contacts)
        # Two customers give up at once; whichever is still waiting is abandoned.
        for c in contacts[-2:]:
            left = CustomerLeft(event_id=uuid.uuid4().hex, ts_ms=now_ms(),
                                contact_id=c.contact_id, domain=domain)
            await kafka_producer.send(stack.topic_contacts_inbound, left.to_json(),
                                      key=c.contact_id.encode())

        async def settled() -> dict[str, int] | None:
            stats = await domain_stats(redis_client, domain)
            live = await domain_live(redis_client, domain)
            total = stats["answered"] + stats["abandoned"]
            return stats if total == len(contacts) and not any(live.values()) else None

        stats = await eventually(settled, timeout_s=60)
        assert stats, f"not settled: {await domain_stats(redis_client, domain)}"

    def mine(records: list[object]) -> list[dict[str, object]]:
        decoded = [orjson.loads(r.value) for r in records]  # type: ignore[attr-defined]
        return [d for d in decoded if d["domain"] == domain]

    expected = stats["answered"] + stats["abandoned"]
    records = await read_topic(
        stack, stack.topic_routing_decisions,
        lambda rs: sum(d["decision"] in {"accepted", "abandoned"} for d in mine(rs)) >= expected,
    )
    audit = mine(records)
    accepted = [d for d in audit if d["decision"] == "accepted"]
    assert len(accepted) == stats["answered"]
    assert sum(d["within_target"] for d in accepted) == stats["answered_within_target"]
    assert sum(d["decision"] == "abandoned" for d in audit) == stats["abandoned"]
    assert len({d["contact_id"] for d in accepted}) == len(accepted), "a contact answered twice"
