"""What the desktop and the supervisor console show: agents' routing state and load, queues'
live figures, an agent's figures today, an offer's context, and the service level per queue
tallied from routing.decisions. Routing state is read through its owner's readers
(router/routing/state.py), never by raw key."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from router.events import AssignmentOffered, Channel, Decision, RoutingDecision
from router.routing import state
from router.routing.config import DomainPolicy
from router.settings import Settings
from router.sla.rating import rate_figures
from router.sla.snapshot import BucketCache, read_domain
from router.stage import now_ms

AT_RISK_SHARE = 2 / 3  # a contact that waited past 2/3 of its target is at risk
DAY_TTL_S = 2 * 86_400
FIGURES = ("offered", "answered", "within_target", "declined", "missed", "completed")
# Routing decision -> the agent's figure it counts in.
FIGURE_OF = {Decision.OFFERED: "offered", Decision.ACCEPTED: "answered",
             Decision.DECLINED: "declined", Decision.EXPIRED: "missed",
             Decision.COMPLETED: "completed"}
# Count an agent's figure once per decision event id (several gateways may see it).
COUNT_ONCE = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then
  redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return 1
"""


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v or "")


def today(now_s: float | None = None) -> str:
    return time.strftime("%Y%m%d", time.gmtime(time.time() if now_s is None else now_s))


def day_key(domain: str, agent_id: str, day: str) -> str:
    return state.gateway_day_key(domain, day, agent_id)


def active_key(domain: str, agent_id: str) -> str:
    """Contacts the agent accepted through a desktop (checked against routing on read)."""
    return state.gateway_active_key(domain, agent_id)


def online_key(domain: str) -> str:
    """zset: agent id -> the last time a gateway saw its desktop connected (ms)."""
    return state.gateway_online_key(domain)


@dataclass(frozen=True, slots=True)
class AgentView:
    agent_id: str
    state: str  # ready | not_ready | offline
    skills: dict[str, int]
    capacity: dict[str, int]
    load: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {"agent_id": self.agent_id, "state": self.state, "skills": self.skills,
                "capacity": self.capacity, "load": self.load}


async def agent_views(client: aioredis.Redis, domain: str, agent_ids: Iterable[str]
                      ) -> dict[str, AgentView]:
    """Routing state of these agents; offline when not logged in."""
    ids = list(agent_ids)
    if not ids:
        return {}
    views = await state.read_agents(client, domain, ids)
    return {aid: AgentView(aid, v.state, v.skills, v.capacity,
                           {ch: v.load.get(ch, 0) for ch in v.capacity})
            for aid, v in views.items()}


async def figures_today(client: aioredis.Redis, domain: str, agent_ids: Iterable[str]
                        ) -> dict[str, dict[str, int]]:
    ids = list(agent_ids)
    if not ids:
        return {}
    day = today()
    pipe = client.pipeline(transaction=False)
    for aid in ids:
        pipe.hgetall(day_key(domain, aid, day))
    rows = await pipe.execute()
    return {aid: {f: int(_s(row.get(f.encode(), b"0")) or 0) for f in FIGURES}
            for aid, row in zip(ids, rows, strict=True)}


@dataclass(frozen=True, slots=True)
class OfferContext:
    intent: str
    language: str
    priority: int
    vip: bool
    transcript: list[dict[str, Any]]


async def offer_contexts(client: aioredis.Redis, items: Iterable[tuple[str, str]]
                         ) -> dict[tuple[str, str], OfferContext]:
    """(domain, contact) -> what the agent should see before accepting, from the routing
    state: the context its request carried (intent, language, transcript) and its record
    (priority, service class)."""
    keys = list(dict.fromkeys(items))
    out = {}
    for domain, cid in keys:
        contact = (await state.read_contacts(client, domain, [cid])).get(cid)
        ctx = await state.read_context(client, domain, cid)
        lane = contact.lane if contact else ""
        out[(domain, cid)] = OfferContext(
            intent=ctx.intent, language=ctx.language or lane.partition(".")[2],
            priority=contact.priority if contact else 0,
            vip=contact.vip if contact else ctx.tier == "vip",
            transcript=[dict(t) for t in ctx.transcript])
    return out


@dataclass
class QueueTally:
    answered: int = 0
    within_target: int = 0
    abandoned: int = 0
    short_abandoned: int = 0

    def service_level(self) -> float | None:
        denominator = self.answered + self.abandoned - self.short_abandoned
        return round(self.within_target / denominator, 4) if denominator > 0 else None


