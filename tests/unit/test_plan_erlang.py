"""router/plan/erlang.py against independent implementations: Erlang C against pyworkforce
(service level, probability of waiting, the staffing itself) and erlanglib (its own
Decimal-factorial Erlang C and its ASA), Erlang A against the birth-death chain with
abandonment solved numerically here (generator matrix, then the tagged customer's absorbing
chain by matrix exponential)."""

from __future__ import annotations

import math

import erlanglib
import numpy as np
import pytest
import scipy.linalg
from pyworkforce.queuing import ErlangC

from router.plan.erlang import (
    Goal,
    erlang_a_figures,
    erlang_b,
    erlang_c,
    erlang_c_figures,
    staff_erlang_a,
    staff_erlang_c,
)

# contacts in the interval, interval (s), AHT (s), target (s), objective
CASES = [
    # pyworkforce's README example (and Call Centre Helper's): 100 calls in 30 minutes of 3
    # minutes each, 80 % within 20 s: 14 agents at 88.8 %, occupancy 71.4 %, P(wait) 17.4 %.
    (100, 1800, 180, 20, 0.8),
    (1200, 1800, 90, 30, 0.8),  # a chat queue in the evening: 60 erlangs
    (7200, 1800, 6, 2, 0.8),  # the rehearsal's M/M/N: 4/s, AHT 6 s, target 2 s
    (20, 1800, 300, 60, 0.9),  # a small queue, a strict objective
    (30000, 1800, 90, 30, 0.8),  # Double-11 midnight: 1,500 erlangs, thousands of agents
]


@pytest.mark.parametrize(("contacts", "interval_s", "aht_s", "target_s", "objective"), CASES)
def test_erlang_c_staffing_matches_pyworkforce_and_erlanglib(
        contacts: int, interval_s: int, aht_s: float, target_s: float, objective: float) -> None:
    rate = contacts / interval_s
    ours = staff_erlang_c(rate, aht_s, target_s, Goal(objective))
    theirs = ErlangC(transactions=contacts, aht=aht_s, asa=target_s,
                     interval=interval_s).required_positions(objective, max_occupancy=1.0)
    assert ours.agents == theirs["raw_positions"]
    assert round(ours.service_level, 3) == round(theirs["service_level"], 3)
    assert round(ours.wait_probability, 3) == round(theirs["waiting_probability"], 3)
    assert round(ours.occupancy, 3) == round(theirs["occupancy"], 3)
    load = rate * aht_s
    pw = erlanglib.erlang_c(ours.agents, load)  # a^n / n! in 1000-digit Decimals
    assert round(ours.wait_probability, 3) == round(pw, 3)
    asa = erlanglib.average_speed_of_answer(ours.agents, load, pw, aht_s)
    assert ours.asa_s == pytest.approx(asa, rel=0.01)
    # and one agent fewer misses the objective
    assert erlang_c_figures(ours.agents - 1, rate, aht_s, target_s).service_level < objective


def test_the_published_example_figures() -> None:
    f = staff_erlang_c(100 / 1800, 180, 20, Goal(0.8))
    assert (f.agents, round(f.service_level, 4), round(f.occupancy, 4),
            round(f.wait_probability, 4)) == (14, 0.8884, 0.7143, 0.1741)


def test_erlang_b_and_c_stay_finite_at_thousands_of_agents() -> None:
    # a^n / n! overflows a float from n ~ 170; the recursion never forms it.
    n, a = 20_000, 19_500.0
    # the same sums in log space: log(a^k / k!) = k log a - lgamma(k + 1)
    logs = np.array([k * math.log(a) - math.lgamma(k + 1) for k in range(n + 1)])
    top = logs.max()
    below = np.exp(logs[:n] - top).sum()
    last = math.exp(logs[n] - top) * n / (n - a)
    assert erlang_b(n, a) == pytest.approx(math.exp(logs[n] - top) / (below + math.exp(
        logs[n] - top)), rel=1e-9)
    assert erlang_c(n, a) == pytest.approx(last / (below + last), rel=1e-9)
    f = staff_erlang_c(19_500 / 90, 90, 30, Goal(0.8))
    assert 19_500 < f.agents < 19_700
    assert f.service_level >= 0.8


# --- Erlang A against the birth-death chain ---------------------------------------------------

def _chain(agents: int, rate: float, aht_s: float, patience_s: float, target_s: float,
           short_s: float, queue_states: int = 400) -> dict[str, float]:
    """M/M/n+M solved numerically: the stationary distribution of the number in system from
    the generator (truncated where its mass is negligible), then an arrival that finds j in
    line (PASTA) as an absorbing chain on "people ahead of it": ahead -> ahead - 1 at n mu +
    ahead theta, head of line -> answered at n mu, anyone -> left at theta."""
    mu, theta = 1 / aht_s, 1 / patience_s
    k_max = agents + queue_states
    q = np.zeros((k_max + 1, k_max + 1))
    for k in range(k_max + 1):
        if k < k_max:
            q[k, k + 1] = rate
        if k > 0:
            q[k, k - 1] = min(k, agents) * mu + max(k - agents, 0) * theta
        q[k, k] = -q[k].sum()
    lhs = q.T.copy()
    lhs[-1] = 1.0  # pi Q = 0 with one balance equation replaced by sum(pi) = 1
    rhs = np.zeros(k_max + 1)
    rhs[-1] = 1.0
    pi = np.linalg.solve(lhs, rhs)
    assert pi[-1] < 1e-12  # the truncation holds nothing
    ahead, answered, left = queue_states, queue_states, queue_states + 1
    g = np.zeros((queue_states + 2, queue_states + 2))
    for i in range(ahead):
        if i > 0:
            g[i, i - 1] = agents * mu + i * theta
        else:
            g[i, answered] = agents * mu
        g[i, left] = theta
        g[i, i] = -(agents * mu + i * theta + theta)
    start = np.zeros(queue_states + 2)
    start[:ahead] = pi[agents:agents + ahead]
    waits = float(pi[agents:].sum())
    by_target = start @ scipy.linalg.expm(g * target_s)
    by_short = start @ scipy.linalg.expm(g * short_s)
    transient = g[:ahead, :ahead]
    eventually_answered = np.linalg.solve(-transient, g[:ahead, answered])
    time_in = np.linalg.solve(-transient.T, start[:ahead])  # expected time in each state
    served = (1 - waits) + float(start[:ahead] @ eventually_answered)
    return {"wait_probability": waits, "served": served,
            "within": (1 - waits) + float(by_target[answered]),
            "short": float(by_short[left]),
            "asa_s": float(time_in @ eventually_answered) / served}


