"""The SLA bucket layout (router/sla/buckets.py): packed counts per queue, the earlier
per-count fields still read beside them, and which hours the timer has rolled up."""

from __future__ import annotations

from router.sla import buckets
from router.sla.windows import Counts, WindowPlan, unroll


def test_a_queue_s_counts_pack_into_one_value_and_back() -> None:
    c = Counts(offered=7, answered=5, answered_within_target=4, abandoned=2, short_abandoned=1,
               wait_sum_ms=123_456, wait_max_ms=40_000)
    assert buckets.unpack(buckets.pack(c)) == c
    assert buckets.per_queue({b"q1": buckets.pack(c), buckets.ROLLED.encode(): b"99"}) == {
        "q1": c}


def test_a_bucket_with_both_layouts_adds_them_up_and_keeps_the_larger_maximum() -> None:
    new = Counts(offered=3, answered=2, wait_sum_ms=10_000, wait_max_ms=6_000)
    raw = {b"q1": buckets.pack(new), b"q1|offered": b"4", b"q1|wait_max_ms": b"9000",
           b"q2|abandoned": b"1"}
    assert buckets.per_queue(raw) == {
        "q1": Counts(offered=7, answered=2, wait_sum_ms=10_000, wait_max_ms=9_000),
        "q2": Counts(abandoned=1)}


def test_an_hour_is_complete_once_its_last_minute_was_rolled_and_not_before() -> None:
    hour = 500_000
    assert buckets.complete({buckets.ROLLED: str(hour * 60 + 59)}, hour)
    assert not buckets.complete({buckets.ROLLED.encode(): str(hour * 60 + 58).encode()}, hour)
    assert not buckets.complete({}, hour)
    last = hour * 60 + 59
    assert buckets.roll_minute((last + buckets.ROLL_LAG_MINUTES) * 60_000) == last
    assert not buckets.rolled_by(hour, last + buckets.ROLL_LAG_MINUTES - 1)
    assert buckets.rolled_by(hour, last + buckets.ROLL_LAG_MINUTES)


def test_an_unrolled_hour_is_read_as_its_minutes() -> None:
    p = WindowPlan(minutes=(180, 181), hours=(1, 2), span_s=0.0)
    q = unroll(p, [1, 7])
    assert q.hours == (2,)
    assert q.minutes == (*range(60, 120), 180, 181)
    assert unroll(p, []) is p
