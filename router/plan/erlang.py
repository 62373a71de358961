"""Queueing formulas for staffing: Erlang C (M/M/n, nobody leaves) and Erlang A (M/M/n+M,
customers leave when their exponentially distributed patience runs out). Pure functions, no I/O.

Numerics (they hold at thousands of agents):

* Erlang B by the recursion B(k) = A B(k-1) / (k + A B(k-1)), B(0) = 1: every step stays in
  [0, 1], no factorial or power is ever formed (a^n / n! overflows a float from n ~ 170).
* Erlang C from it: C = n B(n) / (n - A (1 - B(n))).
* Erlang A by the exact M/M/n+M formulas (Baccelli & Hebuterne 1981; Mandelbaum & Zeltyn,
  "The M/M/n+G queue: summary of performance measures", 2007, on which Garnett, Mandelbaum &
  Reiman 2002 build). With rate l, service rate m = 1/AHT, abandonment rate t = 1/patience and
  g(x) = (l / t)(1 - exp(-t x)) - n m x, the offered wait V of an arrival (what it would wait
  if it never left) has P(V > 0) = l J B / (1 + l J B), with B = Erlang B(n - 1, A) and
  J = integral of exp(g(x)) over x > 0, and density P(V > 0) exp(g(x)) / J on x > 0. A
  customer is answered when its patience outlasts V. g is concave, so every integral below
  is of a log-concave function with one peak; they are taken by Gauss-Legendre quadrature on
  panels, with exp(g) scaled by its maximum (log space: l / t may be thousands).

The service level follows the router's formula (PEAKROUTE_SLA_FORMULA, docs/METRICS.md):
``short_abandons_excluded`` answered within target / (answered + abandoned - short abandoned),
``all_abandons`` answered within target / (answered + abandoned), ``answered_only`` answered
within target / answered. Without abandonment (Erlang C) the three coincide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from router.sla.windows import FORMULAS as SLA_FORMULAS

FORMULAS = tuple(SLA_FORMULAS)  # the router's service-level formulas (router/sla/windows.py)
MAX_AGENTS = 1_000_000  # a staffing search gives up beyond this
_LOG_RANGE = 60.0  # integrate where exp(g) is within e^-60 of its peak
_PANELS = 48
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(16)

Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Figures:
    """What ``agents`` agents achieve on one interval's traffic (steady state)."""

    agents: int
    occupancy: float  # busy agents / agents: answered load / agents
    service_level: float  # under the formula (above)
    wait_probability: float  # an arrival finds every agent busy
    asa_s: float  # average speed of answer: mean wait of answered contacts (inf: unstable)
    abandonment: float = 0.0  # share of arrivals who leave before an answer

    def as_dict(self) -> dict[str, float | int | None]:
        return {"agents": self.agents, "occupancy": self.occupancy,
                "service_level": self.service_level,
                "wait_probability": self.wait_probability,
                "asa_s": self.asa_s if math.isfinite(self.asa_s) else None,
                "abandonment": self.abandonment}


# --- Erlang B and C ------------------------------------------------------------------------

def erlang_b(agents: int, load: float) -> float:
    """Erlang B blocking probability of ``load`` erlangs on ``agents`` servers (recursion)."""
    b = 1.0
    for k in range(1, agents + 1):
        b = load * b / (k + load * b)
    return b


def erlang_c(agents: int, load: float) -> float:
    """Erlang C: the probability that an arrival waits, for ``load`` = rate x AHT erlangs
    offered to ``agents`` servers (1 when load >= agents: the queue grows without bound).
    C = N B / (N - A (1 - B)), with B the Erlang B probability."""
    if load >= agents:
        return 1.0
    if load <= 0:
        return 0.0
    b = erlang_b(agents, load)
    return agents * b / (agents - load * (1 - b))


def _c_figures(agents: int, load: float, c: float, aht_s: float, target_s: float) -> Figures:
    if load >= agents:
        return Figures(agents, 1.0, 0.0, 1.0, math.inf)
    gap = agents - load
    return Figures(agents, load / agents, 1.0 - c * math.exp(-gap * target_s / aht_s), c,
                   c * aht_s / gap)


def erlang_c_figures(agents: int, rate: float, aht_s: float, target_s: float) -> Figures:
    """M/M/n: occupancy A / N, service level 1 - C exp(-(N - A) T / AHT), probability of
    waiting C, ASA = C AHT / (N - A) (every contact is answered, so the mean over all)."""
    load = rate * aht_s
    return _c_figures(agents, load, erlang_c(agents, load), aht_s, target_s)


