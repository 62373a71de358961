"""Pure routing policy: eligibility, rings, the best agent, the most urgent contact."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from router.events import Language, RoutingRequested, Tier
from router.routing.config import Strategy, load_policy, parse_policy
from router.routing.policy import (
    NORMAL,
    VIP,
    Membership,
    Seat,
    effective_capacity,
    format_levels,
    memberships,
    parse_levels,
    plan_request,
    queue_score,
    rank,
    resolve_queue,
    seats,
)
from tests.oracle import (
    AgentView,
    WaitingView,
    agent_sort_key,
    best_agent,
    next_contact,
    next_ring_at,
    open_ring,
    ring_for_wait,
    urgency,
)

DEFAULT = load_policy().for_domain("shop")
T0 = 1_800_000_000_000


def request(**kw: object) -> RoutingRequested:
    base: dict[str, object] = {"event_id": "e", "ts_ms": T0, "contact_id": "c1", "domain": "shop"}
    return RoutingRequested(**(base | kw))  # type: ignore[arg-type]


# --- memberships ---------------------------------------------------------------------------


def test_an_agent_serves_its_primary_queue_at_ring_0_and_overflows_elsewhere() -> None:
    lanes = {m.lane: m for m in memberships({"zh": 2, "refunds": 3, "general": 2}, DEFAULT)}
    assert lanes["refunds.zh"].ring == 0
    assert lanes["refunds.zh"].rank == 3
    assert lanes["general.zh"].ring == 0
    assert lanes["orders.zh"].ring == 1  # orders' first ring takes general >= 2
    assert lanes["payment.zh"].ring == 1  # payment's first ring takes refunds >= 2
    assert "security.zh" not in lanes  # security never overflows to the general pool
    assert not any(lane.endswith(".en") for lane in lanes)  # no English skill, no English work


def test_a_bilingual_agent_gets_a_lane_per_language() -> None:
    lanes = {m.lane for m in memberships({"zh": 1, "en": 1, "general": 1}, DEFAULT)}
    assert {"general.zh", "general.en"} <= lanes


def test_without_language_skill_the_lane_is_the_queue() -> None:
    policy = parse_policy('domains: {"*": {language_skill: false, queues: {q: {skills: {a: 1}}}}}',
                          "p").for_domain("x")
    assert memberships({"a": 1}, policy) == [
        Membership("q", 0, 1, "a=1~longest_idle", 1, Strategy.LONGEST_IDLE)]


def test_seats_survive_their_wire_form_and_pools_are_shared_across_lanes() -> None:
    ss = seats({"zh": 2, "en": 1, "refunds": 3, "general": 2, "orders": 1}, DEFAULT)
    assert Seat.decode_all(";".join(s.encode() for s in ss)) == ss
    pools = {s.pool for s in ss}
    assert "general=2,zh=1~longest_idle" in pools  # ring 2 of refunds and payment, ring 1 of orders
    assert len(pools) == len(ss)
    lanes = {m.lane: m for m in memberships({"zh": 1, "general": 2}, DEFAULT)}
    assert lanes["refunds.zh"].pool == lanes["payment.zh"].pool == lanes["orders.zh"].pool
    assert Membership("refunds.zh", 2, 3).encode() == "refunds.zh|2|3"


def test_ring_pools_name_the_requirement_and_strategy() -> None:
    plan = plan_request(request(queue="refunds"), DEFAULT)
    assert plan.ring_pools == ("refunds=1,zh=1~longest_idle", "orders=2,zh=1~longest_idle",
                               "general=2,zh=1~longest_idle")


def test_rank_sums_levels_of_the_required_skills() -> None:
    assert rank({"refunds": 3, "zh": 2}, {"refunds": 1}) == 3
    assert rank({"refunds": 3, "orders": 2}, {"refunds": 1, "orders": 1}) == 5
    assert rank({"refunds": 50}, {"refunds": 1}) == 10  # levels count at most 10


def test_capacity_is_what_the_agent_asked_for_capped_by_the_policy() -> None:
    assert effective_capacity({"chat": 8, "voice": 2, "email": 1}, DEFAULT) == {
        "chat": 3, "voice": 1, "email": 1}


# --- requests ------------------------------------------------------------------------------


def test_a_named_queue_is_used_and_vip_gets_its_own_target() -> None:
    plan = plan_request(request(queue="refunds", tier=Tier.VIP, language=Language.EN), DEFAULT)
    assert plan.lane == "refunds.en"
    assert plan.service_class == VIP
    assert plan.target_ms == 10_000
    assert plan.weight == 2.0
    assert plan.ring_delays_ms == (0, 10_000, 20_000)
    assert plan.reason == ""


def test_a_request_with_only_skills_finds_the_queue_with_those_skills() -> None:
    queue, reason = resolve_queue(DEFAULT, "", {"zh": 1, "payment": 1})
    assert (queue.name, reason) == ("payment", "")


def test_an_unknown_queue_goes_to_the_default_queue_and_says_so() -> None:
    plan = plan_request(request(queue="warp-drive"), DEFAULT)
    assert plan.queue == "general"
    assert plan.reason == "unknown_queue:warp-drive"
    assert plan_request(request(), DEFAULT).reason == "default_queue"


def test_extra_skills_are_only_those_beyond_the_queue_and_language() -> None:
    plan = plan_request(request(queue="refunds", skills={"zh": 1, "refunds": 1, "vip": 2}),
                        DEFAULT)
    assert plan.extra_skills == {"vip": 2}
    assert plan_request(request(queue="refunds", skills={"refunds": 3}), DEFAULT).extra_skills \
        == {"refunds": 3}  # a higher level than the queue's own is an extra requirement


def test_priority_counts_as_extra_waiting() -> None:
    step = int(DEFAULT.priority_step_s * 1000)
    assert queue_score(T0, 2, step) == T0 - 2 * step
    assert plan_request(request(priority=1), DEFAULT).score == T0 - step


@given(st.integers(0, 10**13), st.integers(0, 9), st.integers(1, 10**6), st.integers(0, 9),
       st.integers(0, 60_000))
def test_queue_order_is_monotonic_in_time_and_priority(t: int, p: int, dt: int, dp: int,
                                                       step: int) -> None:
    assert queue_score(t, p, step) < queue_score(t + dt, p, step)
    assert queue_score(t, min(p + dp, 9), step) <= queue_score(t, p, step)


def test_levels_round_trip_their_wire_form() -> None:
    assert format_levels({"zh": 1, "refund": 2}) == "refund=2,zh=1"
    assert parse_levels("refund=2,zh=1") == {"refund": 2, "zh": 1}
    assert parse_levels("") == {}


# --- rings ---------------------------------------------------------------------------------

delays = st.lists(st.integers(1, 120_000), max_size=4, unique=True).map(
    lambda ds: (0, *sorted(ds)))


@given(delays, st.integers(-1000, 200_000), st.integers(0, 200_000))
def test_rings_only_open_outwards_as_the_wait_grows(ds: tuple[int, ...], w: int, more: int
                                                    ) -> None:
    ring = ring_for_wait(ds, w)
    assert 0 <= ring < len(ds)
    assert ds[ring] <= max(w, 0)
    assert ring_for_wait(ds, w + more) >= ring
    nxt = next_ring_at(ds, T0, ring)
    if ring == len(ds) - 1:
        assert nxt is None
    else:
        assert nxt is not None
        assert nxt > T0 + max(w, 0) - 1


@given(delays, st.integers(0, 200_000), st.lists(st.integers(0, 3), min_size=5, max_size=5))
def test_empty_rings_are_skipped_at_once(ds: tuple[int, ...], w: int, ready: list[int]
                                         ) -> None:
    ring, skipped = open_ring(ds, w, ready[: len(ds)])
    timed = ring_for_wait(ds, w)
    assert ring >= timed
    assert skipped == (ring > timed)
    if skipped:  # every ring passed over had nobody ready up to it
        assert sum(ready[:ring]) == 0
    if ring < len(ds) - 1:  # it stopped because someone is ready (or it is the last ring)
        assert sum(ready[: ring + 1]) > 0


def test_a_ring_with_nobody_ready_is_skipped_like_taskrouter_skip_if() -> None:
    assert open_ring((0, 10_000, 20_000), 0, [0, 0, 4]) == (2, True)
    assert open_ring((0, 10_000, 20_000), 0, [1, 0, 4]) == (0, False)
    assert open_ring((0, 10_000, 20_000), 12_000, [0, 2, 0]) == (1, False)
    assert open_ring((0, 10_000), 0, [0, 0]) == (1, True)  # last ring: nowhere further


# --- choosing ------------------------------------------------------------------------------


def agent(aid: str, ms: list[Membership], *, ready: bool = True, load: int = 0, cap: int = 2,
          last: int = T0, skills: dict[str, int] | None = None) -> AgentView:
    """An agent sitting in the pool of each membership's ring (pools P0, P1, P2)."""
    return AgentView(aid, ready, {"chat": cap}, {"chat": load}, last, ms,
                     [Seat(m.pool, m.rank, m.strategy) for m in ms], skills or {})


