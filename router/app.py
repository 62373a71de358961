"""The faust app: both stages wired to their topics, in batches. Thin: the stages hold the logic.

Each agent takes up to ``batch_max`` records (or what arrived within ``batch_within_s``), hands
them to its stage as plain records, and produces the outputs with the underlying producer,
awaiting delivery before faust acks (commits) the batch. A batch never raises out of the loop:
faust acks a batch even when its body fails, so transient Redis or Kafka errors are retried
here until they pass, and a record that a script refuses is dead-lettered by the stage.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import faust
import redis.asyncio as aioredis
from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from router import logs, metrics
from router.bot.conversation import ConversationStore
from router.bot.loader import BrainHolder
from router.bot.stage import BotStage
from router.decode import Decoder, Limits
from router.kafka import DEADLETTER_MAX_MESSAGE_BYTES
from router.kafka import ssl_context as kafka_ssl_context
from router.redis_client import redis_client
from router.routing.config import policy_from_settings
from router.routing.stage import RoutingStage
from router.routing.store import RoutingStore
from router.settings import Settings
from router.sla.export import SlaExporter
from router.stage import Output, Record

log = logs.get("app")
RETRY_MAX_S = 5.0
TRANSIENT = (RedisConnectionError, RedisTimeoutError, KafkaError, OSError, asyncio.TimeoutError)


def broker_credentials(settings: Settings) -> Any:
    context = kafka_ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username, password=settings.kafka_sasl_password,
            mechanism=settings.kafka_sasl_mechanism or "PLAIN", ssl_context=context,
        )
    return faust.SSLCredentials(context) if context is not None else None


class Runtime:
    """Per-process resources, created on first use inside the worker's event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policy = policy_from_settings(settings)  # fail at start on a bad policy file
        self.brains = BrainHolder(settings)
        self.brains.load()  # fail at start on a bad knowledge base; trains a new one's model
        self._redis: aioredis.Redis | None = None
        self._bot: BotStage | None = None
        self._routing: RoutingStage | None = None
        self._exporter: SlaExporter | None = None

    def _store(self) -> RoutingStore:
        if self._redis is None:
            self._redis = redis_client(self.settings, socket_timeout=10,
                                       health_check_interval=30)
        return RoutingStore(self._redis, self.settings, self.policy)

    def decoder(self) -> Decoder:
        return Decoder(Limits(self.settings.max_record_bytes, self.settings.max_text_chars))

    @property
    def bot(self) -> BotStage:
        if self._bot is None:
            store = self._store()
            conversations = ConversationStore(store.redis, self.settings.bot_conversation_ttl_s)
            self._bot = BotStage(store, conversations, self.brains, self.decoder(),
                                 self.settings)
        return self._bot

    @property
    def exporter(self) -> SlaExporter:
        """The SLA figures' exporter (router/sla/export.py), on this process's Redis client."""
        if self._exporter is None:
            self._exporter = SlaExporter(self._store().redis, self.settings)
        return self._exporter

    @property
    def routing(self) -> RoutingStage:
        if self._routing is None:
            self._routing = RoutingStage(self._store(), self.decoder())
        return self._routing


def _use_fetch_max_wait(app: faust.App, fetch_max_wait_ms: int) -> None:
    """faust hard-codes the consumer's fetch_max_wait_ms (1500). Brokers that do not answer a
    long-poll fetch as soon as data arrives (the embedded Tansu) then add up to that much
    latency per hop, so the worker takes the value from settings instead."""
    from faust.transport.drivers import aiokafka as faust_aiokafka

    class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_max_wait_ms
            return consumer

    class Consumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> Any:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    app.transport.Consumer = Consumer  # type: ignore[misc]  # per-app override of a ClassVar


def consumer_lag(app: faust.App, topics: set[str]) -> dict[str, int]:
    """Per topic, records in this worker's assigned partitions not yet processed: the log end
    offset (highwater) minus the next offset to process (committed; else after the last
    read; else 0). Only the router's ``topics`` (not faust's internal ones)."""
    lag: dict[str, int] = {}
    try:
        consumer: Any = app.consumer
        assigned = consumer.assignment()
    except Exception:  # not started yet, or between generations: nothing assigned to report
        return lag
    for tp in assigned:
        if tp.topic not in topics:
            continue
        try:
            end = consumer.highwater(tp)
        except Exception:  # no fetch answered for it yet
            continue
        if end is None:
            continue
        position = consumer._committed_offset.get(tp)  # the next offset to process
        if position is None:
            read = consumer._read_offset.get(tp)  # the last offset read
            position = read + 1 if read is not None else 0
        lag[tp.topic] = lag.get(tp.topic, 0) + max(int(end) - position, 0)
    return lag


def _record(event: Any) -> Record:
    m = event.message
    return Record(m.topic, m.partition, m.offset, m.key, m.value)


