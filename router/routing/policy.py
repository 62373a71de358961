"""Pure routing policy (no I/O): who may take a contact, who is best, what is most urgent, when
the next ring opens.

The Redis scripts execute these decisions with indexes (scripts/common.lua): an agent's
*memberships* (computed here at login) say which free-agent index it sits in for each queue and
language (a *lane*) and at which ring; the sort keys below are the scores of those indexes. The
reference functions at the end (:func:`best_agent`, :func:`next_contact`) decide the same over
plain data; the property tests check that Redis and this module agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from router.events import Language, RoutingRequested, Tier
from router.routing.config import DomainPolicy, Queue, Strategy

RANK_SCALE = 1e13  # one rank step outweighs any epoch-millisecond tie-breaker (< 4e12)
MAX_RANK = 100
OCCUPANCY_STEPS = 1000
LANGUAGES = tuple(lang.value for lang in Language)
VIP, NORMAL = "v", "n"  # service classes: VIP contacts are served against their own target


@dataclass(frozen=True, slots=True)
class Membership:
    """An agent sits in lane ``lane``'s free index at ring ``ring`` with this rank."""

    lane: str
    ring: int
    rank: int
    strategy: Strategy
    rings: int  # how many rings the lane has (the agent sees contacts relaxed up to the last)

    def encode(self) -> str:
        return f"{self.lane}|{self.ring}|{self.rank}|{self.strategy.value}|{self.rings}"

    @classmethod
    def decode_all(cls, text: str) -> list[Membership]:
        out = []
        for item in filter(None, text.split(";")):
            lane, ring, rank_, strategy, rings = item.split("|")
            out.append(cls(lane, int(ring), int(rank_), Strategy(strategy), int(rings)))
        return out


def lane_name(queue: str, language: str, language_skill: bool) -> str:
    """Queue and language: the unit that has its own waiting list and free-agent index."""
    return f"{queue}.{language}" if language_skill else queue


def meets(skills: Mapping[str, int], required: Mapping[str, int]) -> bool:
    return all(skills.get(name, 0) >= level for name, level in required.items())


def rank(skills: Mapping[str, int], required: Mapping[str, int]) -> int:
    """How skilled an agent is for a requirement: the sum of its levels on those skills."""
    return min(MAX_RANK, sum(min(skills.get(name, 0), 10) for name in required))


def memberships(skills: Mapping[str, int], policy: DomainPolicy) -> list[Membership]:
    """Every lane an agent serves, at the first ring whose skills it has (rings are cumulative:
    a contact relaxed to ring 2 is visible to agents of rings 0, 1 and 2)."""
    out = []
    languages = [lang for lang in LANGUAGES if skills.get(lang, 0) >= 1]
    for queue in policy.queues.values():
        for language in (languages if policy.language_skill else [""]):
            for index, ring in enumerate(queue.rings):
                if meets(skills, ring.skills):
                    out.append(Membership(lane_name(queue.name, language, policy.language_skill),
                                          index, rank(skills, ring.skills), queue.strategy,
                                          len(queue.rings)))
                    break
    return out


def effective_capacity(requested: Mapping[str, int], policy: DomainPolicy) -> dict[str, int]:
    """What the agent asked for, capped by the policy's most-at-once per channel."""
    return {ch: min(n, policy.capacity.get(ch, 0)) for ch, n in requested.items()}


# --- contacts ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestPlan:
    """What the request script needs to place one contact."""

    queue: str
    lane: str
    service_class: str  # VIP or NORMAL
    target_ms: int
    weight: float
    score: int  # order in its waiting list: lower first
    ring_delays_ms: tuple[int, ...]
    strategy: Strategy = Strategy.LONGEST_IDLE  # how the queue picks among free agents
    extra_skills: dict[str, int] = field(default_factory=dict)
    reason: str = ""  # why the queue differs from the one asked for


def resolve_queue(policy: DomainPolicy, requested: str, skills: Mapping[str, int]
                  ) -> tuple[Queue, str]:
    """The queue a request goes to: the named one; else the first whose skills the request
    names (a client that only sends skills); else the domain's default queue."""
    if requested in policy.queues:
        return policy.queues[requested], ""
    if not requested:
        for queue in policy.queues.values():
            if queue.skills and all(name in skills for name in queue.skills):
                return queue, ""
    reason = f"unknown_queue:{requested}" if requested else "default_queue"
    return policy.queues[policy.default_queue], reason[:64]


