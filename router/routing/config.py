"""The routing policy file: YAML in, validated typed policy out.

Every error names the file, the offending key (as a dotted path) and the fix. The format is
documented in docs/ROUTING.md; the shipped default is ``router/routing/default_policy.yaml``.
"""

from __future__ import annotations

import enum
import hashlib
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from router.errors import PolicyError
from router.events import Channel
from router.settings import Settings

SKILL_RE = re.compile(r"[A-Za-z0-9._:@-]{1,64}")
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
LEVELS = (1, 10)
MAX_RINGS = 8


class Strategy(enum.StrEnum):
    """How a queue picks among the free agents of one ring."""

    LONGEST_IDLE = "longest_idle"  # the most skilled first, then the one idle longest
    LEAST_OCCUPIED = "least_occupied"  # the lowest share of capacity in use, then idle longest
    ROUND_ROBIN = "round_robin"  # the one this queue offered to least recently


class AgentOutcome(enum.StrEnum):
    """What a decline or an unanswered offer does to the agent."""

    READY = "ready"
    NOT_READY = "not_ready"


@dataclass(frozen=True, slots=True)
class Ring:
    after_s: float  # ring 0 opens at once; later rings after this much waiting
    skills: dict[str, int]


@dataclass(frozen=True, slots=True)
class ServiceClass:
    target_s: float
    weight: float


@dataclass(frozen=True, slots=True)
class Queue:
    name: str
    rings: tuple[Ring, ...]  # rings[0] is the queue's own skills, after_s 0
    normal: ServiceClass
    vip: ServiceClass
    strategy: Strategy

    @property
    def skills(self) -> dict[str, int]:
        return self.rings[0].skills


@dataclass(frozen=True, slots=True)
class DomainPolicy:
    queues: dict[str, Queue]
    default_queue: str
    priority_step_s: float
    offer_timeout_s: float
    on_no_answer: AgentOutcome
    on_decline: AgentOutcome
    language_skill: bool
    capacity: dict[str, int]
    # The preferred agent's ring: only that agent for this long after the escalation (0: no
    # preferred ring), and how long the customer's last agent counts as preferred.
    preferred_ring_s: float = 0.0
    preferred_history_s: float = 0.0
    # What router/routing/policy.py works out once per policy (lane rings, request plans):
    # kept on the policy itself, so it lives and goes with it.
    derived: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    domains: dict[str, DomainPolicy]  # by domain name; "*" applies to any other domain
    source: str = "<built-in>"
    digest: str = ""  # sha256 of the file, to see which policy a worker runs
    _cache: dict[str, DomainPolicy] = field(default_factory=dict, compare=False, repr=False)

    def for_domain(self, domain: str) -> DomainPolicy:
        found = self.domains.get(domain) or self.domains.get("*")
        if found is None:
            raise PolicyError(f"{self.source}: no policy for routing domain {domain!r}; add it "
                              "under domains, or add a \"*\" entry that covers every domain")
        return found


DEFAULT_POLICY = "default_policy.yaml"


def load_policy(path: str | Path | None = None,
                base: Mapping[str, Any] | None = None) -> RoutingPolicy:
    """Read and validate a policy file; ``None`` or "" reads the shipped default. ``base``
    supplies defaults the file does not set (service_target_s, offer_timeout_s: from Settings,
    see :func:`settings_base`)."""
    if not path:
        text = (resources.files("router.routing") / DEFAULT_POLICY).read_text()
        return parse_policy(text, f"<built-in {DEFAULT_POLICY}>", base)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the routing policy ({exc.strerror}); "
                          "set PEAKROUTE_ROUTING_POLICY to a readable YAML file") from None
    return parse_policy(text, str(path), base)


def policy_from_settings(settings: Settings) -> RoutingPolicy:
    return load_policy(settings.routing_policy, settings_base(settings))


def settings_base(settings: Settings) -> dict[str, Any]:
    return {"service_target_s": settings.sla_target_s, "offer_timeout_s": settings.offer_timeout_s}


