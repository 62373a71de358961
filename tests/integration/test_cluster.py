"""The core integration tests on a Redis Cluster of three primaries (issue 20): a stack of this
module's own (the real broker, three `redis-server --cluster-enabled yes` nodes joined by
`redis-cli --cluster create`) and a real worker whose every Redis client is a cluster client
(PEAKROUTE_REDIS_CLUSTER=true). The flow, the books, the audit log and the dead letters are
the same tests as on one Redis (imported below and run here with this module's fixtures); then
the slot of a live domain is moved to another primary while its contacts flow."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from agents.simulated import AgentProfile, Behaviour
from load_tests import redis_cluster
from router.demo import WorkerProcess, wait_ready
from router.errors import MissingDependencyError
from router.redis_client import is_cluster, ready
from router.redis_client import redis_client as cluster_client
from router.routing.store import domain_live, domain_stats
from router.settings import Settings
from router.stack import EmbeddedStack
from tests.conftest import eventually
from tests.integration.test_deadletter import (  # noqa: F401 - run here on the cluster
    test_each_malformed_record_is_deadlettered_with_its_reason_and_good_ones_flow,
)
from tests.integration.test_flow import (  # noqa: F401 - run here on the cluster
    contact,
    publish,
    running_agents,
    test_audit_log_agrees_with_counters,
    test_contacts_end_contained_or_answered_and_books_balance,
)

pytestmark = [pytest.mark.integration, pytest.mark.cluster]
PRIMARIES = 3  # tests/conftest.py: redis_cluster_stack


@pytest.fixture(scope="module")
def stack(redis_cluster_stack: EmbeddedStack, session_bot_model: str) -> Settings:
    """This module's stack (the name the imported tests ask for); its worker loads the
    session's bot model instead of training one."""
    assert redis_cluster_stack.settings is not None
    return redis_cluster_stack.settings.replace(offer_timeout_s=3.0, timer_interval_s=0.2,
                                                bot_model_dir=session_bot_model)


@pytest.fixture(scope="module")
def worker(stack: Settings) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(stack, 0, stack.state_dir / "logs")
    try:
        asyncio.run(wait_ready([proc]))
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def redis_client(stack: Settings) -> AsyncIterator[aioredis.Redis]:
    client = cluster_client(stack)
    await ready(client)
    yield client
    await client.aclose()


async def test_the_stack_is_a_cluster_of_three_primaries_and_the_worker_uses_it(
        stack: Settings, worker: WorkerProcess, redis_client: aioredis.Redis) -> None:
    assert stack.redis_cluster
    assert is_cluster(redis_client)
    assert len(redis_client.get_primaries()) == PRIMARIES  # type: ignore[attr-defined]
    assert worker.ready()


async def test_a_live_domains_slot_moves_to_another_primary_and_nothing_is_lost(
    stack: Settings, worker: WorkerProcess, redis_client: aioredis.Redis,
    kafka_producer: AIOKafkaProducer, domain: str, redis_cluster_stack: EmbeddedStack,
) -> None:
    profiles = [AgentProfile(f"{domain}-a{i}", {"zh": 2, "en": 1, "general": 1, "refunds": 2},
                             {"chat": 2}) for i in range(3)]
    behaviour = Behaviour(accept_delay_s=(0.01, 0.05), handle_mean_s=0.3)
    ports = redis_cluster_stack.cluster_ports()
    slot = redis_cluster.domain_slot(domain)
    before = redis_cluster.owner(ports, slot).port
    async with running_agents(stack, profiles, domain, behaviour) as pool:
        contacts = [contact(domain, n) for n in range(90)]
        await publish(kafka_producer, stack, contacts[:30])
        assert await eventually(
            lambda: _arrived_at_least(redis_client, domain, 10), timeout_s=60)
        # Moved while the first contacts are in flight and the rest arrive.
        mover = asyncio.create_task(asyncio.to_thread(redis_cluster.move_domains, ports,
                                                      [domain]))
        await publish(kafka_producer, stack, contacts[30:])
        moved = await mover

        async def settled() -> dict[str, int] | None:
            stats = await domain_stats(redis_client, domain)
            live = await domain_live(redis_client, domain)
            done = stats["arrived"] == len(contacts) and stats["escalating"] == 0
            return {**stats, **live} if done and live["waiting"] + live["offered"] == 0 else None

        books = await eventually(settled, timeout_s=90)
        assert books, f"not settled: {await domain_stats(redis_client, domain)}"

    assert moved[domain]["keys"] > 0
    assert redis_cluster.owner(ports, slot).port == moved[domain]["to"] != before
    assert books["contained"] + books["answered"] + books["abandoned"] == len(contacts)
    assert books["escalated"] == books["answered"] + books["abandoned"]
    assert pool.stats.accepted == books["answered"]
    assert books["invariant_violations"] == 0
    assert worker.proc.poll() is None, "the worker exited"
    assert "traceback" not in worker.log_path.read_text(errors="replace").lower()


async def _arrived_at_least(client: aioredis.Redis, domain: str, n: int) -> bool:
    return (await domain_stats(client, domain))["arrived"] >= n


@pytest.mark.parametrize(("present", "missing"), [((), "redis-server"),
                                                  (("redis-server",), "redis-cli")])
def test_the_stack_says_which_program_a_cluster_is_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, present: tuple[str, ...],
        missing: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in present:
        found = shutil.which(name)
        assert found, f"{name} is needed on PATH for this test"
        (bin_dir / name).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(MissingDependencyError, match=f"needs {missing} on PATH"):
        asyncio.run(EmbeddedStack(tmp_path / "s", redis_cluster=3).start())
