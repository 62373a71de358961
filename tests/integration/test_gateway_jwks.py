"""RS256 tokens checked against a real JWKS endpoint (a local HTTP server): a rotated key is
fetched, a withdrawn one stops being trusted after the keys' lifetime, and a provider that hangs
delays no token signed with a known key (unknown kids are refused from a negative cache)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from router.gateway.auth import AuthError, Verifier
from router.settings import Settings
from router.stack import free_port

pytestmark = pytest.mark.integration


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


KEYS = {kid: _key() for kid in ("k1", "k2", "k9")}


def _jwk(kid: str) -> dict[str, Any]:
    d = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEYS[kid].public_key()))
    return {**d, "kid": kid, "use": "sig", "alg": "RS256"}


def token(kid: str, sub: str = "a-1") -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "dom": "shop-1", "iss": "peakroute",
                       "aud": "peakroute-desktop", "iat": now, "exp": now + 600},
                      KEYS[kid], algorithm="RS256", headers={"kid": kid})


@dataclass
class Provider:
    """A JWKS endpoint whose keys a test rotates, and which can hang."""

    url: str
    kids: list[str] = field(default_factory=lambda: ["k1"])
    hang: bool = False
    requests: int = 0


@pytest.fixture
async def idp() -> AsyncIterator[Provider]:
    port = free_port()
    provider = Provider(f"http://127.0.0.1:{port}/certs")

    async def certs(request: web.Request) -> web.Response:
        provider.requests += 1
        if provider.hang:
            await asyncio.sleep(3600)
        return web.json_response({"keys": [_jwk(k) for k in provider.kids]})

    app = web.Application()
    app.router.add_get("/certs", certs)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield provider
    await runner.cleanup()


def verifier(tmp_path: Path, idp: Provider, **extra: Any) -> Verifier:
    return Verifier(Settings(state_dir=tmp_path, gateway_jwt_algorithm="RS256",
                             gateway_jwks_url=idp.url, **extra))


async def test_a_rotated_key_is_fetched_and_a_withdrawn_key_stops_being_trusted(
        tmp_path: Path, idp: Provider) -> None:
    v = verifier(tmp_path, idp, gateway_jwks_ttl_s=0.5, gateway_jwks_unknown_kid_s=0.2)
    try:
        assert (await v.check(token("k1"), "x")).subject == "a-1"
        idp.kids = ["k1", "k2"]  # the provider rotates: k2 signs new tokens
        assert (await v.check(token("k2", "a-2"), "x")).subject == "a-2"
        idp.kids = ["k2"]  # ... and withdraws k1 (say, after a compromise)
        await asyncio.sleep(1.0)  # past the keys' lifetime: refetched in the background
        with pytest.raises(AuthError) as refused:
            await v.check(token("k1"), "x")
        assert refused.value.code == "invalid_token"
        assert (await v.check(token("k2"), "x")).subject == "a-1"
    finally:
        await v.aclose()


async def test_a_hanging_identity_provider_delays_no_token_with_a_known_key(
        tmp_path: Path, idp: Provider) -> None:
    v = verifier(tmp_path, idp, gateway_jwks_timeout_s=1.0, gateway_jwks_unknown_kid_s=30.0)
    try:
        await v.check(token("k1"), "x")
        idp.hang = True
        asked = idp.requests
        started = time.monotonic()
        unknown = asyncio.create_task(v.check(token("k9"), "x"))  # waits on the provider
        await asyncio.sleep(0.05)
        known = await asyncio.gather(*(v.check(token("k1", f"a-{i}"), "x") for i in range(50)))
        assert len(known) == 50
        assert time.monotonic() - started < 0.5  # none waited for the hanging fetch
        with pytest.raises(AuthError):
            await unknown
        assert 0.9 <= time.monotonic() - started < 3.0  # given up at the fetch timeout
        # Another unknown kid within the negative cache's window is refused at once, without
        # asking the provider again.
        again = time.monotonic()
        with pytest.raises(AuthError):
            await v.check(token("k9"), "x")
        assert time.monotonic() - again < 0.1
        assert idp.requests == asked + 1
    finally:
        await v.aclose()


async def test_the_first_fetch_of_a_provider_that_hangs_gives_up_at_the_timeout(
        tmp_path: Path, idp: Provider) -> None:
    idp.hang = True
    v = verifier(tmp_path, idp, gateway_jwks_timeout_s=0.5)
    try:
        started = time.monotonic()
        ticks = 0

        async def ticker() -> None:  # the event loop keeps running meanwhile
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick = asyncio.create_task(ticker())
        with pytest.raises(AuthError):
            await v.check(token("k1"), "x")
        tick.cancel()
        assert 0.4 <= time.monotonic() - started < 2.0
        assert ticks >= 20
    finally:
        await v.aclose()
