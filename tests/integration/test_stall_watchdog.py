"""The stall watchdog on a real worker (router/watchdog.py): the group leaves the worker without
partitions while contacts wait, and the worker notices, logs, counts, rejoins and consumes.

The group's other member is a plain aiokafka consumer that leads the group under the worker's
own protocol name ("roundrobin") and keeps every partition for itself away from the member ids
it starved first; it heartbeats but never polls. That is the stall's shape seen from a worker:
partitions owned by a member that never consumes them, the group stable, nothing ever moving
again (docs/ARCHITECTURE.md, "Embedded stack", has the broker case). Without the watchdog the
worker waits forever; with it, the worker's rejoin (a new member id) gets its share.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

from router.demo import WorkerProcess
from router.events import ContactArrived, Language
from router.kafka import client_kwargs, ensure_topics, producer
from router.routing.store import domain_stats
from router.settings import Settings
from router.stage import now_ms
from tests.conftest import eventually, repo_root

pytestmark = pytest.mark.integration
HOARDER = b"hoarder"
SMALL_KB = repo_root() / "tests" / "data" / "bot_kb_small.yaml"


class Hoarder(AbstractPartitionAssignor):  # type: ignore[misc]  # aiokafka is untyped
    """Assigns as "roundrobin" does, except that the member ids it saw first besides itself
    (the worker's first incarnation) get nothing and their share goes to the hoarder."""

    name = "roundrobin"
    version = 0
    starved: ClassVar[set[str] | None] = None

    @classmethod
    def metadata(cls, topics: Any) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(cls.version, list(topics), HOARDER)

    @classmethod
    def assign(cls, cluster: Any, members: Mapping[str, ConsumerProtocolMemberMetadata]
               ) -> dict[str, ConsumerProtocolMemberAssignment]:
        me = next(m for m, meta in members.items() if meta.user_data == HOARDER)
        others = set(members) - {me}
        if cls.starved is None and others:
            cls.starved = others
        served = {m: meta for m, meta in members.items() if m not in (cls.starved or set())}
        fair = RoundRobinPartitionAssignor.assign(cluster, served)
        empty = ConsumerProtocolMemberAssignment(cls.version, [], b"")
        return {m: fair.get(m, empty) for m in members}

    @classmethod
    def on_assignment(cls, assignment: Any) -> None:
        pass


def metric(text: str, name: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith(name + " ") or line.startswith(name + "{")]
    return sum(values)


async def test_a_worker_left_without_partitions_while_contacts_wait_rejoins_and_consumes(
        stack: Settings, redis_client: aioredis.Redis, domain: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    topics = {f"topic_{role}": f"st{tag}.{name}" for role, name in stack.topics.items()}
    # A rebalance here takes 6 + 3 x 3 = 15 s at most: the watchdog's grace. The small
    # knowledge base keeps the worker's start short.
    settings = stack.replace(app_id=f"stall-{tag}", topic_partitions=2, state_dir=tmp_path,
                             kafka_session_timeout_s=6.0, kafka_rebalance_timeout_s=3.0,
                             bot_kb_path=str(SMALL_KB), bot_threshold=0.5, **topics)
    await ensure_topics(settings)
    inputs = [settings.topic_contacts_inbound, settings.topic_routing_requests,
              settings.topic_agents_events]
    Hoarder.starved = None
    hoarder = AIOKafkaConsumer(**client_kwargs(settings), group_id=settings.app_id,
                               enable_auto_commit=False, partition_assignment_strategy=(Hoarder,),
                               session_timeout_ms=6000, rebalance_timeout_ms=3000,
                               heartbeat_interval_ms=1000, max_poll_interval_ms=600_000)
    await hoarder.start()
    hoarder.subscribe(inputs)
    prod = producer(settings)
    await prod.start()
    log_dir = tmp_path
    worker: WorkerProcess | None = None
    try:
        # the hoarder leads (it joined first) and holds all 6 partitions
        assert await eventually(lambda: _owns(hoarder, 6), timeout_s=20)
        worker = WorkerProcess(settings, 0, log_dir)
        # the worker joins, the hoarder keeps everything: the worker is up but owns nothing
        assert await eventually(lambda: _starved(worker), timeout_s=40), \
            worker.log_path.read_text()[-3000:]
        assert not worker.ready()
        starved_at = time.monotonic()
        for n in range(20):  # contacts on every partition, none of them consumed for now
            event = ContactArrived(event_id=uuid.uuid4().hex, ts_ms=now_ms(),
                                   contact_id=f"c{n}", domain=domain, customer_id="u",
                                   language=Language.EN, text="where is my parcel")
            await prod.send_and_wait(settings.topic_contacts_inbound, event.to_json(),
                                     key=f"c{n}".encode())
        await asyncio.sleep(2)
        assert (await domain_stats(redis_client, domain))["arrived"] == 0

        # within the grace (15 s) plus two looks, the worker notices, logs, counts and rejoins
        found = await eventually(lambda: _logged(worker, "consumer_stalled"), timeout_s=30)
        assert found, worker.log_path.read_text()[-3000:]
        entry = found[0]
        assert (entry["level"], entry["action"]) == ("warning", "rejoin")
        assert entry["stuck_partitions"] >= 1
        assert entry["waiting_records"] >= 1
        assert entry["idle_s"] >= 15 - 4  # not before the grace (measured from its own look)
        assert "where is my parcel" not in worker.log_path.read_text()  # no customer text
        assert time.monotonic() - starved_at >= 10  # the grace counts from its first look
        assert metric(worker.get("/metrics").decode(), "peakroute_consumer_stalls_total") >= 1

        # the rejoin is a new member: it gets its share and consumes the contacts waiting there
        async def consumed() -> int:
            return int((await domain_stats(redis_client, domain))["arrived"])

        assert await eventually(consumed, timeout_s=20) > 0
        assert await eventually(lambda: _ready(worker), timeout_s=10)
    finally:
        if worker is not None:
            worker.stop()
        await prod.stop()
        await hoarder.stop()


async def _owns(consumer: AIOKafkaConsumer, n: int) -> bool:
    return len(consumer.assignment()) == n


async def _starved(worker: WorkerProcess) -> bool:
    """The worker runs and its group has answered it (the hoarder saw its member id)."""
    try:
        worker.get("/healthz")
    except OSError:
        return False
    return Hoarder.starved is not None


async def _ready(worker: WorkerProcess) -> bool:
    return worker.ready()


async def _logged(worker: WorkerProcess, event: str) -> list[dict[str, Any]]:
    lines = worker.log_path.read_text().splitlines()
    return [orjson.loads(line) for line in lines
            if line.startswith("{") and f'"{event}"' in line]
