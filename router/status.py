"""`peakroute status`: the SLA figures of every routing domain, as a live terminal view (rich)
refreshed every second, or as JSON for scripts. The same snapshot that /metrics exports
(router/sla/snapshot.py), read straight from Redis: no worker needs to run."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from typing import Any

import orjson
import redis.asyncio as aioredis
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from router.errors import PeakrouteError
from router.redis_client import redis_client, without_retry
from router.redis_reads import RedisRefusing, Refusals, read_through
from router.settings import Settings
from router.sla.snapshot import BucketCache, QueueFigures, Snapshot, read_snapshot
from router.sla.windows import WINDOW_NAMES

WARN_MARGIN = 0.05  # service level within this of the objective shows amber
FIRST_READ_S = 5.0  # how long the first read rides out Redis refusing before giving up


def add_parser(sub: Any) -> None:
    status = sub.add_parser(
        "status", help="live service level, queues and agents (the SRE's terminal view)",
        description="Service level per queue over 5 min, 15 min, 1 h and today against the "
        "objective; contacts waiting, oldest wait, at risk (waited past 2/3 of target), "
        "estimated wait of a new contact, ready agents; agents by state, occupancy and bot "
        "containment per domain. Read from Redis (PEAKROUTE_REDIS_URL or the running stack), "
        "refreshed every second until Ctrl-C. docs/METRICS.md defines every figure.")
    status.add_argument("--once", action="store_true", help="print one view and exit")
    status.add_argument("--json", action="store_true",
                        help="JSON instead of the table (with --once: one object; without: "
                        "one object per line per refresh)")
    status.add_argument("--domain", default="", help="only this routing domain")
    status.add_argument("--interval", type=float, default=1.0,
                        help="seconds between refreshes (default 1)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.interval <= 0:
        raise PeakrouteError("--interval must be > 0")
    return asyncio.run(_run(args, settings))


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    client = redis_client(settings, socket_timeout=5, retry=without_retry())
    try:
        return await _loop(client, args, settings)
    except RedisRefusing as exc:  # the first read: Redis never answered
        raise PeakrouteError(f"cannot read Redis at {_safe_url(settings.redis_url)} ({exc}); "
                             "start the stack (peakroute stack up) or set "
                             "PEAKROUTE_REDIS_URL") from None
    finally:
        await client.aclose()


async def _loop(client: aioredis.Redis, args: argparse.Namespace, settings: Settings) -> int:
    cache = BucketCache()  # finished buckets are read once, not every second
    refusals = Refusals()  # resets and refusals are retried (router/redis_reads.py)

    async def take(within_s: float = FIRST_READ_S) -> Snapshot:
        return await read_through(
            lambda: read_snapshot(client, settings, only=args.domain, cache=cache), refusals,
            within_s)

    async def next_snap() -> Snapshot | None:
        """After the first: None while Redis refuses (said on stderr, or under the table)."""
        await asyncio.sleep(args.interval)
        try:
            return await take(max(args.interval, 1.0))
        except RedisRefusing:
            if args.json:
                print(f"peakroute status: Redis refusing ({refusals.describe()}); retrying",
                      file=sys.stderr, flush=True)
            return None

    if args.json:
        snap: Snapshot | None = await take()
        while True:
            if snap is not None:
                print(orjson.dumps(snap.as_dict()).decode(), flush=True)
            if args.once:
                return 0
            snap = await next_snap()
    console = Console()
    if args.once:
        console.print(render(await take(), settings.sla_at_risk_share))
        return 0
    shown = await take()
    with Live(render(shown, settings.sla_at_risk_share), console=console, auto_refresh=False,
              screen=False) as live:
        while True:
            fresh = await next_snap()
            shown = fresh or shown
            view = render(shown, settings.sla_at_risk_share)
            if fresh is None:
                view = Group(view, Text(f"Redis refusing ({refusals.describe()}): figures as "
                                        "last read; retrying", style="bold red"))
            live.update(view, refresh=True)


def _safe_url(url: str) -> str:
    """The Redis URL without credentials (never print a password)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def _secs(v: float | None) -> str:
    if v is None:
        return "?"
    return f"{v:.0f}s" if v < 600 else f"{v / 60:.0f}m"


