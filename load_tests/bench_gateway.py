"""What agent gateways hold: connected desktops, offers delivered (and how fast), action frames.

    python -m load_tests.bench_gateway --agents 10000 --rate 5000 --seconds 30
    python -m load_tests.bench_gateway --agents 10000 --rate 5000 --seconds 30 --instances 2
    python -m load_tests.bench_gateway --agents 2000 --offers 20000   # a burst instead

Starts the embedded stack and ``--instances`` `peakroute gateway` processes, puts ``--agents``
profiles in the roster over a few routing domains, and from this process (one asyncio loop,
aiohttp) connects that many desktops (hello with a token each), then measures
  * connect: desktops signed in per second, and the gateways' resident memory per desktop;
  * push: assignment.offered records published to the assignments topic for the connected
    agents, paced at ``--rate`` per second for ``--seconds`` (or ``--offers`` at once); every
    offer must reach its desktop. ``offer_p99_ms``: from the record's send to Kafka to the frame
    on the socket (client and gateways share one clock);
  * actions: every desktop alternates ``state`` ready / not_ready frames for
    ``--action-seconds``; acknowledged frames per second (each a validated agents.events record).
With ``--instances N`` desktops are routed by domain: records are keyed by domain, each
instance reads only its partitions (PEAKROUTE_GATEWAY_PARTITIONS) and gets the desktops of the
domains those partitions hold. The topics have ``--partitions`` partitions, one per instance by
default, so each instance reads one partition whichever N: the embedded broker (Tansu, memory
store) lists every batch a partition ever stored for each fetch that finds new records there,
so its share of the latency grows with the partitions holding records per reader (with 8
partitions the bench's domains fell on 2 of them for one instance and on 2 and 4 for two,
docs/ARCHITECTURE.md). No router worker runs: the bench measures the gateways alone.
The client shares the machine's cores with the gateways, the broker and Redis, so the figures
are a floor. It raises its own open-file limit (and so the gateways'). The last line is one JSON
object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import multiprocessing.queues
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka.partitioner import murmur2

from router.events import AssignmentOffered, Channel
from router.gateway.auth import Role, issue
from router.gateway.heap import Heap, HeapPolicy
from router.gateway.roster import Profile, Roster
from router.kafka import producer
from router.redis_client import redis_client
from router.settings import Settings
from router.stack import EmbeddedStack, _die_with_parent, free_port
from router.stage import now_ms

DOMAINS_PER_INSTANCE = 4
ERROR_CODES: dict[str, int] = {}
OFFER_TTL_MS = 3_600_000  # an offer's expiry is its send time plus this: its latency's clock


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start_gateway(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings.as_env(), "PEAKROUTE_LOG_LEVEL": "WARNING"}
    with log.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "router.cli", "gateway", "--port", str(port)], env=env,
            stdout=subprocess.DEVNULL, stderr=err,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None)


def wait_healthy(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return
        time.sleep(0.1)
    raise RuntimeError(f"the gateway did not answer on port {port} within {timeout_s:.0f} s")


class Desk:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.offers = 0
        self.acks = 0
        self.errors = 0
        self.latencies_ms: list[float] = []
        self.sent_ms: list[float] = []  # each offer's send time (for --trace)
        self.welcome = asyncio.Event()
        self.answered = asyncio.Event()  # an ack or error arrived
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            frame = orjson.loads(msg.data)
            kind = frame["type"]
            if kind == "offer":
                self.offers += 1
                # Sent at expires_at - OFFER_TTL_MS by the publisher (one clock: one machine).
                sent = frame["expires_at"] - OFFER_TTL_MS
                self.latencies_ms.append(time.time() * 1000 - sent)
                self.sent_ms.append(sent)
            elif kind == "ack":
                self.acks += 1
                self.answered.set()
            elif kind == "welcome":
                self.welcome.set()
            elif kind == "error":
                self.errors += 1
                self.answered.set()
                ERROR_CODES[orjson.loads(msg.data)["code"]] = ERROR_CODES.get(
                    orjson.loads(msg.data)["code"], 0) + 1


def raise_open_files() -> int:
    """The soft open-file limit up to the hard one (sockets: one per desktop, each side)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(stack: EmbeddedStack, gateways: list[subprocess.Popen[bytes]]
                 ) -> dict[str, float]:
    """CPU seconds so far of the broker, Redis, the gateways (together) and this client."""
    out = {p.name: cpu_s(p.pid) for p in stack.processes}
    out["gateways"] = sum(cpu_s(p.pid) for p in gateways)
    out["client"] = time.process_time()
    return out


