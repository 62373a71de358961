"""Pure routing policy (no I/O): which lanes and pools an agent serves, and where a request
goes (queue, lane, service class, target, rings, place in line).

The Redis scripts execute the choices with indexes (scripts/common.lua): an agent's
*memberships* (computed here at login) say which lanes it serves from which ring, its *seats*
which free-agent pools it sits in; a request's *plan* says which lane, rings and pools it uses.
The reference choices the property tests hold the scripts to are the tests' oracle
(tests/oracle.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from router.events import Language, RoutingRequested, Tier
from router.routing.config import DomainPolicy, Queue, Ring, Strategy
from router.routing.state import ServiceClass

MAX_RANK = 100  # an agent's rank in a pool is capped here (common.lua scores with it)
LANGUAGES = tuple(lang.value for lang in Language)
VIP, NORMAL = ServiceClass.VIP.value, ServiceClass.NORMAL.value


@dataclass(frozen=True, slots=True)
class Membership:
    """An agent serves lane ``lane`` from ring ``ring`` on (rings are cumulative: a contact
    relaxed to ring 2 is visible to agents of rings 0, 1 and 2). Agent-driven matching walks
    these; ``pool`` is the free-agent index of that ring, ``rank`` the agent's rank in it."""

    lane: str
    ring: int
    rings: int  # how many rings the lane has (the agent sees contacts relaxed up to the last)
    pool: str = ""
    rank: int = 0
    strategy: Strategy = Strategy.LONGEST_IDLE

    def encode(self) -> str:
        return f"{self.lane}|{self.ring}|{self.rings}"


@dataclass(frozen=True, slots=True)
class Seat:
    """An agent's place in one pool: the free-agent index of one skill requirement (a ring of
    one or more lanes: lanes whose rings ask for the same skills share it)."""

    pool: str
    rank: int
    strategy: Strategy

    def encode(self) -> str:
        return f"{self.pool}|{self.rank}|{self.strategy.value}"

    @classmethod
    def decode_all(cls, text: str) -> list[Seat]:
        out = []
        for item in filter(None, text.split(";")):
            pool, rank_, strategy = item.split("|")
            out.append(cls(pool, int(rank_), Strategy(strategy)))
        return out


def lane_name(queue: str, language: str, language_skill: bool) -> str:
    """Queue and language: the unit that has its own waiting list and free-agent index."""
    return f"{queue}.{language}" if language_skill else queue


def meets(skills: Mapping[str, int], required: Mapping[str, int]) -> bool:
    return all(skills.get(name, 0) >= level for name, level in required.items())


def rank(skills: Mapping[str, int], required: Mapping[str, int]) -> int:
    """How skilled an agent is for a requirement: the sum of its levels on those skills."""
    return min(MAX_RANK, sum(min(skills.get(name, 0), 10) for name in required))


def requirement(ring: Ring, language: str) -> dict[str, int]:
    """What an agent needs to take a contact of this language at this ring."""
    if not language:
        return dict(ring.skills)
    return {**ring.skills, language: max(ring.skills.get(language, 0), 1)}


def pool_id(required: Mapping[str, int], strategy: Strategy) -> str:
    """``{"general": 2, "zh": 1}`` -> ``"general=2,zh=1~longest_idle"``."""
    return f"{format_levels(required)}~{strategy.value}"


def lanes(policy: DomainPolicy) -> Iterator[tuple[str, Queue, str]]:
    """(lane, queue, language) for every lane of a domain."""
    for queue in policy.queues.values():
        for language in (LANGUAGES if policy.language_skill else ("",)):
            yield lane_name(queue.name, language, policy.language_skill), queue, language


def lane_skills(policy: DomainPolicy, lane: str) -> dict[str, int]:
    """What a lane's ring 0 asks for (the skills an offer names); {} for an unknown lane."""
    queue_name, _, language = lane.partition(".")
    queue = policy.queues.get(queue_name)
    return requirement(queue.rings[0], language) if queue else {}


