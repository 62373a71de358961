"""Readers of Redis (the demo's books, `peakroute status`) ride out its failures
(router/redis_reads.py), and the demo notices a worker that died (router/demo.py
Supervisor): it says so and restarts it, or stops with an error when it keeps dying."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from router.demo import Supervisor
from router.errors import StackError
from router.redis_reads import RedisRefusing, Refusals, read_through
from router.settings import Settings
from router.transient import Kind


class Flaky:
    """A read that fails with ``errors`` one after another, then answers 42."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> int:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return 42


async def test_a_read_rides_out_resets_and_refusals() -> None:
    read = Flaky(RedisConnectionError("Connection reset by peer"),
                 BaseParser.parse_error("LOADING Redis is loading the dataset in memory"),
                 BaseParser.parse_error("BUSY Redis is busy running a script."))
    refusals = Refusals()
    assert await read_through(read, refusals, within_s=5) == 42
    assert read.calls == 4
    assert refusals.counts == {"connection": 1, "loading": 1, "busy": 1}
    assert refusals.kind is None  # answered: nothing going on now
    assert refusals.describe() == ""


async def test_a_read_gives_up_after_its_time_naming_the_kind() -> None:
    read = Flaky(*[RedisConnectionError("Connection refused")] * 50)
    refusals = Refusals()
    with pytest.raises(RedisRefusing) as caught:
        await read_through(read, refusals, within_s=0.5)
    assert caught.value.kind == Kind.CONNECTION
    assert "connection" in str(caught.value)
    assert 2 <= read.calls <= 4  # 0.1 s, 0.2 s, ...: capped backoff, not a busy loop
    assert refusals.kind == Kind.CONNECTION
    assert refusals.describe().startswith("connection for ")


async def test_a_bug_or_the_datas_own_error_is_not_retried() -> None:
    read = Flaky(BaseParser.parse_error("WRONGTYPE Operation against a key holding the wrong "
                                        "kind of value"))
    with pytest.raises(ResponseError):
        await read_through(read, Refusals(), within_s=5)
    assert read.calls == 1


class FakeProc:
    def __init__(self, code: int | None) -> None:
        self.code = code
        self.pid = 4242

    def poll(self) -> int | None:
        return self.code


class FakeWorker:
    def __init__(self, log_path: Path, code: int | None = None) -> None:
        self.proc = FakeProc(code)
        self.log_path = log_path
        self.port = 1


def supervisor(tmp_path: Path, said: list[str]) -> tuple[Supervisor, list[int]]:
    log = tmp_path / "worker-0.log"
    log.write_text("".join(f'{{"event":"line{i}"}}\n' for i in range(30)))
    started: list[int] = []

    def start(settings: Settings, index: int, log_dir: Path) -> Any:
        started.append(index)
        return FakeWorker(log)

    workers: list[Any] = [FakeWorker(log), FakeWorker(log)]
    return Supervisor(Settings(), workers, tmp_path, said.append, start), started


def test_a_dead_worker_is_reported_with_its_exit_and_log_and_restarted(tmp_path: Path) -> None:
    said: list[str] = []
    sup, started = supervisor(tmp_path, said)
    sup.check()
    assert said == []
    assert started == []
    sup.workers[1].proc.code = -signal.SIGKILL
    sup.check()
    assert started == [1]
    assert sup.restarts == 1
    assert sup.workers[1].proc.poll() is None  # the new one
    assert "router worker 1 exited (code -9, SIGKILL)" in said[0]
    assert str(tmp_path / "worker-0.log") in said[0]
    assert '{"event":"line29"}' in said[0]
    assert '{"event":"line10"}' not in said[0]
    assert "restarted router worker 1" in said[1]


def test_a_worker_that_keeps_dying_stops_the_demo(tmp_path: Path) -> None:
    said: list[str] = []
    sup, started = supervisor(tmp_path, said)
    for _ in range(Supervisor.MAX_DEATHS - 1):
        sup.workers[0].proc.code = 1
        sup.check()
    sup.workers[0].proc.code = 1
    with pytest.raises(StackError, match=r"router worker 0 died 3 times within 60 s \(last: "
                                         r"code 1\); stopping the demo"):
        sup.check()
    assert started == [0, 0]
