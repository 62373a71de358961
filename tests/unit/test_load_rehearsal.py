"""The rehearsal's pure parts: arrival profiles, the ledger, the report's figures and plots,
and the time-scaled routing policy."""

from __future__ import annotations

import itertools
import random
from importlib import resources
from pathlib import Path

import pytest

from load_tests import report as rpt
from load_tests.peak import Options, scaled_policy
from load_tests.sim import (
    ContactTimes,
    Ledger,
    arrival_times,
    percentile,
    rate_factor,
)
from router.events import BotAction, BotReplied, ContactWaitUpdated, Decision, RoutingDecision
from router.routing.config import DEFAULT_POLICY, parse_policy


def test_steady_arrivals_are_poisson_at_the_rate() -> None:
    times = arrival_times(50.0, 200.0, random.Random(1))
    assert times == sorted(times)
    assert all(0 <= t < 200 for t in times)
    assert abs(len(times) - 10_000) < 4 * 100  # 4 standard deviations of a Poisson count
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert sum(gaps) / len(gaps) == pytest.approx(0.02, rel=0.05)


def test_double11_spikes_tenfold_within_seconds_then_decays() -> None:
    d = 100.0
    assert rate_factor("double11", 10, d) == 1.0
    assert rate_factor("double11", 30 + 3, d) == pytest.approx(10.0)
    later = [rate_factor("double11", t, d) for t in (40, 60, 80, 99)]
    assert later == sorted(later, reverse=True)
    assert 1.0 < later[-1] < 3.0
    times = arrival_times(20.0, d, random.Random(2), "double11")
    before = sum(t < 30 for t in times) / 30
    spike = sum(33 <= t < 36 for t in times) / 3
    assert 15 < before < 25
    assert spike > 6 * before


def test_ramp_rises_to_the_rate() -> None:
    assert rate_factor("ramp", 0, 100) == pytest.approx(0.1)
    assert rate_factor("ramp", 75, 100) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown profile"):
        rate_factor("flat", 0, 1)


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.99) == 0.0
    assert percentile(list(range(1, 101)), 0.99) == 99
    assert percentile([5.0], 0.5) == 5.0


def decision(contact: str, kind: Decision, ts: int, waited: int = 0,
             within: bool = False) -> RoutingDecision:
    return RoutingDecision(event_id=f"{contact}-{kind}", ts_ms=ts, domain="d", contact_id=contact,
                           decision=kind, agent_id="a1", waited_ms=waited,
                           within_target=within, queue="refunds")


def test_the_ledger_follows_a_contact_from_arrival_to_completion() -> None:
    ledger = Ledger()
    ledger.published("c1", 1_000)
    ledger.observe(BotReplied(event_id="r", ts_ms=1_050, contact_id="c1", domain="d", text="t",
                              intent="refund", action=BotAction.ESCALATED), 1_060)
    assert ledger.escalations == ["c1"]
    assert ledger.open_count() == 1
    ledger.observe(decision("c1", Decision.QUEUED, 1_070), 1_075)
    ledger.observe(decision("c1", Decision.OFFERED, 1_500), 1_505)
    ledger.observe(decision("c1", Decision.ACCEPTED, 1_700, waited=650, within=True), 1_705)
    ledger.observe(decision("c1", Decision.COMPLETED, 9_000), 9_005)
    ledger.observe(decision("someone-else", Decision.QUEUED, 9_000), 9_005)
    c = ledger.contacts["c1"]
    assert (c.bot_seen_ms, c.queued_ms, c.offered_ms, c.answered_ms, c.completed_ms) == (
        1_060, 1_070, 1_500, 1_700, 9_000)
    assert c.escalated_ms == 1_050
    assert c.waited_ms == 650
    assert c.within_target
    assert c.queue == "refunds"
    assert ledger.open_count() == 0
    assert ledger.other_decisions == 1


def contact(arrived: int, *, answered: int = 0, waited: int = 0, within: bool = False,
            abandoned: int = 0, abandon_waited: int = 0, queue: str = "q") -> ContactTimes:
    c = ContactTimes(arrived_ms=arrived, bot_ms=arrived + 50, bot_seen_ms=arrived + 60,
                     bot_action="escalated", escalated_ms=arrived + 50, queue=queue,
                     queued_ms=arrived + 70)
    if answered:
        c.offered_ms, c.answered_ms, c.agent_id = answered - 10, answered, "a1"
        c.waited_ms, c.within_target, c.completed_ms = waited, within, answered + 5_000
    if abandoned:
        c.abandoned_ms, c.abandon_waited_ms = abandoned, abandon_waited
    return c


def test_service_level_leaves_out_short_abandons() -> None:
    cs = [contact(0, answered=1_000, waited=950, within=True),
          contact(0, answered=40_000, waited=39_950),
          contact(0, abandoned=2_000, abandon_waited=1_950),  # short: under 5 s
          contact(0, abandoned=20_000, abandon_waited=19_950)]
    fig = rpt.service_level(cs, short_abandon_ms=5_000)
    assert fig["service_level"] == pytest.approx(1 / 3, abs=1e-4)  # 1 / (2 + 2 - 1)
    assert fig["abandonment_rate"] == 0.5
    assert fig["short_abandoned"] == 1
    assert fig["asa_s"] == pytest.approx(20.45, abs=0.01)


