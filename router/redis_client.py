"""Redis clients built from settings: the URL, an ACL user and password, and TLS (rediss://).

Every Redis connection the router, the demo and the tools open goes through here, so
credentials and certificates are configured in one place and never appear in a log line.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from router.settings import Settings


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


def redis_client(settings: Settings, **extra: Any) -> aioredis.Redis:
    """An asyncio client (the workers, the demo, the load tools)."""
    return aioredis.Redis.from_url(client_url(settings), **connection_kwargs(settings), **extra)


def sync_redis_client(settings: Settings, **extra: Any) -> redis.Redis:
    """A blocking client (status commands and launchers)."""
    return redis.Redis.from_url(client_url(settings), **connection_kwargs(settings), **extra)


def redacted_url(url: str) -> str:
    """The URL without its password, for messages: ``redis://user:***@host:6379/0``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in userinfo else f"{scheme}://{user}@{host}"
