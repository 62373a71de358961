"""router.kafka.send_batches on the real broker: every record lands on the partition the
producer's own ``send`` picks for its key, in the order it was given within that partition, a
batch's overflow and a record larger than a batch included."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from router.kafka import DEADLETTER_MAX_MESSAGE_BYTES, KeyHashes, client_kwargs, send_batches
from router.settings import Settings
from tests.conftest import read_topic

pytestmark = pytest.mark.integration


async def test_records_land_where_send_puts_them_in_order(
        stack: Settings, kafka_producer: AIOKafkaProducer) -> None:
    topic = f"t-batches-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(**client_kwargs(stack))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 4, 1)])
    finally:
        await admin.close()
    keys = [f"k{i % 37}".encode() for i in range(600)]  # 600 records of ~1 KB: several batches
    values = [f"{i:06d}".encode() + b"x" * 1000 for i in range(600)]
    big = b"B" * (DEADLETTER_MAX_MESSAGE_BYTES // 2)  # far over one batch's 16 KB
    records = [(topic, k, v) for k, v in zip(keys, values, strict=True)]
    records.insert(300, (topic, b"k5", big))

    futures = await send_batches(kafka_producer, KeyHashes(), records)
    for future in futures:
        await future

    got = await read_topic(stack, topic, lambda rs: len(rs) >= len(records))
    assert len(got) == len(records)
    every = list(await kafka_producer.partitions_for(topic))
    expected = DefaultPartitioner()
    for rec in got:  # the partition send() would have chosen (the default partitioner)
        assert rec.partition == expected(rec.key, every, every)
    for partition in set(every):  # each partition's records in the order given
        sent = [(k, v) for _, k, v in records if expected(k, every, every) == partition]
        landed = sorted((r for r in got if r.partition == partition), key=lambda r: r.offset)
        assert [(r.key, r.value) for r in landed] == sent
    assert len(futures) > len({expected(k, every, every) for k in keys})  # some overflowed
