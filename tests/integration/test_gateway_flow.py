"""The desktop flow over /ws on the real stack: an offer carries the bot conversation, a
decline is rescinded, a reconnecting desktop gets its open offer and active contacts back,
and `peakroute agents` manages the roster (a change is live and audited)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from router.events import AgentProfileApplied
from router.gateway.auth import Verifier
from router.routing import state as routing_state
from router.routing.store import domain_stats
from router.settings import Settings

from ..conftest import eventually, read_topic
from ._gateway import GatewayUnderTest, escalated_contact, gw, request_contact

pytestmark = pytest.mark.integration
__all__ = ["gw"]


async def test_an_offer_carries_the_bot_conversation_and_the_books_count_the_answer(
        gw: GatewayUnderTest, domain: str, kafka_producer: AIOKafkaProducer) -> None:
    agent = await gw.agent("a-1", domain, {"en": 1, "general": 2, "complaints": 1})
    cid = await escalated_contact(kafka_producer, gw.settings, domain,
                                  "I want to talk to a human please", tier="vip")
    offer = await agent.until("offer", contact_id=cid)
    ctx = offer["context"]
    assert (ctx["language"], ctx["vip"]) == ("en", True)
    assert ctx["priority"] >= 3
    assert ctx["intent"]
    assert [t["speaker"] for t in ctx["transcript"]][:2] == ["customer", "bot"]
    assert ctx["transcript"][0]["text"] == "I want to talk to a human please"
    assert offer["expires_at"] > offer["context"]["waited_ms"]
    await agent.send({"type": "accept", "offer_id": offer["offer_id"]})
    assigned = await agent.until("assigned", contact_id=cid)
    assert assigned["within_target"] is True
    await agent.send({"type": "complete", "contact_id": cid, "wrap_up": "resolved"})
    await agent.until("completed", contact_id=cid)
    stats = await domain_stats(gw.gateway.redis, domain)
    assert (stats["answered"], stats["answered_within_target"], stats["completed"]) == (1, 1, 1)
    figures = await agent.until("stats", completed=1)
    assert (figures["offered"], figures["answered"], figures["within_target"]) == (1, 1, 1)


async def test_a_decline_is_rescinded_and_counted_in_the_agents_figures(
        gw: GatewayUnderTest, domain: str, kafka_producer: AIOKafkaProducer) -> None:
    agent = await gw.agent("a-1", domain, {"zh": 1, "orders": 1})
    cid = await request_contact(kafka_producer, gw.settings, domain, "orders")
    offer = await agent.until("offer", contact_id=cid)
    await agent.send({"type": "decline", "offer_id": offer["offer_id"], "reason": "busy"})
    rescind = await agent.until("rescind", offer_id=offer["offer_id"])
    assert rescind["reason"] == "busy"
    await agent.until("stats", declined=1)


async def test_a_reconnecting_desktop_gets_its_offer_and_active_contacts_back(
        gw: GatewayUnderTest, domain: str, kafka_producer: AIOKafkaProducer) -> None:
    agent = await gw.agent("a-1", domain, {"zh": 1, "payment": 1}, capacity={"chat": 2})
    first = await request_contact(kafka_producer, gw.settings, domain, "payment")
    offer = await agent.until("offer", contact_id=first)
    await agent.send({"type": "accept", "offer_id": offer["offer_id"]})
    await agent.until("assigned", contact_id=first)
    await agent.ws.close()
    second = await request_contact(kafka_producer, gw.settings, domain, "payment")
    await eventually(lambda: _offered(gw, domain, "a-1"), timeout_s=10)
    again = await gw.connect()
    await again.send({"type": "hello", "token": gw.token("a-1", domain)})
    welcome = await again.until("welcome")
    assert welcome["state"] == "ready"
    assert [a["contact_id"] for a in welcome["active"]] == [first]
    assert (await again.until("offer"))["contact_id"] == second
    await again.send({"type": "complete", "contact_id": first})
    await again.until("completed", contact_id=first)


async def _offered(gw: GatewayUnderTest, domain: str, agent_id: str) -> bool:
    return bool(await routing_state.offers_of(gw.gateway.redis, domain, agent_id))


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.as_env(), "PEAKROUTE_LOG_LEVEL": "WARNING"}
    return subprocess.run([sys.executable, "-m", "router.cli", *args], env=env, text=True,
                          capture_output=True, timeout=60, check=False)


async def test_the_agents_command_manages_the_roster_live(
        gw: GatewayUnderTest, domain: str, stack: Settings, tmp_path: Path,
        kafka_producer: AIOKafkaProducer) -> None:
    s = gw.settings
    added = _cli(s, "agents", "--domain", domain, "add", "a-1", "--skills", "zh=1,orders=1",
                 "--capacity", "chat=2", "--name", "Li Lei")
    assert added.returncode == 0, added.stderr
    again = _cli(s, "agents", "--domain", domain, "add", "a-1", "--skills", "zh=1")
    assert again.returncode == 2
    assert "already in the roster" in again.stderr
    bad = _cli(s, "agents", "--domain", domain, "add", "a-9", "--skills", "zh=11")
    assert bad.returncode == 2
    assert "out_of_range" in bad.stderr
    roster = tmp_path / "roster.csv"
    roster.write_text("agent_id,name,skills,capacity\n"
                      "a-2,Han Meimei,en=2;refunds=1,chat=3\n"
                      "a-1,Li Lei,zh=1;orders=1,chat=2\n")
    imported = _cli(s, "agents", "--domain", domain, "import", str(roster))
    assert imported.returncode == 0, imported.stderr
    assert "1 new, 0 changed (live), 1 unchanged" in imported.stdout
    # The agent signs in through the gateway with its roster profile and goes ready.
    # The token first: the CLI blocks this loop, which is the gateway's too, and a socket
    # opened before it would pass its hello timeout meanwhile.
    token = _cli(s, "agents", "--domain", domain, "token", "a-1", "--ttl", "30m").stdout.strip()
    agent = await gw.connect()
    assert Verifier(s).verify(token, "x").subject == "a-1"
    await agent.send({"type": "hello", "token": token})
    welcome = await agent.until("welcome")
    assert (welcome["skills"], welcome["name"]) == ({"zh": 1, "orders": 1}, "Li Lei")
    await agent.send({"type": "state", "state": "ready", "id": "r"})
    await agent.until("ack", ref="r")
    cid = await request_contact(kafka_producer, s, domain, "security")  # nobody can take it
    changed = _cli(s, "agents", "--domain", domain, "set", "a-1", "--skills",
                   "zh=1,orders=1,security=2", "--by", "ops-lead", "--reason", "peak")
    assert changed.returncode == 0, changed.stderr
    assert (await agent.until("offer", contact_id=cid))["queue"] == "security"
    records = await read_topic(stack, stack.topic_routing_decisions, lambda rs: any(
        orjson.loads(r.value).get("changed_by") == "ops-lead"
        and orjson.loads(r.value).get("domain") == domain for r in rs))
    audit = [orjson.loads(r.value) for r in records
             if orjson.loads(r.value)["type"] == AgentProfileApplied.TYPE
             and orjson.loads(r.value)["domain"] == domain]
    assert [(a["agent_id"], a["changed_by"], a["reason"], a["logged_in"]) for a in audit] == [
        ("a-1", "ops-lead", "peak", True)]
    listed = _cli(s, "agents", "--domain", domain, "list", "--json")
    rows = {r["agent_id"]: r for r in map(orjson.loads, listed.stdout.splitlines())}
    assert (rows["a-1"]["state"], rows["a-1"]["updated_by"]) == ("ready", "ops-lead")
    assert "security" in rows["a-1"]["queues"]
    assert rows["a-2"]["state"] == "offline"
