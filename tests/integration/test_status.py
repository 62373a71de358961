"""`peakroute status` against a running worker: its figures equal those in Redis and in the
worker's /metrics at the same moment, and the live view renders them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from router.demo import WorkerProcess
from router.events import (
    AgentLoggedIn,
    CustomerLeft,
    Event,
    OfferAccepted,
    RoutingRequested,
)
from router.routing import state as routing_state
from router.settings import Settings
from router.stage import now_ms
from tests.conftest import eventually, read_topic

pytestmark = pytest.mark.integration


async def _send(prod: AIOKafkaProducer, topic: str, domain: str, *events: Event) -> None:
    for e in events:
        await prod.send_and_wait(topic, e.to_json(), key=domain.encode())


def _status(settings: Settings, *args: str, columns: int = 200
            ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.as_env(), "COLUMNS": str(columns)}
    return subprocess.run([sys.executable, "-m", "router.cli", "status", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def _samples(page: bytes, domain: str) -> dict[tuple[str, str, str], float]:
    """(metric sample name, queue, window) -> value, for one domain."""
    out = {}
    for family in text_string_to_metric_families(page.decode()):
        for s in family.samples:
            if s.labels.get("domain") == domain and "outcome" not in s.labels \
                    and "state" not in s.labels:
                out[(s.name, s.labels.get("queue", ""), s.labels.get("window", ""))] = s.value
    return out


async def test_status_figures_equal_redis_and_metrics_at_the_same_moment(
    stack: Settings, worker: WorkerProcess, kafka_producer: AIOKafkaProducer,
    redis_client: aioredis.Redis, domain: str,
) -> None:
    t = now_ms()
    agent = AgentLoggedIn(event_id=f"{domain}-l", ts_ms=t, agent_id="a1", domain=domain,
                          skills={"zh": 1, "general": 1}, capacity={"chat": 1})
    await _send(kafka_producer, stack.topic_agents_events, domain, agent)
    requests = [RoutingRequested(event_id=f"{domain}-r{i}", ts_ms=now_ms(),
                                 contact_id=f"{domain}-c{i}", domain=domain, queue="general")
                for i in range(4)]
    await _send(kafka_producer, stack.topic_routing_requests, domain, *requests)
    offers = await read_topic(stack, stack.topic_assignments, lambda recs: any(
        orjson.loads(r.value).get("contact_id") == f"{domain}-c0" for r in recs))
    offer = next(orjson.loads(r.value) for r in offers
                 if orjson.loads(r.value).get("contact_id") == f"{domain}-c0")
    await _send(kafka_producer, stack.topic_agents_events, domain, OfferAccepted(
        event_id=f"{domain}-a", ts_ms=now_ms(), agent_id="a1", domain=domain,
        offer_id=offer["offer_id"], contact_id=f"{domain}-c0"))
    await _send(kafka_producer, stack.topic_routing_requests, domain, CustomerLeft(
        event_id=f"{domain}-x", ts_ms=now_ms(), contact_id=f"{domain}-c3", domain=domain))
    async def settled() -> bool:
        raw = (await routing_state.sla_totals(redis_client, domain)).get("general", {})
        return raw.get("answered") == 1 and raw.get("abandoned") == 1

    assert await eventually(settled, timeout_s=30)

    # The same moment: status, /metrics and Redis, read together (nothing moves meanwhile
    # but the clock: waits are compared within the time the three reads take).
    page_task = asyncio.to_thread(worker.get, "/metrics")
    status_task = asyncio.to_thread(_status, stack, "--once", "--json", "--domain", domain)
    redis_task = routing_state.sla_totals(redis_client, domain)
    page, proc, raw = await asyncio.gather(page_task, status_task, redis_task)
    assert proc.returncode == 0, proc.stderr
    status: dict[str, Any] = orjson.loads(proc.stdout)
    [q] = status["queues"]
    metrics = _samples(page, domain)
    redis_totals = raw["general"]

    assert q["queue"] == "general"
    expected = {"offered": 4, "answered": 1, "answered_within_target": 1, "abandoned": 1,
                "short_abandoned": 1}
    for name, value in expected.items():
        assert q["totals"][name] == value == redis_totals[name]
        assert metrics[(f"peakroute_contacts_{name}_total", "general", "")] == value
    assert q["totals"]["wait_sum_s"] == pytest.approx(redis_totals["wait_sum_ms"] / 1000)
    assert metrics[("peakroute_contacts_answered_wait_seconds_total", "general", "")] == \
        pytest.approx(q["totals"]["wait_sum_s"])
    # a1 holds c0 in its only slot: c1 and c2 wait in line (c3 left).
    assert q["waiting"] == 2 == metrics[("peakroute_queue_waiting_contacts", "general", "")]
    assert q["queued"] == 2
    unanswered = sum(u.waiting for u in await routing_state.unanswered(
        redis_client, domain, now_ms(), 0.5) if u.queue == "general")
    assert unanswered == 2
    assert q["at_risk"] == metrics[("peakroute_queue_at_risk_contacts", "general", "")] == 0
    assert q["agents_ready"] == metrics[("peakroute_queue_agents_ready", "general", "")] == 1
    assert q["oldest_wait_s"] == pytest.approx(
        metrics[("peakroute_queue_oldest_wait_seconds", "general", "")], abs=3.0)
    for window in ("5m", "15m", "1h", "today"):
        sl = q["windows"][window]["service_level"]
        assert sl == 1.0  # 1 within target / (1 answered + 1 abandoned - 1 short)
        assert metrics[("peakroute_service_level_ratio", "general", window)] == sl
    [d] = status["domains"]
    assert d["agents"] == {"ready": 1, "not_ready": 0}

    view = _status(stack, "--once", "--domain", domain)
    assert view.returncode == 0, view.stderr
    row = next(line for line in view.stdout.splitlines() if line.strip().startswith("general"))
    assert row.split()[1:5] == ["100.0"] * 4  # SL% over 5m, 15m, 1h, today
    assert f"{domain}  agents: 1 ready" in view.stdout
    assert len(row.split()) == 13  # the queue and its 12 figures
    # 80 columns: the least important columns go, the others keep whole figures
    narrow = _status(stack, "--once", "--domain", domain, columns=80)
    assert narrow.returncode == 0, narrow.stderr
    assert all(len(line) <= 80 for line in narrow.stdout.splitlines())
    row = next(line for line in narrow.stdout.splitlines() if line.strip().startswith("general"))
    assert "…" not in row
    cells = row.split()
    assert cells[1] == "100.0"  # SL% 5m stays
    assert 8 <= len(cells) < 13
    assert "hidden at this width: " in narrow.stdout
    assert f"{domain}  1 ready, 0 not ready" in narrow.stdout


async def test_status_without_redis_says_what_to_do(stack: Settings) -> None:
    down = stack.replace(redis_url="redis://127.0.0.1:1/0")
    proc = await asyncio.to_thread(_status, down, "--once", "--json")
    assert proc.returncode == 2
    assert "cannot read Redis" in proc.stderr
    assert "peakroute stack up" in proc.stderr
