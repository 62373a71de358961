"""The refusals only a Redis Cluster makes, made by a real one (three `redis-server
--cluster-enabled yes` primaries, tests/conftest.py: redis_cluster_stack), met by the routing
store through its cluster client:

- a domain's slot half moved (some keys MIGRATEd, the slot MIGRATING / IMPORTING): its script
  is refused TRYAGAIN until the move ends; the store raises it as transient (the batch is
  retried, nothing dead-lettered) and applies it once the slot has moved;
- every key of the slot moved, the slot still MIGRATING: the source answers ASK, the client
  follows it to the target, which refuses TRYAGAIN while the script's keys are not all there;
- the slot given to its new owner: the client's stale slot map meets MOVED and follows it;
- the slot not served by anyone: CLUSTERDOWN, transient, until it is served again.

Store level (no worker): the worker's transport retries whatever ``transient.kind_of`` calls a
dependency failure (tests/integration/test_redis_refusals.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis

from load_tests import redis_cluster
from router.events import AgentLoggedIn, RoutingRequested
from router.redis_client import ready
from router.redis_client import redis_client as cluster_client
from router.routing.config import policy_from_settings
from router.routing.store import RoutingStore, domain_stats
from router.settings import Settings
from router.stack import EmbeddedStack
from router.transient import Kind, TransientError

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


@pytest.fixture
def settings(redis_cluster_stack: EmbeddedStack) -> Settings:
    assert redis_cluster_stack.settings is not None
    return redis_cluster_stack.settings


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[RoutingStore]:
    client: aioredis.Redis = cluster_client(settings, retry=None)
    await ready(client)
    yield RoutingStore(client, settings, policy_from_settings(settings))
    await client.aclose()


def request(domain: str, contact_id: str) -> RoutingRequested:
    return RoutingRequested(event_id=uuid.uuid4().hex, ts_ms=int(time.time() * 1000),
                            contact_id=contact_id, domain=domain)


async def seeded(store: RoutingStore, domain: str) -> None:
    now = int(time.time() * 1000)
    login = AgentLoggedIn(event_id=uuid.uuid4().hex, ts_ms=now, agent_id="a1", domain=domain,
                          skills={"zh": 1, "general": 1}, capacity={"chat": 1})
    results = await store.apply([login, *(request(domain, f"c{i}") for i in range(4))], now)
    assert not [r for r in results if isinstance(r, Exception)]


def node(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)


async def test_a_half_moved_slot_is_tryagain_then_ask_then_moved_and_nothing_is_lost(
        store: RoutingStore, redis_cluster_stack: EmbeddedStack) -> None:
    domain = f"t-{uuid.uuid4().hex[:10]}"
    await seeded(store, domain)
    ports = redis_cluster_stack.cluster_ports()
    slot = redis_cluster.domain_slot(domain)
    nodes = redis_cluster.nodes(ports)
    src = next(n for n in nodes if n.primary and n.serves(slot))
    dst = next(n for n in nodes if n.primary and n.port != src.port)
    with node(src.port) as source, node(dst.port) as target:
        target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src.node_id)
        source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst.node_id)
        keys = source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
        assert len(keys) > 4
        source.execute_command("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000,
                               "KEYS", *keys[: len(keys) // 2])
        # Half moved: the script's keys are on two nodes.
        with pytest.raises(TransientError) as refused:
            await store.apply([request(domain, "half")], int(time.time() * 1000))
        assert refused.value.kind == Kind.TRYAGAIN
        errors = source.info("errorstats")
        assert errors.get("errorstat_TRYAGAIN", {}).get("count", 0) > 0
        # All moved, the slot still migrating: the source answers ASK, the client follows it
        # to the target, which (importing) refuses a script whose keys are not all there yet
        # (a routing script also names keys it creates): TRYAGAIN until the slot is its own.
        rest = source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
        source.execute_command("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", *rest)
        with pytest.raises(TransientError) as refused:
            await store.apply([request(domain, "asked")], int(time.time() * 1000))
        assert refused.value.kind == Kind.TRYAGAIN
        assert source.info("errorstats").get("errorstat_ASK", {}).get("count", 0) > 0
        assert target.info("errorstats").get("errorstat_TRYAGAIN", {}).get("count", 0) > 0
        # The slot is the target's: the client's map is stale, MOVED is followed.
        for n in (target, source):
            n.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst.node_id)
    moved = await store.apply([request(domain, "moved")], int(time.time() * 1000))
    assert not [r for r in moved if isinstance(r, Exception)]
    assert redis_cluster.owner(ports, slot).port == dst.port
    stats = await domain_stats(store.redis, domain)
    # c0..c3 and the one sent after the move, once each; the refused ones not at all.
    assert stats["escalated"] == 5
    assert stats["invariant_violations"] == 0


async def test_a_slot_nobody_serves_is_clusterdown_until_it_is_served_again(
        store: RoutingStore, redis_cluster_stack: EmbeddedStack) -> None:
    domain = f"t-{uuid.uuid4().hex[:10]}"
    await seeded(store, domain)
    ports = redis_cluster_stack.cluster_ports()
    slot = redis_cluster.domain_slot(domain)
    owner = redis_cluster.owner(ports, slot)
    with node(owner.port) as primary:
        primary.execute_command("CLUSTER", "DELSLOTS", slot)
        try:
            with pytest.raises(TransientError) as refused:
                await store.apply([request(domain, "down")], int(time.time() * 1000))
            assert refused.value.kind in (Kind.CLUSTERDOWN, Kind.CONNECTION)
        finally:
            primary.execute_command("CLUSTER", "ADDSLOTS", slot)
    served = await store.apply([request(domain, "served")], int(time.time() * 1000))
    assert not [r for r in served if isinstance(r, Exception)]
    stats = await domain_stats(store.redis, domain)
    assert stats["escalated"] == 5