def ring_pools(queue: Queue, language: str) -> tuple[str, ...]:
    return tuple(pool_id(requirement(ring, language), queue.strategy) for ring in queue.rings)


@dataclass(frozen=True, slots=True)
class _LaneRing:
    lane: str
    index: int
    rings: int
    need: tuple[tuple[str, int], ...]
    ranked: tuple[str, ...]  # the ring's own skills (rank counts these)
    pool: str
    strategy: Strategy


def _lane_rings(policy: DomainPolicy) -> list[list[_LaneRing]]:
    """Every lane's rings with requirement and pool, worked out once per policy (logins of a
    whole shift go through this) and kept on it."""
    hit: list[list[_LaneRing]] | None = policy.derived.get("lane_rings")
    if hit is not None:
        return hit
    compiled = []
    for lane, queue, language in lanes(policy):
        rings = []
        for index, ring in enumerate(queue.rings):
            need = requirement(ring, language)
            rings.append(_LaneRing(lane, index, len(queue.rings), tuple(need.items()),
                                   tuple(ring.skills), pool_id(need, queue.strategy),
                                   queue.strategy))
        compiled.append(rings)
    policy.derived["lane_rings"] = compiled
    return compiled


def _meets(skills: Mapping[str, int], need: tuple[tuple[str, int], ...]) -> bool:
    return all(skills.get(name, 0) >= level for name, level in need)


def memberships(skills: Mapping[str, int], policy: DomainPolicy) -> list[Membership]:
    """Every lane an agent serves, at the first ring whose skills (and language) it has."""
    out = []
    for rings in _lane_rings(policy):
        for r in rings:
            if _meets(skills, r.need):
                out.append(Membership(r.lane, r.index, r.rings, r.pool,
                                      rank(skills, dict.fromkeys(r.ranked, 1)), r.strategy))
                break
    return out


def seats(skills: Mapping[str, int], policy: DomainPolicy) -> list[Seat]:
    """Every pool an agent belongs to (each ring of each lane whose requirement it meets)."""
    found: dict[str, Seat] = {}
    for rings in _lane_rings(policy):
        for r in rings:
            if r.pool not in found and _meets(skills, r.need):
                found[r.pool] = Seat(r.pool, rank(skills, dict.fromkeys(r.ranked, 1)),
                                     r.strategy)
    return list(found.values())


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
    ring_pools: tuple[str, ...]  # the free-agent pool of each ring
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
    # The lane already requires the queue's skills and the contact's language at level 1.
    own = event.language.value if policy.language_skill else None
    extra = {name: level for name, level in event.skills.items()
             if level > queue.skills.get(name, 1 if name == own else 0)}
    key = ("plan", queue.name, event.language.value, vip)
    shared: RequestPlan | None = policy.derived.get(key)
    if shared is None:  # the part every contact of a lane shares, kept on the policy
        language = event.language.value if policy.language_skill else ""
        service = queue.vip if vip else queue.normal
        shared = policy.derived[key] = RequestPlan(
            queue=queue.name,
            lane=lane_name(queue.name, language, policy.language_skill),
            service_class=VIP if vip else NORMAL,
            target_ms=int(service.target_s * 1000),
            weight=service.weight,
            score=0,
            ring_delays_ms=tuple(int(ring.after_s * 1000) for ring in queue.rings),
            ring_pools=ring_pools(queue, language),
            strategy=queue.strategy,
        )
    step_ms = int(policy.priority_step_s * 1000)
    return dataclasses.replace(shared, score=queue_score(event.ts_ms, event.priority, step_ms),
                               extra_skills=extra, reason=reason)


def queue_score(escalated_at_ms: int, priority: int, step_ms: int) -> int:
    """Position in a waiting list: each priority point counts as ``step_ms`` of extra waiting."""
    return escalated_at_ms - priority * step_ms


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
