"""The pipeline benchmark: `python -m load_tests.bench_pipeline --seconds S --json`.

The highest sustained rate of contacts through both stages on the embedded stack: a generator
in its own process publishes ``contact.arrived.v1`` at a paced rate (questions of hand-off
intents, so every contact meets the bot's classifier and then routing); router worker
process(es) run both stages; this process plays enough agents (every skill, 32 chats each,
spread over several routing domains): it accepts each offer at once and completes the contact
after ``--handle`` seconds. Latency is a contact's arrival (its ``ts_ms``, carried in its id) to
its offer arriving on ``assignments``.

``--runtime faust|lean|both`` picks the workers' runtime (docs/ARCHITECTURE.md, "Runtimes");
``both`` gives each a lane (topics, consumer group and Redis database of its own) and
alternates their steps, ending with ``{"lean": {...}, "faust": {...}, "faust_to_lean":
...}``.

Each step runs on a fresh embedded stack (a new broker and Redis, as the raw loop had at the
start), with only its own lane's workers and agents up, started (and warmed up) for it and
stopped after it. The embedded broker slows as a run goes on (docs/REHEARSAL.md, "Long runs
slow down"), so on a long-lived stack the late steps of a search measured how long the run had
been going as much as their rate, and an idle lane's processes kept polling it meanwhile.
``--shared-logs`` keeps one stack and every lane up for the whole run, each lane's steps on the
same topics, as before.

Rates are stepped (doubling from ``--start-rate``, then halving the gap until the best sustained
rate is known to within 10 %): a step is sustained
when 99 % of its contacts were offered by the step's end plus a grace second and the
arrival-to-offer p99 stays under ``--max-p99-ms`` (the pipeline keeps up instead of building a
backlog). ``contacts_per_s`` is the best sustained step; ``goal_met`` says whether it also kept
p99 <= ``--p99-ms`` (250). The ceiling is measured on the same broker first: a plain aiokafka
consume-and-produce loop (no logic), records of the same size.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import multiprocessing as mp
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from load_tests.cluster import cpu_seconds
from load_tests.sim import percentile
from router.bot.kb import default_kb_path, load_kb
from router.bot.loader import BrainHolder
from router.demo import WorkerProcess, wait_ready
from router.events import (
    AgentLoggedIn,
    ContactArrived,
    ContactCompleted,
    Language,
    OfferAccepted,
)
from router.kafka import (
    KeyHashes,
    assign_all,
    client_kwargs,
    consumer,
    ensure_topics,
    producer,
    send_batches,
)
from router.routing.config import DEFAULT_POLICY
from router.settings import Settings
from router.stack import EmbeddedStack
from router.stage import now_ms

SUSTAINED_SHARE = 0.99
GOAL_PER_S = 8000.0  # the goal, with p99 <= 250 ms
GRACE_S = 1.0
TICK_S = 0.005
DRAIN_MAX_S = 120.0  # the longest wait for an overloaded step's backlog to clear
DRAIN_QUIET_S = 3.0
CAPACITY = 32  # chats per agent (the bench policy allows it)
ALL_SKILLS = ("general", "orders", "presale", "refunds", "payment", "security", "complaints",
              "zh", "en")
RAW_IN, RAW_OUT = "bench.raw.in", "bench.raw.out"
RAW_PREFILL_PER_S = 60_000


def handoff_questions() -> list[tuple[str, str]]:
    """(language, text) of every example of an intent the bot hands to a person."""
    kb = load_kb(default_kb_path())
    return [(lang.value, text) for intent in kb.intents.values() if not intent.containable
            for lang, texts in intent.examples.items() for text in texts]


def bench_policy(capacity: int) -> str:
    """The shipped policy, letting agents hold ``capacity`` chats."""
    from importlib import resources

    data = yaml.safe_load((resources.files("router.routing") / DEFAULT_POLICY).read_text())
    data["defaults"]["capacity"] = {"chat": capacity, "voice": 1, "email": 5}
    return yaml.safe_dump(data, sort_keys=False)


# --- the generator (its own process) ----------------------------------------------------------

def generate(settings: Settings, rate: float, seconds: float, tag: str, domains: list[str],
             result: Any) -> None:
    """Process entry point: publish at ``rate`` for ``seconds``; report (sent, elapsed, CPU
    seconds)."""
    result.send(asyncio.run(_generate(settings, rate, seconds, tag, domains)))


async def _generate(settings: Settings, rate: float, seconds: float, tag: str,
                    domains: list[str]) -> tuple[int, float, float]:
    """Publish at ``rate``, keyed by contact id as a gateway does. Each tick's records go out
    at once, a batch per partition (router.kafka.send_batches), not one ``send`` each, which
    cost the generator ~0.3 ms of this 2-core machine's CPU per record, CPU the pipeline it
    measures needs. Returns the records sent, the seconds and the CPU seconds publishing took
    (its set-up not counted)."""
    rng = random.Random(tag)
    mix = handoff_questions()
    prod = producer(settings, linger_ms=5, max_batch_size=256 * 1024)
    await prod.start()
    topic = settings.topic_contacts_inbound
    keys = KeyHashes()
    sent = 0
    start, cpu = time.monotonic(), time.process_time()
    try:
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(rate * elapsed) - sent
            ts = now_ms()
            records = []
            for _ in range(due):
                language, text = mix[rng.randrange(len(mix))]
                cid = f"{tag}-{sent}-{ts}"
                event = ContactArrived(event_id=cid, ts_ms=ts, contact_id=cid,
                                       domain=domains[sent % len(domains)],
                                       customer_id=f"u{sent}", language=Language(language),
                                       text=text)
                records.append((topic, cid.encode(), event.to_json()))
                sent += 1
            await send_batches(prod, keys, records)  # delivered by the flush below
            await asyncio.sleep(TICK_S)
        await prod.flush()
        return sent, time.monotonic() - start, time.process_time() - cpu
    finally:
        await prod.stop()


# --- the agents and the measurement (this process) ------------------------------------------

@dataclass
class Step:
    rate: float
    published: int = 0
    publish_s: float = 0.0
    offered: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    # Arrival to the routing stage's batch that offered it (the offer's ts_ms): the router's
    # own share of the latency; the rest is the offer's way to the desktop.
    router_ms: list[float] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)  # per process role, over the step

    def sustained(self, max_p99_ms: float) -> bool:
        return (self.published > 0 and self.offered >= SUSTAINED_SHARE * self.published
                and percentile(self.latencies_ms, 0.99) <= max_p99_ms)

    def summary(self, seconds: float) -> dict[str, Any]:
        return {"rate": self.rate, "published": self.published,
                "published_per_s": round(self.published / self.publish_s, 1)
                if self.publish_s else 0.0,
                "offered": self.offered, "contacts_per_s": round(self.offered / seconds, 1),
                "p50_ms": round(percentile(self.latencies_ms, 0.5), 1),
                "p99_ms": round(percentile(self.latencies_ms, 0.99), 1),
                "router_p50_ms": round(percentile(self.router_ms, 0.5), 1),
                "router_p99_ms": round(percentile(self.router_ms, 0.99), 1),
                "cpu_ms_per_contact": {role: round(1000 * cpu / max(self.offered, 1), 3)
                                       for role, cpu in self.cpu_s.items()}}


class Agents:
    """Every agent of the benchmark: accepts at once, completes after the handle time."""

    def __init__(self, settings: Settings, domains: list[str], per_domain: int,
                 handle_s: float) -> None:
        self.settings = settings
        self.domains = domains
        self.per_domain = per_domain
        self.handle_s = handle_s
        self.prod = producer(settings, linger_ms=2, max_batch_size=256 * 1024)
        self.cons = consumer(settings, group_id=None, max_partition_fetch_bytes=4 * 1024 * 1024)
        self.step: Step | None = None
        self.tag = ""
        self._done: list[tuple[float, str, str, str]] = []
        self._task: asyncio.Task[None] | None = None
        self.unmatched = 0

    async def start(self) -> None:
        await self.prod.start()
        await self.cons.start()
        await assign_all(self.cons, [self.settings.topic_assignments], from_end=True)
        now = now_ms()
        topic = self.settings.topic_agents_events
        for d in self.domains:
            for i in range(self.per_domain):
                login = AgentLoggedIn(event_id=f"login-{d}-{i}", ts_ms=now, agent_id=f"{d}-a{i}",
                                      domain=d, skills=dict.fromkeys(ALL_SKILLS, 3),
                                      capacity={"chat": CAPACITY})
                await self.prod.send(topic, login.to_json(), key=d.encode())
        await self.prod.flush()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        topic = self.settings.topic_agents_events
        while True:
            batch = await self.cons.getmany(timeout_ms=20, max_records=20_000)
            seen = time.time() * 1000
            for records in batch.values():
                for rec in records:
                    ev = orjson.loads(rec.value)
                    if ev.get("type") != "assignment.offered.v1":
                        continue
                    cid, d, aid = ev["contact_id"], ev["domain"], ev["agent_id"]
                    step = self.step
                    if step is not None and cid.startswith(self.tag):
                        step.offered += 1
                        arrived = int(cid.rsplit("-", 1)[1])
                        step.latencies_ms.append(seen - arrived)
                        step.router_ms.append(ev["ts_ms"] - arrived)
                    else:
                        self.unmatched += 1
                    accept = OfferAccepted(event_id=f"acc-{ev['offer_id']}", ts_ms=int(seen),
                                           agent_id=aid, domain=d, offer_id=ev["offer_id"],
                                           contact_id=cid)
                    await self.prod.send(topic, accept.to_json(), key=d.encode())
                    heapq.heappush(self._done, (time.monotonic() + self.handle_s, cid, d, aid))
            now = time.monotonic()
            while self._done and self._done[0][0] <= now:
                _, cid, d, aid = heapq.heappop(self._done)
                done = ContactCompleted(event_id=f"done-{cid}", ts_ms=now_ms(), agent_id=aid,
                                        domain=d, contact_id=cid)
                await self.prod.send(topic, done.to_json(), key=d.encode())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.cons.stop()
        await self.prod.stop()


def role_cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far of each role's processes (a process gone counts 0), and this one's
    (the simulated agents)."""
    out = {role: sum(cpu_seconds(pid) or 0.0 for pid in ps) for role, ps in pids.items()}
    out["agents"] = time.process_time()
    return out


