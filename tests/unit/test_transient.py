"""Dependency failures are told apart from the data's own errors (router/transient.py)."""

from __future__ import annotations

import pytest
from aiokafka.errors import KafkaTimeoutError
from redis._parsers.base import BaseParser
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    MovedError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from router.transient import Kind, TransientError, kind_of, raise_transient


def reply(text: str) -> ResponseError:
    """The exception redis-py makes of an error reply, as its parser does."""
    err = BaseParser.parse_error(text)
    assert isinstance(err, ResponseError)
    return err


@pytest.mark.parametrize(("text", "kind"), [
    ("OOM command not allowed when used memory > 'maxmemory'.", Kind.OOM),
    ("READONLY You can't write against a read only replica.", Kind.READONLY),
    ("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
     Kind.BUSY),
    ("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
     Kind.MASTERDOWN),
    ("NOREPLICAS Not enough good replicas to write.", Kind.NOREPLICAS),
    ("TRYAGAIN Multiple keys request during rehashing of slot", Kind.TRYAGAIN),
    ("CLUSTERDOWN The cluster is down", Kind.CLUSTERDOWN),
    ("MOVED 3999 127.0.0.1:6381", Kind.MOVED),
    ("ASK 3999 127.0.0.1:6381", Kind.ASK),
])
def test_server_refusals_are_transient_by_kind(text: str, kind: Kind) -> None:
    assert kind_of(reply(text)) == kind


def test_loading_is_transient() -> None:
    assert kind_of(BaseParser.parse_error("LOADING Redis is loading the dataset in memory")) \
        == Kind.LOADING


def test_a_write_refused_inside_a_script_keeps_its_code() -> None:
    # What Redis 7 answers when redis.call fails inside a script on a read-only replica.
    err = reply("READONLY You can't write against a read only replica. script: 1f2e, on "
                "@user_script:12.")
    assert kind_of(err) == Kind.READONLY


@pytest.mark.parametrize("text", [
    "ERR user_script:7: attempt to perform arithmetic on a nil value script: 1f2e",
    "WRONGTYPE Operation against a key holding the wrong kind of value",
    "ERR Error running script (call to f_1): @user_script:3: bad data",
])
def test_a_scripts_own_error_is_not_transient(text: str) -> None:
    assert kind_of(reply(text)) is None


def test_connection_level_failures_are_transient() -> None:
    assert kind_of(RedisConnectionError("Connection reset by peer")) == Kind.CONNECTION
    assert kind_of(RedisTimeoutError("Timeout reading from socket")) == Kind.TIMEOUT
    assert kind_of(TimeoutError()) == Kind.TIMEOUT
    assert kind_of(ConnectionResetError()) == Kind.CONNECTION
    assert kind_of(KafkaTimeoutError()) == Kind.KAFKA


def test_bugs_are_not_transient() -> None:
    assert kind_of(ValueError("bug")) is None
    assert kind_of(KeyError("bug")) is None


def test_raise_transient_picks_the_dependency_failure_among_results() -> None:
    results: list[object] = [[b"row"], reply("ERR user_script:1: bad"), reply("OOM no room")]
    with pytest.raises(TransientError) as caught:
        raise_transient(results)
    assert caught.value.kind == Kind.OOM
    raise_transient([[b"row"], reply("ERR user_script:1: bad")])  # the data's own: stays


@pytest.mark.parametrize(("exc", "kind"), [
    (ClusterDownError("The cluster is down"), Kind.CLUSTERDOWN),
    (TryAgainError(), Kind.TRYAGAIN),
    (ClusterError("TTL exhausted."), Kind.TRYAGAIN),
    (MovedError("3999 127.0.0.1:6381"), Kind.MOVED),
    (AskError("3999 127.0.0.1:6381"), Kind.ASK),
])
def test_a_cluster_clients_own_refusals_are_transient_by_kind(exc: Exception,
                                                              kind: Kind) -> None:
    # What RedisCluster raises once it gives up following or waiting: its message is not
    # the reply's code, its class says the kind.
    assert kind_of(exc) == kind


def test_a_wait_refused_or_short_of_replicas_is_transient() -> None:
    from router.redis_client import check_waits

    check_waits([1, 2], 1)
    with pytest.raises(TransientError) as short:
        check_waits([1, 0], 1)
    assert short.value.kind == Kind.NOREPLICAS
    # A node a failover made a replica, while the client still takes it for a primary.
    with pytest.raises(TransientError) as refused:
        check_waits([reply("ERR WAIT cannot be used with replica instances.")], 1)
    assert refused.value.kind == Kind.READONLY
    with pytest.raises(TransientError) as lost:
        check_waits([RedisConnectionError("reset")], 1)
    assert lost.value.kind == Kind.CONNECTION
