"""Simulated agents built on the agents client: they log in, accept offers after a human-like
delay, handle contacts for a lognormal time, complete them, and come back after a redirect."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import Callable, Coroutine
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
    # Load tests (issue 6): the handle-time law, unanswered offers and breaks.
    handle_dist: str = "lognormal"  # lognormal | exponential
    no_answer_ratio: float = 0.0  # share of offers the agent lets lapse
    break_every_s: float = 0.0  # mean time between breaks (exponential); 0 = no breaks
    break_s: float = 0.0  # length of a break (not ready, then ready again)
    # A fixed handle time per contact (a replay of given times), instead of drawing one.
    handle_time: Callable[[AssignmentOffered], float] | None = None

    def draw_handle_s(self, offer: AssignmentOffered, rng: random.Random) -> float:
        if self.handle_time is not None:
            return self.handle_time(offer)
        if self.handle_dist == "exponential":
            return rng.expovariate(1 / self.handle_mean_s)
        mu = math.log(self.handle_mean_s) - self.handle_sigma**2 / 2
        return rng.lognormvariate(mu, self.handle_sigma)


@dataclass
class PoolStats:
    offers: int = 0
    accepted: int = 0
    completed: int = 0
    rescinded: int = 0
    unanswered: int = 0  # offers let lapse on purpose (Behaviour.no_answer_ratio)
    breaks: int = 0


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
        if self.behaviour.break_every_s > 0:
            self._spawn(self._breaks())
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
        if self.behaviour.no_answer_ratio and self.rng.random() < self.behaviour.no_answer_ratio:
            self.stats.unanswered += 1
            return  # the offer lapses; the router redirects it and sets the agent not ready
        low, high = self.behaviour.accept_delay_s
        if high > 0:
            await asyncio.sleep(self.rng.uniform(low, high))
        if offer.offer_id in self.rescinded:
            return
        await self.desk.accept(offer)
        self.stats.accepted += 1
        await asyncio.sleep(self.behaviour.draw_handle_s(offer, self.rng))
        await self.desk.complete(offer.contact_id, wrap_up="resolved")
        self.stats.completed += 1

    async def _breaks(self) -> None:
        """Now and then the agent takes a break: not ready (offers stop; contacts in hand are
        finished), then ready again."""
        while True:
            await asyncio.sleep(self.rng.expovariate(1 / self.behaviour.break_every_s))
            await self.desk.set_state(AgentState.NOT_READY, "break")
            self.stats.breaks += 1
            await asyncio.sleep(self.behaviour.break_s)
            await self.desk.set_state(AgentState.READY, "back_from_break")

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
