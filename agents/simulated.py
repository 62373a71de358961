"""Simulated agents built on the agents client: they log in, accept offers after a human-like
delay, handle contacts for a lognormal time, complete them, and come back after a redirect."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from agents.client import AgentBus, AgentDesktop
from router.events import AgentState, AssignmentOffered, AssignmentRescinded

# The skills of the default routing policy's queues (router/routing/default_policy.yaml).
TOPIC_SKILLS = ("orders", "presale", "refunds", "payment", "security", "complaints")


@dataclass(frozen=True, slots=True)
class AgentProfile:
    agent_id: str
    skills: dict[str, int]
    capacity: dict[str, int]


def roster(count: int, domain: str, seed: int = 7) -> list[AgentProfile]:
    """A realistic mix: most agents speak Chinese, some English, a few both; everyone handles
    general questions; each agent has two to four topic skills at levels 1-3."""
    rng = random.Random(seed)
    profiles = []
    for i in range(count):
        skills = {"general": rng.randint(1, 3)}
        draw = rng.random()
        if draw < 0.65:
            skills["zh"] = rng.randint(1, 3)
        elif draw < 0.85:
            skills["en"] = rng.randint(1, 3)
        else:
            skills["zh"] = rng.randint(1, 3)
            skills["en"] = rng.randint(1, 3)
        for topic in rng.sample(TOPIC_SKILLS, rng.randint(2, 4)):
            skills[topic] = rng.randint(1, 3)
        profiles.append(AgentProfile(f"{domain}-agent-{i:04d}", skills,
                                     {"chat": rng.choice((2, 3, 3, 4))}))
    return profiles


@dataclass
class Behaviour:
    accept_delay_s: tuple[float, float] = (0.2, 1.5)  # uniform
    handle_mean_s: float = 8.0  # lognormal mean
    handle_sigma: float = 0.5
    back_after_redirect_s: float = 2.0  # ready again after a no-answer redirect


@dataclass
class PoolStats:
    offers: int = 0
    accepted: int = 0
    completed: int = 0
    rescinded: int = 0


@dataclass
class SimulatedAgent:
    desk: AgentDesktop
    profile: AgentProfile
    behaviour: Behaviour
    stats: PoolStats
    rng: random.Random
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    rescinded: set[str] = field(default_factory=set)

    async def run(self) -> None:
        await self.desk.login(self.profile.skills, self.profile.capacity)
        while True:
            notice = await self.desk.inbox.get()
            if isinstance(notice, AssignmentOffered):
                self.stats.offers += 1
                self._spawn(self._take(notice))
            elif isinstance(notice, AssignmentRescinded):
                self.stats.rescinded += 1
                self.rescinded.add(notice.offer_id)
                if notice.reason == "no_answer":
                    self._spawn(self._come_back())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _take(self, offer: AssignmentOffered) -> None:
        await asyncio.sleep(self.rng.uniform(*self.behaviour.accept_delay_s))
        if offer.offer_id in self.rescinded:
            return
        await self.desk.accept(offer)
        self.stats.accepted += 1
        mu = math.log(self.behaviour.handle_mean_s) - self.behaviour.handle_sigma**2 / 2
        await asyncio.sleep(self.rng.lognormvariate(mu, self.behaviour.handle_sigma))
        await self.desk.complete(offer.contact_id, wrap_up="resolved")
        self.stats.completed += 1

    async def _come_back(self) -> None:
        await asyncio.sleep(self.behaviour.back_after_redirect_s)
        await self.desk.set_state(AgentState.READY, "back_from_redirect")

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


class AgentPool:
    """Many simulated agents sharing one AgentBus."""

    def __init__(self, bus: AgentBus, profiles: list[AgentProfile], domain: str,
                 behaviour: Behaviour | None = None, seed: int = 11) -> None:
        self.bus = bus
        self.stats = PoolStats()
        rng = random.Random(seed)
        self.agents = [
            SimulatedAgent(bus.desktop(p.agent_id, domain), p, behaviour or Behaviour(),
                           self.stats, random.Random(rng.random()))
            for p in profiles
        ]
        self._runners: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._runners = [asyncio.create_task(a.run(), name=a.profile.agent_id)
                         for a in self.agents]
        await asyncio.sleep(0)
        await self.bus.flush()

    async def stop(self, logout: bool = True) -> None:
        for runner in self._runners:
            runner.cancel()
        for runner in self._runners:
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        for agent in self.agents:
            await agent.stop()
            if logout:
                await agent.desk.logout()
        await self.bus.flush()
