"""The fault proof: under the demo's mix (the simulated gateway, simulated agents, real worker
processes) the faults a peak meets, one after another while contacts keep arriving, then the
books of every contact, offer and decision.

    python -m load_tests.faults --rate 300 --duration 60 --json

Faults, in order (``--faults`` picks some):

- ``worker_kill``: SIGKILL one worker, restart it ``--restart-after`` s later;
- ``all_workers_kill``: SIGKILL every worker, restart them ``--backlog`` s later;
- ``redis_oom``: ``maxmemory`` just above ``used_memory`` with ``noeviction`` for ``--oom`` s,
  longer until Redis has refused a write (INFO errorstats), at most ``--oom-max`` s;
- ``redis_readonly``: ``REPLICAOF`` an address where nothing listens for ``--readonly`` s (a
  failover window: a read-only replica that keeps its data), then ``REPLICAOF NO ONE``; the
  data must survive;
- ``redis_client_kill``: ``CLIENT KILL TYPE normal`` ``--resets`` times, ``--reset-every`` s
  apart;
- ``redis_debug_sleep``: ``DEBUG SLEEP`` for ``--sleep`` s, longer than the workers' socket
  timeout (10 s);
- ``redis_aof_restart``: Redis stopped and started again from its append-only file; the data
  must survive.

On a Redis Cluster (``--redis-cluster N [--replicas R]``, issue 20) the faults are
``worker_kill`` and:

- ``cluster_reshard``: the slot of the live domain (its routing state and the bot's silence
  deadlines) and the slots of a few live conversations moved to the next primary while traffic
  flows (MIGRATING / IMPORTING, MIGRATE, SETSLOT NODE: load_tests/redis_cluster.py); it bites
  when keys moved (the clients follow MOVED and ASK and wait out TRYAGAIN themselves);
- ``cluster_primary_kill`` (needs ``--replicas 1``): SIGKILL of the primary serving the live
  domain, until its replica takes over, then the killed node started again (it rejoins as
  the new primary's replica); the workers WAIT for one replica after each batch
  (``PEAKROUTE_REDIS_WAIT_REPLICAS=1``), so nothing they committed is lost with it, and their
  writes to that shard wait (``noreplicas``, transient) until it has a replica again.

    python -m load_tests.faults --redis-cluster 3 --replicas 1 --rate 300 --duration 60 --json

Each fault must bite: every worker's /metrics is scraped before and after it, and the workers
must have counted at least one error of the fault's kind in between
(``peakroute_redis_errors_total{kind}``; for the kills, the restart itself, with the re-delivered
routing events found duplicate beside it). The last line is one JSON object: the books of
load_tests/accounting.py (``published``, ``terminal``, ``lost``, ``stranded``,
``phantom_not_ready``, ``double_assigned``, ``deadletters``, ``counters_match_audit``) and
``faults`` (fault -> what the workers counted during it, by kind). Exits 1 unless the books
hold, every fault bit, the data survived and no worker exited on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from load_tests import accounting, redis_cluster
from load_tests.accounting import Window
from load_tests.cluster import DOMAIN, Cluster, ClusterOptions
from router.bot.conversation import conversation_pattern
from router.redis_client import on_every_primary, redis_client, sync_redis_client
from router.routing.store import domain_stats
from router.stack import free_port
from router.transient import REPLY_CODES

WORKER_SOCKET_TIMEOUT_S = 10.0  # the workers' Redis client (router/app.py)
# What each fault must make the workers count (kinds of peakroute_redis_errors_total; "restart"
# for the kills, whose counters die with the process).
EXPECTED: dict[str, tuple[str, ...]] = {
    "worker_kill": ("restart",),
    "all_workers_kill": ("restart",),
    "redis_oom": ("oom",),
    "redis_readonly": ("readonly",),
    "redis_client_kill": ("connection",),
    "redis_debug_sleep": ("timeout",),
    "redis_aof_restart": ("connection", "loading"),
    # Redis Cluster (--redis-cluster N): the slots of the live domain (its routing state and
    # the bot's deadlines) and of live conversations moved to another primary under traffic;
    # the clients follow MOVED and ASK and wait out TRYAGAIN themselves, so what must be seen
    # is keys moved ("moved_keys") while the workers kept going.
    "cluster_reshard": ("moved_keys",),
    # SIGKILL of the primary serving the live domain until its replica takes over (needs
    # --replicas 1): the workers lose their connections to it, or meet CLUSTERDOWN.
    "cluster_primary_kill": ("connection", "clusterdown", "timeout", "noreplicas"),
}
FAULTS = tuple(EXPECTED)
CLUSTER_FAULTS = ("worker_kill", "cluster_reshard", "cluster_primary_kill")
SINGLE_FAULTS = tuple(f for f in FAULTS if not f.startswith("cluster_"))
RESHARD_CONVERSATION_SLOTS = 8  # slots of live conversations moved beside the domain's

Scrape = dict[int, Counter[str]]  # worker pid -> counted errors by kind


@dataclass
class Fault:
    """One fault as it happened: when (seconds into publishing), what the workers counted."""

    name: str
    start_s: float = 0.0
    end_s: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def bit(self) -> bool:
        return any(self.errors[kind] > 0 for kind in EXPECTED[self.name])

    def counted(self) -> dict[str, int]:
        """The expected kinds (also when zero) and every other kind counted."""
        kinds = set(EXPECTED[self.name]) | {k for k, n in self.errors.items() if n > 0}
        return {k: int(self.errors[k]) for k in sorted(kinds)}


def parse_counts(text: str) -> Counter[str]:
    """Dependency errors a worker counted, by kind (Kafka errors as ``kafka:<class>``), and
    the routing events it found already applied (``duplicate``: re-delivered requests)."""
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "peakroute_redis_errors_total":
                counts[sample.labels["kind"]] += int(sample.value)
            elif sample.name == "peakroute_kafka_errors_total":
                counts["kafka:" + sample.labels["error"]] += int(sample.value)
            elif (sample.name == "peakroute_routing_transitions_total"
                  and sample.labels.get("kind") == "duplicate"):
                counts["redelivered"] += int(sample.value)
    return counts


def delta(before: Scrape, after: Scrape, started: set[int]) -> Counter[str]:
    """What the workers alive at ``after`` counted since ``before``: a worker ``started`` in
    between counts from zero, one that did not answer the first reading is left out (its
    counts since then are unknown), a killed one's counters are gone."""
    out: Counter[str] = Counter()
    for pid, counts in after.items():
        if pid in before:
            base = before[pid]
        elif pid in started:
            base = Counter()
        else:
            continue
        for kind, n in counts.items():
            if n > base[kind]:
                out[kind] += n - base[kind]
    return out


