"""SLA accounting inside the routing scripts, on a real Redis with a simulated clock: the
buckets, running totals and live values that the snapshot reads, against a hand-computed day."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import redis.asyncio as aioredis

from router.events import (
    AgentLoggedIn,
    ContactCompleted,
    CustomerLeft,
    Event,
    OfferAccepted,
    RoutingRequested,
)
from router.metrics import ClusterCollector
from router.routing.config import policy_from_settings
from router.routing.state import prefix, rows
from router.routing.store import RoutingStore
from router.settings import Settings
from router.sla import buckets
from router.sla.export import Lease
from router.sla.snapshot import BucketCache, read_snapshot
from router.sla.windows import Counts

pytestmark = pytest.mark.integration
T0 = 1_800_000_000_000  # a minute boundary (epoch minute 30 000 000)


def _request(cid: str, domain: str, at_s: float) -> RoutingRequested:
    return RoutingRequested(event_id=f"r-{cid}", ts_ms=T0 + int(at_s * 1000), contact_id=cid,
                            domain=domain, queue="general")


async def _step(store: RoutingStore, event: Event, at_s: float) -> list[str]:
    [result] = await store.apply([event], T0 + int(at_s * 1000))
    assert not isinstance(result, Exception), result
    return [f"{t.kind}:{t.contact_id}:{getattr(t, 'offer_id', '')}" for t in rows(result)]


async def test_buckets_totals_and_live_values_match_a_hand_computed_scenario(
    stack: Settings, store_redis: aioredis.Redis, domain: str,
) -> None:
    """One agent (chat capacity 1) in queue general (target 30 s):
    c1 arrives at 0 s, offered at once, accepted at 10 s (within target);
    c2 arrives at 0 s, waits; offered at 20 s when c1 completes, accepted at 45 s (late);
    c3 arrives at 3 s, leaves at 5 s (short abandon: 2 s <= 5 s);
    c4 arrives at 50 s, leaves at 61 s (abandoned in the second minute, 11 s);
    c5 arrives at 62 s and still waits when the snapshot is read at 90 s (28 s: at risk)."""
    store = RoutingStore(store_redis, stack, policy_from_settings(stack))
    offers: dict[str, str] = {}

    async def run(event: Event, at_s: float) -> None:
        for row in await _step(store, event, at_s):
            kind, cid, oid = row.split(":")
            if kind == "offered":
                offers[cid] = oid

    await run(AgentLoggedIn(event_id="l1", ts_ms=T0, agent_id="a1", domain=domain,
                            skills={"zh": 1, "general": 1}, capacity={"chat": 1}), 0)
    await run(_request("c1", domain, 0), 0)
    await run(_request("c2", domain, 0), 0)
    await run(_request("c3", domain, 3), 3)
    await run(CustomerLeft(event_id="x3", ts_ms=T0, contact_id="c3", domain=domain), 5)
    await run(OfferAccepted(event_id="a1", ts_ms=T0, agent_id="a1", domain=domain,
                            offer_id=offers["c1"], contact_id="c1"), 10)
    await run(ContactCompleted(event_id="d1", ts_ms=T0, agent_id="a1", domain=domain,
                               contact_id="c1"), 20)
    await run(OfferAccepted(event_id="a2", ts_ms=T0, agent_id="a1", domain=domain,
                            offer_id=offers["c2"], contact_id="c2"), 45)
    await run(_request("c4", domain, 50), 50)
    await run(CustomerLeft(event_id="x4", ts_ms=T0, contact_id="c4", domain=domain), 61)
    await run(_request("c5", domain, 62), 62)

    p = prefix(domain)
    minute0 = buckets.per_queue(await store_redis.hgetall(buckets.minute_key(p, T0)))["general"]
    minute1 = buckets.per_queue(
        await store_redis.hgetall(buckets.minute_key(p, T0 + 60_000)))["general"]
    assert minute0 == Counts(offered=4, answered=2, answered_within_target=1, abandoned=1,
                             short_abandoned=1, wait_sum_ms=55_000, wait_max_ms=45_000)
    assert minute1 == Counts(offered=1, abandoned=1)
    ttl = await store_redis.ttl(buckets.minute_key(p, T0))
    assert 86_400 < ttl <= stack.sla_bucket_ttl_s  # buckets outlive "today", then go

    snap = await read_snapshot(store_redis, stack, now_ms=T0 + 90_000, only=domain)
    [q] = snap.queues
    everything = Counts(offered=5, answered=2, answered_within_target=1, abandoned=2,
                        short_abandoned=1, wait_sum_ms=55_000, wait_max_ms=45_000)
    assert q.totals == dataclasses.replace(everything, wait_max_ms=0)  # totals keep no max
    for window in ("5m", "15m", "1h", "today"):
        assert q.windows[window].counts == everything
        assert q.windows[window].service_level == pytest.approx(1 / 3)  # 1 / (2 + 2 - 1)
        assert q.windows[window].average_wait_s == pytest.approx(27.5)
    assert (q.waiting, q.queued, q.at_risk, q.agents_ready) == (1, 1, 1, 1)
    assert q.oldest_wait_s == pytest.approx(28.0)
    assert q.target_s == 30.0
    # No free agent: (1 in line + itself) at 2 answered per 90 s (the queue's first contact
    # came 90 s ago: the 5-minute window's rate counts from then).
    assert q.estimated_wait_s == pytest.approx(90.0)
    [d] = snap.domains
    assert d.agents == {"ready": 1, "not_ready": 0}
    assert d.occupancy == 1.0  # c2 in hand, no free slot

    other = await read_snapshot(store_redis, stack.replace(sla_formula="all_abandons"),
                                now_ms=T0 + 90_000, only=domain)
    assert other.queues[0].windows["5m"].service_level == pytest.approx(1 / 4)
    # Seven minutes on, the 5-minute window holds nothing; the hour still holds everything.
    later = await read_snapshot(store_redis, stack, now_ms=T0 + 7 * 60_000, only=domain)
    assert later.queues[0].windows["5m"].counts == Counts()
    assert later.queues[0].windows["5m"].service_level is None
    assert later.queues[0].windows["1h"].counts == everything

    # A reader that keeps finished buckets sees the same, and still sees the current minute move.
    cache = BucketCache()
    for _ in range(2):
        cached = await read_snapshot(store_redis, stack, now_ms=T0 + 200_000, only=domain,
                                     cache=cache)
        assert cached.queues == (await read_snapshot(store_redis, stack, now_ms=T0 + 200_000,
                                                     only=domain)).queues
    assert cache.done  # minutes 0 and 1 ended more than 2 minutes before T0 + 200 s
    await _step(store, _request("c6", domain, 195), 200)
    again = await read_snapshot(store_redis, stack, now_ms=T0 + 200_000, only=domain,
                                cache=cache)
    assert again.queues[0].windows["5m"].counts.offered == 6


async def test_duplicates_and_stale_events_count_nothing_twice(
    stack: Settings, store_redis: aioredis.Redis, domain: str,
) -> None:
    store = RoutingStore(store_redis, stack, policy_from_settings(stack))
    await _step(store, _request("c1", domain, 0), 0)
    await _step(store, _request("c1", domain, 0), 1)  # re-delivered escalation
    await _step(store, CustomerLeft(event_id="x", ts_ms=T0, contact_id="c1", domain=domain), 2)
    await _step(store, CustomerLeft(event_id="x", ts_ms=T0, contact_id="c1", domain=domain), 3)
    snap = await read_snapshot(store_redis, stack, now_ms=T0 + 4_000, only=domain)
    [q] = snap.queues
    assert q.totals == Counts(offered=1, abandoned=1, short_abandoned=1)
    assert (q.waiting, q.oldest_wait_s, q.at_risk) == (0, 0.0, 0)


async def test_one_worker_at_a_time_holds_the_export_lease(
    store_redis: aioredis.Redis, domain: str,
) -> None:
    """The second exporter waits while the first renews; it takes over once the first lets
    go (or its lease lapses), and a non-holder exports only peakroute_sla_exporter 0."""
    key = f"pr:test-lease:{domain}"
    first, second = Lease(store_redis, 0.5, key), Lease(store_redis, 0.5, key)
    assert await first.renew()
    assert not await second.renew()
    assert await first.renew()  # renewing keeps it
    await first.release()
    assert not first.held
    assert await second.renew()
    await asyncio.sleep(0.6)  # the holder stops renewing (it died): the lease lapses
    assert not second.held
    assert await first.renew()

    collector = ClusterCollector()
    families = list(collector.collect())
    assert [(f.name, [s.value for s in f.samples]) for f in families] == [
        ("peakroute_sla_exporter", [0.0])]
