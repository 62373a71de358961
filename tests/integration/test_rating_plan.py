"""Merchant rating and the plan's history on a real Redis: three domains served well, so-so and
badly through the routing scripts (RoutingStore with a simulated clock, in the last complete
half hour), then `peakroute rating`, `peakroute status` and `peakroute plan --history` as
processes, reading what the scripts counted."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from router.events import (
    AgentLoggedIn,
    ContactCompleted,
    CustomerLeft,
    Event,
    OfferAccepted,
    RoutingRequested,
)
from router.routing import state as routing_state
from router.routing.config import policy_from_settings
from router.routing.store import RoutingStore
from router.settings import Settings
from tests.conftest import store_redis_url

pytestmark = pytest.mark.integration
HALF_HOUR_MS = 1_800_000


class Scenario:
    """One domain, one agent (capacity 1), contacts one after another on a simulated clock."""

    def __init__(self, store: RoutingStore, domain: str, t_ms: int) -> None:
        self.store, self.domain, self.t, self.n = store, domain, t_ms, 0

    async def step(self, event: Event, at_ms: int) -> list[Any]:
        [result] = await self.store.apply([event], at_ms)
        assert not isinstance(result, Exception), result
        self.store.ack_entries(result)  # as the stage does once Kafka has the outputs
        return routing_state.rows(result)

    async def login(self) -> None:
        await self.step(AgentLoggedIn(event_id=f"{self.domain}-l", ts_ms=self.t, agent_id="a1",
                                      domain=self.domain, skills={"zh": 1, "general": 1},
                                      capacity={"chat": 1}), self.t)

    async def answered(self, wait_s: float) -> None:
        cid, self.n = f"{self.domain}-c{self.n}", self.n + 1
        rows = await self.step(RoutingRequested(event_id=f"r-{cid}", ts_ms=self.t,
                                                contact_id=cid, domain=self.domain,
                                                queue="general"), self.t)
        [offer] = [r for r in rows if r.kind == "offered"]
        at = self.t + int(wait_s * 1000)
        await self.step(OfferAccepted(event_id=f"a-{cid}", ts_ms=at, agent_id="a1",
                                      domain=self.domain, offer_id=offer.offer_id,
                                      contact_id=cid), at)
        await self.step(ContactCompleted(event_id=f"d-{cid}", ts_ms=at + 1000, agent_id="a1",
                                         domain=self.domain, contact_id=cid), at + 1000)
        self.t = at + 2000

    async def abandoned(self, after_s: float) -> None:
        cid, self.n = f"{self.domain}-c{self.n}", self.n + 1
        await self.step(RoutingRequested(event_id=f"r-{cid}", ts_ms=self.t, contact_id=cid,
                                         domain=self.domain, queue="general"), self.t)
        at = self.t + int(after_s * 1000)
        await self.step(CustomerLeft(event_id=f"x-{cid}", ts_ms=at, contact_id=cid,
                                     domain=self.domain), at)
        self.t = at + 1000

    async def bot(self, arrived: int, contained: int) -> None:
        await self.store.record_bot_outcomes(
            [(self.domain, f"{self.domain}-b{i}", "contained" if i < contained else "escalating")
             for i in range(arrived)], self.t)


def _cli(settings: Settings, columns: int, *args: str, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, **settings.as_env(), "COLUMNS": str(columns),
               "PEAKROUTE_REDIS_URL": store_redis_url(settings), **(env or {})}
    return subprocess.run([sys.executable, "-m", "router.cli", *args], env=environ,
                          capture_output=True, text=True, timeout=60, check=False)


async def test_three_domains_are_rated_ranked_shown_and_planned_from(
    stack: Settings, store_redis: aioredis.Redis,
) -> None:
    store = RoutingStore(store_redis, stack, policy_from_settings(stack))
    # In the last complete half hour, so that `plan --history` counts every contact.
    start = int(time.time() * 1000) // HALF_HOUR_MS * HALF_HOUR_MS - HALF_HOUR_MS + 60_000
    tag = uuid.uuid4().hex[:6]
    good, mid, poor = (Scenario(store, f"r{tag}-{n}", start) for n in ("good", "mid", "poor"))
    for s in (good, mid, poor):
        await s.login()
    for _ in range(20):
        await good.answered(5)
    await good.bot(50, 30)
    for _ in range(15):
        await mid.answered(10)
    for _ in range(5):
        await mid.answered(40)
    for _ in range(3):
        await mid.abandoned(20)
    await mid.bot(50, 20)
    for _ in range(8):
        await poor.answered(25)
    for _ in range(10):
        await poor.answered(50)
    for _ in range(8):
        await poor.abandoned(30)
    await poor.bot(50, 5)
    assert poor.t < start + HALF_HOUR_MS - 60_000  # all inside the half hour

    proc = _cli(stack, 200, "rating", "--json", "--window", "1h")
    assert proc.returncode == 0, proc.stderr
    out = orjson.loads(proc.stdout)
    ours = [r for r in out["ratings"] if r["domain"].startswith(f"r{tag}-")]
    assert [r["domain"] for r in ours] == [good.domain, mid.domain, poor.domain]
    assert [r["rank"] for r in ours] == sorted(r["rank"] for r in ours)
    # good, by hand: SL 1 -> 1; within 1; speed 1 - 5/30; kept 1; bot 30/50:
    # 100 x (0.35 + 0.15 + 0.20 x 0.8333 + 0.20 + 0.10 x 0.6) = 92.7
    assert ours[0]["score"] == 92.7
    assert ours[0]["tier"] == "gold"
    assert ours[0]["contacts"] == 20
    # poor: SL 8/26 = 0.3077 -> 0.3846; within 8/18; speed 1 - (8x25 + 10x50)/30/18 = 0;
    # kept 1 - 8/26; bot 0.1: 100 x (0.1346 + 0.0667 + 0 + 0.1385 + 0.01) = 35.0
    assert ours[2]["score"] == 35.0
    assert ours[2]["tier"] == "basic"
    # mid: SL 15/23 -> 0.8152; within 0.75; speed 1 - (15x10 + 5x40)/30/20; kept 1 - 3/23;
    # bot 0.4: 100 x (0.2853 + 0.1125 + 0.0833 + 0.1739 + 0.04) = 69.5
    assert (ours[1]["score"], ours[1]["tier"]) == (69.5, "bronze")

    table = _cli(stack, 80, "rating", "--window", "1h")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    rows = [line.split() for line in lines if f"r{tag}-" in line]
    assert [row[2] for row in rows] == ["gold", "bronze", "basic"]

    for columns in (80, 200):
        view = _cli(stack, columns, "status", "--once", "--domain", poor.domain,
                    env={"PEAKROUTE_RATING_WINDOW": "1h"})
        assert view.returncode == 0, view.stderr
        assert all(len(line) <= columns for line in view.stdout.splitlines())
        assert "rating basic 35.0" in view.stdout

    plan = _cli(stack, 200, "plan", "--history", "--hours", "1", "--interval-min", "30",
                "--domain", mid.domain, "--json", "--aht", "60", "--what-if", "2")
    assert plan.returncode == 0, plan.stderr
    p = orjson.loads(plan.stdout)
    assert p["assumptions"]["containment"] == pytest.approx(20 / 50)
    assert "history" in p["assumptions"]["sources"]["containment"]
    assert len(p["intervals"]) == 2
    # the hour before the half hour under way: 23 contacts reached the queue in the second
    assert [round(i["to_humans"], 6) for i in p["intervals"]] == [0, 23]
    assert p["intervals"][1]["contacts"] == pytest.approx(23 / (1 - 0.4))
    assert p["peak"]["to_humans"] == pytest.approx(23)
    assert [w["containment"] for w in p["what_if_containment"]["points"]] == [
        0.38, 0.39, 0.4, 0.41, 0.42]
