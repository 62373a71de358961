"""Redis refusing or unreachable, for real: every refusal a single redis-server can produce here
(OOM, READONLY, BUSY, LOADING, reset connections, timeouts), each for a few seconds while
contacts arrive. While it lasts the worker retries and stays up, commits nothing past the
records in hand, dead-letters nothing, /readyz says 503 naming the kind and
peakroute_redis_errors_total{kind} rises; after it, every contact is processed.

The worker here has a redis-server and topics of its own (on the session's broker), so the
faults never reach the session's worker and other tests: the server allows DEBUG (SLEEP,
RELOAD) and the worker's socket timeout is 1 s (PEAKROUTE_REDIS_SOCKET_TIMEOUT_S)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from redis.exceptions import ResponseError

from router.books import Books, read_books
from router.demo import WorkerProcess, books_client, wait_ready
from router.events import BotReplied, ContactArrived, Language, Tier
from router.kafka import client_kwargs, consumer, producer
from router.redis_reads import Refusals, read_through
from router.settings import Settings
from router.stack import debug_command_args, free_port, redis_binary, standalone_redis
from router.stage import now_ms
from tests.conftest import eventually, read_topic

pytestmark = pytest.mark.integration

FAULT_S = 2.5  # how long each fault lasts
CONTACTS = 6  # published as each fault starts
QUESTIONS = [(Language.ZH, "优惠券怎么用"), (Language.ZH, "转人工"),  # contained; escalated
             (Language.EN, "whats my order status"), (Language.EN, "I want to talk to a person")]
BIG_KEYS = 2_000_000  # LOADING: a data set that takes the server ~1 s to load
BIG_DB = 15


@dataclass
class Rig:
    settings: Settings  # the worker's
    worker: WorkerProcess
    url: str
    tps: list[TopicPartition] = field(default_factory=list)  # contacts.inbound's partitions


@pytest.fixture(scope="module")
def rig(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tag = uuid.uuid4().hex[:8]
    args = [*debug_command_args(redis_binary()), "--lua-time-limit", "100"]
    with standalone_redis(tmp_path_factory.mktemp("refusals-redis"), args) as url:
        topics = {f"topic_{role}": f"rz-{tag}.{name}" for role, name in stack.topics.items()}
        settings = stack.replace(redis_url=url, app_id=f"rz-{tag}", redis_socket_timeout_s=1.0,
                                 **topics)
        worker = WorkerProcess(settings, 16, stack.state_dir / "logs")
        try:
            asyncio.run(wait_ready([worker]))
            tps = [TopicPartition(settings.topic_contacts_inbound, p)
                   for p in range(settings.topic_partitions)]
            yield Rig(settings, worker, url, tps)
        finally:
            worker.stop()


# -- the faults: each an async context manager that holds the fault for its body (or until
# what it started ends: it yields whether the fault still holds) -----------------------------

Holding = Callable[[], bool]
Fault = Callable[[str], contextlib.AbstractAsyncContextManager[Holding]]


def always() -> bool:
    return True


@contextlib.asynccontextmanager
async def out_of_memory(url: str) -> AsyncIterator[Holding]:
    """maxmemory just above what Redis uses, noeviction: every write is refused with OOM."""
    async with aioredis.Redis.from_url(url) as admin:
        used = int((await admin.info("memory"))["used_memory"])
        await admin.config_set("maxmemory-policy", "noeviction")
        await admin.config_set("maxmemory", used + 4096)
        try:
            yield always
        finally:
            await admin.config_set("maxmemory", 0)


@contextlib.asynccontextmanager
async def read_only(url: str) -> AsyncIterator[Holding]:
    """A replica of a primary that does not answer (a failover window): reads are served,
    writes are refused with READONLY; then promoted back."""
    async with aioredis.Redis.from_url(url) as admin:
        await admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
        try:
            yield always
        finally:
            await admin.execute_command("REPLICAOF", "NO", "ONE")


@contextlib.asynccontextmanager
async def busy_script(url: str) -> AsyncIterator[Holding]:
    """A script loops past lua-time-limit (100 ms): every other command gets BUSY until
    SCRIPT KILL."""
    async with aioredis.Redis.from_url(url) as looper, aioredis.Redis.from_url(url) as admin:
        await admin.ping()  # connected before the server is busy
        loop = asyncio.create_task(looper.eval("while true do end", 0))
        await asyncio.sleep(0.2)
        try:
            yield always
        finally:
            await admin.script_kill()
            with contextlib.suppress(ResponseError):
                await loop


@contextlib.asynccontextmanager
async def loading(url: str) -> AsyncIterator[Holding]:
    """DEBUG RELOAD of a big data set (in a database of its own): the server saves it, then
    loads it; while it loads, commands get LOADING (while it saves they wait)."""
    big = url.rsplit("/", 1)[0] + f"/{BIG_DB}"
    # Saving and loading 2 M keys takes seconds: the admin waits for it as long as it takes.
    async with aioredis.Redis.from_url(big, socket_timeout=120) as admin:
        await admin.execute_command("DEBUG", "POPULATE", BIG_KEYS, "big", 16)
        reloading = asyncio.create_task(admin.execute_command("DEBUG", "RELOAD"))
        await asyncio.sleep(0.05)
        try:
            yield lambda: not reloading.done()
        finally:
            await reloading
            await admin.flushdb()


@contextlib.asynccontextmanager
async def resets(url: str) -> AsyncIterator[Holding]:
    """Every client connection reset (CLIENT KILL TYPE normal), and new ones refused while
    the fault lasts (maxclients 1: this one)."""
    async with aioredis.Redis.from_url(url) as admin:
        saved = (await admin.config_get("maxclients"))["maxclients"]
        await admin.config_set("maxclients", 1)
        await admin.client_kill_filter(_type="normal")
        try:
            yield always
        finally:
            await admin.config_set("maxclients", saved)


@contextlib.asynccontextmanager
async def stalled(url: str) -> AsyncIterator[Holding]:
    """DEBUG SLEEP longer than the worker's socket timeout (1 s): its commands time out."""
    async with aioredis.Redis.from_url(url) as admin:
        await admin.ping()
        sleeping = asyncio.create_task(admin.execute_command("DEBUG", "SLEEP", FAULT_S))
        await asyncio.sleep(0.05)
        try:
            yield lambda: not sleeping.done()
        finally:
            await sleeping


