"""The worker as a faust-streaming app (``PEAKROUTE_RUNTIME=faust``): the same stages as the
lean loop (router/transport.py), run as faust agents.

The router's topics are faust topics (raw keys and values: the stages decode them); each input
topic has an agent that takes batches (``Stream.take_events``: up to ``batch_max`` records or
what arrived within ``batch_within_s``) and runs them through ``router.transport.deliver``, as the
lean loop does: handle, produce, wait until the broker has every output (acks=all), then the
outbox's deletes. ``take_events`` acks a batch's events only when the agent asks for the next
batch, so faust commits a batch's offsets only after its outputs are delivered. Before partitions
move faust waits until every event taken from them is acked (``stream_wait_empty``): the batch in
hand finishes first. The timers are faust timers, ``/metrics``, ``/healthz`` and ``/readyz`` faust
web views on the worker's port.

What faust does not do on its own, this module adds:

- a batch that did not finish (a bug raised out of a stage, or the stop budget ran out) must not
  be committed, yet faust acks ``take_events``' events when the generator closes whatever the
  body did: from then on this worker refuses every commit (``RouterApp.commits_refused``), and
  the records are re-delivered to the next owner (the stages are idempotent);
- the graceful stop budget: a stopping worker waits for its batches in hand, the events already
  taken and its timers' steps, together within ``STOP_BATCH_TIMEOUT_S``, then commits;
- no LeaveGroup on stop where ``kafka_leave_group_on_stop`` is off (the embedded broker);
- the consumer's fetch wait from settings (faust hard-codes 1500 ms, a hop's worth of latency on a
  broker that does not answer a long poll as soon as data arrives);
- the stall watchdog (router/watchdog.py): faust's consumer runs in a thread of its own whose
  fetcher holds the aiokafka consumer, so it cannot be swapped for a new member in place as the
  lean loop does; a faust worker the group starves stops (exit status 75) and its supervisor
  (Kubernetes, ``peakroute demo``) starts it again: a new process is a new member.

Users extend the app (``router.app:app``) with their own agents, tables, timers and views:
docs/ARCHITECTURE.md, "Runtimes".
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, cast

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from prometheus_client import CONTENT_TYPE_LATEST

from router import logs, metrics, transient
from router.kafka import DEADLETTER_MAX_MESSAGE_BYTES, KeyHashes, send_batches
from router.kafka import ssl_context as kafka_ssl_context
from router.settings import Settings
from router.stage import Output, Record
from router.transport import Delivered, Handler, deliver
from router.watchdog import OffsetProbe, StallWatchdog, grace_s

log = logs.get("faust")
STOP_BATCH_TIMEOUT_S = 30.0  # as the lean worker's (router/app.py)
EXIT_STALLED = 75  # EX_TEMPFAIL: the stall watchdog stopped the worker; start it again


def broker_credentials(settings: Settings) -> Any:
    context = kafka_ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username, password=settings.kafka_sasl_password,
            mechanism=settings.kafka_sasl_mechanism or "PLAIN", ssl_context=context,
        )
    return faust.SSLCredentials(context) if context is not None else None


class RouterApp(faust.App):
    """A faust app that refuses commits once a batch did not finish, and stops within the
    router's budget."""

    commits_refused = False
    peakroute: FaustRouter | None = None  # (faust.App.router is its web router)

    async def on_stop(self) -> None:
        router = self.peakroute
        if router is None:
            await super().on_stop()
            return
        router.stopping = True
        # faust's own stop pauses the partitions, waits until every event taken is acked (the
        # batches in hand and the buffered ones), commits and flushes the producer.
        try:
            await asyncio.wait_for(asyncio.gather(router.steps_done(), super().on_stop()),
                                   router.stop_budget_s)
        except TimeoutError:
            self.commits_refused = True
            log.warning("batch_unfinished_at_stop")

    async def on_shutdown(self) -> None:
        await super().on_shutdown()
        if self.peakroute is not None:  # after the agents and timers stopped
            await self.peakroute.close()

    def refuse_commits(self, why: str) -> None:
        if not self.commits_refused:
            self.commits_refused = True
            log.warning("commits_refused", extra=logs.fields(reason=why))


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's aiokafka consumer thread with the router's fetch wait, commit guard and stop."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        settings = _settings_of(self.app)
        consumer._fetch_max_wait_ms = settings.kafka_fetch_max_wait_ms
        return consumer

    async def commit(self, offsets: Any) -> bool:
        if getattr(self.app, "commits_refused", False):
            return False
        result: bool = await super().commit(offsets)
        return result

    async def on_thread_stop(self) -> None:
        consumer = self._consumer
        if (consumer is not None and not _settings_of(self.app).kafka_leave_group_on_stop
                and consumer._coordinator is not None):
            # No LeaveGroup (router/transport.py, _stop_consumer): aiokafka sends one only from
            # a generation above 0; the group drops this member at its session timeout.
            consumer._coordinator.generation = -1
        await super().on_thread_stop()


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