def plan_request(event: RoutingRequested, policy: DomainPolicy) -> RequestPlan:
    queue, reason = resolve_queue(policy, event.queue, event.skills)
    vip = event.tier == Tier.VIP
    service = queue.vip if vip else queue.normal
    # The lane already requires the queue's skills and the language at level 1.
    extra = {name: level for name, level in event.skills.items()
             if level > queue.skills.get(name, 1 if name in LANGUAGES else 0)}
    step_ms = int(policy.priority_step_s * 1000)
    return RequestPlan(
        queue=queue.name,
        lane=lane_name(queue.name, event.language.value, policy.language_skill),
        service_class=VIP if vip else NORMAL,
        target_ms=int(service.target_s * 1000),
        weight=service.weight,
        score=queue_score(event.ts_ms, event.priority, step_ms),
        ring_delays_ms=tuple(int(ring.after_s * 1000) for ring in queue.rings),
        strategy=queue.strategy,
        extra_skills=extra,
        reason=reason,
    )


def queue_score(escalated_at_ms: int, priority: int, step_ms: int) -> int:
    """Position in a waiting list: each priority point counts as ``step_ms`` of extra waiting."""
    return escalated_at_ms - priority * step_ms


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
                   last_from_lane_ms: int) -> float:
    """Score of an agent in a free index (lower is offered first). Mirrored in common.lua."""
    if strategy == Strategy.LEAST_OCCUPIED:
        occupied = load * OCCUPANCY_STEPS // max(capacity, 1)
        return occupied * RANK_SCALE + last_ms
    if strategy == Strategy.ROUND_ROBIN:
        return float(last_from_lane_ms)
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
    skills: dict[str, int] = field(default_factory=dict)
    last_from_lane_ms: dict[str, int] = field(default_factory=dict)

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
    extra_skills: dict[str, int] = field(default_factory=dict)


def best_agent(contact: WaitingView, agents: Iterable[AgentView],
               exclude: str = "") -> str | None:
    """Contact-driven choice: the innermost open ring that has a free eligible agent, and in it
    the agent with the lowest sort key (ties: agent id)."""
    best: tuple[int, float, str] | None = None
    for agent in agents:
        if agent.agent_id == exclude or not agent.has_room(contact.channel):
            continue
        for m in agent.memberships:
            if m.lane != contact.lane or m.ring > contact.ring:
                continue
            if m.ring == 0 and not meets(agent.skills, contact.extra_skills):
                continue
            key = (m.ring, agent_sort_key(m.strategy, m.rank, agent.last_ms,
                                          agent.load.get(contact.channel, 0),
                                          agent.capacity.get(contact.channel, 0),
                                          agent.last_from_lane_ms.get(m.lane, 0)),
                   agent.agent_id)
            if best is None or key < best:
                best = key
    return None if best is None else best[2]


def next_contact(agent: AgentView, waiting: Iterable[WaitingView], now_ms: int,
                 exclude: str = "") -> str | None:
    """Agent-driven choice: the most urgent contact visible to the agent, on a channel where it
    has room (ties: VIP first, then the earlier place in line, then contact id)."""
    by_lane = {m.lane: m for m in agent.memberships}
    best: tuple[float, int, int, str] | None = None
    for c in waiting:
        m = by_lane.get(c.lane)
        if m is None or c.ring < m.ring or c.contact_id == exclude:
            continue
        if not agent.has_room(c.channel):
            continue
        if m.ring == 0 and not meets(agent.skills, c.extra_skills):
            continue
        key = (-urgency(now_ms, c.score, c.target_ms, c.weight),
               0 if c.service_class == VIP else 1, c.score, c.contact_id)
        if best is None or key < best:
            best = key
    return None if best is None else best[3]


def format_levels(levels: Mapping[str, int]) -> str:
    """``{"zh": 1, "refund": 2}`` -> ``"refund=2,zh=1"``: the form the Lua scripts parse."""
    return ",".join(f"{name}={int(level)}" for name, level in sorted(levels.items()))


def parse_levels(text: str) -> dict[str, int]:
    """Inverse of :func:`format_levels`."""
    out: dict[str, int] = {}
    for part in filter(None, text.split(",")):
        name, _, level = part.partition("=")
        out[name] = int(level)
    return out
