"""The Erlang C formulas and the ideal FIFO M/M/N replay of load_tests.erlang (pure)."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from load_tests.erlang import (
    erlang_c,
    erlang_c_asa,
    erlang_c_service_level,
    erlang_policy_text,
    figures,
    mmn_fifo_waits,
    per_minute,
    replicate,
)
from load_tests.sim import arrival_times
from router.routing.config import parse_policy


def test_erlang_c_of_one_agent_is_its_occupancy() -> None:
    assert erlang_c(1, 0.5) == pytest.approx(0.5)
    # M/M/1: mean wait in queue rho / (mu - lambda) = 0.5 / 0.5 with AHT 1 s
    assert erlang_c_asa(1, 0.5, 1.0) == pytest.approx(1.0)


def test_erlang_c_of_two_agents_matches_the_closed_form() -> None:
    # A = 1 erlang on 2 agents: C = (A^2/2! * 2/(2-1)) / (1 + A + A^2/2! * 2) = 1/3
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c_service_level(2, 1.0, 1.0, 0.0) == pytest.approx(2 / 3)
    assert erlang_c_service_level(2, 1.0, 1.0, 2.0) == pytest.approx(1 - math.exp(-2) / 3)


def test_a_textbook_call_centre() -> None:
    # 100 calls per 30 min of 180 s on 11 agents: A = 10 erlangs, C = 0.6821;
    # SL(20 s) = 1 - C exp(-(11 - 10) 20 / 180); ASA = C 180 / (11 - 10)
    rate = 100 / 1800
    assert erlang_c(11, rate * 180) == pytest.approx(0.6821, abs=1e-4)
    assert erlang_c_service_level(11, rate, 180, 20) == pytest.approx(
        1 - 0.6821 * math.exp(-20 / 180), abs=1e-4)
    assert erlang_c_asa(11, rate, 180) == pytest.approx(0.6821 * 180, abs=0.02)


def test_an_overloaded_queue_has_no_service_level() -> None:
    assert erlang_c(10, 12.0) == 1.0
    assert erlang_c_service_level(10, 12.0, 1.0, 5.0) == 0.0
    assert math.isinf(erlang_c_asa(10, 12.0, 1.0))


def test_fifo_replay_waits_for_the_first_free_agent() -> None:
    assert mmn_fifo_waits([0, 1, 2], [2, 2, 2], 1) == [0, 1, 2]
    assert mmn_fifo_waits([0, 0, 0, 1], [3, 1, 5, 1], 2) == [0, 0, 1, 2]


def test_fifo_replay_agrees_with_erlang_c_over_a_long_run() -> None:
    rng = random.Random(5)
    rate, aht, agents, target = 9.0, 1.0, 10, 0.2
    times = arrival_times(rate, 20_000, rng)
    handles = [rng.expovariate(1 / aht) for _ in times]
    waits = mmn_fifo_waits(times, handles, agents)[1000:]
    got = figures(waits, target)
    assert got.service_level == pytest.approx(
        erlang_c_service_level(agents, rate, aht, target), abs=0.02)
    assert got.asa_s == pytest.approx(erlang_c_asa(agents, rate, aht), rel=0.1)


def test_replications_spread_more_for_shorter_runs() -> None:
    short = replicate(9.0, 1.0, 10, 0.5, 60, 6, 100, seed=1)
    long = replicate(9.0, 1.0, 10, 0.5, 600, 60, 100, seed=1)
    assert statistics.stdev(r.service_level for r in short) > statistics.stdev(
        r.service_level for r in long)


def test_the_erlang_policy_is_one_fifo_queue_of_capacity_one() -> None:
    policy = parse_policy(erlang_policy_text(2.0, 60.0), "<erlang>")
    domain = policy.for_domain("erlang")
    assert list(domain.queues) == ["erlang"]
    assert domain.capacity["chat"] == 1


def test_per_minute_puts_each_contact_and_probe_in_its_minute_of_arrival() -> None:
    origin = 1_000_000
    arrived = [origin + 61_000, origin + 70_000, origin + 125_000]
    rows = per_minute(arrived, [10.0, 80.0, 5.0], [origin + 130_000],
                      [(origin + 65_000, 3), (origin + 66_000, 40), (origin + 121_000, 7)],
                      origin, from_s=60.0)
    assert [(r["minute"], r["contacts"], r["extra_wait_max_ms"], r["unanswered"],
             r["broker_probes"], r["broker_max_ms"]) for r in rows] == [
        (1, 2, 80.0, 0, 2, 40), (2, 1, 5.0, 1, 1, 7)]
