"""An identity provider's signing keys (JWKS), fetched off the event loop and kept with a
lifetime.

* The set is fetched asynchronously with a timeout, one fetch at a time (callers share the one
  in flight), and refetched every ``ttl_s`` in the background: a key the provider withdrew
  stops being trusted at the next refetch, not at the next restart.
* A token with a ``kid`` the set does not hold triggers a refetch (a rotation), at most once
  per ``unknown_kid_s``: between those, such tokens are refused at once (a negative cache), so
  forged kids cannot make the gateway hammer the provider or wait on it.
* While the provider is down or hangs, the keys last fetched stay in use: hellos with known keys
  never wait on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import jwt

from router import logs

log = logs.get("gateway")
RETRY_S = 5.0  # after a failed fetch, the background refresher tries again this soon

Fetch = Callable[[], Awaitable[dict[str, Any]]]


class UnknownKey(Exception):
    """The token's kid is not in the provider's set (or the set could not be had)."""


class KeySet:
    """The provider's keys by kid (one per gateway process)."""

    def __init__(self, url: str, ttl_s: float, timeout_s: float, unknown_kid_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.unknown_kid_s = unknown_kid_s
        self.clock = clock
        self.keys: dict[str, Any] = {}  # kid ("" for a key without one) -> public key
        self.fetched_at: float | None = None  # when the keys were last fetched (clock)
        self.fetches = 0  # fetches started (for tests and logs)
        self._unknown_fetch_at = -float("inf")
        self._inflight: asyncio.Task[bool] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None

    async def key(self, kid: str | None) -> Any:
        """The public key for ``kid``; UnknownKey if the provider's set has none."""
        if self.fetched_at is None and not self.keys:
            await self._refresh()  # the first hello after start waits for the first fetch
        self._start_refresher()
        found = self._lookup(kid)
        if found is not None:
            return found
        now = self.clock()
        if now - self._unknown_fetch_at < self.unknown_kid_s:
            raise UnknownKey(f"no key {kid!r} in the identity provider's set")
        self._unknown_fetch_at = now
        await self._refresh()  # perhaps a rotation: ask once, share the answer
        found = self._lookup(kid)
        if found is None:
            raise UnknownKey(f"no key {kid!r} in the identity provider's set")
        return found

    def _lookup(self, kid: str | None) -> Any:
        if kid is not None:
            return self.keys.get(kid)
        return next(iter(self.keys.values())) if len(self.keys) == 1 else None

    async def _refresh(self) -> bool:
        """One fetch at a time: a caller joins the one in flight. False if it failed."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._fetch(), name="gateway-jwks-fetch")
        return await asyncio.shield(self._inflight)

    async def _fetch(self) -> bool:
        self.fetches += 1
        try:
            if self._http is None:
                self._http = aiohttp.ClientSession()
            async with asyncio.timeout(self.timeout_s), self._http.get(self.url) as resp:
                resp.raise_for_status()
                data = await resp.json(content_type=None)
            fresh = {}
            for k in jwt.PyJWKSet.from_dict(data).keys:
                fresh[k.key_id or ""] = k.key
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError,
                jwt.PyJWTError) as exc:
            log.warning("gateway_jwks_fetch_failed", extra=logs.fields(
                error=type(exc).__name__, kept=len(self.keys)))
            return False
        withdrawn = set(self.keys) - set(fresh)
        self.keys, self.fetched_at = fresh, self.clock()
        if withdrawn:
            log.info("gateway_jwks_keys_withdrawn", extra=logs.fields(kids=sorted(withdrawn)))
        return True

    def _start_refresher(self) -> None:
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.create_task(self._refresh_forever(),
                                                  name="gateway-jwks-refresh")

    async def _refresh_forever(self) -> None:
        while True:
            if self.fetched_at is None:
                await asyncio.sleep(min(RETRY_S, self.ttl_s))
            else:
                await asyncio.sleep(max(self.ttl_s - (self.clock() - self.fetched_at), 0.0))
            if not await self._refresh():
                await asyncio.sleep(min(RETRY_S, self.ttl_s))

    async def aclose(self) -> None:
        for task in (self._refresher, self._inflight):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._http is not None:
            await self._http.close()
            self._http = None
