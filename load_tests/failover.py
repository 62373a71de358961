"""The failover proof: under load, SIGKILL router workers (more than once), restart them, stop
one gracefully (SIGTERM, as a rolling deploy does), let a backlog build while every worker is
down, restart Redis (append-only file), then account for every contact.

    python -m load_tests.failover --workers 2 --rate 20 --duration 60 --json

The last line of output is one JSON object: the books of load_tests/accounting.py (published,
terminal, lost, stranded, phantom_not_ready, double_assigned, deadletters,
counters_match_audit), kills, and the detail behind them. A contact is terminal when Redis
holds it contained, answered (then done) or abandoned; a dead letter is terminal only for a
record the gateway sent malformed on purpose; lost counts the rest after the drain. Exits 1
unless the books hold (load_tests.accounting.books_hold), the counters were not inflated by
re-delivery and Redis kept its state across the restart.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from load_tests import accounting
from load_tests.accounting import Window
from load_tests.cluster import DOMAIN, Cluster, ClusterOptions, sleep_until
from router.routing.store import domain_live, domain_stats


@dataclass
class Chaos:
    """What was done to the cluster, and what it showed."""

    kills: int = 0
    restarts: int = 0
    backlog_kills: int = 0
    backlog_down_s: float = 0.0
    graceful_restarts: int = 0
    graceful_stop_s: list[float] = field(default_factory=list)
    redis_restarts: int = 0
    redis_down_s: float = 0.0
    redis_state_intact: bool | None = None
    redis_state_checked: int = 0
    log: list[str] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)  # each step, for the books


async def scrape_redelivered(cluster: Cluster, seen: dict[int, float]) -> None:
    """Routing events each live worker found already applied (duplicate or stale), by pid:
    the evidence that killed workers' uncommitted batches were re-delivered."""
    for w in cluster.workers:
        if w.proc.poll() is not None:
            continue
        try:
            text = (await asyncio.to_thread(w.get, "/metrics")).decode()
        except OSError:
            continue
        total = 0.0
        for line in text.splitlines():
            if line.startswith("peakroute_routing_transitions_total{") and (
                    'kind="duplicate"' in line or 'kind="stale"' in line):
                total += float(line.rsplit(" ", 1)[1])
        seen[w.proc.pid] = total


async def run(args: argparse.Namespace, out: Any = sys.stderr) -> dict[str, Any]:
    def say(line: str) -> None:
        print(line, file=out, flush=True)

    state_dir = Path(args.state_dir or tempfile.mkdtemp(prefix="peakroute-failover-"))
    opts = ClusterOptions(workers=args.workers, partitions=args.partitions, agents=args.agents,
                          handle_mean_s=args.handle_time, patience_s=args.patience,
                          redis_aof=True, offer_timeout_s=args.offer_timeout)
    cluster = Cluster(state_dir, opts)
    chaos = Chaos()
    redelivered: dict[int, float] = {}
    try:
        say(f"starting the embedded stack (Redis with appendonly, everysec) and "
            f"{args.workers} workers in {state_dir} ...")
        await cluster.start(args.rate)
        gateway = cluster.gateway
        assert gateway is not None
        assert cluster.redis is not None
        cluster.cpu.start(cluster.pids())
        started = time.monotonic()
        say(f"publishing ~{args.rate:g} contacts/s for {args.duration:g} s with chaos")
        publishing = asyncio.create_task(gateway.run(args.duration))
        steps = plan(args)
        for at_s, step in steps:
            await sleep_until(started + at_s)
            await scrape_redelivered(cluster, redelivered)
            step_started = time.monotonic()
            await apply(step, cluster, chaos, args, say, started)
            chaos.windows.append(Window(step, step_started, time.monotonic()))
        await publishing
        await gateway.flush()
        say(f"published {gateway.stats.published}; draining (at most {args.drain:g} s)")

        async def scrape() -> None:
            await scrape_redelivered(cluster, redelivered)
        await accounting.drain(cluster, args.drain, scrape)
        cluster.cpu.stop()
        elapsed = time.monotonic() - started
        books = await accounting.account(cluster, started, chaos.windows)
        stats = await domain_stats(cluster.redis, DOMAIN)
        live = await domain_live(cluster.redis, DOMAIN)
        known = books["accounting"]["contacts_known"]
        open_now = stats["escalating"] + live["waiting"] + live["offered"]
        books_terminal = stats["contained"] + stats["answered"] + stats["abandoned"]
        result: dict[str, Any] = {
            **{k: books[k] for k in ("published", "terminal", "lost", "stranded",
                                     "phantom_not_ready", "double_assigned", "deadletters",
                                     "counters_match_audit")},
            "deadletters_as_sent": books["deadletters_as_sent"],
            "kills": chaos.kills,
            "workers": args.workers,
            "rate": args.rate,
            "duration_s": args.duration,
            "elapsed_s": round(elapsed, 1),
            "outcomes": books["outcomes"],
            "not_terminal": books["published"] - books["terminal"],
            # Re-delivery must not count anything twice: the counters equal the contacts.
            "counted_once": stats["arrived"] == known and books_terminal + open_now == known,
            "counters": {k: stats[k] for k in (*accounting.MONOTONIC_COUNTERS,
                                               "invariant_violations")},
            "redelivered_events_ignored": int(sum(redelivered.values())),
            "restarts": chaos.restarts,
            "graceful": {"restarts": chaos.graceful_restarts, "stop_s": chaos.graceful_stop_s},
            "backlog": {"kills": chaos.backlog_kills, "down_s": round(chaos.backlog_down_s, 1)},
            "redis": {"restarts": chaos.redis_restarts, "down_s": round(chaos.redis_down_s, 2),
                      "state_intact": chaos.redis_state_intact,
                      "contacts_checked": chaos.redis_state_checked},
            "accounting": books["accounting"],
            "cpu_cores": cluster.cpu.shares(),
            "chaos": chaos.log,
        }
        result["ok"] = bool(
            accounting.books_hold(books) and result["counted_once"]
            and chaos.redis_state_intact is not False
        )
        return result
    finally:
        await cluster.stop()


