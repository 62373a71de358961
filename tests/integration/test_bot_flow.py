"""The bot through the real broker, Redis and a real worker process: answers, escalations with
queue and conversation, silence closing, and hot reload of a changed knowledge base.

The worker here has its own topics and consumer group (so the session's worker and its tests
never see these contacts), the small test knowledge base in a temporary file (so a test can
change it), a short silence and a short reload interval.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
import yaml
from aiokafka import AIOKafkaProducer

from router.demo import WorkerProcess, wait_ready
from router.events import ContactArrived, CustomerMessage, Event, Language
from router.routing.store import domain_stats
from router.settings import Settings
from router.stage import now_ms
from tests.conftest import eventually, read_topic, repo_root

pytestmark = pytest.mark.integration

SMALL_KB = repo_root() / "tests" / "data" / "bot_kb_small.yaml"
SILENCE_S = 2.0


@pytest.fixture(scope="module")
def bot_worker(stack: Settings, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[tuple[Settings, Path]]:
    state = tmp_path_factory.mktemp("bot-worker")
    kb = state / "kb.yaml"
    shutil.copy(SMALL_KB, kb)
    topics = {f"topic_{role}": f"bt.{name}" for role, name in stack.topics.items()}
    settings = stack.replace(
        app_id="peakroute-bot-test", state_dir=state, bot_kb_path=str(kb), bot_threshold=0.5,
        bot_silence_close_s=SILENCE_S, bot_reload_interval_s=0.5, timer_interval_s=0.2,
        **topics)
    proc = WorkerProcess(settings, 0, state)
    try:
        asyncio.run(wait_ready([proc]))
        yield settings, kb
    finally:
        proc.stop()


async def send(prod: AIOKafkaProducer, settings: Settings, event: Event) -> None:
    key = getattr(event, "contact_id", "")
    await prod.send_and_wait(settings.topic_contacts_inbound, event.to_json(), key=key.encode())


def arrival(domain: str, cid: str, text: str, language: Language = Language.ZH
            ) -> ContactArrived:
    return ContactArrived(event_id=uuid.uuid4().hex, ts_ms=now_ms(), contact_id=cid,
                          domain=domain, customer_id="u1", language=language, text=text)


async def records_for(settings: Settings, topic: str, contact_id: str, n: int = 1,
                      timeout_s: float = 30.0) -> list[dict[str, Any]]:
    def mine(records: list[Any]) -> list[dict[str, Any]]:
        decoded = [orjson.loads(r.value) for r in records]
        return [d for d in decoded if d.get("contact_id") == contact_id]

    return mine(await read_topic(settings, topic, lambda rs: len(mine(rs)) >= n, timeout_s))


async def test_a_containable_question_gets_the_knowledge_base_answer(
        bot_worker: tuple[Settings, Path], kafka_producer: AIOKafkaProducer,
        redis_client: aioredis.Redis, domain: str) -> None:
    settings, _ = bot_worker
    await send(kafka_producer, settings, arrival(domain, "c1", "我的快递什么时候到"))
    [reply] = await records_for(settings, settings.topic_bot_replies, "c1")
    assert (reply["type"], reply["action"], reply["intent"]) == (
        "bot.replied.v1", "answered", "logistics")
    assert reply["text"].startswith("大促期间包裹")
    stats = await domain_stats(redis_client, domain)
    assert (stats["arrived"], stats["contained"]) == (1, 1)


async def test_a_hand_off_intent_escalates_with_queue_intent_and_confidence(
        bot_worker: tuple[Settings, Path], kafka_producer: AIOKafkaProducer,
        domain: str) -> None:
    settings, _ = bot_worker
    await send(kafka_producer, settings,
               arrival(domain, "c2", "I want a refund, the item is broken", Language.EN))
    [request] = await records_for(settings, settings.topic_routing_requests, "c2")
    assert request["type"] == "routing.requested.v2"
    assert request["customer_id"] == "u1"
    assert (request["queue"], request["intent"], request["reason"]) == (
        "refunds", "refund", "intent_needs_agent")
    assert request["skills"] == {"refunds": 2}
    assert 0.5 <= request["confidence"] <= 1.0
    assert request["language"] == "en"


async def test_asking_for_a_person_after_a_bot_reply_escalates_with_the_conversation(
        bot_worker: tuple[Settings, Path], kafka_producer: AIOKafkaProducer,
        redis_client: aioredis.Redis, domain: str) -> None:
    settings, _ = bot_worker
    await send(kafka_producer, settings, arrival(domain, "c3", "优惠券怎么用"))
    await records_for(settings, settings.topic_bot_replies, "c3")
    await send(kafka_producer, settings, CustomerMessage(
        event_id=uuid.uuid4().hex, ts_ms=now_ms(), contact_id="c3", domain=domain,
        text="转人工"))
    [request] = await records_for(settings, settings.topic_routing_requests, "c3")
    assert (request["reason"], request["intent"], request["queue"]) == (
        "human_requested", "coupon", "payment")
    assert [(t["speaker"], t["text"][:6]) for t in request["transcript"]] == [
        ("customer", "优惠券怎么用"), ("bot", "优惠券在结算"), ("customer", "转人工"),
        ("bot", "正在为您转接")]

    async def moved() -> bool:
        stats = await domain_stats(redis_client, domain)
        return stats["contained"] == 0 and stats["escalated"] == 1

    assert await eventually(moved), "the routing stage did not move it from contained"


async def test_silence_after_an_answer_closes_the_contact_as_contained(
        bot_worker: tuple[Settings, Path], kafka_producer: AIOKafkaProducer,
        redis_client: aioredis.Redis, domain: str) -> None:
    settings, _ = bot_worker
    await send(kafka_producer, settings, arrival(domain, "c4", "怎么开发票"))
    records = await records_for(settings, settings.topic_bot_replies, "c4", n=2,
                                timeout_s=SILENCE_S + 30)
    assert [r["type"] for r in records] == ["bot.replied.v1", "contact.closed.v1"]
    closed = records[1]
    assert (closed["reason"], closed["intent"]) == ("silence", "invoice")
    assert closed["text"] == "感谢您的咨询，本次会话已结束。"
    assert closed["ts_ms"] - records[0]["ts_ms"] >= SILENCE_S * 1000
    stats = await domain_stats(redis_client, domain)
    assert (stats["arrived"], stats["contained"]) == (1, 1)


async def test_a_changed_knowledge_base_is_served_without_a_restart(
        bot_worker: tuple[Settings, Path], kafka_producer: AIOKafkaProducer,
        domain: str) -> None:
    settings, kb_path = bot_worker
    data = yaml.safe_load(kb_path.read_text())
    new_answer = "新答案：发票在订单详情页申请。"
    data["intents"]["invoice"]["answer"]["zh"] = new_answer
    tmp = kb_path.with_suffix(".new")
    tmp.write_text(yaml.safe_dump(data, allow_unicode=True))
    tmp.replace(kb_path)  # atomically, as an editor or a deploy would

    attempt = 0

    async def answered_anew() -> bool:
        nonlocal attempt
        attempt += 1
        cid = f"c5-{attempt}"
        await send(kafka_producer, settings, arrival(domain, cid, "怎么开发票"))
        [reply] = await records_for(settings, settings.topic_bot_replies, cid)
        return bool(reply["text"] == new_answer)

    assert await eventually(answered_anew, timeout_s=60, interval_s=0.5)
