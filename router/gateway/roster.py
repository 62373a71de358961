"""The agent roster: each agent's routing profile (skills with levels, capacity per channel)
kept in Redis, one hash per routing domain (the routing state's ``roster`` key: agent id ->
JSON, router/routing/state.py).

The gateway logs an agent in with its roster profile. A change (``peakroute agents set``, the
supervisor console) is written here and published as ``agent.profile_changed.v1`` on
agents.events, so the routing stage re-seats a logged-in agent at once and audits who did it.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
import yaml

from router.decode import Decoder, Rejection
from router.errors import PeakrouteError
from router.events import AgentLoggedIn, AgentProfileChanged, Event
from router.routing import state
from router.routing.config import DomainPolicy
from router.routing.policy import memberships
from router.stage import now_ms

DEFAULT_CAPACITY = {"chat": 3}


class RosterError(PeakrouteError):
    """A profile or roster file that cannot be used (the message says where and why)."""


@dataclass(frozen=True, slots=True)
class Profile:
    agent_id: str
    skills: dict[str, int]
    capacity: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_CAPACITY))
    name: str = ""
    updated_by: str = ""
    updated_ms: int = 0
    disabled: bool = False  # kept in the roster, but may not sign in

    def to_json(self) -> bytes:
        return orjson.dumps({"skills": self.skills, "capacity": self.capacity, "name": self.name,
                             "updated_by": self.updated_by, "updated_ms": self.updated_ms,
                             "disabled": self.disabled})

    @classmethod
    def from_json(cls, agent_id: str, raw: bytes | str) -> Profile:
        d = orjson.loads(raw)
        return cls(agent_id, {str(k): int(v) for k, v in d["skills"].items()},
                   {str(k): int(v) for k, v in d["capacity"].items()}, str(d.get("name", "")),
                   str(d.get("updated_by", "")), int(d.get("updated_ms", 0)),
                   bool(d.get("disabled", False)))

    def as_dict(self) -> dict[str, Any]:
        return {"agent_id": self.agent_id, "name": self.name, "skills": self.skills,
                "capacity": self.capacity, "updated_by": self.updated_by,
                "updated_ms": self.updated_ms, "disabled": self.disabled}


def parse_levels(text: str, what: str = "skills") -> dict[str, int]:
    """``"zh=2,refunds=1"`` (commas, semicolons or spaces) -> ``{"zh": 2, "refunds": 1}``."""
    out: dict[str, int] = {}
    for part in text.replace(";", ",").replace(" ", ",").split(","):
        if not part:
            continue
        name, sep, level = part.partition("=")
        if not sep or not level.strip().lstrip("-").isdigit():
            raise RosterError(f"{what}: {part!r} is not name=number (e.g. zh=2,refunds=1)")
        out[name.strip()] = int(level)
    return out


def check(profile: Profile, domain: str) -> None:
    """The profile against the event contract (the same rules the router applies)."""
    probe = AgentLoggedIn(event_id="roster-check", ts_ms=now_ms(), agent_id=profile.agent_id,
                          domain=domain, skills=profile.skills, capacity=profile.capacity)
    result = Decoder().decode(probe.to_json(), "agents_events")
    if isinstance(result, Rejection):
        raise RosterError(f"agent {profile.agent_id!r}: {result.detail} ({result.reason.value})")


def read_file(path: Path) -> list[Profile]:
    """Profiles from a roster file: CSV (``agent_id,name,skills,capacity`` with skills like
    ``zh=2;refunds=1``) or YAML/JSON (a list of {agent_id, name, skills, capacity} objects)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RosterError(f"{path}: cannot read it ({exc.strerror})") from None
    if path.suffix.lower() == ".csv":
        return _from_csv(text, path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RosterError(f"{path}: not valid YAML/JSON ({exc})") from None
    if isinstance(data, dict) and "agents" in data:
        data = data["agents"]
    if not isinstance(data, list):
        raise RosterError(f"{path}: expected a list of agents (or `agents:` with one)")
    out = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or "agent_id" not in item or "skills" not in item:
            raise RosterError(f"{path}: entry {i + 1} needs agent_id and skills")
        skills, cap = item["skills"], item.get("capacity", DEFAULT_CAPACITY)
        out.append(Profile(
            str(item["agent_id"]),
            parse_levels(skills) if isinstance(skills, str) else _levels(skills, path, i),
            parse_levels(cap, "capacity") if isinstance(cap, str) else _levels(cap, path, i),
            str(item.get("name", ""))))
    return out


def _levels(value: Any, path: Path, i: int) -> dict[str, int]:
    if not isinstance(value, Mapping) or not all(isinstance(v, int) for v in value.values()):
        raise RosterError(f"{path}: entry {i + 1}: skills and capacity are {{name: number}}")
    return {str(k): int(v) for k, v in value.items()}


def _from_csv(text: str, path: Path) -> list[Profile]:
    rows = list(csv.DictReader(io.StringIO(text)))
    out = []
    for n, row in enumerate(rows, start=2):
        if not row.get("agent_id") or row.get("skills") is None:
            raise RosterError(f"{path}:{n}: needs agent_id and skills columns")
        try:
            cap = row.get("capacity") or ""
            out.append(Profile(row["agent_id"].strip(), parse_levels(row["skills"]),
                               parse_levels(cap, "capacity") if cap else dict(DEFAULT_CAPACITY),
                               (row.get("name") or "").strip()))
        except RosterError as exc:
            raise RosterError(f"{path}:{n}: {exc}") from None
    return out


def roster_key(domain: str) -> str:
    return state.roster_key(domain)


def served_queues(skills: Mapping[str, int], policy: DomainPolicy) -> list[str]:
    """The policy's queues whose rings this profile can serve (queue membership follows skills)."""
    return sorted({m.lane.partition(".")[0] for m in memberships(dict(skills), policy)})


def change_event(profile: Profile, domain: str, changed_by: str, reason: str = "") -> Event:
    return AgentProfileChanged(
        event_id=uuid.uuid4().hex, ts_ms=now_ms(), agent_id=profile.agent_id, domain=domain,
        skills=profile.skills, capacity=profile.capacity, changed_by=changed_by,
        reason=reason[:64])


class Roster:
    """Profiles of one Redis, by domain."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client

    async def get(self, domain: str, agent_id: str) -> Profile | None:
        raw = await self.redis.hget(roster_key(domain), agent_id)
        return None if raw is None else Profile.from_json(agent_id, raw)

    async def all(self, domain: str) -> list[Profile]:
        raw = await self.redis.hgetall(roster_key(domain))
        return sorted((Profile.from_json(k.decode() if isinstance(k, bytes) else k, v)
                       for k, v in raw.items()), key=lambda p: p.agent_id)

    async def put(self, domain: str, profiles: Iterable[Profile], by: str) -> int:
        items = list(profiles)
        for p in items:
            check(p, domain)
        if not items:
            return 0
        stamp = now_ms()
        mapping = {p.agent_id: Profile(p.agent_id, p.skills, p.capacity, p.name, by,
                                       stamp, p.disabled).to_json() for p in items}
        await self.redis.hset(roster_key(domain), mapping=mapping)  # type: ignore[arg-type]
        return len(items)

    async def remove(self, domain: str, agent_id: str) -> bool:
        """Take the agent out of the roster; False if it was not in it."""
        return bool(await self.redis.hdel(roster_key(domain), agent_id))
