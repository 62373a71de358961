"""The supervisor console's frame: a domain's queues (router/sla figures), its agents with their
routing state, who has a desktop connected, and the domain's rating."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import redis.asyncio as aioredis

from router.gateway import console
from router.gateway.roster import Roster, served_queues
from router.gateway.session import Session
from router.routing.config import DomainPolicy, RoutingPolicy
from router.settings import Settings
from router.stage import now_ms

ONLINE_WITHIN_MS = 5000  # a desktop seen by a gateway this recently counts as connected
CONSOLE_AGENTS_MAX = 1000  # agents one console frame lists


class ConsoleView:
    def __init__(self, settings: Settings, policy: RoutingPolicy, redis: aioredis.Redis,
                 roster: Roster) -> None:
        self.settings = settings
        self.policy = policy
        self.redis = redis
        self.roster = roster
        self.figures = console.DomainConsole(redis, settings)

    async def push(self, sessions: list[Session]) -> None:
        """One console frame per domain, to each of these supervisors' sockets."""
        by_domain: dict[str, list[Session]] = defaultdict(list)
        for s in sessions:
            if s.identity is not None:
                by_domain[s.identity.domain].append(s)
        now = now_ms()
        for domain, group in by_domain.items():
            frame = await self.frame(domain, now)
            for s in group:
                s.push(frame)

    async def frame(self, domain: str, now: int) -> dict[str, Any]:
        policy = self.policy.for_domain(domain)
        queues, rating = await self.figures.read(domain, policy, now)
        profiles = (await self.roster.all(domain))[:CONSOLE_AGENTS_MAX]
        views = await console.agent_views(self.redis, domain, [p.agent_id for p in profiles])
        seen: Any = await self.redis.zrange(console.online_key(domain), 0, -1, withscores=True)
        online = console.online_since({k: float(v) for k, v in seen}, now, ONLINE_WITHIN_MS)
        agents = [{**views[p.agent_id].as_dict(), "name": p.name, "desktop": p.agent_id in online,
                   "roster_skills": p.skills, "disabled": p.disabled, "queues": served_queues(
                       views[p.agent_id].skills or p.skills, policy)} for p in profiles]
        return {"type": "console", "ts_ms": now, "domain": domain, "queues": queues,
                "agents": agents, "window": console.CONSOLE_WINDOW,
                "formula": self.settings.sla_formula, "timezone": self.settings.sla_timezone,
                "objective": self.settings.sla_objective_ratio, "rating": rating}


def policy_skills(policy: DomainPolicy) -> list[str]:
    """Every skill the domain's policy uses (the console's skill picker)."""
    names: set[str] = set()
    for queue in policy.queues.values():
        for ring in queue.rings:
            names.update(ring.skills)
    if policy.language_skill:
        names.update(("zh", "en"))
    return sorted(names)