@dataclass
class ServiceLevels:
    """Service level per (domain, queue) from the routing.decisions this gateway read since it
    started (accepted within target / (accepted + abandoned - short abandons))."""

    short_abandon_ms: int
    since_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    tallies: dict[tuple[str, str], QueueTally] = field(
        default_factory=lambda: defaultdict(QueueTally))

    def add(self, d: RoutingDecision) -> None:
        if d.decision == Decision.ACCEPTED:
            t = self.tallies[(d.domain, d.queue)]
            t.answered += 1
            t.within_target += int(d.within_target)
        elif d.decision == Decision.ABANDONED and d.waited_ms > 0:
            t = self.tallies[(d.domain, d.queue)]
            t.abandoned += 1
            t.short_abandoned += int(d.waited_ms < self.short_abandon_ms)


async def queue_figures(client: aioredis.Redis, domain: str, policy: DomainPolicy,
                        levels: ServiceLevels, now_ms: int) -> list[dict[str, Any]]:
    """Per queue of the policy: target, waiting, oldest wait, at risk, service level."""
    per: dict[str, dict[str, int]] = {}
    for u in await state.unanswered(client, domain, now_ms, AT_RISK_SHARE):
        q = per.setdefault(u.queue, {"waiting": 0, "at_risk": 0, "oldest_wait_ms": 0})
        q["waiting"] += u.waiting
        q["at_risk"] += u.at_risk
        if u.oldest_escalated_ms is not None:
            q["oldest_wait_ms"] = max(q["oldest_wait_ms"], now_ms - u.oldest_escalated_ms)
    out = []
    for q_policy in policy.queues.values():
        live = per.get(q_policy.name, {"waiting": 0, "at_risk": 0, "oldest_wait_ms": 0})
        tally = levels.tallies.get((domain, q_policy.name), QueueTally())
        out.append({"queue": q_policy.name, "target_s": q_policy.normal.target_s, **live,
                    "answered": tally.answered, "within_target": tally.within_target,
                    "abandoned": tally.abandoned, "service_level": tally.service_level()})
    return out


class Ratings:
    """The domain's merchant service rating for the console (router/sla/rating.py), read from
    the SLA counts (not the agents) at most every REFRESH_S per domain: it moves slowly."""

    REFRESH_S = 10.0

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self._cache = BucketCache()
        self._last: dict[str, tuple[float, dict[str, Any]]] = {}

    async def of(self, domain: str, now_ms: int) -> dict[str, Any]:
        kept = self._last.get(domain)
        if kept is None or time.monotonic() - kept[0] > self.REFRESH_S:
            d, queues = await read_domain(self.redis, domain, now_ms, self.settings,
                                          self._cache, with_agents=False)
            kept = (time.monotonic(), rate_figures(d, queues, self.settings).as_dict())
            self._last[domain] = kept
        return kept[1]


# --- reads from Redis --------------------------------------------------------------------

async def outstanding_offers(client: aioredis.Redis, domain: str, agent_id: str
                             ) -> list[AssignmentOffered]:
    """The agent's open offers, from the routing state (a reconnecting desktop)."""
    out, now = [], now_ms()
    for c, expires in await state.offers_of(client, domain, agent_id):
        if expires <= now:
            continue
        out.append(AssignmentOffered(
            event_id=uuid.uuid4().hex, ts_ms=now, offer_id=c.offer_id, contact_id=c.contact_id,
            agent_id=agent_id, domain=domain, channel=Channel(c.channel or "chat"),
            expires_at_ms=expires, waited_ms=max(now - (c.escalated_at_ms or now), 0),
            priority=c.priority, queue=c.queue))
    return out


async def active_contacts(client: aioredis.Redis, domain: str, agent_id: str
                          ) -> dict[str, dict[str, Any]]:
    """Contacts the agent answered and has not completed: the desktop's index, each
    checked against the routing state (stale entries are dropped)."""
    key = active_key(domain, agent_id)
    cids = [_s(c) for c in await client.smembers(key)]
    if not cids:
        return {}
    contacts = await state.read_contacts(client, domain, cids)
    out, stale = {}, []
    for cid in cids:
        c = contacts.get(cid)
        if c is not None and c.state == state.ContactState.ANSWERED and c.agent_id == agent_id:
            out[cid] = {"contact_id": cid, "offer_id": c.offer_id, "queue": c.queue,
                        "channel": c.channel, "since": c.answered_at_ms}
        else:
            stale.append(cid)
    if stale:
        await client.srem(key, *stale)
    return out


def online_since(scores: Mapping[Any, float], now_ms: int, within_ms: int) -> set[str]:
    return {_s(k) for k, v in scores.items() if now_ms - v <= within_ms}
