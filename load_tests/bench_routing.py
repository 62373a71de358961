"""Routing store benchmark: atomic matching in Redis at 10,000 agents x 50 queues.

    python -m load_tests.bench_routing --agents 10000 --queues 50 --seconds 10

Starts its own redis-server (or uses --redis-url), logs the agents in, then drives RoutingStore
with a closed-loop mix like a sales peak: new contacts (5 % VIP, 85 % Chinese, chat and voice,
queues by a skewed popularity), accepts of the offers made (3 % declined), completions of
answered contacts, customers leaving, agents taking breaks and coming back, and the worker's
timer. Several pipelines run at once (like several partitions). Then a no-op script runs through
the same driver on the same Redis: its rate is the ceiling. The last line is one JSON object
with decisions_per_s, p50_ms, p99_ms and redis_noop_evalsha_per_s (latency: a decision's
submission to its result, one pipelined batch round trip).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from router.events import (
    AgentLoggedIn,
    AgentState,
    AgentStateChanged,
    Channel,
    ContactCompleted,
    CustomerLeft,
    Event,
    Language,
    OfferAccepted,
    OfferDeclined,
    RoutingRequested,
    Tier,
)
from router.routing import state
from router.routing.config import RoutingPolicy, parse_policy
from router.routing.stage import DECISIONS
from router.routing.state import Entry
from router.routing.store import RoutingStore
from router.settings import Settings
from router.stack import standalone_redis

AREAS = 10  # business areas: a queue overflows to its area's skill, then to general


def bench_policy_text(queues: int) -> str:
    lines = ["domains:", '  "*":', "    default_queue: q0", "    queues:"]
    for i in range(queues):
        lines.append(f"      q{i}:")
        lines.append(f"        skills: {{s{i}: 1}}")
        lines.append(f"        rings: [{{after_s: 10, skills: {{area{i % AREAS}: 2}}}}, "
                     "{after_s: 20, skills: {general: 2}}]")
    return "\n".join(lines)


def bench_policy(queues: int) -> RoutingPolicy:
    return parse_policy(bench_policy_text(queues), "<bench policy>")


def agent_profile(rng: random.Random, queues: int) -> tuple[dict[str, int], dict[str, int]]:
    draw = rng.random()
    skills = {"zh": 2} if draw < 0.75 else {"en": 2} if draw < 0.9 else {"zh": 2, "en": 1}
    for q in rng.sample(range(queues), 3):
        skills[f"s{q}"] = rng.randint(1, 3)
    skills[f"area{rng.randrange(AREAS)}"] = rng.randint(1, 3)
    skills["general"] = rng.choice((1, 1, 2, 3))
    capacity = {"chat": 3} if rng.random() < 0.8 else {"voice": 1}
    return skills, capacity


@dataclass
class Driver:
    """Keeps the closed loop: what was offered gets accepted, what was answered completes."""

    domain: str
    queues: int
    agents: list[str]
    rng: random.Random
    offers: deque[state.Offered] = field(default_factory=deque)
    answered: deque[tuple[str, str]] = field(default_factory=deque)  # (contact, agent)
    waiting: deque[str] = field(default_factory=deque)  # contacts that may still leave
    on_break: set[str] = field(default_factory=set)
    active_target: int = 0  # contacts in the system (waiting + offered + answered) to keep
    active: int = 0
    errors: int = 0
    seq: int = 0
    weights: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.weights = [1 / (i + 1) ** 0.8 for i in range(self.queues)]  # popular queues first

    def _id(self) -> str:
        self.seq += 1
        return f"b{self.seq}"

    def batch(self, size: int, now: int, max_new: int | None = None) -> list[Event]:
        """The next events: accepts and declines of the offers made, completions, a break or
        a customer leaving now and then, and new contacts (at most ``max_new``)."""
        out: list[Event] = []
        d = self.domain
        while self.offers and len(out) < size // 3:
            t = self.offers.popleft()
            if self.rng.random() < 0.03:
                out.append(OfferDeclined(event_id=self._id(), ts_ms=now, agent_id=t.agent_id,
                                         domain=d, offer_id=t.offer_id, contact_id=t.contact_id))
            else:
                out.append(OfferAccepted(event_id=self._id(), ts_ms=now, agent_id=t.agent_id,
                                         domain=d, offer_id=t.offer_id, contact_id=t.contact_id))
        # Contacts are handled in turn: the oldest answered completes once the centre is at the
        # occupancy aimed for, which then lets a new contact in (a busy, not a runaway, peak).
        while self.answered and self.active >= self.active_target and len(out) < 2 * size // 3:
            cid, aid = self.answered.popleft()
            out.append(ContactCompleted(event_id=self._id(), ts_ms=now, agent_id=aid, domain=d,
                                        contact_id=cid))
            self.active -= 1
        if self.rng.random() < 0.3:
            aid = self.rng.choice(self.agents)
            state = AgentState.READY if aid in self.on_break else AgentState.NOT_READY
            (self.on_break.discard if state == AgentState.READY else self.on_break.add)(aid)
            out.append(AgentStateChanged(event_id=self._id(), ts_ms=now, agent_id=aid, domain=d,
                                         state=state))
        if self.waiting and self.rng.random() < 0.5:
            out.append(CustomerLeft(event_id=self._id(), ts_ms=now,
                                    contact_id=self.waiting.popleft(), domain=d))
        new = 0
        while len(out) < size and self.active < self.active_target and (
                max_new is None or new < max_new):
            new += 1
            cid = f"c{self.seq}"
            q = self.rng.choices(range(self.queues), self.weights)[0]
            out.append(RoutingRequested(
                event_id=self._id(), ts_ms=now, contact_id=cid, domain=d,
                channel=Channel.CHAT if self.rng.random() < 0.8 else Channel.VOICE,
                language=Language.ZH if self.rng.random() < 0.85 else Language.EN,
                tier=Tier.VIP if self.rng.random() < 0.05 else Tier.NORMAL,
                queue=f"q{q}", priority=self.rng.choice((0, 0, 0, 1, 2))))
            self.active += 1
            if self.rng.random() < 0.04:
                self.waiting.append(cid)
        return out

    def follow(self, results: Sequence[list[Entry] | Exception]) -> int:
        """Take in what the router did; returns the decisions it made (audited transitions)."""
        made = 0
        for result in results:
            if isinstance(result, Exception):
                self.errors += 1
                continue
            for t in state.rows(result):
                made += type(t) in DECISIONS
                if isinstance(t, state.Offered):
                    self.offers.append(t)
                elif t.kind == "answered":
                    self.answered.append((t.contact_id, t.agent_id))
                elif t.kind == "abandoned":
                    self.active -= 1
        return made


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def drive(seconds: float, concurrency: int,
                step: Callable[[int], Awaitable[int]]) -> tuple[int, float, list[float]]:
    """Run ``step(worker)`` (returns decisions made) in ``concurrency`` loops for ``seconds``;
    returns decisions, elapsed seconds, and one latency per decision (ms)."""
    latencies: list[float] = []
    total = 0
    deadline = time.perf_counter() + seconds

    async def loop(worker: int) -> None:
        nonlocal total
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            n = await step(worker)
            ms = (time.perf_counter() - t0) * 1000
            latencies.extend([ms] * n)
            total += n
    start = time.perf_counter()
    await asyncio.gather(*(loop(w) for w in range(concurrency)))
    return total, time.perf_counter() - start, sorted(latencies)


async def log_in(store: RoutingStore, domains: Sequence[str], per_domain: int, queues: int,
                 occupancy: float, rng: random.Random, now: int) -> list[Driver]:
    """Log ``per_domain`` agents into each domain (profiles drawn from ``rng``); a driver per
    domain that keeps its contacts at ``occupancy`` of the slots."""
    drivers = []
    for d in domains:
        agents = [f"{d}-a{i}" for i in range(per_domain)]
        slots = 0
        for start in range(0, len(agents), 500):
            events: list[Event] = []
            for aid in agents[start:start + 500]:
                skills, capacity = agent_profile(rng, queues)
                slots += sum(capacity.values())
                events.append(AgentLoggedIn(event_id=f"login-{aid}", ts_ms=now, agent_id=aid,
                                            domain=d, skills=skills, capacity=capacity))
            await store.apply(events, now)
        drivers.append(Driver(d, queues, agents, random.Random(rng.random()),
                              active_target=int(slots * occupancy)))
    return drivers


async def run(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    rng = random.Random(args.seed)
    policy = bench_policy(args.queues)
    store = RoutingStore(client, Settings(match_scan_limit=200), policy)
    domains = [f"bench-{i}" for i in range(args.concurrency)]
    now = int(time.time() * 1000)
    login_t0 = time.perf_counter()
    per_domain = args.agents // len(domains)
    drivers = await log_in(store, domains, per_domain, args.queues, args.occupancy, rng, now)
    login_s = time.perf_counter() - login_t0
    last_tick = time.perf_counter()
    decisions = scripts = 0

    async def routing_step(worker: int) -> int:
        nonlocal last_tick, decisions, scripts
        now = int(time.time() * 1000)
        events = drivers[worker].batch(args.batch, now)
        results = await store.apply(events, now)  # (no += across an await: tasks interleave)
        for r in results:  # Kafka has them (the stage's deletes ride with the next batch)
            if not isinstance(r, Exception):
                store.ack_entries(r)
        made = drivers[worker].follow(results)
        if worker == 0 and time.perf_counter() - last_tick >= 0.5:  # the worker's timer
            last_tick = time.perf_counter()
            ticked = await store.tick(now)
            store.ack_entries(ticked)
            for driver in drivers:  # each domain's transitions to its own driver
                made += driver.follow([[e for e in ticked
                                        if e.rows and e.rows[0].domain == driver.domain]])
        decisions += made
        scripts += len(events)
        return made  # latency is counted per decision

    await client.config_resetstat()  # Redis's own account of the run: INFO commandstats
    cpu0 = await cpu_seconds(client)
    _, elapsed, lat = await drive(args.seconds, args.concurrency, routing_step)
    cpu1 = await cpu_seconds(client)
    server = server_time(await client.info("commandstats"), scripts)
    # CPU time per event, Redis's and this process's (the driver and the store's client side):
    # unlike wall time, it does not count what another job on the machine takes.
    server["redis_cpu_us_per_event"] = round((cpu1[0] - cpu0[0]) * 1e6 / max(scripts, 1), 1)
    server["client_cpu_us_per_event"] = round((cpu1[1] - cpu0[1]) * 1e6 / max(scripts, 1), 1)
    server["redis_busy"] = round((cpu1[0] - cpu0[0]) / elapsed, 2)
    server["client_busy"] = round((cpu1[1] - cpu0[1]) / elapsed, 2)
    noop = client.register_script("return ARGV[1]")
    await noop(keys=[state.prefix("noop")], args=[0])  # load it

    def noop_step(batch: int) -> Callable[[int], Awaitable[int]]:
        async def step(worker: int) -> int:
            pipe = client.pipeline(transaction=False)
            for i in range(batch):
                pipe.evalsha(noop.sha, 1, state.prefix(domains[worker % len(domains)]), i)
            await pipe.execute()
            return batch
        return step

    # The ceiling through the same driver (batch, concurrency), and at its best (big batches).
    noop_n, noop_elapsed, noop_lat = await drive(min(args.seconds, 5), args.concurrency,
                                                 noop_step(args.batch))
    best_n, best_elapsed, _ = await drive(min(args.seconds, 5), 4, noop_step(256))
    stats: dict[str, int] = {}
    for d in domains:
        for k, v in (await state.stats(client, d)).items():
            stats[k] = stats.get(k, 0) + v
    info = await client.info("memory")
    waiting_at_end = 0
    for d in domains:
        waiting_at_end += (await state.live(client, d))["waiting"]
    await client.aclose()
    rate, ceiling = decisions / elapsed, noop_n / noop_elapsed
    errors = sum(d.errors for d in drivers)
    return {
        "agents": per_domain * len(domains), "queues": args.queues, "seconds": round(elapsed, 2),
        "occupancy_target": args.occupancy,
        "waiting_at_end": waiting_at_end,
        "batch": args.batch, "concurrency": args.concurrency,
        "events": scripts, "events_per_s": round(scripts / elapsed),
        "events_ratio_to_noop": round(scripts / elapsed / ceiling, 3),
        "decisions": decisions, "errors": errors,
        "offered": stats.get("offered", 0), "answered": stats.get("answered", 0),
        "relaxed": stats.get("relaxed", 0), "invariant_violations":
            stats.get("invariant_violations", 0),
        "login_s": round(login_s, 2),
        "redis_used_memory_mb": round(info["used_memory"] / 2**20, 1),
        "noop_p99_ms": round(percentile(noop_lat, 0.99), 3),
        "redis_noop_evalsha_best_per_s": round(best_n / best_elapsed),
        "ratio_to_best_noop": round(rate / (best_n / best_elapsed), 3),
        "ratio_to_noop": round(rate / ceiling, 3),
        "decisions_per_s": round(rate),
        "p50_ms": round(percentile(lat, 0.50), 3),
        "p99_ms": round(percentile(lat, 0.99), 3),
        "redis_noop_evalsha_per_s": round(ceiling),
        **server,
    }


async def cpu_seconds(client: aioredis.Redis) -> tuple[float, float]:
    """CPU seconds used so far by Redis (INFO cpu, user + system) and by this process."""
    info = await client.info("cpu")
    own = resource.getrusage(resource.RUSAGE_SELF)
    return (float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
            own.ru_utime + own.ru_stime)


def server_time(commandstats: dict[str, Any], events: int) -> dict[str, Any]:
    """Where Redis spent the run, per event: the scripts' time in all, and the commands it ran
    (calls and microseconds per event, the costliest first: those the scripts called, and the
    store's few own, such as the outbox's deletes); what is left of the scripts' time is about
    Lua's own (decoding and encoding records, building members)."""
    per: dict[str, tuple[float, float]] = {}
    for name, stat in commandstats.items():
        cmd = name.removeprefix("cmdstat_")
        per[cmd] = (stat["calls"] / max(events, 1), stat["usec"] / max(events, 1))
    script_us = sum(us for cmd, (_, us) in per.items() if cmd in ("evalsha", "eval", "fcall"))
    inner = {cmd: v for cmd, v in per.items()
             if cmd not in ("evalsha", "eval", "fcall", "info", "config|resetstat", "config")}
    top = sorted(inner.items(), key=lambda kv: -kv[1][1])[:12]
    return {
        "redis_script_us_per_event": round(script_us, 1),
        "redis_lua_us_per_event": round(script_us - sum(us for _, us in inner.values()), 1),
        "redis_commands_per_event": {cmd: {"calls": round(calls, 2), "us": round(us, 1)}
                                     for cmd, (calls, us) in top},
    }


