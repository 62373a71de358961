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


async def test_the_timer_rolls_each_final_minute_into_its_hour_once_and_in_turn(
    stack: Settings, store_redis: aioredis.Redis, domain: str,
) -> None:
    """Contacts answered through two hours (T0 is an hour boundary). The timer runs every
    minute of the first hour and rolls each minute into the hour's bucket once it is final;
    in the second it misses a minute, so that hour stays incomplete and readers take it from
    its minutes. Either way `today` and the rolling windows read the same counts."""
    stack = stack.replace(sla_timezone="UTC")
    store = RoutingStore(store_redis, stack, policy_from_settings(stack))
    await _step(store, AgentLoggedIn(event_id="l1", ts_ms=T0, agent_id="a1", domain=domain,
                                     skills={"zh": 1, "general": 1}, capacity={"chat": 1}), 0)
    p = prefix(domain)
    hour0 = T0 // buckets.HOUR_MS
    expected = Counts()
    for n, minute in enumerate((0, 1, 17, 59, 60, 75, 119)):
        at = minute * 60 + 7
        cid = f"c{n}"
        [offered] = [r for r in await _step(store, _request(cid, domain, at - 5 - n), at)
                     if r.startswith("offered")]
        await _step(store, OfferAccepted(event_id=f"a{n}", ts_ms=T0, agent_id="a1",
                                         domain=domain, offer_id=offered.split(":")[2],
                                         contact_id=cid), at + 1)
        await _step(store, ContactCompleted(event_id=f"d{n}", ts_ms=T0, agent_id="a1",
                                            domain=domain, contact_id=cid), at + 2)
        wait = (6 + n) * 1000
        expected = expected + Counts(offered=1, answered=1, answered_within_target=1,
                                     wait_sum_ms=wait, wait_max_ms=wait)
    # A worker of the earlier version counted into minute 30 as `<queue>|<count>`: it adds in.
    await store_redis.hset(buckets.minute_key_of(p, hour0 * 60 + 30), "general|offered", 2)
    expected = expected + Counts(offered=2)
    for minute in range(0, 123):
        if minute == 60 + 41 + buckets.ROLL_LAG_MINUTES:
            continue  # no timer ran in this minute: minute 101 is never rolled up
        for _ in range(2):  # the timer runs again and again in a minute: once is counted
            await store.tick(T0 + minute * 60_000 + 30_000)
    raw0 = await store_redis.hgetall(buckets.hour_key_of(p, hour0))
    raw1 = await store_redis.hgetall(buckets.hour_key_of(p, hour0 + 1))
    assert buckets.complete(raw0, hour0)
    assert not buckets.complete(raw1, hour0 + 1)
    first = [_minutes_sum(await store_redis.hgetall(buckets.minute_key_of(p, m)))
             for m in range(hour0 * 60, hour0 * 60 + 60)]
    assert buckets.per_queue(raw0)["general"] == sum(first, Counts())
    assert sum(first, Counts()).answered == 4
    assert await store_redis.ttl(buckets.hour_key_of(p, hour0)) > 86_400

    for now_ms in (T0 + 123 * 60_000, T0 + 200 * 60_000):
        for cache in (None, BucketCache(), BucketCache()):
            snap = await read_snapshot(store_redis, stack, now_ms=now_ms, only=domain,
                                       cache=cache)
            [q] = snap.queues
            assert q.windows["today"].counts == expected
            if cache is not None:  # read twice: what it kept is right too
                again = await read_snapshot(store_redis, stack, now_ms=now_ms, only=domain,
                                            cache=cache)
                assert again.queues[0].windows["today"].counts == expected
    # Before the timer rolled the first hour's last minutes, readers take it from its minutes.
    early = await read_snapshot(store_redis, stack, now_ms=T0 + 61 * 60_000, only=domain)
    assert early.queues[0].windows["today"].counts.answered == 5


def _minutes_sum(raw: dict[bytes, bytes]) -> Counts:
    return buckets.per_queue(raw).get("general", Counts())
