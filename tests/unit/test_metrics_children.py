"""router.metrics: labels() keeps its children, and they count where prometheus-client's own
would (the same series, whichever way the labels are given)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from router.decode import Reason
from router.metrics import Counter, Histogram


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_a_child_is_kept_and_counts_once_per_call() -> None:
    reg = CollectorRegistry()
    c = Counter("t_events_total", "t", ["stage", "reason"], registry=reg)
    assert c.labels("bot", Reason.EMPTY) is c.labels("bot", Reason.EMPTY)
    c.labels("bot", Reason.EMPTY).inc()
    c.labels("bot", "empty").inc()  # a StrEnum and its value are one series
    c.labels(stage="bot", reason="empty").inc()
    assert value(reg, "t_events_total", stage="bot", reason="empty") == 3


def test_remove_and_clear_forget_the_kept_children() -> None:
    reg = CollectorRegistry()
    c = Counter("t_removed_total", "t", ["stage"], registry=reg)
    c.labels("bot").inc(5)
    c.remove("bot")
    c.labels("bot").inc()
    assert value(reg, "t_removed_total", stage="bot") == 1
    c.clear()
    c.labels("bot").inc(2)
    assert value(reg, "t_removed_total", stage="bot") == 2


def test_histogram_children_are_kept_too() -> None:
    reg = CollectorRegistry()
    h = Histogram("t_seconds", "t", ["stage"], buckets=(1, 2), registry=reg)
    h.labels("bot").observe(1.5)
    h.labels("bot").observe(0.5)
    assert value(reg, "t_seconds_count", stage="bot") == 2
    assert value(reg, "t_seconds_bucket", stage="bot", le="1.0") == 1
