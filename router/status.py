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
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from router.errors import PeakrouteError
from router.redis_client import redis_client, without_retry
from router.redis_reads import RedisRefusing, Refusals, read_through
from router.settings import Settings
from router.sla.rating import WEIGHTS, Rating, parse_tiers, ranked
from router.sla.snapshot import (
    BucketCache,
    DomainFigures,
    QueueFigures,
    Snapshot,
    read_snapshot,
)
from router.sla.windows import WINDOW_NAMES
from router.termtable import Column, fit

WARN_MARGIN = 0.05  # service level within this of the objective shows amber
TIER_STYLE = {"gold": "yellow", "silver": "white", "bronze": "dark_orange", "unrated": "dim",
              "none": "red"}
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
        raise _unreachable(settings, exc) from None
    finally:
        await client.aclose()


def _unreachable(settings: Settings, exc: Exception) -> PeakrouteError:
    return PeakrouteError(f"cannot read Redis at {_safe_url(settings.redis_url)} ({exc}); start "
                          "the stack (peakroute stack up) or set PEAKROUTE_REDIS_URL")


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

    if args.once:  # at the terminal's width now (it may be resized between refreshes)
        console.print(render(await take(), settings.sla_at_risk_share, console.width))
        return 0
    shown = await take()
    with Live(render(shown, settings.sla_at_risk_share, console.width), console=console,
              auto_refresh=False, screen=False) as live:
        while True:
            fresh = await next_snap()
            shown = fresh or shown
            view = render(shown, settings.sla_at_risk_share, console.width)
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


def queue_columns(queues: list[QueueFigures], objective: float, at_risk_share: float,
                  width: int) -> list[Column]:
    """One column per figure, one row per queue, most important first: a narrow terminal keeps
    the queue, the 5-minute service level and the live values and drops the rest."""
    def col(header: str, priority: int, short: str) -> Column:
        return Column(header, [], priority, short=short)

    name = Column("queue", [], 100, justify="left", max_width=18 if width < 120 else None)
    sl = {w: col(f"SL%\n{w}", p, f"SL {w}")
          for w, p in zip(WINDOW_NAMES, (95, 55, 60, 70), strict=True)}
    target = col("tgt", 50, "target")
    waiting = col("wait-\ning", 90, "waiting")
    oldest = col("old-\nest", 85, "oldest")
    risk = col("at\nrisk", 80, "at risk")
    ewt = col("est.\nwait", 65, "est. wait")
    ready = col("ready", 75, "ready")
    answered = col("ans.\ntoday", 45, "answered today")
    abandoned = col("abd.\ntoday", 40, "abandoned today")
    for q in queues:
        name.cells.append(q.queue)
        for w in WINDOW_NAMES:
            v = q.windows[w].service_level
            sl[w].cells.append(Text("-" if v is None else f"{v * 100:.1f}",
                                    style=_sl_style(v, objective)))
        today = q.windows["today"].counts
        target.cells.append(_secs(q.target_s))
        waiting.cells.append(Text(str(q.waiting), style="bold" if q.waiting else "dim"))
        oldest.cells.append(Text(_secs(q.oldest_wait_s),
                                 style=_wait_style(q, q.oldest_wait_s, at_risk_share)))
        risk.cells.append(Text(str(q.at_risk), style="bold red" if q.at_risk else "dim"))
        ewt.cells.append(_secs(q.estimated_wait_s))
        ready.cells.append(Text(str(q.agents_ready),
                                style="bold red" if q.agents_ready == 0 and q.waiting else ""))
        answered.cells.append(str(today.answered))
        abandoned.cells.append(str(today.abandoned))
    return [name, *sl.values(), target, waiting, oldest, risk, ewt, ready, answered, abandoned]


def _rating_text(r: Rating | None) -> Text:
    if r is None or r.score is None:
        return Text("rating unrated", style="dim")
    return Text.assemble("rating ", (r.tier, f"bold {TIER_STYLE.get(r.tier, 'cyan')}"),
                         f" {r.score:.1f}")


def _domain_line(d: DomainFigures, r: Rating | None, width: int) -> Text:
    agents = ", ".join(f"{n} {state.replace('_', ' ')}" for state, n in d.agents.items())
    if width < 120:  # the same figures, shorter words
        return Text.assemble(
            (d.domain, "bold cyan"), f"  {agents}  occ ", (_pct(d.occupancy), "bold"),
            "  bot ", (_pct(d.containment), "bold"), "  ", _rating_text(r))
    return Text.assemble(
        (d.domain, "bold cyan"), f"  agents: {agents}  occupancy ",
        (_pct(d.occupancy), "bold"), "  bot containment ", (_pct(d.containment), "bold"),
        f"  (arrived {d.stats.get('arrived', 0)}, escalated {d.stats.get('escalated', 0)})  ",
        _rating_text(r), (f" ({r.window})" if r is not None else "", "dim"))


