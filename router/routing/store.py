"""Routing state in Redis: one atomic Lua call per transition, a batch's calls run together.

The layout, the scripts' arguments and their results belong to router/routing/state.py; this
module decides which script body an event calls with which arguments (from the routing policy),
runs them (one FCALL of the ``apply`` function per domain and batch, all in one round trip; a
script or library Redis lost is loaded and its calls re-sent), and keeps the outbox moving:
the entries a batch's transitions were kept under are deleted once Kafka has their records
(``ack``; the deletes ride along with the next batch).
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
from redis.exceptions import ResponseError

from router import logs, metrics, redis_client, transient
from router.errors import PeakrouteError, PolicyError, RoutingStoreError
from router.events import (
    AgentLoggedIn,
    AgentLoggedOut,
    AgentProfileChanged,
    AgentState,
    AgentStateChanged,
    ContactCompleted,
    CustomerCallbackRequested,
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
APPLY_MAX_CALLS = 64  # calls of one domain one run of the apply script takes, at most

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
            name: client.register_script(state.script_source(name))
            for name in state.RUN_SCRIPTS if name != state.APPLY}
        self._scripts[state.POLICY_CLAIM] = client.register_script(state.POLICY_CLAIM_SCRIPT)
        self._shas = {name: script.sha for name, script in self._scripts.items()}
        # Redis 7 runs apply as a function; an older one (no FUNCTION command) as a script,
        # then one of _scripts.
        self.functions = True
        self._key_cache: dict[tuple[str, str, int], list[bytes]] = {}
        self._limit = settings.match_scan_limit
        self._retention = settings.contact_retention_s
        self._short_ms = int(settings.short_abandon_s * 1000)
        self._sla_ttl = settings.sla_bucket_ttl_s
        self._wait_update_ms = int(settings.wait_update_interval_s * 1000)
        self._wait_threshold_ms = int(settings.wait_update_threshold_s * 1000)
        # The timer looks at a waiting contact's estimate four times per update interval.
        self._wait_check_ms = max(1000, self._wait_update_ms // 4) if self._wait_update_ms else 0
        self._loaded = False  # scripts loaded into this Redis by this process
        self._pending = _Pending()
        self._reseat: dict[str, _Reseat] = {}
        self._tick_ids = f"t:{uuid.uuid4().hex[:12]}:"
        self._known_domains: set[str] = set()
        self._ticks = 0

    # -- running scripts ------------------------------------------------------------------

    async def _load_scripts(self) -> None:
        """All scripts and the apply library at once, so a Redis has either every one of them
        or (restarted, flushed) none: a batch's calls then all run, or none does. On a
        Cluster, into every primary, once the client has the slot map: a replica promoted by a
        failover has no scripts (libraries replicate), and answers NOSCRIPT until loaded."""
        try:
            await redis_client.load_scripts(
                self.redis, (s.script for s in self._scripts.values()),
                [state.script_source(state.APPLY)] if self.functions else [])
        except ResponseError as exc:
            if not self.functions or "unknown command" not in str(exc).lower():
                raise
            self.functions = False  # Redis < 7 (or FUNCTION renamed away): apply as a script
            log.warning("routing_apply_as_script", extra=logs.fields(reason=str(exc)[:120]))
            script = self._scripts[state.APPLY] = self.redis.register_script(state.APPLY_SCRIPT)
            self._shas[state.APPLY] = script.sha
            await redis_client.load_scripts(self.redis, (s.script for s in self._scripts.values()))
        self._loaded = True

    def _queue(self, pipe: Any, name: str, keys: list[bytes], argv: Sequence[Any]) -> None:
        if name == state.APPLY and self.functions:
            pipe.fcall(state.APPLY_FUNCTION, len(keys), *keys, *argv)
        else:
            pipe.evalsha(self._shas[name], len(keys), *keys, *argv)

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

    async def _send(self, requests: Sequence[tuple[str, list[bytes], Sequence[Any]]],
                    register: Sequence[str] = ()) -> list[Any]:
        """Call each (script, keys, arguments) in one pipeline (one round trip). Beside
        them, not inside: the domains are registered (an idempotent SADD: Redis may have lost
        them) and the outbox entries Kafka has are deleted. A Redis that lost the scripts
        answers NOSCRIPT (the library: function not found): they are loaded and the requests
        from the first refused one on are sent again, in order (any that did run keeps its
        result: the outbox gives it back). Per request: its raw result, or the error it
        raised. Dependency failures (router/transient.py) raise: Redis refusing (OOM,
        READONLY, BUSY, ...) is not the data's fault, the batch is retried and nothing is
        dead-lettered."""
        if not self._loaded:
            await self._load_scripts()
        acks = self._pending.take()
        pipe = self.redis.pipeline(transaction=False)
        if register:
            pipe.sadd(DOMAINS_KEY, *register)
            self._known_domains.update(register)
        for domain, entries in acks.items():
            pipe.hdel(state.key(domain, Key.OUTBOX), *entries)
            pipe.zrem(state.key(domain, Key.OUTBOX_TIMES), *entries)
        head = 2 * len(acks) + bool(register)
        for name, keys, argv in requests:
            self._queue(pipe, name, keys, argv)
        waits = redis_client.queue_wait(
            pipe, self.redis, (keys[0] for _, keys, _ in requests if keys),
            self.settings.redis_wait_replicas, self.settings.redis_wait_timeout_ms)
        try:
            raw = list(await pipe.execute(raise_on_error=False))
        except Exception:
            for domain, entries in acks.items():  # not sent: keep them for the next batch
                for e in entries:
                    self._pending.add(domain, e)
            raise
        transient.raise_transient(raw[:head])
        redis_client.check_waits(raw[len(raw) - waits:], self.settings.redis_wait_replicas)
        results = raw[head:len(raw) - waits]
        first = next((i for i, r in enumerate(results) if redis_client.missing_code(r)), None)
        if first is not None:
            await self._load_scripts()
            pipe = self.redis.pipeline(transaction=False)
            for name, keys, argv in requests[first:]:
                self._queue(pipe, name, keys, argv)
            waits = redis_client.queue_wait(
                pipe, self.redis, (keys[0] for _, keys, _ in requests[first:] if keys),
                self.settings.redis_wait_replicas, self.settings.redis_wait_timeout_ms)
            again = await pipe.execute(raise_on_error=False)
            redis_client.check_waits(again[len(again) - waits:],
                                     self.settings.redis_wait_replicas)
            for i, result in enumerate(again[:len(again) - waits], start=first):
                if redis_client.missing_code(results[i]):
                    results[i] = result
        transient.raise_transient(results)
        return results

    async def _run(self, calls: Sequence[_Call], now_ms: int
                   ) -> list[list[Entry] | Exception]:
        """Run the calls: each domain's in order, in one ``apply`` (its calls atomic each),
        every domain in one round trip. Per call: its outbox entries with their transitions,
        or the error its body raised. Dependency failures raise."""
        return (await self._run_with(calls, now_ms, []))[0]

    async def _run_with(self, calls: Sequence[_Call], now_ms: int,
                        extra: Sequence[tuple[str, list[bytes], Sequence[Any]]]
                        ) -> tuple[list[list[Entry] | Exception], list[Any]]:
        """``_run``, with other script calls in the same round trip (their raw results)."""
        by_domain: dict[str, list[int]] = {}
        for i, call in enumerate(calls):
            by_domain.setdefault(call.domain, []).append(i)
        # Each domain's calls in order, at most APPLY_MAX_CALLS to a script run: one run holds
        # the server, so its length stays bounded whatever the batch's size.
        chunks = [(domain, placed[at:at + APPLY_MAX_CALLS])
                  for domain, placed in by_domain.items()
                  for at in range(0, len(placed), APPLY_MAX_CALLS)]
        requests = [(state.APPLY, self._keys(state.APPLY, domain, now_ms), (
            now_ms, self._sla_ttl,
            state.encode_calls((calls[i].entry, calls[i].args) for i in placed)))
            for domain, placed in chunks]
        raw = await self._send([*requests, *extra], sorted(d for d in by_domain if d))
        out: list[list[Entry] | Exception] = [[] for _ in calls]
        for (domain, placed), result in zip(chunks, raw, strict=False):
            if isinstance(result, Exception):  # (not a refusal: those raised) a bug
                for i in placed:
                    out[i] = result
                continue
            for i, applied in zip(placed, state.decode_applied(result, domain), strict=True):
                out[i] = applied
        return out, raw[len(requests):]

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
                    history_ms=int(policy.preferred_history_s * 1000),
                    wait_notice_ms=self._wait_check_ms)
            case CustomerCallbackRequested():
                return state.CallbackArgs(contact_id=event.contact_id,
                                          callback_to=event.callback_to, offer_timeout_ms=t,
                                          scan_limit=limit)
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
        for i, result in zip(placed, await self._run(calls, now_ms), strict=True):
            out[i] = result
        return out

    # -- time -------------------------------------------------------------------------------

    async def tick(self, now_ms: int) -> list[Entry]:
        """Time-driven step in every domain: lapse overdue offers, open due rings, finish
        matches cut short, forget finished contacts, re-send outbox entries left behind, and
        re-seat agents seated under another routing policy. Two round trips: the domain
        registry, then every domain's step (and one more per domain to re-seat, when a policy
        changed)."""
        names = await self._domains()
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
                history_ms=int(policy.preferred_history_s * 1000),
                wait_update_ms=self._wait_update_ms, wait_threshold_ms=self._wait_threshold_ms),
                f"{self._tick_ids}{self._ticks}"))
        if not calls:
            await self.flush_acks()
            return out
        # Beside the timer: does this worker's policy claim each domain, and must it re-seat?
        claims = [(state.POLICY_CLAIM, [state.key(c.domain, Key.META).encode()],
                   (self.policy.digest, self.policy_loaded_ms)) for c in calls]
        results, claimed = await self._run_with(calls, now_ms, claims)
        for call, result in zip(calls, results, strict=True):
            if isinstance(result, Exception):  # one domain's failure leaves the others'
                log.error("routing_tick_failed",
                          extra=logs.fields(domain=call.domain, error=str(result)[:300]))
                continue
            out.extend(result)
        for call, claim in zip(calls, claimed, strict=True):
            if isinstance(claim, Exception) or not int(claim):
                continue
            try:
                out.extend(await self.reseat(call.domain, now_ms))
            except PolicyError:
                continue
        return out

    async def _domains(self) -> list[str]:
        """The domains the timer walks: Redis's registry, with the domains this worker wrote
        to (Redis may have lost the registry: the next batch registers them again)."""
        self._known_domains |= set(await state.domains(self.redis))
        return sorted(self._known_domains)

    async def reseat(self, domain: str, now_ms: int) -> list[Entry]:
        """(For a domain where this worker's policy is current and the claim says not every
        agent is seated under it yet.) Agents logged in under another routing
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
                    entries.extend(result)
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
        results = await self._send([(state.BOT, self._keys(state.BOT, domain, now_ms), (
            "", now_ms, self._sla_ttl, state.encode_args(state.BotArgs(
                contact_id=cid, outcome=outcome, retention_s=self._retention))))
            for domain, cid, outcome in items], sorted({d for d, _, _ in items}))
        for result in results:
            if isinstance(result, Exception):
                raise result
        return [bool(r) for r in results]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _with_ts(event: RoutingRequested, ts_ms: int) -> RoutingRequested:
    return dataclasses.replace(event, ts_ms=ts_ms)