def m(lane: str = "refunds.zh", ring: int = 0, rank_: int = 1,
      strategy: Strategy = Strategy.LONGEST_IDLE) -> Membership:
    return Membership(lane, ring, 3, f"P{ring}", rank_, strategy)


def contact(cid: str = "c1", ring: int = 0, score: int = T0, *, cls: str = NORMAL,
            target: int = 30_000, weight: float = 1.0, lane: str = "refunds.zh",
            extra: dict[str, int] | None = None) -> WaitingView:
    return WaitingView(cid, lane, "chat", cls, ring, score, target, weight, ("P0", "P1", "P2"),
                       extra or {})


def test_the_most_skilled_then_longest_idle_agent_gets_the_contact() -> None:
    agents = [agent("a1", [m(rank_=1)], last=T0 - 90_000), agent("a2", [m(rank_=3)], last=T0),
              agent("a3", [m(rank_=3)], last=T0 - 5_000)]
    assert best_agent(contact(), agents) == "a3"


def test_overflow_agents_only_take_a_contact_once_its_ring_opened() -> None:
    agents = [agent("primary", [m(ring=0)], load=2), agent("overflow", [m(ring=1)])]
    assert best_agent(contact(ring=0), agents) is None
    assert best_agent(contact(ring=1), agents) == "overflow"
    agents[0].load["chat"] = 1  # the primary pool has room again: it comes first
    assert best_agent(contact(ring=1), agents) == "primary"


