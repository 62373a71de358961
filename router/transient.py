"""Which failures belong to a dependency and which to the data.

A Redis or Kafka that refuses or cannot answer (out of memory, read-only during a failover, busy
with a long script, loading its data, a cluster moving slots, a timeout, a reset connection) is
not bad input: the work is retried, nothing is committed and nothing is dead-lettered. Only a
script's own refusal of the data it was given (any other error reply) is the data's fault.
This module is the one place that tells the two apart, counts the dependency's failures by kind
and remembers when the last one was seen (``/readyz``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from enum import StrEnum

from aiokafka.errors import KafkaError
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    ClusterError,
    MovedError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from router import metrics
from router.errors import PeakrouteError


class Kind(StrEnum):
    """A dependency failure, as counted in ``peakroute_redis_errors_total{kind}`` and
    ``peakroute_kafka_errors_total{kind}``."""

    OOM = "oom"  # Redis: maxmemory reached with noeviction
    READONLY = "readonly"  # a replica, or a primary demoted in a failover
    BUSY = "busy"  # a long script (or DEBUG SLEEP) holds the server
    LOADING = "loading"  # loading its data set after a restart
    MASTERDOWN = "masterdown"  # a replica lost its primary (replica-serve-stale-data no)
    NOREPLICAS = "noreplicas"  # min-replicas-to-write not met
    TRYAGAIN = "tryagain"  # Cluster: a multi-key command during resharding
    CLUSTERDOWN = "clusterdown"  # Cluster: slots not served
    MOVED = "moved"  # Cluster: the slot moved (followed by the cluster client)
    ASK = "ask"  # Cluster: the slot is migrating
    TIMEOUT = "timeout"  # no answer within the socket timeout
    CONNECTION = "connection"  # refused, reset, closed
    KAFKA = "kafka"  # a Kafka client error (broker unavailable, timeout, not leader, ...)


# Error-reply codes (the reply's first word) that mean the server cannot serve now.
REPLY_CODES: dict[str, Kind] = {
    "OOM": Kind.OOM,
    "READONLY": Kind.READONLY,
    "BUSY": Kind.BUSY,
    "LOADING": Kind.LOADING,
    "MASTERDOWN": Kind.MASTERDOWN,
    "NOREPLICAS": Kind.NOREPLICAS,
    "TRYAGAIN": Kind.TRYAGAIN,
    "CLUSTERDOWN": Kind.CLUSTERDOWN,
    "MOVED": Kind.MOVED,
    "ASK": Kind.ASK,
}


CLUSTER_ERRORS: tuple[tuple[type[ResponseError], Kind], ...] = (
    (ClusterDownError, Kind.CLUSTERDOWN),
    (TryAgainError, Kind.TRYAGAIN),
    (MovedError, Kind.MOVED),  # before ASK: a MovedError is an AskError
    (AskError, Kind.ASK),
)


def reply_code(exc: ResponseError) -> str:
    """The error reply's code: redis-py keeps it for the codes it knows (``status_code``); for
    the others (BUSY, NOREPLICAS) it is the message's first word. An error raised inside a
    script by ``redis.call`` keeps the code of the command that failed."""
    code = getattr(exc, "status_code", None)
    if code:
        return str(code)
    text = str(exc.args[0]) if exc.args else ""
    return text.split(" ", 1)[0]


def kind_of(exc: BaseException) -> Kind | None:
    """The dependency failure ``exc`` is, or None when it is not one (a script refused its
    data, a bug)."""
    if isinstance(exc, TransientError):
        return exc.kind
    if isinstance(exc, BusyLoadingError):  # redis-py maps LOADING to a ConnectionError
        return Kind.LOADING
    if isinstance(exc, ResponseError):
        code = REPLY_CODES.get(reply_code(exc))
        if code is not None:
            return code
        # A cluster client's own classes for the refusals it could not absorb, raised with a
        # message that is not the reply's code (redis-py also maps MASTERDOWN to
        # ClusterDownError: the code, above, tells them apart).
        return next((kind for cls, kind in CLUSTER_ERRORS if isinstance(exc, cls)), None)
    if type(exc) is ClusterError:
        # A cluster client out of attempts ("TTL exhausted"): it kept meeting TRYAGAIN (a
        # multi-key script on a slot half moved), or redirections, while slots moved.
        return Kind.TRYAGAIN
    if isinstance(exc, RedisTimeoutError | asyncio.TimeoutError | TimeoutError):
        return Kind.TIMEOUT
    if isinstance(exc, RedisConnectionError | RedisClusterException | ConnectionError):
        return Kind.CONNECTION
    if isinstance(exc, KafkaError):
        return Kind.KAFKA
    if isinstance(exc, OSError | RedisError):
        return Kind.CONNECTION
    return None


class TransientError(PeakrouteError):
    """A dependency failure found among a pipeline's per-call results: the whole batch is
    retried (nothing of it is committed or dead-lettered)."""

    def __init__(self, kind: Kind, cause: BaseException) -> None:
        super().__init__(f"{kind.value}: {str(cause)[:200]}")
        self.kind = kind
        self.cause = cause


def raise_transient(results: Iterable[object]) -> None:
    """Raise ``TransientError`` for the first result of a ``raise_on_error=False`` pipeline
    that is a dependency failure; script errors of the data's own stay in the results."""
    for result in results:
        if isinstance(result, BaseException):
            kind = kind_of(result)
            if kind is not None:
                raise TransientError(kind, result)


class Health:
    """When this process last met a dependency failure, for ``/readyz``: not ready while they
    last (a failure within ``window_s``)."""

    def __init__(self, window_s: float = 3.0) -> None:
        self.window_s = window_s
        self.last_kind: Kind | None = None
        self._last = float("-inf")

    def failed(self, kind: Kind) -> None:
        self.last_kind = kind
        self._last = time.monotonic()

    def healthy(self) -> bool:
        return time.monotonic() - self._last > self.window_s


HEALTH = Health()


def readiness(owns: bool) -> tuple[dict[str, object], int]:
    """A worker's /readyz body and status, whichever runtime serves it: ready once it owns
    partitions (no rebalance under way) and no Redis or Kafka failure was met lately."""
    healthy = HEALTH.healthy()
    body: dict[str, object] = {"ready": owns and healthy}
    if not healthy and HEALTH.last_kind is not None:
        body["failing"] = HEALTH.last_kind.value
    elif not owns:
        body["reason"] = "no_partitions"
    return body, 200 if owns and healthy else 503


def count(exc: BaseException) -> Kind | None:
    """Count ``exc`` if it is a dependency failure (by dependency and kind) and mark this
    process unhealthy for a while; return its kind (None: not a dependency failure)."""
    kind = kind_of(exc)
    if kind is None:
        return None
    if kind == Kind.KAFKA:
        metrics.KAFKA_ERRORS.labels(type(exc.cause if isinstance(exc, TransientError)
                                         else exc).__name__).inc()
    else:
        metrics.REDIS_ERRORS.labels(kind.value).inc()
    HEALTH.failed(kind)
    return kind