def erlang_c_service_level(agents: int, rate: float, aht_s: float, target_s: float) -> float:
    """P(wait <= target) = 1 - C exp(-(N - A) target / AHT)."""
    return erlang_c_figures(agents, rate, aht_s, target_s).service_level


def erlang_c_asa(agents: int, rate: float, aht_s: float) -> float:
    """Average speed of answer: E[wait] = C AHT / (N - A)."""
    return erlang_c_figures(agents, rate, aht_s, 0.0).asa_s


@dataclass(frozen=True, slots=True)
class Goal:
    """What the staffing must achieve: service level at least ``objective`` (under
    ``formula``), and optionally occupancy at most ``max_occupancy``, ASA at most
    ``max_asa_s`` and (Erlang A) abandonment at most ``max_abandonment``. With abandons
    counted only past the short-abandon time, or not at all, a heavily understaffed queue can
    meet the service level by losing customers: the abandonment cap keeps it honest."""

    objective: float
    formula: str = "short_abandons_excluded"
    max_occupancy: float = 1.0
    max_asa_s: float = math.inf
    max_abandonment: float = 1.0

    def met(self, f: Figures) -> bool:
        return (f.service_level >= self.objective and f.occupancy <= self.max_occupancy
                and f.asa_s <= self.max_asa_s and f.abandonment <= self.max_abandonment)


def staff_erlang_c(rate: float, aht_s: float, target_s: float, goal: Goal) -> Figures:
    """The fewest agents whose Erlang C figures meet ``goal``: one pass of the Erlang B
    recursion, testing each agent count above the load (O(N), thousands in milliseconds)."""
    load = rate * aht_s
    if load <= 0:
        return Figures(0, 0.0, 1.0, 0.0, 0.0)
    b = 1.0
    for n in range(1, MAX_AGENTS + 1):
        b = load * b / (n + load * b)
        if n <= load:
            continue
        f = _c_figures(n, load, n * b / (n - load * (1 - b)), aht_s, target_s)
        if goal.met(f):
            return f
    raise ValueError(f"no staffing up to {MAX_AGENTS} agents meets the goal")


# --- Erlang A --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _OfferedWait:
    """The offered wait V of an arrival in M/M/n+M: P(V > 0) and its density's shape."""

    wait_probability: float
    rate: float
    serve_rate: float  # n / AHT
    leave_rate: float  # 1 / patience
    peak: float  # where g is largest (0 unless overloaded)
    g_peak: float
    end: float  # beyond it exp(g - g_peak) < e^-_LOG_RANGE
    mass: float  # integral of exp(g - g_peak) over (0, end)

    def g(self, x: Array) -> Array:
        return ((self.rate / self.leave_rate) * -np.expm1(-self.leave_rate * x)
                - self.serve_rate * x - self.g_peak)


def _g(rate: float, serve: float, leave: float, x: float) -> float:
    return (rate / leave) * -math.expm1(-leave * x) - serve * x


def _integral(lo: float, hi: float, weight: _OfferedWait, extra: str = "") -> float:
    """Integral over (lo, hi) of exp(g - g_peak) times 1, exp(-t x) ("served") or x exp(-t x)
    ("served_x"), by Gauss-Legendre on equal panels."""
    if hi <= lo:
        return 0.0
    edges = np.linspace(lo, hi, _PANELS + 1)
    half = (edges[1:] - edges[:-1]) / 2
    mid = (edges[1:] + edges[:-1]) / 2
    x = (mid[:, None] + half[:, None] * _NODES[None, :]).ravel()
    w = (half[:, None] * _WEIGHTS[None, :]).ravel()
    f = np.exp(weight.g(x))
    if extra:
        f = f * np.exp(-weight.leave_rate * x)
        if extra == "served_x":
            f = f * x
    return float(np.dot(w, f))


