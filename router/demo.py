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
from router.redis_client import redacted_url, redis_client
from router.settings import Settings
from router.stack import EmbeddedStack, _die_with_parent, free_port

READY_TIMEOUT_S = 90.0
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
    stack = EmbeddedStack(base.state_dir / "demo", partitions=base.topic_partitions)
    workers: list[WorkerProcess] = []
    pool: AgentPool | None = None
    gateway: SimulatedGateway | None = None
    client: aioredis.Redis | None = None
    desktop: Any = None  # the agent gateway (--desktop-port)

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    try:
        say("starting the embedded stack (Tansu broker + redis-server) ...")
        await stack.start()
        settings = base.replace(**stack.recorded_settings(), state_dir=stack.state_dir)
        say(f"  kafka {settings.kafka_bootstrap_servers}  redis {redacted_url(settings.redis_url)}")
        say(f"starting {opts.workers} router worker(s) ...")
        workers = [WorkerProcess(settings, i, stack.state_dir / "logs")
                   for i in range(opts.workers)]
        await wait_ready(workers)
        say(f"  ready; metrics on http://127.0.0.1:{workers[0].port}/metrics")
        say(f"  live SLA view: PEAKROUTE_STATE_DIR={stack.state_dir} peakroute status")
        client = redis_client(settings)
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
        started = time.monotonic()
        publishing = asyncio.create_task(gateway.run(opts.duration_s))
        while not publishing.done():
            await asyncio.wait([publishing], timeout=opts.interval_s)
            await _show(say, started, gateway, client, opts)
        await publishing
        await gateway.flush()
        publish_s = time.monotonic() - started
        say("draining: no new contacts; agents finish, waiting customers are answered or leave")
        drain_until = time.monotonic() + opts.drain_s
        while time.monotonic() < drain_until:
            books = await read_books(client)
            accounted = books.arrived + gateway.stats.deadlettered
            if accounted >= gateway.stats.published and books.open == 0:
                break
            await asyncio.sleep(opts.interval_s)
            await _show(say, started, gateway, client, opts)
        books = await read_books(client)
        result = summary(opts, books, gateway, time.monotonic() - started, publish_s)
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


async def _show(say: Any, started: float, gateway: SimulatedGateway, client: aioredis.Redis,
                opts: DemoOptions) -> None:
    books = await read_books(client)
    p99 = percentile(gateway.stats.reply_latencies_ms[-5000:], 0.99)
    if opts.json_progress:
        say(orjson.dumps({"t_s": round(time.monotonic() - started, 1),
                          "published": gateway.stats.published, **books.as_dict()}).decode())
    else:
        say(progress_line(time.monotonic() - started, gateway.stats.published, books,
                          gateway.stats.deadlettered, p99))


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
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f} %"
