"""What every load test needs: arrival profiles and Poisson schedules, a paced publisher, and a
ledger that records each contact's times as the router's topics report them.

``arrival_times`` draws a (non-homogeneous) Poisson schedule for a profile; ``Publisher`` sends
one event per scheduled arrival at its time; ``Recorder`` reads bot.replies, routing.decisions
and the deadletter topic into a ``Ledger`` of per-contact times. The peak rehearsal, the Erlang C
proof and the pipeline benchmark are built from these, and so can other load tests.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from router.decode import Decoder
from router.events import (
    BotAction,
    BotReplied,
    ContactWaitUpdated,
    DeadLetter,
    Decision,
    Event,
    RoutingDecision,
)
from router.kafka import assign_all, client_kwargs, consumer, producer
from router.settings import Settings
from router.stage import now_ms

PROFILES = ("steady", "ramp", "double11")
MIDNIGHT_AT = 0.3  # double11: the spike comes at 30 % of the run
SPIKE = 10.0  # double11: the spike's height, in multiples of the baseline
SPIKE_RISE_S = 3.0  # ... reached within this many seconds (at most 5 % of the run)
DECAY_SHARE = 0.25  # ... and decays with a time constant of this share of the run
RAMP_FROM = 0.1  # ramp: from 10 % of the rate to all of it over the first 3/4 of the run


def rate_factor(profile: str, t_s: float, duration_s: float) -> float:
    """The arrival rate at ``t_s`` seconds into a run, in multiples of the base rate."""
    if profile == "steady":
        return 1.0
    if profile == "ramp":
        share = min(t_s / (0.75 * duration_s), 1.0)
        return RAMP_FROM + (1.0 - RAMP_FROM) * share
    if profile == "double11":
        midnight = MIDNIGHT_AT * duration_s
        rise = min(SPIKE_RISE_S, 0.05 * duration_s)
        if t_s < midnight:
            return 1.0
        if t_s < midnight + rise:
            return 1.0 + (SPIKE - 1.0) * (t_s - midnight) / rise
        tau = DECAY_SHARE * duration_s
        return 1.0 + (SPIKE - 1.0) * math.exp(-(t_s - midnight - rise) / tau)
    raise ValueError(f"unknown profile {profile!r}: use one of {', '.join(PROFILES)}")


def peak_factor(profile: str) -> float:
    return SPIKE if profile == "double11" else 1.0


def arrival_times(rate: float, duration_s: float, rng: random.Random,
                  profile: str = "steady") -> list[float]:
    """Poisson arrival times (seconds from the start) at ``rate`` x the profile's factor:
    a homogeneous process at the peak rate, thinned (Lewis and Shedler)."""
    peak = rate * peak_factor(profile)
    times: list[float] = []
    t = rng.expovariate(peak)
    while t < duration_s:
        if rng.random() * peak <= rate * rate_factor(profile, t, duration_s):
            times.append(t)
        t += rng.expovariate(peak)
    return times


class Publisher:
    """Sends one event per scheduled arrival, at its time (late ones at once, in order)."""

    def __init__(self, settings: Settings, **producer_options: object) -> None:
        self.settings = settings
        self.producer: AIOKafkaProducer = producer(settings, **producer_options)
        self.sent = 0
        self.started_at = 0.0  # time.monotonic() of the schedule's zero

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.flush()
        await self.producer.stop()

    async def run(self, times: Sequence[float],
                  make: Callable[[int], tuple[str, str, Event | bytes]],
                  on_sent: Callable[[int, Event | bytes], None] | None = None) -> None:
        """``make(i)`` gives the i-th arrival's (topic, key, event, or raw bytes for a broken
        record); built when it is due, so its ``ts_ms`` is the moment it is sent. Delivery is
        not awaited per record."""
        self.started_at = time.monotonic()
        for i, due in enumerate(times):
            delay = self.started_at + due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            topic, key, event = make(i)
            value = event if isinstance(event, bytes) else event.to_json()
            await self.producer.send(topic, value, key=key.encode())
            self.sent += 1
            if on_sent is not None:
                on_sent(i, event)
        await self.producer.flush()


@dataclass
class ContactTimes:
    """One contact's story in epoch milliseconds (router time for router events)."""

    arrived_ms: int = 0  # the gateway published it (its ts_ms)
    bot_ms: int = 0  # the bot's first reply (the router's ts_ms)
    bot_seen_ms: int = 0  # ... as the gateway received it
    bot_action: str = ""
    escalated_ms: int = 0  # the 30-second clock started (answer time - waited, else bot reply)
    queue: str = ""
    queued_ms: int = 0
    offered_ms: int = 0  # first offer
    answered_ms: int = 0
    agent_id: str = ""
    waited_ms: int = -1  # escalation to acceptance, as the router counted it
    within_target: bool = False
    abandoned_ms: int = 0
    abandon_waited_ms: int = 0
    completed_ms: int = 0
    deadlettered: bool = False
    # The first contact.wait_updated.v1 (when it was queued): what the customer was told.
    told_ms: int = 0
    told_position: int = 0
    told_estimate_s: float = -1.0  # to the millisecond (whole seconds from an older router)
    told_lane: str = ""  # "<domain>/<lane>"

    @property
    def done(self) -> bool:
        return (self.bot_action == BotAction.ANSWERED or self.answered_ms > 0
                or self.abandoned_ms > 0 or self.deadlettered)


