"""The plan of a night (pure): per forecast interval, the contacts that reach humans after the
bot, the offered load, and the agents needed by Erlang C and by Erlang A with the figures they
achieve; and what each point of bot containment is worth at the peak."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

from router.plan.erlang import Figures, Goal, staff_erlang_a, staff_erlang_c


@dataclass(frozen=True, slots=True)
class Interval:
    start: dt.datetime
    length_s: float
    contacts: float  # contacts arriving (before the bot)


@dataclass(frozen=True, slots=True)
class Assumptions:
    """What the plan assumes; ``sources`` says where each figure came from (option, settings,
    history)."""

    containment: float  # share of contacts the bot closes
    aht_s: float  # handle time of one contact
    patience_s: float  # customers' mean patience for a person (Erlang A)
    target_s: float
    objective: float
    formula: str = "short_abandons_excluded"
    short_abandon_s: float = 0.0
    concurrency: int = 1  # contacts an agent handles at once (each counts as a server)
    shrinkage: float = 0.0  # share of paid time agents are not available (breaks, training)
    max_occupancy: float = 1.0
    max_abandonment: float = 1.0  # Erlang A: share of contacts allowed to leave
    sources: tuple[tuple[str, str], ...] = ()

    def goal(self) -> Goal:
        return Goal(self.objective, self.formula, self.max_occupancy,
                    max_abandonment=self.max_abandonment)

    def as_dict(self) -> dict[str, Any]:
        return {"containment": self.containment, "aht_s": self.aht_s,
                "patience_s": self.patience_s, "target_s": self.target_s,
                "objective": self.objective, "formula": self.formula,
                "short_abandon_s": self.short_abandon_s, "concurrency": self.concurrency,
                "shrinkage": self.shrinkage, "max_occupancy": self.max_occupancy,
                "max_abandonment": self.max_abandonment, "sources": dict(self.sources)}


@dataclass(frozen=True, slots=True)
class Row:
    interval: Interval
    to_humans: float  # contacts escalated to humans in the interval
    rate: float  # per second
    load: float  # erlangs: rate x AHT
    erlang_c: Figures  # per server (a chat slot when concurrency > 1)
    erlang_a: Figures
    agents_c: int  # agents to schedule: servers / concurrency, grossed up for shrinkage
    agents_a: int

    def as_dict(self) -> dict[str, Any]:
        return {"start": self.interval.start.isoformat(), "length_s": self.interval.length_s,
                "contacts": self.interval.contacts, "to_humans": self.to_humans,
                "rate_per_s": self.rate, "load_erlangs": self.load,
                "erlang_c": {**self.erlang_c.as_dict(), "agents": self.agents_c,
                             "servers": self.erlang_c.agents},
                "erlang_a": {**self.erlang_a.as_dict(), "agents": self.agents_a,
                             "servers": self.erlang_a.agents}}


def scheduled(servers: int, a: Assumptions) -> int:
    """Agents to schedule for ``servers`` busy-able slots."""
    agents = math.ceil(servers / a.concurrency)
    return math.ceil(agents / (1 - a.shrinkage) - 1e-9)


def plan_interval(interval: Interval, a: Assumptions) -> Row:
    to_humans = interval.contacts * (1 - a.containment)
    rate = to_humans / interval.length_s
    goal = a.goal()
    c = staff_erlang_c(rate, a.aht_s, a.target_s, goal)
    ea = staff_erlang_a(rate, a.aht_s, a.patience_s, a.target_s, goal, a.short_abandon_s)
    return Row(interval, to_humans, rate, rate * a.aht_s, c, ea, scheduled(c.agents, a),
               scheduled(ea.agents, a))


def plan(intervals: list[Interval], a: Assumptions) -> list[Row]:
    return [plan_interval(i, a) for i in intervals]


def peak(rows: list[Row]) -> Row | None:
    """The interval with the most contacts reaching humans per second."""
    return max(rows, key=lambda r: r.rate, default=None)


@dataclass(frozen=True, slots=True)
class WhatIf:
    containment: float
    agents_c: int
    agents_a: int


@dataclass(frozen=True, slots=True)
class ContainmentWhatIf:
    """Agents needed at the peak as bot containment moves around the assumed one, and what one
    point (1 % of contacts) of containment saves there, on average over the range."""

    points: list[WhatIf]
    saved_per_point_c: float
    saved_per_point_a: float

    def as_dict(self) -> dict[str, Any]:
        return {"points": [{"containment": round(p.containment, 4), "agents_c": p.agents_c,
                            "agents_a": p.agents_a} for p in self.points],
                "agents_saved_per_point_c": self.saved_per_point_c,
                "agents_saved_per_point_a": self.saved_per_point_a}


def containment_what_if(interval: Interval, a: Assumptions, spread_points: int = 5
                        ) -> ContainmentWhatIf:
    """Containment from ``spread_points`` points below the assumption to as many above (within
    0 % .. 99 %), one point apart."""
    base = round(a.containment * 100)
    levels = [p for p in range(base - spread_points, base + spread_points + 1) if 0 <= p <= 99]
    points = []
    for p in levels:
        row = plan_interval(interval, dataclasses.replace(a, containment=p / 100))
        points.append(WhatIf(p / 100, row.agents_c, row.agents_a))
    span = (levels[-1] - levels[0]) if len(levels) > 1 else 0

    def saved(first: int, last: int) -> float:
        return round((first - last) / span, 2) if span else 0.0

    return ContainmentWhatIf(points, saved(points[0].agents_c, points[-1].agents_c),
                             saved(points[0].agents_a, points[-1].agents_a))
