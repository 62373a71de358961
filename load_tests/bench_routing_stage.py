"""The routing benchmark through a worker: `python -m load_tests.bench_routing --stage`.

The same closed-loop mix as the store benchmark (load_tests.bench_routing.Driver), but every
event goes through Kafka and a real router worker process: routing requests and agent events
are published to their topics on the embedded stack (Tansu + redis-server); offers come back on
`assignments`, the audit on `routing.decisions`; the driver accepts the offers and completes
the answered contacts through `agents.events`. Throughput is the audit records per second the
worker wrote; latency is a routing request's publication to its first decision arriving back
(offered, or queued when no agent is free: time spent waiting for an agent is not the router's).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from load_tests.bench_routing import Driver, agent_profile, bench_policy_text, percentile
from router.demo import WorkerProcess, wait_ready
from router.events import AgentLoggedIn, CustomerLeft, RoutingRequested
from router.kafka import assign_all, consumer, producer
from router.routing import state
from router.routing.state import Entry
from router.stack import EmbeddedStack


async def run_stage(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-stage-") as tmp:
        policy_file = Path(tmp) / "policy.yaml"
        policy_file.write_text(bench_policy_text(args.queues))
        stack = EmbeddedStack(Path(tmp) / "stack", partitions=8)
        settings = (await stack.start()).replace(routing_policy=str(policy_file))
        worker = WorkerProcess(settings, 0, Path(tmp))
        try:
            await wait_ready([worker])
            return await _drive(args, settings)
        finally:
            worker.stop()
            stack.stop()


async def _drive(args: argparse.Namespace, settings: Any) -> dict[str, Any]:
    rng = random.Random(args.seed)
    prod = producer(settings, linger_ms=2)
    cons = consumer(settings, group_id=None)
    await prod.start()
    await cons.start()
    await assign_all(cons, [settings.topic_assignments, settings.topic_routing_decisions],
                     from_end=True)
    domains = [f"bench-{i}" for i in range(args.concurrency)]
    drivers: dict[str, Driver] = {}
    now = int(time.time() * 1000)
    per_domain = args.agents // len(domains)
    for d in domains:
        agents = [f"{d}-a{i}" for i in range(per_domain)]
        slots = 0
        for aid in agents:
            skills, capacity = agent_profile(rng, args.queues)
            slots += sum(capacity.values())
            login = AgentLoggedIn(event_id=f"login-{aid}", ts_ms=now, agent_id=aid, domain=d,
                                  skills=skills, capacity=capacity)
            await prod.send(settings.topic_agents_events, login.to_json(), key=d.encode())
        drivers[d] = Driver(d, args.queues, agents, random.Random(rng.random()),
                            active_target=int(slots * args.occupancy))
    await prod.flush()
    await asyncio.sleep(2.0)  # let the logins land before contacts arrive

    published_at: dict[str, float] = {}
    latencies: list[float] = []
    decisions = 0
    began = time.perf_counter()
    start = began + args.warmup  # measure once the centre has filled up
    deadline = start + args.seconds
    budget, last = 0.0, began
    while time.perf_counter() < deadline:
        now = int(time.time() * 1000)
        clock = time.perf_counter()
        budget = min(budget + args.rate * (clock - last), args.rate)  # new contacts allowed
        last = clock
        share = int(budget / len(drivers))
        for d, driver in drivers.items():
            events = driver.batch(args.batch, now, max_new=share)
            budget -= sum(isinstance(e, RoutingRequested) for e in events)
            for event in events:
                topic = (settings.topic_routing_requests
                         if isinstance(event, RoutingRequested | CustomerLeft)
                         else settings.topic_agents_events)
                if isinstance(event, RoutingRequested):
                    published_at[event.contact_id] = time.perf_counter()
                await prod.send(topic, event.to_json(), key=d.encode())  # queued, not awaited
        batch = await cons.getmany(timeout_ms=20, max_records=20_000)
        seen = time.perf_counter()
        results: dict[str, list[state.Transition]] = {d: [] for d in drivers}
        for records in batch.values():
            for record in records:
                event = orjson.loads(record.value)
                d = event.get("domain", "")
                if d not in drivers:
                    continue
                kind = event["type"]
                measuring = seen >= start
                if kind == "routing.decision.v1":
                    decisions += measuring
                    # The router's own latency: the request's first decision (offered at
                    # once, or queued for want of a free agent; waiting is not latency).
                    sent = published_at.pop(event["contact_id"], None)
                    if sent is not None and measuring:
                        latencies.append((seen - sent) * 1000)
                    if event["decision"] == "accepted":
                        results[d].append(state.Answered(
                            contact_id=event["contact_id"], agent_id=event.get("agent_id") or "",
                            domain=d))
                    elif event["decision"] == "abandoned":
                        results[d].append(state.Abandoned(contact_id=event["contact_id"],
                                                          domain=d))
                elif kind == "assignment.offered.v1":
                    results[d].append(state.Offered(
                        contact_id=event["contact_id"], agent_id=event["agent_id"], domain=d,
                        offer_id=event["offer_id"]))
        for d, transitions in results.items():
            drivers[d].follow([[Entry("", transitions)]])
    elapsed = time.perf_counter() - start
    await prod.stop()
    await cons.stop()
    latencies.sort()
    return {
        "mode": "stage", "agents": per_domain * len(domains), "queues": args.queues,
        "rate": args.rate,
        "seconds": round(elapsed, 2), "occupancy_target": args.occupancy,
        "decisions": decisions, "offers_timed": len(latencies),
        "decisions_per_s": round(decisions / elapsed),
        "p50_ms": round(percentile(latencies, 0.50), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
    }
