"""The demo's simulated agents and gateway against a running deployment (deploy/compose.yaml's
optional `demo` profile, or any cluster the PEAKROUTE_* settings point at), until stopped.

    python -m load_tests.simulate agents --count 40
    python -m load_tests.simulate gateway --rate 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from agents.client import AgentBus
from agents.simulated import AgentPool, Behaviour, roster
from load_tests.gateway import SimulatedGateway
from router import logs
from router.kafka import ensure_topics
from router.settings import Settings

log = logs.get("simulate")
FOREVER_S = 10.0 * 365 * 86_400


async def agents(settings: Settings, count: int, domain: str, handle_mean_s: float,
                 stop: asyncio.Event) -> None:
    bus = AgentBus(settings)
    await bus.start()
    pool = AgentPool(bus, roster(count, domain), domain, Behaviour(handle_mean_s=handle_mean_s))
    await pool.start()
    log.info("agents_logged_in", extra=logs.fields(count=count, domain=domain))
    try:
        await stop.wait()
    finally:
        await pool.stop()  # logs the agents out
        await bus.stop()


async def gateway(settings: Settings, rate: float, domain: str, patience_s: float,
                  stop: asyncio.Event) -> None:
    gw = SimulatedGateway(settings, rate=rate, domain=domain, patience_s=patience_s,
                          bad_ratio=0.0)
    await gw.start()
    log.info("gateway_started", extra=logs.fields(rate=rate, domain=domain))
    publishing = asyncio.create_task(gw.run(FOREVER_S))
    try:
        await stop.wait()
    finally:
        publishing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publishing
        log.info("gateway_stopped", extra=logs.fields(published=gw.stats.published))
        await gw.stop()


async def run(args: argparse.Namespace, settings: Settings) -> None:
    await ensure_topics(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.role == "agents":
        await agents(settings, args.count, args.domain, args.handle_time, stop)
    else:
        await gateway(settings, args.rate, args.domain, args.patience, stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m load_tests.simulate",
        description="Run the demo's simulated agents or gateway against the Kafka and Redis "
        "the PEAKROUTE_* settings name, until SIGTERM or Ctrl-C.")
    sub = parser.add_subparsers(dest="role", required=True)
    a = sub.add_parser("agents", help="log in simulated agents that take offers")
    a.add_argument("--count", type=int, default=40)
    a.add_argument("--handle-time", type=float, default=8.0, help="mean seconds per contact")
    g = sub.add_parser("gateway", help="publish contacts (Poisson) and read the bot's replies")
    g.add_argument("--rate", type=float, default=20.0, help="contacts per second")
    g.add_argument("--patience", type=float, default=45.0,
                   help="mean seconds a customer waits for a person before leaving")
    for p in (a, g):
        p.add_argument("--domain", default="shop-1", help="routing domain (merchant)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    logs.configure(settings.log_level, settings.log_format)
    asyncio.run(run(args, settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