async def run_step(settings: Settings, agents: Agents, rate: float, seconds: float,
                   domains: list[str], pids: dict[str, list[int]] | None = None) -> Step:
    """One step at ``rate``; with ``pids`` (role -> processes), the CPU each role used over it
    (the generator's own included), until the step's contacts were offered."""
    step = Step(rate)
    before = role_cpu(pids or {})
    agents.tag = f"s{uuid.uuid4().hex[:6]}"
    agents.step = step
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=generate,
                       args=(settings, rate, seconds, agents.tag, domains, child), daemon=True)
    proc.start()
    while not parent.poll():
        await asyncio.sleep(0.05)
        if not proc.is_alive() and not parent.poll():
            raise RuntimeError(f"the generator process exited (code {proc.exitcode})")
    step.published, step.publish_s, generator_cpu = parent.recv()
    # Joined off the loop: the generator's exit (its producer's stop, the interpreter's
    # teardown) took 0.3-0.4 s, and a blocking join held this loop, so the simulated desktops
    # saw the step's last offers that much late (up to 4 % of a 10 s step's contacts, enough
    # to set its p99).
    await asyncio.to_thread(proc.join)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and step.offered < step.published:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    agents.step = None
    if pids is not None:
        after = role_cpu(pids)
        step.cpu_s = {role: after[role] - before[role] for role in after}
        step.cpu_s["generator"] = generator_cpu
    # Let the backlog of an overloaded step clear before the next one: until every contact of
    # the step has had its offer (late ones count here, not in the step's figures), offers
    # stop coming for DRAIN_QUIET_S, or DRAIN_MAX_S pass.
    base = agents.unmatched
    give_up = time.monotonic() + DRAIN_MAX_S
    last, quiet_since = -1, time.monotonic()
    while time.monotonic() < give_up:
        late = agents.unmatched - base
        if step.offered + late >= step.published:
            break
        if late != last:
            last, quiet_since = late, time.monotonic()
        elif time.monotonic() - quiet_since > DRAIN_QUIET_S:
            break
        await asyncio.sleep(0.25)
    return step


