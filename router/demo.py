"""`peakroute demo`: the whole contact flow on the embedded stack, with a live view and books.

It starts the embedded stack, router worker process(es), simulated agents and a simulated
gateway; publishes contacts for ``--duration`` seconds; drains; prints the books and writes
them as JSON (``--report``) and the worker's Prometheus exposition (``--metrics-out``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson
import redis.asyncio as aioredis

from agents.client import AgentBus
from agents.simulated import AgentPool, Behaviour, roster
from load_tests.gateway import SimulatedGateway, percentile
from router.books import Books, read_books
from router.errors import StackError
from router.redis_client import redacted_url, redis_client, without_retry
from router.redis_reads import RedisRefusing, Refusals, read_through
from router.settings import Settings
from router.stack import EmbeddedStack, _die_with_parent, free_port

READY_TIMEOUT_S = 90.0
READ_TIMEOUT_S = 2.0  # the demo's own Redis reads
FINAL_READ_S = 60.0  # how long the final books may wait for a Redis that refuses
DOMAIN = "shop-1"


@dataclass(frozen=True)
class DemoOptions:
    rate: float = 20.0
    duration_s: float = 60.0
    agents: int = 40
    workers: int = 1
    handle_mean_s: float = 8.0
    patience_s: float = 45.0
    bad_ratio: float = 0.005
    drain_s: float = 60.0
    report: Path | None = None
    metrics_out: Path | None = None
    json_progress: bool = False
    interval_s: float = 2.0
    desktop_port: int | None = None  # issue 9: a gateway with a human agent and a supervisor
    redis_cluster: int = 0  # issue 20: a Redis Cluster of this many primaries (0: one Redis)
    redis_replicas: int = 0  # replicas per primary of that cluster
    # Run beside the publishing (load_tests.demo_faults injects Redis faults with it); the
    # drain starts once both are done.
    during: Callable[[DemoRun], Coroutine[Any, Any, Any]] | None = None


class WorkerProcess:
    """A `peakroute worker` child process with its own web port (for /metrics)."""

    def __init__(self, settings: Settings, index: int, log_dir: Path) -> None:
        self.port = free_port()
        self.log_path = log_dir / f"worker-{index}.log"
        env = {**os.environ, **settings.replace(web_port=self.port).as_env()}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "router.cli", "worker"], env=env, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
            body: bytes = resp.read()
            return body

    def ready(self) -> bool:
        return bool(self.readiness().get("ready"))

    def readiness(self) -> dict[str, Any]:
        """/readyz's answer, 503 included (``failing``: the Redis or Kafka failure met last);
        empty while the worker does not answer."""
        try:
            body = self.get("/readyz")
        except urllib.error.HTTPError as exc:
            body = exc.read()
        except OSError:
            return {}
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            return {}
        return answer if isinstance(answer, dict) else {}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def wait_ready(workers: list[WorkerProcess]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not all(w.ready() for w in workers):
        for w in workers:
            if w.proc.poll() is not None:
                tail = w.log_path.read_text(errors="replace")[-1500:]
                raise StackError(f"the router worker exited (code {w.proc.returncode}); "
                                 f"{w.log_path} ends with:\n{tail}")
        if time.monotonic() > deadline:
            raise StackError(f"the router worker was not ready within {READY_TIMEOUT_S:.0f} s; "
                             f"see {workers[0].log_path}")
        await asyncio.sleep(0.25)


def books_client(settings: Settings) -> aioredis.Redis:
    """The demo's Redis client: its reads retry (router/redis_reads.py), and a stalled Redis
    must not freeze them."""
    return redis_client(settings, socket_timeout=READ_TIMEOUT_S,
                        socket_connect_timeout=READ_TIMEOUT_S, retry=without_retry())


def log_tail(path: Path, lines: int = 12) -> str:
    """The last lines of a worker's log (structured lines: no customer text)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"({path} unreadable: {exc})"
    return "\n".join(text.splitlines()[-lines:])[-2500:]