def _sl_style(v: float | None, objective: float) -> str:
    if v is None:
        return "dim"
    if v >= objective:
        return "green"
    return "yellow" if v >= objective - WARN_MARGIN else "bold red"


def _wait_style(q: QueueFigures, wait_s: float, share: float) -> str:
    if wait_s > q.target_s:
        return "bold red"
    return "yellow" if wait_s > q.target_s * share else "green"


def _table(queues: list[QueueFigures], objective: float, at_risk_share: float) -> Table:
    """One row per queue; two-line headers and light borders so it fits a laptop terminal."""
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", padding=(0, 1), pad_edge=False)
    table.add_column("queue", no_wrap=True)
    for w in WINDOW_NAMES:
        table.add_column(f"SL%\n{w}", justify="right", no_wrap=True)
    for name in ("tgt", "wait-\ning", "old-\nest", "at\nrisk", "est.\nwait", "ready",
                 "ans.\ntoday", "abd.\ntoday"):
        table.add_column(name, justify="right", no_wrap=True)
    for q in queues:
        cells: list[Any] = [q.queue]
        for w in WINDOW_NAMES:
            sl = q.windows[w].service_level
            cells.append(Text("-" if sl is None else f"{sl * 100:.1f}",
                              style=_sl_style(sl, objective)))
        today = q.windows["today"].counts
        cells += [
            _secs(q.target_s),
            Text(str(q.waiting), style="bold" if q.waiting else "dim"),
            Text(_secs(q.oldest_wait_s), style=_wait_style(q, q.oldest_wait_s, at_risk_share)),
            Text(str(q.at_risk), style="bold red" if q.at_risk else "dim"),
            _secs(q.estimated_wait_s),
            Text(str(q.agents_ready),
                 style="bold red" if q.agents_ready == 0 and q.waiting else ""),
            str(today.answered), str(today.abandoned),
        ]
        table.add_row(*cells)
    return table


def render(snap: Snapshot, at_risk_share: float = 2 / 3) -> Group:
    """The view: a header; per domain a line (agents, occupancy, bot) and a table of queues."""
    taken = dt.datetime.fromtimestamp(snap.taken_at_ms / 1000, dt.UTC)
    parts: list[Any] = [Text.assemble(
        ("peakroute status  ", "bold"), f"{taken:%H:%M:%S} UTC  objective ",
        (_pct(snap.objective), "bold"), " answered within target  ",
        (f"({snap.formula})", "dim"))]
    if not snap.domains:
        parts.append(Text("no routing domain in Redis yet (nothing escalated, no agent logged "
                          "in)", style="dim"))
        return Group(*parts)
    for d in snap.domains:
        agents = ", ".join(f"{n} {state.replace('_', ' ')}" for state, n in d.agents.items())
        parts.append(Text(""))
        parts.append(Text.assemble(
            (f"{d.domain}", "bold cyan"), f"  agents: {agents}  occupancy ",
            (_pct(d.occupancy), "bold"), "  bot containment ", (_pct(d.containment), "bold"),
            f"  (arrived {d.stats.get('arrived', 0)}, escalated "
            f"{d.stats.get('escalated', 0)})"))
        queues = [q for q in snap.queues if q.domain == d.domain]
        if queues:
            parts.append(_table(queues, snap.objective, at_risk_share))
    parts.append(Text("SL% = answered within target (green: objective met); waiting = escalated, "
                      "not yet answered; oldest = its longest wait; at risk = waited past 2/3 of "
                      "target; est. wait = for a contact arriving now (? = nothing answered in 5 "
                      "min); ready = ready agents serving the queue; ans./abd. = answered and "
                      "abandoned today", style="dim"))
    return Group(*parts)

