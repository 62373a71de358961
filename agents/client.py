"""Agent-desktop client over Kafka, for small sites that let desktops talk to Kafka directly.

One :class:`AgentBus` per process holds the Kafka connections: it publishes to agents.events
(keyed by routing domain, like every routing-stage topic) and reads assignments from the end,
handing each agent's offers and rescinds to that agent's :class:`AgentDesktop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter, OrderedDict
from collections.abc import Mapping

from router import logs
from router.decode import Decoder, Rejection
from router.events import (
    AgentLoggedIn,
    AgentLoggedOut,
    AgentState,
    AgentStateChanged,
    AssignmentOffered,
    AssignmentRescinded,
    ContactCompleted,
    Event,
    OfferAccepted,
    OfferDeclined,
)
from router.kafka import assign_all, consumer, producer
from router.settings import Settings
from router.stage import now_ms

log = logs.get("agents")
Notice = AssignmentOffered | AssignmentRescinded
SEEN_IDS = 100_000  # assignment event ids remembered: the router may send a record again


def new_event_id() -> str:
    return uuid.uuid4().hex


class AgentBus:
    """Kafka side of the agent desktops in this process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer = producer(settings)
        self._consumer = consumer(settings, group_id=None, auto_offset_reset="latest")
        self._desktops: dict[str, AgentDesktop] = {}
        self._reader: asyncio.Task[None] | None = None
        self._decoder = Decoder()
        self.ignored = 0  # assignment records this bus could not read
        self.dropped: Counter[str] = Counter()  # records dropped, by reason
        self._seen: OrderedDict[str, None] = OrderedDict()

    async def start(self) -> None:
        await self._producer.start()
        await self._consumer.start()
        # From the end, resolved now: before any agent logs in, so no offer is missed.
        await assign_all(self._consumer, [self.settings.topic_assignments], from_end=True)
        self._reader = asyncio.create_task(self._read(), name="agent-bus-reader")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._consumer.stop()
        await self._producer.stop()

    def desktop(self, agent_id: str, domain: str) -> AgentDesktop:
        desk = AgentDesktop(self, agent_id, domain)
        self._desktops[agent_id] = desk
        return desk

    async def publish(self, event: Event, domain: str) -> None:
        await self._producer.send(self.settings.topic_agents_events, event.to_json(),
                                  key=domain.encode())

    async def flush(self) -> None:
        await self._producer.flush()

    async def _read(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batches.values():
                for rec in records:
                    notice = self._decoder.decode(rec.value)
                    if isinstance(notice, Rejection):
                        self._drop(notice.reason.value, rec.partition, rec.offset)
                        continue
                    if not isinstance(notice, Notice):
                        self.ignored += 1  # another record type on the topic: not ours
                        continue
                    if notice.event_id in self._seen:  # the router sent it again (outbox)
                        self._drop("duplicate", rec.partition, rec.offset)
                        continue
                    self._seen[notice.event_id] = None
                    if len(self._seen) > SEEN_IDS:
                        self._seen.popitem(last=False)
                    desk = self._desktops.get(notice.agent_id)
                    if desk is not None:
                        desk.deliver(notice)

    async def caught_up(self, timeout_s: float = 10.0) -> bool:
        """Wait until every assignment published before this call has been read and handed to
        its desktop; False if that took longer than ``timeout_s``."""
        tps = sorted(self._consumer.assignment())
        ends = await self._consumer.end_offsets(tps)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while any([await self._consumer.position(tp) < ends[tp] for tp in tps]):
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def _drop(self, reason: str, partition: int, offset: int) -> None:
        """Count (and log the first of each reason, then every 1000th) what is not delivered."""
        self.ignored += reason != "duplicate"
        self.dropped[reason] += 1
        if self.dropped[reason] % 1000 == 1:
            log.warning("assignment_dropped", extra=logs.fields(
                reason=reason, partition=partition, offset=offset, count=self.dropped[reason]))


class AgentDesktop:
    """What one agent does: log in with skills and capacity, take offers, finish contacts."""

    def __init__(self, bus: AgentBus, agent_id: str, domain: str) -> None:
        self.bus = bus
        self.agent_id = agent_id
        self.domain = domain
        self.inbox: asyncio.Queue[Notice] = asyncio.Queue()
        # (offer_id, contact_id) of every offer that reached this desktop: load tests tell an
        # offer the agent saw from one that never arrived.
        self.offers_received: set[tuple[str, str]] = set()

    def deliver(self, notice: Notice) -> None:
        """A notice for this agent (from the bus's reader): remembered if it is an offer, then
        queued in the inbox."""
        if isinstance(notice, AssignmentOffered):
            self.offers_received.add((notice.offer_id, notice.contact_id))
        self.inbox.put_nowait(notice)

    async def _send(self, event: Event) -> None:
        await self.bus.publish(event, self.domain)

    async def login(self, skills: Mapping[str, int], capacity: Mapping[str, int],
                    ready: bool = True) -> None:
        await self._send(AgentLoggedIn(
            event_id=new_event_id(), ts_ms=now_ms(), agent_id=self.agent_id,
            domain=self.domain, skills=dict(skills), capacity=dict(capacity), ready=ready))

    async def set_state(self, state: AgentState, reason: str = "") -> None:
        await self._send(AgentStateChanged(
            event_id=new_event_id(), ts_ms=now_ms(), agent_id=self.agent_id,
            domain=self.domain, state=state, reason=reason))

    async def accept(self, offer: AssignmentOffered) -> None:
        await self._send(OfferAccepted(
            event_id=new_event_id(), ts_ms=now_ms(), agent_id=self.agent_id,
            domain=self.domain, offer_id=offer.offer_id, contact_id=offer.contact_id))

    async def decline(self, offer: AssignmentOffered, reason: str = "") -> None:
        await self._send(OfferDeclined(
            event_id=new_event_id(), ts_ms=now_ms(), agent_id=self.agent_id,
            domain=self.domain, offer_id=offer.offer_id, contact_id=offer.contact_id,
            reason=reason))

    async def complete(self, contact_id: str, wrap_up: str = "") -> None:
        await self._send(ContactCompleted(
            event_id=new_event_id(), ts_ms=now_ms(), agent_id=self.agent_id,
            domain=self.domain, contact_id=contact_id, wrap_up=wrap_up))

    async def logout(self) -> None:
        await self._send(AgentLoggedOut(
            event_id=new_event_id(), ts_ms=now_ms(), agent_id=self.agent_id, domain=self.domain))
