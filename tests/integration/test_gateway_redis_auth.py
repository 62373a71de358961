"""The gateway and `peakroute agents` honour the Redis settings: with a password-protected
redis-server and the password passed apart from the URL (as deploy/compose.yaml does),
`peakroute gateway` serves a desktop and `peakroute agents list` works."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
import redis

from router.gateway.auth import Role, issue
from router.settings import Settings
from router.stack import free_port, standalone_redis

pytestmark = pytest.mark.integration
PASSWORD = "a-redis-password-only-the-settings-know"
SECRET = "integration-test-secret-of-at-least-32-bytes"


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.as_env(), "PEAKROUTE_LOG_LEVEL": "WARNING"}
    return subprocess.run([sys.executable, "-m", "router.cli", *args], env=env, text=True,
                          capture_output=True, timeout=60, check=False)


def _gateway(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings.as_env(), "PEAKROUTE_LOG_LEVEL": "WARNING"}
    with log_path.open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "router.cli", "gateway"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)


async def test_the_gateway_and_the_agents_command_sign_in_to_a_password_protected_redis(
        stack: Settings, tmp_path: Path, domain: str) -> None:
    with standalone_redis(tmp_path / "redis") as url:
        redis.Redis.from_url(url).config_set("requirepass", PASSWORD)
        port = free_port()
        settings = stack.replace(redis_url=url, redis_password=PASSWORD,
                                 gateway_jwt_secret=SECRET, gateway_port=port,
                                 gateway_domain=domain, state_dir=tmp_path / "state")
        # Without the password the same commands get NOAUTH: the test can tell.
        refused = _cli(settings.replace(redis_password=""), "agents", "list")
        assert refused.returncode != 0
        assert "auth" in refused.stderr.lower()
        added = _cli(settings, "agents", "add", "a-1", "--skills", "zh=1,general=1",
                     "--name", "Li Lei")
        assert added.returncode == 0, added.stderr
        listed = _cli(settings, "agents", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [orjson.loads(r)["agent_id"] for r in listed.stdout.splitlines()] == ["a-1"]
        proc = _gateway(settings, tmp_path / "gateway.log")
        try:
            base = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as http:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        async with http.get(f"{base}/healthz") as resp:
                            if resp.status == 200:
                                break
                    except aiohttp.ClientConnectionError:
                        pass
                    assert proc.poll() is None, (tmp_path / "gateway.log").read_text()
                    assert time.monotonic() < deadline, "the gateway did not start"
                    await asyncio.sleep(0.2)
                async with http.get(f"{base}/") as resp:
                    assert resp.status == 200
                    assert "<html" in (await resp.text()).lower()
                ws = await http.ws_connect(f"{base}/ws")
                await ws.send_str(orjson.dumps({"type": "hello", "token": issue(
                    settings, "a-1", Role.AGENT, domain)}).decode())
                welcome = orjson.loads(await ws.receive_str(timeout=20))
                assert (welcome["type"], welcome["name"]) == ("welcome", "Li Lei"), welcome
                await ws.close()
        finally:
            proc.terminate()
            proc.wait(timeout=20)
