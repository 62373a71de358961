"""A simulated chat gateway: publishes contacts (Poisson arrivals, the question mix), reads bot
replies back, and lets customers who wait too long for a person leave."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaProducer

from load_tests.questions import questions
from router.bot.kb import resolve_kb_path
from router.decode import Decoder
from router.events import (
    BotAction,
    BotReplied,
    ContactArrived,
    CustomerLeft,
    DeadLetter,
    Language,
    Tier,
)
from router.kafka import assign_all, consumer, producer
from router.settings import Settings
from router.stage import now_ms

TICK_S = 0.01
# Records a broken client might send: each must end in the deadletter topic, never crash.
MALFORMED: tuple[bytes, ...] = (
    b'{"type": "contact.arrived.v1", "event_id": "x"',
    b"\xff\xfe not utf-8",
    b'{"type": "contact.arrived.v2", "event_id": "e", "ts_ms": 1}',
    b'{"type": "contact.arrived.v1", "event_id": "e1", "ts_ms": "yesterday", '
    b'"contact_id": "c", "domain": "d", "customer_id": "u"}',
    b"[1, 2, 3]",
)


@dataclass
class GatewayStats:
    published: int = 0
    malformed: int = 0
    malformed_keys: list[str] = field(default_factory=list)  # keys of the malformed records sent
    escalated_seen: int = 0
    deadlettered: int = 0  # our records the router rejected (read back from the deadletter topic)
    left: int = 0
    reply_latencies_ms: list[float] = field(default_factory=list)


class SimulatedGateway:
    def __init__(self, settings: Settings, *, rate: float, domain: str = "shop-1",
                 patience_s: float = 45.0, bad_ratio: float = 0.005, vip_ratio: float = 0.05,
                 seed: int = 3) -> None:
        self.settings = settings
        self.rate = rate
        self.domain = domain
        self.patience_s = patience_s
        self.bad_ratio = bad_ratio
        self.vip_ratio = vip_ratio
        self.rng = random.Random(seed)
        self.stats = GatewayStats()
        self._producer: AIOKafkaProducer = producer(settings)
        self._replies = consumer(settings, group_id=None)
        self._sent_at: dict[str, float] = {}
        self._deadlettered: set[tuple[int, int]] = set()
        self._leaving: set[asyncio.Task[None]] = set()
        self._reader: asyncio.Task[None] | None = None
        mix = questions(resolve_kb_path(settings.bot_kb_path))  # the worker's knowledge base
        self._questions = [(Language(lang), text) for lang, text, _ in mix]
        self._weights = [w for _, _, w in mix]
        self._decoder = Decoder()
        self.run_id = uuid.uuid4().hex[:6]
        self.published_at: list[float] = []  # time.monotonic() of each record, by number

    async def start(self) -> None:
        await self._producer.start()
        await self._replies.start()
        await assign_all(self._replies,
                         [self.settings.topic_bot_replies, self.settings.topic_deadletter],
                         from_end=True)
        self._reader = asyncio.create_task(self._read_replies())

    async def run(self, duration_s: float, until: asyncio.Event | None = None) -> None:
        """Publish contacts at ``rate`` per second (Poisson) for ``duration_s`` seconds, and
        past that until ``until`` is set (when given)."""
        start = time.monotonic()
        next_at = start + self.rng.expovariate(self.rate)
        n = 0
        while ((now := time.monotonic()) < start + duration_s
               or (until is not None and not until.is_set())):
            while next_at <= now:
                await self._publish_one(n)
                n += 1
                next_at += self.rng.expovariate(self.rate)
            await asyncio.sleep(TICK_S)

    async def _publish_one(self, n: int) -> None:
        topic = self.settings.topic_contacts_inbound
        self.published_at.append(time.monotonic())
        if self.rng.random() < self.bad_ratio:
            value = MALFORMED[self.stats.malformed % len(MALFORMED)]
            self.stats.malformed += 1
            self.stats.malformed_keys.append(f"bad-{n}")
            self.stats.published += 1
            await self._producer.send(topic, value, key=f"bad-{n}".encode())
            return
        language, text = self.rng.choices(self._questions, self._weights)[0]
        contact_id = f"{self.domain}-{self.run_id}-{n:07d}"
        event = ContactArrived(
            event_id=uuid.uuid4().hex, ts_ms=now_ms(), contact_id=contact_id,
            domain=self.domain, customer_id=f"cust-{self.rng.randrange(10**7)}",
            language=language, text=text,
            tier=Tier.VIP if self.rng.random() < self.vip_ratio else Tier.NORMAL,
        )
        self._sent_at[contact_id] = time.monotonic()
        self.stats.published += 1
        await self._producer.send(topic, event.to_json(), key=contact_id.encode())

    async def _read_replies(self) -> None:
        while True:
            batches = await self._replies.getmany(timeout_ms=200, max_records=5000)
            now = time.monotonic()
            for records in batches.values():
                for rec in records:
                    reply = self._decoder.decode(rec.value)
                    if isinstance(reply, DeadLetter):
                        # A record re-delivered after a worker died is dead-lettered again:
                        # count each source record once.
                        position = (reply.source_partition, reply.source_offset)
                        if (reply.source_topic == self.settings.topic_contacts_inbound
                                and position not in self._deadlettered):
                            self._deadlettered.add(position)
                            self.stats.deadlettered += 1
                        continue
                    if not isinstance(reply, BotReplied):
                        continue
                    sent = self._sent_at.pop(reply.contact_id, None)
                    if sent is None:
                        continue
                    self.stats.reply_latencies_ms.append((now - sent) * 1000)
                    if reply.action == BotAction.ESCALATED:
                        self.stats.escalated_seen += 1
                        self._leave_later(reply.contact_id)

    def _leave_later(self, contact_id: str) -> None:
        """The customer leaves after their patience runs out (the router ignores the notice
        if an agent already answered)."""
        async def leave() -> None:
            await asyncio.sleep(self.rng.expovariate(1 / self.patience_s))
            event = CustomerLeft(event_id=uuid.uuid4().hex, ts_ms=now_ms(),
                                 contact_id=contact_id, domain=self.domain)
            await self._producer.send(self.settings.topic_contacts_inbound, event.to_json(),
                                      key=contact_id.encode())
            self.stats.left += 1

        task = asyncio.create_task(leave())
        self._leaving.add(task)
        task.add_done_callback(self._leaving.discard)

    async def stop(self) -> None:
        # The reader first: until it stops it may schedule more departures.
        for tasks in ([self._reader] if self._reader else [], self._leaving):
            for task in list(tasks):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._producer.flush()
        await self._replies.stop()
        await self._producer.stop()

    async def flush(self) -> None:
        await self._producer.flush()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def dumps(obj: object) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2)