def _offered_wait(agents: int, rate: float, aht_s: float, patience_s: float) -> _OfferedWait:
    serve, leave = agents / aht_s, 1.0 / patience_s
    peak = max(0.0, math.log(rate / serve) / leave) if rate > serve else 0.0
    g_peak = _g(rate, serve, leave, peak)
    # g is concave: step away from the peak, doubling, until exp(g - g_peak) is negligible.
    step = 1.0 / (serve + leave + rate)
    end = peak + step
    while _g(rate, serve, leave, end) - g_peak > -_LOG_RANGE:
        step *= 2
        end = peak + step
    shape = _OfferedWait(0.0, rate, serve, leave, peak, g_peak, end, 0.0)
    mass = _integral(0.0, peak, shape) + _integral(peak, end, shape)
    b = erlang_b(agents - 1, rate * aht_s)
    if b <= 0.0:  # underflow: so many agents that nobody waits
        p = 0.0
    else:
        log_ljb = math.log(rate) + g_peak + math.log(mass) + math.log(b)
        p = 1.0 / (1.0 + math.exp(-log_ljb)) if log_ljb > -700 else 0.0
    return _OfferedWait(p, rate, serve, leave, peak, g_peak, end, mass)


def _over(v: _OfferedWait, lo: float, hi: float, extra: str = "") -> float:
    """The integral over (lo, hi), split at the peak so that each part is monotone."""
    hi = min(hi, v.end)
    if hi <= lo:
        return 0.0
    if lo < v.peak < hi:
        return _integral(lo, v.peak, v, extra) + _integral(v.peak, hi, v, extra)
    return _integral(lo, hi, v, extra)


def erlang_a_figures(agents: int, rate: float, aht_s: float, patience_s: float,
                     target_s: float, short_abandon_s: float = 0.0,
                     formula: str = "short_abandons_excluded") -> Figures:
    """M/M/n+M: ``rate`` arrivals/s, exponential handle times of mean ``aht_s``, exponential
    patience of mean ``patience_s``. Service level under ``formula`` with abandons within
    ``short_abandon_s`` as short; ASA = mean wait of answered contacts; abandonment = share
    of arrivals who leave; occupancy = answered load / agents."""
    if formula not in FORMULAS:
        raise ValueError(f"unknown formula {formula!r}; use " + ", ".join(FORMULAS))
    if rate <= 0:
        return Figures(agents, 0.0, 1.0, 0.0, 0.0)
    if agents <= 0:
        return Figures(0, 0.0, 0.0, 1.0, math.inf, 1.0)
    v = _offered_wait(agents, rate, aht_s, patience_s)
    p = v.wait_probability
    scale = p / v.mass  # density of V on x > 0 is scale * exp(g - g_peak)
    served_after_wait = scale * _over(v, 0.0, v.end, "served")
    served = (1.0 - p) + served_after_wait
    within = (1.0 - p) + scale * _over(v, 0.0, target_s, "served")
    # A waiting customer leaves within s when its patience ends before min(V, s).
    short = 0.0
    if short_abandon_s > 0:
        short = scale * (_over(v, 0.0, short_abandon_s)
                         - _over(v, 0.0, short_abandon_s, "served")
                         + (1 - math.exp(-v.leave_rate * short_abandon_s))
                         * _over(v, short_abandon_s, v.end))
    wait_answered = scale * _over(v, 0.0, v.end, "served_x")
    abandonment = max(0.0, 1.0 - served)
    if formula == "short_abandons_excluded":
        denominator = 1.0 - short
    elif formula == "all_abandons":
        denominator = 1.0
    else:
        denominator = served
    sl = within / denominator if denominator > 0 else 0.0
    return Figures(agents, min(1.0, rate * served * aht_s / agents), min(1.0, sl), p,
                   wait_answered / served if served > 0 else math.inf, abandonment)


def staff_erlang_a(rate: float, aht_s: float, patience_s: float, target_s: float, goal: Goal,
                   short_abandon_s: float = 0.0) -> Figures:
    """The fewest agents whose Erlang A figures meet ``goal`` (the figures improve with every
    agent added, so a doubling search then bisection: ~2 log2 N evaluations)."""
    if rate <= 0:
        return Figures(0, 0.0, 1.0, 0.0, 0.0)

    def at(n: int) -> Figures:
        return erlang_a_figures(n, rate, aht_s, patience_s, target_s, short_abandon_s,
                                goal.formula)

    hi = max(1, math.ceil(rate * aht_s))
    best = at(hi)
    while not goal.met(best):
        if hi >= MAX_AGENTS:
            raise ValueError(f"no staffing up to {MAX_AGENTS} agents meets the goal")
        hi = min(2 * hi, MAX_AGENTS)
        best = at(hi)
    lo = 0  # not met (or none)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        f = at(mid)
        if goal.met(f):
            hi, best = mid, f
        else:
            lo = mid
    return best
