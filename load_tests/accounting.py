"""The books of a proof run (load_tests.failover, load_tests.faults): after the drain, every
record the simulated gateway published, every offer the simulated desktops received and every
decision on the audit log, checked against each other and against the domain's counters.

The keys every proof reports:

- ``published``: records the gateway sent to contacts.inbound (contacts and, on purpose, a few
  malformed records);
- ``terminal``: contacts Redis holds contained, answered, done or abandoned, plus malformed
  records that came back on the deadletter topic (a dead letter is terminal only for a record
  the gateway sent malformed on purpose);
- ``lost``: ``published - terminal``;
- ``stranded``: contacts answered (in Redis) without an ``accepted`` decision on the audit log,
  or accepted by an agent whose desktop never received the offer on ``assignments``;
- ``phantom_not_ready``: offers that ``expired`` (setting the agent not ready, under the
  policy's ``on_no_answer: not_ready``) although the agent's desktop never received them;
- ``double_assigned``: contacts the audit log shows accepted by more than one agent;
- ``deadletters``: distinct dead-lettered records (by source topic, partition and offset) by
  reason; ``deadletters_as_sent`` says whether they are exactly the malformed records sent;
- ``counters_match_audit``: each counter of the domain's stats hash (``domain_stats``) that a
  decision stands for equals the number of distinct such decisions (by event id) on the audit log.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka import TopicPartition

from load_tests.cluster import DOMAIN, Cluster
from load_tests.gateway import SimulatedGateway
from router.decode import Decoder
from router.events import DeadLetter, Decision, Event, RoutingDecision
from router.kafka import assign_all, consumer
from router.routing import state
from router.routing.config import AgentOutcome, policy_from_settings
from router.routing.store import domain_stats
from router.settings import Settings

TERMINAL = frozenset({"contained", "answered", "done", "abandoned"})
ANSWERED = frozenset({"answered", "done"})
# A counter of the domain's stats -> the decision each of its increments publishes. Written
# out here, not taken from the routing stage's table: the books check the stage, they must not
# share its mistakes. queued has no counter (a contact may queue several times; escalated
# counts the contacts routed).
COUNTER_DECISIONS: dict[str, Decision] = {
    "offered": Decision.OFFERED,
    "answered": Decision.ACCEPTED,
    "declined": Decision.DECLINED,
    "expired": Decision.EXPIRED,
    "rescinded": Decision.RESCINDED,
    "relaxed": Decision.RELAXED,
    "abandoned": Decision.ABANDONED,
    "completed": Decision.COMPLETED,
}
EXAMPLES = 5
MONOTONIC_COUNTERS = ("arrived", "contained", "escalated", "answered", "abandoned", "completed")


@dataclass(frozen=True, slots=True)
class Window:
    """Something the proof did to the cluster, from ``start`` to ``end`` (time.monotonic())."""

    name: str
    start: float
    end: float


def proof_arguments(parser: argparse.ArgumentParser, *, agents: int) -> None:
    """The options both proofs share: the simulated centre, the drain and the output."""
    parser.add_argument("--agents", type=int, default=agents, help="simulated agents")
    parser.add_argument("--handle-time", type=float, default=3.0,
                        help="mean seconds an agent spends on a contact")
    parser.add_argument("--patience", type=float, default=15.0,
                        help="mean seconds a customer waits for a person before leaving")
    parser.add_argument("--offer-timeout", type=float, default=5.0,
                        help="seconds before an unanswered offer lapses")
    parser.add_argument("--partitions", type=int, default=8, help="partitions per topic")
    parser.add_argument("--drain", type=float, default=120.0,
                        help="at most this many seconds for open contacts to finish")
    parser.add_argument("--state-dir", help="where the stack keeps logs (default: a temp dir)")
    parser.add_argument("--json", action="store_true",
                        help="print the result as one JSON object on the last line")


def print_result(result: dict[str, Any], as_json: bool) -> int:
    """Print a proof's result (one JSON line with ``as_json``, else indented); its exit code."""
    if as_json:
        print(orjson.dumps(result).decode(), flush=True)
    else:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0 if result["ok"] else 1


