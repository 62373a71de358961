"""The demo through Redis faults (issue 16): `peakroute demo --rate 30 --bad-ratio 0` while its
Redis is out of memory for 4 s, then read-only for 4 s (a failover window), then has every
client connection reset (repeatedly, for 4 s). It must end with its books balanced, open 0
and no dead letter.

    python -m load_tests.demo_faults [--rate 30] [--duration 45] [--fault-s 4] [--json]

It prints the demo's progress (the line says when Redis refuses, and what, by kind), each
fault with the Redis errors the workers counted while it lasted
(``peakroute_redis_errors_total`` by kind, from their /metrics), then the books. Exit status 0
only if every fault bit (its kind was counted), the books balance, open is 0 and nothing was
dead-lettered; 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis

from router.demo import DemoOptions, DemoRun, WorkerProcess, render_summary, run_demo
from router.redis_client import redis_client
from router.stack import free_port

LEAD_S = 10.0  # traffic flows this long before the first fault
GAP_S = 6.0  # and this long between faults
RESET_EVERY_S = 0.25
ERRORS = re.compile(r'^peakroute_redis_errors_total\{kind="([a-z]+)"\} (\S+)$', re.M)


def redis_errors(workers: list[WorkerProcess]) -> Counter[str]:
    """peakroute_redis_errors_total by kind, summed over the workers (a worker that does not
    answer counts nothing)."""
    total: Counter[str] = Counter()
    for worker in workers:
        try:
            page = worker.get("/metrics").decode()
        except OSError:
            continue
        for kind, value in ERRORS.findall(page):
            total[kind] += int(float(value))
    return total


@asynccontextmanager
async def out_of_memory(admin: aioredis.Redis, notes: list[str]) -> AsyncIterator[None]:
    """maxmemory just above what Redis uses, policy noeviction: writes are refused (OOM)."""
    used = int((await admin.info("memory"))["used_memory"])
    policy = (await admin.config_get("maxmemory-policy"))["maxmemory-policy"]
    await admin.config_set("maxmemory-policy", "noeviction")
    await admin.config_set("maxmemory", used + 64 * 1024)
    try:
        notes.append(f"maxmemory {used + 64 * 1024} bytes (used {used}), noeviction")
        yield
    finally:
        await admin.config_set("maxmemory", 0)
        await admin.config_set("maxmemory-policy", policy)


@asynccontextmanager
async def read_only(admin: aioredis.Redis, notes: list[str]) -> AsyncIterator[None]:
    """A replica of a primary that does not answer (a failover window): writes are refused
    (READONLY), reads served; then promoted back."""
    port = free_port()
    await admin.execute_command("REPLICAOF", "127.0.0.1", str(port))
    try:
        notes.append(f"replica of 127.0.0.1:{port} (nothing listens there)")
        yield
    finally:
        await admin.execute_command("REPLICAOF", "NO", "ONE")


@asynccontextmanager
async def resets(admin: aioredis.Redis, notes: list[str]) -> AsyncIterator[None]:
    """CLIENT KILL TYPE normal every RESET_EVERY_S while traffic flows: every client
    connection (the workers', the agents' gateway has none, the demo's own) is reset."""
    killed: list[int] = []
    stop = asyncio.Event()

    async def kill() -> None:
        while not stop.is_set():
            killed.append(int(await admin.client_kill_filter(_type="normal")))
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RESET_EVERY_S)

    killing = asyncio.create_task(kill())
    try:
        yield
    finally:
        stop.set()
        await killing
        notes.append(f"CLIENT KILL TYPE normal every {RESET_EVERY_S} s: {sum(killed)} "
                     f"connections killed in {len(killed)} rounds")


# A fault holds for the body of its block; it notes what it did.
Fault = Callable[[aioredis.Redis, list[str]], AbstractAsyncContextManager[None]]
FAULTS: list[tuple[str, Fault, str]] = [  # name, fault, the kind it must make workers count
    ("oom", out_of_memory, "oom"),
    ("readonly", read_only, "readonly"),
    ("resets", resets, "connection"),
]


@dataclass
class FaultRecord:
    name: str
    how: str = ""
    held_s: float = 0.0
    worker_errors: dict[str, int] = field(default_factory=dict)  # counted while it lasted
    bit: bool = False


def inject(fault_s: float, records: list[FaultRecord]) -> Callable[[DemoRun], Any]:
    """The demo's ``during`` hook: the faults one after another, each recorded."""
    async def during(run: DemoRun) -> None:
        async with redis_client(run.settings) as admin:  # no socket timeout: it must get in
            await asyncio.sleep(LEAD_S)
            for n, (name, fault, kind) in enumerate(FAULTS):
                if n:
                    await asyncio.sleep(GAP_S)
                before = await asyncio.to_thread(redis_errors, run.workers)
                record = FaultRecord(name)
                run.say(f"FAULT {name}: start")
                started = time.monotonic()
                notes: list[str] = []
                async with fault(admin, notes):
                    await asyncio.sleep(fault_s)
                record.held_s = round(time.monotonic() - started, 1)
                record.how = "; ".join(notes)
                run.say(f"FAULT {name}: over after {record.held_s} s ({record.how})")
                await asyncio.sleep(1.0)  # the batches retried in the last backoff step
                after = await asyncio.to_thread(redis_errors, run.workers)
                record.worker_errors = {k: after[k] - before[k] for k in after
                                        if after[k] > before[k]}
                record.bit = record.worker_errors.get(kind, 0) > 0
                run.say(f"FAULT {name}: workers counted {record.worker_errors or 'nothing'}")
                records.append(record)
    return during


def verdict(result: dict[str, Any], records: list[FaultRecord]) -> dict[str, Any]:
    totals = result["totals"]
    checks = {
        "books_balanced": bool(result["balanced"]),
        "open_zero": totals["open"] == 0,
        "no_dead_letter": totals["deadlettered"] == 0,
        "every_fault_bit": len(records) == len(FAULTS) and all(r.bit for r in records),
    }
    return {"ok": all(checks.values()), **checks}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.demo_faults",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--duration", type=float, default=45.0,
                        help="seconds of publishing (the faults need ~37 s at --fault-s 4)")
    parser.add_argument("--fault-s", type=float, default=4.0, help="how long each fault lasts")
    parser.add_argument("--agents", type=int, default=40)
    parser.add_argument("--drain", type=float, default=90.0)
    parser.add_argument("--json", action="store_true",
                        help="progress as JSON lines on stderr, the result as JSON on stdout")
    args = parser.parse_args(argv)
    records: list[FaultRecord] = []
    opts = DemoOptions(rate=args.rate, duration_s=args.duration, agents=args.agents,
                       bad_ratio=0.0, drain_s=args.drain, json_progress=args.json,
                       during=inject(args.fault_s, records))
    result = asyncio.run(run_demo(opts, sys.stderr if args.json else sys.stdout))
    checked = verdict(result, records)
    if args.json:
        print(orjson.dumps({"books": result, "faults": [r.__dict__ for r in records],
                            "verdict": checked}).decode())
    else:
        print(render_summary(result))
        for r in records:
            print(f"  fault {r.name} ({r.how}) held {r.held_s} s: workers counted "
                  f"{r.worker_errors or 'nothing'}{'' if r.bit else '  <- DID NOT BITE'}")
        print("verdict: " + ", ".join(f"{k} {v}" for k, v in checked.items()))
    return 0 if checked["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
