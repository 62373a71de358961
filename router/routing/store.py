"""Routing state in Redis: atomic Lua scripts per transition, called in pipelined batches.

Keys of a routing domain share the hash tag ``{d:<domain>}`` (one Redis Cluster slot). Each
script is ``scripts/common.lua`` + its own body, called with EVALSHA (Redis >= 6.2 and Cluster)
in one pipeline per batch; a script Redis lost is loaded and its calls re-sent (NOSCRIPT). The
scripts only do what must be atomic; the parameters (time, policy, timeouts) come from Python.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from router import logs, transient
from router.errors import PeakrouteError, PolicyError, RoutingStoreError
from router.events import (
    AgentLoggedIn,
    AgentLoggedOut,
    AgentProfileChanged,
    AgentState,
    AgentStateChanged,
    ContactCompleted,
    CustomerLeft,
    Event,
    OfferAccepted,
    OfferDeclined,
    RoutingRequested,
)
from router.routing.config import DomainPolicy, RoutingPolicy
from router.routing.policy import (
    effective_capacity,
    format_levels,
    memberships,
    parse_levels,
    plan_request,
    seats,
)
from router.settings import Settings

log = logs.get("routing")
DOMAINS_KEY = "pr:domains"  # set of routing domains seen (outside any hash tag: plain set)
TICK_BATCH = 500  # offers and ring openings one tick handles per domain
SCRIPTS = ("request", "accept", "decline", "tick", "complete", "login", "state", "logout",
           "left", "bot", "profile")
# Scripts made of another's body behind a prelude of their own: profile = profile + login.
PRELUDES = {"profile": "login"}
STAT_FIELDS = (
    "arrived", "contained", "escalating", "escalated", "offered", "answered",
    "answered_within_target", "wait_sum_ms", "abandoned", "short_abandoned", "completed",
    "declined", "expired", "relaxed", "rescinded", "invariant_violations",
)


_Call = tuple[str, str, tuple[Any, ...]]  # script name, domain prefix (KEYS[1]), ARGV


def prefix(domain: str) -> str:
    return f"pr:{{d:{domain}}}:"


@dataclass(frozen=True, slots=True)
class Transition:
    """One thing a script did, as Python sees it (becomes audit and assignment events)."""

    kind: str  # queued offered answered declined expired rescinded relaxed abandoned completed...
    domain: str
    contact_id: str = ""
    agent_id: str = ""
    offer_id: str = ""
    channel: str = ""
    lane: str = ""  # queue.language
    ring: int = 0
    waited_ms: int = 0
    expires_at_ms: int = 0  # offered: when the offer lapses
    within_target: bool = False  # answered: inside the contact's service target
    priority: int = 0
    reason: str = ""  # stale / duplicate: the state the contact was in
    seq: int = 0  # queued / relaxed: the contact's own count of these (distinct event ids)

    @property
    def queue(self) -> str:
        return self.lane.partition(".")[0]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _int(value: Any) -> int:
    return value if isinstance(value, int) else int(_text(value) or 0)


def _transition(domain: str, row: Sequence[Any], queued_reason: str = "") -> Transition:
    """A script row: kind, cid, aid, oid, channel, lane, ring, waited, n2, priority, reason."""
    kind, cid, aid, oid, ch, lane = (_text(v) for v in row[:6])
    ring, waited, n2, pri = (_int(v) for v in row[6:10])
    reason = _text(row[10]) or (queued_reason if kind == "queued" else "")
    return Transition(kind, domain, cid, aid, oid, ch, lane, ring, waited,
                      expires_at_ms=n2 if kind == "offered" else 0,
                      within_target=kind == "answered" and n2 == 1, priority=pri,
                      reason=reason, seq=n2 if kind in {"queued", "relaxed"} else 0)


class RoutingStore:
    """Applies routing events to Redis atomically and reports the transitions."""

    def __init__(self, client: aioredis.Redis, settings: Settings,
                 policy: RoutingPolicy) -> None:
        self.redis = client
        self.settings = settings
        self.policy = policy
        common = _read_script("common")
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script(common + "\n" + _read_script(name) + (
                "\n" + _read_script(PRELUDES[name]) if name in PRELUDES else ""))
            for name in SCRIPTS
        }
        self._limit = settings.match_scan_limit
        self._retention = settings.contact_retention_s
        self._short_ms = int(settings.short_abandon_s * 1000)
        # SLA buckets' expiry: every call carries it as its last ARGV (common.lua SLA_TTL).
        self._sla_ttl = settings.sla_bucket_ttl_s
        self._known_domains: set[str] = set()
        self._loaded = False  # scripts loaded into this Redis by this process
        self._seated: set[str] = set()  # domains whose agents this process re-seated

    def _call(self, calls: list[_Call], name: str, domain: str, *args: Any) -> None:
        calls.append((name, prefix(domain), args))

    async def _load_scripts(self) -> None:
        """All scripts at once, so a Redis has either every one of them or (restarted,
        flushed) none: a batch's calls then all run, or none does."""
        pipe = self.redis.pipeline(transaction=False)
        for script in self._scripts.values():
            pipe.script_load(script.script)
        await pipe.execute()
        self._loaded = True

    async def _run(self, calls: list[_Call], domains: Iterable[str] = ()) -> list[Any]:
        """EVALSHA each call in one pipeline (one round trip; noting new domains rides along).
        A Redis that lost the scripts answers NOSCRIPT: they are loaded and the calls from the
        first refused one on are sent again, in order (any that did run, after a flush in the
        middle of the batch, comes back duplicate or stale and keeps its first result). Per
        call: its result, or the error its script raised."""
        if not self._loaded:
            await self._load_scripts()
        new = set(domains) - self._known_domains
        pipe = self.redis.pipeline(transaction=False)
        if new:
            pipe.sadd(DOMAINS_KEY, *new)
        for name, key, args in calls:
            pipe.evalsha(self._scripts[name].sha, 1, key, *args, self._sla_ttl)
        results = list(await pipe.execute(raise_on_error=False))[1 if new else 0:]
        self._known_domains |= new
        first = next((i for i, r in enumerate(results) if isinstance(r, NoScriptError)), None)
        if first is not None:
            await self._load_scripts()
            pipe = self.redis.pipeline(transaction=False)
            for name, key, args in calls[first:]:
                pipe.evalsha(self._scripts[name].sha, 1, key, *args, self._sla_ttl)
            again = await pipe.execute(raise_on_error=False)
            for i, result in enumerate(again, start=first):
                if isinstance(results[i], NoScriptError):
                    results[i] = result
        # Redis refusing (OOM, READONLY, BUSY, ...) is not the data's fault: the batch is
        # retried (scripts that did run replay their outputs), nothing is dead-lettered.
        transient.raise_transient(results)
        return results

    def _login(self, calls: list[_Call], domain: str, policy: DomainPolicy, agent_id: str,
               skills: dict[str, int], asked: dict[str, int], ready: bool, now_ms: int,
               script: str = "login") -> None:
        """The login script for an agent profile under this policy: its lanes and pools, its
        capacity capped by the policy, and the policy's digest (see reseat). ``script``
        "profile": only for an agent logged in, keeping its state (see profile.lua)."""
        self._call(calls, script, domain, agent_id, format_levels(skills),
                   format_levels(effective_capacity(asked, policy)), int(ready),
                   ";".join(m.encode() for m in memberships(skills, policy)),
                   ";".join(s.encode() for s in seats(skills, policy)), now_ms,
                   int(policy.offer_timeout_s * 1000), self._limit, format_levels(asked),
                   self.policy.digest)

    def _queue(self, calls: list[_Call], event: Event, now_ms: int) -> str:
        """Queue the script for one event, with the policy's parameters for it. Returns the
        reason a ``queued`` transition of a request carries."""
        domain = getattr(event, "domain", "")
        policy = self.policy.for_domain(domain)
        t, limit = int(policy.offer_timeout_s * 1000), self._limit
        match event:
            case RoutingRequested():
                plan = plan_request(event, policy)
                self._call(calls, "request", domain, event.contact_id, event.channel.value,
                           plan.lane, plan.service_class, plan.score, event.ts_ms,
                           event.priority, plan.target_ms, repr(plan.weight),
                           ",".join(map(str, plan.ring_delays_ms)), ";".join(plan.ring_pools),
                           format_levels(plan.extra_skills), plan.queue, plan.strategy.value,
                           now_ms, t, limit)
                return plan.reason or event.reason
            case CustomerLeft():
                self._call(calls, "left", domain, event.contact_id, now_ms, self._short_ms,
                           t, limit, self._retention)
            case OfferAccepted():
                self._call(calls, "accept", domain, event.agent_id, event.offer_id,
                           event.contact_id, now_ms)
            case OfferDeclined():
                self._call(calls, "decline", domain, event.agent_id, event.offer_id,
                           event.contact_id, now_ms, t, limit, policy.on_decline.value,
                           event.reason or "declined")
            case ContactCompleted():
                self._call(calls, "complete", domain, event.agent_id, event.contact_id,
                           now_ms, t, limit, self._retention)
            case AgentLoggedIn():
                self._login(calls, domain, policy, event.agent_id, event.skills,
                            event.capacity, event.ready, now_ms)
            case AgentStateChanged() if event.state == AgentState.OFFLINE:
                # Going offline is leaving: offers are withdrawn and re-routed, as on logout.
                self._call(calls, "logout", domain, event.agent_id, now_ms, t, limit)
            case AgentStateChanged():
                self._call(calls, "state", domain, event.agent_id, event.state.value, now_ms,
                           t, limit)
            case AgentLoggedOut():
                self._call(calls, "logout", domain, event.agent_id, now_ms, t, limit)
            case AgentProfileChanged():
                self._login(calls, domain, policy, event.agent_id, event.skills,
                            event.capacity, True, now_ms, script="profile")
            case _:
                raise RoutingStoreError(f"no routing script for {event.TYPE}")
        return ""

    async def apply(
        self, events: Sequence[Event], now_ms: int
    ) -> list[list[Transition] | Exception]:
        """Run one script per event, in order, in a single round trip.

        Returns, per event, its transitions, or the error its script raised (or the policy
        refused it with; the other events are unaffected: each script is atomic on its own).
        Connection errors propagate.
        """
        if not events:
            return []
        calls: list[_Call] = []
        queued: list[tuple[int, str]] = []  # (event index, its queued reason) per script
        out: list[list[Transition] | Exception] = []
        for i, event in enumerate(events):
            try:
                queued.append((i, self._queue(calls, event, now_ms)))
            except PeakrouteError as exc:
                out.append(exc)
                continue
            out.append([])
        if not queued:
            return out
        results = await self._run(calls, (getattr(events[i], "domain", "") for i, _ in queued))
        for (i, reason), rows in zip(queued, results, strict=True):
            domain = getattr(events[i], "domain", "")
            out[i] = rows if isinstance(rows, Exception) else [_transition(domain, r, reason)
                                                               for r in rows]
        return out

    async def reseat(self, domain: str, now_ms: int) -> list[Transition]:
        """Agents logged in under another routing policy sit in pools this one does not use:
        log them in again with their own skills and capacity under this policy (state and
        idle time kept). Once per domain per process, from the timer."""
        self._seated.add(domain)
        p = prefix(domain)
        agents = [_text(a) for a in await self.redis.smembers(p + "agents")]
        if not agents:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for aid in agents:
            pipe.hmget(p + "a:" + aid, "pd", "st", "sk", "rq")
        stale = [(aid, *(_text(v) for v in row[1:]))
                 for aid, row in zip(agents, await pipe.execute(), strict=True)
                 if _text(row[0]) != self.policy.digest and row[1] is not None]
        if not stale:
            return []
        policy = self.policy.for_domain(domain)
        calls: list[_Call] = []
        for aid, state, skills_text, asked_text in stale:
            self._login(calls, domain, policy, aid, parse_levels(skills_text),
                        parse_levels(asked_text), state == "ready", now_ms)
        log.info("routing_agents_reseated",
                 extra=logs.fields(domain=domain, agents=len(stale), policy=self.policy.digest))
        return [_transition(domain, row) for rows in await self._run(calls)
                if not isinstance(rows, Exception) for row in rows]

    async def tick(self, now_ms: int) -> list[Transition]:
        """Time-driven step in every domain: lapse overdue offers, open due rings (and, the
        first time this process sees a domain, re-seat agents from another policy)."""
        domains = [_text(d) for d in await self.redis.smembers(DOMAINS_KEY)]
        if not domains:
            return []
        reseated: list[Transition] = []
        for domain in domains:
            if domain not in self._seated:
                with contextlib.suppress(PolicyError):
                    reseated += await self.reseat(domain, now_ms)
        calls: list[_Call] = []
        ticked = []
        for domain in domains:
            try:
                policy = self.policy.for_domain(domain)
            except PolicyError:
                # Seen once (its events were dead-lettered) but the policy does not cover it:
                # nothing of it can be waiting. Other domains keep their timer.
                continue
            self._call(calls, "tick", domain, now_ms, int(policy.offer_timeout_s * 1000),
                       self._limit, TICK_BATCH, policy.on_no_answer.value)
            ticked.append(domain)
        if not ticked:
            return reseated
        out: list[Transition] = reseated
        for domain, rows in zip(ticked, await self._run(calls), strict=True):
            if isinstance(rows, Exception):  # one domain's failure leaves the others' steps
                log.error("routing_tick_failed",
                          extra=logs.fields(domain=domain, error=str(rows)[:300]))
                continue
            out.extend(_transition(domain, row) for row in rows)
        return out

    async def record_bot_outcomes(
        self, outcomes: Iterable[tuple[str, str, str]], now_ms: int
    ) -> list[bool]:
        """(domain, contact_id, 'contained' | 'escalating') per new contact; True where new."""
        items = list(outcomes)
        calls: list[_Call] = []
        for domain, cid, outcome in items:
            self._call(calls, "bot", domain, cid, outcome, now_ms, self._retention)
        results = await self._run(calls, (domain for domain, _, _ in items))
        for result in results:
            if isinstance(result, Exception):
                raise result
        return [bool(r) for r in results]


async def domain_stats(client: aioredis.Redis, domain: str) -> dict[str, int]:
    raw = await client.hgetall(prefix(domain) + "stats")
    stats = dict.fromkeys(STAT_FIELDS, 0)
    stats.update({_text(k): int(v) for k, v in raw.items()})
    return stats


async def domain_live(client: aioredis.Redis, domain: str) -> dict[str, int]:
    """Contacts waiting for an agent and contacts with an outstanding offer, right now."""
    p = prefix(domain)
    async with client.pipeline(transaction=False) as pipe:
        pipe.zcard(p + "ox")
        pipe.hvals(p + "wn")
        offered, waiting = await pipe.execute()
    return {"waiting": sum(int(n) for n in waiting), "offered": int(offered)}


async def domains(client: aioredis.Redis) -> list[str]:
    return sorted(_text(d) for d in await client.smembers(DOMAINS_KEY))


def _read_script(name: str) -> str:
    return (resources.files("router.routing") / "scripts" / f"{name}.lua").read_text()