def test_not_ready_full_or_excluded_agents_get_nothing() -> None:
    agents = [agent("a1", [m()], ready=False), agent("a2", [m()], load=2, cap=2),
              agent("a3", [m()])]
    assert best_agent(contact(), agents, exclude="a3") is None
    assert best_agent(contact(), agents) == "a3"


def test_extra_skills_bind_the_primary_ring_only() -> None:
    agents = [agent("a1", [m(ring=0)], skills={"vip": 1}, last=T0),
              agent("a2", [m(ring=0)], skills={}, last=T0 - 1)]
    assert best_agent(contact(extra={"vip": 1}), agents) == "a1"
    assert best_agent(contact(), agents) == "a2"


def test_least_occupied_and_round_robin_order_agents() -> None:
    assert agent_sort_key(Strategy.LEAST_OCCUPIED, 9, T0, 1, 3, 0) < agent_sort_key(
        Strategy.LEAST_OCCUPIED, 1, T0 - 99, 2, 3, 0)
    assert agent_sort_key(Strategy.ROUND_ROBIN, 9, 0, 0, 3, T0) > agent_sort_key(
        Strategy.ROUND_ROBIN, 1, T0, 2, 3, T0 - 1)
    assert agent_sort_key(Strategy.LONGEST_IDLE, 3, T0, 0, 3, 0) < agent_sort_key(
        Strategy.LONGEST_IDLE, 2, 0, 0, 3, 0)  # skill first, however long idle