def parse_policy(text: str, source: str, base: Mapping[str, Any] | None = None) -> RoutingPolicy:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise PolicyError(f"{source}: not valid YAML{where}: fix the syntax") from None
    at = _At(source, "")
    doc = at.mapping(doc, {"version", "defaults", "domains"}, required={"domains"})
    if doc.get("version", 1) != 1 or isinstance(doc.get("version"), bool):
        raise at.child("version").error(f"unsupported version {doc['version']!r}", "write 1")
    defaults = at.child("defaults").mapping(doc.get("defaults", {}), _DOMAIN_KEYS | _QUEUE_KEYS)
    domains_at = at.child("domains")
    raw_domains = domains_at.mapping(doc["domains"], None)
    if not raw_domains:
        raise domains_at.error("no routing domain", 'add at least "*": {queues: {...}}')
    domains = {}
    for name, raw in raw_domains.items():
        d_at = domains_at.child(str(name))
        if name != "*":
            d_at.check_name(name, SKILL_RE, "a domain id of A-Z a-z 0-9 . _ : @ -")
        own = d_at.mapping(raw, _DOMAIN_KEYS | _QUEUE_KEYS)
        domains[str(name)] = _domain(d_at, {**(base or {}), **defaults, **own})
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return RoutingPolicy(domains, source, digest)


_DOMAIN_KEYS = {"queues", "default_queue", "priority_step_s", "offer_timeout_s", "on_no_answer",
                "on_decline", "language_skill", "capacity", "preferred_agent"}
_QUEUE_KEYS = {"skills", "service_target_s", "weight", "strategy", "vip", "rings"}
_BUILTIN: dict[str, Any] = {
    "service_target_s": 30.0, "weight": 1.0, "strategy": "longest_idle", "priority_step_s": 10.0,
    "offer_timeout_s": 20.0, "on_no_answer": "not_ready", "on_decline": "ready",
    "language_skill": True, "capacity": {"chat": 3, "voice": 1, "email": 5, "callback": 1},
    "preferred_agent": {"ring_s": 0, "history_s": 0},
}


def _domain(at: _At, raw: dict[str, Any]) -> DomainPolicy:
    merged = {**_BUILTIN, **raw}
    # A capacity given for some channels keeps the others' defaults.
    merged["capacity"] = {**_BUILTIN["capacity"], **(raw.get("capacity") or {})}
    q_at = at.child("queues")
    raw_queues = q_at.mapping(merged.get("queues"), None)
    if not raw_queues:
        raise q_at.error("no queue", "add at least one queue with its skills")
    queues = {}
    for name, q_raw in raw_queues.items():
        one = q_at.child(str(name))
        one.check_name(name, NAME_RE, "lower case letters, digits, _ and -, at most 32")
        queues[str(name)] = _queue(one, str(name), q_raw, merged)
    default_queue = merged.get("default_queue", next(iter(queues)))
    if default_queue not in queues:
        raise at.child("default_queue").error(
            f"{default_queue!r} is not a queue of this domain", f"use one of {sorted(queues)}")
    pref_at = at.child("preferred_agent")
    pref = {**_BUILTIN["preferred_agent"],
            **pref_at.mapping(merged["preferred_agent"], {"ring_s", "history_s"})}
    cap_at = at.child("capacity")
    capacity = {}
    for ch, n in cap_at.mapping(merged["capacity"], None).items():
        if ch not in Channel._value2member_map_:
            raise cap_at.error(f"unknown channel {ch!r}", "use chat, voice or email")
        capacity[str(ch)] = cap_at.child(str(ch)).integer(n, 0, 32)
    return DomainPolicy(
        queues=queues,
        default_queue=str(default_queue),
        priority_step_s=at.child("priority_step_s").number(merged["priority_step_s"], 0),
        offer_timeout_s=at.child("offer_timeout_s").number(merged["offer_timeout_s"], 1),
        on_no_answer=at.child("on_no_answer").choice(merged["on_no_answer"], AgentOutcome),
        on_decline=at.child("on_decline").choice(merged["on_decline"], AgentOutcome),
        language_skill=at.child("language_skill").flag(merged["language_skill"]),
        capacity=capacity,
        preferred_ring_s=pref_at.child("ring_s").number(pref["ring_s"], 0),
        preferred_history_s=pref_at.child("history_s").number(pref["history_s"], 0),
    )


