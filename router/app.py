"""The router worker: both stages on the Kafka transport, their timers, and the web endpoints.

Thin: the stages hold the logic; a runtime moves the records (``Settings.runtime``): the lean
loop (router/transport.py, ``Worker`` and ``serve`` here) or faust-streaming
(router/faust_app.py). `peakroute worker` runs ``run_worker``: it consumes until SIGTERM or
SIGINT, then finishes and commits the batch in hand, leaves the consumer group (its partitions
move at once) and flushes its producer.

``app`` (``router.app:app``) is the faust app, built from the environment's settings on first
access: ``faust -A router.app worker`` runs it, and users add their own agents to it
(docs/ARCHITECTURE.md, "Runtimes").
"""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from router import logs, metrics, transient
from router.bot.conversation import ConversationStore
from router.bot.loader import BrainHolder
from router.bot.stage import BotStage
from router.decode import Decoder, Limits
from router.redis_client import redis_client, without_retry
from router.routing.config import policy_from_settings
from router.routing.stage import RoutingStage
from router.routing.store import RoutingStore
from router.settings import Settings
from router.sla.export import SlaExporter
from router.stage import Output
from router.transport import Route, Transport

log = logs.get("app")
# How long a stopping worker waits for its timers' steps and its batch in hand, together
# (Kubernetes gives it 60 s in all).
STOP_BATCH_TIMEOUT_S = 30.0


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
            # The transport retries the batch, counts the failure and says not ready.
            self._redis = redis_client(self.settings,
                                       socket_timeout=self.settings.redis_socket_timeout_s,
                                       health_check_interval=30, retry=without_retry())
        return RoutingStore(self._redis, self.settings, self.policy)

    def decoder(self) -> Decoder:
        return Decoder(Limits(self.settings.max_record_bytes, self.settings.max_text_chars))

    @property
    def bot(self) -> BotStage:
        if self._bot is None:
            store = self._store()
            conversations = ConversationStore(store.redis, self.settings.bot_conversation_ttl_s,
                                              self.settings.redis_wait_replicas,
                                              self.settings.redis_wait_timeout_ms)
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

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()


