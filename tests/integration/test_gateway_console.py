"""The supervisor console's figures come from router/sla: for the same queue and window it shows
the service level (and waiting, at risk) that `peakroute status --once --json` prints."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from router.events import CustomerLeft
from router.gateway.auth import Role
from router.routing import state as routing_state
from router.settings import Settings
from router.sla.windows import WINDOW_NAMES
from router.stage import now_ms

from ..conftest import eventually
from ._gateway import Client, GatewayUnderTest, gw, publish, request_contact

pytestmark = pytest.mark.integration
__all__ = ["gw"]


def _status(settings: Settings, domain: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.as_env(), "PEAKROUTE_LOG_LEVEL": "WARNING"}
    return subprocess.run([sys.executable, "-m", "router.cli", "status", "--once", "--json",
                           "--domain", domain], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


async def test_the_console_and_status_give_the_same_service_level(
        gw: GatewayUnderTest, domain: str, kafka_producer: AIOKafkaProducer) -> None:
    s = gw.settings
    agent = await gw.agent("a-1", domain, {"zh": 1, "orders": 1}, capacity={"chat": 1})
    answered = await request_contact(kafka_producer, s, domain, "orders")
    offer = await agent.until("offer", contact_id=answered)
    await agent.send({"type": "accept", "offer_id": offer["offer_id"]})
    await agent.until("assigned", contact_id=answered)
    left = await request_contact(kafka_producer, s, domain, "orders")  # the slot is taken
    waiting = await request_contact(kafka_producer, s, domain, "orders")
    await asyncio.sleep(s.short_abandon_s + 0.5)  # not a short abandon: it counts
    await publish(kafka_producer, s.topic_routing_requests, domain, CustomerLeft(
        event_id=f"{domain}-x", ts_ms=now_ms(), contact_id=left, domain=domain))

    async def settled() -> bool:
        raw = (await routing_state.sla_totals(gw.gateway.redis, domain)).get("orders", {})
        return raw.get("answered") == 1 and raw.get("abandoned") == 1

    assert await eventually(settled, timeout_s=30)
    sup = Client(await gw.http.ws_connect(f"{gw.base}/ws", autoclose=False, max_msg_size=0))
    await sup.send({"type": "hello", "token": gw.token("sup-1", domain, Role.SUPERVISOR)})
    await sup.until("welcome")
    status_task = asyncio.to_thread(_status, s, domain)
    frame = await sup.until("console")
    proc = await status_task
    assert proc.returncode == 0, proc.stderr
    [q] = [q for q in orjson.loads(proc.stdout)["queues"] if q["queue"] == "orders"]
    shown: dict[str, Any] = next(c for c in frame["queues"] if c["queue"] == "orders")
    for window in WINDOW_NAMES:
        console_sl = shown["windows"][window]["service_level"]
        assert console_sl == q["windows"][window]["service_level"] == 0.5, window
        assert shown["windows"][window]["abandoned"] == q["windows"][window]["abandoned"] == 1
    assert shown["service_level"] == q["windows"]["today"]["service_level"]
    assert (frame["window"], frame["formula"], frame["timezone"]) == (
        "today", s.sla_formula, s.sla_timezone)
    assert shown["waiting"] == q["waiting"] == 1  # `waiting` has an offer out or waits in line
    assert shown["at_risk"] == q["at_risk"]
    assert waiting
