"""The SLA arithmetic against hand-computed figures: formulas, windows as sums of buckets, the
day's start in a time zone, at-risk threshold and the estimated wait."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from router.errors import SettingsError
from router.settings import Settings
from router.sla.windows import (
    FORMULAS,
    Counts,
    active_span_s,
    at_risk_before_ms,
    average_wait_s,
    estimated_wait_s,
    plan,
    service_level,
    total,
    window_counts,
)

UTC = ZoneInfo("UTC")
# 2026-11-11 00:00 UTC, the Double-11 midnight, as epoch milliseconds and minutes
MIDNIGHT_MS = int(dt.datetime(2026, 11, 11, tzinfo=dt.UTC).timestamp() * 1000)
M0 = MIDNIGHT_MS // 60_000


# A peak minute: 100 answered (80 within 30 s), 20 abandoned of whom 5 within 5 s.
PEAK = Counts(offered=125, answered=100, answered_within_target=80, abandoned=20,
              short_abandoned=5, wait_sum_ms=1_500_000, wait_max_ms=95_000)


def test_the_default_formula_leaves_short_abandons_out_of_the_denominator() -> None:
    assert service_level(PEAK, "short_abandons_excluded") == pytest.approx(80 / 115)


def test_all_abandons_count_against_the_service_level() -> None:
    assert service_level(PEAK, "all_abandons") == pytest.approx(80 / 120)


def test_answered_only_ignores_abandons() -> None:
    assert service_level(PEAK, "answered_only") == pytest.approx(80 / 100)


def test_no_contact_counted_means_no_service_level_not_zero_or_one() -> None:
    assert service_level(Counts(), "short_abandons_excluded") is None
    # only short abandons: nobody the centre could have answered
    assert service_level(Counts(abandoned=2, short_abandoned=2), "short_abandons_excluded") is None
    assert service_level(Counts(abandoned=2, short_abandoned=2), "all_abandons") == 0.0


def test_an_unknown_formula_is_refused_with_the_choices() -> None:
    with pytest.raises(SettingsError, match="short_abandons_excluded"):
        service_level(PEAK, "abandons_in")
    with pytest.raises(SettingsError, match="PEAKROUTE_SLA_FORMULA"):
        Settings.from_env({"PEAKROUTE_SLA_FORMULA": "nope", "PEAKROUTE_STATE_DIR": "/nonexistent"})
    assert set(FORMULAS) == {"short_abandons_excluded", "all_abandons", "answered_only"}


def test_buckets_add_up_and_the_max_wait_is_the_largest() -> None:
    a = Counts(offered=3, answered=2, answered_within_target=1, wait_sum_ms=40_000,
               wait_max_ms=35_000)
    b = Counts(offered=1, abandoned=1, short_abandoned=1)
    c = Counts(answered=1, answered_within_target=1, wait_sum_ms=2_000, wait_max_ms=2_000)
    s = total([a, b, c])
    assert s == Counts(offered=4, answered=3, answered_within_target=2, abandoned=1,
                       short_abandoned=1, wait_sum_ms=42_000, wait_max_ms=35_000)
    assert average_wait_s(s) == pytest.approx(14.0)
    assert average_wait_s(Counts()) is None
    assert Counts.from_hash({b"answered": b"2", b"wait_max_ms": b"7", b"other": b"9"}) == \
        Counts(answered=2, wait_max_ms=7)


def test_a_rolling_window_is_the_current_minute_and_the_ones_before_it() -> None:
    now = MIDNIGHT_MS + 10 * 60_000 + 30_000  # 00:10:30
    p = plan("5m", now, UTC)
    assert p.minutes == tuple(range(M0 + 6, M0 + 11))
    assert p.hours == ()
    assert p.span_s == 4 * 60 + 30
    assert len(plan("1h", now, UTC).minutes) == 60


def test_five_minute_window_drops_a_bucket_once_five_minutes_followed_it() -> None:
    """Minute 00:04 had a bad spell (10 answered late); at 00:08:59 it is still in the window
    (00:04 .. 00:08), at 00:09:00 it is not."""
    late = Counts(answered=10, wait_sum_ms=600_000, wait_max_ms=70_000)
    good = Counts(answered=10, answered_within_target=10, wait_sum_ms=50_000, wait_max_ms=9_000)
    minutes = {M0 + 4: late, **{M0 + m: good for m in range(5, 11)}}
    inside = window_counts(plan("5m", MIDNIGHT_MS + 8 * 60_000 + 59_000, UTC), minutes, {})
    assert service_level(inside, "short_abandons_excluded") == pytest.approx(40 / 50)
    assert inside.wait_max_ms == 70_000
    after = window_counts(plan("5m", MIDNIGHT_MS + 9 * 60_000, UTC), minutes, {})
    assert service_level(after, "short_abandons_excluded") == 1.0
    assert after.wait_max_ms == 9_000


def test_today_reads_whole_hours_from_hour_buckets_and_the_rest_from_minutes() -> None:
    now = MIDNIGHT_MS + (2 * 60 + 17) * 60_000 + 5_000  # 02:17:05 UTC
    p = plan("today", now, UTC)
    assert p.hours == (M0 // 60, M0 // 60 + 1)  # 00:00-00:59 and 01:00-01:59
    assert p.minutes == tuple(range(M0 + 120, M0 + 138))  # 02:00 .. 02:17
    hours = {M0 // 60: Counts(answered=50, answered_within_target=40),
             M0 // 60 + 1: Counts(answered=30, answered_within_target=30, abandoned=10)}
    minutes = {M0 + 130: Counts(answered=20, answered_within_target=10),
               M0 - 1: Counts(answered=999)}  # yesterday's last minute: not today
    c = window_counts(p, minutes, hours)
    assert (c.answered, c.answered_within_target, c.abandoned) == (100, 80, 10)
    assert service_level(c, "short_abandons_excluded") == pytest.approx(80 / 110)


def test_today_starts_at_local_midnight_in_the_configured_time_zone() -> None:
    """16:30 UTC on 10 Nov is 00:30 on 11 Nov in Shanghai: today is the last 30 minutes."""
    shanghai = ZoneInfo("Asia/Shanghai")
    now = MIDNIGHT_MS - 7 * 3_600_000 - 30 * 60_000  # 10 Nov 16:30 UTC
    p = plan("today", now, shanghai)
    assert p.hours == ()
    assert p.minutes == tuple(range(now // 60_000 - 30, now // 60_000 + 1))
    # Kolkata (+05:30): midnight falls in the middle of a UTC hour; that hour is read by minute.
    kolkata = plan("today", MIDNIGHT_MS + 3 * 3_600_000, ZoneInfo("Asia/Kolkata"))
    covered = len(kolkata.minutes) + 60 * len(kolkata.hours)
    assert covered == (8 * 60 + 30) + 1  # 00:00 to 08:30 local, inclusive of the current minute
    assert len(set(kolkata.minutes)) == len(kolkata.minutes)


def test_an_unknown_time_zone_is_refused_naming_the_setting() -> None:
    with pytest.raises(SettingsError, match="PEAKROUTE_SLA_TIMEZONE"):
        Settings.from_env({"PEAKROUTE_SLA_TIMEZONE": "Mars/Olympus",
                           "PEAKROUTE_STATE_DIR": "/nonexistent"})


def test_at_risk_means_waited_past_two_thirds_of_the_target() -> None:
    now = 1_000_000
    assert at_risk_before_ms(now, 30_000, 2 / 3) == now - 20_000
    assert at_risk_before_ms(now, 10_000, 2 / 3) == now - 6_666  # VIP target 10 s


def test_estimated_wait_is_zero_with_a_free_agent_and_nobody_in_line() -> None:
    assert estimated_wait_s(0, True, 0, 300.0) == 0.0


def test_estimated_wait_serves_the_line_at_the_recent_answer_rate() -> None:
    # 4 in line, 60 answered in 300 s (one each 5 s): the fifth waits 25 s
    assert estimated_wait_s(4, False, 60, 300.0) == pytest.approx(25.0)
    assert estimated_wait_s(4, True, 60, 300.0) == pytest.approx(25.0)  # others are ahead
    assert estimated_wait_s(0, False, 60, 300.0) == pytest.approx(5.0)


def test_estimated_wait_is_unknown_when_nothing_was_answered_lately() -> None:
    assert estimated_wait_s(3, False, 0, 300.0) is None


def test_the_answer_rate_counts_only_the_time_since_the_window_first_saw_a_contact() -> None:
    now = MIDNIGHT_MS + 10 * 60_000 + 30_000  # 00:10:30; the 5-minute window starts 00:06
    p = plan("5m", now, UTC)
    assert active_span_s(p, {}, now) == 270.0
    started = {M0 + 9: Counts(offered=3)}  # the first contact came at 00:09
    assert active_span_s(p, started, now) == 90.0
    old = {M0 + 6: Counts(answered=1), M0 + 9: Counts(offered=3)}
    assert active_span_s(p, old, now) == 270.0
