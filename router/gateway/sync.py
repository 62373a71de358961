"""The sync loop: every PEAKROUTE_GATEWAY_CONSOLE_INTERVAL_S it reads the connected agents'
routing state, load and figures today and pushes what changed to their desktops (what routing
changed on its own: a lapse, a supervisor), marks them online, and pushes the consoles."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable

import redis.asyncio as aioredis

from router import logs
from router.gateway import console
from router.gateway.console_frame import ConsoleView
from router.gateway.hub import Hub
from router.gateway.roster import served_queues
from router.routing.config import RoutingPolicy
from router.settings import Settings
from router.stage import now_ms

log = logs.get("gateway")
SYNC_SLICE = 250  # agents synced per round of reads


class Sync:
    def __init__(self, settings: Settings, policy: RoutingPolicy, redis: aioredis.Redis,
                 hub: Hub, console_view: ConsoleView, stopping: Callable[[], bool]) -> None:
        self.settings = settings
        self.policy = policy
        self.redis = redis
        self.hub = hub
        self.console = console_view
        self.stopping = stopping

    async def run(self) -> None:
        while not self.stopping():
            await asyncio.sleep(self.settings.gateway_console_interval_s)
            try:
                await self._sync_agents()
                if self.hub.supervisors:
                    await self.console.push(list(self.hub.supervisors))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("gateway_sync_failed")

    async def _sync_agents(self) -> None:
        by_domain: dict[str, list[str]] = defaultdict(list)
        for domain, aid in self.hub.agents:
            by_domain[domain].append(aid)
        now, mono = now_ms(), time.monotonic()
        # In slices: each slice's reads yield the event loop, so offers keep flowing while
        # thousands of desktops are synced (a whole-roster pass would hold it for its length).
        slices = [(domain, ids[i:i + SYNC_SLICE]) for domain, ids in by_domain.items()
                  for i in range(0, len(ids), SYNC_SLICE)]
        for domain, ids in slices:
            views = await console.agent_views(self.redis, domain, ids)
            figures = await console.figures_today(self.redis, domain, ids)
            await self.redis.zadd(console.online_key(domain), dict.fromkeys(ids, now))
            for aid in ids:
                view = views[aid]
                for s in list(self.hub.agents.get((domain, aid), ())):
                    if mono >= s.hold_until and view.state != s.last.get("state"):
                        s.state, s.seated = view.state, view.state != "offline"
                        s.push({"type": "state", "state": view.state, "reason": ""})
                        s.last["state"] = view.state
                    if view.load != s.last.get("load"):
                        s.push({"type": "load", "load": view.load, "capacity": view.capacity})
                        s.last["load"] = view.load
                    if figures[aid] != s.last.get("stats"):
                        s.push({"type": "stats", **figures[aid]})
                        s.last["stats"] = figures[aid]
                    if view.skills and view.skills != s.last.get("skills"):
                        s.push({"type": "profile", "skills": view.skills,
                                "capacity": view.capacity, "changed_by": "",
                                "queues": served_queues(view.skills,
                                                        self.policy.for_domain(domain))})
                        s.last["skills"] = view.skills