def contact_ids(gateway: SimulatedGateway) -> dict[int, str]:
    """The contacts the gateway published, by publish number (malformed records have none)."""
    bad = {int(key.removeprefix("bad-")) for key in gateway.stats.malformed_keys}
    return {n: f"{gateway.domain}-{gateway.run_id}-{n:07d}"
            for n in range(gateway.stats.published) if n not in bad}


async def contact_states(client: aioredis.Redis, ids: Sequence[str],
                         domain: str = DOMAIN) -> dict[str, str | None]:
    """Each contact's state in Redis (None: Redis never heard of it)."""
    return await state.contact_states(client, domain, ids)


def state_intact(before: dict[str, str | None], after: dict[str, str | None],
                 stats_before: dict[str, int], stats_after: dict[str, int]) -> bool:
    """Nothing Redis held before a fault is gone after it: every contact it knew is still
    there (a finished one still finished) and no counter went backwards."""
    for cid, st in before.items():
        if st is None:
            continue
        now = after.get(cid)
        if now is None or (st in TERMINAL and now not in TERMINAL):
            return False
    return all(stats_after[k] >= stats_before[k] for k in MONOTONIC_COUNTERS)


async def read_topic(settings: Settings, topic: str) -> list[Event]:
    """Every event on ``topic``, up to its end offsets at the time of the call."""
    cons = consumer(settings, group_id=None, auto_offset_reset="earliest")
    await cons.start()
    try:
        await assign_all(cons, [topic], from_end=False)
        tps = [TopicPartition(topic, p) for p in sorted(cons.partitions_for_topic(topic) or ())]
        ends = await cons.end_offsets(tps)
        decoder = Decoder()
        out: list[Event] = []
        while [tp for tp in tps if await cons.position(tp) < ends[tp]]:
            for records in (await cons.getmany(timeout_ms=500, max_records=10_000)).values():
                for rec in records:
                    event = decoder.decode(rec.value)
                    if isinstance(event, Event):
                        out.append(event)
        return out
    finally:
        await cons.stop()


async def read_decisions(settings: Settings) -> list[RoutingDecision]:
    """The whole audit log (routing.decisions)."""
    return [e for e in await read_topic(settings, settings.topic_routing_decisions)
            if isinstance(e, RoutingDecision)]


def distinct(decisions: Sequence[RoutingDecision]) -> list[RoutingDecision]:
    """One decision per event id (a re-sent output repeats its id)."""
    seen: dict[str, RoutingDecision] = {}
    for d in decisions:
        seen.setdefault(d.event_id, d)
    return list(seen.values())


def double_assignments(decisions: Sequence[RoutingDecision]) -> dict[str, set[str]]:
    """Contacts the audit log shows accepted by more than one agent."""
    accepted: dict[str, set[str]] = defaultdict(set)
    for d in decisions:
        if d.decision == Decision.ACCEPTED and d.agent_id:
            accepted[d.contact_id].add(d.agent_id)
    return {cid: agents for cid, agents in accepted.items() if len(agents) > 1}


def counters_vs_audit(stats: dict[str, int], decisions: Sequence[RoutingDecision]
                      ) -> dict[str, dict[str, int]]:
    """Counters that differ from the audit log: counter -> {redis, audit}. ``escalated``
    counts contacts routed once each; every routed contact is queued or offered at least
    once."""
    unique = distinct(decisions)
    by_kind = Counter(d.decision for d in unique)
    audit = {counter: by_kind[decision] for counter, decision in COUNTER_DECISIONS.items()}
    audit["escalated"] = len({d.contact_id for d in unique
                              if d.decision in (Decision.QUEUED, Decision.OFFERED)})
    return {counter: {"redis": stats.get(counter, 0), "audit": n}
            for counter, n in audit.items() if stats.get(counter, 0) != n}


def when(t: float, windows: Sequence[Window]) -> str:
    """What the proof was doing at ``t``: ``during:<step>``, ``after:<step>`` (the last one
    that had started) or ``before``."""
    started = [w for w in windows if w.start <= t]
    if not started:
        return "before"
    last = max(started, key=lambda w: w.start)
    return f"{'during' if t <= last.end else 'after'}:{last.name}"