def _queue(at: _At, name: str, raw: Any, inherited: Mapping[str, Any]) -> Queue:
    raw = at.mapping(raw, _QUEUE_KEYS, required={"skills"})
    merged = {k: inherited[k] for k in _QUEUE_KEYS if k in inherited} | raw
    normal = ServiceClass(
        at.child("service_target_s").number(merged.get("service_target_s", 30.0), 1),
        at.child("weight").number(merged.get("weight", 1.0), 0.01),
    )
    vip_at = at.child("vip")
    vip_raw = vip_at.mapping(merged.get("vip", {}), {"service_target_s", "weight"})
    vip = ServiceClass(
        vip_at.child("service_target_s").number(vip_raw.get("service_target_s", normal.target_s),
                                                1),
        vip_at.child("weight").number(vip_raw.get("weight", normal.weight), 0.01),
    )
    rings = [Ring(0.0, at.child("skills").skills(merged["skills"]))]
    r_at = at.child("rings")
    raw_rings = merged.get("rings") or []
    if not isinstance(raw_rings, list):
        raise r_at.error("must be a list", "write rings: [{after_s: 10, skills: {general: 1}}]")
    if len(raw_rings) > MAX_RINGS:
        raise r_at.error(f"{len(raw_rings)} rings", f"use at most {MAX_RINGS}")
    for i, ring in enumerate(raw_rings):
        one = r_at.index(i)
        ring = one.mapping(ring, {"after_s", "skills"}, required={"after_s", "skills"})
        after = one.child("after_s").number(ring["after_s"], 0.001)
        if after <= rings[-1].after_s:
            raise one.child("after_s").error(
                f"{after:g} s does not come after the previous ring ({rings[-1].after_s:g} s)",
                "list rings in order of increasing after_s")
        rings.append(Ring(after, one.child("skills").skills(ring["skills"])))
    strategy = at.child("strategy").choice(merged.get("strategy", "longest_idle"), Strategy)
    return Queue(name, tuple(rings), normal, vip, strategy)


class _At:
    """Where in the file a value sits, to name it in errors."""

    def __init__(self, source: str, path: str) -> None:
        self.source, self.path = source, path

    def child(self, key: str) -> _At:
        return _At(self.source, f"{self.path}.{key}" if self.path else key)

    def index(self, i: int) -> _At:
        return _At(self.source, f"{self.path}[{i}]")

    def error(self, problem: str, fix: str) -> PolicyError:
        where = self.path or "top level"
        return PolicyError(f"{self.source}: {where}: {problem}; fix: {fix}")

    def mapping(self, value: Any, allowed: set[str] | None,
                required: Collection[str] = ()) -> dict[str, Any]:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self.error(f"must be a mapping, got {type(value).__name__}",
                             "write key: value pairs")
        if allowed is not None:
            unknown = sorted(str(k) for k in value if k not in allowed)
            if unknown:
                raise self.child(unknown[0]).error("unknown key",
                                                   f"use one of {', '.join(sorted(allowed))}")
        for key in sorted(required):
            if key not in value:
                raise self.child(key).error("missing", f"add {key}")
        return value

    def number(self, value: Any, minimum: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value) or value < minimum:
            raise self.error(f"{value!r} is not a number >= {minimum:g}",
                             f"write a number of at least {minimum:g}")
        return float(value)

    def integer(self, value: Any, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.error(f"{value!r} is not a whole number in {lo}..{hi}",
                             f"write a whole number from {lo} to {hi}")
        return value

    def flag(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.error(f"{value!r} is not true or false", "write true or false")
        return value

    def choice(self, value: Any, kind: type[enum.StrEnum]) -> Any:
        allowed = [m.value for m in kind]
        if value not in allowed:
            raise self.error(f"{value!r} is not allowed", f"use one of {', '.join(allowed)}")
        return kind(value)

    def skills(self, value: Any) -> dict[str, int]:
        raw = self.mapping(value, None)
        if not raw:
            raise self.error("no skill", "name at least one skill with its minimum level, "
                             "e.g. {refunds: 1}")
        out = {}
        for name, level in raw.items():
            self.child(str(name)).check_name(name, SKILL_RE, "a skill id of A-Z a-z 0-9 . _ : @ -")
            out[str(name)] = self.child(str(name)).integer(level, *LEVELS)
        return out

    def check_name(self, name: Any, pattern: re.Pattern[str], what: str) -> None:
        if not isinstance(name, str) or not pattern.fullmatch(name):
            raise self.error(f"{name!r} is not a valid name", f"use {what}")
