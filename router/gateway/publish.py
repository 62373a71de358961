"""Kafka out: desktop actions as agents.events records, each checked against the event
contract first (as the router will), so the gateway never publishes what would be dead-lettered."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from router.decode import Decoder, Limits, Rejection
from router.events import Event
from router.gateway import metrics as gm
from router.gateway.protocol import ErrorCode
from router.gateway.session import Session, refuse
from router.kafka import producer
from router.settings import Settings


class Publisher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.decoder = Decoder(Limits(settings.max_record_bytes, settings.max_text_chars))
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        # Every desktop action is one small record keyed by its domain: big batches let a burst
        # of them share a round trip to the partition leader.
        self._producer = producer(self.settings, linger_ms=2, max_batch_size=262_144)
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def publish(self, event: Event, session: Session | None = None,
                      ref: str | None = None) -> bool:
        """Check the event against the contract and publish it; False (and the frame refused)
        if the contract refuses it."""
        checked = self.decoder.decode(event.to_json(), "agents_events")
        if isinstance(checked, Rejection):
            if session is not None:
                refuse(session, ErrorCode.INVALID_FIELD,
                       f"{checked.detail} ({checked.reason.value})", ref)
            return False
        assert self._producer is not None
        domain = getattr(event, "domain", "")
        await self._producer.send_and_wait(self.settings.topic_agents_events, event.to_json(),
                                           key=domain.encode())
        gm.PUBLISHED.labels(event.TYPE).inc()
        return True