async def raw_passthrough(settings: Settings, seconds: float, record_bytes: int) -> float:
    """A plain aiokafka consume-and-produce loop on the same broker: records per second."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, settings.topic_partitions, 1)
                                   for t in (RAW_IN, RAW_OUT)])
    finally:
        await admin.close()
    value = b"x" * record_bytes
    prod = producer(settings, linger_ms=5, max_batch_size=256 * 1024)
    await prod.start()
    total = int(seconds * RAW_PREFILL_PER_S)  # if the loop moves them all sooner, it stops there
    for i in range(total):
        await prod.send(RAW_IN, value, key=str(i).encode())
    await prod.flush()
    cons = consumer(settings, group_id=None, max_partition_fetch_bytes=4 * 1024 * 1024)
    await cons.start()
    await assign_all(cons, [RAW_IN], from_end=False)
    moved = 0
    start = time.monotonic()
    try:
        while time.monotonic() - start < seconds and moved < total:
            batch = await cons.getmany(timeout_ms=50, max_records=5000)
            futures = []
            for records in batch.values():
                for rec in records:
                    futures.append(await prod.send(RAW_OUT, rec.value, key=rec.key))
            if futures:
                await asyncio.gather(*futures)
            moved += len(futures)
        return moved / (time.monotonic() - start)
    finally:
        await cons.stop()
        await prod.stop()


class Search:
    """The rate search of one runtime: doubling from the start rate until a step is not
    sustained, then halving the gap until the best sustained rate is known to within
    ``REFINE`` (the next step would be less than 10 % above it), or ``max_steps``. Then, up to
    ``goal_steps`` more steps, the same for the best rate within the p99 goal: halving the gap
    between the highest step within it and the lowest step above that is not (or halving down
    from the lowest step while none is), so ``best_within_p99_per_s`` is known to within 10 %
    too, not only at the rates the first search happened to try."""

    def __init__(self, start: float, fixed: bool, max_steps: int, goal_steps: int = 0) -> None:
        self.rate: float | None = start
        self.fixed = fixed
        self.max_steps = max_steps
        self.goal_steps = goal_steps
        self.good: float | None = None
        self.bad: float | None = None
        self.steps: list[Step] = []
        self.in_goal: list[bool] = []  # per step: sustained within the p99 goal
        self._searching = True  # the first search (the sustained rate) is under way
        self._goal_taken = 0

    def record(self, step: Step, ok: bool, in_goal: bool = False) -> None:
        self.steps.append(step)
        self.in_goal.append(in_goal)
        rate = step.rate
        if self.fixed:
            self.rate = None
            return
        if not self._searching:
            self._goal_taken += 1
            self.rate = self._goal_rate()
            return
        if len(self.steps) >= self.max_steps:
            self.rate = None
        else:
            if ok:
                self.good = rate
            else:
                self.bad = rate
            if self.bad is None:
                self.rate = rate * 2
            elif self.good is None:
                self.rate = rate / 2 if rate > MIN_RATE else None
            elif self.bad / self.good > REFINE:
                self.rate = (self.good + self.bad) / 2
            else:
                self.rate = None
        if self.rate is None:
            self._searching = False
            self.rate = self._goal_rate()

    def _goal_rate(self) -> float | None:
        """The next step of the search for the best rate within the p99 goal, if any."""
        if self._goal_taken >= self.goal_steps:
            return None
        rates = [s.rate for s in self.steps]
        within = [r for r, g in zip(rates, self.in_goal, strict=True) if g]
        if not within:
            lowest = min(rates)
            return lowest / 2 if lowest > MIN_RATE else None
        good = max(within)
        above = [r for r, g in zip(rates, self.in_goal, strict=True) if not g and r > good]
        if not above or min(above) / good <= REFINE:
            return None
        return (good + min(above)) / 2


MIN_RATE = 10.0  # the search halves down to this (a loaded machine still gets a figure)
REFINE = 1.1  # a sustained rate is known to within 10 %: the lowest failing step is < 1.1 x it


@dataclass
class Lane:
    """One runtime's workers and agents, on topics, a consumer group and a Redis database of
    its own, so their steps can alternate. By default each step gets a generation of its own,
    on a fresh stack: workers and agents started for it, and stopped after it."""

    runtime: str
    index: int
    search: Search
    settings: Settings  # the current generation's
    workers: list[WorkerProcess] = field(default_factory=list)
    agents: Agents | None = None
    generation: int = 0


def lane_settings(base: Settings, lane: str, index: int, lanes: int,
                  generation: int = 0) -> Settings:
    """A lane's settings: ``lean``, ``faust``, or either with ``_uvloop``; a generation above 0
    has topics and a consumer group of its own (``<lane>.g<n>.<topic>``)."""
    runtime, _, loop = lane.partition("_")
    settings = base.replace(runtime=runtime, event_loop=loop or "asyncio")
    if lanes == 1 and not generation:
        return settings
    name = f"{lane}.g{generation}" if generation else lane
    topics = {f"topic_{role}": f"{name}.{topic}" for role, topic in base.topics.items()}
    redis_url = base.redis_url.rsplit("/", 1)[0] + f"/{index}"
    return settings.replace(app_id=f"peakroute-{name}", redis_url=redis_url, **topics)


def hop_settings(base: Settings, args: argparse.Namespace) -> Settings:
    """The stack's settings with the hop options given on the command line (the fetch wait,
    the worker's batch wait); an option left out keeps the stack's. (The workers' stages send
    each batch's outputs at once, so the producers' linger is not theirs to set.)"""
    hops: dict[str, Any] = {}
    if args.fetch_wait_ms is not None:
        hops["kafka_fetch_max_wait_ms"] = args.fetch_wait_ms
    if args.batch_within_ms is not None:
        hops["batch_within_s"] = args.batch_within_ms / 1000
    return base.replace(**hops)


class Lanes:
    """Opens and closes the lanes' generations (see Lane)."""

    def __init__(self, base: Settings, args: argparse.Namespace, domains: list[str],
                 lanes: int, log_dir: Path) -> None:
        self.base, self.args, self.domains = base, args, domains
        self.lanes, self.log_dir = lanes, log_dir

    def start(self, lane: Lane, generation: int) -> None:
        """The lane's workers for this generation, started (not yet ready)."""
        lane.generation = generation
        lane.settings = lane_settings(self.base, lane.runtime, lane.index, self.lanes,
                                      generation)
        first = (lane.index * self.args.workers) + generation * self.lanes * self.args.workers
        lane.workers = [WorkerProcess(lane.settings, first + w, self.log_dir)
                        for w in range(self.args.workers)]

    async def topics(self, lane: Lane) -> None:
        await ensure_topics(lane.settings)

    async def agents(self, lane: Lane) -> None:
        """The lane's agents logged in, then a short warm-up step."""
        lane.agents = Agents(lane.settings, self.domains, self.args.agents_per_domain,
                             self.args.handle)
        await lane.agents.start()
        await asyncio.sleep(2.0)  # the logins land
        await run_step(lane.settings, lane.agents, min(200.0, self.args.start_rate), 3.0,
                       self.domains)

    async def close(self, lane: Lane) -> None:
        if lane.agents is not None:
            await lane.agents.stop()
            lane.agents = None
        for w in lane.workers:
            w.stop()
        lane.workers = []

    async def open(self, lane: Lane, generation: int) -> None:
        """The lane's generation up: its topics, workers (ready) and agents (warmed up)."""
        self.start(lane, generation)
        await self.topics(lane)
        await wait_ready(lane.workers)
        await self.agents(lane)