def plan(args: argparse.Namespace) -> list[tuple[float, str]]:
    """When each step happens, as seconds into the publishing window: single-worker kills
    spread over the first part, then the backlog (all workers down), then the Redis restart."""
    steps: list[tuple[float, str]] = []
    d = args.duration
    for i in range(args.kills):
        steps.append((d * (0.1 + 0.35 * i / max(1, args.kills)), f"kill:{i % args.workers}"))
    for i in range(args.graceful):  # a rolling restart: SIGTERM, then start again
        steps.append((d * (0.5 + 0.05 * i), f"term:{(i + 1) % args.workers}"))
    if args.backlog > 0:
        steps.append((d * 0.6, "backlog"))
    if args.redis_restart:
        steps.append((d * 0.85, "redis"))
    return steps


async def apply(step: str, cluster: Cluster, chaos: Chaos, args: argparse.Namespace,
                say: Any, started: float) -> None:
    t = time.monotonic() - started
    if step.startswith("kill:"):
        index = int(step.split(":")[1])
        cluster.kill_worker(index)
        chaos.kills += 1
        say(f"t={t:5.1f}s SIGKILL worker-{index}; restarting it in {args.restart_after:g} s")
        chaos.log.append(f"t={t:.1f}s SIGKILL worker-{index}")
        await asyncio.sleep(args.restart_after)
        await cluster.restart_worker(index, wait=False)
        chaos.restarts += 1
    elif step.startswith("term:"):
        index = int(step.split(":")[1])
        cluster.cpu.sample()
        took = time.monotonic()
        cluster.workers[index].stop()  # SIGTERM; SIGKILL only if it hangs past 15 s
        took = time.monotonic() - took
        chaos.graceful_restarts += 1
        chaos.graceful_stop_s.append(round(took, 2))
        say(f"t={t:5.1f}s SIGTERM worker-{index}: stopped in {took:.1f} s; restarting it")
        chaos.log.append(f"t={t:.1f}s SIGTERM worker-{index} (stopped in {took:.1f} s)")
        await cluster.restart_worker(index, wait=False)
        chaos.restarts += 1
    elif step == "backlog":
        for index in range(len(cluster.workers)):
            cluster.kill_worker(index)
            chaos.kills += 1
            chaos.backlog_kills += 1
        say(f"t={t:5.1f}s SIGKILL every worker; contacts pile up for {args.backlog:g} s")
        chaos.log.append(f"t={t:.1f}s SIGKILL all {len(cluster.workers)} workers (backlog)")
        down = time.monotonic()
        await asyncio.sleep(args.backlog)
        for index in range(len(cluster.workers)):
            await cluster.restart_worker(index, wait=False)
            chaos.restarts += 1
        chaos.backlog_down_s = time.monotonic() - down
    elif step == "redis":
        assert cluster.redis is not None
        assert cluster.gateway is not None
        ids = list(accounting.contact_ids(cluster.gateway).values())
        before = await accounting.contact_states(cluster.redis, ids)
        stats_before = await domain_stats(cluster.redis, DOMAIN)
        say(f"t={t:5.1f}s restarting Redis (SIGTERM, append-only file kept)")
        down_s = await cluster.restart_redis()
        after = await accounting.contact_states(cluster.redis, ids)
        stats_after = await domain_stats(cluster.redis, DOMAIN)
        intact = accounting.state_intact(before, after, stats_before, stats_after)
        chaos.redis_restarts += 1
        chaos.redis_down_s += down_s
        chaos.redis_state_intact = intact if chaos.redis_state_intact is None else (
            chaos.redis_state_intact and intact)
        chaos.redis_state_checked = sum(st is not None for st in before.values())
        chaos.log.append(f"t={t:.1f}s Redis restarted (down {down_s:.2f} s, state intact: "
                         f"{intact})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m load_tests.failover",
        description="Failover proof on the embedded stack: kill and restart router workers "
        "under load, build a re-delivered backlog, restart Redis with its append-only file, "
        "and account for every contact. Exits 1 unless nothing is lost or assigned twice.")
    parser.add_argument("--workers", type=int, default=2, help="router worker processes")
    parser.add_argument("--rate", type=float, default=20.0, help="contacts per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of publishing")
    parser.add_argument("--kills", type=int, default=3,
                        help="single-worker SIGKILLs (round robin), each followed by a restart")
    parser.add_argument("--restart-after", type=float, default=2.0,
                        help="seconds a killed worker stays down")
    parser.add_argument("--graceful", type=int, default=1,
                        help="graceful restarts (SIGTERM, as a rolling deploy does)")
    parser.add_argument("--backlog", type=float, default=5.0,
                        help="seconds every worker stays down while contacts pile up (0: skip)")
    parser.add_argument("--no-redis-restart", dest="redis_restart", action="store_false",
                        help="skip the Redis restart")
    accounting.proof_arguments(parser, agents=40)
    args = parser.parse_args(argv)
    if args.workers < 1 or args.rate <= 0 or args.duration <= 0 or args.kills < 0:
        parser.error("--workers >= 1, --rate > 0, --duration > 0 and --kills >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return accounting.print_result(asyncio.run(run(args)), args.json)


if __name__ == "__main__":
    sys.exit(main())
