"""Agent state transitions against a real Redis (no broker needed): offline withdraws offers."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from router.events import AgentLoggedIn, AgentState, AgentStateChanged, RoutingRequested
from router.routing.config import policy_from_settings
from router.routing.state import rows
from router.routing.store import RoutingStore, domain_live, domain_stats
from router.settings import Settings
from router.stage import now_ms

pytestmark = pytest.mark.integration


async def test_going_offline_rescinds_the_offer_and_requeues_the_contact(
    stack: Settings, store_redis: aioredis.Redis, domain: str,
) -> None:
    store = RoutingStore(store_redis, stack, policy_from_settings(stack))
    now = now_ms()
    login = AgentLoggedIn(event_id="e1", ts_ms=now, agent_id="a1", domain=domain,
                          skills={"zh": 1, "general": 1}, capacity={"chat": 1})
    request = RoutingRequested(event_id="e2", ts_ms=now, contact_id="c1", domain=domain,
                               skills={"zh": 1})
    offline = AgentStateChanged(event_id="e3", ts_ms=now, agent_id="a1", domain=domain,
                                state=AgentState.OFFLINE)
    results = await store.apply([login, request, offline], now)
    kinds = [t.kind for r in results if not isinstance(r, Exception) for t in rows(r)]
    assert kinds == ["logged_in", "offered", "rescinded", "queued", "logged_out"]
    assert await domain_live(store_redis, domain) == {"waiting": 1, "offered": 0}


async def test_a_redis_that_lost_its_scripts_gets_them_again_in_the_same_batch(
    stack: Settings, store_redis: aioredis.Redis, domain: str,
) -> None:
    """A restarted or flushed Redis answers NOSCRIPT (scripts) or "Function not found" (the
    apply library): the store loads them and re-sends just those calls (they did not run), so
    nothing is lost or applied twice."""
    store = RoutingStore(store_redis, stack, policy_from_settings(stack))
    now = now_ms()
    login = AgentLoggedIn(event_id="e1", ts_ms=now, agent_id="a1", domain=domain,
                          skills={"zh": 1, "general": 1}, capacity={"chat": 1})
    await store.apply([login], now)
    await store_redis.script_flush()
    await store_redis.function_flush()
    request = RoutingRequested(event_id="e2", ts_ms=now, contact_id="c1", domain=domain,
                               queue="general")
    [result] = await store.apply([request], now)
    assert not isinstance(result, Exception)
    [offered] = rows(result)
    assert (offered.kind, offered.agent_id) == ("offered", "a1")
    assert (await domain_stats(store_redis, domain))["offered"] == 1