def cores_since(before: dict[str, float], stack: EmbeddedStack,
                gateways: list[subprocess.Popen[bytes]], seconds: float) -> dict[str, float]:
    """Cores each process kept busy on average since ``before`` (where the machine went)."""
    now = cpu_snapshot(stack, gateways)
    return {name: round((now[name] - before.get(name, 0.0)) / max(seconds, 1e-9), 2)
            for name in now}


def domains_by_instance(instances: int, partitions: int, per_instance: int
                        ) -> list[tuple[str, list[int]]]:
    """Routing domains for each instance, chosen so each lands on a partition that instance
    reads (partition p is read by instance p % instances), with the instance's partitions."""
    wanted: list[list[str]] = [[] for _ in range(instances)]
    j = 0
    while any(len(w) < per_instance for w in wanted):
        name = f"bench-gw-{j}"
        j += 1
        part = (murmur2(name.encode()) & 0x7FFFFFFF) % partitions
        if len(wanted[part % instances]) < per_instance:
            wanted[part % instances].append(name)
    return [(",".join(w), [p for p in range(partitions) if p % instances == i])
            for i, w in enumerate(wanted)]


def publish_offers(settings: Settings, targets: list[tuple[str, str]], rate: float,
                   total: int, linger_ms: int) -> tuple[float, float]:
    """Publish ``total`` offers (to ``targets`` in turn) from a child process, paced at
    ``rate``/s (0: at once); the seconds it took and the CPU seconds it used."""
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.queues.Queue[tuple[float, float]] = ctx.Queue()
    proc = ctx.Process(target=_publisher,
                       args=(settings.as_env(), targets, rate, total, linger_ms, out))
    proc.start()
    seconds, cpu = out.get()
    proc.join()
    return seconds, cpu


def _publisher(env: dict[str, str], targets: list[tuple[str, str]], rate: float, total: int,
               linger_ms: int, out: multiprocessing.queues.Queue[tuple[float, float]]) -> None:
    cpu = time.process_time()
    seconds = asyncio.run(_publish(Settings.from_env(env), targets, rate, total, linger_ms))
    out.put((seconds, time.process_time() - cpu))


async def _publish(settings: Settings, targets: list[tuple[str, str]], rate: float,
                   total: int, linger_ms: int) -> float:
    prod = producer(settings, linger_ms=linger_ms)
    await prod.start()

    async def send(n: int) -> None:
        domain, aid = targets[n % len(targets)]
        sent = now_ms()
        ev = AssignmentOffered(
            event_id=f"e{n}", ts_ms=sent, offer_id=f"o{n}", contact_id=f"c{n}", agent_id=aid,
            domain=domain, channel=Channel.CHAT, expires_at_ms=sent + OFFER_TTL_MS,
            queue="general")
        await prod.send(settings.topic_assignments, ev.to_json(), key=domain.encode())

    started = time.perf_counter()
    try:
        if rate > 0:  # paced: the offers due by now, every few milliseconds
            n = 0
            while n < total:
                due = min(total, int((time.perf_counter() - started) * rate) + 1)
                while n < due:
                    await send(n)
                    n += 1
                await asyncio.sleep(0.002)
        else:
            for n in range(total):
                await send(n)
        await prod.flush()
        return time.perf_counter() - started
    finally:
        await prod.stop()


