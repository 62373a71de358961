"""Redis clients built from settings: the URL, an ACL user and password, TLS (rediss://), and
Redis Cluster (``PEAKROUTE_REDIS_CLUSTER=true``).

Every Redis connection the router, the demo and the tools open goes through here, so
credentials, certificates and the choice of a cluster are configured in one place and never
appear in a log line. A cluster client (redis-py's ``RedisCluster``) follows MOVED and ASK
itself, waits out TRYAGAIN, and re-reads the slot map when a node fails; what it cannot absorb
reaches the caller as a transient failure (router/transient.py), never as the data's fault.
It serves the same command API as a single-node client, so callers hold either as
``aioredis.Redis``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.cluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import NoScriptError, ResponseError
from redis.retry import Retry as SyncRetry

from router.settings import Settings
from router.transient import Kind, TransientError, kind_of


def connection_kwargs(settings: Settings) -> dict[str, Any]:
    """Arguments added to ``from_url``: the ACL user and password (when set, they win over
    the URL's), and the CA and client certificate for a ``rediss://`` URL."""
    kwargs: dict[str, Any] = {}
    if settings.redis_username:
        kwargs["username"] = settings.redis_username
    if settings.redis_password:
        kwargs["password"] = settings.redis_password
    if settings.redis_url.startswith("rediss://"):
        kwargs["ssl_cert_reqs"] = "required"
        if settings.redis_ssl_cafile:
            kwargs["ssl_ca_certs"] = settings.redis_ssl_cafile
        if settings.redis_ssl_certfile:
            kwargs["ssl_certfile"] = settings.redis_ssl_certfile
            kwargs["ssl_keyfile"] = settings.redis_ssl_keyfile
    return kwargs


def client_url(settings: Settings) -> str:
    """redis_url without the user or password that the settings replace (redis-py lets the
    URL's win over arguments)."""
    parts = urlsplit(settings.redis_url)
    if "@" not in parts.netloc or not (settings.redis_username or settings.redis_password):
        return settings.redis_url
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    user = "" if settings.redis_username else user
    password = "" if settings.redis_password else password
    kept = user + (":" + password if password else "")
    return urlunsplit(parts._replace(netloc=f"{kept}@{host}" if kept else host))


def without_retry() -> Retry:
    """For a client whose caller retries (the worker's transport; the demo's and status's
    reads, router/redis_reads.py), so the caller sees, counts and reports each failure:
    redis-py's own 10 retries would hide resets and make a 1 s socket timeout surface after
    ~15 s."""
    return Retry(NoBackoff(), 0)


# A cluster client's own attempts at a node failure (connection lost, CLUSTERDOWN, a slot not
# covered yet): each re-reads the slot map first, which is how a promoted replica is found. A
# caller that retries by itself (``without_retry``) still gets these few: without them the
# client would keep sending to the dead primary until the next failure.
CLUSTER_ATTEMPTS = 3
CLUSTER_BACKOFF_CAP_S = 0.5
CLUSTER_BACKOFF_BASE_S = 0.05
# Connections a cluster client opens per node at most (redis-py's default is 100).
CLUSTER_MAX_CONNECTIONS = 64


def _cluster_kwargs(extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` as a cluster client takes it: its own retry (see CLUSTER_ATTEMPTS) replaces a
    caller's, and the per-connection health check is the nodes'."""
    out = dict(extra)
    out.pop("retry", None)
    out.setdefault("max_connections", CLUSTER_MAX_CONNECTIONS)
    return out


def redis_client(settings: Settings, **extra: Any) -> aioredis.Redis:
    """An asyncio client (the workers, the demo, the load tools). With ``redis_cluster`` it is
    a ``RedisCluster`` seeded from redis_url (any node of the cluster); ``await ready(client)``
    before sending from several tasks at once."""
    if settings.redis_cluster:
        cluster = aiocluster.RedisCluster.from_url(
            client_url(settings), **connection_kwargs(settings),
            retry=Retry(ExponentialBackoff(CLUSTER_BACKOFF_CAP_S, CLUSTER_BACKOFF_BASE_S),
                        CLUSTER_ATTEMPTS),
            **_cluster_kwargs(extra))
        return cast(aioredis.Redis, cluster)  # the same command API (see the module's doc)
    return aioredis.Redis.from_url(client_url(settings), **connection_kwargs(settings), **extra)


def blocking_pool_client(settings: Settings, max_connections: int, wait_s: float,
                         **extra: Any) -> aioredis.Redis:
    """A client whose calls wait (up to ``wait_s``) for one of ``max_connections`` connections
    instead of failing when all are busy (the gateway: a burst of sign-ins). A cluster client
    bounds its connections per node the same way."""
    if settings.redis_cluster:
        return redis_client(settings, max_connections=max_connections, **extra)
    return aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
        client_url(settings), **connection_kwargs(settings), max_connections=max_connections,
        timeout=wait_s, **extra))


def sync_redis_client(settings: Settings, **extra: Any) -> redis.Redis:
    """A blocking client (status commands and launchers); a ``RedisCluster`` as above."""
    if settings.redis_cluster:
        cluster = redis.cluster.RedisCluster.from_url(
            client_url(settings), **connection_kwargs(settings),
            retry=SyncRetry(ExponentialBackoff(CLUSTER_BACKOFF_CAP_S, CLUSTER_BACKOFF_BASE_S),
                            CLUSTER_ATTEMPTS),
            **_cluster_kwargs(extra))
        return cast(redis.Redis, cluster)
    return redis.Redis.from_url(client_url(settings), **connection_kwargs(settings), **extra)


def is_cluster(client: object) -> bool:
    """True for a cluster client (asyncio or blocking)."""
    return isinstance(client, aiocluster.RedisCluster | redis.cluster.RedisCluster)


async def ready(client: aioredis.Redis) -> None:
    """Read a cluster client's slot map now (idempotent; nothing for a single node): the first
    commands of many tasks at once would otherwise each start the discovery."""
    if isinstance(client, aiocluster.RedisCluster):
        await client.initialize()


async def on_every_primary(client: aioredis.Redis, *args: Any) -> list[Any]:
    """Send one command to every primary (one reply per primary), or to the single node."""
    send: Any = client.execute_command  # redis-py leaves it untyped
    if isinstance(client, aiocluster.RedisCluster):
        await client.initialize()
        nodes = client.get_primaries()
        return list(await asyncio.gather(*(send(*args, target_nodes=node) for node in nodes)))
    return [await send(*args)]


def redacted_url(url: str) -> str:
    """The URL without its password, for messages: ``redis://user:***@host:6379/0``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in userinfo else f"{scheme}://{user}@{host}"


async def load_scripts(client: aioredis.Redis, sources: Iterable[str | bytes | memoryview],
                       libraries: Iterable[str] = ()) -> None:
    """SCRIPT LOAD every source and FUNCTION LOAD REPLACE every function library, in one round
    trip: into the single node, or into every primary of a cluster (a cluster pipeline refuses
    both; a node added later, or a replica promoted by a failover, lacks scripts, and a node
    restarted without persistence lacks both, until they are loaded again). A library is
    named by its source's digest: replacing it with itself is harmless."""
    texts = list(sources)
    libs = list(libraries)
    if isinstance(client, aiocluster.RedisCluster):
        await client.initialize()
        send: Any = client.execute_command  # redis-py leaves it untyped
        await asyncio.gather(
            *(send("SCRIPT", "LOAD", text, target_nodes=node)
              for node in client.get_primaries() for text in texts),
            *(send("FUNCTION", "LOAD", "REPLACE", lib, target_nodes=node)
              for node in client.get_primaries() for lib in libs))
        return
    pipe = client.pipeline(transaction=False)
    for text in texts:
        pipe.script_load(text)
    for lib in libs:
        pipe.function_load(lib, replace=True)
    await pipe.execute()


def missing_code(reply: object) -> bool:
    """Whether a reply says Redis lacks the script (NOSCRIPT) or the function (``Function not
    found``) a call named: it restarted, was flushed, or is a node that never had them."""
    return isinstance(reply, NoScriptError) or (
        isinstance(reply, ResponseError) and str(reply).startswith("Function not found"))


def queue_wait(pipe: Any, client: aioredis.Redis, keys: Iterable[str | bytes], replicas: int,
               timeout_ms: int) -> int:
    """Queue ``WAIT replicas timeout_ms`` at the end of ``pipe`` on every node that the
    commands on ``keys`` (one key per command queued before) were sent to, so that each node
    answers only once its replicas have those writes: a primary killed right after can then
    not take them with it (replication is asynchronous). Returns how many WAITs were queued
    (their replies end the pipeline's results: ``check_waits``). Nothing for replicas 0."""
    if replicas <= 0:
        return 0
    if isinstance(client, aiocluster.RedisCluster):
        targets = {client.get_node_from_key(k).name: client.get_node_from_key(k)
                   for k in dict.fromkeys(keys)}
        for node in targets.values():
            pipe.execute_command("WAIT", replicas, timeout_ms, target_nodes=node)
        return len(targets)
    pipe.execute_command("WAIT", replicas, timeout_ms)
    return 1


def check_waits(replies: Sequence[Any], replicas: int) -> None:
    """Raise a transient NOREPLICAS if a node's WAIT saw fewer replicas than asked for (a
    replica down or behind): the batch is retried, and nothing of it is committed to Kafka."""
    for reply in replies:
        if isinstance(reply, BaseException):
            # Any refusal of WAIT is the node's, never the data's: a connection lost, or a
            # node the client still took for a primary that a failover made a replica ("WAIT
            # cannot be used with replica instances"): retried once the slot map is read again.
            raise TransientError(kind_of(reply) or Kind.READONLY, reply)
        if int(reply) < replicas:
            raise TransientError(Kind.NOREPLICAS, RuntimeError(
                f"WAIT {replicas}: {int(reply)} replica(s) acknowledged in time"))
