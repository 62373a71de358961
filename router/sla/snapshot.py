"""The live SLA picture of every routing domain, read from Redis in one consistent step per
domain: per queue the window figures, running totals and live values (waiting, oldest wait, at
risk, estimated wait, agents ready); per domain the agents by state and occupancy. ``/metrics``
(the lease holder's collector) and ``peakroute status`` show the same snapshot."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from router.routing import state
from router.routing.state import AgentView, domains
from router.settings import Settings
from router.sla import buckets
from router.sla.rating import Rating, rate_figures
from router.sla.windows import (
    MINUTE_MS,
    TODAY,
    WINDOW_NAMES,
    Counts,
    WindowPlan,
    active_span_s,
    average_wait_s,
    epoch_minute,
    estimated_wait_s,
    plan,
    service_level,
    timezone,
    unroll,
    window_counts,
)

AGENT_STATES = ("ready", "not_ready")  # logged-in states (offline agents leave the roster)
EWT_WINDOW = "5m"  # the answer rate behind the estimated wait


@dataclass(frozen=True, slots=True)
class WindowFigures:
    counts: Counts
    service_level: float | None
    average_wait_s: float | None

    def as_dict(self) -> dict[str, Any]:
        c = self.counts
        return {"offered": c.offered, "answered": c.answered,
                "answered_within_target": c.answered_within_target, "abandoned": c.abandoned,
                "short_abandoned": c.short_abandoned, "wait_sum_s": c.wait_sum_ms / 1000,
                "wait_max_s": c.wait_max_ms / 1000, "service_level": self.service_level,
                "average_wait_s": self.average_wait_s}


@dataclass(frozen=True, slots=True)
class QueueFigures:
    domain: str
    queue: str
    target_s: float  # the answer target of its normal contacts (VIP may have a shorter one)
    windows: dict[str, WindowFigures]
    totals: Counts  # since the queue first counted (Prometheus counters)
    waiting: int  # escalated, not yet answered nor abandoned (in line or with an offer out)
    queued: int  # of those, in line (no offer out)
    oldest_wait_s: float
    at_risk: int
    agents_ready: int  # ready agents who serve the queue (at any ring)
    estimated_wait_s: float | None

    def as_dict(self) -> dict[str, Any]:
        t = self.totals
        return {"domain": self.domain, "queue": self.queue, "target_s": self.target_s,
                "windows": {k: v.as_dict() for k, v in self.windows.items()},
                "totals": {"offered": t.offered, "answered": t.answered,
                           "answered_within_target": t.answered_within_target,
                           "abandoned": t.abandoned, "short_abandoned": t.short_abandoned,
                           "wait_sum_s": t.wait_sum_ms / 1000},
                "waiting": self.waiting, "queued": self.queued,
                "oldest_wait_s": self.oldest_wait_s, "at_risk": self.at_risk,
                "agents_ready": self.agents_ready, "estimated_wait_s": self.estimated_wait_s}


@dataclass(frozen=True, slots=True)
class DomainFigures:
    domain: str
    agents: dict[str, int]  # logged-in agents by state
    occupancy: float | None  # slots in use / (in use + free slots of ready agents)
    stats: dict[str, int]  # the domain's books (arrived, contained, escalated, ...)

    @property
    def containment(self) -> float | None:
        arrived = self.stats.get("arrived", 0)
        return self.stats.get("contained", 0) / arrived if arrived else None

    def as_dict(self) -> dict[str, Any]:
        return {"domain": self.domain, "agents": self.agents, "occupancy": self.occupancy,
                "bot_containment": self.containment,
                "arrived": self.stats.get("arrived", 0),
                "contained": self.stats.get("contained", 0),
                "escalated": self.stats.get("escalated", 0)}


@dataclass(frozen=True, slots=True)
class Snapshot:
    taken_at_ms: int
    formula: str
    objective: float
    domains: list[DomainFigures] = field(default_factory=list)
    queues: list[QueueFigures] = field(default_factory=list)
    ratings: list[Rating] = field(default_factory=list)  # per domain (router/sla/rating.py)

    def as_dict(self) -> dict[str, Any]:
        return {"taken_at_ms": self.taken_at_ms, "formula": self.formula,
                "objective": self.objective, "domains": [d.as_dict() for d in self.domains],
                "queues": [q.as_dict() for q in self.queues],
                "ratings": [r.as_dict() for r in self.ratings]}

    def rating(self, domain: str) -> Rating | None:
        return next((r for r in self.ratings if r.domain == domain), None)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass(slots=True)
class _AgentTally:
    states: dict[str, int]
    used: int = 0
    free: int = 0
    ready_by_queue: dict[str, int] = field(default_factory=dict)
    free_primary: set[str] = field(default_factory=set)  # queues with a ready agent with room


def _tally_agents(agents: Iterable[AgentView]) -> _AgentTally:
    """Agents -> counts by state, slots used and free, ready agents per queue."""
    tally = _AgentTally(dict.fromkeys(AGENT_STATES, 0))
    for a in agents:
        if not a.logged_in or a.state == "offline":
            continue
        tally.states[a.state] = tally.states.get(a.state, 0) + 1
        room = 0
        for ch, cap in a.capacity.items():
            load = max(a.load.get(ch, 0), 0)
            tally.used += load
            room += max(cap - load, 0)
        for ch, load in a.load.items():  # work on a channel it no longer has capacity for
            if ch not in a.capacity:
                tally.used += max(load, 0)
        if a.state != "ready":
            continue
        tally.free += room
        queues: dict[str, int] = {}  # queue -> the innermost ring the agent serves it from
        for lane, ring in a.serves.items():
            q = lane.partition(".")[0]
            queues[q] = min(ring, queues.get(q, ring))
        for q, ring in queues.items():
            tally.ready_by_queue[q] = tally.ready_by_queue.get(q, 0) + 1
            if room > 0 and ring == 0:
                tally.free_primary.add(q)
    return tally


class BucketCache:
    """Finished buckets (and a recent agent tally), kept by a process that reads snapshots
    again and again (the exporter, `peakroute status`). A bucket is finished once its minute
    (or hour) ended FINAL_AFTER_MS ago: transitions count in the bucket of the routing
    stage's clock, so only a worker whose clock lags by more than that could still add to it.
    Each refresh then reads just the current buckets, the totals and the live values."""

    FINAL_AFTER_MS = buckets.FINAL_AFTER_MS
    # The agent tally costs the reader ~0.5 s of CPU at 10 000 agents (a pipelined HMGET each,
    # parsed in Python): a reader that keeps a cache redoes it at most this often. (Inside
    # Redis as a script it held Redis ~200 ms per 5 000 agents: worse for everyone.)
    AGENTS_MAX_AGE_S = 5.0

    def __init__(self) -> None:
        self.done: dict[str, dict[str, Counts]] = {}  # bucket key -> queue -> counts
        self.agents: dict[str, tuple[float, _AgentTally]] = {}  # prefix -> (when, tally)

    @classmethod
    def finished(cls, end_minute: int, now_ms: int) -> bool:
        """Whether a bucket whose time ends at epoch minute ``end_minute`` is final."""
        return end_minute * MINUTE_MS + cls.FINAL_AFTER_MS <= now_ms

    def keep(self, prefix_: str, needed: set[str]) -> None:
        """Forget this domain's buckets that no window needs any more."""
        for key in [k for k in self.done if k.startswith(prefix_) and k not in needed]:
            del self.done[key]