def write_trace(path: Path, desks: list[Desk]) -> None:
    """Per second of sending: offers, p50, p99 and max latency (ms), as CSV."""
    by_s: dict[int, list[float]] = {}
    for d in desks:
        for sent, ms in zip(d.sent_ms, d.latencies_ms, strict=True):
            by_s.setdefault(int(sent // 1000), []).append(ms)
    lines = ["second,offers,p50_ms,p99_ms,max_ms"]
    start = min(by_s, default=0)
    for sec in sorted(by_s):
        v = by_s[sec]
        lines.append(f"{sec - start},{len(v)},{percentile(v, 0.5):.1f},{percentile(v, 0.99):.1f},"
                     f"{max(v):.1f}")
    path.write_text("\n".join(lines) + "\n")


def offer_delay_buckets(ports: list[int]) -> dict[str, dict[float, float]]:
    """The gateways' peakroute_gateway_offer_delay_seconds, summed over instances: stage ->
    upper bound (s) -> cumulative count."""
    out: dict[str, dict[float, float]] = {}
    for port in ports:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        for line in text.decode().splitlines():
            if not line.startswith("peakroute_gateway_offer_delay_seconds_bucket{"):
                continue
            labels, _, value = line.partition("} ")
            fields = dict(kv.split("=", 1) for kv in labels.split("{", 1)[1].split(","))
            stage, le = fields["stage"].strip('"'), fields["le"].strip('"')
            bound = float("inf") if le == "+Inf" else float(le)
            out.setdefault(stage, {})
            out[stage][bound] = out[stage].get(bound, 0.0) + float(value)
    return out


def bucket_quantile(buckets: dict[float, float], q: float) -> float | None:
    """A quantile from cumulative histogram buckets (linear within a bucket, as Prometheus's
    histogram_quantile); in ms."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return round(lower * 1000, 1)
            return round((lower + (bound - lower) * (rank - below) / max(count - below, 1e-9))
                         * 1000, 1)
        lower, below = bound, count
    return None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    open_files = raise_open_files()
    state = Path(tempfile.mkdtemp(prefix="bench-gw-"))
    partitions = args.partitions or args.instances
    stack = EmbeddedStack(state, partitions=partitions)
    settings: Settings = (await stack.start()).replace(
        gateway_jwt_secret="bench-secret-" + "x" * 32, gateway_frames_per_s=50.0,
        gateway_frame_burst=100,
        gateway_fetch_max_wait_ms=args.fetch_wait_ms or Settings().gateway_fetch_max_wait_ms)
    layout = domains_by_instance(args.instances, partitions, DOMAINS_PER_INSTANCE)
    ports = [free_port() for _ in layout]
    procs = [start_gateway(settings.replace(gateway_partitions=",".join(map(str, parts))),
                           port, state / f"gateway-{i}.log")
             for i, ((_, parts), port) in enumerate(zip(layout, ports, strict=True))]
    desks: list[Desk] = []
    try:
        # Desktop n: its instance, its domain and its agent id.
        homes = []
        for n in range(args.agents):
            i = n % len(layout)
            domains = layout[i][0].split(",")
            homes.append((i, domains[(n // len(layout)) % len(domains)], f"a-{n:06d}"))
        roster_client = redis_client(settings)
        by_domain: dict[str, list[Profile]] = {}
        for _, domain, aid in homes:
            by_domain.setdefault(domain, []).append(Profile(aid, {"zh": 1, "general": 1},
                                                            {"chat": 3}))
        for domain, profiles in by_domain.items():
            await Roster(roster_client).put(domain, profiles, by="bench")
        await roster_client.aclose()
        for port in ports:
            await asyncio.to_thread(wait_healthy, port)
        rss_idle = sum(rss_kib(p.pid) for p in procs)
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as http:
            # --- connect --------------------------------------------------------------------
            started = time.perf_counter()
            connect_cpu = cpu_snapshot(stack, procs)
            sem = asyncio.Semaphore(args.concurrency)

            async def sign_in(home: tuple[int, str, str]) -> Desk:
                i, domain, agent_id = home
                async with sem:
                    ws = await http.ws_connect(f"http://127.0.0.1:{ports[i]}/ws",
                                               max_msg_size=0)
                    desk = Desk(ws)
                    await ws.send_str(orjson.dumps({"type": "hello", "token": issue(
                        settings, agent_id, Role.AGENT, domain, 3600)}).decode())
                    await asyncio.wait_for(desk.welcome.wait(), 120)
                    return desk

            desks = list(await asyncio.gather(*(sign_in(h) for h in homes)))
            connect_s = time.perf_counter() - started
            # This process's 10,000 sockets are long-lived too: kept out of the collector's
            # scans as the gateway keeps its own, or its pauses would count as offer latency.
            heap = asyncio.create_task(Heap(HeapPolicy(settings.gateway_gc_freeze_s, sys.maxsize,
                                                       float("inf")),
                                            lambda: 0).run(lambda: False))
            connect_cores = cores_since(connect_cpu, stack, procs, connect_s)
            await asyncio.sleep(2.0)  # let a sync round pass
            rss_connected = sum(rss_kib(p.pid) for p in procs)

            # --- push: offers through Kafka to the sockets ----------------------------------
            total = int(args.rate * args.seconds) if args.rate > 0 else args.offers
            cpu_before = [cpu_s(p.pid) for p in procs]
            offers_cpu = cpu_snapshot(stack, procs)
            # The offers come from a process of their own (as from the router's workers), so
            # this one's sockets do not slow the publishing, nor the publishing their reading.
            publish_s, publisher_cpu = await asyncio.to_thread(
                publish_offers, settings, [(d, a) for _, d, a in homes], args.rate, total,
                args.linger_ms or settings.kafka_linger_ms)
            published_at = time.perf_counter()
            deadline = time.monotonic() + 120
            # polling a sum over every desktop (no one event to await)
            while sum(d.offers for d in desks) < total and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            push_s = publish_s + time.perf_counter() - published_at  # the child's start aside
            gateway_cpu = sum(cpu_s(p.pid) for p in procs) - sum(cpu_before)
            cores_busy = cores_since(offers_cpu, stack, procs, push_s)
            cores_busy["publisher"] = round(publisher_cpu / push_s, 2)
            delivered = sum(d.offers for d in desks)
            delays = await asyncio.to_thread(offer_delay_buckets, ports)

            # --- actions: state frames from every desktop ------------------------------------
            stop_at = time.monotonic() + args.action_seconds
            acks_before = sum(d.acks for d in desks)

            async def toggle(desk: Desk, i: int) -> int:
                """One frame in flight per desktop (what a person does), as fast as acked."""
                sent = 0
                while time.monotonic() < stop_at:
                    state = "ready" if (sent + i) % 2 else "not_ready"
                    desk.answered.clear()
                    await desk.ws.send_str(orjson.dumps({"type": "state", "state": state})
                                           .decode())
                    sent += 1
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(desk.answered.wait(), 10)
                return sent

            started = time.perf_counter()
            sent = sum(await asyncio.gather(*(toggle(d, i) for i, d in enumerate(desks))))
            action_s = max(time.perf_counter() - started, 1e-9)
            acked = sum(d.acks for d in desks) - acks_before
            heap.cancel()
            for d in desks:
                await d.ws.close()
        latencies = [ms for d in desks for ms in d.latencies_ms]
        if args.trace:
            write_trace(Path(args.trace), desks)
        p99 = percentile(latencies, 0.99)
        return {
            "instances": len(procs),
            "partitions": partitions,
            "agents_connected": len(desks),
            "connect_per_s": round(len(desks) / connect_s, 1),
            "gateway_rss_idle_mib": round(rss_idle / 1024, 1),
            "gateway_rss_connected_mib": round(rss_connected / 1024, 1),
            "gateway_kib_per_desktop": round((rss_connected - rss_idle) / max(len(desks), 1), 1),
            "rate": args.rate,
            "seconds": args.seconds,
            "offers_published": total,
            "offers_delivered": delivered,
            "all_delivered": delivered == total,
            "offer_publish_per_s": round(total / publish_s, 1),
            "offer_frames_per_s": round(delivered / push_s, 1),
            "offer_p50_ms": round(percentile(latencies, 0.5) or 0.0, 1),
            "offer_p99_ms": round(p99, 1) if p99 is not None else None,
            "offer_max_ms": round(max(latencies), 1) if latencies else None,
            # the same offers seen by the gateways: from the record's time to the record read
            # from Kafka, and to its frame queued for the socket (their histograms)
            **{f"gateway_offer_{stage}_{name}_ms": bucket_quantile(delays.get(stage, {}), q)
               for stage in ("fetched", "queued") for name, q in (("p50", 0.5), ("p99", 0.99))},
            "gateway_cpu_s_per_1000_offers": round(gateway_cpu / max(delivered, 1) * 1000, 3),
            "cores_busy_during_connect": connect_cores,
            "cores_busy_during_offers": cores_busy,
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "action_frames_sent": sent,
            "action_frames_acked": acked,
            "action_frames_acked_per_s": round(acked / action_s, 1),
            "errors": ERROR_CODES,
            "open_files": open_files,
            "cores": os.cpu_count(),
        }
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            if proc.poll() is None:
                proc.kill()
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=2000, help="desktops to connect")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="offers per second, paced for --seconds (0: --offers at once)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="how long offers are paced at --rate")
    parser.add_argument("--offers", type=int, default=20000,
                        help="offers pushed at once when --rate is 0")
    parser.add_argument("--instances", type=int, default=1,
                        help="gateway processes, desktops routed to them by domain")
    parser.add_argument("--action-seconds", type=float, default=10.0,
                        help="length of the action phase (0: none)")
    parser.add_argument("--linger-ms", type=int, default=0,
                        help="the offer publisher's linger (0: PEAKROUTE_KAFKA_LINGER_MS's "
                        "default, a router worker's)")
    parser.add_argument("--fetch-wait-ms", type=int, default=0,
                        help="the gateways' PEAKROUTE_GATEWAY_FETCH_MAX_WAIT_MS (0: its default)")
    parser.add_argument("--partitions", type=int, default=0,
                        help="partitions of the bench's topics (0: one per instance)")
    parser.add_argument("--trace", default="",
                        help="write offer latency per second of sending to this CSV file")
    parser.add_argument("--concurrency", type=int, default=200, help="sign-ins at once")
    args = parser.parse_args(argv)
    if args.partitions and args.partitions < args.instances:
        parser.error(f"--partitions {args.partitions}: at least one per instance")
    result = asyncio.run(run(args))
    for key, value in result.items():
        print(f"{key:28} {value}", file=sys.stderr)
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
