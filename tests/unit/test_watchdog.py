"""The stall watchdog's decision, pure, and its state between looks with a stub consumer and
probe (router/watchdog.py); the transport's side of it: a stop or a rejoin cuts a poll that
waits on a rebalance that never ends. The integration tests drive it on a real worker."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from router import metrics
from router.settings import Settings
from router.transport import Route, Transport
from router.watchdog import Offsets, StallWatchdog, grace_s, stalled

A, B = TopicPartition("contacts.inbound", 0), TopicPartition("contacts.inbound", 1)


def look(committed: dict[TopicPartition, int | None], end: dict[TopicPartition, int],
         begin: dict[TopicPartition, int] | None = None) -> Offsets:
    return Offsets(begin=begin or {tp: 0 for tp in end}, end=end, committed=committed)


def test_records_waiting_on_a_partition_nobody_commits_on_is_a_stall() -> None:
    before = look({A: 10, B: 5}, {A: 10, B: 20})
    after = look({A: 10, B: 5}, {A: 12, B: 40})
    stall = stalled(0, 21.0, 20.0, before, after)
    assert stall is not None
    assert (stall.partitions, stall.records) == (2, 2 + 35)


def test_no_stall_while_the_worker_owns_partitions_or_before_the_grace_ran_out() -> None:
    before = look({A: 5}, {A: 20})
    after = look({A: 5}, {A: 40})
    assert stalled(3, 60.0, 20.0, before, after) is None
    assert stalled(0, 19.9, 20.0, before, after) is None
    assert stalled(0, 20.0, 20.0, before, after) is not None


def test_no_stall_when_the_group_moves_on_or_nothing_waits() -> None:
    # another member consumes: its committed offset moves, even if records still wait
    assert stalled(0, 30.0, 20.0, look({A: 5}, {A: 20}), look({A: 9}, {A: 40})) is None
    # everything committed: an idle group, an idle worker (more workers than partitions)
    assert stalled(0, 30.0, 20.0, look({A: 20}, {A: 20}), look({A: 20}, {A: 20})) is None
    # one partition stuck is enough, whatever the others do
    stall = stalled(0, 30.0, 20.0, look({A: 20, B: 3}, {A: 30, B: 9}),
                    look({A: 30, B: 3}, {A: 31, B: 9}))
    assert stall is not None
    assert (stall.partitions, stall.records) == (1, 6)


def test_no_commit_yet_means_the_log_start_and_records_gone_from_the_log_do_not_wait() -> None:
    assert look({A: None}, {A: 7}).waiting(A) == 7
    trimmed = look({A: None}, {A: 50}, begin={A: 50})  # retention removed them all
    assert trimmed.waiting(A) == 0
    assert stalled(0, 30.0, 20.0, trimmed, trimmed) is None
    assert stalled(0, 30.0, 20.0, look({A: None}, {A: 7}), look({A: None}, {A: 9})) is not None


def test_grace_is_longer_than_a_rebalance() -> None:
    embedded = Settings(kafka_session_timeout_s=10.0, kafka_rebalance_timeout_s=5.0)
    assert grace_s(embedded) == 25.0
    assert grace_s(Settings()) == 120.0  # 30 s session + 3 x 30 s rebalance


@dataclass
class StubGroup:
    """A consumer's assignment and the probe's looks, set by the test; the rejoins counted."""

    owned: int = 0
    offsets: Offsets = field(default_factory=lambda: look({A: 5}, {A: 20}))
    rejoins: int = 0
    now: float = 0.0

    async def probe(self) -> Offsets:
        return self.offsets

    async def rejoin(self) -> None:
        self.rejoins += 1


def watchdog(group: StubGroup) -> StallWatchdog:
    return StallWatchdog(20.0, lambda: group.owned, group.probe, group.rejoin,
                         clock=lambda: group.now)


async def test_a_worker_without_partitions_while_records_wait_rejoins_once_per_grace() -> None:
    group = StubGroup()
    dog = watchdog(group)
    counted = metrics.CONSUMER_STALLS._value.get()
    for t in range(0, 20, 5):  # first look at t=0, then within the grace: no decision
        group.now = float(t)
        assert await dog.check() is None
    group.now = 20.0
    assert await dog.check() is not None
    assert group.rejoins == 1
    assert metrics.CONSUMER_STALLS._value.get() == counted + 1
    # the rejoin brought nothing: the next one waits twice as long
    group.now = 45.0
    assert await dog.check() is None
    group.now = 60.0
    assert await dog.check() is not None
    assert group.rejoins == 2


async def test_partitions_back_or_progress_elsewhere_reset_the_watch() -> None:
    group = StubGroup()
    dog = watchdog(group)
    await dog.check()
    group.now, group.owned = 10.0, 4  # assigned again: the watch starts over
    assert await dog.check() is None
    group.now, group.owned = 15.0, 0
    await dog.check()  # idle again: a new first look
    group.now = 30.0
    assert await dog.check() is None  # only 15 s since that look
    group.now, group.offsets = 35.0, look({A: 12}, {A: 30})  # a peer consumes
    assert await dog.check() is None
    assert group.rejoins == 0
    assert dog.stalls == 0


@dataclass
class BlockedConsumer:
    """A consumer in a rebalance that never ends: getmany waits for an assignment for ever (as
    aiokafka's does, whatever its timeout)."""

    subscribed: list[str] = field(default_factory=list)
    stopped: bool = False
    _coordinator: Any = None

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, Any]:
        await asyncio.Event().wait()
        return {}  # pragma: no cover

    def assignment(self) -> set[TopicPartition]:
        return set()

    async def start(self) -> None:
        pass

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.subscribed = topics

    async def stop(self) -> None:
        self.stopped = True


async def _blocked_transport() -> Transport:
    topic = "contacts.inbound"

    async def handle(records: Any) -> list[Any]:
        return []  # pragma: no cover

    transport = Transport(Settings(), {topic: Route("bot", handle)})
    await transport.consumer.stop()  # never started: the stubs stand in for it
    await transport.producer.stop()
    transport.consumer = BlockedConsumer()
    return transport


async def test_a_stop_cuts_a_poll_that_waits_on_a_rebalance() -> None:
    transport = await _blocked_transport()
    running = asyncio.create_task(transport.run())
    await asyncio.sleep(0.05)  # the loop waits in getmany
    assert not running.done()
    await asyncio.wait_for(transport.finish(5.0), 1.0)  # not the 5 s budget
    await asyncio.wait_for(running, 1.0)


async def test_a_rejoin_request_replaces_a_consumer_stuck_in_a_rebalance() -> None:
    transport = await _blocked_transport()
    old = transport.consumer
    new = BlockedConsumer()
    transport._new_consumer = lambda: new  # type: ignore[method-assign]
    running = asyncio.create_task(transport.run())
    await asyncio.sleep(0.05)
    await transport.watchdog._rejoin()  # what the watchdog calls on a stall
    for _ in range(100):
        if transport.consumer is new and new.subscribed:
            break
        await asyncio.sleep(0.01)
    assert old.stopped
    assert transport.consumer is new
    assert new.subscribed == ["contacts.inbound"]
    assert transport.rebalancing  # until the new member's first assignment
    await asyncio.wait_for(transport.finish(5.0), 1.0)
    await running
