"""Shared fixtures. Integration tests get a real Tansu broker, a real redis-server and a real
router worker process, started once per session on free ports (never mocks)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from router.demo import WorkerProcess, wait_ready
from router.kafka import assign_all, consumer, producer
from router.settings import RUNTIMES, Settings
from router.stack import EmbeddedStack


@pytest.fixture(scope="session")
def session_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The embedded stack (Tansu + redis-server) on free ports, for the whole session."""
    state_dir = tmp_path_factory.mktemp("stack")
    embedded = EmbeddedStack(state_dir, partitions=4)
    settings = asyncio.run(embedded.start())
    yield settings.replace(offer_timeout_s=3.0, timer_interval_s=0.2)
    embedded.stop()


DEFAULT_RUNTIME = Settings().runtime
OTHER_RUNTIME = next(r for r in RUNTIMES if r != DEFAULT_RUNTIME)
# Modules whose tests also run on the runtime that is not the default (a focused set: the flow
# and its books, dead letters; test_failover runs its short proof on both by itself).
BOTH_RUNTIMES_MODULES = {"test_flow", "test_deadletter"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The focused modules' tests run on both runtimes: the default's worker (param None, the
    same instance every other test uses) and the other's. One worker process at a time: pytest
    runs the other runtime's tests together, stopping the default's worker before it starts the
    other's (the same consumer group) and back."""
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if "worker" in metafunc.fixturenames and module in BOTH_RUNTIMES_MODULES:
        metafunc.parametrize("worker", [pytest.param(None, id=DEFAULT_RUNTIME),
                                        pytest.param(OTHER_RUNTIME, id=OTHER_RUNTIME)],
                             indirect=True, scope="session")


@pytest.fixture(scope="session")
def stack(session_stack: Settings) -> Settings:
    """The stack a test runs on: the session's (a module may give its own under this name,
    as tests/integration/test_cluster.py does)."""
    return session_stack


@pytest.fixture(scope="session")
def session_bot_model(session_stack: Settings) -> str:
    """The shipped knowledge base's model, trained once per session in the session stack's
    state dir (where its worker finds it too); other stacks' workers load it from there."""
    from router.bot.loader import load_brain

    return str(load_brain(session_stack).model_dir)


@pytest.fixture(scope="session")
def redis_cluster_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    """A second embedded stack whose Redis is a cluster of three primaries (`redis-server
    --cluster-enabled yes` x 3, `redis-cli --cluster create`), started only for the tests that
    ask for it (tests/integration/test_cluster*.py)."""
    embedded = EmbeddedStack(tmp_path_factory.mktemp("cluster"), partitions=4, redis_cluster=3)
    asyncio.run(embedded.start())
    yield embedded
    embedded.stop()


@pytest.fixture(scope="session")
def worker(stack: Settings, session_bot_model: str, request: pytest.FixtureRequest
           ) -> Iterator[WorkerProcess]:
    """One router worker process (both stages) connected to the session's stack, on the runtime
    the test is parametrised with (``PEAKROUTE_RUNTIME``: faust or lean). The bot's model is
    trained before it starts (session_bot_model, in the stack's state dir), so its ready timeout
    covers starting, not training, which a loaded machine can stretch past it."""
    runtime = getattr(request, "param", None) or DEFAULT_RUNTIME
    logs = stack.state_dir / "logs"
    settings = stack.replace(runtime=runtime)
    if runtime != DEFAULT_RUNTIME:
        # A consumer group of its own: the runtimes' assignors differ, and Kafka refuses a
        # member whose protocol the group's does not share (InconsistentGroupProtocol) while the
        # default's stopped worker is still a member (the embedded stack skips LeaveGroup).
        settings = settings.replace(app_id=f"{stack.app_id}-{runtime}")
    proc = WorkerProcess(settings, 0 if runtime == DEFAULT_RUNTIME else 1, logs)
    try:
        asyncio.run(wait_ready([proc]))
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def redis_client(stack: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(stack.redis_url)
    yield client
    await client.aclose()


STORE_DB = 1  # the session's worker process uses db 0


def store_redis_url(settings: Settings) -> str:
    """The stack's redis-server, another database: store-level tests drive RoutingStore with
    policies of their own, and the session's worker (which ticks every domain it can see, with
    the default policy) must not touch their domains."""
    return settings.redis_url.rsplit("/", 1)[0] + f"/{STORE_DB}"


@pytest.fixture
async def store_redis(stack: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(store_redis_url(stack))
    yield client
    await client.aclose()


@pytest.fixture
async def kafka_producer(stack: Settings) -> AsyncIterator[AIOKafkaProducer]:
    prod = producer(stack)
    await prod.start()
    yield prod
    await prod.stop()


@pytest.fixture
def domain() -> str:
    """A routing domain of its own per test, so tests sharing the stack never interfere."""
    return f"t-{uuid.uuid4().hex[:10]}"


async def read_topic(settings: Settings, topic: str, until: Callable[[list[Any]], bool],
                     timeout_s: float = 30.0) -> list[Any]:
    """Read ``topic`` from the beginning until ``until(records)`` holds (or time runs out)."""
    cons = consumer(settings, group_id=None, auto_offset_reset="earliest")
    await cons.start()
    try:
        await assign_all(cons, [topic], from_end=False)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while not until(records) and time.monotonic() < deadline:
            batch = await cons.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
        return records
    finally:
        await cons.stop()


async def eventually(check: Callable[[], Any], timeout_s: float = 30.0,
                     interval_s: float = 0.1) -> Any:
    """Await ``check()`` until it returns something truthy; return it (or the last value)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval_s)


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