async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both runtimes (``--runtime both``): one JSON object per runtime, each with the keys of a
    single runtime's, and ``faust_to_lean`` (the faust runtime's best sustained rate over the
    lean one's); their steps alternate (lean first in one round, faust first in the next)."""
    runtimes = ["lean", "faust"] if args.runtime == "both" else [args.runtime]
    if args.uvloop:  # the same runtimes again on uvloop, alternating with them
        runtimes += [f"{r}_uvloop" for r in runtimes]
    domains = [f"bench-{i}" for i in range(args.domains)]
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        policy = Path(tmp) / "policy.yaml"
        policy.write_text(bench_policy(CAPACITY))
        stack = EmbeddedStack(Path(tmp) / "stack", partitions=args.partitions)
        stacked = (await stack.start()).replace(routing_policy=str(policy))
        base = hop_settings(stacked, args)

        async def fresh_stack() -> Settings:
            """The embedded stack stopped and started again: a new broker and Redis, empty."""
            stack.stop()
            return hop_settings((await stack.start()).replace(routing_policy=str(policy)), args)

        lanes = [Lane(runtime, i, Search(args.rate or args.start_rate, bool(args.rate),
                                         args.max_steps, args.goal_steps),
                      lane_settings(base, runtime, i, len(runtimes)))
                 for i, runtime in enumerate(runtimes)]
        opener = Lanes(base, args, domains, len(lanes), Path(tmp))
        spy: subprocess.Popen[bytes] | None = None
        # The bot's model trained (and cached in the state dir) once, here, before the workers
        # start: several workers of a fresh stack would each train it at once.
        BrainHolder(base).load()
        try:
            sample = ContactArrived(event_id="x" * 30, ts_ms=now_ms(), contact_id="x" * 30,
                                    domain=domains[0], customer_id="u1234567",
                                    text=handoff_questions()[0][1])
            # The raw loop on the stack's own hop settings, whatever the options, so its figure
            # stays comparable between runs; on a quiet broker (no lane is up yet).
            raw = await raw_passthrough(stacked, args.seconds, len(sample.to_json()))
            print(f"raw aiokafka consume-and-produce on this broker: {raw:,.0f} records/s",
                  flush=True)
            if args.shared_logs:  # every lane up for the whole run
                for lane in lanes:
                    await opener.open(lane, 0)
            round_ = 0
            while any(lane.search.rate is not None for lane in lanes):
                order = lanes if round_ % 2 == 0 else lanes[::-1]
                round_ += 1
                for lane in order:
                    rate = lane.search.rate
                    if rate is None:
                        continue
                    if not args.shared_logs:  # a fresh stack, only this lane's processes
                        opener.base = await fresh_stack()
                        await opener.open(lane, len(lane.search.steps))
                    assert lane.agents is not None
                    if args.py_spy and args.rate:  # one file per lane when there are several
                        out = args.py_spy if len(lanes) == 1 else f"{args.py_spy}.{lane.runtime}"
                        spy = start_py_spy(out, lane.workers[0].proc.pid, args.seconds)
                    pids = {"workers": [w.proc.pid for w in lane.workers]}
                    pids |= {p.name: [p.pid] for p in stack.processes}
                    step = await run_step(lane.settings, lane.agents, rate, args.seconds,
                                          domains, pids)
                    s = step.summary(args.seconds)
                    ok = step.sustained(args.max_p99_ms)
                    print(f"  {lane.runtime:12} {rate:8.0f}/s offered: published "
                          f"{s['published_per_s']:8.1f}/s, through {s['contacts_per_s']:8.1f}/s, "
                          f"p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms "
                          f"(router p99 {s['router_p99_ms']} ms), CPU ms per contact "
                          f"{cpu_line(s['cpu_ms_per_contact'])} -> "
                          f"{'sustained' if ok else 'not sustained'}", flush=True)
                    lane.search.record(step, ok, ok and step.sustained(args.p99_ms))
                    if spy is not None:
                        spy.wait(timeout=args.seconds + 30)
                        spy = None
                    if not args.shared_logs:  # idle, it would poll the broker meanwhile
                        await opener.close(lane)
        finally:
            for lane in lanes:
                await opener.close(lane)
            stack.stop()
    results = {lane.runtime: summarize(args, lane.search.steps, raw)
               | {"runtime": lane.settings.runtime, "event_loop": lane.settings.event_loop,
                  "fresh_logs": not args.shared_logs}
               for lane in lanes}
    if len(lanes) == 1:
        return results[runtimes[0]]
    if args.runtime != "both":
        return results
    lean, faust = results["lean"], results["faust"]
    ratio = (round(faust["contacts_per_s"] / lean["contacts_per_s"], 3)
             if lean["contacts_per_s"] else 0.0)
    return {**results, "faust_to_lean": ratio}