def _settings_of(app: Any) -> Settings:
    router: FaustRouter = app.peakroute
    return router.settings


def record_of(event: Any) -> Record:
    m = event.message
    return Record(m.topic, m.partition, m.offset, m.key, m.value)


class FaustRouter:
    """The router's stages, timers and views on one faust app (``self.app``)."""

    def __init__(self, settings: Settings, runtime: Any | None = None) -> None:
        from router.app import Runtime  # the stages' per-process resources, shared with lean

        self.settings = settings
        self.runtime = runtime if runtime is not None else Runtime(settings)
        self.stopping = False
        self.stop_budget_s = STOP_BATCH_TIMEOUT_S
        self.stalled = False
        self.timer_names: list[str] = []
        self._steps = 0  # timer steps under way
        self._steps_idle = asyncio.Event()
        self._steps_idle.set()
        self._keys = KeyHashes()
        self.app = self._build_app()
        self.topics = {
            role: self.app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                                 value_serializer="raw", partitions=settings.topic_partitions)
            for role, name in settings.topics.items()
        }
        self._agents()
        self._timers()
        self._views()
        metrics.LAG.source = self.lag

    def _build_app(self) -> RouterApp:
        s = self.settings
        app = RouterApp(
            s.app_id,
            broker=[f"kafka://{b.strip()}" for b in s.kafka_bootstrap_servers.split(",")],
            broker_credentials=broker_credentials(s),
            broker_rebalance_timeout=s.kafka_rebalance_timeout_s,
            broker_session_timeout=s.kafka_session_timeout_s,
            broker_heartbeat_interval=min(3.0, s.kafka_session_timeout_s / 3),
            broker_max_poll_records=s.batch_max,
            store="memory://",
            topic_partitions=s.topic_partitions,
            topic_replication_factor=s.topic_replication_factor,
            topic_disable_leader=True,  # no leader election topic: no table, no on_leader timer
            consumer_auto_offset_reset="earliest",
            producer_linger=s.kafka_linger_ms / 1000,
            producer_acks=-1,
            producer_max_request_size=DEADLETTER_MAX_MESSAGE_BYTES + 65_536,
            stream_buffer_maxsize=max(4096, s.batch_max * 2),
            web_enabled=True,
            web_host=s.web_host,
            web_port=s.web_port,
            web_in_thread=False,
            worker_redirect_stdouts=False,
            datadir=str(s.state_dir / "faust"),
        )
        app.peakroute = self
        app.transport.Consumer = _Consumer  # type: ignore[misc]  # per-app override
        return app

    # -- batches and timer steps ----------------------------------------------------------

    async def produce(self, outputs: Sequence[Output]) -> None:
        """Send every output at once on faust's own aiokafka producer (router.kafka.
        send_batches: the same partitions as faust's ``send``, aiokafka's default partitioner)
        and wait until the broker has them all."""
        producer = cast(faust_aiokafka.Producer, self.app.producer)._ensure_producer()
        topics = self.settings.topics
        futures = await send_batches(
            producer, self._keys,
            ((topics[out.role], out.key.encode(), out.value()) for out in outputs))
        if futures:
            await asyncio.gather(*futures)

    async def batch(self, stage: str, handle: Handler, records: Sequence[Record],
                    delivered: Delivered | None) -> None:
        """One batch of an agent. A batch that does not finish must not be committed."""
        finished = False
        try:
            await deliver(stage, handle, records, self.produce, delivered)
            finished = True
        except Exception as exc:
            log.exception("batch_failed", extra=logs.fields(stage=stage, records=len(records)))
            self.app.refuse_commits("batch_failed")
            await self.app.crash(exc)
            raise
        finally:
            if not finished:
                self.app.refuse_commits("batch_unfinished")

    def _agent(self, role: str, name: str, stage: str, handle: Handler,
               delivered: Delivered) -> None:
        s = self.settings

        async def consume(stream: Any) -> None:
            async for events in stream.take_events(s.batch_max, within=s.batch_within_s):
                await self.batch(stage, handle, [record_of(e) for e in events], delivered)

        consume.__name__ = consume.__qualname__ = name.replace("-", "_")
        self.app.agent(self.topics[role], name=name)(consume)

    def _agents(self) -> None:
        runtime = self.runtime

        def routing(role: str) -> Handler:
            return lambda records: runtime.routing.handle(role, records)

        def routing_delivered(outputs: Sequence[Output]) -> None:
            runtime.routing.delivered(outputs)

        self._agent("contacts_inbound", "bot-stage", "bot",
                    lambda records: runtime.bot.handle(records),
                    lambda outputs: runtime.bot.delivered(outputs))
        self._agent("routing_requests", "routing-requests", "routing",
                    routing("routing_requests"), routing_delivered)
        self._agent("agents_events", "agents-events", "agents", routing("agents_events"),
                    routing_delivered)

    async def step(self, name: str, step: Callable[[], Awaitable[Any]]) -> None:
        """One timer step; never raises (a timer keeps ticking whatever one step met), and a
        stopping worker starts none."""
        if self.stopping:
            return
        self._steps += 1
        self._steps_idle.clear()
        try:
            await step()
        except Exception as exc:
            kind = transient.count(exc)
            if kind is None:
                log.exception("timer_step_failed", extra=logs.fields(timer=name))
            else:
                log.warning("timer_step_failed", extra=logs.fields(
                    timer=name, kind=kind.value, error=type(exc).__name__))
        finally:
            self._steps -= 1
            if not self._steps:
                self._steps_idle.set()

    async def steps_done(self) -> None:
        await self._steps_idle.wait()

    def _timer(self, interval_s: float, name: str, step: Callable[[], Awaitable[Any]]) -> None:
        async def tick() -> None:
            await self.step(name, step)

        tick.__name__ = tick.__qualname__ = name
        self.app.timer(interval_s, name=name)(tick)
        self.timer_names.append(name)

    def _timers(self) -> None:
        from router.app import freeze_heap

        s = self.settings
        runtime = self.runtime

        def outputs_of(step: Callable[[], Awaitable[list[Output]]],
                       delivered: Delivered, name: str) -> Callable[[], Awaitable[None]]:
            return lambda: deliver(name, lambda _records: step(), (), self.produce, delivered)

        async def reload_bot() -> None:
            if await runtime.brains.reload_if_changed():
                freeze_heap()

        # offers that lapsed, rings that open, re-seating
        self._timer(s.timer_interval_s, "timer", outputs_of(
            lambda: runtime.routing.tick(), lambda o: runtime.routing.delivered(o), "timer"))
        # silence closes contacts the bot answered
        self._timer(s.timer_interval_s, "bot_timer", outputs_of(
            lambda: runtime.bot.tick(), lambda o: runtime.bot.delivered(o), "bot_timer"))
        self._timer(s.bot_reload_interval_s, "bot_reload", reload_bot)
        # one worker exports the SLA figures (docs/METRICS.md)
        self._timer(s.metrics_lease_s / 3, "sla_export_lease", lambda: runtime.exporter.renew())
        # the stall watchdog (router/watchdog.py)
        probe = OffsetProbe(s, list(s.topics[r] for r in ROUTED_ROLES))
        self.watchdog = StallWatchdog(grace_s(s), self.owned, probe, self._stalled)
        self._timer(self.watchdog.interval_s, "stall_watchdog", self.watchdog.check)
        self._probe = probe

    # -- the group ------------------------------------------------------------------------

    def owned(self) -> int:
        """Partitions this worker consumes now (none while a rebalance is under way)."""
        if self.app.rebalancing:
            return 0
        try:
            return len(self.app.consumer.assignment())
        except Exception:  # not started yet
            return 0

    def ready(self) -> bool:
        return self.owned() > 0

    async def _stalled(self) -> None:
        """The group starves this worker: stop it (gracefully) for its supervisor to start it
        again as a new member; the process exits with EXIT_STALLED."""
        self.stalled = True
        log.warning("worker_restarting_after_stall", extra=logs.fields(exit_status=EXIT_STALLED))
        os.kill(os.getpid(), signal.SIGTERM)

    def lag(self) -> dict[str, int]:
        """Per input topic, records in this worker's partitions not yet processed: the log end
        offset minus the next offset to process (committed; else after the last read)."""
        lag: dict[str, int] = {}
        try:
            consumer: Any = self.app.consumer
            assigned = consumer.assignment()
        except Exception:  # not started yet, or between generations
            return lag
        routed = {self.settings.topics[r] for r in ROUTED_ROLES}
        for tp in assigned:
            if tp.topic not in routed:
                continue
            try:
                end = consumer.highwater(tp)
            except Exception:  # no fetch answered for it yet
                continue
            if end is None:
                continue
            position = consumer._committed_offset.get(tp)
            if position is None:
                read = consumer._read_offset.get(tp)
                if read is None:
                    continue
                position = read + 1
            lag[tp.topic] = lag.get(tp.topic, 0) + max(int(end) - position, 0)
        return lag

    # -- web views ------------------------------------------------------------------------

    def _views(self) -> None:
        app = self.app
        runtime = self.runtime
        settings = self.settings

        @app.page("/metrics")
        async def metrics_view(web: Any, request: Any) -> Any:
            try:
                await runtime.exporter.refresh()
            except Exception as exc:  # the worker's own metrics still answer without Redis
                if transient.count(exc) is None:
                    raise
                metrics.CLUSTER.snapshot = None
                log.warning("sla_export_failed", extra=logs.fields(error=type(exc).__name__))
            # aiohttp refuses a charset inside content_type; the exposition is UTF-8 anyway.
            return web.bytes(metrics.exposition(),
                             content_type=CONTENT_TYPE_LATEST.split(";")[0])

        @app.page("/healthz")
        async def healthz(web: Any, request: Any) -> Any:
            return web.json({"status": "ok", "app": settings.app_id})

        @app.page("/readyz")
        async def readyz(web: Any, request: Any) -> Any:
            body, status = transient.readiness(self.ready())
            return web.json(body, status=status)

    async def close(self) -> None:
        await self._probe.close()
        await self.runtime.close()


ROUTED_ROLES: Iterable[str] = ("contacts_inbound", "routing_requests", "agents_events")


def build(settings: Settings) -> FaustRouter:
    return FaustRouter(settings)


def run_worker(settings: Settings) -> int:
    """`peakroute worker` on the faust runtime: faust's worker runs the app until SIGTERM or
    SIGINT; returns the process's exit status."""
    from router.app import freeze_heap

    router = build(settings)
    app = router.app

    worker = faust.Worker(app, loglevel=settings.log_level.lower(), override_logging=False,
                          redirect_stdouts=False, quiet=True)
    started = time.monotonic()

    @app.task  # type: ignore[untyped-decorator]
    async def _after_start() -> None:
        freeze_heap()
        log.info("worker_started", extra=logs.fields(web_port=settings.web_port,
                                                      app_id=settings.app_id, runtime="faust",
                                                      start_s=round(time.monotonic() - started,
                                                                    2)))

    try:
        worker.execute_from_commandline()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    else:  # pragma: no cover - execute_from_commandline always exits
        code = 0
    log.info("worker_stopped", extra=logs.fields(runtime="faust"))
    if router.stalled:
        return EXIT_STALLED
    return code