@dataclass
class Ledger:
    """Per-contact times, filled from the topics (``observe``) and by the publisher."""

    contacts: dict[str, ContactTimes] = field(default_factory=dict)
    other_decisions: int = 0  # decisions for contacts this run did not publish
    redirects: int = 0  # offers that lapsed or were declined (the contact was offered again)
    other_dead_letters: int = 0  # dead letters whose key is no contact (malformed records)

    escalations: list[str] = field(default_factory=list)  # contact ids, for the customers

    def published(self, contact_id: str, ts_ms: int) -> None:
        self.contacts[contact_id] = ContactTimes(arrived_ms=ts_ms)

    def observe(self, event: object, seen_ms: int) -> None:
        if isinstance(event, BotReplied):
            c = self.contacts.get(event.contact_id)
            if c is not None and not c.bot_ms:
                c.bot_ms, c.bot_seen_ms, c.bot_action = event.ts_ms, seen_ms, event.action.value
                if event.action == BotAction.ESCALATED and not c.escalated_ms:
                    c.escalated_ms = event.ts_ms
                    self.escalations.append(event.contact_id)
        elif isinstance(event, ContactWaitUpdated):
            c = self.contacts.get(event.contact_id)
            if c is not None and not c.told_ms:
                c.told_ms, c.told_position = event.ts_ms, event.position
                c.told_estimate_s = (event.estimated_wait_ms / 1000 if event.estimated_wait_ms
                                     else float(event.estimated_wait_s))
                c.told_lane = f"{event.domain}/{event.lane}"
        elif isinstance(event, RoutingDecision):
            c = self.contacts.get(event.contact_id)
            if c is None:
                self.other_decisions += 1
                return
            self._decision(c, event)

    def _decision(self, c: ContactTimes, d: RoutingDecision) -> None:
        if d.queue:
            c.queue = d.queue
        if d.decision == Decision.QUEUED and not c.queued_ms:
            c.queued_ms = d.ts_ms
        elif d.decision == Decision.OFFERED and not c.offered_ms:
            c.offered_ms = d.ts_ms
        elif d.decision == Decision.ACCEPTED and not c.answered_ms:
            c.answered_ms, c.agent_id = d.ts_ms, d.agent_id or ""
            c.waited_ms, c.within_target = d.waited_ms, d.within_target
            c.escalated_ms = d.ts_ms - d.waited_ms
        elif d.decision == Decision.ABANDONED and not c.abandoned_ms:
            c.abandoned_ms, c.abandon_waited_ms = d.ts_ms, d.waited_ms
            if not c.escalated_ms:
                c.escalated_ms = d.ts_ms - d.waited_ms
        elif d.decision == Decision.COMPLETED:
            c.completed_ms = d.ts_ms
        elif d.decision in {Decision.EXPIRED, Decision.DECLINED}:
            self.redirects += 1

    def dead_letter(self, letter: DeadLetter) -> None:
        key = base64.b64decode(letter.key_b64).decode("utf-8", "replace") if letter.key_b64 else ""
        c = self.contacts.get(key)
        if c is not None:
            c.deadlettered = True
        else:
            self.other_dead_letters += 1

    def open_count(self) -> int:
        return sum(not c.done for c in self.contacts.values())