def summarize(args: argparse.Namespace, steps: list[Step], raw: float) -> dict[str, Any]:
    """One runtime's figures (the keys every run of this benchmark reports)."""
    sustained = [s for s in steps if s.sustained(args.max_p99_ms)]
    best = max(sustained, key=lambda s: s.offered) if sustained else max(
        steps, key=lambda s: s.offered)
    b = best.summary(args.seconds)
    in_goal = [s for s in sustained if s.sustained(args.p99_ms)]
    return {
        "contacts_per_s": b["contacts_per_s"] if sustained else 0.0,
        "raw_passthrough_per_s": round(raw, 1),
        "p50_ms": b["p50_ms"], "p99_ms": b["p99_ms"],
        "ratio_to_raw": round(b["contacts_per_s"] / raw, 3) if raw and sustained else 0.0,
        "goal_met": bool(sustained) and b["contacts_per_s"] >= GOAL_PER_S
        and b["p99_ms"] <= args.p99_ms,
        "best_within_p99_per_s": max((s.summary(args.seconds)["contacts_per_s"]
                                      for s in in_goal), default=0.0),
        "best_step": b, "sustained": bool(sustained),
        "steps": [s.summary(args.seconds) for s in steps],
        "workers": args.workers, "partitions": args.partitions, "domains": args.domains,
        "agents": args.domains * args.agents_per_domain, "handle_s": args.handle,
        "p99_goal_ms": args.p99_ms, "max_p99_ms": args.max_p99_ms,
        "seconds_per_step": args.seconds,
    }