def test_waiting_and_busy_series_count_open_contacts_and_busy_agents() -> None:
    cs = [contact(0, answered=2_000, waited=1_950), contact(1_000, abandoned=3_000)]
    _ts, depth, oldest = rpt.waiting_series(cs, 0, 4_000, 1_000)
    assert depth == [0, 1, 1, 0, 0]
    assert oldest[2] == pytest.approx(0.95)
    _, agents, held = rpt.busy_series(cs, 0, 4_000, 1_000)
    assert agents == [0, 0, 1, 1, 1]
    assert held == [0, 0, 1, 1, 1]


def test_the_report_has_its_figures_and_plots(tmp_path: Path) -> None:
    contacts = {f"c{i}": contact(i * 100, answered=i * 100 + 500, waited=400, within=i % 4 != 0,
                                 queue="refunds" if i % 2 else "orders") for i in range(60)}
    contacts["x"] = ContactTimes(arrived_ms=10, bot_ms=60, bot_seen_ms=70, bot_action="answered")
    grading = rpt.Grading(short_abandon_ms=500)
    report = rpt.summarise(contacts, grading, start_ms=0, publish_s=6.0, malformed=1,
                           malformed_deadlettered=1, books={"contained": 1})
    assert report["totals"]["published"] == 62
    assert report["totals"]["contained"] == 1
    assert report["service_level"]["per_queue"]["orders"]["service_level"] == pytest.approx(
        15 / 30, abs=1e-4)
    assert report["bot_containment"] == pytest.approx(1 / 61, abs=1e-4)
    assert report["latency_ms"]["arrival_to_answer"]["p50"] == 500
    names = rpt.plot(tmp_path, contacts, grading, start_ms=0, end_ms=12_000,
                     publish_end_ms=6_000, slots=30, agents=10, title="t")
    assert sorted(names) == sorted(rpt.PLOTS)
    for name in names:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_scaled_policy_shortens_every_duration_and_still_loads() -> None:
    shipped = (resources.files("router.routing") / DEFAULT_POLICY).read_text()
    text = scaled_policy(shipped, 0.1)
    policy = parse_policy(text, "<scaled>", {"service_target_s": 3.0, "offer_timeout_s": 2.0})
    security = policy.for_domain("any").queues["security"]
    assert security.normal.target_s == pytest.approx(4.5)
    assert security.vip.target_s == pytest.approx(1.0)
    assert [r.after_s for r in security.rings[1:]] == [pytest.approx(1.5)]
    # Targets never go under the policy's minimum of 1 s.
    tiny = parse_policy(scaled_policy(shipped, 0.01), "<tiny>",
                        {"service_target_s": 1.0, "offer_timeout_s": 1.0})
    assert tiny.for_domain("any").queues["orders"].vip.target_s == 1.0


def test_default_staffing_follows_the_peak() -> None:
    steady = Options(profile="steady", duration_s=60, out=Path("x"), rate=100)
    peak = Options(profile="double11", duration_s=60, out=Path("x"), rate=100)
    assert peak.staffed_agents() > 5 * steady.staffed_agents()
    assert Options(profile="steady", duration_s=1, out=Path("x"), agents=7).staffed_agents() == 7


def test_several_domains_share_the_staffing_by_their_weights() -> None:
    one = Options(profile="steady", duration_s=60, out=Path("x"), agents=30)
    assert (one.domain_names, one.agents_per_domain()) == (["shop-1"], [30])
    three = Options(profile="steady", duration_s=60, out=Path("x"), agents=30, domains=3,
                    domain_staffing=(1.3, 0.9, 0.55))
    assert three.domain_names == ["shop-1", "shop-2", "shop-3"]
    assert three.agents_per_domain() == [13, 9, 6]  # 10 each, times the weights
    assert Options(profile="steady", duration_s=60, out=Path("x"), agents=2,
                   domains=3).agents_per_domain() == [1, 1, 1]  # at least one each


def test_estimated_wait_errors_are_against_the_wait_after_the_notice_beside_naive() -> None:
    """The ledger keeps the first wait notice; the report compares it with the answer time
    and the naive estimate (position x mean handle time / agents serving the lane)."""
    ledger = Ledger()
    for i, (told_s, answered_after_s) in enumerate([(10, 12), (20, 20), (40, 30)]):
        cid = f"c{i}"
        ledger.published(cid, 1_000)
        ledger.observe(ContactWaitUpdated(
            event_id=f"w{i}", ts_ms=2_000, contact_id=cid, domain="d", position=i + 1,
            estimated_wait_s=told_s, queue="q", lane="q.zh"), 2_000)
        ledger.observe(ContactWaitUpdated(  # a later notice does not replace the first
            event_id=f"w{i}b", ts_ms=5_000, contact_id=cid, domain="d", position=1,
            estimated_wait_s=0, queue="q", lane="q.zh"), 5_000)
        ledger.observe(RoutingDecision(
            event_id=f"a{i}", ts_ms=2_000 + answered_after_s * 1000, domain="d",
            contact_id=cid, decision=Decision.ACCEPTED, agent_id="a", waited_ms=1), 0)
    ledger.published("never-queued", 1_000)
    figures = rpt.wait_estimates(ledger.contacts, handle_mean_s=60.0, serving={"d/q.zh": 4})
    assert figures["ewt_contacts"] == 3
    assert (figures["ewt_error_p50_s"], figures["ewt_error_p90_s"]) == (2.0, 10.0)
    # naive: 15, 30, 45 s against 12, 20, 30 s
    assert (figures["naive_ewt_error_p50_s"], figures["naive_ewt_error_p90_s"]) == (10.0, 15.0)
