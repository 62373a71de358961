"""Pure SLA arithmetic: which minute and hour buckets make a window, how buckets add up, the
service-level formulas, and the estimated wait of a new contact. No I/O (docs/METRICS.md)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from router.errors import SettingsError

MINUTE_MS = 60_000
WINDOWS: dict[str, int] = {"5m": 5, "15m": 15, "1h": 60}  # rolling windows, in minute buckets
TODAY = "today"
WINDOW_NAMES = (*WINDOWS, TODAY)

# The service level: answered within target over a denominator that the formula chooses.
FORMULAS: dict[str, str] = {
    "short_abandons_excluded":
        "answered_within_target / (answered + abandoned - short_abandoned)",
    "all_abandons": "answered_within_target / (answered + abandoned)",
    "answered_only": "answered_within_target / answered",
}


def timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(f"PEAKROUTE_SLA_TIMEZONE={name!r} is not a known time zone; use an "
                            "IANA name such as UTC or Asia/Shanghai") from None


@dataclass(frozen=True, slots=True)
class Counts:
    """What one bucket (or a sum of buckets) holds for a queue. Waits are of answered contacts."""

    offered: int = 0  # contacts that entered the queue (escalated to it)
    answered: int = 0
    answered_within_target: int = 0
    abandoned: int = 0  # left before an agent accepted
    short_abandoned: int = 0  # of those, left within PEAKROUTE_SHORT_ABANDON_S
    wait_sum_ms: int = 0
    wait_max_ms: int = 0

    @classmethod
    def from_hash(cls, raw: Mapping[bytes | str, bytes | str]) -> Counts:
        """A bucket hash as Redis returns it (missing fields are 0)."""
        known = {f.name for f in fields(cls)}
        values = {}
        for key, value in raw.items():
            name = key.decode() if isinstance(key, bytes) else key
            if name in known:
                values[name] = int(value)
        return cls(**values)

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            offered=self.offered + other.offered, answered=self.answered + other.answered,
            answered_within_target=self.answered_within_target + other.answered_within_target,
            abandoned=self.abandoned + other.abandoned,
            short_abandoned=self.short_abandoned + other.short_abandoned,
            wait_sum_ms=self.wait_sum_ms + other.wait_sum_ms,
            wait_max_ms=max(self.wait_max_ms, other.wait_max_ms))


def total(buckets: Iterable[Counts]) -> Counts:
    out = Counts()
    for bucket in buckets:
        out = out + bucket
    return out


def service_level(c: Counts, formula: str) -> float | None:
    """The share answered within target under ``formula``; None when nothing counts yet."""
    if formula == "short_abandons_excluded":
        denominator = c.answered + c.abandoned - c.short_abandoned
    elif formula == "all_abandons":
        denominator = c.answered + c.abandoned
    elif formula == "answered_only":
        denominator = c.answered
    else:
        raise SettingsError(f"unknown SLA formula {formula!r}; use " + ", ".join(FORMULAS))
    return c.answered_within_target / denominator if denominator > 0 else None


def average_wait_s(c: Counts) -> float | None:
    """Average speed of answer over the answered contacts."""
    return c.wait_sum_ms / c.answered / 1000 if c.answered else None


def epoch_minute(now_ms: int) -> int:
    return now_ms // MINUTE_MS


@dataclass(frozen=True, slots=True)
class WindowPlan:
    """The buckets that make one window: epoch minutes and epoch hours (hour h holds minutes
    60h .. 60h+59), and how many seconds of time the window spans up to now."""

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    span_s: float


def day_start_minute(now_ms: int, tz: dt.tzinfo) -> int:
    """The epoch minute at which today began in ``tz``."""
    local = dt.datetime.fromtimestamp(now_ms / 1000, tz)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return int(midnight.timestamp()) // 60


def plan(window: str, now_ms: int, tz: dt.tzinfo) -> WindowPlan:
    """A rolling window of N minutes is the current minute's bucket and the N - 1 before it.
    Today is every minute since local midnight, read as whole hour buckets where an hour lies
    entirely inside it (and before the current minute) and as minute buckets elsewhere."""
    now_min = epoch_minute(now_ms)
    into_minute_s = (now_ms - now_min * MINUTE_MS) / 1000
    if window in WINDOWS:
        n = WINDOWS[window]
        return WindowPlan(tuple(range(now_min - n + 1, now_min + 1)), (),
                          (n - 1) * 60 + into_minute_s)
    if window != TODAY:
        raise ValueError(f"unknown window {window!r}; use one of {', '.join(WINDOW_NAMES)}")
    start = day_start_minute(now_ms, tz)
    hours = tuple(h for h in range(-(-start // 60), now_min // 60) if (h + 1) * 60 - 1 < now_min)
    covered = {m for h in hours for m in range(h * 60, h * 60 + 60)}
    minutes = tuple(m for m in range(start, now_min + 1) if m not in covered)
    return WindowPlan(minutes, hours, (now_min - start) * 60 + into_minute_s)


def unroll(p: WindowPlan, hours: Iterable[int]) -> WindowPlan:
    """The same window with these of its hours read as their 60 minute buckets instead."""
    drop = set(hours) & set(p.hours)
    if not drop:
        return p
    minutes = sorted({*p.minutes, *(m for h in drop for m in range(h * 60, h * 60 + 60))})
    return WindowPlan(tuple(minutes), tuple(h for h in p.hours if h not in drop), p.span_s)


def window_counts(p: WindowPlan, minutes: Mapping[int, Counts],
                  hours: Mapping[int, Counts]) -> Counts:
    """Sum a window's buckets (absent buckets are empty)."""
    empty = Counts()
    return total([*(minutes.get(m, empty) for m in p.minutes),
                  *(hours.get(h, empty) for h in p.hours)])


def active_span_s(p: WindowPlan, minutes: Mapping[int, Counts], now_ms: int) -> float:
    """The seconds of a rolling window since its first minute with any count: a queue that
    opened (or a system that started) two minutes ago has two minutes of rate, not five."""
    first = next((m for m in p.minutes if minutes.get(m, Counts()) != Counts()), None)
    if first is None:
        return p.span_s
    return min(p.span_s, (now_ms - first * MINUTE_MS) / 1000)


def at_risk_before_ms(now_ms: int, target_ms: int, share: float) -> int:
    """Contacts escalated before this time have waited past ``share`` of their target."""
    return now_ms - int(target_ms * share)


def estimated_wait_s(queued: int, free_agent: bool, answered_recently: int,
                     span_s: float) -> float | None:
    """How long a contact entering the queue now should expect to wait.

    Nobody in line and a ready agent with room serving the queue at its first ring: 0 (it is
    offered at once). Otherwise the contacts in line ahead of it plus itself, served at the
    queue's recent answer rate (answered in the last 5 minutes over the time that window
    spans since its first minute with any count, ``active_span_s``): (queued + 1) / rate.
    No answers in that window: unknown (None): nothing says how fast the queue moves.
    """
    if queued == 0 and free_agent:
        return 0.0
    if answered_recently <= 0 or span_s <= 0:
        return None
    return (queued + 1) / (answered_recently / span_s)