WORST_LISTS = 12  # queues whose waiting contacts all need the extra skill
WORST_CONTACTS = 12_000
WORST_SKILL = "vipcare"


async def run_worst_case(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    """12,000 contacts wait across 12 lists at ring 0 for an extra skill (``vipcare``) that no
    agent has (agents of those queues are ready, so no ring is skipped); then agents who lack
    it go ready again and again. Each such event must cost Redis a bounded
    amount of work (it may not scan contacts it cannot take): Redis's own measure of each
    script call (SLOWLOG at threshold 0) gives ``agent_event_p99_ms``."""
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    rng = random.Random(args.seed)
    store = RoutingStore(client, Settings(match_scan_limit=200), bench_policy(args.queues))
    domain = "worst"
    now = int(time.time() * 1000)
    agents = [f"w-a{i}" for i in range(min(args.agents, 2000))]
    for start in range(0, len(agents), 500):
        await store.apply([AgentLoggedIn(event_id=f"login-{aid}", ts_ms=now, agent_id=aid,
                                         domain=domain, skills={"zh": 2, **{
                                             f"s{q}": 2 for q in range(WORST_LISTS)},
                                             "general": 1}, capacity={"chat": 3}, ready=True)
                           for aid in agents[start:start + 500]], now)
    for start in range(0, WORST_CONTACTS, 500):
        await store.apply([RoutingRequested(
            event_id=f"r{n}", ts_ms=now, contact_id=f"c{n}", domain=domain,
            queue=f"q{n % WORST_LISTS}", skills={WORST_SKILL: 1}, language=Language.ZH)
            for n in range(start, min(start + 500, WORST_CONTACTS))], now)
    waiting = (await state.live(client, domain))["waiting"]
    # One agent event per call measured: a function call (a script on a Redis older than 7).
    apply_call = ((b"FCALL", state.APPLY_FUNCTION.encode()) if store.functions
                  else (b"EVALSHA", store._shas[state.APPLY].encode()))
    noop = client.register_script("return ARGV[1]")  # the control: Redis's own noise
    await noop(keys=[state.prefix(domain)], args=[0])
    await client.config_set("slowlog-log-slower-than", 0)
    await client.config_set("slowlog-max-len", 100_000)
    await client.slowlog_reset()
    log: list[Any] = []  # drained after every batch: commands inside scripts are logged too
    events = 0
    deadline = time.perf_counter() + args.seconds
    while time.perf_counter() < deadline:
        batch = []
        for _ in range(args.batch):
            aid = rng.choice(agents)
            for st in (AgentState.READY, AgentState.NOT_READY):
                batch.append(AgentStateChanged(event_id=f"s{events}", ts_ms=now, agent_id=aid,
                                               domain=domain, state=st))
                events += 1
        for event in batch:  # one per call: SLOWLOG times each event's script on its own
            for r in await store.apply([event], now):
                if not isinstance(r, Exception):
                    store.ack_entries(r)
        await noop(keys=[state.prefix(domain)], args=[events])
        got: Any = await client.slowlog_get(100_000)
        await client.slowlog_reset()
        log += [e for e in got if e["command"].startswith((b"EVALSHA", b"FCALL"))]
    await client.config_set("slowlog-log-slower-than", 10_000)

    def durations(command: bytes, name: bytes) -> list[int]:
        return sorted(int(e["duration"]) for e in log
                      if e["command"].split()[:2] == [command, name])
    script_us = durations(*apply_call)
    noop_us = durations(b"EVALSHA", noop.sha.encode())
    await client.aclose()
    return {
        "mode": "worst_case", "agents": len(agents), "waiting": waiting,
        "lists": WORST_LISTS, "extra_skill": WORST_SKILL, "agent_events": events,
        "agent_events_measured": len(script_us),
        "agent_event_p50_ms": round(percentile(script_us, 0.5) / 1000, 3),
        "agent_event_p99_ms": round(percentile(script_us, 0.99) / 1000, 3),
        "agent_event_max_ms": round(script_us[-1] / 1000, 3) if script_us else 0.0,
        # The same measure of a no-op script in the same run: what the machine adds.
        "noop_script_p50_ms": round(percentile(noop_us, 0.5) / 1000, 3),
        "noop_script_p99_ms": round(percentile(noop_us, 0.99) / 1000, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.bench_routing",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--queues", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=8,
                        help="events per pipelined round trip (default 8: a busy partition's "
                             "batch at millisecond latency)")
    parser.add_argument("--concurrency", type=int, default=2,
                        help="pipelines in flight at once, one routing domain each (default 2)")
    parser.add_argument("--occupancy", type=float, default=0.95,
                        help="contacts kept in the system, as a share of all agents' capacity "
                             "(default 0.95: a busy peak; above 1 queues grow)")
    parser.add_argument("--rate", type=float, default=2000.0,
                        help="--stage only: new contacts per second across all domains "
                             "(default 2000)")
    parser.add_argument("--warmup", type=float, default=10.0,
                        help="--stage only: seconds before measuring (logins, the first fill)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--redis-url", default="",
                        help="use this Redis (it is FLUSHED) instead of starting one")
    parser.add_argument("--stage", action="store_true",
                        help="through Kafka and a router worker (its routing stage) on the "
                             "embedded stack, instead of driving the store directly")
    parser.add_argument("--worst-case", action="store_true",
                        help="12,000 contacts wait for an extra skill no agent has, agents "
                             "without it go ready: the p99 of each agent event's script time "
                             "in Redis (agent_event_p99_ms, from SLOWLOG)")
    args = parser.parse_args(argv)
    if args.worst_case:
        with tempfile.TemporaryDirectory(prefix="bench-routing-") as tmp, \
                standalone_redis(Path(tmp)) as url:
            result = asyncio.run(run_worst_case(args, url))
        print(f"{result['agent_events_measured']:,} agent events with {result['waiting']:,} "
              f"contacts waiting for {WORST_SKILL}: script time p50 "
              f"{result['agent_event_p50_ms']} ms, p99 {result['agent_event_p99_ms']} ms",
              file=sys.stderr)
        print(orjson.dumps(result).decode())
        return 0
    if args.stage:
        from load_tests.bench_routing_stage import run_stage

        result = asyncio.run(run_stage(args))
        print(f"{result['decisions_per_s']:,} decisions/s through the stage, request to decision "
              f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms", file=sys.stderr)
        print(orjson.dumps(result).decode())
        return 0
    if args.redis_url:
        result = asyncio.run(run(args, args.redis_url))
    else:
        with tempfile.TemporaryDirectory(prefix="bench-routing-") as tmp, \
                standalone_redis(Path(tmp)) as url:
            result = asyncio.run(run(args, url))
    print(f"{result['decisions_per_s']:,} decisions/s from {result['events_per_s']:,} events/s "
          f"({result['events_ratio_to_noop']:.0%} of a no-op script's "
          f"{result['redis_noop_evalsha_per_s']:,}/s), p50 {result['p50_ms']} ms, "
          f"p99 {result['p99_ms']} ms", file=sys.stderr)
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
