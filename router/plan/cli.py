"""`peakroute plan`: agents per interval from a forecast (a CSV, or the router's own history in
Redis scaled by a factor), by Erlang C and Erlang A; a table, JSON or a plot; and what each point
of bot containment saves at the peak. The maths is router/plan/erlang.py and planner.py; this
module reads the inputs and writes the outputs."""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import itertools
import math
import time
from pathlib import Path
from typing import Any

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rich.console import Console, Group
from rich.text import Text

from router.errors import PeakrouteError
from router.plan.planner import (
    Assumptions,
    ContainmentWhatIf,
    Interval,
    Row,
    containment_what_if,
    peak,
    plan,
)
from router.redis_client import redis_client
from router.settings import Settings, env_name
from router.sla.history import History, per_interval, read_history
from router.sla.windows import timezone
from router.termtable import Column, fit

MAX_CONTAINMENT = 0.99  # a bot that closed everything so far still leaves people something
MATPLOTLIB_HINT = ("--plot needs matplotlib: .venv/bin/pip install 'peakroute[load]' (or "
                   "pip install matplotlib)")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "plan", help="agents needed per interval from a forecast (Erlang C and Erlang A)",
        description="How many agents each interval needs to meet the service-level objective: "
        "from a forecast of arriving contacts (a CSV of interval start and contacts, or the "
        "router's own history in Redis scaled by a factor), the bot's containment, the handle "
        "time, the customers' patience, the target and the objective. Erlang C assumes nobody "
        "leaves; Erlang A lets customers leave when their patience runs out. Ends with what "
        "each point of bot containment saves at the peak. docs/OPERATIONS.md shows how to plan "
        "a night with it.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--forecast", type=Path, metavar="FILE.csv",
                     help="CSV with a header; columns interval_start (ISO date-time, or HH:MM "
                     "for today; PEAKROUTE_SLA_TIMEZONE when it has no offset) and contacts "
                     "(arriving, before the bot)")
    src.add_argument("--history", action="store_true",
                     help="the router's own contacts from the SLA minute buckets in Redis (the "
                     "last --hours, whole intervals), scaled by --scale")
    p.add_argument("--hours", type=float, default=24.0, help="history to read (24; at most "
                   "what PEAKROUTE_SLA_BUCKET_TTL_S keeps)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiplies the history's contacts (3 = three times last night)")
    p.add_argument("--domain", default="", help="history and containment of this domain only")
    p.add_argument("--interval-min", type=int, default=0,
                   help="interval length in minutes (default: the CSV's spacing, else 30)")
    p.add_argument("--containment", type=float, default=None,
                   help="share of contacts the bot closes, 0..1 (default: the router's books "
                   "in Redis, contained / arrived)")
    p.add_argument("--aht", type=float, default=None,
                   help="handle time of one contact, seconds (default PEAKROUTE_PLAN_AHT_S)")
    p.add_argument("--patience", type=float, default=None,
                   help="customers' mean patience for a person, seconds, for Erlang A "
                   "(default PEAKROUTE_PLAN_PATIENCE_S)")
    p.add_argument("--target", type=float, default=None,
                   help="answer target, seconds (default PEAKROUTE_SLA_TARGET_S)")
    p.add_argument("--objective", type=float, default=None,
                   help="share to answer within target (default PEAKROUTE_SLA_OBJECTIVE_RATIO)")
    p.add_argument("--concurrency", type=int, default=1,
                   help="contacts an agent handles at once; each is counted as a server (1)")
    p.add_argument("--shrinkage", type=float, default=0.0,
                   help="share of paid time agents are unavailable: breaks, training (0)")
    p.add_argument("--max-occupancy", type=float, default=1.0,
                   help="staff so that occupancy stays at or below this (1 = no limit)")
    p.add_argument("--max-abandonment", type=float, default=0.05,
                   help="Erlang A: staff so that at most this share of contacts leave (0.05; "
                   "1 = no limit)")
    p.add_argument("--what-if", type=int, default=5, metavar="POINTS",
                   help="containment from POINTS points below to POINTS above the assumed "
                   "(5)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    p.add_argument("--plot", type=Path, metavar="FILE.png",
                   help="also draw agents and contacts per interval to this PNG (matplotlib)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    _check_args(args)
    tz = timezone(settings.sla_timezone)
    history: History | None = None
    note = ""
    if args.history:
        intervals, history = asyncio.run(_from_history(args, settings, tz))
    else:
        intervals = read_forecast(args.forecast, tz, args.interval_min * 60)
        if args.containment is None:
            history, note = asyncio.run(_books_only(args, settings))
    if not intervals:
        raise PeakrouteError("the forecast has no interval")
    assumptions = _assumptions(args, settings, history, note)
    rows = plan(intervals, assumptions)
    top = peak(rows)
    what_if = (containment_what_if(top.interval, assumptions, args.what_if)
               if top is not None and args.what_if > 0 else None)
    result = as_dict(assumptions, rows, what_if)
    if args.plot:
        plot(args.plot, rows, assumptions)
        result["plot"] = str(args.plot)
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        Console().print(render(assumptions, rows, what_if, Console().width))
        if args.plot:
            print(f"plot: {args.plot}")
    return 0


def _check_args(args: argparse.Namespace) -> None:
    checks = [
        (args.containment is None or 0 <= args.containment < 1, "--containment must be in [0, 1)"),
        (args.aht is None or args.aht > 0, "--aht must be > 0"),
        (args.patience is None or args.patience > 0, "--patience must be > 0"),
        (args.target is None or args.target >= 0, "--target must be >= 0"),
        (args.objective is None or 0 < args.objective < 1, "--objective must be in (0, 1)"),
        (args.concurrency >= 1, "--concurrency must be >= 1"),
        (0 <= args.shrinkage < 1, "--shrinkage must be in [0, 1)"),
        (0 < args.max_occupancy <= 1, "--max-occupancy must be in (0, 1]"),
        (0 < args.max_abandonment <= 1, "--max-abandonment must be in (0, 1]"),
        (args.scale > 0 and args.hours > 0, "--scale and --hours must be > 0"),
        (args.interval_min >= 0, "--interval-min must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise PeakrouteError(message)


# --- inputs ----------------------------------------------------------------------------------

def read_forecast(path: Path, tz: dt.tzinfo, interval_s: int = 0,
                  today: dt.date | None = None) -> list[Interval]:
    """The CSV's rows as intervals. The first two columns are the interval start and the
    contacts (a header row is required; its names are not checked)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise PeakrouteError(f"cannot read the forecast {path}: {exc.strerror}") from None
    rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
    if len(rows) < 2:
        raise PeakrouteError(f"{path}: a header and at least one row of interval_start, "
                             "contacts are needed")
    day = today or dt.datetime.now(tz).date()
    starts: list[dt.datetime] = []
    contacts: list[float] = []
    for n, row in enumerate(rows[1:], start=2):
        if len(row) < 2:
            raise PeakrouteError(f"{path}:{n}: two columns needed (interval_start, contacts)")
        starts.append(_parse_start(row[0].strip(), tz, day, f"{path}:{n}"))
        try:
            value = float(row[1])
        except ValueError:
            raise PeakrouteError(f"{path}:{n}: contacts {row[1]!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise PeakrouteError(f"{path}:{n}: contacts must be >= 0")
        contacts.append(value)
    for n, (a, b) in enumerate(itertools.pairwise(starts), start=3):
        if b <= a:
            raise PeakrouteError(f"{path}:{n}: interval starts must increase")
    if not interval_s:
        interval_s = int((starts[1] - starts[0]).total_seconds()) if len(starts) > 1 else 1800
    return [Interval(s, float(interval_s), c) for s, c in zip(starts, contacts, strict=True)]


def _parse_start(text: str, tz: dt.tzinfo, day: dt.date, where: str) -> dt.datetime:
    try:
        if len(text) <= 5 and ":" in text:  # HH:MM, today
            t = dt.time.fromisoformat(text.zfill(5))
            return dt.datetime.combine(day, t, tzinfo=tz)
        start = dt.datetime.fromisoformat(text)
    except ValueError:
        raise PeakrouteError(f"{where}: interval_start {text!r} is neither an ISO date-time "
                             "nor HH:MM") from None
    return start if start.tzinfo else start.replace(tzinfo=tz)


async def _from_history(args: argparse.Namespace, settings: Settings, tz: dt.tzinfo
                        ) -> tuple[list[Interval], History]:
    interval_s = (args.interval_min or 30) * 60
    end_ms = int(time.time() * 1000) // (interval_s * 1000) * (interval_s * 1000)
    start_ms = end_ms - int(args.hours * 3600 * 1000)
    client = redis_client(settings, socket_timeout=10)
    try:
        history = await read_history(client, start_ms, end_ms, args.domain)
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise PeakrouteError(f"cannot read the history in Redis ({exc}); start the stack or set "
                             "PEAKROUTE_REDIS_URL, or plan from a --forecast CSV") from None
    finally:
        await client.aclose()
    if not history.domains:
        raise PeakrouteError("no routing domain in Redis" + (f" named {args.domain}"
                                                             if args.domain else ""))
    # Buckets count the contacts that reached a queue: back to arrivals with the books'
    # containment, so that another --containment applies to the same contacts.
    kept = min(history.containment or 0.0, MAX_CONTAINMENT)
    intervals = [
        Interval(dt.datetime.fromtimestamp(ms / 1000, tz), float(interval_s),
                 counts.offered / (1 - kept) * args.scale)
        for ms, counts in per_interval(history, start_ms, end_ms, interval_s)]
    return intervals, history


async def _books_only(args: argparse.Namespace, settings: Settings
                      ) -> tuple[History | None, str]:
    """The books' containment for a CSV forecast, if Redis answers quickly."""
    client = redis_client(settings, socket_timeout=3)
    try:
        now = int(time.time() * 1000)
        return await read_history(client, now, now, args.domain), ""
    except (RedisConnectionError, RedisTimeoutError, OSError):
        return None, "Redis not reachable"
    finally:
        await client.aclose()


def _assumptions(args: argparse.Namespace, settings: Settings, history: History | None,
                 note: str) -> Assumptions:
    sources: dict[str, str] = {}

    def pick(name: str, option: float | None, default: float, source: str) -> float:
        sources[name] = "option" if option is not None else source
        return option if option is not None else default

    where = ("domain " + args.domain) if args.domain else "all domains"
    if args.containment is not None:
        containment = pick("containment", args.containment, 0.0, "")
    elif history is not None and history.containment is not None:
        containment = min(history.containment, MAX_CONTAINMENT)
        sources["containment"] = (f"history: the books' contained / arrived, {where} "
                                  f"({history.contained} / {history.arrived})")
    else:
        containment = 0.0
        sources["containment"] = ("none (" + (note or "no contact in the books yet")
                                  + "): 0; pass --containment")
    return Assumptions(
        containment=containment,
        aht_s=pick("aht_s", args.aht, settings.plan_aht_s, env_name("plan_aht_s")),
        patience_s=pick("patience_s", args.patience, settings.plan_patience_s,
                        env_name("plan_patience_s")),
        target_s=pick("target_s", args.target, settings.sla_target_s, env_name("sla_target_s")),
        objective=pick("objective", args.objective, settings.sla_objective_ratio,
                       env_name("sla_objective_ratio")),
        formula=settings.sla_formula, short_abandon_s=settings.short_abandon_s,
        concurrency=args.concurrency, shrinkage=args.shrinkage,
        max_occupancy=args.max_occupancy, max_abandonment=args.max_abandonment,
        sources=tuple(sources.items()))


# --- outputs ---------------------------------------------------------------------------------

def as_dict(a: Assumptions, rows: list[Row], what_if: ContainmentWhatIf | None
            ) -> dict[str, Any]:
    top = peak(rows)
    return {"assumptions": a.as_dict(), "intervals": [r.as_dict() for r in rows],
            "peak": top.as_dict() if top else None,
            "agents_max_c": max((r.agents_c for r in rows), default=0),
            "agents_max_a": max((r.agents_a for r in rows), default=0),
            "what_if_containment": what_if.as_dict() if what_if else None}


def _pct(v: float) -> str:
    return f"{v * 100:.1f}"


def _asa(v: float) -> str:
    if not math.isfinite(v):
        return "inf"
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


def plan_columns(rows: list[Row]) -> list[Column]:
    """The table's columns, most important first (the narrowest terminal keeps those)."""
    def col(header: str, priority: int, cells: list[str], short: str = "") -> Column:
        return Column(header, list(cells), priority, short=short or header.replace("\n", " "))

    same_day = len({r.interval.start.date() for r in rows}) == 1
    fmt = "%H:%M" if same_day else "%m-%d %H:%M"
    return [
        col("start", 100, [r.interval.start.strftime(fmt) for r in rows]),
        col("con-\ntacts", 60, [f"{r.interval.contacts:.0f}" for r in rows]),
        col("to\nhumans", 80, [f"{r.to_humans:.0f}" for r in rows]),
        col("load\nErl", 50, [f"{r.load:.1f}" for r in rows], "load (erlangs)"),
        col("C\nagents", 95, [str(r.agents_c) for r in rows], "Erlang C agents"),
        col("C\nSL%", 70, [_pct(r.erlang_c.service_level) for r in rows], "Erlang C SL"),
        col("C\nocc%", 40, [_pct(r.erlang_c.occupancy) for r in rows], "Erlang C occupancy"),
        col("C\nPw%", 30, [_pct(r.erlang_c.wait_probability) for r in rows],
            "Erlang C P(wait)"),
        col("C\nASA s", 55, [_asa(r.erlang_c.asa_s) for r in rows], "Erlang C ASA"),
        col("A\nagents", 90, [str(r.agents_a) for r in rows], "Erlang A agents"),
        col("A\nSL%", 65, [_pct(r.erlang_a.service_level) for r in rows], "Erlang A SL"),
        col("A\nocc%", 35, [_pct(r.erlang_a.occupancy) for r in rows], "Erlang A occupancy"),
        col("A\nPw%", 25, [_pct(r.erlang_a.wait_probability) for r in rows],
            "Erlang A P(wait)"),
        col("A\nASA s", 45, [_asa(r.erlang_a.asa_s) for r in rows], "Erlang A ASA"),
        col("A\naband%", 75, [_pct(r.erlang_a.abandonment) for r in rows],
            "Erlang A abandonment"),
    ]


def render(a: Assumptions, rows: list[Row], what_if: ContainmentWhatIf | None,
           width: int) -> Group:
    table, dropped = fit(plan_columns(rows), width)
    top = peak(rows)
    parts: list[Any] = [Text.assemble(
        ("peakroute plan  ", "bold"),
        f"objective {a.objective * 100:g}% within {a.target_s:g} s ({a.formula}); AHT "
        f"{a.aht_s:g} s, patience {a.patience_s:g} s, bot containment "
        f"{a.containment * 100:.1f}%"
        + (f", {a.concurrency} contacts per agent" if a.concurrency > 1 else "")
        + (f", shrinkage {a.shrinkage * 100:g}%" if a.shrinkage else "")
        + (f", occupancy <= {a.max_occupancy * 100:g}%" if a.max_occupancy < 1 else "")
        + (f", abandonment <= {a.max_abandonment * 100:g}%" if a.max_abandonment < 1 else ""))]
    parts += [Text(f"  {name}: {source}", style="dim") for name, source in a.sources]
    parts.append(table)
    if dropped:
        parts.append(Text("hidden at this width: " + ", ".join(c.short for c in dropped)
                          + " (widen the terminal or use --json)", style="dim"))
    parts.append(Text("C = Erlang C (nobody leaves), A = Erlang A (customers leave after their "
                      "patience); agents to schedule; SL = expected service level; occ = "
                      "occupancy; Pw = probability of waiting; ASA = mean wait of answered "
                      "contacts", style="dim"))
    if top is not None:
        parts.append(Text.assemble(
            ("peak ", "bold"), f"{top.interval.start:%Y-%m-%d %H:%M}: {top.to_humans:.0f} "
            f"contacts to humans ({top.rate:.2f}/s, {top.load:.1f} erlangs): ",
            (f"{top.agents_c}", "bold"), " agents by Erlang C, ", (f"{top.agents_a}", "bold"),
            " by Erlang A"))
    if what_if is not None:
        parts.append(Text.assemble(
            ("bot containment at the peak: ", "bold"),
            f"each point saves {what_if.saved_per_point_c:g} agents (Erlang C), "
            f"{what_if.saved_per_point_a:g} (Erlang A)"))
        parts.append(what_if_table(what_if, a, width))
    return Group(*parts)


def what_if_table(w: ContainmentWhatIf, a: Assumptions, width: int) -> Any:
    """One row per containment level: agents at the peak, and the change from the plan's."""
    base = next((p for p in w.points if round(p.containment * 100)
                 == round(a.containment * 100)), w.points[0])

    def delta(v: int) -> str:
        return f"{v:+d}" if v else "0"

    mark = [Text(f"{p.containment * 100:.0f}%", style="bold" if p is base else "")
            for p in w.points]
    table, _ = fit([
        Column("bot\ncontainment", list(mark), 100),
        Column("C\nagents", [str(p.agents_c) for p in w.points], 90),
        Column("C\nchange", [delta(p.agents_c - base.agents_c) for p in w.points], 80),
        Column("A\nagents", [str(p.agents_a) for p in w.points], 70),
        Column("A\nchange", [delta(p.agents_a - base.agents_a) for p in w.points], 60),
    ], width)
    return table


def plot(path: Path, rows: list[Row], a: Assumptions) -> None:
    """Agents per interval (Erlang C and A) over the contacts reaching humans."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.dates as mdates
        import matplotlib.pyplot as plt
    except ImportError:
        raise PeakrouteError(MATPLOTLIB_HINT) from None
    tz = rows[0].interval.start.tzinfo if rows else None
    starts = mdates.date2num([r.interval.start for r in rows])  # type: ignore[no-untyped-call]
    width = (rows[0].interval.length_s if rows else 0.0) / 86_400 * 0.9
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.xaxis_date(tz)
    ax.bar(starts, [r.to_humans for r in rows], width=width, align="edge", color="#c8d6e5",
           label="contacts to humans")
    ax.set_ylabel("contacts to humans per interval")
    ax2 = ax.twinx()
    edges = [*starts, starts[-1] + width / 0.9] if rows else []  # the last interval's end
    for values, colour, label in (([r.agents_c for r in rows], "#c0392b", "agents, Erlang C"),
                                  ([r.agents_a for r in rows], "#2471a3", "agents, Erlang A")):
        ax2.step(edges, [*values, *values[-1:]], where="post", color=colour, label=label)
    ax2.set_ylabel("agents to schedule")
    ax2.set_ylim(bottom=0)
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles, [str(h.get_label()) for h in handles], loc="upper left")
    ax.set_title(f"peakroute plan: {a.objective * 100:g}% within {a.target_s:g} s, AHT "
                 f"{a.aht_s:g} s, containment {a.containment * 100:.1f}%, patience "
                 f"{a.patience_s:g} s")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["add_parser", "as_dict", "plot", "read_forecast", "render", "run"]
