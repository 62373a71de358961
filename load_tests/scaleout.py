"""Scale-out on one machine: the same offered load against 1, 2, ... worker processes of the
same app (one consumer group sharing the partitions), with each process's CPU.

    python -m load_tests.scaleout --workers 1 2 --rate 600 --duration 30 --json
    python -m load_tests.scaleout --workers 1 2 3 --redis-cluster 3 --json  # three primaries

Per worker count: contacts the bot stage took in per second (the arrived counter in Redis,
over the measured window after a warm-up), escalations routed, bot reply latency, the backlog
left, and the cores each process kept busy (workers, broker, Redis, and this process: the
simulated gateway and agents). From those: CPU-seconds per 1,000 contacts by role, which is
what sizing on a bigger machine needs (docs/OPERATIONS.md). Offer more than the workers can
take to measure capacity; the tool reports whether the workers kept up.
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

from load_tests.cluster import DOMAIN, Cluster, ClusterOptions
from load_tests.gateway import percentile
from router.bot.conversation import conversation_pattern
from router.redis_client import on_every_primary
from router.routing import state
from router.routing.store import domain_stats


async def key_bytes(client: Any, pattern: str, sample: int = 300) -> int | None:
    """Average MEMORY USAGE of up to ``sample`` keys matching ``pattern``."""
    sizes: list[int] = []
    async for key in client.scan_iter(match=pattern, count=1000):
        size = await client.memory_usage(key, samples=0)
        if size is not None:
            sizes.append(int(size))
        if len(sizes) >= sample:
            break
    return round(sum(sizes) / len(sizes)) if sizes else None


async def measure(workers: int, args: argparse.Namespace, say: Any) -> dict[str, Any]:
    state_dir = Path(args.state_dir or tempfile.mkdtemp(prefix="peakroute-scaleout-"))
    cluster = Cluster(state_dir / f"w{workers}", ClusterOptions(
        workers=workers, partitions=args.partitions, agents=args.agents,
        handle_mean_s=args.handle_time, patience_s=args.patience, bad_ratio=0.0,
        redis_cluster=args.redis_cluster))
    try:
        await cluster.start(args.rate)
        gateway = cluster.gateway
        assert gateway is not None
        assert cluster.redis is not None
        say(f"{workers} worker(s): offering ~{args.rate:g} contacts/s for "
            f"{args.warmup + args.duration:g} s ({args.warmup:g} s warm-up)")
        publishing = asyncio.create_task(gateway.run(args.warmup + args.duration))
        await asyncio.sleep(args.warmup)
        before = await domain_stats(cluster.redis, DOMAIN)
        published_before = gateway.stats.published
        replies_before = len(gateway.stats.reply_latencies_ms)
        cluster.cpu.start(cluster.pids())
        started = time.monotonic()
        await publishing
        window = time.monotonic() - started
        cluster.cpu.stop()
        after = await domain_stats(cluster.redis, DOMAIN)
        arrived = after["arrived"] - before["arrived"]
        published = gateway.stats.published - published_before
        latencies = gateway.stats.reply_latencies_ms[replies_before:]
        used = cluster.cpu.used
        worker_cpu = sum(v for k, v in used.items() if k.startswith("worker-"))
        per_1000 = {role: round(cpu / arrived * 1000, 2) if arrived else None
                    for role, cpu in sorted(used.items())}
        per_1000["workers_total"] = round(worker_cpu / arrived * 1000, 2) if arrived else None
        redis_cpu = sum(v for k, v in used.items() if k.startswith("redis"))
        per_1000["redis_total"] = round(redis_cpu / arrived * 1000, 2) if arrived else None
        contacts_key = state.key(DOMAIN, state.Key.CONTACTS)
        memory = {"contact_hash_bytes": int(await cluster.redis.memory_usage(contacts_key)
                                            or 0),
                  "bot_conversation_bytes": await key_bytes(cluster.redis,
                                                            conversation_pattern(DOMAIN)),
                  "used_memory_bytes": sum(int(info["used_memory"]) for info in
                                           await on_every_primary(cluster.redis, "INFO",
                                                                  "memory")),
                  "contacts": after["arrived"]}
        return {
            "workers": workers,
            "redis_primaries": args.redis_cluster or 1,
            "window_s": round(window, 1),
            "published_per_s": round(published / window, 1),
            "processed_per_s": round(arrived / window, 1),
            "escalated_per_s": round((after["escalated"] - before["escalated"]) / window, 1),
            "kept_up": arrived >= 0.97 * published,
            "backlog_at_end": gateway.stats.published - after["arrived"],
            "bot_reply_ms": {"p50": round(percentile(latencies, 0.5), 1),
                             "p99": round(percentile(latencies, 0.99), 1)},
            "cpu_cores": cluster.cpu.shares(),
            "cpu_s_per_1000_contacts": per_1000,
            "redis_memory": memory,
        }
    finally:
        await cluster.stop()


async def run(args: argparse.Namespace, out: Any = sys.stderr) -> dict[str, Any]:
    def say(line: str) -> None:
        print(line, file=out, flush=True)

    runs = []
    for workers in args.workers:
        result = await measure(workers, args, say)
        say(f"  {workers} worker(s): {result['processed_per_s']} contacts/s processed of "
            f"{result['published_per_s']} offered; cores {result['cpu_cores']}")
        runs.append(result)
    base = runs[0]["processed_per_s"] or 1.0
    return {"rate": args.rate, "duration_s": args.duration, "partitions": args.partitions,
            "redis_primaries": args.redis_cluster or 1,
            "runs": runs,
            "speedup": {str(r["workers"]): round(r["processed_per_s"] / base, 2) for r in runs}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.scaleout",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="worker counts to measure, one run each")
    parser.add_argument("--rate", type=float, default=600.0, help="contacts per second offered")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring")
    parser.add_argument("--agents", type=int, default=300, help="simulated agents")
    parser.add_argument("--handle-time", type=float, default=4.0)
    parser.add_argument("--patience", type=float, default=30.0)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--redis-cluster", type=int, default=0, metavar="N",
                        help="Redis as a cluster of N primaries (N >= 3) instead of one; the "
                        "CPU is then reported per primary (redis-0 ... redis-<N-1>)")
    parser.add_argument("--state-dir", help="where the stacks keep logs (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="the result as one JSON line")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
