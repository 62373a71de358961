"""Routing state in Redis: one atomic Lua script per transition, called in pipelined batches.

The layout, the scripts' arguments and their results belong to router/routing/state.py; this
module decides which script an event calls with which arguments (from the routing policy), runs
them (one EVALSHA each, one round trip per batch; a script Redis lost is loaded and its calls
re-sent), and keeps the outbox moving: the entries a batch's transitions were kept under are
deleted once Kafka has their records (``ack``; the deletes ride along with the next batch).
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from router import logs, metrics, transient
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
from router.routing import state
from router.routing.config import DomainPolicy, RoutingPolicy
from router.routing.policy import effective_capacity, memberships, plan_request, seats
from router.routing.state import (
    DOMAINS_KEY,
    STAT_FIELDS,
    Args,
    CompleteArgs,
    DeclineArgs,
    Entry,
    Key,
    LeftArgs,
    LoginArgs,
    LoginMode,
    LogoutArgs,
    RequestArgs,
    StateArgs,
    TickArgs,
    Transition,
)
from router.settings import Settings

log = logs.get("routing")
TICK_BATCH = 500  # offers, ring openings and pending matches one tick handles per domain
PURGE_BATCH = 2000  # finished contacts one tick forgets per domain
RESEAT_BATCH = 500  # agents one tick looks at for re-seating, per domain
OUTBOX_LEASE_MS = 10_000  # an outbox entry older than this is re-sent by the timer

# Re-exported readers (callers that only need the books).
domain_stats = state.stats
domain_live = state.live
domains = state.domains
prefix = state.prefix
__all__ = ["DOMAINS_KEY", "STAT_FIELDS", "RoutingStore", "Transition", "domain_live",
           "domain_stats", "domains", "prefix"]


@dataclass(frozen=True, slots=True)
class _Call:
    domain: str
    args: Args
    entry: str  # the outbox entry id: the input event's id, or the timer step's


@dataclass(slots=True)
class _Reseat:
    """A domain's re-seating pass: where its scan of the agents stands."""

    cursor: int = 0
    stale_seen: bool = False


@dataclass(slots=True)
class _Pending:
    acks: dict[str, set[str]] = field(default_factory=dict)  # domain -> outbox entries

    def add(self, domain: str, entry: str) -> None:
        self.acks.setdefault(domain, set()).add(entry)

    def take(self) -> dict[str, set[str]]:
        acks, self.acks = self.acks, {}
        return acks


