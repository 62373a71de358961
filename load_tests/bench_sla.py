"""What the SLA snapshot costs: /metrics (the exporter's scrape) and `peakroute status` read it.

    python -m load_tests.bench_sla --agents 10000 --queues 50 --seconds 10

Runs the routing benchmark's sales-peak mix (load_tests/bench_routing.py) on its own
redis-server to fill the SLA buckets, queues and agents, then reads the whole snapshot
(every domain, queue, window, live value and agent): once cold, then --reads - 1 times with a
BucketCache as the exporter and status keep it. The last line is one JSON object:
snapshot_cold_ms, snapshot_p50_ms, snapshot_max_ms, and the figures' size.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from load_tests.bench_routing import run, standalone_redis
from load_tests.gateway import percentile
from router.settings import Settings
from router.sla.snapshot import BucketCache, read_snapshot


async def measure(args: argparse.Namespace, url: str) -> dict[str, Any]:
    routing = await run(args, url)
    client = aioredis.Redis.from_url(url)
    times, cold = [], []
    snap = None
    cache = BucketCache()  # what the exporter and `peakroute status` keep between reads
    for i in range(args.reads):
        started = time.perf_counter()
        snap = await read_snapshot(client, Settings(), cache=cache if i else None)
        (times if i else cold).append((time.perf_counter() - started) * 1000)
    await client.aclose()
    assert snap is not None
    return {
        "agents": routing["agents"], "domains": len(snap.domains), "queues": len(snap.queues),
        "answered": sum(q.totals.answered for q in snap.queues),
        "routing_decisions_per_s": routing["decisions_per_s"], "reads": args.reads,
        "snapshot_cold_ms": round(cold[0], 1),
        "snapshot_p50_ms": round(percentile(times, 0.5), 1),
        "snapshot_max_ms": round(max(times), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.bench_sla",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--queues", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--reads", type=int, default=20)
    args = parser.parse_args(argv)
    # the routing benchmark's other options, at their defaults
    defaults = dict(batch=8, concurrency=2, occupancy=0.95, rate=2000.0, warmup=10.0, seed=7,
                    redis_url="", stage=False)
    for key, value in defaults.items():
        setattr(args, key, value)
    with tempfile.TemporaryDirectory(prefix="bench-sla-") as tmp, \
            standalone_redis(Path(tmp)) as url:
        result = asyncio.run(measure(args, url))
    print(f"snapshot of {result['queues']} queues and {result['agents']} agents: cold "
          f"{result['snapshot_cold_ms']} ms, then p50 {result['snapshot_p50_ms']} ms, max "
          f"{result['snapshot_max_ms']} ms",
          file=sys.stderr)
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