def exit_status(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"code {code}, {signal.Signals(-code).name}"
    return f"code {code}"


class Supervisor:
    """Notices a worker process that exited: says so (exit code, the tail of its log) and
    starts it again; a worker that died ``MAX_DEATHS`` times within ``WINDOW_S`` stops the
    demo with an error instead (something is wrong that a restart will not fix)."""

    MAX_DEATHS = 3
    WINDOW_S = 60.0

    def __init__(self, settings: Settings, workers: list[WorkerProcess], log_dir: Path,
                 say: Callable[[str], None],
                 start: Callable[[Settings, int, Path], WorkerProcess] = WorkerProcess) -> None:
        self.settings = settings
        self.workers = workers  # replaced in place: the demo and its hook see the new ones
        self.log_dir = log_dir
        self.say = say
        self.start = start
        self.deaths: dict[int, list[float]] = {}
        self.restarts = 0

    def check(self) -> None:
        for i, worker in enumerate(self.workers):
            code = worker.proc.poll()
            if code is None:
                continue
            now = time.monotonic()
            deaths = [t for t in self.deaths.get(i, []) if now - t < self.WINDOW_S] + [now]
            self.deaths[i] = deaths
            tail = log_tail(worker.log_path)
            if len(deaths) >= self.MAX_DEATHS:
                raise StackError(
                    f"router worker {i} died {len(deaths)} times within "
                    f"{self.WINDOW_S:.0f} s (last: {exit_status(code)}); stopping the demo. "
                    f"{worker.log_path} ends with:\n{tail}")
            self.say(f"router worker {i} exited ({exit_status(code)}); {worker.log_path} "
                     f"ends with:\n{tail}")
            self.workers[i] = self.start(self.settings, i, self.log_dir)
            self.restarts += 1
            self.say(f"  restarted router worker {i} (pid {self.workers[i].proc.pid}, "
                     f"metrics on http://127.0.0.1:{self.workers[i].port}/metrics)")


@dataclass
class DemoRun:
    """What a ``DemoOptions.during`` hook gets: the stack's settings and the live workers."""

    settings: Settings
    workers: list[WorkerProcess]
    say: Callable[[str], None]


class Watch:
    """The demo's view of the run: the books read through Redis refusals (router/redis_reads),
    the workers' own failures (/readyz), and the progress line."""

    def __init__(self, client: aioredis.Redis, supervisor: Supervisor, gateway: SimulatedGateway,
                 opts: DemoOptions, say: Callable[[str], None]) -> None:
        self.client = client
        self.supervisor = supervisor
        self.gateway = gateway
        self.opts = opts
        self.say = say
        self.refusals = Refusals()
        self.last: Books | None = None  # the last books Redis gave
        self.started = time.monotonic()

    async def books(self, within_s: float) -> Books | None:
        """The books, retrying Redis's failures for up to ``within_s``; None if it still
        refuses (the refusal is in ``self.refusals``)."""
        try:
            self.last = await read_through(lambda: read_books(self.client), self.refusals,
                                           within_s)
        except RedisRefusing:
            return None
        return self.last

    async def refusing(self) -> str:
        """What Redis refuses now, by kind: to the demo's reads, and to the workers (the
        failure /readyz names; asked in a thread, so a hung worker never stalls publishing)."""
        parts = []
        if self.refusals.kind is not None:
            parts.append(f"{self.refusals.describe()} (books)")
        answers = await asyncio.gather(*(asyncio.to_thread(w.readiness)
                                         for w in self.supervisor.workers))
        for i, answer in enumerate(answers):
            if answer.get("failing"):
                parts.append(f"{answer['failing']} (worker {i})")
        return ", ".join(parts)

    async def show(self) -> None:
        """Check the workers, read the books (for at most one interval) and print a line."""
        self.supervisor.check()
        books = await self.books(self.opts.interval_s)
        shown = books or self.last or Books()
        refusing = await self.refusing()
        stats = self.gateway.stats
        elapsed = time.monotonic() - self.started
        if self.opts.json_progress:
            self.say(orjson.dumps({"t_s": round(elapsed, 1), "published": stats.published,
                                   **shown.as_dict(), "redis_refusing": refusing or None,
                                   "stale": books is None}).decode())
            return
        p99 = percentile(stats.reply_latencies_ms[-5000:], 0.99)
        line = progress_line(elapsed, stats.published, shown, stats.deadlettered, p99)
        if refusing:
            line += f"  REDIS REFUSING: {refusing}"
        if books is None:
            line += "; books as last read"
        self.say(line)


def progress_line(elapsed: float, published: int, books: Books, deadlettered: int,
                  reply_p99_ms: float) -> str:
    return (f"t={elapsed:5.0f}s published={published:6d} contained={books.contained:6d} "
            f"escalated={books.escalated:5d} answered={books.answered:5d} "
            f"abandoned={books.abandoned:4d} waiting={books.waiting:4d} "
            f"offered={books.offered:3d} deadlettered={deadlettered:3d} "
            f"bot_reply_p99={reply_p99_ms:5.0f}ms")


def summary(opts: DemoOptions, books: Books, gateway: SimulatedGateway, elapsed_s: float,
            publish_s: float) -> dict[str, Any]:
    gs = gateway.stats
    totals = {
        "published": gs.published,
        "contained": books.contained,
        "escalated": books.escalated,
        "answered": books.answered,
        "answered_within_target": books.answered_within_target,
        "abandoned": books.abandoned,
        "deadlettered": gs.deadlettered,
        "open": books.open,
    }
    terminal = (totals["contained"] + totals["answered"] + totals["abandoned"]
                + totals["deadlettered"] + totals["open"])
    denominator = books.answered + books.abandoned - books.short_abandoned
    lat = gs.reply_latencies_ms
    return {
        "totals": totals,
        "balanced": terminal == totals["published"],
        "service_level": round(books.answered_within_target / denominator, 4)
        if denominator else None,
        "average_speed_of_answer_s": round(books.wait_sum_ms / books.answered / 1000, 2)
        if books.answered else None,
        "bot_containment": round(books.contained / books.arrived, 4) if books.arrived else None,
        "throughput": {
            "published_per_s": round(gs.published / publish_s, 1) if publish_s else 0.0,
            "bot_reply_latency_ms": {"p50": round(percentile(lat, 0.5), 1),
                                     "p99": round(percentile(lat, 0.99), 1),
                                     "max": round(max(lat, default=0.0), 1)},
        },
        "detail": {**books.as_dict(), "malformed_published": gs.malformed,
                   "customers_left": gs.left},
        "run": {"rate": opts.rate, "duration_s": opts.duration_s, "agents": opts.agents,
                "workers": opts.workers, "elapsed_s": round(elapsed_s, 1)},
    }


async def run_demo(opts: DemoOptions, out: TextIO = sys.stdout) -> dict[str, Any]:
    base = Settings.from_env()
    stack = EmbeddedStack(base.state_dir / "demo", partitions=base.topic_partitions,
                          redis_cluster=opts.redis_cluster, redis_replicas=opts.redis_replicas)
    workers: list[WorkerProcess] = []
    pool: AgentPool | None = None
    gateway: SimulatedGateway | None = None
    client: aioredis.Redis | None = None
    desktop: Any = None  # the agent gateway (--desktop-port)

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    try:
        say("starting the embedded stack (Tansu broker + "
            + (f"a Redis Cluster of {opts.redis_cluster} primaries"
               f"{f' x {1 + opts.redis_replicas} nodes' if opts.redis_replicas else ''}) ..."
               if opts.redis_cluster else "redis-server) ..."))
        await stack.start()
        settings = base.replace(**stack.recorded_settings(), state_dir=stack.state_dir)
        say(f"  kafka {settings.kafka_bootstrap_servers}  redis {redacted_url(settings.redis_url)}")
        say(f"starting {opts.workers} router worker(s) ...")
        workers = [WorkerProcess(settings, i, stack.state_dir / "logs")
                   for i in range(opts.workers)]
        await wait_ready(workers)
        say(f"  ready; metrics on http://127.0.0.1:{workers[0].port}/metrics")
        say(f"  live SLA view: PEAKROUTE_STATE_DIR={stack.state_dir} peakroute status")
        client = books_client(settings)
        supervisor = Supervisor(settings, workers, stack.state_dir / "logs", say)
        bus = AgentBus(settings)
        await bus.start()
        pool = AgentPool(bus, roster(opts.agents, DOMAIN), DOMAIN,
                         Behaviour(handle_mean_s=opts.handle_mean_s))
        await pool.start()
        if opts.desktop_port is not None:
            from router.gateway.demo import start_desktop
            from router.gateway.roster import Profile

            desktop, links = await start_desktop(
                settings, opts.desktop_port, DOMAIN,
                [Profile(p.agent_id, p.skills, p.capacity) for p in roster(opts.agents, DOMAIN)])
            for line in links:
                say(line)
        gateway = SimulatedGateway(settings, rate=opts.rate, domain=DOMAIN,
                                   patience_s=opts.patience_s, bad_ratio=opts.bad_ratio)
        await gateway.start()
        say(f"{opts.agents} agents logged in; publishing ~{opts.rate:g} contacts/s for "
            f"{opts.duration_s:g} s")
        watch = Watch(client, supervisor, gateway, opts, say)
        running = [asyncio.create_task(gateway.run(opts.duration_s), name="publishing")]
        if opts.during is not None:
            running.append(asyncio.create_task(
                opts.during(DemoRun(settings, workers, say)), name="during"))
        try:
            while not all(task.done() for task in running):
                await asyncio.wait(running, timeout=opts.interval_s,
                                   return_when=asyncio.FIRST_EXCEPTION)
                for task in running:  # a failed task ends the demo with its error
                    if task.done() and task.exception() is not None:
                        await task
                await watch.show()
        finally:
            for task in running:
                task.cancel()
        await gateway.flush()
        publish_s = time.monotonic() - watch.started
        say("draining: no new contacts; agents finish, waiting customers are answered or leave")
        drain_until = time.monotonic() + opts.drain_s
        while time.monotonic() < drain_until:
            supervisor.check()
            books = await watch.books(opts.interval_s)
            if books is not None and books.open == 0 and (
                    books.arrived + gateway.stats.deadlettered >= gateway.stats.published):
                break
            await asyncio.sleep(opts.interval_s)
            await watch.show()
        supervisor.check()
        try:
            books = await read_through(lambda: read_books(client), watch.refusals,
                                       FINAL_READ_S)
        except RedisRefusing as exc:
            raise StackError(f"cannot read the books: {exc}; the stack is stopped, "
                             f"{stack.state_dir / 'logs'} has its logs") from exc
        result = summary(opts, books, gateway, time.monotonic() - watch.started, publish_s)
        result["run"]["worker_restarts"] = supervisor.restarts
        result["run"]["redis_refusals_met"] = dict(watch.refusals.counts)
        if opts.metrics_out is not None:
            opts.metrics_out.write_bytes(exporting_exposition(workers))
        return result
    finally:
        if desktop is not None:
            with contextlib.suppress(Exception):
                await desktop.stop()
        if gateway is not None:
            with contextlib.suppress(Exception):
                await gateway.stop()
        if pool is not None:
            with contextlib.suppress(Exception):
                await pool.stop()
                await pool.bus.stop()
        if client is not None:
            await client.aclose()
        for w in workers:
            w.stop()
        stack.stop()


def exporting_exposition(workers: list[WorkerProcess]) -> bytes:
    """The /metrics of the worker that exports the cluster's SLA figures (it holds the lease,
    docs/METRICS.md), so the file has them; the first worker's if none does yet."""
    pages = [w.get("/metrics") for w in workers]
    return next((page for page in pages if b"\npeakroute_sla_exporter 1.0" in page), pages[0])


def render_summary(result: dict[str, Any]) -> str:
    t = result["totals"]
    lines = [
        "",
        "books " + ("balance" if result["balanced"] else "DO NOT BALANCE"),
        f"  published {t['published']} = contained {t['contained']} + answered {t['answered']}"
        f" + abandoned {t['abandoned']} + deadlettered {t['deadlettered']} + open {t['open']}",
        f"  escalated to humans {t['escalated']}, answered within target "
        f"{t['answered_within_target']}",
        f"  service level {_pct(result['service_level'])}, bot containment "
        f"{_pct(result['bot_containment'])}, average speed of answer "
        f"{result['average_speed_of_answer_s']} s",
        f"  published {result['throughput']['published_per_s']} contacts/s; bot reply latency "
        f"p50 {result['throughput']['bot_reply_latency_ms']['p50']} ms, "
        f"p99 {result['throughput']['bot_reply_latency_ms']['p99']} ms",
    ]
    run = result["run"]
    if run.get("worker_restarts") or run.get("redis_refusals_met"):
        met = ", ".join(f"{kind} {n}" for kind, n in sorted(run["redis_refusals_met"].items()))
        lines.append(f"  router workers restarted {run['worker_restarts']}; Redis failures the "
                     f"books' reads rode out: {met or 'none'}")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f} %"