class RoutingStore:
    """Applies routing events to Redis atomically and reports the transitions."""

    def __init__(self, client: aioredis.Redis, settings: Settings,
                 policy: RoutingPolicy) -> None:
        self.redis = client
        self.settings = settings
        self.policy = policy
        self.policy_loaded_ms = time.time_ns() // 1_000_000
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script(state.script_source(name)) for name in state.SCRIPTS}
        self._shas = {name: script.sha.encode() for name, script in self._scripts.items()}
        self._key_cache: dict[tuple[str, str, int], list[bytes]] = {}
        self._claim = client.register_script(state.POLICY_CLAIM_SCRIPT)
        self._limit = settings.match_scan_limit
        self._retention = settings.contact_retention_s
        self._short_ms = int(settings.short_abandon_s * 1000)
        self._sla_ttl = settings.sla_bucket_ttl_s
        self._loaded = False  # scripts loaded into this Redis by this process
        self._pending = _Pending()
        self._reseat: dict[str, _Reseat] = {}
        self._tick_ids = f"t:{uuid.uuid4().hex[:12]}:"
        self._ticks = 0

    # -- running scripts ------------------------------------------------------------------

    async def _load_scripts(self) -> None:
        """All scripts at once, so a Redis has either every one of them or (restarted,
        flushed) none: a batch's calls then all run, or none does."""
        pipe = self.redis.pipeline(transaction=False)
        for script in (*self._scripts.values(), self._claim):
            pipe.script_load(script.script)
        await pipe.execute()
        self._loaded = True

    def _keys(self, name: str, domain: str, now_ms: int) -> list[bytes]:
        """The script's declared keys, encoded once per (script, domain, minute): redis-py's
        encoding of each argument is much of a call's cost on the client."""
        k = (name, domain, now_ms // 60_000)
        hit = self._key_cache.get(k)
        if hit is None:
            if len(self._key_cache) > 50_000:
                self._key_cache.clear()
            hit = self._key_cache[k] = [x.encode() for x in state.script_keys(name, domain,
                                                                                now_ms)]
        return hit

    def _evalsha(self, pipe: Any, call: _Call, now_ms: int) -> None:
        name = call.args.SCRIPT
        keys = self._keys(name, call.domain, now_ms)
        pipe.evalsha(self._shas[name], len(keys), *keys, call.entry.encode(), now_ms,
                     self._sla_ttl, state.encode_args(call.args))

    async def _run(self, calls: Sequence[_Call], now_ms: int) -> list[Any]:
        """EVALSHA each call in one pipeline (one round trip). Beside them, not inside: the
        domains are registered (an idempotent SADD: Redis may have lost them) and the outbox
        entries Kafka has are deleted. A Redis that lost the scripts answers NOSCRIPT: they are
        loaded and the calls from the first refused one on are sent again, in order (any that
        did run keeps its result: the outbox gives it back). Per call: its raw result, or the
        error its script raised. Dependency failures (router/transient.py) raise."""
        if not self._loaded:
            await self._load_scripts()
        acks = self._pending.take()
        domains_ = {c.domain for c in calls if c.domain}
        pipe = self.redis.pipeline(transaction=False)
        head = 0
        if domains_:
            pipe.sadd(DOMAINS_KEY, *sorted(domains_))
            head += 1
        for domain, entries in acks.items():
            pipe.hdel(state.key(domain, Key.OUTBOX), *entries)
            pipe.zrem(state.key(domain, Key.OUTBOX_TIMES), *entries)
            head += 2
        for call in calls:
            self._evalsha(pipe, call, now_ms)
        try:
            raw = list(await pipe.execute(raise_on_error=False))
        except Exception:
            for domain, entries in acks.items():  # not sent: keep them for the next batch
                for e in entries:
                    self._pending.add(domain, e)
            raise
        transient.raise_transient(raw[:head])
        results = raw[head:]
        first = next((i for i, r in enumerate(results) if isinstance(r, NoScriptError)), None)
        if first is not None:
            await self._load_scripts()
            pipe = self.redis.pipeline(transaction=False)
            for call in calls[first:]:
                self._evalsha(pipe, call, now_ms)
            again = await pipe.execute(raise_on_error=False)
            for i, result in enumerate(again, start=first):
                if isinstance(results[i], NoScriptError):
                    results[i] = result
        # Redis refusing (OOM, READONLY, BUSY, ...) is not the data's fault: the batch is
        # retried (scripts that did run give their kept transitions back), nothing is
        # dead-lettered.
        transient.raise_transient(results)
        return results

    def ack(self, entries: Iterable[tuple[str, str]]) -> None:
        """Kafka has the records of these outbox entries (domain, entry id): delete them with
        the next batch (or the next timer step)."""
        for domain, entry in entries:
            if entry:
                self._pending.add(domain, entry)

    def ack_entries(self, entries: Iterable[Entry]) -> None:
        """As ``ack``, for entries as ``apply`` and ``tick`` return them."""
        self.ack((t.domain, e.id) for e in entries if e.id for t in e.rows[:1])

    async def flush_acks(self) -> None:
        acks = self._pending.take()
        if not acks:
            return
        pipe = self.redis.pipeline(transaction=False)
        for domain, entries in acks.items():
            pipe.hdel(state.key(domain, Key.OUTBOX), *entries)
            pipe.zrem(state.key(domain, Key.OUTBOX_TIMES), *entries)
        try:
            await pipe.execute()
        except Exception:
            for domain, entries in acks.items():
                for e in entries:
                    self._pending.add(domain, e)
            raise

    # -- events -----------------------------------------------------------------------------

    def _login(self, domain: str, policy: DomainPolicy, agent_id: str, skills: dict[str, int],
               asked: dict[str, int], ready: bool, mode: LoginMode,
               expect: state.AgentView | None = None) -> LoginArgs:
        """The login script's arguments for an agent profile under this policy: its lanes and
        pools, its capacity capped by the policy, and the policy's digest."""
        return LoginArgs(
            agent_id=agent_id, mode=mode.value, skills=dict(skills),
            capacity=effective_capacity(asked, policy), asked=dict(asked), ready=ready,
            serves={m.lane: m.ring for m in memberships(skills, policy)},
            seats=state.seat_rows((s.pool, s.rank, s.strategy.value)
                                  for s in seats(skills, policy)),
            digest=self.policy.digest, offer_timeout_ms=int(policy.offer_timeout_s * 1000),
            scan_limit=self._limit,
            expect_skills=dict(expect.skills) if expect else {},
            expect_asked=dict(expect.asked) if expect else {},
            expect_digest=expect.digest if expect else "")

    def escalated_at(self, event: RoutingRequested, now_ms: int) -> int:
        """The escalation time a request is routed with: its own, kept inside [now - contact
        retention, now] so that every wait the audit log reports stays inside the contract
        (docs/EVENTS.md: clamped, counted in peakroute_requests_clamped_total)."""
        oldest = now_ms - self._retention * 1000
        if event.ts_ms > now_ms:
            metrics.REQUESTS_CLAMPED.labels("future").inc()
            return now_ms
        if event.ts_ms < oldest:
            metrics.REQUESTS_CLAMPED.labels("too_old").inc()
            return oldest
        return event.ts_ms

    def _args(self, event: Event, now_ms: int) -> Args:
        """The script call's arguments for one event, with the policy's parameters for it."""
        domain = getattr(event, "domain", "")
        policy = self.policy.for_domain(domain)
        t, limit = int(policy.offer_timeout_s * 1000), self._limit
        match event:
            case RoutingRequested():
                esc = self.escalated_at(event, now_ms)
                if esc != event.ts_ms:
                    event = _with_ts(event, esc)
                plan = plan_request(event, policy)
                context = orjson.dumps({
                    "intent": event.intent, "tier": event.tier.value,
                    "language": event.language.value, "confidence": event.confidence,
                    "reason": event.reason,
                    "transcript": [{"speaker": turn.speaker.value, "text": turn.text,
                                    "ts_ms": turn.ts_ms} for turn in event.transcript],
                }).decode()
                return RequestArgs(
                    contact_id=event.contact_id, channel=event.channel.value, lane=plan.lane,
                    service_class=plan.service_class, score=plan.score, escalated_at=esc,
                    priority=event.priority, target_ms=plan.target_ms, weight=plan.weight,
                    ring_delays=list(plan.ring_delays_ms), ring_pools=list(plan.ring_pools),
                    extra_skills=state.format_levels(plan.extra_skills), queue=plan.queue,
                    strategy=plan.strategy.value, offer_timeout_ms=t, scan_limit=limit,
                    context=context, reason=plan.reason or event.reason,
                    customer_id=getattr(event, "customer_id", None) or "",
                    preferred_agent=getattr(event, "preferred_agent", None) or "",
                    preferred_ring_ms=int(policy.preferred_ring_s * 1000),
                    history_ms=int(policy.preferred_history_s * 1000))
            case CustomerLeft():
                return LeftArgs(contact_id=event.contact_id, short_abandon_ms=self._short_ms,
                                offer_timeout_ms=t, scan_limit=limit,
                                retention_s=self._retention)
            case OfferAccepted():
                return state.AcceptArgs(agent_id=event.agent_id, offer_id=event.offer_id,
                                        contact_id=event.contact_id)
            case OfferDeclined():
                return DeclineArgs(agent_id=event.agent_id, offer_id=event.offer_id,
                                   contact_id=event.contact_id, offer_timeout_ms=t,
                                   scan_limit=limit, on_decline=policy.on_decline.value,
                                   reason=event.reason or "declined")
            case ContactCompleted():
                return CompleteArgs(agent_id=event.agent_id, contact_id=event.contact_id,
                                    offer_timeout_ms=t, scan_limit=limit,
                                    retention_s=self._retention)
            case AgentLoggedIn():
                return self._login(domain, policy, event.agent_id, event.skills,
                                   event.capacity, event.ready, LoginMode.LOGIN)
            case AgentStateChanged() if event.state == AgentState.OFFLINE:
                # Going offline is leaving: offers are withdrawn and re-routed, as on logout.
                return LogoutArgs(agent_id=event.agent_id, offer_timeout_ms=t,
                                  scan_limit=limit)
            case AgentStateChanged():
                return StateArgs(agent_id=event.agent_id, state=event.state.value,
                                 offer_timeout_ms=t, scan_limit=limit)
            case AgentLoggedOut():
                return LogoutArgs(agent_id=event.agent_id, offer_timeout_ms=t,
                                  scan_limit=limit)
            case AgentProfileChanged():
                return self._login(domain, policy, event.agent_id, event.skills,
                                   event.capacity, True, LoginMode.PROFILE)
            case _:
                raise RoutingStoreError(f"no routing script for {event.TYPE}")

    async def apply(self, events: Sequence[Event], now_ms: int
                    ) -> list[list[Entry] | Exception]:
        """Run one script per event, in order, in a single round trip.

        Returns, per event, its outbox entries with their transitions (one entry, or a kept
        one given back), or the error its script raised (or the policy refused it with; the
        other events are unaffected: each script is atomic on its own). Dependency failures
        raise (the caller retries the whole batch).
        """
        if not events:
            return []
        calls: list[_Call] = []
        placed: list[int] = []  # event index per call
        out: list[list[Entry] | Exception] = []
        for i, event in enumerate(events):
            try:
                args = self._args(event, now_ms)
            except PeakrouteError as exc:
                out.append(exc)
                continue
            calls.append(_Call(getattr(event, "domain", ""), args, event.event_id))
            placed.append(i)
            out.append([])
        if not calls:
            return out
        results = await self._run(calls, now_ms)
        for i, call, raw in zip(placed, calls, results, strict=True):
            if isinstance(raw, Exception):
                out[i] = raw
                continue
            out[i] = state.decode_result(raw, call.domain)
        return out

    # -- time -------------------------------------------------------------------------------

    async def tick(self, now_ms: int) -> list[Entry]:
        """Time-driven step in every domain: lapse overdue offers, open due rings, finish
        matches cut short, forget finished contacts, re-send outbox entries left behind, and
        re-seat agents seated under another routing policy."""
        await self.flush_acks()
        names = await state.domains(self.redis)
        if not names:
            return []
        out: list[Entry] = []
        calls: list[_Call] = []
        for domain in names:
            try:
                policy = self.policy.for_domain(domain)
            except PolicyError:
                # Seen once (its events were dead-lettered) but the policy does not cover it:
                # nothing of it can be waiting. Other domains keep their timer.
                continue
            self._ticks += 1
            calls.append(_Call(domain, TickArgs(
                offer_timeout_ms=int(policy.offer_timeout_s * 1000), scan_limit=self._limit,
                max_per_step=TICK_BATCH, on_no_answer=policy.on_no_answer.value,
                outbox_lease_ms=OUTBOX_LEASE_MS, pending_budget=self._limit * 10,
                purge_max=PURGE_BATCH,
                history_ms=int(policy.preferred_history_s * 1000)),
                f"{self._tick_ids}{self._ticks}"))
        if calls:
            for call, raw in zip(calls, await self._run(calls, now_ms), strict=True):
                if isinstance(raw, Exception):  # one domain's failure leaves the others'
                    log.error("routing_tick_failed",
                              extra=logs.fields(domain=call.domain, error=str(raw)[:300]))
                    continue
                out.extend(state.decode_result(raw, call.domain))
        for domain in await self._needs_reseat([c.domain for c in calls]):
            try:
                out.extend(await self.reseat(domain, now_ms))
            except PolicyError:
                continue
        return out

    async def _needs_reseat(self, names: Sequence[str]) -> list[str]:
        """The domains where this worker's routing policy is current (the policy loaded last
        by any worker wins, a rollback too: a worker still on an older one does not re-seat)
        and not every agent is seated under it yet. One round trip for all."""
        if not names:
            return []
        if not self._loaded:
            await self._load_scripts()
        pipe = self.redis.pipeline(transaction=False)
        for domain in names:
            meta = state.key(domain, Key.META)
            pipe.evalsha(self._claim.sha, 1, meta, self.policy.digest, self.policy_loaded_ms)
            pipe.hget(meta, state.META_RESEATED)
        got = await pipe.execute(raise_on_error=False)
        if any(isinstance(r, NoScriptError) for r in got):
            self._loaded = False  # Redis lost its scripts: the next step loads them
            return []
        transient.raise_transient(got)
        return [d for i, d in enumerate(names)
                if got[2 * i] is not None and not isinstance(got[2 * i], Exception)
                and int(got[2 * i]) and _text(got[2 * i + 1]) != self.policy.digest]

    async def reseat(self, domain: str, now_ms: int) -> list[Entry]:
        """(For a domain ``_needs_reseat`` names.) Agents logged in under another routing
        policy sit in pools this one does not use:
        log them in again with their own skills and capacity under this policy, state and idle
        time kept, each atomically and only if its profile is still the one read (a change in
        between wins). Every worker on the current policy converges the domain: a pass scans
        the agents a batch per step, and a domain all seated under it is marked so."""
        meta_key = state.key(domain, Key.META)
        policy = self.policy.for_domain(domain)
        progress = self._reseat.setdefault(domain, _Reseat())
        scanned: Any = await self.redis.hscan(state.key(domain, Key.AGENT_PROFILES),
                                              progress.cursor, count=RESEAT_BATCH)
        cursor, raw = scanned
        stale = [_text(a) for a, p in raw.items()
                 if (prof := state.decode_profile(p)) is not None
                 and prof.pd != self.policy.digest]
        views = await state.read_agents(self.redis, domain, stale) if stale else {}
        calls: list[_Call] = []
        for aid, view in views.items():
            if not view.logged_in:
                continue
            calls.append(_Call(domain, self._login(
                domain, policy, aid, view.skills, view.asked, view.ready, LoginMode.RESEAT,
                expect=view), f"reseat:{aid}:{self.policy.digest}:{now_ms}"))
        progress.cursor = int(cursor)
        progress.stale_seen |= bool(calls)
        entries: list[Entry] = []
        if calls:
            for result in await self._run(calls, now_ms):
                if not isinstance(result, Exception):
                    entries.extend(state.decode_result(result, domain))
            log.info("routing_agents_reseated", extra=logs.fields(
                domain=domain, agents=len(calls), policy=self.policy.digest))
        if progress.cursor == 0:  # a pass ended: seated all, unless it found some
            if not progress.stale_seen:
                await self.redis.hset(meta_key, state.META_RESEATED, self.policy.digest)
            progress.stale_seen = False
        return entries

    async def record_bot_outcomes(
        self, outcomes: Iterable[tuple[str, str, str]], now_ms: int
    ) -> list[bool]:
        """(domain, contact_id, 'contained' | 'escalating') per new contact; True where new."""
        items = list(outcomes)
        calls = [_Call(domain, state.BotArgs(contact_id=cid, outcome=outcome,
                                             retention_s=self._retention), "")
                 for domain, cid, outcome in items]
        results = await self._run(calls, now_ms)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return [bool(r) for r in results]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _with_ts(event: RoutingRequested, ts_ms: int) -> RoutingRequested:
    return dataclasses.replace(event, ts_ms=ts_ms)
