"""The worker's transport without a broker: records reach their stage in order, offsets are
committed only after every output is delivered, transient failures are retried without
recomputing, and a rebalance waits for the batch in hand. (The integration tests run it
against the real broker: flow, deadletters, failover.)"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from redis.exceptions import ConnectionError as RedisConnectionError

from router.events import AgentState, AgentStateChanged
from router.settings import Settings
from router.stage import Output, Record
from router.transport import Route, Transport


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class StubConsumer:
    polls: list[dict[TopicPartition, list[Message]]]
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)
    owned: set[TopicPartition] = field(default_factory=set)
    ends: dict[TopicPartition, int] = field(default_factory=dict)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.ends.get(tp)

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, Any]:
        await asyncio.sleep(0)
        return self.polls.pop(0) if self.polls else {}

    def assignment(self) -> set[TopicPartition]:
        return self.owned

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


@dataclass
class StubProducer:
    """aiokafka's batch API as router.kafka.send_batches uses it: one partition per topic;
    a batch's records count as sent when it is submitted, delivered when ``delivered`` is set."""

    sent: list[tuple[str, bytes]] = field(default_factory=list)
    delivered: asyncio.Event = field(default_factory=asyncio.Event)

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> StubBatch:
        return StubBatch()

    async def send_batch(self, batch: StubBatch, topic: str, *,
                         partition: int) -> asyncio.Future[None]:
        self.sent.extend((topic, key) for key in batch.keys)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def deliver() -> None:
            await self.delivered.wait()
            fut.set_result(None)
        asyncio.get_running_loop().create_task(deliver())
        return fut


@dataclass
class StubBatch:
    keys: list[bytes] = field(default_factory=list)

    def append(self, *, key: bytes, value: bytes, timestamp: None) -> bool:
        self.keys.append(key)
        return True

    def close(self) -> None:
        pass


def _poll(topic: str, partition: int, offsets: range) -> dict[TopicPartition, list[Message]]:
    return {TopicPartition(topic, partition): [Message(topic, partition, o, b"k", b"v%d" % o)
                                               for o in offsets]}


def _output(agent: str) -> Output:
    return Output("assignments", "d", AgentStateChanged(
        event_id=agent, ts_ms=1, agent_id=agent, domain="d", state=AgentState.READY))


async def _transport(polls: list[dict[TopicPartition, list[Message]]],
                     routes: dict[str, Route]) -> tuple[Transport, StubConsumer, StubProducer]:
    transport = Transport(Settings(), routes)
    await transport.consumer.stop()  # never started: the stubs below stand in for them
    await transport.producer.stop()
    owned = {tp for poll in polls for tp in poll}
    cons, prod = StubConsumer(polls, owned=owned), StubProducer()
    transport.consumer, transport.producer = cons, prod
    return transport, cons, prod


async def _run_until(transport: Transport, done: Any) -> None:
    task = asyncio.create_task(transport.run())
    for _ in range(500):
        if done():
            break
        await asyncio.sleep(0.001)
    transport._stopping.set()
    await task
    await transport._commits_done()


async def test_each_topic_reaches_its_stage_in_order_and_offsets_follow_delivery() -> None:
    seen: dict[str, list[int]] = {"bot": [], "routing": []}

    def stage(name: str) -> Route:
        async def handle(records: Sequence[Record]) -> list[Output]:
            seen[name].extend(r.offset for r in records)
            return [_output(f"{name}-{r.offset}") for r in records]
        return Route(name, handle)

    inbound, requests = "contacts.inbound", "routing.requests"
    transport, cons, prod = await _transport(
        [{**_poll(inbound, 0, range(0, 3)), **_poll(requests, 2, range(10, 12))}],
        {inbound: stage("bot"), requests: stage("routing")})
    task = asyncio.create_task(_run_until(transport, lambda: len(prod.sent) == 5))
    await asyncio.sleep(0.05)
    assert cons.commits == []  # outputs sent, none delivered yet: nothing committed
    prod.delivered.set()
    await task
    assert seen == {"bot": [0, 1, 2], "routing": [10, 11]}
    assert cons.commits == [{TopicPartition(inbound, 0): 3, TopicPartition(requests, 2): 12}]
    cons.ends = {TopicPartition(inbound, 0): 7}  # the last fetch saw 4 more records there
    assert transport.lag() == {inbound: 4}  # requests: no log end known yet, nothing claimed


async def test_a_transient_failure_is_retried_and_the_outputs_are_sent_once() -> None:
    calls = 0

    lag_while_failing: dict[str, int] = {}

    async def handle(records: Sequence[Record]) -> list[Output]:
        nonlocal calls
        calls += 1
        if calls == 1:
            lag_while_failing.update(transport.lag())
            raise RedisConnectionError("redis restarting")
        return [_output("a")]

    topic = "agents.events"
    transport, cons, prod = await _transport([_poll(topic, 1, range(5, 6))],
                                             {topic: Route("agents", handle)})
    cons.ends = {TopicPartition(topic, 1): 6}
    prod.delivered.set()
    await _run_until(transport, lambda: bool(cons.commits))
    assert calls == 2
    assert lag_while_failing == {topic: 1}  # the record in hand counts while it waits
    assert transport.lag() == {topic: 0}
    assert prod.sent == [("assignments", b"d")]
    assert cons.commits == [{TopicPartition(topic, 1): 6}]


async def test_a_rebalance_waits_for_the_batch_in_hand_and_its_commit() -> None:
    release = asyncio.Event()

    async def handle(records: Sequence[Record]) -> list[Output]:
        await release.wait()
        return []

    topic = "routing.requests"
    transport, cons, _ = await _transport([_poll(topic, 0, range(0, 2))],
                                          {topic: Route("routing", handle)})
    task = asyncio.create_task(transport.run())
    await asyncio.sleep(0.01)  # the batch is in hand
    revoke = asyncio.create_task(transport.revoked({TopicPartition(topic, 0)}))
    await asyncio.sleep(0.01)
    assert not revoke.done()
    assert not transport.ready()
    release.set()
    await revoke
    assert cons.commits == [{TopicPartition(topic, 0): 2}]  # committed before the move
    transport._stopping.set()
    await task


def test_an_output_sends_the_json_its_stage_made_or_makes_it() -> None:
    plain = _output("a")
    assert plain.value() == plain.event.to_json()
    made = Output(plain.role, plain.key, plain.event, None, b'{"kept": true}')
    assert made.value() == b'{"kept": true}'
    assert made == plain  # the JSON is a cache, not part of the output's identity
