"""The preferred agent's ring on a real Redis with a simulated clock: a named agent or the
customer's last agent is offered the contact first, only while logged in and not offline; an
absent one costs no wait; the ring ends after the policy's time; every choice is audited."""

from __future__ import annotations

import dataclasses

import pytest
import redis.asyncio as aioredis

from router.events import (
    AgentLoggedIn,
    AgentLoggedOut,
    AgentState,
    AgentStateChanged,
    ContactCompleted,
    OfferAccepted,
    RoutingRequested,
    RoutingRequestedV2,
)
from router.routing import state
from router.routing.stage import transition_outputs
from router.routing.state import Transition
from router.routing.store import RoutingStore
from router.settings import Settings
from tests.integration._clocked import ClockedRun

pytestmark = pytest.mark.integration

POLICY = """
domains:
  "*":
    offer_timeout_s: 20
    preferred_agent: {ring_s: 10, history_s: 3600}
    queues:
      general:
        skills: {general: 1}
"""
ZH = {"zh": 1, "general": 1}


class Run(ClockedRun):
    def __init__(self, client: aioredis.Redis, policy: str = POLICY) -> None:
        super().__init__(client, policy, name="pa")

    async def login(self, aid: str, ready: bool = True) -> list[Transition]:
        return await self.apply(AgentLoggedIn(
            event_id=self.eid(), ts_ms=self.now, agent_id=aid, domain=self.domain, skills=ZH,
            capacity={"chat": 1}, ready=ready))

    def request(self, cid: str, customer: str | None = None,
                preferred: str | None = None) -> RoutingRequestedV2:
        return RoutingRequestedV2(event_id=self.eid(), ts_ms=self.now, contact_id=cid,
                                  domain=self.domain, customer_id=customer,
                                  preferred_agent=preferred)


def kinds(ts: list[Transition]) -> list[tuple[str, str]]:
    return [(t.kind, t.agent_id) for t in ts]


async def test_named_preferred_agent_is_offered_first_even_when_another_idled_longer(
        store_redis: aioredis.Redis) -> None:
    run = Run(store_redis)
    await run.login("long-idle")
    run.now += 5_000
    await run.login("pref")
    got = await run.apply(run.request("c1", preferred="pref"))
    assert kinds(got) == [("preferred", "pref"), ("offered", "pref")]
    assert isinstance(got[1], state.Offered)
    assert got[1].preferred
    offer = transition_outputs(got[1], run.now)[1].event
    assert offer.to_dict()["preferred"] is True
    pref = got[0]
    assert isinstance(pref, state.Preferred)
    assert pref.used
    assert pref.source == "named"
    audit = transition_outputs(pref, run.now)[0].event
    assert audit.to_dict()["decision"] == "preferred"
    assert audit.to_dict()["reason"] == "named:used"


async def test_busy_preferred_agent_keeps_the_contact_for_its_ring_then_normal_rings(
        store_redis: aioredis.Redis) -> None:
    run = Run(store_redis)
    await run.login("pref", ready=False)  # logged in, not ready: its ring holds
    await run.login("other")
    got = await run.apply(run.request("c1", preferred="pref"))
    assert kinds(got) == [("preferred", "pref"), ("queued", "")]
    d = await state.dump(run.client, run.domain)
    assert d.preferred == {"pref": ["c1"]}
    assert d.waiting == {}
    assert [t.kind for t in await run.tick(9_000)] == []  # "other" is free, but not preferred
    ended = await run.tick(1_000)
    assert [(t.kind, t.agent_id, getattr(t, "reason", "")) for t in ended] == [
        ("relaxed", "", "preferred_ring_over"), ("offered", "other", "")]


async def test_preferred_agent_becoming_ready_within_its_ring_takes_the_contact(
        store_redis: aioredis.Redis) -> None:
    run = Run(store_redis)
    await run.login("pref", ready=False)
    await run.login("other")
    await run.apply(run.request("c1", preferred="pref"))
    run.now += 3_000
    got = await run.apply(AgentStateChanged(event_id=run.eid(), ts_ms=run.now, agent_id="pref",
                                            domain=run.domain, state=AgentState.READY))
    assert ("offered", "pref") in kinds(got)


@pytest.mark.parametrize("how", ["never_logged_in", "logged_out", "offline"])
async def test_absent_or_offline_preferred_agent_costs_no_wait(
        store_redis: aioredis.Redis, how: str) -> None:
    run = Run(store_redis)
    await run.login("other")
    if how != "never_logged_in":
        await run.login("pref")
        if how == "logged_out":
            await run.apply(AgentLoggedOut(event_id=run.eid(), ts_ms=run.now, agent_id="pref",
                                           domain=run.domain))
        else:
            await run.apply(AgentStateChanged(event_id=run.eid(), ts_ms=run.now,
                                              agent_id="pref", domain=run.domain,
                                              state=AgentState.OFFLINE))
    got = await run.apply(run.request("c1", preferred="pref"))
    assert kinds(got) == [("preferred", "pref"), ("offered", "other")]
    assert isinstance(got[0], state.Preferred)
    assert not got[0].used
    assert isinstance(got[1], state.Offered)
    assert not got[1].preferred
    assert got[0].reason == "absent"