def cpu_line(per_contact: dict[str, float]) -> str:
    return " ".join(f"{role} {ms:.2f}" for role, ms in per_contact.items())


def start_py_spy(out: str, pid: int, seconds: float) -> subprocess.Popen[bytes]:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen([exe, "record", "-p", str(pid), "-d", str(int(seconds)),
                             "-r", "50", "-f", "raw", "-o", out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m load_tests.bench_pipeline",
        description="Highest sustained contacts/s through the bot and routing stages, next to "
                    "the raw aiokafka consume-and-produce ceiling on the same broker.")
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds per rate step (10)")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="one step at this rate instead of the search")
    ap.add_argument("--start-rate", type=float, default=250.0,
                    help="first step of the search, contacts/s (250)")
    ap.add_argument("--max-steps", type=int, default=9,
                    help="steps per runtime at most (9: enough to refine to within 10 %%)")
    ap.add_argument("--goal-steps", type=int, default=3,
                    help="steps per runtime after the search, to refine the best rate within "
                         "the p99 goal to within 10 %% (3)")
    ap.add_argument("--runtime", choices=("faust", "lean", "both"), default="lean",
                    help="the worker's runtime; both: alternating steps of each in one run, "
                         "one JSON object per runtime and faust_to_lean (lean)")
    ap.add_argument("--uvloop", action="store_true",
                    help="also the same runtime(s) on uvloop, alternating with them "
                         "(objects lean_uvloop, faust_uvloop)")
    ap.add_argument("--p99-ms", type=float, default=250.0,
                    help="the goal's arrival-to-offer p99 (250)")
    ap.add_argument("--max-p99-ms", type=float, default=1000.0,
                    help="p99 above which a step counts as not keeping up (1000)")
    ap.add_argument("--workers", type=int, default=1, help="router worker processes (1)")
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--domains", type=int, default=8, help="routing domains (8)")
    ap.add_argument("--agents-per-domain", type=int, default=100)
    ap.add_argument("--handle", type=float, default=0.5, help="handle time, seconds (0.5)")
    ap.add_argument("--py-spy", default="",
                    help="with --rate: record the first worker with py-spy (raw format) here "
                         "(several lanes: FILE.<lane>)")
    ap.add_argument("--shared-logs", action="store_true",
                    help="one stack for the whole run, every lane up throughout, each lane's "
                         "steps on the same topics (by default each step has a fresh stack, "
                         "see above: the embedded broker slows as a run goes on)")
    ap.add_argument("--fetch-wait-ms", type=int, default=None,
                    help="consumers' fetch wait, the workers' and the agents' (the stack's: 20)")
    ap.add_argument("--batch-within-ms", type=float, default=None,
                    help="the workers' batch wait (the setting's default: 20)")
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    if args.runtime == "both" or args.uvloop:
        for runtime in (k for k, v in result.items() if isinstance(v, dict)):
            r = result[runtime]
            print(f"{runtime:5}: {r['contacts_per_s']:,.0f} contacts/s sustained (p99 "
                  f"{r['p99_ms']} ms), {r['best_within_p99_per_s']:,.0f}/s within p99 "
                  f"{args.p99_ms:.0f} ms; ratio to raw {r['ratio_to_raw']}", flush=True)
        if "faust_to_lean" in result:
            print(f"faust / lean: {result['faust_to_lean']}", flush=True)
        if args.json:
            sys.stdout.write(orjson.dumps(result).decode() + "\n")
        return 0
    print(f"pipeline: {result['contacts_per_s']:,.0f} contacts/s sustained (p50 "
          f"{result['p50_ms']} ms, p99 {result['p99_ms']} ms arrival to offer); raw ceiling "
          f"{result['raw_passthrough_per_s']:,.0f} records/s; ratio {result['ratio_to_raw']}",
          flush=True)
    if args.json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
