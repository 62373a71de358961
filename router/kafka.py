"""Thin Kafka adapter: client configuration from settings, and topic creation (plain Kafka)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner, murmur2
from aiokafka.producer.message_accumulator import BatchBuilder

from router.errors import StackError
from router.settings import Settings

TOPIC_ALREADY_EXISTS = 36
# The deadletter value is the original record in base64 (4/3 larger) plus the reason.
DEADLETTER_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL and SASL_SSL (verifying the broker against the CA file or the
    system store, with a client certificate for mutual TLS); None for plaintext protocols."""
    if settings.kafka_security_protocol not in {"SSL", "SASL_SSL"}:
        return None
    context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)
    context.check_hostname = settings.kafka_ssl_check_hostname
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile,
                                password=settings.kafka_ssl_key_password or None)
    return context


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """aiokafka connection and security arguments (shared by producers, consumers, admin)."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        kwargs.update(
            sasl_mechanism=settings.kafka_sasl_mechanism or "PLAIN",
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password,
        )
    return kwargs


def consumer(settings: Settings, **extra: Any) -> AIOKafkaConsumer:
    """A consumer with the configured fetch wait (see Settings.kafka_fetch_max_wait_ms)."""
    options: dict[str, Any] = {"fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
                               "enable_auto_commit": False}
    options.update(extra)
    return AIOKafkaConsumer(**client_kwargs(settings), **options)


async def assign_all(cons: AIOKafkaConsumer, topics: list[str], *, from_end: bool) -> None:
    """Read every partition of ``topics`` without a consumer group, from the end (only what
    comes next) or the beginning. The start offsets are resolved before this returns, so
    nothing produced afterwards is missed."""
    tps = [TopicPartition(topic, p) for topic in topics
           for p in sorted(cons.partitions_for_topic(topic) or ())]
    cons.assign(tps)
    if from_end:
        await cons.seek_to_end(*tps)
    else:
        await cons.seek_to_beginning(*tps)
    for tp in tps:
        await cons.position(tp)


class KeyHashes:
    """aiokafka's default partitioner (murmur2 of the key, as the Java client) with each key's
    hash kept: the worker's outputs are keyed by a few routing domains (and contact ids), and
    aiokafka's murmur2 is pure Python, a few microseconds per record. The same partitions as
    ``DefaultPartitioner``; at most ``limit`` hashes are kept (then forgotten at once)."""

    def __init__(self, limit: int = 50_000) -> None:
        self.limit = limit
        self._hashes: dict[bytes, int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int],
                 available: list[int]) -> int:
        if key is None:
            return int(DefaultPartitioner()(key, all_partitions, available))
        h = self._hashes.get(key)
        if h is None:
            if len(self._hashes) >= self.limit:
                self._hashes.clear()
            h = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[h % len(all_partitions)]


async def send_batches(producer: AIOKafkaProducer, partitioner: KeyHashes,
                       records: Iterable[tuple[str, bytes, bytes]]) -> list[asyncio.Future[Any]]:
    """Send ``records`` (topic, key, value) at once: one closed batch per partition, the records
    in their order within it, on the partitions ``send`` would choose (``partitioner`` over the
    producer's own partition list). A stage's outputs are complete when it sends them, so a
    batch that waited the producer's linger for more would only make them later (a closed
    batch leaves at once), and a future per batch replaces aiokafka's future and accumulator
    step per record. Returns the batches' delivery futures."""
    batches: dict[tuple[str, int], BatchBuilder] = {}
    partitions: dict[str, list[int]] = {}
    futures: list[asyncio.Future[Any]] = []
    for topic, key, value in records:
        every = partitions.get(topic)
        if every is None:
            every = partitions[topic] = list(await producer.partitions_for(topic))
        place = (topic, partitioner(key, every, every))
        batch = batches.get(place)
        if batch is not None and batch.append(key=key, value=value, timestamp=None) is not None:
            continue
        if batch is not None:  # full (append closed it): it goes, a new one takes the record
            futures.append(await producer.send_batch(batch, topic, partition=place[1]))
        batch = batches[place] = producer.create_batch()
        batch.append(key=key, value=value, timestamp=None)  # an empty batch takes any record
    for (topic, partition), batch in batches.items():
        batch.close()
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures


def producer(settings: Settings, **extra: Any) -> AIOKafkaProducer:
    """A producer tuned for batches: small linger, compression off (records are small JSON)."""
    options: dict[str, Any] = {
        "linger_ms": settings.kafka_linger_ms,
        "max_request_size": DEADLETTER_MAX_MESSAGE_BYTES + 65_536,
        "acks": "all",
    }
    options.update(extra)
    return AIOKafkaProducer(**client_kwargs(settings), **options)


def topic_specs(settings: Settings) -> list[NewTopic]:
    specs = []
    for role, name in settings.topics.items():
        configs = {}
        if role == "deadletter":
            configs["max.message.bytes"] = str(DEADLETTER_MAX_MESSAGE_BYTES + 65_536)
        specs.append(NewTopic(name, settings.topic_partitions, settings.topic_replication_factor,
                              topic_configs=configs))
    return specs


async def ensure_topics(settings: Settings, *, timeout_s: float = 30.0) -> list[str]:
    """Create every router topic that does not exist yet; returns the names created."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=10_000)
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
    except (TimeoutError, OSError, Exception) as exc:
        await admin.close()
        raise StackError(
            f"cannot reach Kafka at {settings.kafka_bootstrap_servers} ({exc!r}); is the broker "
            "running? (`peakroute stack status`)"
        ) from exc
    try:
        response = await admin.create_topics(topic_specs(settings))
        created = []
        for name, code, message in response.topic_errors:
            if code == 0:
                created.append(name)
            elif code != TOPIC_ALREADY_EXISTS:
                raise StackError(f"creating topic {name} failed: error {code} {message}")
        return created
    finally:
        await admin.close()