class Recorder:
    """Reads the router's outputs from the end into a ledger (no consumer group)."""

    def __init__(self, settings: Settings, ledger: Ledger,
                 roles: Iterable[str] = ("bot_replies", "routing_decisions", "deadletter")
                 ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.topics = [settings.topics[r] for r in roles]
        self._consumer = consumer(settings, group_id=None)
        self._task: asyncio.Task[None] | None = None
        self._decoder = Decoder()
        self.records = 0

    async def start(self) -> None:
        await self._consumer.start()
        await assign_all(self._consumer, self.topics, from_end=True)
        self._task = asyncio.create_task(self._read(), name="recorder")

    async def _read(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=100, max_records=20_000)
            seen = now_ms()
            for records in batches.values():
                for rec in records:
                    self.records += 1
                    event = self._decoder.decode(rec.value)
                    if isinstance(event, DeadLetter):
                        self.ledger.dead_letter(event)
                    else:
                        self.ledger.observe(event, seen)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()


class BrokerProbe:
    """The broker's own latency through a run, beside the router's: a record every
    ``every_s`` to a topic of its own (one partition, produced as the router's producers do),
    read back from its end by a consumer with the router's fetch wait; ``samples`` holds
    (sent ms, sent-to-read ms) each. A control: the same broker and machine, no router."""

    TOPIC = "peakroute.load.broker-probe"

    def __init__(self, settings: Settings, every_s: float = 0.1) -> None:
        self.settings = settings
        self.every_s = every_s
        self.samples: list[tuple[int, int]] = []
        self._producer = producer(settings)
        self._consumer = consumer(settings, group_id=None)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        admin = AIOKafkaAdminClient(**client_kwargs(self.settings))
        await admin.start()
        try:
            with contextlib.suppress(Exception):  # it may exist (a kept stack)
                await admin.create_topics([NewTopic(self.TOPIC, 1, 1)])
        finally:
            await admin.close()
        await self._producer.start()
        await self._consumer.start()
        await assign_all(self._consumer, [self.TOPIC], from_end=True)
        self._tasks = [asyncio.create_task(self._send(), name="probe-send"),
                       asyncio.create_task(self._read(), name="probe-read")]

    async def _send(self) -> None:
        while True:
            await self._producer.send(self.TOPIC, str(now_ms()).encode())
            await asyncio.sleep(self.every_s)

    async def _read(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=100)
            seen = now_ms()
            for records in batches.values():
                for rec in records:
                    sent = int(rec.value or b"0")
                    self.samples.append((sent, seen - sent))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._producer.stop()
        await self._consumer.stop()


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by the nearest-rank method; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return float(ordered[rank - 1])


def quantiles(values: Sequence[float], digits: int = 1) -> dict[str, float]:
    return {"p50": round(percentile(values, 0.50), digits),
            "p90": round(percentile(values, 0.90), digits),
            "p99": round(percentile(values, 0.99), digits),
            "max": round(max(values, default=0.0), digits),
            "count": len(values)}


async def wait_agents_known(settings: Settings, domain: str, agents: int,
                            timeout_s: float = 30.0) -> None:
    """Until the routing stage has seen ``agents`` logins in ``domain``."""
    from router.redis_client import redis_client
    from router.routing import state

    client = redis_client(settings)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            known = len(await state.seated_agents(client, domain))
            if known >= agents:
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"the router saw fewer than {agents} agents log in within "
                           f"{timeout_s:.0f} s")
    finally:
        await client.aclose()