FAULTS: list[tuple[Fault, str]] = [
    (out_of_memory, "oom"), (read_only, "readonly"), (busy_script, "busy"),
    (loading, "loading"), (resets, "connection"), (stalled, "timeout"),
]


# -- what the test reads: the group's commits, the worker's metrics and readiness ----------

async def committed(settings: Settings, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(settings.app_id, partitions=tps)
    finally:
        await admin.close()
    return {tp: max(meta.offset, 0) for tp, meta in offsets.items()}


async def log_ends(settings: Settings, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    """Each partition's next offset, from a fetch's high watermark (the embedded broker's
    ListOffsets answers the last batch's first offset + 1, short of the end)."""
    cons = consumer(settings, group_id=None)
    await cons.start()
    try:
        cons.assign(tps)
        await cons.seek_to_beginning(*tps)
        ends: dict[TopicPartition, int | None] = dict.fromkeys(tps)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            await cons.getmany(*tps, timeout_ms=100)
            ends = {tp: cons.highwater(tp) for tp in tps}
            positions = {tp: await cons.position(tp) for tp in tps}
            if all(end is not None and positions[tp] >= end for tp, end in ends.items()):
                break
        assert all(end is not None for end in ends.values()), ends
        return {tp: int(end or 0) for tp, end in ends.items()}
    finally:
        await cons.stop()


def redis_errors(worker: WorkerProcess, kind: str) -> float:
    page = worker.get("/metrics").decode()
    found = re.search(rf'^peakroute_redis_errors_total{{kind="{kind}"}} (\S+)$', page, re.M)
    return float(found.group(1)) if found else 0.0


def contacts(domain: str) -> list[ContactArrived]:
    return [ContactArrived(event_id=uuid.uuid4().hex, ts_ms=now_ms(),
                           contact_id=f"{domain}-c{n}", domain=domain, customer_id=f"u{n}",
                           language=QUESTIONS[n % len(QUESTIONS)][0],
                           text=QUESTIONS[n % len(QUESTIONS)][1], tier=Tier.NORMAL)
            for n in range(CONTACTS)]


def mine(records: list[Any], domain: str) -> list[dict[str, Any]]:
    rows = [orjson.loads(r.value) for r in records]
    return [row for row in rows if row.get("domain") == domain]


@pytest.mark.parametrize(("fault", "kind"), FAULTS, ids=[kind for _, kind in FAULTS])
async def test_the_worker_rides_out_the_refusal(rig: Rig, fault: Fault, kind: str) -> None:
    settings, worker = rig.settings, rig.worker
    domain = f"rz-{kind}-{uuid.uuid4().hex[:6]}"
    errors_before = redis_errors(worker, kind)
    ends_before = await log_ends(settings, rig.tps)
    assert await committed(settings, rig.tps) == ends_before, "the worker was not idle"
    batch = contacts(domain)
    seen_failing: set[str] = set()
    prod = producer(settings)
    await prod.start()
    try:
        async with fault(rig.url) as holding:
            for c in batch:
                await prod.send(settings.topic_contacts_inbound, c.to_json(),
                                key=c.contact_id.encode())
            await prod.flush()
            until = time.monotonic() + FAULT_S
            while holding() and time.monotonic() < until:
                assert worker.proc.poll() is None, "the worker exited"
                seen_failing.add(worker.readiness().get("failing", ""))
                assert await committed(settings, rig.tps) == ends_before, \
                    "records committed while Redis refused them"
                await asyncio.sleep(0.2)
    finally:
        await prod.stop()
    assert worker.proc.poll() is None, "the worker exited"
    for _ in range(15):  # /readyz stays 503 for a few seconds after the last failure
        if kind in seen_failing:
            break
        seen_failing.add(worker.readiness().get("failing", ""))
        await asyncio.sleep(0.2)
    assert kind in seen_failing, f"/readyz named {seen_failing - {''}}, not {kind}"

    # After the fault: every contact answered by the bot, the escalations queued for a
    # person, the records committed, nothing dead-lettered.
    ids = {c.contact_id for c in batch}
    replies = await read_topic(settings, settings.topic_bot_replies,
                               lambda rs: {r["contact_id"] for r in mine(rs, domain)} >= ids)
    # The bot's replies (bot.replies also carries the waiting customers' notices).
    replied = [r for r in mine(replies, domain) if r["type"] == BotReplied.TYPE]
    assert {r["contact_id"] for r in replied} == ids
    escalated = {r["contact_id"] for r in replied if r["action"] == "escalated"}
    assert escalated, replied
    decisions = await read_topic(
        settings, settings.topic_routing_decisions,
        lambda rs: {r["contact_id"] for r in mine(rs, domain) if r["decision"] == "queued"}
        >= escalated)
    assert {r["contact_id"] for r in mine(decisions, domain)
            if r["decision"] == "queued"} == escalated
    ends_after = await log_ends(settings, rig.tps)
    for _ in range(50):
        if await committed(settings, rig.tps) == ends_after:
            break
        await asyncio.sleep(0.1)
    assert await committed(settings, rig.tps) == ends_after
    letters = await read_topic(settings, settings.topic_deadletter, lambda rs: False,
                               timeout_s=0.5)
    assert letters == []
    assert redis_errors(worker, kind) > errors_before
    assert worker.proc.poll() is None


async def test_the_books_and_status_ride_out_resets_and_a_busy_server(rig: Rig) -> None:
    """What the demo's progress line and `peakroute status` read goes on through resets of
    every connection (and refused reconnections) and a BUSY server: they retry, say so, and
    never exit. `peakroute status --json` runs as its own process (as a user runs it); the
    books are read in this one."""
    refusals = Refusals()
    books: list[Books] = []
    env = {**os.environ, **rig.settings.as_env()}
    status = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli", "status", "--json", "--interval", "0.2", env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    printed: list[tuple[float, bytes]] = []  # (when, line) of what status printed
    said: list[tuple[float, bytes]] = []  # and of what it said on stderr

    async def collect(stream: asyncio.StreamReader, into: list[tuple[float, bytes]]) -> None:
        while line := await stream.readline():
            into.append((time.monotonic(), line))

    def told() -> str:
        return b"".join(line for _, line in said).decode()

    assert status.stdout is not None
    assert status.stderr is not None
    collectors = [asyncio.create_task(collect(status.stdout, printed)),
                  asyncio.create_task(collect(status.stderr, said))]
    reader: asyncio.Task[None] | None = None
    try:
        async with books_client(rig.settings) as client:

            async def read_books_often() -> None:
                while True:
                    books.append(await read_through(lambda: read_books(client), refusals, 10))
                    await asyncio.sleep(0.05)

            async def both_read() -> bool:
                assert status.returncode is None, told()
                return bool(books and printed)

            reader = asyncio.create_task(read_books_often())
            await eventually(both_read, 60)  # starting a process on a loaded machine
            assert books, "the books were not read before the faults"
            assert printed, f"status printed nothing in 60 s: {told()}"
            for fault in (resets, busy_script):
                async with fault(rig.url):
                    await asyncio.sleep(1.5)
            faults_ended, read_before = time.monotonic(), len(books)

            async def both_read_again() -> bool:
                return len(books) > read_before and any(t > faults_ended for t, _ in printed)

            await eventually(both_read_again, 30)  # the readers' backoff reached ~2 s
            assert not reader.done()
            assert status.returncode is None, told()
    finally:
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(reader, 10)
        if status.returncode is None:
            status.terminate()
        await asyncio.wait_for(status.wait(), 10)
        await asyncio.wait_for(asyncio.gather(*collectors), 10)
    assert len(books) > read_before  # reading again after the faults
    assert {"connection", "busy"} <= set(refusals.counts), refusals.counts
    before = [line for t, line in printed if t <= faults_ended]
    after = [line for t, line in printed if t > faults_ended]
    for lines in (before, after):  # status printed before and after them
        assert lines
        assert all("queues" in orjson.loads(line) for line in lines)
    assert "Redis refusing (connection for" in told()
    assert "Redis refusing (busy for" in told()
