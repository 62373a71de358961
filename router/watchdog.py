"""The stall watchdog: a worker that holds no partitions while its group's records wait.

A worker can lose its partitions for good without any error: the group coordinator stops
answering its joins, or hands the partitions to a member that never consumes them
(docs/ARCHITECTURE.md, "Embedded stack", has the case that made this necessary). `/readyz`
then says not ready, but nothing brings the worker back. The watchdog does: while the worker
owns no partition it looks at the group's offsets twice, ``grace_s`` apart, through a probe of
its own (a plain consumer that reads offsets and never joins the group, so it still answers
when the worker's own group connection is wedged). When some partition has records waiting and
its committed offset did not move between the two looks, nobody in the group consumes it: the
worker logs ``consumer_stalled``, counts it (``peakroute_consumer_stalls_total``) and asks the
transport to rejoin. Each rejoin that does not bring partitions doubles the next wait (up to
8 x ``grace_s``), so an extra worker of a group with more workers than partitions, whose peers
merely fall behind, does not churn the group.

``stalled`` is the decision, pure; ``StallWatchdog`` holds the state between looks and is driven
by the transport with its consumer's assignment, the probe and the rejoin.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from router import kafka, logs, metrics
from router.settings import Settings

log = logs.get("watchdog")
BACKOFF_STEPS = 3  # the wait doubles after each rejoin that brought nothing: at most 8 x grace
PROBE_TIMEOUT_S = 10.0
REJOIN_STOP_S = 10.0  # how long a rejoin waits for the old consumer to leave the group


def grace_s(settings: Settings) -> float:
    """How long a worker may hold no partitions while records wait before it counts as stalled:
    longer than a rebalance takes. A member that died is noticed at the session timeout; a join
    round then lasts up to the rebalance timeout, and a member that joins late or dies during
    the round costs another one or two (on the embedded broker a round whose leader is gone
    also holds its followers' SyncGroup ~8 s: fresh members took up to 18 s there under the
    failover proof's kills). Embedded stack: 10 + 3 x 5 = 25 s; defaults: 30 + 3 x 30 = 120 s."""
    return settings.kafka_session_timeout_s + 3 * settings.kafka_rebalance_timeout_s


@dataclass(frozen=True, slots=True)
class Offsets:
    """One look at the group's progress over its subscribed partitions."""

    begin: Mapping[TopicPartition, int]  # log start offsets
    end: Mapping[TopicPartition, int]  # log end offsets
    committed: Mapping[TopicPartition, int | None]  # the group's committed offsets

    def position(self, tp: TopicPartition) -> int:
        """Where the group resumes: its committed offset, else the log start (earliest)."""
        begin = self.begin.get(tp, 0)
        committed = self.committed.get(tp)
        return begin if committed is None else max(committed, begin)

    def waiting(self, tp: TopicPartition) -> int:
        """Records of ``tp`` the group has not committed past."""
        return max(self.end.get(tp, 0) - self.position(tp), 0)


@dataclass(frozen=True, slots=True)
class Stall:
    """What the watchdog saw: the partitions nobody consumes, and the records they hold."""

    partitions: int
    records: int


def stalled(owned: int, window_s: float, wait_s: float, before: Offsets,
            after: Offsets) -> Stall | None:
    """The decision (pure). The worker owned ``owned`` partitions at the second of two looks
    taken ``window_s`` apart, during all of which it owned none; stalled when it owns none, the
    window is at least ``wait_s``, and some partition has records waiting whose committed
    position did not move between the looks."""
    if owned or window_s < wait_s:
        return None
    stuck = [tp for tp in after.end
             if after.waiting(tp) > 0 and tp in before.end
             and before.position(tp) == after.position(tp)]
    if not stuck:
        return None
    return Stall(partitions=len(stuck), records=sum(after.waiting(tp) for tp in stuck))


class OffsetProbe:
    """Reads the group's committed offsets and the log offsets with a consumer of its own
    (``group_id`` set so committed offsets can be read, never subscribed: it never joins)."""

    def __init__(self, settings: Settings, topics: list[str]) -> None:
        self.settings = settings
        self.topics = topics
        self._consumer: AIOKafkaConsumer | None = None

    async def __call__(self) -> Offsets:
        if self._consumer is None:
            cons = kafka.consumer(self.settings, group_id=self.settings.app_id,
                                  request_timeout_ms=int(PROBE_TIMEOUT_S * 1000))
            await cons.start()
            self._consumer = cons
        cons = self._consumer
        await cons.topics()  # fresh metadata: the partitions of every topic
        tps = [TopicPartition(topic, p) for topic in self.topics
               for p in sorted(cons.partitions_for_topic(topic) or ())]
        begin = await cons.beginning_offsets(tps)
        end = await cons.end_offsets(tps)
        committed = await asyncio.gather(*(cons.committed(tp) for tp in tps))
        return Offsets(begin=begin, end=end, committed=dict(zip(tps, committed, strict=True)))

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


class StallWatchdog:
    """Looks at the group while the worker owns no partitions; on a stall, logs, counts and
    calls ``rejoin``. ``check`` is one step (the transport calls it every ``interval_s``)."""

    def __init__(self, grace: float, owned: Callable[[], int],
                 probe: Callable[[], Awaitable[Offsets]], rejoin: Callable[[], Awaitable[None]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.grace_s = grace
        self.interval_s = max(grace / 4, 0.5)
        self._owned = owned
        self._probe = probe
        self._rejoin = rejoin
        self._clock = clock
        self._idle_since: float | None = None  # since when the worker owns no partitions
        self._before: Offsets | None = None
        self._before_at = 0.0
        self._rejoins = 0  # rejoins in a row that brought no partitions
        self.stalls = 0

    @property
    def wait_s(self) -> float:
        return self.grace_s * (1 << min(self._rejoins, BACKOFF_STEPS))

    async def check(self) -> Stall | None:
        now = self._clock()
        if self._owned():
            self._idle_since, self._before, self._rejoins = None, None, 0
            return None
        if self._idle_since is None:
            self._idle_since = now
        if self._before is not None and now - self._before_at < self.wait_s:
            return None
        try:
            after = await asyncio.wait_for(self._probe(), PROBE_TIMEOUT_S)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("stall_check_failed", extra=logs.fields(error=type(exc).__name__))
            return None
        before, window = self._before, now - self._before_at
        self._before, self._before_at = after, now
        if before is None:
            return None
        stall = stalled(self._owned(), window, self.wait_s, before, after)
        if stall is None:
            return None
        self.stalls += 1
        metrics.CONSUMER_STALLS.inc()
        log.warning("consumer_stalled", extra=logs.fields(
            idle_s=round(now - self._idle_since, 1), grace_s=self.grace_s,
            stuck_partitions=stall.partitions, waiting_records=stall.records,
            rejoins_in_a_row=self._rejoins, action="rejoin"))
        self._rejoins += 1
        await self._rejoin()
        return stall
