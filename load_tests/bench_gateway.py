"""What one agent gateway holds: connected desktops, pushed frames/s and client frames/s.

    python -m load_tests.bench_gateway --agents 2000 --offers 20000 --seconds 10

Starts the embedded stack and `peakroute gateway` in a process of its own, puts ``--agents``
profiles in the roster, and from this process (one asyncio loop, aiohttp) connects that many
desktops (hello with a token each), then measures
  * connect: desktops signed in per second, and the gateway's resident memory per desktop;
  * push: ``--offers`` assignment.offered records published to the assignments topic for the
    connected agents; offer frames delivered per second (Kafka -> gateway -> sockets);
  * actions: every desktop alternates ``state`` ready / not_ready frames for ``--seconds``;
    acknowledged frames per second (each one a validated agents.events record sent to Kafka).
No router worker runs: the bench measures the gateway alone. The client shares the machine's
cores with the gateway, the broker and Redis, so the figures are a floor for the gateway.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis

from router.events import AssignmentOffered, Channel
from router.gateway.auth import Role, issue
from router.gateway.roster import Profile, Roster
from router.kafka import producer
from router.settings import Settings
from router.stack import EmbeddedStack, _die_with_parent, free_port
from router.stage import now_ms

DOMAIN = "bench-gw"
ERROR_CODES: dict[str, int] = {}


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
        self.welcome = asyncio.Event()
        self.answered = asyncio.Event()  # an ack or error arrived
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            kind = orjson.loads(msg.data)["type"]
            if kind == "offer":
                self.offers += 1
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


async def run(args: argparse.Namespace) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="bench-gw-"))
    stack = EmbeddedStack(state, partitions=8)
    settings: Settings = (await stack.start()).replace(
        gateway_jwt_secret="bench-secret-" + "x" * 32, gateway_frames_per_s=50.0,
        gateway_frame_burst=100)
    port = free_port()
    proc = start_gateway(settings, port, state / "gateway.log")
    desks: list[Desk] = []
    try:
        roster_client = aioredis.Redis.from_url(settings.redis_url)
        ids = [f"a-{i:06d}" for i in range(args.agents)]
        await Roster(roster_client).put(
            DOMAIN, [Profile(a, {"zh": 1, "general": 1}, {"chat": 3}) for a in ids], by="bench")
        await roster_client.aclose()
        await asyncio.to_thread(wait_healthy, port)
        rss_idle = rss_kib(proc.pid)
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as http:
            # --- connect --------------------------------------------------------------------
            started = time.perf_counter()
            sem = asyncio.Semaphore(args.concurrency)

            async def sign_in(agent_id: str) -> Desk:
                async with sem:
                    ws = await http.ws_connect(f"http://127.0.0.1:{port}/ws", max_msg_size=0)
                    desk = Desk(ws)
                    await ws.send_str(orjson.dumps({"type": "hello", "token": issue(
                        settings, agent_id, Role.AGENT, DOMAIN, 3600)}).decode())
                    await asyncio.wait_for(desk.welcome.wait(), 60)
                    return desk

            desks = list(await asyncio.gather(*(sign_in(a) for a in ids)))
            connect_s = time.perf_counter() - started
            await asyncio.sleep(2.0)  # let a sync round pass
            rss_connected = rss_kib(proc.pid)

            # --- push: offers through Kafka to the sockets ----------------------------------
            prod = producer(settings, linger_ms=20)
            await prod.start()
            expires = now_ms() + 3_600_000
            started = time.perf_counter()
            for n in range(args.offers):
                aid = ids[n % len(ids)]
                ev = AssignmentOffered(
                    event_id=f"e{n}", ts_ms=now_ms(), offer_id=f"o{n}", contact_id=f"c{n}",
                    agent_id=aid, domain=DOMAIN, channel=Channel.CHAT, expires_at_ms=expires,
                    queue="general")
                await prod.send(settings.topic_assignments, ev.to_json(), key=DOMAIN.encode())
            await prod.flush()
            publish_s = time.perf_counter() - started
            deadline = time.monotonic() + 120
            # polling a sum over every desktop (no one event to await)
            while sum(d.offers for d in desks) < args.offers and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            push_s = time.perf_counter() - started
            delivered = sum(d.offers for d in desks)
            await prod.stop()

            # --- actions: state frames from every desktop ------------------------------------
            stop_at = time.monotonic() + args.seconds
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
            action_s = time.perf_counter() - started
            acked = sum(d.acks for d in desks) - acks_before
            for d in desks:
                await d.ws.close()
        return {
            "agents_connected": len(desks),
            "connect_per_s": round(len(desks) / connect_s, 1),
            "gateway_rss_idle_mib": round(rss_idle / 1024, 1),
            "gateway_rss_connected_mib": round(rss_connected / 1024, 1),
            "gateway_kib_per_desktop": round((rss_connected - rss_idle) / max(len(desks), 1), 1),
            "offers_published": args.offers,
            "offers_delivered": delivered,
            "offer_publish_per_s": round(args.offers / publish_s, 1),
            "offer_frames_per_s": round(delivered / push_s, 1),
            "action_frames_sent": sent,
            "action_frames_acked": acked,
            "action_frames_acked_per_s": round(acked / action_s, 1),
            "errors": ERROR_CODES,
            "cores": os.cpu_count(),
        }
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=2000, help="desktops to connect")
    parser.add_argument("--offers", type=int, default=20000, help="offers to push")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the action phase")
    parser.add_argument("--concurrency", type=int, default=200, help="sign-ins at once")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    for key, value in result.items():
        print(f"{key:28} {value}", file=sys.stderr)
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
