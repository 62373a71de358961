"""What both stages share: input records, output records, dead-lettering and derived ids."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from router import metrics
from router.decode import Decoder, Rejection, dead_letter
from router.events import Event


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed Kafka record, as the stages see it (no Kafka client types)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Output:
    """One record to produce: a logical topic role (see Settings.topics), a key and an event;
    ``outbox``: the (domain, entry id) of the outbox entry it came from, deleted once Kafka
    has every record of the batch (router/routing/state.py); ``raw``: the event's JSON if
    the stage serialised it already (``value``)."""

    role: str
    key: str
    event: Event
    outbox: tuple[str, str] | None = None
    raw: bytes | None = field(default=None, compare=False, repr=False)  # the JSON, if made

    def value(self) -> bytes:
        """The record's value: the event's JSON."""
        return self.raw if self.raw is not None else self.event.to_json()


def outbox_entries(outputs: Iterable[Output]) -> set[tuple[str, str]]:
    return {o.outbox for o in outputs if o.outbox is not None}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def derived_id(source_id: str, tag: str) -> str:
    """A stable id for an event derived from another: re-processing yields the same id."""
    return hashlib.blake2b(f"{source_id}/{tag}".encode(), digest_size=10).hexdigest()


def to_deadletter(rec: Record, rejection: Rejection, now: int) -> Output:
    metrics.DEADLETTERS.labels(rec.topic, rejection.reason.value).inc()
    letter = dead_letter(rec.value, rec.key, rejection, topic=rec.topic,
                         partition=rec.partition, offset=rec.offset, now_ms=now)
    return Output("deadletter", rec.key.decode("utf-8", "replace") if rec.key else "", letter)


def decode_batch(
    decoder: Decoder, role: str, records: Iterable[Record], stage: str, clock: Callable[[], int]
) -> tuple[list[tuple[Record, Event]], list[Output]]:
    """Decode a batch: valid events (with their records) in order, deadletters for the rest."""
    events: list[tuple[Record, Event]] = []
    dead: list[Output] = []
    for rec in records:
        result = decoder.decode(rec.value, role)
        if isinstance(result, Rejection):
            dead.append(to_deadletter(rec, result, clock()))
        else:
            metrics.EVENTS.labels(stage, result.TYPE).inc()
            events.append((rec, result))
    return events, dead
