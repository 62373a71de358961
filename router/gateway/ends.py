"""Sessions that must end before their tokens do: an agent's tokens revoked, the agent removed
from the roster or disabled, or logged out from the supervisor console.

Whoever ends a session appends it to one Redis stream (``state.gateway_ends_key()``); every
gateway instance reads that stream from where it was and closes the agent's sockets it holds, so
an end reaches all instances within a read (well under a second). A revocation is also kept per
agent (``state.gateway_revoked_key``) so a token issued before it cannot sign in again.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from router import logs
from router.routing import state
from router.stage import now_ms

log = logs.get("gateway")
STREAM_MAX = 10_000  # ends kept in the stream (a reader further behind only misses closes)
READ_BLOCK_MS = 500


class EndReason(enum.StrEnum):
    """Why a session ends; each is also the ``code`` of the ``error`` frame sent before the
    close (docs/AGENT_PROTOCOL.md)."""

    REVOKED = "token_revoked"
    REMOVED = "agent_removed"
    DISABLED = "agent_disabled"
    LOGGED_OUT = "logged_out"


MESSAGES = {
    EndReason.REVOKED: "your sign-in was revoked; sign in again",
    EndReason.REMOVED: "you were removed from the roster",
    EndReason.DISABLED: "your account was disabled",
    EndReason.LOGGED_OUT: "a supervisor logged you out",
}


@dataclass(frozen=True, slots=True)
class End:
    domain: str
    agent_id: str
    reason: EndReason


async def announce(client: aioredis.Redis, domain: str, agent_id: str, reason: EndReason,
                   keep_s: int = 0) -> None:
    """End the agent's sessions on every gateway; with REVOKED, also refuse its tokens issued
    until now for ``keep_s`` seconds."""
    pipe = client.pipeline(transaction=False)
    if reason == EndReason.REVOKED:
        pipe.set(state.gateway_revoked_key(domain, agent_id), now_ms(), ex=max(keep_s, 1))
    pipe.xadd(state.gateway_ends_key(), {"d": domain, "a": agent_id, "r": reason.value},
              maxlen=STREAM_MAX, approximate=True)
    await pipe.execute()


async def revoked_at_ms(client: aioredis.Redis, domain: str, agent_id: str) -> int:
    """When the agent's tokens were last revoked (0: never, or long enough ago)."""
    raw = await client.get(state.gateway_revoked_key(domain, agent_id))
    return int(raw) if raw else 0


async def follow(client: aioredis.Redis, on_end: Callable[[End], Awaitable[None] | None],
                 stopping: Callable[[], bool]) -> None:
    """Read the ends stream from now on and hand each end to ``on_end`` until ``stopping()``;
    Redis errors are retried from the last id read, so none is skipped."""
    key = state.gateway_ends_key()
    last: str | None = None
    delay = 0.1
    while not stopping():
        try:
            if last is None:
                newest: Any = await client.xrevrange(key, count=1)
                last = _s(newest[0][0]) if newest else "0-0"
            batches: Any = await client.xread({key: last}, count=1000, block=READ_BLOCK_MS)
            for _, entries in batches or ():
                for entry_id, fields in entries:
                    last = _s(entry_id)
                    end = _parse(fields)
                    if end is not None:
                        result = on_end(end)
                        if result is not None:
                            await result
            delay = 0.1
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError) as exc:
            log.warning("gateway_ends_read_failed", extra=logs.fields(error=type(exc).__name__))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def _parse(fields: dict[Any, Any]) -> End | None:
    f = {_s(k): _s(v) for k, v in fields.items()}
    try:
        return End(f["d"], f["a"], EndReason(f["r"]))
    except (KeyError, ValueError):
        return None


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
