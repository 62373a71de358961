"""The agent gateway of one process: an aiohttp server with the desktop (/), the supervisor
console (/supervisor), their static files, /metrics, /healthz and the WebSocket endpoint /ws.

Desktop actions become agents.events records (the same events as ``agents.client``), so routing
has one way in. The gateway reads assignments and routing.decisions from the end without a
consumer group and pushes each record to the sockets of the agent it names (an instance holds
only its own connections; docs/ARCHITECTURE.md, "Agent gateway"). Every client frame is checked
(docs/AGENT_PROTOCOL.md); a refused one is answered with an ``error`` frame and counted.

This module wires the parts and runs their lifecycle; each part does one job:

* ``http``: the pages, static files, /healthz, /metrics;
* ``sockets``: the /ws loop, each frame checked and dispatched;
* ``guard``: Origin, flood limit per identity, tokens, and the ends of sessions (``ends``);
* ``actions``: hello and what each client frame does (``publish``: Kafka out);
* ``fanout``: Kafka in, pushed to the agents' sockets;
* ``sync``: the periodic state, load and figures sync and the consoles' push;
* ``console_frame``: the supervisor console's frame (figures from router/sla, ``console``);
* ``hub``: who is connected to this process;
* ``heap``: the long-lived objects kept out of the cycle collector's scans.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from aiohttp import web

from router import logs
from router.gateway import ends, http
from router.gateway.actions import Actions
from router.gateway.auth import Verifier
from router.gateway.console_frame import ConsoleView
from router.gateway.fanout import Fanout
from router.gateway.guard import Guard
from router.gateway.heap import Heap, HeapPolicy
from router.gateway.hub import Hub
from router.gateway.publish import Publisher
from router.gateway.roster import Roster
from router.gateway.sockets import Sockets
from router.gateway.sync import Sync
from router.kafka import ensure_topics
from router.redis_client import blocking_pool_client
from router.routing.config import RoutingPolicy, policy_from_settings
from router.settings import Settings

log = logs.get("gateway")
REDIS_CONNECTIONS = 32  # per gateway process


class Gateway:
    """The gateway of one process: connections, Kafka in and out, Redis reads."""

    def __init__(self, settings: Settings, policy: RoutingPolicy | None = None) -> None:
        self.settings = settings
        self.policy = policy or policy_from_settings(settings)
        self.verifier = Verifier(settings)
        self.redis = gateway_redis(settings)
        self.roster = Roster(self.redis)
        self.hub = Hub(settings)
        self.publisher = Publisher(settings)
        self.guard = Guard(settings, self.verifier, self.redis, self.hub)
        self.console = ConsoleView(settings, self.policy, self.redis, self.roster)
        self.fanout = Fanout(settings, self.policy, self.redis, self.hub,
                             lambda: self._stopping)
        self.actions = Actions(settings, self.policy, self.redis, self.roster, self.hub,
                               self.guard, self.publisher, self.console,
                               self.fanout.push_offers)
        self.sockets = Sockets(settings, self.hub, self.guard, self.actions)
        self.sync = Sync(settings, self.policy, self.redis, self.hub, self.console,
                         lambda: self._stopping)
        self.heap = Heap(HeapPolicy(settings.gateway_gc_freeze_s, settings.gateway_gc_sweep_after,
                                    settings.gateway_gc_sweep_min_s), lambda: self.hub.closed)
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._stopping = False

    async def start(self) -> None:
        await ensure_topics(self.settings)
        await self.publisher.start()
        await self.fanout.start()
        self._tasks = [asyncio.create_task(self.fanout.run(), name="gateway-reader"),
                       asyncio.create_task(self.sync.run(), name="gateway-sync"),
                       asyncio.create_task(ends.follow(self.redis, self.guard.end,
                                                       lambda: self._stopping),
                                           name="gateway-ends"),
                       asyncio.create_task(self.heap.run(lambda: self._stopping),
                                           name="gateway-heap")]

    async def serve(self, host: str, port: int) -> None:
        """Start and listen on host:port (returns once listening)."""
        await self.start()
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False,
                                     shutdown_timeout=2.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        log.info("gateway_started", extra=logs.fields(host=host, port=port))

    async def stop(self) -> None:
        for s in list(self.hub.all()):
            s.close(1001)
        if self._runner is not None:
            await self._runner.cleanup()
        self._stopping = True
        # A library may take a cancellation for its own timeout (asyncio.timeout in redis-py):
        # the loops also watch _stopping, and are cancelled until they are done.
        while pending := [t for t in self._tasks if not t.done()]:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=1.0)
        await self.fanout.stop()
        await self.publisher.stop()
        await self.redis.aclose()
        await self.verifier.aclose()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        http.add_routes(app, self.hub)
        app.router.add_get("/ws", self.sockets.handle)
        return app


def gateway_redis(settings: Settings) -> aioredis.Redis:
    """The settings' client (credentials, ACL user, TLS, Cluster: router/redis_client.py) on a
    pool where every socket may read at once (a burst of sign-ins): calls wait for one of a
    bounded set of connections instead of failing with "Too many connections"."""
    return blocking_pool_client(settings, REDIS_CONNECTIONS, 30, socket_timeout=10)