def _hour_keys(p: str, plans: dict[str, WindowPlan]) -> dict[int, str]:
    return {h: buckets.hour_key_of(p, h) for pl in plans.values() for h in pl.hours}


def _bucket_keys(p: str, plans: dict[str, WindowPlan]) -> dict[str, int]:
    """The windows' bucket keys -> the epoch minute each one's time ends at."""
    ends = {buckets.minute_key_of(p, m): m + 1 for pl in plans.values() for m in pl.minutes}
    ends.update((k, (h + 1) * 60) for h, k in _hour_keys(p, plans).items())
    return ends


async def read_domain(client: aioredis.Redis, domain: str, now_ms: int, settings: Settings,
                      cache: BucketCache | None = None, with_agents: bool = True
                      ) -> tuple[DomainFigures, list[QueueFigures]]:
    """One domain's figures. Its keys share one hash tag, so the reads run as one MULTI: every
    figure comes from the same instant, whatever scripts run meanwhile (finished buckets from
    ``cache`` cannot change any more). ``with_agents=False`` skips the agent tally (agents by state,
    occupancy, ready per queue are then zero), for readers that need only the counts."""
    cache = cache if cache is not None else BucketCache()
    p = state.prefix(domain)
    tz = timezone(settings.sla_timezone)
    now_min = epoch_minute(now_ms)
    plans: dict[str, WindowPlan] = {w: plan(w, now_ms, tz) for w in WINDOW_NAMES}
    # An hour the timer cannot have rolled up yet (it just ended) is read from its minutes.
    plans = {w: unroll(pl, [h for h in pl.hours if not buckets.rolled_by(h, now_min)])
             for w, pl in plans.items()}
    queues = sorted(_text(q) for q in await client.smembers(state.key(domain,
                                                                       state.Key.SLA_QUEUES)))
    to_read = sorted(k for k in _bucket_keys(p, plans) if k not in cache.done)
    async with client.pipeline(transaction=True) as pipe:
        pipe.hgetall(state.key(domain, state.Key.SLA_TOTALS))
        for k in to_read:
            pipe.hgetall(k)
        pipe.hgetall(state.key(domain, state.Key.WAITING_COUNTS))
        pipe.hgetall(state.key(domain, state.Key.STATS))
        results = iter(await pipe.execute())
    totals_of = buckets.per_queue(next(results))
    raw_of = {k: next(results) for k in to_read}
    wn_raw, stats_raw = next(results), next(results)
    # An hour the timer missed a minute of is read from its minutes too (finished by now: a
    # second read sees what the first would have).
    hour_keys = {k: h for h, k in _hour_keys(p, plans).items()}
    missed = [h for k, h in hour_keys.items()
              if k in raw_of and not buckets.complete(raw_of[k], h)]
    if missed:
        plans = {w: unroll(pl, missed) for w, pl in plans.items()}
        more = sorted(k for k in _bucket_keys(p, plans) if k not in cache.done and k not in raw_of)
        async with client.pipeline(transaction=False) as pipe:
            for k in more:
                pipe.hgetall(k)
            raw_of.update(zip(more, await pipe.execute(), strict=True))
    ends = _bucket_keys(p, plans)
    cache.keep(p, set(ends))
    fresh = {k: buckets.per_queue(raw) for k, raw in raw_of.items()}
    all_buckets = {**cache.done, **fresh}
    cache.done.update((k, c) for k, c in fresh.items()
                      if k in ends and BucketCache.finished(ends[k], now_ms)
                      and (k not in hour_keys or buckets.complete(raw_of[k], hour_keys[k])))
    minutes = sorted({m for pl in plans.values() for m in pl.minutes})
    hours = sorted({h for pl in plans.values() for h in pl.hours})
    per_queue: dict[str, tuple[Counts, dict[int, Counts], dict[int, Counts]]] = {}
    for q in queues:
        per_queue[q] = (totals_of.get(q, Counts()),
                        {m: all_buckets[buckets.minute_key_of(p, m)].get(q, Counts())
                         for m in minutes},
                        {h: all_buckets[buckets.hour_key_of(p, h)].get(q, Counts())
                         for h in hours})
    live: dict[str, list[int | float]] = {}  # queue -> [waiting, oldest escalation, at risk]
    targets: dict[str, int] = {}
    for u in await state.unanswered(client, domain, now_ms, settings.sla_at_risk_share):
        cur = live.setdefault(u.queue, [0, float("inf"), 0])
        cur[0] += u.waiting
        if u.oldest_escalated_ms is not None:
            cur[1] = min(cur[1], float(u.oldest_escalated_ms))
        cur[2] += u.at_risk
        targets[u.queue] = max(targets.get(u.queue, 0), u.target_ms)
    wn = {_text(k): int(v) for k, v in wn_raw.items()}
    stats = dict.fromkeys(state.STAT_FIELDS, 0)
    stats.update({_text(k): int(v) for k, v in stats_raw.items()})
    # Agents are tallied apart from the MULTI: their counts need not share the queues' instant.
    tally = cache.agents.get(p)
    if not with_agents:
        tally = (0.0, _AgentTally(dict.fromkeys(AGENT_STATES, 0)))
    elif tally is None or time.monotonic() - tally[0] > BucketCache.AGENTS_MAX_AGE_S:
        tally = (time.monotonic(),
                 _tally_agents((await state.read_agents(client, domain)).values()))
        cache.agents[p] = tally
    _, agent_tally = tally
    queued: dict[str, int] = {}
    for list_id, n in wn.items():
        q = state.ListId.parse(list_id).queue
        queued[q] = queued.get(q, 0) + n
    out = []
    for q in sorted(set(queues) | set(live)):
        totals, mins, hrs = per_queue.get(q, (Counts(), {}, {}))
        windows = {}
        for w, pl in plans.items():
            c = window_counts(pl, mins, hrs)
            windows[w] = WindowFigures(c, service_level(c, settings.sla_formula),
                                       average_wait_s(c))
        waiting, oldest, risk = live.get(q, [0, float("inf"), 0])
        oldest_s = max(now_ms - oldest, 0) / 1000 if oldest != float("inf") else 0.0
        # Contacts with an offer out are not ahead of a new one: only those in line are.
        ewt = estimated_wait_s(queued.get(q, 0), q in agent_tally.free_primary,
                               windows[EWT_WINDOW].counts.answered,
                               active_span_s(plans[EWT_WINDOW], mins, now_ms))
        out.append(QueueFigures(
            domain=domain, queue=q,
            target_s=(targets.get(q) or settings.sla_target_ms) / 1000,
            windows=windows, totals=totals, waiting=int(waiting), queued=queued.get(q, 0),
            oldest_wait_s=oldest_s, at_risk=int(risk),
            agents_ready=agent_tally.ready_by_queue.get(q, 0), estimated_wait_s=ewt))
    capacity = agent_tally.used + agent_tally.free
    figures = DomainFigures(domain, agent_tally.states,
                            agent_tally.used / capacity if capacity else None, stats)
    return figures, out


async def read_snapshot(client: aioredis.Redis, settings: Settings,
                        now_ms: int | None = None, only: str = "",
                        cache: BucketCache | None = None) -> Snapshot:
    """Every domain's figures (or only the domain ``only``). Pass the same ``cache`` to read
    finished buckets only once."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    snap = Snapshot(now, settings.sla_formula, settings.sla_objective_ratio)
    for domain in await domains(client):
        if only and domain != only:
            continue
        d, qs = await read_domain(client, domain, now, settings, cache)
        snap.domains.append(d)
        snap.queues.extend(qs)
        snap.ratings.append(rate_figures(d, qs, settings))
    return snap


__all__ = ["TODAY", "BucketCache", "DomainFigures", "QueueFigures", "Snapshot", "WindowFigures",
           "read_domain", "read_snapshot"]
