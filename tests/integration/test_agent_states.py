"""Agent state transitions against a real Redis (no broker needed): offline withdraws offers."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis

from router.events import AgentLoggedIn, AgentState, AgentStateChanged, RoutingRequested
from router.routing.config import policy_from_settings
from router.routing.state import rows
from router.routing.store import RoutingStore, domain_live, domain_stats
from router.settings import Settings
from router.stack import standalone_redis
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



async def test_a_redis_without_functions_runs_the_routing_as_a_script(tmp_path: Path) -> None:
    """Redis older than 7 has no FUNCTION command (renamed away here, which answers the same
    "unknown command"): the store runs the same apply code as a script (EVALSHA), loads it
    again after a flush, and routes as on Redis 7."""
    no_functions = ["--rename-command", "FUNCTION", "", "--rename-command", "FCALL", ""]
    with standalone_redis(tmp_path / "redis", no_functions) as url:
        client = aioredis.Redis.from_url(url)
        settings = Settings()
        store = RoutingStore(client, settings, policy_from_settings(settings))
        now = now_ms()
        login = AgentLoggedIn(event_id="e1", ts_ms=now, agent_id="a1", domain="d1",
                              skills={"zh": 1, "general": 1}, capacity={"chat": 1})
        [logged_in] = await store.apply([login], now)
        assert not isinstance(logged_in, Exception)
        assert not store.functions
        await client.script_flush()
        [result] = await store.apply([RoutingRequested(
            event_id="e2", ts_ms=now, contact_id="c1", domain="d1", queue="general")], now)
        assert not isinstance(result, Exception)
        [offered] = rows(result)
        assert (offered.kind, offered.agent_id) == ("offered", "a1")
        assert (await domain_stats(client, "d1"))["offered"] == 1
        await client.aclose()
