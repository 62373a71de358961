"""The routing oracle: the choices the Redis scripts make (scripts/common.lua), decided again
over plain data in Python. Tests only: the property tests hold every script to it
(tests/integration/test_routing_properties.py), and tests/unit/test_routing_policy.py checks
it on hand-made cases. Production routes with the scripts; nothing under router/ imports this.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from router.routing.config import Strategy
from router.routing.policy import MAX_RANK, VIP, Membership, Seat, meets

RANK_SCALE = 1e13  # one rank step outweighs any epoch-millisecond tie-breaker (< 4e12)
OCCUPANCY_STEPS = 1000


def ring_for_wait(ring_delays_ms: Sequence[int], waited_ms: int) -> int:
    """The outermost ring open after this much waiting."""
    return max(i for i, delay in enumerate(ring_delays_ms) if delay <= max(waited_ms, 0))


def open_ring(ring_delays_ms: Sequence[int], waited_ms: int,
              ready_by_ring: Sequence[int]) -> tuple[int, bool]:
    """The ring a contact is at: the one its wait opened, then further out while nobody is
    logged in and ready in any ring up to it (TaskRouter's ``skip_if``: an empty ring does not
    make the customer wait). Returns the ring and whether a ring was skipped."""
    ring = ring_for_wait(ring_delays_ms, waited_ms)
    skipped = False
    while ring < len(ring_delays_ms) - 1 and sum(ready_by_ring[: ring + 1]) == 0:
        ring += 1
        skipped = True
    return ring, skipped


def next_ring_at(ring_delays_ms: Sequence[int], escalated_at_ms: int, ring: int) -> int | None:
    """When the ring after ``ring`` opens (epoch ms), or None if it is the last."""
    if ring + 1 >= len(ring_delays_ms):
        return None
    return escalated_at_ms + ring_delays_ms[ring + 1]


def urgency(now_ms: int, score: int, target_ms: int, weight: float) -> float:
    """Earliest deadline first: effective wait / target x weight. Mirrored in common.lua."""
    return (now_ms - score) / target_ms * weight


# --- agents --------------------------------------------------------------------------------


def agent_sort_key(strategy: Strategy, rank_: int, last_ms: int, load: int, capacity: int,
                   last_from_pool_ms: int) -> float:
    """Score of an agent in a free index (lower is offered first). Mirrored in common.lua."""
    if strategy == Strategy.LEAST_OCCUPIED:
        occupied = load * OCCUPANCY_STEPS // max(capacity, 1)
        return occupied * RANK_SCALE + last_ms
    if strategy == Strategy.ROUND_ROBIN:
        return float(last_from_pool_ms)
    return (MAX_RANK - rank_) * RANK_SCALE + last_ms


# --- reference selection over plain data -----------------------------------------------------


@dataclass(slots=True)
class AgentView:
    agent_id: str
    ready: bool
    capacity: dict[str, int]
    load: dict[str, int]
    last_ms: int
    memberships: list[Membership]
    seats: list[Seat]
    skills: dict[str, int] = field(default_factory=dict)
    last_from_pool_ms: dict[str, int] = field(default_factory=dict)

    def has_room(self, channel: str) -> bool:
        return self.ready and self.load.get(channel, 0) < self.capacity.get(channel, 0)


@dataclass(slots=True)
class WaitingView:
    contact_id: str
    lane: str
    channel: str
    service_class: str
    ring: int
    score: int
    target_ms: int
    weight: float
    ring_pools: tuple[str, ...] = ()
    extra_skills: dict[str, int] = field(default_factory=dict)
    preferred_agent: str = ""  # in its preferred ring: only this agent may take it


def preferred_ring(logged_in: bool, state: str, serves: Iterable[str], lane: str,
                   ring_ms: int) -> str:
    """Whether a request's preferred agent gets its ring (``used``), or why not: the policy
    has none (``disabled``), the agent is not logged in (``absent``) or offline, does not
    serve the lane (``not_serving``). An agent not ready keeps its ring: it may come back
    within it. The ring runs from when the routing stage places the request."""
    if ring_ms <= 0:
        return "disabled"
    if not logged_in:
        return "absent"
    if state == "offline":
        return "offline"
    if lane not in set(serves):
        return "not_serving"
    return "used"


def best_agent(contact: WaitingView, agents: Iterable[AgentView],
               exclude: str = "") -> str | None:
    """Contact-driven choice: the innermost open ring whose pool has a free eligible agent, and
    in it the agent with the lowest sort key (ties: agent id). Extra skills bind at ring 0. In
    its preferred ring, the preferred agent if it has room, else nobody."""
    candidates = [a for a in agents if a.agent_id != exclude and a.has_room(contact.channel)]
    if contact.preferred_agent:  # its preferred ring: that agent or nobody (skills aside)
        return next((a.agent_id for a in candidates
                     if a.agent_id == contact.preferred_agent), None)
    for ring in range(contact.ring + 1):
        pool = contact.ring_pools[ring]
        best: tuple[float, str] | None = None
        for agent in candidates:
            seat = next((s for s in agent.seats if s.pool == pool), None)
            if seat is None or (ring == 0 and not meets(agent.skills, contact.extra_skills)):
                continue
            key = (agent_sort_key(seat.strategy, seat.rank, agent.last_ms,
                                  agent.load.get(contact.channel, 0),
                                  agent.capacity.get(contact.channel, 0),
                                  agent.last_from_pool_ms.get(pool, 0)), agent.agent_id)
            if best is None or key < best:
                best = key
        if best is not None:
            return best[1]
    return None


def next_contact(agent: AgentView, waiting: Iterable[WaitingView], now_ms: int,
                 exclude: str = "") -> str | None:
    """Agent-driven choice: a contact in the agent's own preferred ring first (place order);
    else the most urgent contact visible to the agent, on a channel where it has room (ties:
    VIP first, then the earlier place in line, then contact id). Contacts in another agent's
    preferred ring are visible to nobody else."""
    waiting = list(waiting)
    own = sorted((c.score, c.contact_id) for c in waiting
                 if c.preferred_agent == agent.agent_id and c.contact_id != exclude
                 and agent.has_room(c.channel))
    if own:  # contacts in its preferred ring come first, in place order
        return own[0][1]
    by_lane = {m.lane: m for m in agent.memberships}
    best: tuple[float, int, int, str] | None = None
    for c in waiting:
        if c.preferred_agent:
            continue
        m = by_lane.get(c.lane)
        if m is None or c.ring < m.ring or c.contact_id == exclude:
            continue
        if not agent.has_room(c.channel):
            continue
        if c.ring == 0 and not meets(agent.skills, c.extra_skills):
            continue
        key = (-urgency(now_ms, c.score, c.target_ms, c.weight),
               0 if c.service_class == VIP else 1, c.score, c.contact_id)
        if best is None or key < best:
            best = key
    return None if best is None else best[3]