def build_app(settings: Settings) -> faust.App:
    """The router app with both stages; `peakroute worker` runs it."""
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{s.strip()}" for s in settings.kafka_bootstrap_servers.split(",")],
        broker_credentials=broker_credentials(settings),
        broker_rebalance_timeout=settings.kafka_rebalance_timeout_s,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.kafka_session_timeout_s / 3),
        store="memory://",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        consumer_auto_offset_reset="earliest",
        producer_linger_ms=settings.kafka_linger_ms,
        producer_acks=-1,
        producer_max_request_size=DEADLETTER_MAX_MESSAGE_BYTES + 65_536,
        stream_buffer_maxsize=max(4096, settings.batch_max * 2),
        web_enabled=True,
        web_host=settings.web_host,
        web_port=settings.web_port,
        datadir=str(settings.state_dir / "faust"),
    )
    _use_fetch_max_wait(app, settings.kafka_fetch_max_wait_ms)
    topics = {
        role: app.topic(name, key_serializer="raw", value_serializer="raw",
                        partitions=settings.topic_partitions)
        for role, name in settings.topics.items()
    }
    runtime = Runtime(settings)

    async def produce(outputs: Sequence[Output]) -> None:
        futures = []
        for out in outputs:
            fut = await app.producer.send(
                topics[out.role].get_topic_name(), out.key.encode(), out.event.to_json(),
                None, None, None,
            )
            futures.append(fut)
        if futures:
            await asyncio.gather(*futures)

    async def run_batch(stage: str, handle: Callable[[], Awaitable[list[Output]]],
                        size: int) -> None:
        """Handle and produce one batch; retry transient failures until they pass."""
        started = time.perf_counter()
        delay = 0.1
        outputs: list[Output] | None = None
        while True:
            try:
                if outputs is None:
                    outputs = await handle()
                await produce(outputs)
                break
            except TRANSIENT as exc:
                log.warning("batch_retried", extra=logs.fields(
                    stage=stage, records=size, error=type(exc).__name__, retry_in_s=delay))
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
        metrics.BATCH_SIZE.labels(stage).observe(size)
        metrics.BATCH_SECONDS.labels(stage).observe(time.perf_counter() - started)

    def batches(stream: Any) -> Any:
        return stream.take_events(settings.batch_max, within=settings.batch_within_s)

    @app.agent(topics["contacts_inbound"], name="bot-stage")
    async def bot_stage(stream: Any) -> None:
        async for events in batches(stream):
            records = [_record(e) for e in events]
            await run_batch("bot", partial(runtime.bot.handle, records), len(records))

    @app.agent(topics["routing_requests"], name="routing-requests")
    async def routing_requests(stream: Any) -> None:
        async for events in batches(stream):
            records = [_record(e) for e in events]
            await run_batch("routing",
                            partial(runtime.routing.handle, "routing_requests", records),
                            len(records))

    @app.agent(topics["agents_events"], name="agents-events")
    async def agents_events(stream: Any) -> None:
        async for events in batches(stream):
            records = [_record(e) for e in events]
            await run_batch("agents",
                            partial(runtime.routing.handle, "agents_events", records),
                            len(records))

    async def tick(name: str, step: Callable[[], Awaitable[list[Output]]]) -> None:
        try:
            await run_batch(name, step, 0)
        except Exception:  # a timer must keep ticking whatever one tick met
            log.exception("tick_failed", extra=logs.fields(timer=name))

    @app.timer(settings.timer_interval_s)  # type: ignore[untyped-decorator]
    async def routing_timer() -> None:  # offers that lapsed, rings that open, re-seating
        await tick("timer", runtime.routing.tick)

    @app.timer(settings.timer_interval_s)  # type: ignore[untyped-decorator]
    async def bot_timer() -> None:  # silence closes contacts the bot answered
        await tick("bot_timer", runtime.bot.tick)

    @app.timer(settings.bot_reload_interval_s)  # type: ignore[untyped-decorator]
    async def bot_reload() -> None:
        try:
            await runtime.brains.reload_if_changed()
        except Exception:  # a bad file is handled inside; this is for the unforeseen
            log.exception("bot_reload_check_failed")

    metrics.LAG.source = partial(consumer_lag, app, set(settings.topics.values()))

    @app.timer(settings.metrics_lease_s / 3)  # type: ignore[untyped-decorator]
    async def sla_export_lease() -> None:  # one worker exports the SLA figures (docs/METRICS.md)
        try:
            await runtime.exporter.renew()
        except TRANSIENT as exc:
            log.warning("sla_export_lease_failed", extra=logs.fields(error=type(exc).__name__))

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        try:
            await runtime.exporter.refresh()
        except TRANSIENT as exc:  # the worker's own metrics still answer without Redis
            metrics.CLUSTER.snapshot = None
            log.warning("sla_export_failed", extra=logs.fields(error=type(exc).__name__))
        # aiohttp rejects a charset inside content_type; the exposition is UTF-8 either way.
        return web.bytes(metrics.exposition(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok", "app": settings.app_id})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        """Ready once this worker owns partitions and no rebalance is under way."""
        ready = bool(app.consumer.assignment()) and not app.rebalancing
        return web.json({"ready": ready}, status=200 if ready else 503)

    return app
