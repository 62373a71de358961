"""The proofs' bookkeeping (load_tests.accounting, load_tests.faults), pure: the audit log
against the counters, where a loss happened, what the workers counted during a fault."""

from __future__ import annotations

from collections import Counter

from load_tests.accounting import (
    Window,
    counters_vs_audit,
    distinct,
    double_assignments,
    state_intact,
    when,
)
from load_tests.faults import Fault, delta, parse_counts
from router.events import Decision, RoutingDecision


def decision(event_id: str, contact: str, kind: Decision, agent: str | None = None,
             offer: str | None = None) -> RoutingDecision:
    return RoutingDecision(event_id=event_id, ts_ms=1_795_500_000_000, domain="shop-1",
                           contact_id=contact, decision=kind, agent_id=agent, offer_id=offer)


def one_answered_contact() -> list[RoutingDecision]:
    return [decision("e1", "c1", Decision.QUEUED),
            decision("e2", "c1", Decision.OFFERED, "a1", "o1"),
            decision("e3", "c1", Decision.ACCEPTED, "a1", "o1"),
            decision("e4", "c1", Decision.COMPLETED, "a1")]


STATS = {"escalated": 1, "offered": 1, "answered": 1, "completed": 1, "declined": 0,
         "expired": 0, "rescinded": 0, "relaxed": 0, "abandoned": 0}


def test_counters_equal_to_the_audit_log_match_also_when_a_decision_was_sent_twice() -> None:
    log = one_answered_contact()
    assert counters_vs_audit(STATS, log) == {}
    assert counters_vs_audit(STATS, [*log, log[2]]) == {}  # re-sent: same event id
    assert len(distinct([*log, log[2]])) == 4


def test_a_counted_transition_missing_from_the_audit_log_is_a_mismatch() -> None:
    log = [d for d in one_answered_contact() if d.decision != Decision.ACCEPTED]
    assert counters_vs_audit(STATS, log) == {"answered": {"redis": 1, "audit": 0}}
    # a decision the counters never saw (published twice under two ids) is one as well
    extra = [*one_answered_contact(), decision("e9", "c1", Decision.COMPLETED, "a1")]
    assert counters_vs_audit(STATS, extra) == {"completed": {"redis": 1, "audit": 2}}


def test_escalated_counts_contacts_that_were_queued_or_offered() -> None:
    log = [*one_answered_contact(), decision("e5", "c2", Decision.ABANDONED)]
    stats = {**STATS, "abandoned": 1}
    assert counters_vs_audit(stats, log) == {}  # c2 left before routing: not escalated
    assert counters_vs_audit({**stats, "escalated": 2}, log) == {
        "escalated": {"redis": 2, "audit": 1}}


def test_a_contact_accepted_by_two_agents_is_double_assigned() -> None:
    log = [*one_answered_contact(), decision("e6", "c1", Decision.ACCEPTED, "a2", "o2")]
    assert double_assignments(log) == {"c1": {"a1", "a2"}}
    assert double_assignments(one_answered_contact()) == {}


def test_when_names_the_step_in_progress_or_the_last_one_before() -> None:
    windows = [Window("redis_oom", 10.0, 14.0), Window("redis_readonly", 20.0, 24.0)]
    assert when(5.0, windows) == "before"
    assert when(12.0, windows) == "during:redis_oom"
    assert when(17.0, windows) == "after:redis_oom"
    assert when(24.0, windows) == "during:redis_readonly"
    assert when(30.0, windows) == "after:redis_readonly"


def test_state_is_intact_only_if_every_known_contact_stayed_and_no_counter_fell() -> None:
    stats = dict.fromkeys(("arrived", "contained", "escalated", "answered", "abandoned",
                           "completed"), 5)
    before = {"c1": "done", "c2": "queued", "c3": None}
    assert state_intact(before, {"c1": "done", "c2": "answered", "c3": None}, stats, stats)
    assert not state_intact(before, {"c1": "queued", "c2": "queued"}, stats, stats)
    assert not state_intact(before, {"c1": "done", "c2": None}, stats, stats)
    assert not state_intact(before, {"c1": "done", "c2": "queued"}, stats,
                            {**stats, "answered": 4})


EXPOSITION = """\
# HELP peakroute_redis_errors_total Redis failures the worker retried.
# TYPE peakroute_redis_errors_total counter
peakroute_redis_errors_total{kind="oom"} 3.0
peakroute_redis_errors_total{kind="connection"} 1.0
# HELP peakroute_kafka_errors_total Kafka client errors the worker retried, by error class.
# TYPE peakroute_kafka_errors_total counter
peakroute_kafka_errors_total{error="KafkaTimeoutError"} 2.0
# HELP peakroute_routing_transitions_total Routing transitions applied in Redis.
# TYPE peakroute_routing_transitions_total counter
peakroute_routing_transitions_total{kind="duplicate"} 7.0
peakroute_routing_transitions_total{kind="stale"} 4.0
peakroute_routing_transitions_total{kind="offered"} 90.0
"""


def test_a_workers_exposition_gives_its_errors_by_kind() -> None:
    assert parse_counts(EXPOSITION) == Counter(
        {"oom": 3, "connection": 1, "kafka:KafkaTimeoutError": 2, "redelivered": 7})


def test_the_errors_during_a_fault_are_those_the_workers_alive_after_it_counted() -> None:
    before = {1: Counter({"oom": 3}), 2: Counter({"oom": 1, "timeout": 2})}
    # worker 2 was killed and restarted as worker 3 in between; worker 4 did not answer the
    # first reading: what it counted during the fault is unknown, its history is not counted
    after = {1: Counter({"oom": 10, "readonly": 1}), 3: Counter({"oom": 2}),
             4: Counter({"oom": 50})}
    assert delta(before, after, {3}) == Counter({"oom": 9, "readonly": 1})


def test_a_fault_bites_only_if_its_own_kind_was_counted() -> None:
    fault = Fault("redis_oom", errors=Counter({"connection": 4}))
    assert not fault.bit
    assert fault.counted() == {"connection": 4, "oom": 0}
    fault.errors["oom"] += 1
    assert fault.bit
    aof = Fault("redis_aof_restart", errors=Counter({"loading": 2}))
    assert aof.bit
