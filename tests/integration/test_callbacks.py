"""Queued callbacks on a real Redis with a simulated clock: the customer leaves the line and
keeps their place; the contact is offered as a callback (its own channel capacity) when an
agent with a callback slot finds it most urgent; leaving the chat does not abandon it."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from router.events import (
    AgentLoggedIn,
    CustomerCallbackRequested,
    CustomerLeft,
    RoutingRequested,
)
from router.routing import state
from router.routing.stage import transition_outputs
from tests.integration._clocked import ClockedRun

pytestmark = pytest.mark.integration

POLICY = """
domains:
  "*":
    capacity: {chat: 1, callback: 1}
    queues:
      general:
        skills: {general: 1}
"""


class Run(ClockedRun):
    def __init__(self, client: aioredis.Redis) -> None:
        super().__init__(client, POLICY, name="cb")

    def request(self, cid: str) -> RoutingRequested:
        self.now += 1
        return RoutingRequested(event_id=self.eid(), ts_ms=self.now, contact_id=cid,
                                domain=self.domain)

    def callback(self, cid: str) -> CustomerCallbackRequested:
        return CustomerCallbackRequested(event_id=self.eid(), ts_ms=self.now, contact_id=cid,
                                         domain=self.domain, callback_to="tel:+8613800000000")


async def test_a_callback_keeps_its_place_and_is_offered_as_a_callback(
        store_redis: aioredis.Redis) -> None:
    run = Run(store_redis)
    for cid in ("c1", "c2", "c3"):
        await run.apply(run.request(cid))
    got = await run.apply(run.callback("c2"))
    assert [t.kind for t in got] == ["callback"]
    d = await state.dump(run.client, run.domain)
    c2 = d.contacts["c2"]
    assert (c2.state, c2.channel, c2.callback_to) == ("queued", "callback", "tel:+8613800000000")
    assert d.waiting["general.zh:callback:n:0"] == ["c2"]
    assert d.waiting["general.zh:chat:n:0"] == ["c1", "c3"]
    # The customer's chat goes away: the callback is not abandoned.
    assert [t.kind for t in await run.apply(CustomerLeft(
        event_id=run.eid(), ts_ms=run.now, contact_id="c2", domain=run.domain))] == ["stale"]
    # An agent with a chat slot and a callback slot: the head of the chat line and the
    # callback, each on its own capacity.
    got = await run.apply(AgentLoggedIn(event_id=run.eid(), ts_ms=run.now, agent_id="a",
                                        domain=run.domain, skills={"zh": 1, "general": 1},
                                        capacity={"chat": 1, "callback": 1}))
    offers = {t.contact_id: t for t in got if isinstance(t, state.Offered)}
    assert set(offers) == {"c1", "c2"}
    assert offers["c2"].channel == "callback"
    assignment = transition_outputs(offers["c2"], run.now)[1].event.to_dict()
    assert (assignment["channel"], assignment["callback_to"]) == (
        "callback", "tel:+8613800000000")


async def test_only_a_waiting_contact_can_become_a_callback(
        store_redis: aioredis.Redis) -> None:
    run = Run(store_redis)
    assert [t.kind for t in await run.apply(run.callback("nobody"))] == ["stale"]
    await run.apply(AgentLoggedIn(event_id=run.eid(), ts_ms=run.now, agent_id="a",
                                  domain=run.domain, skills={"zh": 1, "general": 1},
                                  capacity={"chat": 1}))
    assert [t.kind for t in await run.apply(run.request("c1"))] == ["offered"]
    assert [t.kind for t in await run.apply(run.callback("c1"))] == ["stale"]