def freeze_heap() -> None:
    """Collect once, then move every object alive now (the bot's model and knowledge base,
    the policy, the clients: ~140,000 objects) out of the garbage collector's reach. A full
    collection over them took ~80 ms, a stall every few seconds under load that showed up in
    the hops' p99 (docs/REHEARSAL.md); what the worker allocates per batch is still
    collected as before. Again after a model reload: the old model goes, the new one stays."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class Worker:
    """One router worker process: the transport with both stages, the timers, the web server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runtime = Runtime(settings)
        runtime = self.runtime
        topics = settings.topics
        self.transport = Transport(settings, {
            topics["contacts_inbound"]: Route("bot", lambda records: runtime.bot.handle(records),
                                              lambda outputs: runtime.bot.delivered(outputs)),
            topics["routing_requests"]: Route(
                "routing", partial(self._routing, "routing_requests"), self._delivered),
            topics["agents_events"]: Route("agents", partial(self._routing, "agents_events"),
                                           self._delivered),
        })
        self._tasks: list[asyncio.Task[None]] = []
        self._web: web.AppRunner | None = None
        self._stopping = asyncio.Event()

    def _routing(self, role: str, records: Any) -> Awaitable[list[Output]]:
        return self.runtime.routing.handle(role, records)

    def _delivered(self, outputs: Sequence[Output]) -> None:
        self.runtime.routing.delivered(outputs)

    async def start(self) -> None:
        await self.transport.start()
        metrics.LAG.source = self.transport.lag
        s = self.settings
        runtime = self.runtime
        self._tasks = [
            # offers that lapsed, rings that open, re-seating
            self._every(s.timer_interval_s, "timer", lambda: self._tick(
                "timer", runtime.routing.tick, self._delivered)),
            # silence closes contacts the bot answered
            self._every(s.timer_interval_s, "bot_timer", lambda: self._tick(
                "bot_timer", runtime.bot.tick, runtime.bot.delivered)),
            self._every(s.bot_reload_interval_s, "bot_reload", self._reload_bot),
            # one worker exports the SLA figures (docs/METRICS.md)
            self._every(s.metrics_lease_s / 3, "sla_export_lease", runtime.exporter.renew),
        ]
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._web = web.AppRunner(app, access_log=None)
        await self._web.setup()
        await web.TCPSite(self._web, s.web_host, s.web_port).start()
        log.info("worker_started", extra=logs.fields(web_port=s.web_port, app_id=s.app_id))

    def _every(self, interval_s: float, name: str,
               step: Callable[[], Awaitable[Any]]) -> asyncio.Task[None]:
        async def loop() -> None:
            while True:
                try:  # a stop ends the wait, never a step under way (its outputs go out)
                    await asyncio.wait_for(self._stopping.wait(), interval_s)
                    return
                except TimeoutError:
                    pass
                try:
                    await step()
                except Exception as exc:  # a timer must keep ticking whatever one step met
                    kind = transient.count(exc)
                    if kind is None:
                        log.exception("timer_step_failed", extra=logs.fields(timer=name))
                    else:
                        log.warning("timer_step_failed", extra=logs.fields(
                            timer=name, kind=kind.value, error=type(exc).__name__))
        return asyncio.create_task(loop(), name=name)

    async def _reload_bot(self) -> None:
        if await self.runtime.brains.reload_if_changed():
            freeze_heap()  # the old model is garbage now; the new one is long-lived

    async def _tick(self, name: str, step: Callable[[], Awaitable[list[Output]]],
                    delivered: Callable[[Sequence[Output]], None]) -> None:
        await self.transport.run_batch(name, lambda _records: step(), (), delivered)

    async def _metrics(self, request: web.Request) -> web.Response:
        try:
            await self.runtime.exporter.refresh()
        except Exception as exc:  # the worker's own metrics still answer without Redis
            if transient.count(exc) is None:
                raise
            metrics.CLUSTER.snapshot = None
            log.warning("sla_export_failed", extra=logs.fields(error=type(exc).__name__))
        return web.Response(body=metrics.exposition(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "app": self.settings.app_id})

    async def _readyz(self, request: web.Request) -> web.Response:
        """Ready once this worker owns partitions, no rebalance is under way and no Redis or
        Kafka failure was met in the last few seconds (router/transient.py)."""
        body, status = transient.readiness(self.transport.ready())
        return web.json_response(body, status=status)

    async def run(self) -> None:
        await self.transport.run()

    async def stop(self) -> None:
        self._stopping.set()

        async def timers_done() -> None:  # each timer finishes the step under way, then returns
            if self._tasks:
                _, late = await asyncio.wait(self._tasks, timeout=STOP_BATCH_TIMEOUT_S)
                for task in late:
                    task.cancel()
        # One budget for both, wound down together; the producer closes after both.
        await asyncio.gather(timers_done(), self.transport.finish(STOP_BATCH_TIMEOUT_S))
        await self.transport.close()
        if self._web is not None:
            await self._web.cleanup()
        await self.runtime.close()
        log.info("worker_stopped")


def run_worker(settings: Settings) -> int:
    """`peakroute worker`: the topics ensured, then the configured runtime until a stop; returns
    the process's exit status."""
    from router.kafka import ensure_topics

    if settings.event_loop == "uvloop":
        import uvloop

        uvloop.install()  # asyncio.run and faust's worker both take their loop from the policy
    asyncio.run(ensure_topics(settings))
    if settings.runtime == "faust":
        from router.faust_app import run_worker as run_faust

        return run_faust(settings)
    asyncio.run(serve(settings))
    return 0


def __getattr__(name: str) -> Any:
    """``router.app.app``: the faust app on the environment's settings, built once on first
    access (``faust -A router.app worker``)."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    global _faust_app
    if _faust_app is None:
        from router.faust_app import build

        settings = Settings.from_env()
        logs.configure(settings.log_level, settings.log_format)
        _faust_app = build(settings).app
    return _faust_app


_faust_app: Any = None


async def serve(settings: Settings) -> None:
    """Run a worker until SIGTERM or SIGINT (or until its loop fails: then raise)."""
    worker = Worker(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await worker.start()
    freeze_heap()
    running = asyncio.create_task(worker.run(), name="transport")
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        await worker.stop()
    if running.done() and not running.cancelled() and running.exception() is not None:
        raise running.exception()  # type: ignore[misc]