def test_an_agent_takes_the_most_urgent_visible_contact() -> None:
    a = agent("a1", [m("refunds.zh", 0), m("orders.zh", 1)])
    waiting = [
        contact("old-refund", score=T0 - 20_000),  # 20 s of a 30 s target: 0.67
        contact("vip-refund", score=T0 - 8_000, cls=VIP, target=10_000),  # 0.8
        contact("orders-ring0", score=T0 - 29_000, lane="orders.zh", ring=0),  # not visible
    ]
    assert next_contact(a, waiting, T0) == "vip-refund"
    assert next_contact(a, waiting, T0, exclude="vip-refund") == "old-refund"
    waiting[2].ring = 1  # its ring opened: now visible and the most urgent (0.97)
    assert next_contact(a, waiting, T0) == "orders-ring0"


def test_vip_goes_first_at_equal_urgency() -> None:
    a = agent("a1", [m()])
    waiting = [contact("n", score=T0 - 15_000), contact("v", score=T0 - 15_000, cls=VIP)]
    assert next_contact(a, waiting, T0) == "v"


def test_urgency_is_wait_over_target_times_weight() -> None:
    assert urgency(T0, T0 - 15_000, 30_000, 2.0) == 1.0


agents_st = st.lists(st.builds(
    lambda i, ring, rank_, load, ready, last: agent(
        f"a{i}", [m(ring=ring, rank_=rank_)], load=load, ready=ready, last=T0 - last),
    st.integers(0, 99), st.integers(0, 2), st.integers(0, 10), st.integers(0, 2), st.booleans(),
    st.integers(0, 10_000)), max_size=8, unique_by=lambda a: a.agent_id)


@given(agents_st, st.integers(0, 2))
def test_best_agent_is_eligible_and_no_eligible_agent_beats_it(agents: list[AgentView],
                                                              ring: int) -> None:
    c = contact(ring=ring)
    chosen = best_agent(c, agents)
    eligible = [a for a in agents if a.has_room("chat") and a.memberships[0].ring <= ring]
    if not eligible:
        assert chosen is None
        return
    winner = next(a for a in agents if a.agent_id == chosen)
    assert winner in eligible

    def key(a: AgentView) -> tuple[int, float, str]:
        mm = a.memberships[0]
        return (mm.ring, agent_sort_key(mm.strategy, mm.rank, a.last_ms, a.load["chat"], 2, 0),
                a.agent_id)

    assert key(winner) == min(key(a) for a in eligible)


waiting_st = st.lists(st.builds(
    lambda i, ring, wait, vip: contact(f"c{i}", ring=ring, score=T0 - wait,
                                       cls=VIP if vip else NORMAL,
                                       target=10_000 if vip else 30_000,
                                       weight=2.0 if vip else 1.0),
    st.integers(0, 99), st.integers(0, 2), st.integers(0, 60_000), st.booleans()),
    max_size=10, unique_by=lambda c: c.contact_id)


@given(waiting_st, st.integers(0, 2))
def test_next_contact_is_visible_and_the_most_urgent(waiting: list[WaitingView],
                                                    ring: int) -> None:
    a = agent("a1", [m(ring=ring)])
    chosen = next_contact(a, waiting, T0)
    visible = [c for c in waiting if c.ring >= ring]
    if not visible:
        assert chosen is None
        return
    winner = next(c for c in waiting if c.contact_id == chosen)
    assert winner in visible
    top = max(urgency(T0, c.score, c.target_ms, c.weight) for c in visible)
    assert urgency(T0, winner.score, winner.target_ms, winner.weight) == top