class Proof:
    def __init__(self, args: argparse.Namespace, say: Callable[[str], None]) -> None:
        self.args = args
        self.say = say
        self.state_dir = Path(args.state_dir or tempfile.mkdtemp(prefix="peakroute-faults-"))
        self.cluster = Cluster(self.state_dir, ClusterOptions(
            workers=args.workers, partitions=args.partitions, agents=args.agents,
            handle_mean_s=args.handle_time, patience_s=args.patience,
            redis_aof=not args.redis_cluster, offer_timeout_s=args.offer_timeout,
            redis_cluster=args.redis_cluster, redis_replicas=args.replicas))
        self.started = 0.0
        self.faults: list[Fault] = []
        self.windows: list[Window] = []
        self.killed: set[int] = set()  # pids this proof killed
        self.unexpected_exits: list[str] = []
        self.data_intact: dict[str, bool] = {}
        self._admin: aioredis.Redis | None = None

    @property
    def admin(self) -> aioredis.Redis:
        """The proof's own Redis connection for CONFIG, REPLICAOF, CLIENT KILL (not retried:
        each command is sent once)."""
        if self._admin is None:
            self._admin = redis_client(self.cluster.settings, retry=None)
        return self._admin

    def now(self) -> float:
        return time.monotonic() - self.started

    # -- workers -------------------------------------------------------------------------

    async def scrape(self) -> Scrape:
        out: Scrape = {}
        for w in self.cluster.workers:
            for _ in range(3):
                if w.proc.poll() is not None:
                    break
                try:
                    text = (await asyncio.to_thread(w.get, "/metrics")).decode()
                except OSError:
                    await asyncio.sleep(0.5)
                    continue
                out[w.proc.pid] = parse_counts(text)
                break
        return out

    async def check_workers(self) -> None:
        """A worker that exited without being killed here is a failure: note it, restart it
        (so the run goes on and its books can be read)."""
        for index, w in enumerate(self.cluster.workers):
            if w.proc.poll() is not None and w.proc.pid not in self.killed:
                tail = w.log_path.read_text(errors="replace")[-300:].replace("\n", " | ")
                self.unexpected_exits.append(
                    f"t={self.now():.1f}s worker-{index} (pid {w.proc.pid}) exited with "
                    f"{w.proc.returncode}: ...{tail}")
                self.say(f"t={self.now():5.1f}s worker-{index} EXITED on its own "
                         f"({w.proc.returncode}); restarting it")
                await self.cluster.restart_worker(index, wait=False)

    def kill(self, index: int) -> None:
        self.killed.add(self.cluster.workers[index].proc.pid)
        self.cluster.kill_worker(index)

    async def up_again(self, indexes: list[int]) -> float | None:
        """Seconds until these workers all answer /readyz (own partitions, no failing
        dependency), None if not within --ready-timeout."""
        started = time.monotonic()
        while time.monotonic() - started < self.args.ready_timeout:
            states = await asyncio.gather(*(asyncio.to_thread(self.cluster.workers[i].ready)
                                            for i in indexes))
            if all(states):
                return round(time.monotonic() - started, 1)
            await asyncio.sleep(0.25)
        return None

    # -- the faults ----------------------------------------------------------------------

    async def worker_kill(self, fault: Fault) -> None:
        self.kill(0)
        await asyncio.sleep(self.args.restart_after)
        await self.cluster.restart_worker(0, wait=False)
        fault.errors["restart"] += 1
        fault.detail["down_s"] = self.args.restart_after

    async def all_workers_kill(self, fault: Fault) -> None:
        indexes = list(range(len(self.cluster.workers)))
        for index in indexes:
            self.kill(index)
        await asyncio.sleep(self.args.backlog)
        for index in indexes:
            await self.cluster.restart_worker(index, wait=False)
            fault.errors["restart"] += 1
        fault.detail["down_s"] = self.args.backlog

    async def redis_oom(self, fault: Fault) -> None:
        admin = self.admin
        saved = await admin.config_get("maxmemory", "maxmemory-policy")
        used = int((await admin.info("memory"))["used_memory"])
        limit = used + self.args.oom_margin
        refused_before = await self.oom_refusals()
        await admin.config_set("maxmemory-policy", "noeviction")
        await admin.config_set("maxmemory", limit)
        started = time.monotonic()
        try:
            # At least --oom seconds, and on until Redis has refused a write (workers that are
            # still starting after the previous fault may write nothing for a while), at most
            # --oom-max.
            await asyncio.sleep(self.args.oom)
            for _ in range(int(max(self.args.oom_max - self.args.oom, 0) / 0.25)):
                if await self.oom_refusals() > refused_before:
                    break
                await asyncio.sleep(0.25)
        finally:
            await admin.config_set("maxmemory", saved["maxmemory"])
            await admin.config_set("maxmemory-policy", saved["maxmemory-policy"])
        fault.detail.update(used_memory=used, maxmemory=limit,
                            held_s=round(time.monotonic() - started, 1),
                            refused=await self.oom_refusals() - refused_before)

    async def oom_refusals(self) -> int:
        """Replies Redis gave with an OOM error so far (INFO errorstats)."""
        stats = await self.admin.info("errorstats")
        return int(stats.get("errorstat_OOM", {}).get("count", 0))

    async def redis_readonly(self, fault: Fault) -> None:
        admin = self.admin
        before, stats_before = await self.snapshot()
        nowhere = free_port()  # nothing listens there: the replica never syncs, keeps its data
        await admin.execute_command("REPLICAOF", "127.0.0.1", str(nowhere))
        try:
            role = await admin.execute_command("ROLE")
            fault.detail["role"] = role[0].decode() if isinstance(role[0], bytes) else role[0]
            await asyncio.sleep(self.args.readonly)
        finally:
            await admin.execute_command("REPLICAOF", "NO", "ONE")
        after, stats_after = await self.snapshot()
        intact = accounting.state_intact(before, after, stats_before, stats_after)
        self.data_intact[fault.name] = intact and fault.detail["role"] in {"slave", "replica"}
        fault.detail.update(data_intact=intact,
                            contacts_checked=sum(st is not None for st in before.values()))

    async def redis_client_kill(self, fault: Fault) -> None:
        killed = 0
        for i in range(self.args.resets):
            if i:
                await asyncio.sleep(self.args.reset_every)
            killed += int(await self.admin.execute_command("CLIENT", "KILL", "TYPE", "normal"))
        fault.detail.update(resets=self.args.resets, connections_killed=killed)

    async def redis_debug_sleep(self, fault: Fault) -> None:
        settings, seconds = self.cluster.settings, self.args.sleep

        def sleep() -> None:  # its own connection, which waits out the sleep
            with sync_redis_client(settings, socket_timeout=seconds + 30) as client:
                client.execute_command("DEBUG", "SLEEP", f"{seconds:g}")
        await asyncio.to_thread(sleep)
        fault.detail["sleep_s"] = seconds

    async def redis_aof_restart(self, fault: Fault) -> None:
        before, stats_before = await self.snapshot()
        if self._admin is not None:  # its connection dies with the server
            await self._admin.aclose()
            self._admin = None
        down_s = await self.cluster.restart_redis()
        after, stats_after = await self.snapshot()
        intact = accounting.state_intact(before, after, stats_before, stats_after)
        self.data_intact[fault.name] = intact
        fault.detail.update(down_s=round(down_s, 2), data_intact=intact,
                            contacts_checked=sum(st is not None for st in before.values()))

    async def cluster_reshard(self, fault: Fault) -> None:
        """Move the live domain's slot, and the slots of a few live conversations, each to the
        next primary, while contacts keep arriving."""
        ports = self.cluster.stack.cluster_ports()
        moved = await asyncio.to_thread(redis_cluster.move_domains, ports, [DOMAIN])
        conversations = await asyncio.to_thread(redis_cluster.live_slots, ports,
                                                conversation_pattern(DOMAIN),
                                                RESHARD_CONVERSATION_SLOTS)
        keys = sum(m["keys"] for m in moved.values())
        for slot in conversations:
            src = await asyncio.to_thread(redis_cluster.owner, ports, slot)
            primaries = sorted(n.port for n in await asyncio.to_thread(redis_cluster.nodes, ports)
                               if n.primary and not n.failed)
            to = primaries[(primaries.index(src.port) + 1) % len(primaries)]
            keys += await asyncio.to_thread(redis_cluster.move_slot, ports, slot, to)
        fault.errors["moved_keys"] += keys
        fault.detail["domains"] = moved
        fault.detail["conversation_slots"] = len(conversations)

    async def cluster_primary_kill(self, fault: Fault) -> None:
        """SIGKILL the primary serving the live domain; wait until its replica serves it."""
        slot = redis_cluster.domain_slot(DOMAIN)
        fault.detail.update(await redis_cluster.kill_primary_until_promoted(
            self.cluster.stack, slot))

    async def snapshot(self) -> tuple[dict[str, str | None], dict[str, int]]:
        client, gateway = self.cluster.redis, self.cluster.gateway
        assert client is not None
        assert gateway is not None
        ids = list(accounting.contact_ids(gateway).values())
        return await accounting.contact_states(client, ids), await domain_stats(client, DOMAIN)

    async def server_errors(self) -> Counter[str]:
        """Error replies Redis itself sent, by code (INFO errorstats): the fault as the server
        saw it, beside what the workers counted."""
        out: Counter[str] = Counter()
        with contextlib.suppress(Exception):
            for info in await on_every_primary(self.admin, "INFO", "errorstats"):
                out.update({code: int(v["count"]) for k, v in info.items()
                            if isinstance(v, dict)
                            and (code := k.removeprefix("errorstat_")) in REPLY_CODES})
        return out

    async def inject(self, name: str) -> Fault:
        fault = Fault(name)
        await self.check_workers()
        if name.startswith(("redis_", "cluster_")):
            # A Redis fault bites only workers at work: all of them own partitions and saw no
            # failure in the last seconds (/readyz; after a kill that is the rejoin), or
            # --ready-timeout passed.
            fault.detail["workers_ready_before_s"] = await self.up_again(
                list(range(len(self.cluster.workers))))
        running = {w.proc.pid for w in self.cluster.workers}
        before = await self.scrape()
        replies_before = (await self.server_errors()
                          if name not in ("redis_aof_restart", "cluster_primary_kill")
                          else Counter())
        step: Callable[[Fault], Awaitable[None]] = getattr(self, name)
        fault.start_s = self.now()
        start = time.monotonic()
        self.say(f"t={fault.start_s:5.1f}s {name} ...")
        await step(fault)
        fault.end_s = self.now()
        self.windows.append(Window(name, start, time.monotonic()))
        await asyncio.sleep(self.args.settle)  # errors met as it ended are counted by now
        await self.check_workers()
        after = await self.scrape()
        fault.errors.update(delta(before, after, {w.proc.pid for w in self.cluster.workers}
                                  - running))
        unread = {w.proc.pid for w in self.cluster.workers} - set(after) - set(before)
        if unread:
            fault.detail["workers_not_read"] = len(unread)
        replies = await self.server_errors() - replies_before
        if replies:
            fault.detail["redis_error_replies"] = dict(replies)
        self.say(f"t={self.now():5.1f}s {name} done ({fault.end_s - fault.start_s:.1f} s): "
                 f"workers counted {fault.counted()}{'' if fault.bit else ' -- DID NOT BITE'}")
        return fault

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        args, cluster = self.args, self.cluster
        try:
            redis_kind = (f"a Redis Cluster of {args.redis_cluster} primaries with "
                          f"{args.replicas} replica(s) each" if args.redis_cluster
                          else "Redis with appendonly")
            self.say(f"starting the embedded stack ({redis_kind}) and {args.workers} "
                     f"workers in {self.state_dir} ...")
            booting = time.monotonic()
            await cluster.start(args.rate)
            startup_s = time.monotonic() - booting
            gateway = cluster.gateway
            assert gateway is not None
            cluster.cpu.start(cluster.pids())
            self.started = time.monotonic()
            faults_done = asyncio.Event()
            self.say(f"publishing ~{args.rate:g} contacts/s for at least {args.duration:g} s "
                     f"and until the last fault is over")
            publishing = asyncio.create_task(gateway.run(args.duration, until=faults_done))
            try:
                await asyncio.sleep(args.warmup)
                for name in args.faults:
                    self.faults.append(await self.inject(name))
                    await asyncio.sleep(args.gap)
            finally:
                faults_done.set()
            await publishing
            await gateway.flush()
            publish_s = self.now()
            self.say(f"t={publish_s:5.1f}s published {gateway.stats.published}; draining (at "
                     f"most {args.drain:g} s)")
            drain_s = await accounting.drain(cluster, args.drain, self.check_workers)
            cluster.cpu.stop()
            books = await accounting.account(cluster, self.started, self.windows)
            result: dict[str, Any] = {
                **{k: books[k] for k in ("published", "terminal", "lost", "stranded",
                                         "phantom_not_ready", "double_assigned", "deadletters",
                                         "counters_match_audit")},
                "faults": {f.name: f.counted() for f in self.faults},
                "faults_bit": {f.name: f.bit for f in self.faults},
                "deadletters_as_sent": books["deadletters_as_sent"],
                "data_intact": self.data_intact,
                "unexpected_exits": self.unexpected_exits,
                "rate": args.rate,
                "workers": args.workers,
                "redis_cluster": args.redis_cluster,
                "replicas": args.replicas,
                "agents": args.agents,
                "startup_s": round(startup_s, 1),
                "publish_s": round(publish_s, 1),
                "drain_s": round(drain_s, 1),
                "elapsed_s": round(self.now(), 1),
                "fault_detail": {f.name: {"t_s": round(f.start_s, 1),
                                          "lasted_s": round(f.end_s - f.start_s, 1),
                                          **f.detail} for f in self.faults},
                "outcomes": books["outcomes"],
                "accounting": books["accounting"],
                "counters": books["counters"],
                "cpu_cores": cluster.cpu.shares(),
            }
            result["ok"] = bool(accounting.books_hold(books)
                                and self.faults and all(f.bit for f in self.faults)
                                and all(self.data_intact.values())
                                and not self.unexpected_exits)
            return result
        finally:
            if self._admin is not None:
                with contextlib.suppress(Exception):
                    await self._admin.aclose()
            await cluster.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m load_tests.faults",
        description="Fault proof on the embedded stack: kill workers, make Redis refuse "
        "(out of memory, read-only), reset its connections, stall it past the workers' socket "
        "timeout and restart it from its append-only file, all under load; then account for "
        "every contact, offer and decision. Exits 1 unless nothing is lost or stranded and "
        "every fault bit.")
    parser.add_argument("--rate", type=float, default=300.0, help="contacts per second")
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds of publishing at least (it goes on until the last fault "
                        "is over)")
    parser.add_argument("--workers", type=int, default=2, help="router worker processes")
    parser.add_argument("--faults", nargs="+", choices=FAULTS, default=None,
                        metavar="FAULT", help=f"which faults, in this order (default: "
                        f"{' '.join(SINGLE_FAULTS)}; with --redis-cluster: "
                        f"{' '.join(CLUSTER_FAULTS)})")
    parser.add_argument("--redis-cluster", type=int, default=0, metavar="N",
                        help="run Redis as a cluster of N primaries (N >= 3; redis-server and "
                        "redis-cli on PATH); its faults move live slots and kill a primary")
    parser.add_argument("--replicas", type=int, default=0,
                        help="with --redis-cluster: replicas per primary (cluster_primary_kill "
                        "needs 1); the workers then WAIT for one replica after each batch")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="seconds of traffic before the first fault")
    parser.add_argument("--gap", type=float, default=3.0, help="seconds between faults")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds after a fault before the workers' counters are read")
    parser.add_argument("--restart-after", type=float, default=2.0,
                        help="worker_kill: seconds the killed worker stays down")
    parser.add_argument("--backlog", type=float, default=5.0,
                        help="all_workers_kill: seconds every worker stays down")
    parser.add_argument("--ready-timeout", type=float, default=20.0,
                        help="at most this long waiting for every worker's /readyz before a "
                        "Redis fault")
    parser.add_argument("--oom", type=float, default=4.0,
                        help="redis_oom: seconds Redis stays at maxmemory (at least)")
    parser.add_argument("--oom-max", type=float, default=20.0,
                        help="redis_oom: at most this long while Redis has refused no write "
                             "(the workers may still be starting after the previous fault)")
    parser.add_argument("--oom-margin", type=int, default=64 * 1024,
                        help="redis_oom: maxmemory is used_memory plus this many bytes")
    parser.add_argument("--readonly", type=float, default=4.0,
                        help="redis_readonly: seconds Redis stays a read-only replica")
    parser.add_argument("--resets", type=int, default=12,
                        help="redis_client_kill: times every client connection is reset")
    parser.add_argument("--reset-every", type=float, default=0.4,
                        help="redis_client_kill: seconds between resets")
    parser.add_argument("--sleep", type=float, default=12.0,
                        help="redis_debug_sleep: seconds of DEBUG SLEEP (more than the "
                        f"workers' {WORKER_SOCKET_TIMEOUT_S:g} s socket timeout)")
    accounting.proof_arguments(parser, agents=120)
    args = parser.parse_args(argv)
    if args.workers < 1 or args.rate <= 0 or args.duration <= 0 or args.resets < 1:
        parser.error("--workers >= 1, --rate > 0, --duration > 0 and --resets >= 1")
    if args.faults is None:
        args.faults = list(CLUSTER_FAULTS if args.redis_cluster else SINGLE_FAULTS)
    if args.redis_cluster and set(args.faults) - set(CLUSTER_FAULTS):
        parser.error(f"with --redis-cluster the faults are {' '.join(CLUSTER_FAULTS)}")
    if not args.redis_cluster and {f for f in args.faults if f.startswith("cluster_")}:
        parser.error("the cluster_ faults need --redis-cluster N")
    if "cluster_primary_kill" in args.faults and args.replicas < 1:
        parser.error("cluster_primary_kill needs --replicas 1 (a replica to take over)")
    if args.sleep <= WORKER_SOCKET_TIMEOUT_S:
        parser.error(f"--sleep must exceed the workers' {WORKER_SOCKET_TIMEOUT_S:g} s socket "
                     "timeout")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    return accounting.print_result(asyncio.run(Proof(args, say).run()), args.json)


if __name__ == "__main__":
    sys.exit(main())