async def test_preferred_agent_logging_out_during_its_ring_releases_the_contact_at_once(
        store_redis: aioredis.Redis) -> None:
    run = Run(store_redis)
    await run.login("pref", ready=False)
    await run.login("other")
    await run.apply(run.request("c1", preferred="pref"))
    got = await run.apply(AgentLoggedOut(event_id=run.eid(), ts_ms=run.now + 1_000,
                                         agent_id="pref", domain=run.domain))
    assert [(t.kind, t.agent_id) for t in got if t.contact_id == "c1"] == [
        ("relaxed", ""), ("offered", "other")]


async def test_customers_last_agent_within_the_window_is_preferred(
        store_redis: aioredis.Redis) -> None:
    run = Run(store_redis)
    await run.login("first")
    await run.login("second")
    offered = [t for t in await run.apply(run.request("c1", customer="cust-9"))
               if isinstance(t, state.Offered)]
    agent, oid = offered[0].agent_id, offered[0].offer_id
    await run.apply(OfferAccepted(event_id=run.eid(), ts_ms=run.now, agent_id=agent,
                                  domain=run.domain, offer_id=oid, contact_id="c1"))
    await run.apply(ContactCompleted(event_id=run.eid(), ts_ms=run.now, agent_id=agent,
                                     domain=run.domain, contact_id="c1"))
    run.now += 60_000  # the agent who answered has now been idle the shortest
    got = await run.apply(run.request("c2", customer="cust-9"))
    assert kinds(got) == [("preferred", agent), ("offered", agent)]
    assert isinstance(got[0], state.Preferred)
    assert got[0].source == "last_agent"
    await run.apply(OfferAccepted(event_id=run.eid(), ts_ms=run.now, agent_id=agent,
                                  domain=run.domain, offer_id=got[1].offer_id,  # type: ignore[union-attr]
                                  contact_id="c2"))
    # Past the history window (the timer forgets it), the customer has no last agent.
    await run.tick(3_600_000 + 1)
    assert await run.client.hget(state.key(run.domain, state.Key.LAST_AGENT), "cust-9") is None
    got = await run.apply(run.request("c3", customer="cust-9"))
    assert [t.kind for t in got] == ["offered"]


async def test_v1_request_has_no_preferred_agent(store_redis: aioredis.Redis) -> None:
    run = Run(store_redis)
    await run.login("a")
    got = await run.apply(RoutingRequested(event_id=run.eid(), ts_ms=run.now, contact_id="c1",
                                           domain=run.domain))
    assert kinds(got) == [("offered", "a")]


async def test_preferred_ring_off_in_the_policy_is_audited_as_disabled(
        store_redis: aioredis.Redis) -> None:
    run = Run(store_redis, POLICY.replace("ring_s: 10", "ring_s: 0"))
    await run.login("other")
    await run.login("pref", ready=False)
    got = await run.apply(run.request("c1", preferred="pref"))
    assert kinds(got) == [("preferred", "pref"), ("offered", "other")]
    assert isinstance(got[0], state.Preferred)
    assert got[0].reason == "disabled"


async def test_the_docs_v2_example_under_the_shipped_policy_prefers_its_agent(
        store_redis: aioredis.Redis) -> None:
    """docs/EVENTS.md's routing.requested.v2, decoded as the stage decodes it and routed with
    the shipped policy: its preferred agent is offered the contact over a more skilled one."""
    from router.decode import Decoder
    from router.routing.config import load_policy
    from tests.integration.test_kcat import example
    run = Run(store_redis)
    run.store = RoutingStore(store_redis, Settings(), load_policy())
    event = Decoder().decode(example("routing.requested.v2").encode(), "routing_requests")
    assert isinstance(event, RoutingRequestedV2)
    event = dataclasses.replace(event, domain=run.domain, ts_ms=run.now)
    for aid, level in (("rival", 9), (event.preferred_agent, 1)):
        await run.apply(AgentLoggedIn(event_id=run.eid(), ts_ms=run.now, agent_id=str(aid),
                                      domain=run.domain, capacity={"chat": 3},
                                      skills={"zh": 1, "orders": level, "general": level}))
    got = await run.apply(event)
    assert kinds(got) == [("preferred", event.preferred_agent), ("offered", event.preferred_agent)]
