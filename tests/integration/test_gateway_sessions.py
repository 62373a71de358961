"""Sessions end when they must, over real sockets against real gateways, broker and Redis: a
token that expires on an open socket, a renewal that keeps the session, a revocation that closes
the agent's sockets on two gateway instances within a second, a supervisor's logout, a disabled
or removed agent, and a page of a foreign origin."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import aiohttp
import pytest

from router.gateway import ends
from router.gateway.auth import Role
from router.gateway.ends import EndReason
from router.gateway.roster import Profile
from router.gateway.server import Gateway
from router.settings import Settings
from router.stack import free_port

from ._gateway import Client, GatewayUnderTest, gw, refused

pytestmark = pytest.mark.integration
__all__ = ["gw"]  # the fixture, imported for pytest


async def hello(gw: GatewayUnderTest, token: str, base: str | None = None) -> Client:
    client = Client(await gw.http.ws_connect(f"{base or gw.base}/ws", autoclose=False,
                                             max_msg_size=0))
    await client.send({"type": "hello", "token": token})
    return client


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.as_env(), "PEAKROUTE_LOG_LEVEL": "WARNING"}
    return subprocess.run([sys.executable, "-m", "router.cli", *args], env=env, text=True,
                          capture_output=True, timeout=60, check=False)


async def test_a_token_expiring_on_an_open_socket_closes_it_at_its_exp(
        gw: GatewayUnderTest, domain: str) -> None:
    await gw.agent("a-1", domain, {"zh": 1, "general": 1}, ready=False)
    client = await hello(gw, gw.token("a-1", domain, ttl_s=2))
    welcome = await client.until("welcome")
    # The client sends nothing more: the gateway's own timer ends the session at `exp`.
    err = await client.until("error", timeout_s=5)
    ended_ms = time.time() * 1000
    assert err["code"] == "token_expired"
    assert await client.closed() == 4402
    assert welcome["expires_at"] - 100 <= ended_ms <= welcome["expires_at"] + 1500


async def test_a_refresh_renews_the_token_and_keeps_the_session(
        gw: GatewayUnderTest, domain: str) -> None:
    await gw.agent("a-1", domain, {"zh": 1, "general": 1}, ready=False)
    client = await hello(gw, gw.token("a-1", domain, ttl_s=3))
    welcome = await client.until("welcome")
    await client.send({"type": "refresh", "id": "rf"})
    renewed = await client.until("renewed", ref="rf")
    assert renewed["expires_at"] >= welcome["expires_at"]
    assert gw.gateway.verifier.verify(renewed["token"], domain).subject == "a-1"
    await asyncio.sleep(max(welcome["expires_at"] / 1000 - time.time(), 0) + 0.5)
    # Past the first token's exp, the socket still serves (the renewed one is in force).
    await client.send({"type": "ping"})
    await client.until("pong")
    # A hello with another identity's token on this socket is refused and ends it.
    await client.send({"type": "hello", "token": gw.token("a-2", domain)})
    assert (await client.until("error"))["code"] == "forbidden"
    assert await client.closed() == 4401


async def test_a_fresh_hello_renews_an_open_session(gw: GatewayUnderTest, domain: str) -> None:
    await gw.agent("a-1", domain, {"zh": 1, "general": 1}, ready=False)
    client = await hello(gw, gw.token("a-1", domain, ttl_s=2))
    await client.until("welcome")
    await client.send({"type": "hello", "token": gw.token("a-1", domain, ttl_s=60),
                       "id": "h2"})
    renewed = await client.until("renewed", ref="h2")
    assert renewed["expires_at"] > time.time() * 1000 + 50_000
    await asyncio.sleep(2.5)
    await client.send({"type": "ping"})
    await client.until("pong")


async def test_a_revocation_closes_the_agents_sockets_on_two_instances_within_a_second(
        gw: GatewayUnderTest, domain: str) -> None:
    second = Gateway(gw.settings)
    port = free_port()
    await second.serve("127.0.0.1", port)
    try:
        await gw.agent("a-1", domain, {"zh": 1, "general": 1}, ready=False)
        token = gw.token("a-1", domain)
        on_first = await hello(gw, token)
        on_second = await hello(gw, token, f"http://127.0.0.1:{port}")
        await gw.gateway.roster.put(domain, [Profile("a-2", {"zh": 1})], by="test")
        other = await hello(gw, gw.token("a-2", domain), f"http://127.0.0.1:{port}")
        for c in (on_first, on_second, other):
            await c.until("welcome")
        started = time.monotonic()
        await ends.announce(gw.gateway.redis, domain, "a-1", EndReason.REVOKED, 60)
        codes = await asyncio.gather(*(c.closed(timeout_s=1.0) for c in (on_first, on_second)))
        elapsed = time.monotonic() - started
        assert codes == [4410, 4410]
        assert elapsed < 1.0, elapsed
        for c in (on_first, on_second):
            assert [f["code"] for f in c.seen if f["type"] == "error"] == ["token_revoked"]
        # Another agent's socket on the same instance is untouched.
        await other.send({"type": "ping"})
        await other.until("pong")
        # The revoked token cannot sign in again; a token issued after it can.
        before = refused("token_revoked")
        again = await hello(gw, token)
        assert (await again.until("error"))["code"] == "token_revoked"
        assert await again.closed() == 4401
        assert refused("token_revoked") == before + 1
        await asyncio.sleep(1.0)  # iat has a resolution of seconds
        fresh = await hello(gw, gw.token("a-1", domain))
        await fresh.until("welcome")
    finally:
        await second.stop()


async def test_a_supervisor_logout_closes_the_agents_desktop(gw: GatewayUnderTest,
                                                             domain: str) -> None:
    agent = await gw.agent("a-1", domain, {"zh": 1, "general": 1})
    sup = await hello(gw, gw.token("sup-1", domain, Role.SUPERVISOR))
    await sup.until("welcome")
    await sup.send({"type": "set_agent_state", "agent_id": "a-1", "state": "logout",
                    "id": "lo"})
    await sup.until("ack", ref="lo")
    assert await agent.closed(timeout_s=2.0) == 4410
    assert [f["code"] for f in agent.seen if f["type"] == "error"] == ["logged_out"]


async def test_disabling_and_removing_an_agent_end_its_sessions(gw: GatewayUnderTest,
                                                                domain: str) -> None:
    s = gw.settings
    agent = await gw.agent("a-1", domain, {"zh": 1, "general": 1})
    disabled = _cli(s, "agents", "--domain", domain, "disable", "a-1")
    assert disabled.returncode == 0, disabled.stderr
    assert await agent.closed(timeout_s=2.0) == 4410
    assert [f["code"] for f in agent.seen if f["type"] == "error"] == ["agent_disabled"]
    refused_hello = await hello(gw, gw.token("a-1", domain))
    assert (await refused_hello.until("error"))["code"] == "agent_disabled"
    assert await refused_hello.closed() == 4403
    assert _cli(s, "agents", "--domain", domain, "enable", "a-1").returncode == 0
    back = await hello(gw, gw.token("a-1", domain))
    await back.until("welcome")
    removed = _cli(s, "agents", "--domain", domain, "remove", "a-1")
    assert removed.returncode == 0, removed.stderr
    assert await back.closed(timeout_s=2.0) == 4410
    assert [f["code"] for f in back.seen if f["type"] == "error"] == ["agent_removed"]
    assert await gw.gateway.roster.get(domain, "a-1") is None


@pytest.mark.parametrize("origin", ["http://evil.example", "null"])
async def test_a_page_of_a_foreign_origin_cannot_open_the_socket(
        gw: GatewayUnderTest, domain: str, origin: str) -> None:
    before = refused("foreign_origin")
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await gw.http.ws_connect(f"{gw.base}/ws", headers={"Origin": origin})
    assert info.value.status == 403
    assert refused("foreign_origin") == before + 1
    # The gateway's own pages (same host) may.
    own = await gw.http.ws_connect(f"{gw.base}/ws", headers={"Origin": gw.base})
    await own.close()
