"""`python -m load_tests.simulate` (compose's optional demo services) against a running stack:
the gateway publishes until SIGTERM, the agents log in and log out again on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import redis.asyncio as aioredis

from router.routing import state as routing_state
from router.routing.store import domain_stats
from router.settings import Settings
from tests.conftest import eventually, repo_root


def start(stack: Settings, *argv: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **stack.as_env()}
    return subprocess.Popen([sys.executable, "-m", "load_tests.simulate", *argv], env=env,
                            cwd=repo_root(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    return proc.returncode, out.decode(errors="replace")


async def test_simulated_agents_log_in_and_the_gateway_publishes_until_stopped(
        stack: Settings, worker: object, redis_client: aioredis.Redis) -> None:
    domain = f"sim-{uuid.uuid4().hex[:8]}"
    agents = start(stack, "agents", "--count", "3", "--domain", domain)
    try:
        agent_id = f"{domain}-agent-0000"
        state = await eventually(
            lambda: routing_state.agent_state(redis_client, domain, agent_id), timeout_s=60)
        assert state is not None, "the simulated agents never logged in"
        gateway = start(stack, "gateway", "--rate", "20", "--domain", domain)
        try:
            stats = await eventually(
                lambda: _arrived_at_least(redis_client, domain, 20), timeout_s=60)
            assert stats, "the router saw fewer than 20 of the gateway's contacts"
        finally:
            code, out = stop(gateway)
        assert code == 0, out
        assert "gateway_stopped" in out
    finally:
        code, out = stop(agents)
    assert code == 0, out
    assert await eventually(
        lambda: _state_is(redis_client, domain, agent_id, "offline"), timeout_s=30), \
        "the agents were not logged out on SIGTERM"


async def _arrived_at_least(client: aioredis.Redis, domain: str, n: int) -> bool:
    return (await domain_stats(client, domain))["arrived"] >= n


async def _state_is(client: aioredis.Redis, domain: str, agent_id: str, state: str) -> bool:
    return await routing_state.agent_state(client, domain, agent_id) == state

