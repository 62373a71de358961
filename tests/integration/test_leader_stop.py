"""A worker that leads its group stops cleanly while a rebalance is under way, on the embedded
broker: the group forms again without it (the 300/s stall of issue 16).

Tansu keeps naming a leader that sent LeaveGroup mid-rebalance, and the group never forms again
(load_tests/leader_leave.py reproduces it with plain consumers; docs/ARCHITECTURE.md, "Embedded
stack"). The stack records kafka_leave_group_on_stop=false, so a stopping worker sends no
LeaveGroup and the broker drops it at its session timeout, leadership included. With
LeaveGroup, this test's other two members are never assigned again.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from router.demo import WorkerProcess
from router.kafka import client_kwargs, ensure_topics
from router.settings import Settings
from tests.conftest import eventually, repo_root

pytestmark = pytest.mark.integration
SMALL_KB = repo_root() / "tests" / "data" / "bot_kb_small.yaml"
SESSION_S, REBALANCE_S = 5.0, 2.5


def member(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(**client_kwargs(settings), group_id=settings.app_id,
                            enable_auto_commit=False,
                            session_timeout_ms=int(SESSION_S * 1000),
                            rebalance_timeout_ms=int(REBALANCE_S * 1000),
                            heartbeat_interval_ms=1000)


async def test_a_leader_stopping_mid_rebalance_does_not_wedge_the_group(
        stack: Settings, tmp_path: Path) -> None:
    assert stack.kafka_leave_group_on_stop is False  # what the embedded stack records
    tag = uuid.uuid4().hex[:8]
    topics = {f"topic_{role}": f"ls{tag}.{name}" for role, name in stack.topics.items()}
    settings = stack.replace(app_id=f"leader-{tag}", topic_partitions=2, state_dir=tmp_path,
                             kafka_session_timeout_s=SESSION_S,
                             kafka_rebalance_timeout_s=REBALANCE_S,
                             bot_kb_path=str(SMALL_KB), bot_threshold=0.5, **topics)
    await ensure_topics(settings)
    inputs = [settings.topic_contacts_inbound, settings.topic_routing_requests,
              settings.topic_agents_events]
    leader = WorkerProcess(settings, 0, tmp_path)  # alone first: it leads the group
    b, c = member(settings), member(settings)
    started: list[AIOKafkaConsumer] = []
    try:
        assert await eventually(lambda: _ready(leader), timeout_s=40), \
            leader.log_path.read_text()[-2000:]
        await b.start()
        started.append(b)
        b.subscribe(inputs)
        # b joins; the worker takes part in that round (its generation is above 0 after it)
        assert await eventually(lambda: _both(b, leader), timeout_s=30)
        await c.start()
        started.append(c)
        c.subscribe(inputs)
        await asyncio.sleep(1.0)  # c's rebalance is under way
        stopped = time.monotonic()
        await asyncio.to_thread(leader.stop)  # SIGTERM: the worker's clean stop
        assert leader.proc.returncode == 0
        assert '"worker_stopped"' in leader.log_path.read_text()
        # dropped at its session timeout with its leadership: b and c get every partition
        assert await eventually(lambda: _split(b, c), timeout_s=30), \
            (b.assignment(), c.assignment())
        assert time.monotonic() - stopped >= SESSION_S - 1  # the session ran out, no LeaveGroup
    finally:
        leader.stop()
        for cons in started:
            await cons.stop()


async def _ready(worker: WorkerProcess) -> bool:
    return worker.ready()


async def _both(b: AIOKafkaConsumer, worker: WorkerProcess) -> bool:
    return bool(b.assignment()) and worker.ready()


async def _split(*members: Any) -> bool:
    owned = [m.assignment() for m in members]
    return all(owned) and sum(len(o) for o in owned) == 6
