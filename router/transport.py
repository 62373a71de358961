"""The worker's Kafka transport: the stages' topics consumed in batches, outputs produced, offsets
committed after delivery. Plain aiokafka, nothing per record but the record itself.

One consumer in the router's group (``Settings.app_id``) reads the stages' input topics with
``getmany``; each poll's records are split by topic and handed to that topic's stage as one
batch; the stages of one poll run concurrently (their Redis round trips overlap), and the
poll's offsets are committed once every output of it is acknowledged by the broker
(at-least-once: a crash re-delivers the uncommitted batch, and the stages are idempotent).
A batch never raises out of the loop: transient Redis and Kafka errors are retried until they
pass, and a record a script refuses is dead-lettered by its stage.

This is the lean runtime (``PEAKROUTE_RUNTIME=lean``); router/faust_app.py runs the same stages
as faust-streaming agents. faust turns every record into an event with its own future and ack,
and that per-record path cost ~30-40 % of the worker's CPU at a few hundred contacts/s
(docs/REHEARSAL.md); here a poll of 2,000 records is one list. Both runtimes run every batch
through ``deliver``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from router import kafka, logs, metrics, transient
from router.settings import Settings
from router.stage import Output, Record
from router.watchdog import REJOIN_STOP_S, OffsetProbe, StallWatchdog, grace_s

log = logs.get("transport")
RETRY_MAX_S = 5.0

Handler = Callable[[Sequence[Record]], Awaitable[list[Output]]]
Delivered = Callable[[Sequence[Output]], None]
Produce = Callable[[Sequence[Output]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Route:
    """What consumes one input topic: the stage's name (a metrics label), its batch handler,
    and what it does once Kafka has a batch's outputs (the outbox's deletes)."""

    stage: str
    handle: Handler
    delivered: Delivered | None = None


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, transport: Transport, consumer: AIOKafkaConsumer) -> None:
        self.transport = transport
        self.consumer = consumer  # a consumer the watchdog replaced no longer speaks for it

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if self.consumer is self.transport.consumer:
            await self.transport.revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if self.consumer is self.transport.consumer:
            self.transport.assigned(assigned)


class Transport:
    """Consume, hand to the stages, produce, commit: the router worker's only Kafka path."""

    def __init__(self, settings: Settings, routes: dict[str, Route]) -> None:
        self.settings = settings
        self.routes = routes  # topic name -> route
        self._keys = kafka.KeyHashes()  # the outputs' partitions (send_batches places them)
        self.producer: AIOKafkaProducer = kafka.producer(settings)
        self.consumer: AIOKafkaConsumer = self._new_consumer()
        self.rebalancing = True  # until the group hands this worker its first partitions
        self._batch = asyncio.Lock()  # held while a poll is handled, produced and committed
        self._next: dict[TopicPartition, int] = {}  # next offset to process, per partition
        self._uncommitted: dict[TopicPartition, int] = {}  # delivered, commit not yet sent
        self._committer: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        # The stall watchdog (router/watchdog.py): rejoins when the group leaves this worker
        # without partitions while records wait; the rejoin itself runs in the poll loop.
        self._probe = OffsetProbe(settings, list(routes))
        self.watchdog = StallWatchdog(grace_s(settings), self._owned, self._probe,
                                      self._request_rejoin)
        self._rejoin_requested = False
        self._wake = asyncio.Event()  # a rejoin or a stop cuts a poll that waits on a rebalance
        self._woken: asyncio.Future[Any] | None = None  # waits on _wake across polls

    async def start(self) -> None:
        await self.producer.start()
        await self.consumer.start()
        self.consumer.subscribe(list(self.routes), listener=_Listener(self, self.consumer))

    # -- the group ------------------------------------------------------------------------

    async def revoked(self, revoked: set[TopicPartition]) -> None:
        """Before partitions move: let the batch in hand finish and commit (it holds the lock),
        so the next owner starts where this worker stopped."""
        self.rebalancing = True
        async with self._batch:
            await self._commits_done()
            for tp in revoked:
                self._next.pop(tp, None)

    def assigned(self, assigned: set[TopicPartition]) -> None:
        self.rebalancing = False
        log.info("partitions_assigned", extra=logs.fields(partitions=len(assigned)))

    def ready(self) -> bool:
        """Owns partitions and no rebalance is under way."""
        return bool(self.consumer.assignment()) and not self.rebalancing

    def lag(self) -> dict[str, int]:
        """Per input topic, records in this worker's partitions not yet processed: the log end
        offset from the last fetch minus the next offset to process. A partition counts once
        this worker has polled a record of it since it was assigned (so a worker stuck on its
        first batch shows its backlog); an idle one has nothing to count."""
        lag: dict[str, int] = {}
        for tp in self.consumer.assignment():
            position = self._next.get(tp)
            end = self.consumer.highwater(tp)
            if position is None or end is None:
                continue
            lag[tp.topic] = lag.get(tp.topic, 0) + max(int(end) - position, 0)
        return lag

    # -- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll and handle until ``stop``; what arrives within ``batch_within_s`` is one poll."""
        within_ms = max(int(self.settings.batch_within_s * 1000), 1)
        watching = asyncio.create_task(self._watch(), name="stall-watchdog")
        try:
            while not self._stopping.is_set():
                if self._rejoin_requested:
                    await self._rejoin()
                polled = await self._poll(within_ms)
                if polled:
                    async with self._batch:
                        await self._handle(polled)
        finally:
            watching.cancel()
            if self._woken is not None:
                self._woken.cancel()
            self._stopped.set()

    # -- the stall watchdog ---------------------------------------------------------------

    async def _poll(self, within_ms: int) -> dict[TopicPartition, list[Any]]:
        """``getmany``, which a rejoin request or a stop can cut: while a rebalance is under way
        aiokafka's getmany waits for the new assignment whatever its timeout, possibly for ever
        (a group that never forms)."""
        getting = asyncio.ensure_future(self.consumer.getmany(
            timeout_ms=within_ms, max_records=self.settings.batch_max))
        if self._woken is None or self._woken.done():
            self._woken = asyncio.ensure_future(self._wake.wait())
        await asyncio.wait({getting, self._woken}, return_when=asyncio.FIRST_COMPLETED)
        if getting.done():
            result: dict[TopicPartition, list[Any]] = getting.result()
            return result
        getting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await getting
        return {}

    def _owned(self) -> int:
        """Partitions this worker consumes now (none while a rebalance is under way)."""
        return 0 if self.rebalancing else len(self.consumer.assignment())

    async def _watch(self) -> None:
        while not self._stopping.is_set():
            await asyncio.sleep(self.watchdog.interval_s)
            try:
                await self.watchdog.check()
            except Exception:  # the watchdog must outlive whatever one look met
                log.exception("stall_check_failed")

    async def _request_rejoin(self) -> None:
        self._rejoin_requested = True
        self._wake.set()

    def _new_consumer(self) -> AIOKafkaConsumer:
        """The worker's consumer in the router's group (at start, and again on a rejoin)."""
        settings = self.settings
        return kafka.consumer(
            settings,
            group_id=settings.app_id,
            auto_offset_reset="earliest",
            max_poll_records=settings.batch_max,
            session_timeout_ms=int(settings.kafka_session_timeout_s * 1000),
            rebalance_timeout_ms=int(settings.kafka_rebalance_timeout_s * 1000),
            heartbeat_interval_ms=int(min(3.0, settings.kafka_session_timeout_s / 3) * 1000),
        )

    async def _rejoin(self) -> None:
        """Join the group again as a new member, on a new consumer: new connections, a new
        member id, none of the old one's coordination state. Runs between polls, so no batch is
        in hand (and this worker owns no partitions). The old consumer is stopped first, as on a
        clean stop; if it cannot stop within REJOIN_STOP_S it is abandoned, and the group drops
        it at the session timeout."""
        self._rejoin_requested = False
        self._wake.clear()
        old, self.consumer = self.consumer, self._new_consumer()
        self.rebalancing = True  # until the new member's first assignment
        self._next.clear()
        try:
            await asyncio.wait_for(self._stop_consumer(old), REJOIN_STOP_S)
        except (TimeoutError, KafkaError, OSError) as exc:
            log.warning("rejoin_old_consumer_abandoned", extra=logs.fields(
                error=type(exc).__name__))
        try:
            await self.consumer.start()
        except (KafkaError, OSError) as exc:  # the broker is away: try again next poll
            log.warning("rejoin_failed", extra=logs.fields(error=type(exc).__name__))
            self.consumer = self._new_consumer()
            self._rejoin_requested = True
            await asyncio.sleep(RETRY_MAX_S)
            return
        self.consumer.subscribe(list(self.routes), listener=_Listener(self, self.consumer))

    async def _stop_consumer(self, consumer: AIOKafkaConsumer) -> None:
        """Stop a consumer of the group; without LeaveGroup when kafka_leave_group_on_stop is
        off (the embedded broker, docs/ARCHITECTURE.md "Embedded stack"): aiokafka sends one
        only from a generation above 0, so the consumer stops from none, and the group drops
        the member at its session timeout as it does for a crashed worker."""
        if not self.settings.kafka_leave_group_on_stop and consumer._coordinator is not None:
            consumer._coordinator.generation = -1  # OffsetCommitRequest.DEFAULT_GENERATION_ID
        await consumer.stop()

    async def _handle(self, polled: dict[TopicPartition, list[Any]]) -> None:
        by_topic: dict[str, list[Record]] = {}
        offsets: dict[TopicPartition, int] = {}
        for tp, messages in polled.items():
            records = by_topic.setdefault(tp.topic, [])
            for m in messages:
                records.append(Record(m.topic, m.partition, m.offset, m.key, m.value))
            offsets[tp] = messages[-1].offset + 1
            # The records in hand still count as lag, also while a batch waits on Redis.
            self._next[tp] = messages[0].offset
        await asyncio.gather(*(self.run_batch(self.routes[topic].stage,
                                              self.routes[topic].handle, records,
                                              self.routes[topic].delivered)
                               for topic, records in by_topic.items()))
        self._next.update(offsets)
        self._commit_soon(offsets)

    def _commit_soon(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit delivered offsets in the background: the next poll need not wait for the
        commit's round trip. One commit at a time, the latest offsets merged into the next;
        a rebalance and a stop wait for them (``_commits_done``)."""
        self._uncommitted.update(offsets)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_pending(), name="commit")

    async def _commit_pending(self) -> None:
        while self._uncommitted:
            offsets, self._uncommitted = self._uncommitted, {}
            await self._commit(offsets)

    async def _commits_done(self) -> None:
        if self._committer is not None:
            await self._committer

    async def run_batch(self, stage: str, handle: Handler, records: Sequence[Record],
                        delivered: Delivered | None = None) -> None:
        """One batch through ``deliver`` on this transport's producer."""
        await deliver(stage, handle, records, self.produce, delivered)

    async def produce(self, outputs: Sequence[Output]) -> None:
        """Send every output at once (router.kafka.send_batches) and wait until the broker has
        them all (acks=all)."""
        topics = self.settings.topics
        futures = await kafka.send_batches(
            self.producer, self._keys,
            ((topics[out.role], out.key.encode(), out.value()) for out in outputs))
        if futures:
            await asyncio.gather(*futures)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit what this worker still owns. A commit the group refuses (the partitions moved
        on) is fine: the new owner re-reads those records and the stages skip duplicates."""
        owned = self.consumer.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in owned}
        delay = 0.1
        while offsets:
            try:
                await self.consumer.commit(offsets)
                return
            except (CommitFailedError, IllegalStateError) as exc:
                log.info("commit_skipped", extra=logs.fields(error=type(exc).__name__))
                return
            except KafkaError as exc:
                if self._stopping.is_set() and delay > RETRY_MAX_S / 2:
                    log.warning("commit_abandoned", extra=logs.fields(error=type(exc).__name__))
                    return
                log.warning("commit_retried", extra=logs.fields(error=type(exc).__name__,
                                                                 retry_in_s=delay))
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def finish(self, timeout_s: float) -> None:
        """Stop polling; let the batch in hand finish and its commit go out, within
        ``timeout_s`` (a batch not finished by then is not committed: it is re-delivered)."""
        self._stopping.set()
        self._wake.set()

        async def finished() -> None:
            await self._stopped.wait()
            await self._commits_done()
        try:
            await asyncio.wait_for(finished(), timeout_s)
        except TimeoutError:
            log.warning("batch_unfinished_at_stop")

    async def close(self) -> None:
        """Leave the group (LeaveGroup: the partitions move at once; unless
        kafka_leave_group_on_stop is off), flush the producer."""
        await self._stop_consumer(self.consumer)
        await self._probe.close()
        await self.producer.stop()


async def deliver(stage: str, handle: Handler, records: Sequence[Record], produce: Produce,
                  delivered: Delivered | None = None) -> None:
    """Handle and produce one batch, then tell the stage its outputs are in Kafka (the outbox's
    deletes); both runtimes run every batch and timer step through here. Dependency failures
    (router/transient.py: Redis refusing or unreachable, Kafka errors) are retried until they
    pass, with capped backoff, the handler's outputs kept (the stages are idempotent anyway).
    Anything else is a bug and propagates: the caller must then not commit the batch."""
    started = time.perf_counter()
    delay = 0.1
    outputs: list[Output] | None = None
    while True:
        try:
            if outputs is None:
                outputs = await handle(records)
            await produce(outputs)
            if delivered is not None:
                delivered(outputs)
            break
        except Exception as exc:
            kind = transient.count(exc)
            if kind is None:
                raise
            log.warning("batch_retried", extra=logs.fields(
                stage=stage, records=len(records), kind=kind.value,
                error=type(exc).__name__, retry_in_s=delay))
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
    metrics.BATCH_SIZE.labels(stage).observe(len(records))
    metrics.BATCH_SECONDS.labels(stage).observe(time.perf_counter() - started)
