"""What the desktop and the supervisor console show: agents' routing state and load, queues'
live figures and service levels (router/sla's), an agent's figures today, an offer's context.
Routing state is read through its owner's readers
(router/routing/state.py), never by raw key."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from router.events import AssignmentOffered, Channel, Decision
from router.routing import state
from router.routing.config import DomainPolicy
from router.settings import Settings
from router.sla.rating import rate_figures
from router.sla.snapshot import TODAY, BucketCache, read_domain
from router.stage import now_ms

CONSOLE_WINDOW = TODAY  # the window of a queue's headline figures (all windows are sent too)
DAY_TTL_S = 2 * 86_400
FIGURES = ("offered", "answered", "within_target", "declined", "missed", "completed")
# Routing decision -> the agent's figure it counts in.
FIGURE_OF = {Decision.OFFERED: "offered", Decision.ACCEPTED: "answered",
             Decision.DECLINED: "declined", Decision.EXPIRED: "missed",
             Decision.COMPLETED: "completed"}
# Count an agent's figure once per decision event id (several gateways may see it).
# The dedupe key lives ARGV[4] seconds: as long as a re-delivery of the decision can reach a
# gateway (PEAKROUTE_GATEWAY_SEEN_TTL_S), not as long as the day's figures (ARGV[3]).
COUNT_ONCE = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[4]) then
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
    (priority, service class). One round trip, whatever the number of offers and domains."""
    by_domain: dict[str, list[str]] = {}
    for domain, cid in dict.fromkeys(items):
        by_domain.setdefault(domain, []).append(cid)
    out = {}
    for (domain, cid), (contact, ctx) in (await state.read_offered(client, by_domain)).items():
        lane = contact.lane if contact else ""
        out[(domain, cid)] = OfferContext(
            intent=ctx.intent, language=ctx.language or lane.partition(".")[2],
            priority=contact.priority if contact else 0,
            vip=contact.vip if contact else ctx.tier == "vip",
            transcript=[dict(t) for t in ctx.transcript])
    return out


class DomainConsole:
    """A domain's queue figures and rating for the console, from router/sla: the same windows,
    formula, at-risk share and day boundary (PEAKROUTE_SLA_TIMEZONE) as /metrics and
    `peakroute status`, read from the same buckets (finished ones once, BucketCache)."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self._cache = BucketCache()

    async def read(self, domain: str, policy: DomainPolicy, now_ms: int
                   ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Per queue of the policy (and any other queue with figures): target, waiting, oldest
        wait, at risk, the service level of each window; and the domain's rating."""
        d, figures = await read_domain(self.redis, domain, now_ms, self.settings, self._cache,
                                       with_agents=False)
        by_queue = {q.queue: q for q in figures}
        names = list(policy.queues) + sorted(set(by_queue) - set(policy.queues))
        out = []
        for name in names:
            q = by_queue.get(name)
            q_policy = policy.queues.get(name)
            target_s = q_policy.normal.target_s if q_policy else (q.target_s if q else 0.0)
            windows = {w: {"service_level": f.service_level, "offered": f.counts.offered,
                           "answered": f.counts.answered,
                           "answered_within_target": f.counts.answered_within_target,
                           "abandoned": f.counts.abandoned,
                           "short_abandoned": f.counts.short_abandoned}
                       for w, f in (q.windows.items() if q else ())}
            shown = windows.get(CONSOLE_WINDOW, {})
            out.append({"queue": name, "target_s": target_s,
                        "waiting": q.waiting if q else 0,
                        "oldest_wait_ms": int(q.oldest_wait_s * 1000) if q else 0,
                        "at_risk": q.at_risk if q else 0,
                        "answered": shown.get("answered", 0),
                        "within_target": shown.get("answered_within_target", 0),
                        "abandoned": shown.get("abandoned", 0),
                        "service_level": shown.get("service_level"), "windows": windows})
        return out, rate_figures(d, figures, self.settings).as_dict()


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
