"""Instructions Redis runs per routing event: a deterministic measure of the routing code's cost.

    python -m load_tests.routing_instructions [--agents 10000 --warm 500 --batches 1500]

Wall times on a shared machine move by a third from one minute to the next; the instructions a
process runs do not. This replays bench_routing's mix (its driver, policy and agents) with a
fixed clock and seed through RoutingStore, against a redis-server run under valgrind's
callgrind with counting switched on only for the measured batches, and prints one JSON line:
`instructions_per_event` (Redis's, everything it ran: the functions, the commands, the
network), `commands_per_event` (inside the functions) and the events counted. Two commits
compared this way differ by what their code does, not by what else the machine did (the same
code counts the same to about 0.1 %). `--plain` runs the replay without valgrind (fast: the
commands per event only); `--profile FILE` keeps callgrind's counts for `callgrind_annotate FILE`
(where the instructions went, by function). Instructions are not time: what memory costs
(cache misses, a larger heap for Lua's collector to walk) is not in them, so time a change
that grows what Redis holds before keeping it (docs/ROUTING.md). Needs `valgrind` (Debian:
`apt-get install valgrind`).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from load_tests import bench_routing as br
from router.routing.store import RoutingStore
from router.settings import Settings
from router.stack import free_port, redis_binary

T0 = 1_800_000_000_000
STEP_MS = 20  # the fixed clock's step per batch


async def _replay(client: aioredis.Redis, agents: int, warm: int, batches: int,
                  measure: Any) -> dict[str, Any]:
    store = RoutingStore(client, Settings(match_scan_limit=200), br.bench_policy(50))
    now = T0
    drivers = await br.log_in(store, ("bench-0", "bench-1"), agents // 2, 50, 0.95,
                              random.Random(7), now)

    async def step(i: int) -> int:
        nonlocal now
        now += STEP_MS
        driver = drivers[i % 2]
        events = driver.batch(8, now)
        results = await store.apply(events, now)
        for r in results:
            if not isinstance(r, Exception):
                store.ack_entries(r)
        driver.follow(results)
        if i % 25 == 0:  # the worker's timer, every half second of the fixed clock
            ticked = await store.tick(now)
            store.ack_entries(ticked)
            for d in drivers:
                d.follow([[e for e in ticked if e.rows and e.rows[0].domain == d.domain]])
        return len(events)

    for i in range(warm):
        await step(i)
    await client.config_resetstat()
    measure(True)
    events = 0
    for i in range(warm, warm + batches):
        events += await step(i)
    measure(False)
    stats = await client.info("commandstats")
    inner = sum(v["calls"] for k, v in stats.items()
                if k not in ("cmdstat_fcall", "cmdstat_evalsha", "cmdstat_config",
                             "cmdstat_info"))
    return {"events": events, "commands_per_event": round(inner / max(events, 1), 2)}


def _dump_total(dump: Path) -> int:
    """The instructions one callgrind dump counted."""
    total = 0
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            total = max(total, int(line.split()[1]))
    return total


def _largest_dump(path: Path) -> tuple[Path | None, int]:
    """Callgrind's dump for --callgrind-out-file=path (path, and path.<pid>.<n> per dump) with
    the largest total, and that total: the counted batches'."""
    totals = {dump: _dump_total(dump) for dump in path.parent.glob(path.name + "*")}
    largest = max(totals, key=totals.__getitem__, default=None)
    return largest, totals[largest] if largest else 0


async def _drive(port: int, args: argparse.Namespace, measure: Any) -> dict[str, Any]:
    client = aioredis.Redis(port=port)
    try:
        for _ in range(300):
            try:
                await client.ping()
                break
            except (ConnectionError, OSError, aioredis.ConnectionError):
                await asyncio.sleep(0.1)
        return await _replay(client, args.agents, args.warm, args.batches, measure)
    finally:
        await client.aclose()


def run(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="peakroute-instr-"))
    out = work / "callgrind.out"
    argv = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(work)]
    if not args.plain:
        argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                f"--callgrind-out-file={out}", *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def control(*what: str) -> None:
        if not args.plain:
            subprocess.run(["callgrind_control", *what, str(proc.pid)], capture_output=True,
                           check=False)

    try:
        got = asyncio.run(_drive(port, args,
                                 lambda on: control("-i", "on" if on else "off")))
        control("-d")
    finally:
        proc.terminate()
        proc.wait()
    if not args.plain:
        dump, total = _largest_dump(out)
        got["instructions_per_event"] = round(total / max(got["events"], 1))
        if args.profile and dump:  # the dump the figure was read from
            shutil.copy(dump, args.profile)
    shutil.rmtree(work, ignore_errors=True)
    return {"agents": args.agents, "batches": args.batches, **got}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--warm", type=int, default=500, help="batches before counting")
    parser.add_argument("--batches", type=int, default=1500, help="batches counted (8 events)")
    parser.add_argument("--plain", action="store_true",
                        help="no valgrind: the replay's commands per event only")
    parser.add_argument("--profile", type=Path, default=None,
                        help="also keep callgrind's counts in this file (for callgrind_annotate)")
    args = parser.parse_args(argv)
    if not args.plain and not shutil.which("valgrind"):
        print("valgrind is not installed: apt-get install valgrind (or use --plain)",
              file=sys.stderr)
        return 2
    print(orjson.dumps(run(args)).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
