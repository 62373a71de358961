"""The faust runtime's glue without a broker: the app declares the router's topics, agents,
timers; a batch that does not finish makes the worker refuse every commit (faust acks
a closed take_events' events whatever happened); transient failures are retried and delivered;
a timer step never raises. (The integration tests run it against the real broker: flow, books,
dead letters and the short failover on the faust runtime.)"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from router.errors import SettingsError
from router.events import AgentState, AgentStateChanged
from router.faust_app import FaustRouter, _ConsumerThread
from router.settings import Settings
from router.stage import Output, Record

SETTINGS = Settings(runtime="faust", kafka_bootstrap_servers="127.0.0.1:1", web_port=1)


class NoStages:
    """The runtime's stages are not reached by these tests (they call ``batch`` directly)."""

    async def close(self) -> None:
        return None


def router_with_producer(sent: list[Output]) -> FaustRouter:
    router = FaustRouter(SETTINGS, runtime=NoStages())

    async def produce(outputs: Sequence[Output]) -> None:
        sent.extend(outputs)

    router.produce = produce  # type: ignore[method-assign]
    return router


def output() -> Output:
    event = AgentStateChanged(event_id="e1", ts_ms=1_700_000_000_000, agent_id="a1",
                              domain="d", state=AgentState.READY)
    return Output("assignments", "d", event)


RECORDS = [Record("agents.events", 0, 7, b"d", b"{}")]


def test_the_app_has_the_routers_topics_agents_timers_and_views() -> None:
    router = FaustRouter(SETTINGS, runtime=NoStages())
    app = router.app
    assert set(app.agents) >= {"bot-stage", "routing-requests", "agents-events"}
    topics = {t for agent in app.agents.values() for t in agent.channel.topics}
    assert topics == {"contacts.inbound", "routing.requests", "agents.events"}
    assert router.timer_names == ["timer", "bot_timer", "bot_reload", "sla_export_lease",
                                  "stall_watchdog"]


async def test_a_delivered_batch_leaves_commits_allowed() -> None:
    sent: list[Output] = []
    router = router_with_producer(sent)
    acked: list[Sequence[Output]] = []

    async def handle(records: Sequence[Record]) -> list[Output]:
        return [output()]

    await router.batch("agents", handle, RECORDS, acked.append)
    assert len(sent) == 1
    assert acked == [sent]
    assert not router.app.commits_refused


async def test_a_transient_failure_is_retried_without_recomputing() -> None:
    sent: list[Output] = []
    router = router_with_producer(sent)
    calls = 0

    async def handle(records: Sequence[Record]) -> list[Output]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RedisConnectionError("refused")
        return [output()]

    await router.batch("agents", handle, RECORDS, None)
    assert calls == 2
    assert len(sent) == 1
    assert not router.app.commits_refused


async def test_a_batch_that_raises_refuses_every_commit_from_then_on() -> None:
    router = router_with_producer([])
    crashed: list[BaseException] = []

    async def crash(exc: BaseException) -> None:
        crashed.append(exc)

    router.app.crash = crash  # type: ignore[method-assign]

    async def handle(records: Sequence[Record]) -> list[Output]:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        await router.batch("agents", handle, RECORDS, None)
    assert router.app.commits_refused
    assert isinstance(crashed[0], ValueError)


async def test_a_cancelled_batch_refuses_commits() -> None:
    router = router_with_producer([])
    started = asyncio.Event()

    async def handle(records: Sequence[Record]) -> list[Output]:
        started.set()
        await asyncio.sleep(30)
        return []

    task = asyncio.create_task(router.batch("agents", handle, RECORDS, None))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert router.app.commits_refused


async def test_the_consumer_thread_commits_nothing_once_refused() -> None:
    router = FaustRouter(SETTINGS, runtime=NoStages())
    router.app.commits_refused = True
    thread: Any = object.__new__(_ConsumerThread)
    thread.app = router.app  # only what commit() reads
    assert await _ConsumerThread.commit(thread, {}) is False


async def test_a_timer_step_never_raises_and_a_stopping_worker_starts_none() -> None:
    router = FaustRouter(SETTINGS, runtime=NoStages())
    ran: list[str] = []

    async def failing() -> None:
        ran.append("failing")
        raise ValueError("a bug")

    await router.step("timer", failing)
    await router.step("timer", failing)
    assert ran == ["failing", "failing"]
    await asyncio.wait_for(router.steps_done(), 1)
    router.stopping = True
    await router.step("timer", failing)
    assert ran == ["failing", "failing"]


def test_the_runtime_setting_is_validated() -> None:
    with pytest.raises(SettingsError, match="PEAKROUTE_RUNTIME"):
        Settings(runtime="spark").validate()
    with pytest.raises(SettingsError, match="PEAKROUTE_EVENT_LOOP"):
        Settings(event_loop="trio").validate()
    assert Settings.from_env({"PEAKROUTE_RUNTIME": "faust"}).runtime == "faust"
