"""The agent protocol over a raw WebSocket against a real gateway, worker, broker and Redis:
every permission rule and hostile frame gets an error frame or a close, changes nothing and is
counted; the gateway keeps serving."""

from __future__ import annotations

import asyncio
import time

import jwt
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from router.events import AgentProfileApplied, OfferAccepted
from router.gateway.auth import Role
from router.routing.store import domain_stats
from router.settings import Settings

from ..conftest import read_topic
from ._gateway import SECRET, Client, GatewayUnderTest, gw, refused, request_contact

pytestmark = pytest.mark.integration
__all__ = ["gw"]  # the fixture, imported for pytest


@pytest.fixture
async def prod(kafka_producer: AIOKafkaProducer) -> AIOKafkaProducer:
    return kafka_producer


async def hello(gw: GatewayUnderTest, token: str) -> Client:
    client = await gw.connect()
    await client.send({"type": "hello", "token": token})
    return client


async def test_a_frame_before_hello_is_refused_and_counted(gw: GatewayUnderTest,
                                                           domain: str) -> None:
    before = refused("unauthenticated")
    client = await gw.connect()
    await client.send({"type": "state", "state": "ready", "id": "x1"})
    err = await client.until("error")
    assert (err["code"], err["ref"]) == ("unauthenticated", "x1")
    assert refused("unauthenticated") == before + 1
    # Without a hello the socket is closed once the hello timeout passes.
    assert await client.closed() == 4408
    async with gw.http.get(f"{gw.base}/metrics") as resp:
        text = await resp.text()
    assert 'peakroute_gateway_refused_frames_total{code="unauthenticated"}' in text
    assert "peakroute_gateway_connections" in text


@pytest.mark.parametrize("case", ["forged", "expired", "wrong_audience", "alg_none", "garbage"])
async def test_a_bad_token_gets_an_error_and_a_close(gw: GatewayUnderTest, domain: str,
                                                     case: str) -> None:
    now = int(time.time())
    claims = {"sub": "a-1", "role": "agent", "dom": domain, "iss": "peakroute",
              "aud": "peakroute-desktop", "iat": now, "exp": now + 600}
    token = {
        "forged": jwt.encode(claims, "not-the-secret-but-just-as-long-as-one", algorithm="HS256"),
        "expired": jwt.encode({**claims, "iat": now - 900, "exp": now - 60}, SECRET,
                              algorithm="HS256"),
        "wrong_audience": jwt.encode({**claims, "aud": "someone-else"}, SECRET,
                                     algorithm="HS256"),
        "alg_none": jwt.encode(claims, None, algorithm="none"),  # type: ignore[arg-type]
        "garbage": "not.a.token",
    }[case]
    code = "token_expired" if case == "expired" else "invalid_token"
    before = refused(code)
    client = await hello(gw, token)
    assert (await client.until("error"))["code"] == code
    assert await client.closed() == 4401
    assert refused(code) == before + 1


async def test_an_agent_without_a_profile_is_refused(gw: GatewayUnderTest, domain: str) -> None:
    client = await hello(gw, gw.token("nobody", domain))
    assert (await client.until("error"))["code"] == "no_profile"
    assert await client.closed() == 4403


async def test_accepting_another_agents_offer_is_forbidden_and_changes_nothing(
        gw: GatewayUnderTest, domain: str, prod: AIOKafkaProducer, stack: Settings) -> None:
    owner = await gw.agent("owner", domain, {"zh": 1, "refunds": 1})
    intruder = await gw.agent("intruder", domain, {"zh": 1, "orders": 1})
    await request_contact(prod, gw.settings, domain, "refunds")
    offer = await owner.until("offer")
    before = refused("forbidden")
    await intruder.send({"type": "accept", "offer_id": offer["offer_id"], "id": "steal"})
    err = await intruder.until("error", ref="steal")
    assert err["code"] == "forbidden"
    assert refused("forbidden") == before + 1
    await intruder.send({"type": "decline", "offer_id": offer["offer_id"], "id": "d"})
    assert (await intruder.until("error", ref="d"))["code"] == "forbidden"
    # The owner still has it and takes it.
    await owner.send({"type": "accept", "offer_id": offer["offer_id"]})
    assigned = await owner.until("assigned")
    assert assigned["contact_id"] == offer["contact_id"]
    # Nothing was published for the intruder.
    records = await read_topic(stack, stack.topic_agents_events, lambda r: False, timeout_s=2)
    intruder_events = [orjson.loads(r.value) for r in records
                       if r.key == domain.encode()
                       and orjson.loads(r.value).get("agent_id") == "intruder"
                       and orjson.loads(r.value)["type"] in {OfferAccepted.TYPE,
                                                              "offer.declined.v1"}]
    assert intruder_events == []
    # Completing someone else's contact is refused too.
    await intruder.send({"type": "complete", "contact_id": offer["contact_id"], "id": "c"})
    assert (await intruder.until("error", ref="c"))["code"] == "forbidden"
    await owner.send({"type": "complete", "contact_id": offer["contact_id"]})
    await owner.until("completed")
    stats = await domain_stats(gw.gateway.redis, domain)
    assert (stats["answered"], stats["completed"]) == (1, 1)