def render(snap: Snapshot, at_risk_share: float = 2 / 3, width: int = 200) -> Group:
    """The view for a terminal ``width`` columns wide: a header; per domain a line (agents,
    occupancy, bot, rating) and a table of queues with the columns that fit."""
    taken = dt.datetime.fromtimestamp(snap.taken_at_ms / 1000, dt.UTC)
    parts: list[Any] = [Text.assemble(
        ("peakroute status  ", "bold"), f"{taken:%H:%M:%S} UTC  objective ",
        (_pct(snap.objective), "bold"), " answered within target  ",
        (f"({snap.formula})", "dim"))]
    if not snap.domains:
        parts.append(Text("no routing domain in Redis yet (nothing escalated, no agent logged "
                          "in)", style="dim"))
        return Group(*parts)
    hidden: list[Column] = []
    for d in snap.domains:
        parts.append(Text(""))
        parts.append(_domain_line(d, snap.rating(d.domain), width))
        queues = [q for q in snap.queues if q.domain == d.domain]
        if queues:
            table, dropped = fit(queue_columns(queues, snap.objective, at_risk_share, width),
                                 width)
            parts.append(table)
            hidden = hidden or dropped
    parts.append(Text("SL% = answered within target (green: objective met); waiting = escalated, "
                      "not yet answered; oldest = its longest wait; at risk = waited past 2/3 of "
                      "target; est. wait = for a contact arriving now (? = nothing answered in 5 "
                      "min); ready = ready agents serving the queue; ans./abd. = answered and "
                      "abandoned today; rating = the domain's service rating (peakroute "
                      "rating)", style="dim"))
    if hidden:
        parts.append(Text("hidden at this width: " + ", ".join(c.short for c in hidden)
                          + " (widen the terminal or use --json)", style="dim"))
    return Group(*parts)


# --- peakroute rating ------------------------------------------------------------------------

def add_rating_parser(sub: Any) -> None:
    rating = sub.add_parser(
        "rating", help="merchant service tiers: every routing domain scored and ranked",
        description="Per routing domain (a merchant) a score of 0-100 from its own SLA figures "
        "over PEAKROUTE_RATING_WINDOW (service level against the objective, answered within "
        "target, answer speed against the target, abandonment, bot containment) and a tier "
        "from PEAKROUTE_RATING_TIERS; best first. docs/METRICS.md gives the formula.")
    rating.add_argument("--json", action="store_true", help="one JSON object")
    rating.add_argument("--domain", default="", help="only this routing domain")
    rating.add_argument("--window", choices=WINDOW_NAMES, default=None,
                        help="the window (default PEAKROUTE_RATING_WINDOW)")


def run_rating(args: argparse.Namespace, settings: Settings) -> int:
    if args.window:
        settings = settings.replace(rating_window=args.window)
    return asyncio.run(_run_rating(args, settings))


async def _run_rating(args: argparse.Namespace, settings: Settings) -> int:
    client = redis_client(settings, socket_timeout=5, retry=without_retry())
    try:
        snap = await read_through(lambda: read_snapshot(client, settings, only=args.domain),
                                  Refusals(), FIRST_READ_S)
    except RedisRefusing as exc:
        raise _unreachable(settings, exc) from None
    finally:
        await client.aclose()
    ratings = ranked(snap.ratings)
    if args.json:
        print(orjson.dumps({"taken_at_ms": snap.taken_at_ms, "window": settings.rating_window,
                            "tiers": dict(parse_tiers(settings.rating_tiers)),
                            "weights": WEIGHTS,
                            "ratings": [{"rank": i + 1 if r.score is not None else None,
                                         **r.as_dict()}
                                        for i, r in enumerate(ratings)]}).decode())
        return 0
    console = Console()
    console.print(render_rating(ratings, settings, console.width))
    return 0


def rating_columns(ratings: list[Rating]) -> list[Column]:
    def value(v: float | None) -> str:
        return "-" if v is None else f"{v * 100:.1f}"

    rank = Column("#", [], 100)
    domain = Column("domain", [], 99, justify="left", max_width=24)
    tier = Column("tier", [], 98, justify="left")
    score = Column("score", [], 97)
    contacts = Column("con-\ntacts", [], 50, short="contacts")
    parts = {name: Column(header, [], p, short=name.replace("_", " "))
             for name, header, p in (("service_level", "SL vs\nobj.%", 90),
                                     ("within_target", "within\ntgt %", 60),
                                     ("answer_speed", "speed\n%", 70),
                                     ("retention", "kept\n%", 80),
                                     ("bot_containment", "bot\n%", 65))}
    for i, r in enumerate(ratings):
        rank.cells.append(str(i + 1) if r.score is not None else "-")
        domain.cells.append(r.domain)
        tier.cells.append(Text(r.tier, style=TIER_STYLE.get(r.tier, "")))
        score.cells.append(Text("-" if r.score is None else f"{r.score:.1f}", style="bold"))
        contacts.cells.append(str(r.contacts))
        for name, column in parts.items():
            column.cells.append(value(r.components.get(name)))
    return [rank, domain, tier, score, *parts.values(), contacts]


def render_rating(ratings: list[Rating], settings: Settings, width: int = 200) -> Group:
    tiers = ", ".join(f"{name} >= {lowest:g}" for name, lowest in
                      parse_tiers(settings.rating_tiers))
    table, dropped = fit(rating_columns(ratings), width)
    parts: list[Any] = [
        Text.assemble(("peakroute rating  ", "bold"), f"window {settings.rating_window}; "
                      f"tiers {tiers}; at least {settings.rating_min_contacts} contacts"),
        table if ratings else Text("no routing domain in Redis yet", style="dim"),
        Text("score = 100 x (0.35 SL vs objective + 0.15 within target + 0.20 speed + 0.20 "
             "kept + 0.10 bot) over the defined parts; SL vs obj. = min(1, SL / objective); "
             "speed = 1 - ASA / target; kept = 1 - abandoned (short abandons excluded); bot = "
             "containment (docs/METRICS.md)", style="dim")]
    if dropped:
        parts.append(Text("hidden at this width: " + ", ".join(c.short for c in dropped),
                          style="dim"))
    return Group(*parts)
