"""Who exports the cluster's SLA figures: the one worker holding a short Redis lease.

Every worker serves /metrics, and Prometheus scrapes them all. Figures read from Redis are the
same on every worker, so if each exported them, ``sum()`` over workers would multiply them. The
worker holding the lease ``pr:metrics:lease`` (renewed every third of PEAKROUTE_METRICS_LEASE_S)
exports them; the others export only their own process metrics. When the holder dies the lease
lapses and another worker takes it at its next renewal (at most one lease period without the
figures). A holder stops exporting as soon as its own copy of the lease may have lapsed, so two
workers never export at once.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid

import redis.asyncio as aioredis

from router import logs, metrics
from router.settings import Settings
from router.sla.snapshot import BucketCache, read_snapshot

log = logs.get("sla")
LEASE_KEY = "pr:metrics:lease"
# Take the lease if free, renew it if ours; 1 if we hold it now.
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease:
    def __init__(self, client: aioredis.Redis, lease_s: float, key: str = LEASE_KEY) -> None:
        self.redis = client
        self.key = key
        self.ttl_ms = int(lease_s * 1000)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._until = 0.0  # monotonic time up to which we surely hold it

    @property
    def held(self) -> bool:
        return time.monotonic() < self._until

    async def renew(self) -> bool:
        started = time.monotonic()
        got = await self.redis.eval(_ACQUIRE, 1, self.key, self.holder, self.ttl_ms)
        was = self.held
        # Counted from before the call: Redis's clock started no earlier than ours.
        self._until = started + self.ttl_ms / 1000 if got == 1 else 0.0
        if self.held != was:
            log.info("sla_export_lease_taken" if self.held else "sla_export_lease_lost",
                     extra=logs.fields(holder=self.holder))
        return self.held

    async def release(self) -> None:
        self._until = 0.0
        await self.redis.eval(_RELEASE, 1, self.key, self.holder)


class SlaExporter:
    """Keeps the lease and, while holding it, fills metrics.CLUSTER with a fresh snapshot."""

    def __init__(self, client: aioredis.Redis, settings: Settings,
                 collector: metrics.ClusterCollector = metrics.CLUSTER) -> None:
        self.redis = client
        self.settings = settings
        self.lease = Lease(client, settings.metrics_lease_s)
        self.collector = collector
        self._lock = asyncio.Lock()
        self._cache = BucketCache()

    async def renew(self) -> None:
        self.collector.exporting = await self.lease.renew()
        if not self.collector.exporting:
            self.collector.snapshot = None

    async def refresh(self) -> None:
        """Before a scrape: renew the lease and, if held, read the figures now."""
        async with self._lock:
            await self.renew()
            if self.collector.exporting:
                self.collector.snapshot = await read_snapshot(self.redis, self.settings,
                                                              cache=self._cache)