async def test_an_unknown_offer_or_contact_is_refused(gw: GatewayUnderTest, domain: str) -> None:
    agent = await gw.agent("a-1", domain, {"zh": 1, "general": 1})
    await agent.send({"type": "accept", "offer_id": "o999999", "id": "u1"})
    assert (await agent.until("error", ref="u1"))["code"] == "unknown_offer"
    await agent.send({"type": "complete", "contact_id": "c-nope", "id": "u2"})
    assert (await agent.until("error", ref="u2"))["code"] == "unknown_contact"


async def test_roles_are_enforced(gw: GatewayUnderTest, domain: str) -> None:
    agent = await gw.agent("a-1", domain, {"zh": 1, "general": 1})
    await agent.send({"type": "set_profile", "agent_id": "a-1", "skills": {"security": 2},
                      "id": "p"})
    assert (await agent.until("error", ref="p"))["code"] == "forbidden"
    await agent.send({"type": "set_agent_state", "agent_id": "a-2", "state": "logout",
                      "id": "q"})
    assert (await agent.until("error", ref="q"))["code"] == "forbidden"
    sup = await hello(gw, gw.token("sup-1", domain, Role.SUPERVISOR))
    assert (await sup.until("welcome"))["role"] == "supervisor"
    await sup.send({"type": "accept", "offer_id": "o1", "id": "s"})
    assert (await sup.until("error", ref="s"))["code"] == "forbidden"
    # A second hello on one socket renews the session (the same identity's fresh token).
    await sup.send({"type": "hello", "token": gw.token("sup-1", domain, Role.SUPERVISOR),
                    "id": "h"})
    assert (await sup.until("renewed", ref="h"))["expires_at"] > 0


@pytest.mark.parametrize(("raw", "code"), [
    ("not json", "malformed"),
    ("[1, 2]", "malformed"),
    ('{"no_type": 1}', "malformed"),
    ('{"type": 7}', "malformed"),
    ('{"type": "teleport"}', "unknown_type"),
    ('{"type": "accept", "offer_id": "has spaces"}', "invalid_field"),
    ('{"type": "accept"}', "invalid_field"),
    ('{"type": "decline", "offer_id": "o1", "reason": "' + "x" * 65 + '"}', "invalid_field"),
    ('{"type": "state", "state": "asleep"}', "invalid_field"),
    ('{"type": "complete", "contact_id": ["c-1"]}', "invalid_field"),
    ("[" * 2000 + "]" * 2000, "malformed"),
    (b"\xff\xfe\x00garbage", "malformed"),
])
async def test_malformed_frames_get_an_error_and_the_socket_stays_usable(
        gw: GatewayUnderTest, domain: str, raw: str | bytes, code: str) -> None:
    agent = await gw.agent("a-1", domain, {"zh": 1, "general": 1}, ready=False)
    before = refused(code)
    await agent.send(raw)
    assert (await agent.until("error"))["code"] == code
    assert refused(code) == before + 1
    await agent.send({"type": "ping"})
    await agent.until("pong")


async def test_an_invalid_profile_from_a_supervisor_changes_nothing(
        gw: GatewayUnderTest, domain: str) -> None:
    await gw.agent("a-1", domain, {"zh": 1, "general": 1}, ready=False)
    sup = await hello(gw, gw.token("sup-1", domain, Role.SUPERVISOR))
    await sup.until("welcome")
    for i, skills in enumerate([{"security": 11}, {"bad skill": 1}, {"zh": "2"}]):
        await sup.send({"type": "set_profile", "agent_id": "a-1", "skills": skills,
                        "id": f"p{i}"})
        assert (await sup.until("error", ref=f"p{i}"))["code"] == "invalid_field"
    await sup.send({"type": "set_profile", "agent_id": "ghost", "skills": {"zh": 1}, "id": "g"})
    assert (await sup.until("error", ref="g"))["code"] == "invalid_field"
    profile = await gw.gateway.roster.get(domain, "a-1")
    assert profile is not None
    assert profile.skills == {"zh": 1, "general": 1}


async def test_an_oversized_frame_closes_the_socket_and_the_gateway_carries_on(
        gw: GatewayUnderTest, domain: str) -> None:
    agent = await gw.agent("a-1", domain, {"zh": 1, "general": 1}, ready=False)
    before = refused("too_large")
    await agent.send('{"type": "ping", "pad": "' + "x" * 10_000 + '"}')
    assert await agent.closed() == 1009
    assert refused("too_large") == before + 1
    again = await gw.agent("a-1", domain, {"zh": 1, "general": 1}, ready=False)
    await again.send({"type": "ping"})
    await again.until("pong")


