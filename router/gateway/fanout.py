"""Kafka in: offers, rescinds and routing decisions read from the end (no consumer group),
each pushed to the sockets of the agent it names; the agents' figures counted once per decision
across instances. An instance reads every partition, or only its own (PEAKROUTE_GATEWAY_PARTITIONS)
when desktops are routed to instances by domain."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.exceptions import RedisError

from router import logs
from router.decode import Decoder, Limits, Rejection
from router.events import (
    AgentProfileApplied,
    AssignmentOffered,
    AssignmentRescinded,
    Decision,
    Event,
    RoutingDecision,
)
from router.gateway import console
from router.gateway import metrics as gm
from router.gateway.hub import Hub
from router.gateway.roster import served_queues
from router.gateway.session import offer_frame
from router.kafka import assign_all, consumer
from router.routing import state
from router.routing.config import RoutingPolicy
from router.settings import Settings
from router.stage import now_ms

log = logs.get("gateway")


class Fanout:
    def __init__(self, settings: Settings, policy: RoutingPolicy, redis: aioredis.Redis,
                 hub: Hub, stopping: Callable[[], bool]) -> None:
        self.settings = settings
        self.policy = policy
        self.redis = redis
        self.hub = hub
        self.stopping = stopping
        self.decoder = Decoder(Limits(settings.max_record_bytes, settings.max_text_chars))
        self._consumer: AIOKafkaConsumer | None = None
        self._count_once = redis.register_script(console.COUNT_ONCE)

    async def start(self) -> None:
        self._consumer = consumer(self.settings, group_id=None, auto_offset_reset="latest",
                                  fetch_max_wait_ms=self.settings.gateway_fetch_max_wait_ms)
        await self._consumer.start()
        topics = [self.settings.topic_assignments, self.settings.topic_routing_decisions]
        only = self.settings.gateway_partition_list()
        if only is None:
            await assign_all(self._consumer, topics, from_end=True)
            return
        # This instance serves the domains of these partitions only.
        tps = [TopicPartition(t, p) for t in topics for p in only
               if p in (self._consumer.partitions_for_topic(t) or ())]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:
            await self._consumer.position(tp)

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def run(self) -> None:
        assert self._consumer is not None
        delay = 0.1
        while not self.stopping():
            try:
                batches = await self._consumer.getmany(timeout_ms=200, max_records=5000)
                fetched = now_ms()
                events = [self.decoder.decode(rec.value, parsed=head)
                          for recs in batches.values() for rec in recs
                          if (head := self._for_us(rec.value)) is not None]
                await self._dispatch([e for e in events if not isinstance(e, Rejection)],
                                     fetched)
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except Exception:  # the reader must outlive whatever one batch met
                log.exception("gateway_read_failed")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _for_us(self, raw: bytes | None) -> dict[str, Any] | None:
        """The record parsed if it names an agent connected here, else None: only those are
        checked against the contract (the full check costs more than the rest of an offer's
        way to the socket), and with the value parsed here, so an instance reading records of
        many more agents than it holds spends little on them, and parses its own once."""
        try:
            head = orjson.loads(raw or b"")
        except orjson.JSONDecodeError:
            return None
        if (isinstance(head, dict) and isinstance(head.get("domain"), str)
                and isinstance(head.get("agent_id"), str)
                and (head["domain"], head["agent_id"]) in self.hub.agents):
            return head
        return None

    async def _dispatch(self, events: Iterable[Event], fetched_ms: int) -> None:
        offers: list[AssignmentOffered] = []
        counts: list[tuple[str, str, str, str]] = []  # domain, agent, figure, event id
        touched: list[tuple[str, str]] = []  # agents the next sync round reads
        for ev in events:
            match ev:
                case AssignmentOffered() if (ev.domain, ev.agent_id) in self.hub.agents:
                    self.hub.offer_owner[(ev.domain, ev.offer_id)] = ev.agent_id
                    offers.append(ev)
                    gm.OFFER_FETCHED.observe(max(fetched_ms - ev.ts_ms, 0) / 1000)
                case AssignmentRescinded():
                    self.hub.offer_owner.pop((ev.domain, ev.offer_id), None)
                    for s in self.hub.agents.get((ev.domain, ev.agent_id), ()):
                        s.offers.pop(ev.offer_id, None)
                        s.push({"type": "rescind", "offer_id": ev.offer_id,
                                "contact_id": ev.contact_id, "reason": ev.reason})
                        s.hold_until = 0.0  # a lapse may have made the agent not ready
                    touched.append((ev.domain, ev.agent_id))
                case RoutingDecision():
                    if ev.agent_id is None:
                        continue
                    key = (ev.domain, ev.agent_id)
                    if key in self.hub.agents and ev.decision in console.FIGURE_OF:
                        counts.append((*key, console.FIGURE_OF[ev.decision], ev.event_id))
                        if ev.decision == Decision.ACCEPTED and ev.within_target:
                            counts.append((*key, "within_target", ev.event_id + "w"))
                    self._decision(ev)
                    touched.append(key)
                case AgentProfileApplied() if (ev.domain, ev.agent_id) in self.hub.agents:
                    queues = served_queues(ev.skills, self.policy.for_domain(ev.domain))
                    for s in self.hub.agents[(ev.domain, ev.agent_id)]:
                        s.push({"type": "profile", "skills": ev.skills, "capacity": ev.capacity,
                                "queues": queues, "changed_by": ev.changed_by})
                        s.last["skills"] = ev.skills
                    touched.append((ev.domain, ev.agent_id))
        if offers:
            await self.push_offers(offers)
            queued = now_ms()
            for o in offers:
                gm.OFFER_QUEUED.observe(max(queued - o.ts_ms, 0) / 1000)
        if counts:
            await self._count(counts)
        for domain, aid in touched:  # after the counts: the sync reads them
            self.hub.touch(domain, aid)

    def _decision(self, d: RoutingDecision) -> None:
        sessions = self.hub.agents.get((d.domain, d.agent_id or ""), ())
        if d.decision == Decision.ACCEPTED:
            self.hub.offer_owner.pop((d.domain, d.offer_id or ""), None)
            for s in sessions:
                offer = s.offers.pop(d.offer_id or "", None)
                item = {"contact_id": d.contact_id, "offer_id": d.offer_id, "queue": d.queue,
                        "channel": offer.channel.value if offer else "", "since": d.ts_ms,
                        "waited_ms": d.waited_ms, "within_target": d.within_target}
                s.active[d.contact_id] = item
                s.push({"type": "assigned", **item})
        elif d.decision == Decision.COMPLETED:
            for s in sessions:
                s.active.pop(d.contact_id, None)
                s.push({"type": "completed", "contact_id": d.contact_id})

    async def push_offers(self, offers: list[AssignmentOffered]) -> None:
        try:
            contexts = await console.offer_contexts(
                self.redis, [(o.domain, o.contact_id) for o in offers])
        except RedisError:  # an offer without its context beats no offer
            contexts = {}
        now = now_ms()
        for o in offers:
            frame = offer_frame(o, contexts.get((o.domain, o.contact_id)), now)
            for s in self.hub.agents.get((o.domain, o.agent_id), ()):
                if o.offer_id not in s.offers:
                    s.offers[o.offer_id] = o
                    s.push(frame)

    async def _count(self, counts: list[tuple[str, str, str, str]]) -> None:
        day = console.today()
        pipe = self.redis.pipeline(transaction=False)
        for domain, aid, figure, eid in counts:
            await self._count_once(keys=[console.day_key(domain, aid, day),
                                         state.gateway_seen_key(domain, eid)],
                                   args=[figure, 1, console.DAY_TTL_S,
                                         self.settings.gateway_seen_ttl_s], client=pipe)
        await pipe.execute()
