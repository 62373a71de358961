"""The sync loop: every PEAKROUTE_GATEWAY_CONSOLE_INTERVAL_S it reads the routing state, load
and figures today of the agents a decision touched since the last round (router/gateway/
fanout.py marks them) and of the next share of a rolling sweep that reads every connected agent
once per PEAKROUTE_GATEWAY_SYNC_SWEEP_S (what no decision on this instance's partitions
announces: a change made by the agents CLI or on another instance), and pushes what changed to
their desktops; it marks every connected agent online and pushes the consoles.

Reading every agent each round cost a 10,000-desktop gateway about a third of its time and
held its event loop for a slice of reads at a time, in the middle of the offers.
"""

from __future__ import annotations

import asyncio
import math
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
        self._sweep: list[tuple[str, str]] = []  # agents this sweep has yet to read

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

    def due(self) -> dict[str, list[str]]:
        """The agents this round reads, by domain: those touched since the last round and the
        next share of the sweep (every connected agent once per sweep)."""
        keys = self.hub.take_touched()
        if self.hub.agents:
            if not self._sweep:
                self._sweep = list(self.hub.agents)
            share = math.ceil(len(self.hub.agents) * self.settings.gateway_console_interval_s
                              / self.settings.gateway_sync_sweep_s)
            keys.update(self._sweep[-share:])
            del self._sweep[-share:]
        by_domain: dict[str, list[str]] = defaultdict(list)
        for domain, aid in keys:
            if (domain, aid) in self.hub.agents:
                by_domain[domain].append(aid)
        return by_domain

    async def _sync_agents(self) -> None:
        now = now_ms()
        online: dict[str, list[str]] = defaultdict(list)
        for domain, aid in self.hub.agents:
            online[domain].append(aid)
        # The marks and the reads go in slices: each slice's round trip yields the event loop,
        # so offers keep flowing (one ZADD of 10,000 agents held it ~18 ms, most of it redis-py
        # packing the arguments).
        for domain, ids in online.items():
            for i in range(0, len(ids), SYNC_SLICE):
                await self.redis.zadd(console.online_key(domain),
                                      dict.fromkeys(ids[i:i + SYNC_SLICE], now))
        for domain, ids in self.due().items():
            for i in range(0, len(ids), SYNC_SLICE):
                part = ids[i:i + SYNC_SLICE]
                views, figures = await asyncio.gather(
                    console.agent_views(self.redis, domain, part),
                    console.figures_today(self.redis, domain, part))
                self._push(domain, part, views, figures)

    def _push(self, domain: str, ids: list[str], views: dict[str, console.AgentView],
              figures: dict[str, dict[str, int]]) -> None:
        """What changed, to each of these agents' desktops."""
        mono = time.monotonic()
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
