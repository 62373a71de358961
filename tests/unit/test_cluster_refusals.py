"""The refusals only a Redis Cluster makes (TRYAGAIN, CLUSTERDOWN, MOVED, ASK), injected into
the routing stage's pipeline and into a stage that raises (as the bot stage's pipeline does):
the transport retries the batch, commits nothing until it passes, dead-letters nothing, counts
the kind and marks the process not ready. (The other kinds are refused for real by a
redis-server in tests/integration/test_redis_refusals.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from aiokafka import TopicPartition
from redis._parsers.base import BaseParser
from redis.exceptions import ResponseError

from router import metrics, transient
from router.decode import Decoder
from router.events import RoutingRequested
from router.routing.config import policy_from_settings
from router.routing.stage import RoutingStage
from router.routing.store import RoutingStore
from router.settings import Settings
from router.stage import Output, Record
from router.transport import Route
from tests.unit.test_transport import Message, _output, _transport

REPLIES = [
    ("TRYAGAIN Multiple keys request during rehashing of slot", "tryagain"),
    ("CLUSTERDOWN The cluster is down", "clusterdown"),
    ("MOVED 3999 127.0.0.1:6381", "moved"),
    ("ASK 3999 127.0.0.1:6381", "ask"),
]
REFUSED = 2  # executions refused before the cluster serves the slot again


def refusal(text: str) -> ResponseError:
    err = BaseParser.parse_error(text)
    assert isinstance(err, ResponseError)
    return err


class ClusterPipeline:
    """Records what the store queues; its execution is answered by ``ClusterRedis``."""

    def __init__(self, redis: ClusterRedis) -> None:
        self.redis = redis
        self.calls: list[str] = []

    def script_load(self, script: str) -> None:
        self.calls.append("load")

    def sadd(self, key: str, *members: str) -> None:
        self.calls.append("sadd")

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> None:
        self.calls.append("evalsha")

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        return self.redis.answer(self.calls)


class ClusterRedis(aioredis.Redis):
    """A client (never connected) whose pipelines are refused ``refusals`` times with the
    error reply ``text``, script by script, then answered: each request is queued."""

    def __init__(self, text: str, refusals: int) -> None:
        super().__init__()
        self.text = text
        self.refusals = refusals
        self.answered: list[list[str]] = []  # per execution: what it answered

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        return ClusterPipeline(self)

    def answer(self, calls: list[str]) -> list[Any]:
        if "evalsha" not in calls:
            return ["sha"] * len(calls)  # SCRIPT LOAD
        if self.refusals:
            self.refusals -= 1
            self.answered.append(["refused"])
            return [refusal(self.text) if c == "evalsha" else 1 for c in calls]
        self.answered.append(["queued"])
        # What the apply script returns for one request: per call, its outbox entry with one
        # transition (MessagePack).
        entry = msgspec.msgpack.encode([[["e1", [{
            "k": "queued", "contact_id": "c1", "channel": "chat", "lane": "general.zh",
            "ring": 0, "waited_ms": 0, "priority": 0, "seq": 1}]]]])
        return [entry if c == "evalsha" else 1 for c in calls]


def errors_of(kind: str) -> float:
    value: float = metrics.REDIS_ERRORS.labels(kind)._value.get()
    return value


async def until(check: Any, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if check():
            return
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(("text", "kind"), REPLIES, ids=[k for _, k in REPLIES])
async def test_the_routing_stage_retries_a_cluster_refusal(text: str, kind: str) -> None:
    settings = Settings()
    redis = ClusterRedis(text, REFUSED)
    stage = RoutingStage(RoutingStore(redis, settings, policy_from_settings(settings)),
                         Decoder())
    topic = settings.topic_routing_requests
    request = RoutingRequested(event_id="e1", ts_ms=1_700_000_000_000, contact_id="c1",
                               domain="shop-1")
    transport, cons, prod = await _transport(
        [{TopicPartition(topic, 0): [Message(topic, 0, 7, b"shop-1", request.to_json())]}],
        {topic: Route("routing", lambda rs: stage.handle("routing_requests", rs))})
    prod.delivered.set()
    before = errors_of(kind)
    commits_while_refused: list[int] = []

    task = asyncio.create_task(transport.run())
    await until(lambda: bool(redis.answered))
    commits_while_refused.append(len(cons.commits))
    await until(lambda: bool(cons.commits))
    transport._stopping.set()
    await task

    assert redis.answered == [["refused"]] * REFUSED + [["queued"]]
    assert commits_while_refused == [0]
    assert cons.commits == [{TopicPartition(topic, 0): 8}]
    assert [role for role, _ in prod.sent] == [settings.topic_routing_decisions]  # no deadletter
    assert errors_of(kind) == before + REFUSED
    assert transient.HEALTH.last_kind == transient.Kind(kind)
    assert not transient.HEALTH.healthy()


@pytest.mark.parametrize(("text", "kind"), REPLIES, ids=[k for _, k in REPLIES])
async def test_a_stage_that_raises_a_cluster_refusal_is_retried(text: str, kind: str) -> None:
    attempts = 0

    async def handle(records: Sequence[Record]) -> list[Output]:  # as the bot stage's pipeline
        nonlocal attempts
        attempts += 1
        if attempts <= REFUSED:
            raise refusal(text)
        return [_output("a")]

    topic = "contacts.inbound"
    transport, cons, prod = await _transport(
        [{TopicPartition(topic, 3): [Message(topic, 3, 0, b"k", b"v")]}],
        {topic: Route("bot", handle)})
    prod.delivered.set()
    before = errors_of(kind)
    task = asyncio.create_task(transport.run())
    await until(lambda: attempts >= REFUSED)
    assert cons.commits == []
    await until(lambda: bool(cons.commits))
    transport._stopping.set()
    await task
    assert attempts == REFUSED + 1
    assert cons.commits == [{TopicPartition(topic, 3): 1}]
    assert prod.sent == [("assignments", b"d")]
    assert errors_of(kind) == before + REFUSED