async def test_a_flooding_client_is_limited_then_closed(gw: GatewayUnderTest,
                                                        domain: str) -> None:
    agent = await gw.agent("a-1", domain, {"zh": 1, "general": 1}, ready=False)
    before = refused("rate_limited")
    for _ in range(200):
        await agent.send({"type": "ping"})
    assert await agent.closed() == 1008
    errors = [f for f in agent.seen if f["type"] == "error"]
    assert errors
    assert {f["code"] for f in errors} == {"rate_limited"}
    assert refused("rate_limited") >= before + 15
    other = await gw.agent("a-2", domain, {"zh": 1, "general": 1}, ready=False)
    await other.send({"type": "ping"})
    await other.until("pong")


async def test_a_supervisor_profile_change_reaches_the_next_match_and_is_audited(
        gw: GatewayUnderTest, domain: str, prod: AIOKafkaProducer, stack: Settings) -> None:
    agent = await gw.agent("a-1", domain, {"zh": 1, "orders": 1})
    cid = await request_contact(prod, gw.settings, domain, "security")  # level 2 only: waits
    sup = await hello(gw, gw.token("sup-7", domain, Role.SUPERVISOR))
    await sup.until("welcome")
    console = await sup.until("console")
    assert {q["queue"] for q in console["queues"]} >= {"security", "refunds"}
    assert console["rating"]["domain"] == domain  # nothing answered yet: unrated
    assert (console["rating"]["tier"], console["rating"]["score"]) == ("unrated", None)
    await sup.send({"type": "set_profile", "agent_id": "a-1",
                    "skills": {"zh": 1, "orders": 1, "security": 2}, "reason": "peak", "id": "p"})
    await sup.until("ack", ref="p")
    offer = await agent.until("offer")
    assert (offer["contact_id"], offer["queue"]) == (cid, "security")
    records = await read_topic(
        stack, stack.topic_routing_decisions,
        lambda rs: any(orjson.loads(r.value).get("domain") == domain
                       and orjson.loads(r.value)["type"] == AgentProfileApplied.TYPE for r in rs))
    audit = [orjson.loads(r.value) for r in records
             if orjson.loads(r.value)["type"] == AgentProfileApplied.TYPE
             and orjson.loads(r.value)["domain"] == domain]
    assert [(a["changed_by"], a["logged_in"]) for a in audit] == [("sup-7", True)]
    assert audit[0]["skills"] == {"zh": 1, "orders": 1, "security": 2}
    # The desktop hears about its new skills.
    profile = await agent.until("profile")
    assert profile["skills"]["security"] == 2
    assert "security" in profile["queues"]


async def test_the_frame_limit_is_per_agent_across_its_sockets(gw: GatewayUnderTest,
                                                               domain: str) -> None:
    tabs = [await gw.agent("a-1", domain, {"zh": 1, "general": 1}, ready=False)
            for _ in range(3)]
    await asyncio.sleep(1.2)  # the hellos' frames are earned back
    before = refused("rate_limited")
    for tab in tabs:  # 3 x 10 frames: each socket under the burst of 20, the agent over it
        for _ in range(10):
            await tab.send({"type": "ping"})
    pongs = 0
    for tab in tabs:
        while True:
            try:
                await tab.until("pong", timeout_s=0.5)
            except (AssertionError, TimeoutError):  # no more pongs
                break
            pongs += 1
    assert pongs <= 20 + 2  # the burst, and what the rate earns back meanwhile
    assert refused("rate_limited") >= before + 30 - 22
    assert {f["code"] for tab in tabs for f in tab.seen if f["type"] == "error"} == {
        "rate_limited"}
    await asyncio.sleep(1.0)  # under the strikes limit: every socket still serves
    for tab in tabs:
        await tab.send({"type": "ping"})
        await tab.until("pong")
    # Another agent is not limited by a-1's frames.
    other = await gw.agent("a-2", domain, {"zh": 1, "general": 1}, ready=False)
    await other.send({"type": "ping"})
    await other.until("pong")


async def test_an_agent_may_hold_only_so_many_sockets(gw: GatewayUnderTest, domain: str) -> None:
    limit = gw.settings.gateway_sockets_per_agent
    held = [await gw.agent("a-1", domain, {"zh": 1, "general": 1}, ready=False)
            for _ in range(limit)]
    extra = await hello(gw, gw.token("a-1", domain))
    assert (await extra.until("error"))["code"] == "too_many_sockets"
    assert await extra.closed() == 1008
    await held[0].ws.close()
    await asyncio.sleep(0.2)
    again = await hello(gw, gw.token("a-1", domain))
    await again.until("welcome")
