"""Routing state in Redis: atomic Lua scripts per transition, called in pipelined batches.

Keys of a routing domain share the hash tag ``{d:<domain>}`` (one Redis Cluster slot). Each
script is ``scripts/common.lua`` + its own body, registered with EVALSHA (Redis >= 6.2 and
Cluster; redis-py reloads a script on NOSCRIPT). The scripts only do what must be atomic;
the parameters (time, target, timeouts, queue order) come from Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from router.errors import RoutingStoreError
from router.events import (
    AgentLoggedIn,
    AgentLoggedOut,
    AgentState,
    AgentStateChanged,
    ContactCompleted,
    CustomerLeft,
    Event,
    OfferAccepted,
    OfferDeclined,
    RoutingRequested,
)
from router.routing.policy import format_levels, queue_score
from router.settings import Settings

DOMAINS_KEY = "pr:domains"  # set of routing domains seen (outside any hash tag: plain set)
EXPIRE_BATCH = 500
DEFAULT_REASONS: dict[type[Event], str] = {
    CustomerLeft: "customer_left",
    AgentLoggedOut: "agent_logged_out",
    OfferDeclined: "declined",
}
STAT_FIELDS = (
    "arrived", "contained", "escalating", "escalated", "offered", "answered",
    "answered_within_target", "wait_sum_ms", "abandoned", "short_abandoned", "completed",
    "declined", "expired",
)


def prefix(domain: str) -> str:
    return f"pr:{{d:{domain}}}:"


@dataclass(frozen=True, slots=True)
class Transition:
    """One thing a script did, as Python sees it (becomes audit and assignment events)."""

    kind: str  # offered queued answered declined expired rescinded abandoned completed ...
    domain: str
    contact_id: str = ""
    agent_id: str = ""
    offer_id: str = ""
    channel: str = ""
    waited_ms: int = 0
    expires_at_ms: int = 0  # offered: when the offer lapses
    within_target: bool = False  # answered: inside the service target
    priority: int = 0
    skills: str = ""
    reason: str = ""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _transition(domain: str, row: Sequence[Any], reason: str = "") -> Transition:
    kind = _text(row[0])
    fields = [_text(v) for v in row[1:5]] + [""] * 4
    cid, aid, oid, ch = fields[:4]
    nums = [int(v) if isinstance(v, int) else 0 for v in row[5:8]] + [0, 0, 0]
    if kind == "offered":
        return Transition(kind, domain, cid, aid, oid, ch, waited_ms=nums[0],
                          expires_at_ms=nums[1], priority=nums[2], skills=_text(row[8]))
    if kind == "answered":
        return Transition(kind, domain, cid, aid, oid, waited_ms=nums[0],
                          within_target=bool(nums[1]))
    if kind in {"duplicate", "stale"}:
        return Transition(kind, domain, cid, reason=aid)  # aid slot carries the state seen
    return Transition(kind, domain, cid, aid, oid, ch, waited_ms=nums[0], reason=reason)


class RoutingStore:
    """Applies routing events to Redis atomically and reports the transitions."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        common = _read_script("common")
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script(common + "\n" + _read_script(name))
            for name in ("request", "accept", "decline", "expire", "complete", "login", "state",
                         "logout", "left", "bot")
        }
        self._timeout_ms = int(settings.offer_timeout_s * 1000)
        self._limit = settings.match_scan_limit
        self._retention = settings.contact_retention_s
        self._short_ms = int(settings.short_abandon_s * 1000)
        self._known_domains: set[str] = set()

    def _call(self, pipe: Any, name: str, domain: str, *args: Any) -> None:
        # Queue EVALSHA directly: the pipeline checks (SCRIPT EXISTS) and loads its registered
        # scripts before it executes, so a restarted or flushed Redis costs nothing here.
        script = self._scripts[name]
        pipe.scripts.add(script)
        pipe.evalsha(script.sha, 1, prefix(domain), *args)

    def _queue(self, pipe: Any, event: Event, now_ms: int) -> tuple[str, str]:
        """Queue the script for one event; returns (domain, reason) for reading the result."""
        t, limit = self._timeout_ms, self._limit
        match event:
            case RoutingRequested():
                self._call(pipe, "request", event.domain, event.contact_id, event.channel.value,
                           format_levels(event.skills), event.priority,
                           queue_score(event.ts_ms, event.priority), event.ts_ms, now_ms, t, limit)
            case CustomerLeft():
                self._call(pipe, "left", event.domain, event.contact_id, now_ms, self._short_ms,
                           t, limit, self._retention)
            case OfferAccepted():
                self._call(pipe, "accept", event.domain, event.agent_id, event.offer_id,
                           event.contact_id, now_ms, self.settings.sla_target_ms)
            case OfferDeclined():
                self._call(pipe, "decline", event.domain, event.agent_id, event.offer_id,
                           event.contact_id, now_ms, t, limit, "declined")
            case ContactCompleted():
                self._call(pipe, "complete", event.domain, event.agent_id, event.contact_id,
                           now_ms, t, limit, self._retention)
            case AgentLoggedIn():
                self._call(pipe, "login", event.domain, event.agent_id,
                           format_levels(event.skills), format_levels(event.capacity),
                           int(event.ready), now_ms, t, limit)
            case AgentStateChanged() if event.state == AgentState.OFFLINE:
                # Going offline is leaving: offers are withdrawn and re-routed, as on logout.
                self._call(pipe, "logout", event.domain, event.agent_id, now_ms, t, limit)
            case AgentStateChanged():
                self._call(pipe, "state", event.domain, event.agent_id, event.state.value, now_ms,
                           t, limit)
            case AgentLoggedOut():
                self._call(pipe, "logout", event.domain, event.agent_id, now_ms, t, limit)
            case _:
                raise RoutingStoreError(f"no routing script for {event.TYPE}")
        reason = getattr(event, "reason", "") or DEFAULT_REASONS.get(type(event), "")
        return event.domain, reason

    async def apply(
        self, events: Sequence[Event], now_ms: int
    ) -> list[list[Transition] | Exception]:
        """Run one script per event, in order, in a single round trip.

        Returns, per event, its transitions, or the error its script raised (the other events
        are unaffected: each script is atomic on its own). Connection errors propagate.
        """
        if not events:
            return []
        pipe = self.redis.pipeline(transaction=False)
        self._note_domains(pipe, (e.domain for e in events if hasattr(e, "domain")))
        contexts = [self._queue(pipe, event, now_ms) for event in events]
        results = await pipe.execute(raise_on_error=False)
        out: list[list[Transition] | Exception] = []
        for (domain, reason), rows in zip(contexts, results[len(results) - len(contexts):],
                                          strict=True):
            if isinstance(rows, Exception):
                out.append(rows)
            else:
                out.append([_transition(domain, row, reason) for row in rows])
        return out

    async def expire_offers(self, now_ms: int) -> list[Transition]:
        """Time-driven step: lapse overdue offers in every domain and re-route their contacts."""
        domains = [_text(d) for d in await self.redis.smembers(DOMAINS_KEY)]
        if not domains:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for domain in domains:
            self._call(pipe, "expire", domain, now_ms, self._timeout_ms, self._limit,
                       EXPIRE_BATCH)
        results = await pipe.execute()
        return [_transition(domain, row, "no_answer")
                for domain, rows in zip(domains, results, strict=True) for row in rows]

    async def record_bot_outcomes(
        self, outcomes: Iterable[tuple[str, str, str]], now_ms: int
    ) -> list[bool]:
        """(domain, contact_id, 'contained' | 'escalating') per new contact; True where new."""
        pipe = self.redis.pipeline(transaction=False)
        items = list(outcomes)
        self._note_domains(pipe, (domain for domain, _, _ in items))
        for domain, cid, outcome in items:
            self._call(pipe, "bot", domain, cid, outcome, now_ms, self._retention)
        results = await pipe.execute()
        return [bool(r) for r in results[len(results) - len(items):]]

    def _note_domains(self, pipe: Any, domains: Iterable[str]) -> None:
        new = set(domains) - self._known_domains
        if new:
            pipe.sadd(DOMAINS_KEY, *new)
            self._known_domains |= new


async def domain_stats(client: aioredis.Redis, domain: str) -> dict[str, int]:
    raw = await client.hgetall(prefix(domain) + "stats")
    stats = dict.fromkeys(STAT_FIELDS, 0)
    stats.update({_text(k): int(v) for k, v in raw.items()})
    return stats


async def domain_live(client: aioredis.Redis, domain: str) -> dict[str, int]:
    """Contacts waiting for an agent and contacts with an outstanding offer, right now."""
    p = prefix(domain)
    async with client.pipeline(transaction=False) as pipe:
        pipe.zcard(p + "q")
        pipe.zcard(p + "ox")
        waiting, offered = await pipe.execute()
    return {"waiting": int(waiting), "offered": int(offered)}


async def domains(client: aioredis.Redis) -> list[str]:
    return sorted(_text(d) for d in await client.smembers(DOMAINS_KEY))


def _read_script(name: str) -> str:
    return (resources.files("router.routing") / "scripts" / f"{name}.lua").read_text()
