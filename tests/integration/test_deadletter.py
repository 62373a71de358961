"""Malformed records interleaved with good ones: each bad one lands in the deadletter topic with
its reason and its original bytes, every good one is processed, and the worker never restarts."""

from __future__ import annotations

import base64
import uuid

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from router.demo import WorkerProcess
from router.events import ContactArrived
from router.routing.store import domain_stats
from router.settings import Settings
from router.stage import now_ms
from tests.conftest import eventually, read_topic

pytestmark = pytest.mark.integration


def arrived(**overrides: object) -> bytes:
    body: dict[str, object] = {
        "type": "contact.arrived.v1", "event_id": "e-1", "ts_ms": now_ms(),
        "contact_id": "c-bad", "domain": "d-bad", "customer_id": "u-1", "text": "你好",
    }
    body.update(overrides)
    return orjson.dumps({k: v for k, v in body.items() if v is not ...})


AGENT_LOGIN = orjson.dumps({"type": "agent.logged_in.v1", "event_id": "e", "ts_ms": now_ms(),
                            "agent_id": "a", "domain": "d", "skills": {}, "capacity": {}})
MALFORMED: list[tuple[str, bytes, str]] = [
    ("truncated json", arrived()[:40], "invalid_json"),
    ("invalid utf-8", b'{"type": "contact.arrived.v1", "text": "\xff\xfe"}', "not_utf8"),
    ("empty value", b"", "empty"),
    ("a json array", b"[1, 2, 3]", "not_an_object"),
    ("a bare number", b"42", "not_an_object"),
    ("no type", orjson.dumps({"event_id": "e"}), "missing_type"),
    ("unknown version", arrived(type="contact.arrived.v9"), "unknown_type"),
    ("type is a number", arrived(type=7), "unknown_type"),
    ("missing contact id", arrived(contact_id=...), "missing_field"),
    ("timestamp as text", arrived(ts_ms="yesterday"), "wrong_type"),
    ("timestamp as float", arrived(ts_ms=1.5e12), "wrong_type"),
    ("huge id", arrived(contact_id="c" * 10_000), "invalid_id"),
    ("id with spaces", arrived(contact_id="c 1; DROP"), "invalid_id"),
    ("NaN", arrived().replace(b'"e-1"', b"NaN"), "invalid_json"),
    ("deep nesting", b"[" * 5000 + b"]" * 5000, "too_deep"),
    ("unknown field", arrived(customer_name="Li Lei"), "unknown_field"),
    ("text too long", arrived(text="字" * 5000), "text_too_long"),
    ("timestamp in 1970", arrived(ts_ms=0), "out_of_range"),
    ("unknown language", arrived(language="fr"), "invalid_value"),
    ("agent event on the contact topic", AGENT_LOGIN, "unexpected_type"),
    ("record too large", arrived(text="a" * 70_000), "too_large"),
    ("routing request on the contact topic", orjson.dumps({"type": "routing.requested.v1"}),
     "unexpected_type"),
]


async def test_each_malformed_record_is_deadlettered_with_its_reason_and_good_ones_flow(
    stack: Settings, worker: WorkerProcess, redis_client: aioredis.Redis,
    kafka_producer: AIOKafkaProducer, domain: str,
) -> None:
    topic = stack.topic_contacts_inbound
    sent_bad: dict[tuple[int, int], tuple[str, bytes, str]] = {}
    good = 0
    for i, (name, raw, reason) in enumerate(MALFORMED):
        key = f"bad-{i}".encode()
        meta = await (await kafka_producer.send(topic, raw, key=key))
        sent_bad[(meta.partition, meta.offset)] = (name, raw, reason)
        ok = ContactArrived(event_id=uuid.uuid4().hex, ts_ms=now_ms(), contact_id=f"{domain}-{i}",
                            domain=domain, customer_id="u", text="我的快递什么时候到？")
        await kafka_producer.send(topic, ok.to_json(), key=ok.contact_id.encode())
        good += 1
    await kafka_producer.flush()

    def letters(records: list[object]) -> dict[tuple[int, int], dict[str, object]]:
        out = {}
        for r in records:
            d = orjson.loads(r.value)  # type: ignore[attr-defined]
            if d["source_topic"] == topic:
                out[(d["source_partition"], d["source_offset"])] = d
        return out

    records = await read_topic(stack, stack.topic_deadletter,
                               lambda rs: sent_bad.keys() <= letters(rs).keys())
    found = letters(records)
    for position, (name, raw, reason) in sent_bad.items():
        letter = found.get(position)
        assert letter is not None, f"{name}: no deadletter record"
        assert letter["reason"] == reason, f"{name}: {letter['reason']} ({letter['detail']})"
        assert letter["detail"], name
        assert base64.b64decode(letter["original_b64"]) == raw, f"{name}: original bytes differ"

    async def all_good_arrived() -> bool:
        return (await domain_stats(redis_client, domain))["arrived"] == good

    assert await eventually(all_good_arrived), await domain_stats(redis_client, domain)
    assert worker.proc.poll() is None, "the worker exited"
    log = worker.log_path.read_text(errors="replace").lower()
    assert "crashed" not in log, "a stage crashed and was restarted"
    assert "traceback" not in log, "the worker logged an exception"
    metrics = worker.get("/metrics").decode()
    assert 'peakroute_deadletter_total{reason="too_deep",topic="contacts.inbound"}' in metrics