ERLANG_A_CASES = [
    # agents, rate/s, AHT s, patience s, target s, short abandon s
    (10, 1.0, 9.0, 30.0, 5.0, 3.0),
    (20, 0.2, 100.0, 60.0, 20.0, 5.0),
    (5, 1.0, 6.0, 10.0, 2.0, 1.0),  # overloaded: 6 erlangs on 5 agents, abandons keep it stable
    (40, 0.5, 90.0, 60.0, 30.0, 5.0),
    (8, 0.15, 90.0, 45.0, 30.0, 5.0),  # 13.5 erlangs on 8 agents: 42 % leave
    (120, 1.3, 90.0, 120.0, 30.0, 5.0),
]


@pytest.mark.parametrize(("agents", "rate", "aht_s", "patience_s", "target_s", "short_s"),
                         ERLANG_A_CASES)
def test_erlang_a_matches_the_birth_death_chain(agents: int, rate: float, aht_s: float,
                                                patience_s: float, target_s: float,
                                                short_s: float) -> None:
    chain = _chain(agents, rate, aht_s, patience_s, target_s, short_s)

    def ours(formula: str) -> float:
        return erlang_a_figures(agents, rate, aht_s, patience_s, target_s, short_s,
                                formula).service_level

    f = erlang_a_figures(agents, rate, aht_s, patience_s, target_s, short_s)
    assert round(f.wait_probability, 3) == round(chain["wait_probability"], 3)
    assert round(f.abandonment, 3) == round(1 - chain["served"], 3)
    assert round(ours("all_abandons"), 3) == round(chain["within"], 3)
    assert round(ours("short_abandons_excluded"), 3) == round(
        chain["within"] / (1 - chain["short"]), 3)
    assert round(ours("answered_only"), 3) == round(chain["within"] / chain["served"], 3)
    assert f.asa_s == pytest.approx(chain["asa_s"], rel=1e-3)
    assert round(f.occupancy, 3) == round(min(1.0, rate * chain["served"] * aht_s / agents), 3)


def test_erlang_a_tends_to_erlang_c_when_nobody_leaves() -> None:
    a = erlang_a_figures(64, 1200 / 1800, 90, 1e9, 30, 0.0, "all_abandons")
    c = erlang_c_figures(64, 1200 / 1800, 90, 30)
    assert a.abandonment < 1e-6
    assert a.service_level == pytest.approx(c.service_level, abs=1e-5)
    assert a.wait_probability == pytest.approx(c.wait_probability, abs=1e-5)
    assert a.asa_s == pytest.approx(c.asa_s, rel=1e-4)


def test_erlang_a_at_thousands_of_agents_and_overloaded() -> None:
    # 6,000 erlangs on 5,000 agents: Erlang C has no steady state; with abandonment one sixth
    # of the customers leave (the agents answer 5,000 erlangs' worth).
    f = erlang_a_figures(5000, 6000 / 90, 90, 60, 30, 5)
    assert f.wait_probability == pytest.approx(1.0)
    assert f.abandonment == pytest.approx(1 / 6, abs=1e-3)
    assert f.occupancy == pytest.approx(1.0, abs=1e-6)
    assert math.isfinite(f.asa_s)
    staffed = staff_erlang_a(1500 / 90 * 20, 90, 60, 30, Goal(0.8), 5)
    below = erlang_a_figures(staffed.agents - 1, 1500 / 90 * 20, 90, 60, 30, 5)
    assert staffed.service_level >= 0.8 > below.service_level


def test_abandonment_needs_fewer_agents_than_erlang_c() -> None:
    goal = Goal(0.8, formula="all_abandons")
    c = staff_erlang_c(1200 / 1800, 90, 30, goal)
    a = staff_erlang_a(1200 / 1800, 90, 60, 30, goal)
    assert a.agents <= c.agents
    assert staff_erlang_a(1200 / 1800, 90, 60, 30, Goal(0.8, max_occupancy=0.85)).occupancy \
        <= 0.85


def test_no_traffic_needs_nobody() -> None:
    assert staff_erlang_c(0.0, 90, 30, Goal(0.8)).agents == 0
    assert staff_erlang_a(0.0, 90, 60, 30, Goal(0.8)).agents == 0
    with pytest.raises(ValueError, match="formula"):
        erlang_a_figures(3, 1.0, 1.0, 1.0, 1.0, formula="nope")