async def drain(cluster: Cluster, drain_s: float, on_poll: Any = None) -> float:
    """Wait until every contact published is terminal, every malformed record came back
    dead-lettered and the outbox is empty (a step whose outputs Redis kept but Kafka never got,
    say its batch failed after its scripts ran, is re-sent by the timer once its lease of
    OUTBOX_LEASE_MS ends), or ``drain_s`` passed; returns the seconds waited."""
    gateway, client = cluster.gateway, cluster.redis
    assert gateway is not None
    assert client is not None
    ids = list(contact_ids(gateway).values())
    started = time.monotonic()
    while True:
        if on_poll is not None:
            await on_poll()
        states = await contact_states(client, ids)
        finished = sum(st in TERMINAL for st in states.values())
        settled = (finished == len(ids)
                   and gateway.stats.deadlettered >= gateway.stats.malformed
                   and await state.outbox_size(client, DOMAIN) == 0)
        if settled or time.monotonic() - started > drain_s:
            return time.monotonic() - started
        await asyncio.sleep(1.0)


async def account(cluster: Cluster, started: float, windows: Sequence[Window] = ()
                  ) -> dict[str, Any]:
    """Stop the load (the simulated customers and agents stop acting; the desktops keep
    reading), then the workers (SIGTERM: each finishes its batch in hand and its timers' step
    and publishes their outputs), so that Redis and the topics hold still; then read Redis,
    the audit log, the deadletter topic and what each desktop received, and keep the books
    (module docstring)."""
    gateway, pool, client = cluster.gateway, cluster.pool, cluster.redis
    assert gateway is not None
    assert pool is not None
    assert client is not None
    settings = cluster.settings
    await gateway.stop()
    cluster.gateway = None
    await pool.stop(logout=False)  # the bus keeps reading: offers still reach the desktops
    cluster.cpu.sample()
    await asyncio.gather(*(asyncio.to_thread(w.stop) for w in cluster.workers))
    stats = await domain_stats(client, DOMAIN)
    outbox = await state.outbox_size(client, DOMAIN)  # outputs recorded, not yet acknowledged
    desktops_caught_up = await pool.bus.caught_up()
    decisions = await read_decisions(settings)
    deadletters = [e for e in await read_topic(settings, settings.topic_deadletter)
                   if isinstance(e, DeadLetter)]
    ids = contact_ids(gateway)
    states = await contact_states(client, list(ids.values()))

    # Dead letters: distinct source records; terminal only for the malformed ones sent.
    by_source: dict[tuple[str, int, int], DeadLetter] = {}
    for dl in deadletters:
        by_source.setdefault((dl.source_topic, dl.source_partition, dl.source_offset), dl)
    malformed = set(gateway.stats.malformed_keys)
    expected: set[str] = set()
    unexpected: Counter[str] = Counter()
    for (topic, _, _), dl in by_source.items():
        key = base64.b64decode(dl.key_b64).decode(errors="replace") if dl.key_b64 else ""
        if topic == settings.topic_contacts_inbound and key in malformed:
            expected.add(key)
        else:
            unexpected[f"{topic}:{dl.reason}"] += 1
    reasons = Counter(dl.reason for dl in by_source.values())

    published = gateway.stats.published
    finished = [cid for cid, st in states.items() if st in TERMINAL]
    terminal = len(finished) + len(expected)
    number = {cid: n for n, cid in ids.items()}
    open_ids = [cid for cid, st in states.items() if st not in TERMINAL]
    lost_detail: dict[str, Any] = {
        "states": dict(Counter(states[cid] or "absent" for cid in open_ids)),
        "malformed_not_deadlettered": len(malformed - expected),
        "published": dict(Counter(when(gateway.published_at[number[cid]], windows)
                                  for cid in open_ids)),
        "examples": sorted(open_ids)[:EXAMPLES],
    }

    # The audit log against what the desktops received.
    unique = distinct(decisions)
    received = {a.desk.agent_id: a.desk.offers_received for a in pool.agents}
    accepted: dict[str, list[RoutingDecision]] = defaultdict(list)
    for d in unique:
        if d.decision == Decision.ACCEPTED:
            accepted[d.contact_id].append(d)
    answered_unaudited = sorted(cid for cid, st in states.items()
                                if st in ANSWERED and cid not in accepted)
    accepted_unseen = sorted({
        d.contact_id for ds in accepted.values() for d in ds
        if (d.offer_id or "", d.contact_id) not in received.get(d.agent_id or "", set())})
    stranded = sorted(set(answered_unaudited) | set(accepted_unseen))
    policy = policy_from_settings(settings).for_domain(DOMAIN)
    phantoms = [d for d in unique
                if d.decision == Decision.EXPIRED and policy.on_no_answer == AgentOutcome.NOT_READY
                and (d.offer_id or "", d.contact_id) not in received.get(d.agent_id or "", set())]
    phantom = sorted({(d.agent_id or "", d.offer_id or "", d.contact_id) for d in phantoms})
    wall = time.time() - time.monotonic()  # a decision's ts_ms on the proof's clock
    phantom_offered = Counter(when(d.ts_ms / 1000 - wall - policy.offer_timeout_s, windows)
                              for d in phantoms)
    completed = {d.contact_id for d in unique if d.decision == Decision.COMPLETED}
    done_unaudited = sorted(cid for cid, st in states.items()
                            if st == "done" and cid not in completed)
    doubles = double_assignments(unique)
    mismatches = counters_vs_audit(stats, decisions)

    return {
        "published": published,
        "terminal": terminal,
        "lost": published - terminal,
        "stranded": len(stranded),
        "phantom_not_ready": len(phantom),
        "double_assigned": len(doubles),
        "deadletters": dict(sorted(reasons.items())),
        "deadletters_as_sent": not unexpected and expected == malformed,
        "counters_match_audit": not mismatches,
        "accounting": {
            "malformed_sent": len(malformed),
            "deadletters_unexpected": dict(unexpected),
            "lost": lost_detail,
            "lost_by_publish_second": _by_publish_time(
                [gateway.published_at[number[cid]] - started for cid in open_ids]),
            "stranded": {"answered_without_accepted": len(answered_unaudited),
                         "accepted_offer_not_received": len(accepted_unseen),
                         "published": dict(Counter(
                             when(gateway.published_at[number[cid]], windows)
                             for cid in stranded if cid in number)),
                         "examples": stranded[:EXAMPLES]},
            "phantom_not_ready": {"offered": dict(phantom_offered),
                                  "examples": [list(p) for p in phantom[:EXAMPLES]]},
            "done_without_completed": {
                "contacts": len(done_unaudited),
                "published": dict(Counter(when(gateway.published_at[number[cid]], windows)
                                          for cid in done_unaudited)),
                "examples": done_unaudited[:EXAMPLES]},
            "counter_mismatches": mismatches,
            "contacts_known": sum(st is not None for st in states.values()),
            "decisions": {"records": len(decisions), "distinct": len(unique)},
            "offers_received": sum(len(r) for r in received.values()),
            "desktops_caught_up": desktops_caught_up,
            "outbox_pending": outbox,
            "invariant_violations": stats["invariant_violations"],
        },
        "counters": stats,
        "outcomes": {
            "contained": sum(st == "contained" for st in states.values()),
            "answered": sum(st in ANSWERED for st in states.values()),
            "abandoned": sum(st == "abandoned" for st in states.values()),
            "deadlettered": len(expected),
        },
    }


def _by_publish_time(seconds: Sequence[float], bucket_s: int = 5) -> dict[str, int]:
    """Contacts by when in the run they were published (5-second buckets from the start of
    publishing, named by their first second)."""
    buckets = Counter(int(s // bucket_s) * bucket_s for s in seconds)
    return {str(k): v for k, v in sorted(buckets.items())}


def books_hold(result: dict[str, Any]) -> bool:
    """The conditions both proofs share."""
    return bool(result["lost"] == 0 and result["stranded"] == 0
                and result["phantom_not_ready"] == 0 and result["double_assigned"] == 0
                and result["deadletters_as_sent"] and result["counters_match_audit"]
                and result["terminal"] == result["published"]
                and result["accounting"]["invariant_violations"] == 0)
