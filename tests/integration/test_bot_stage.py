"""The bot stage's batch handler against a real Redis (no broker): conversations, escalation
with the transcript, re-deliveries, silence closing, customer.left, one predict per batch."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from router import metrics
from router.bot.conversation import ConversationStore, conversation_key, due_key
from router.bot.kb import Message
from router.bot.loader import BrainHolder
from router.bot.stage import BotStage
from router.decode import Decoder
from router.events import (
    BotAction,
    BotReplied,
    ContactArrived,
    ContactClosed,
    CustomerLeft,
    CustomerMessage,
    Event,
    HumanRequested,
    Language,
    RoutingRequested,
    Speaker,
    Tier,
)
from router.routing.config import policy_from_settings
from router.routing.store import RoutingStore, domain_stats
from router.settings import Settings
from router.stage import Output, Record
from tests.conftest import repo_root

pytestmark = pytest.mark.integration

SMALL_KB = repo_root() / "tests" / "data" / "bot_kb_small.yaml"
T0 = 1_795_500_000_000
SILENCE_S = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


@pytest.fixture
async def stage(stack: Settings, tmp_path: Path) -> AsyncIterator[tuple[BotStage, Clock]]:
    settings = stack.replace(bot_kb_path=str(SMALL_KB), bot_threshold=0.5,
                             bot_silence_close_s=SILENCE_S, state_dir=tmp_path)
    client = aioredis.Redis.from_url(settings.redis_url)
    clock = Clock()
    brains = BrainHolder(settings)
    brains.load()
    yield (BotStage(RoutingStore(client, settings, policy_from_settings(settings)),
                    ConversationStore(client, settings.bot_conversation_ttl_s), brains,
                    Decoder(), settings, clock), clock)
    await client.aclose()


_offsets = itertools.count()


def record(event: Event) -> Record:
    key = getattr(event, "contact_id", "")
    return Record("contacts.inbound", 0, next(_offsets), key.encode(), event.to_json())


def arrival(domain: str, text: str, *, language: Language = Language.ZH,
            tier: Tier = Tier.NORMAL, cid: str = "c1") -> ContactArrived:
    return ContactArrived(event_id=uuid.uuid4().hex, ts_ms=T0, contact_id=cid, domain=domain,
                          customer_id="u1", language=language, tier=tier, text=text)


def message(domain: str, text: str, *, language: Language = Language.ZH,
            cid: str = "c1") -> CustomerMessage:
    return CustomerMessage(event_id=uuid.uuid4().hex, ts_ms=T0, contact_id=cid, domain=domain,
                           text=text, language=language)


def of(outputs: list[Output], kind: type[Event]) -> list[Event]:
    return [o.event for o in outputs if isinstance(o.event, kind)]


def replies(outputs: list[Output]) -> list[BotReplied]:
    return [e for e in of(outputs, BotReplied) if isinstance(e, BotReplied)]


def requests(outputs: list[Output]) -> list[RoutingRequested]:
    return [e for e in of(outputs, RoutingRequested) if isinstance(e, RoutingRequested)]


async def test_a_containable_question_is_answered_and_counted_contained(
        stage: tuple[BotStage, Clock], redis_client: aioredis.Redis, domain: str) -> None:
    bot, _ = stage
    out = await bot.handle([record(arrival(domain, "我的快递什么时候到"))])
    [reply] = replies(out)
    assert reply.action is BotAction.ANSWERED
    assert reply.intent == "logistics"
    assert reply.text == bot.brains.brain.kb.answer("logistics", Language.ZH)
    assert not requests(out)
    stats = await domain_stats(redis_client, domain)
    assert (stats["arrived"], stats["contained"]) == (1, 1)
    assert await redis_client.zscore(due_key(domain), "c1") == T0 + SILENCE_S * 1000


async def test_a_hand_off_intent_escalates_with_queue_intent_and_confidence(
        stage: tuple[BotStage, Clock], redis_client: aioredis.Redis, domain: str) -> None:
    bot, _ = stage
    out = await bot.handle([record(arrival(domain, "我要退款，衣服尺码不对", tier=Tier.VIP))])
    [reply] = replies(out)
    [request] = requests(out)
    assert reply.action is BotAction.ESCALATED
    assert (request.queue, request.intent, request.reason) == (
        "refunds", "refund", "intent_needs_agent")
    assert request.skills == {"refunds": 2}
    assert request.priority == 1 + 3  # the intent's priority plus the VIP boost
    assert 0.5 <= request.confidence <= 1.0
    assert request.tier is Tier.VIP
    assert [t.speaker for t in request.transcript] == [Speaker.CUSTOMER, Speaker.BOT]
    assert (await domain_stats(redis_client, domain))["escalating"] == 1
    assert await redis_client.zscore(due_key(domain), "c1") is None


async def test_asking_for_a_person_after_an_answer_escalates_with_the_conversation(
        stage: tuple[BotStage, Clock], domain: str) -> None:
    bot, clock = stage
    await bot.handle([record(arrival(domain, "优惠券怎么用"))])
    clock.now += 5000
    out = await bot.handle([record(message(domain, "没看懂，转人工"))])
    [request] = requests(out)
    assert request.reason == "human_requested"
    assert (request.intent, request.queue) == ("coupon", "payment")
    assert request.ts_ms == clock.now
    assert [(t.speaker, t.text) for t in request.transcript] == [
        (Speaker.CUSTOMER, "优惠券怎么用"),
        (Speaker.BOT, bot.brains.brain.kb.answer("coupon", Language.ZH)),
        (Speaker.CUSTOMER, "没看懂，转人工"),
        (Speaker.BOT, replies(out)[0].text),
    ]


async def test_not_helpful_after_an_answer_escalates_to_the_answered_subject(
        stage: tuple[BotStage, Clock], domain: str) -> None:
    bot, _ = stage
    await bot.handle([record(arrival(domain, "where is my package", language=Language.EN))])
    out = await bot.handle([record(message(domain, "that did not help",
                                           language=Language.EN))])
    [request] = requests(out)
    assert (request.reason, request.intent, request.queue) == ("not_helpful", "logistics",
                                                               "orders")


async def test_a_new_question_after_an_answer_is_answered_again(
        stage: tuple[BotStage, Clock], domain: str) -> None:
    bot, _ = stage
    await bot.handle([record(arrival(domain, "我的快递什么时候到"))])
    out = await bot.handle([record(message(domain, "怎么开发票"))])
    [reply] = replies(out)
    assert (reply.action, reply.intent) == (BotAction.ANSWERED, "invoice")


async def test_the_button_escalates_and_later_messages_only_confirm(
        stage: tuple[BotStage, Clock], domain: str) -> None:
    bot, _ = stage
    await bot.handle([record(arrival(domain, "发票在哪里申请"))])
    pressed = HumanRequested(event_id=uuid.uuid4().hex, ts_ms=T0, contact_id="c1",
                             domain=domain)
    [request] = requests(await bot.handle([record(pressed)]))
    assert (request.reason, request.intent) == ("human_requested", "invoice")
    out = await bot.handle([record(message(domain, "还在吗"))])
    assert replies(out)[0].action is BotAction.ESCALATED
    assert not requests(out)


async def test_a_redelivered_batch_repeats_its_outputs_and_counts_nothing_twice(
        stage: tuple[BotStage, Clock], redis_client: aioredis.Redis, domain: str) -> None:
    bot, clock = stage
    first = [record(arrival(domain, "我要退款"))]
    contacts = metrics.BOT_CONTACTS.labels("zh")
    before = contacts._value.get()
    out1 = await bot.handle(first)
    clock.now += 1000
    out2 = await bot.handle(first)
    assert [o.event.event_id for o in out1] == [o.event.event_id for o in out2]
    assert requests(out2)[0] == requests(out1)[0]  # the same request, same time and id
    assert contacts._value.get() == before + 1
    stats = await domain_stats(redis_client, domain)
    assert (stats["arrived"], stats["escalating"]) == (1, 1)
    turns = await redis_client.hget(conversation_key(domain, "c1"), "turns")
    assert turns == b"1"


async def test_once_kafka_has_the_records_a_redelivery_sends_nothing(
        stage: tuple[BotStage, Clock], redis_client: aioredis.Redis, domain: str) -> None:
    bot, clock = stage
    events = [arrival(domain, "我要退款")] + [message(domain, f"还在吗 {i}") for i in range(40)]
    out = await bot.handle([record(e) for e in events])
    assert len(replies(out)) == 41
    bot.delivered(out)
    clock.now += 1000
    await bot.tick()  # the outbox's deletes ride along with the next step
    again = await bot.handle([record(e) for e in events])  # a re-delivered range of 41 events
    assert again == []
    turns = await redis_client.hget(conversation_key(domain, "c1"), "turns")
    assert turns == b"41"


async def test_a_reply_lost_after_the_write_is_sent_again_with_the_same_ids(
        stage: tuple[BotStage, Clock], domain: str) -> None:
    bot, clock = stage
    batch = [record(arrival(domain, "我要退款")), record(message(domain, "快点"))]
    first = await bot.handle(batch)  # as if Kafka never got these: not delivered
    clock.now += 5000
    second = await bot.handle(batch)
    assert [(o.role, o.event) for o in second] == [(o.role, o.event) for o in first]


async def test_silence_closes_an_answered_contact_once_as_contained(
        stage: tuple[BotStage, Clock], redis_client: aioredis.Redis, domain: str) -> None:
    bot, clock = stage
    await bot.handle([record(arrival(domain, "我的快递什么时候到", cid="quiet")),
                      record(arrival(domain, "我要退款", cid="waiting"))])
    clock.now += int(SILENCE_S * 1000) - 1
    assert not [o for o in await bot.tick() if getattr(o.event, "domain", "") == domain]
    clock.now += 1
    closed = [o.event for o in await bot.tick() if isinstance(o.event, ContactClosed)
              and o.event.domain == domain]
    assert [c.contact_id for c in closed] == ["quiet"]
    assert closed[0].text == bot.brains.brain.kb.message(Message.CLOSED, Language.ZH)
    assert closed[0].intent == "logistics"
    # Until Kafka has the close it is kept, and a step that finds it sends it again.
    again = [o for o in await bot.tick() if isinstance(o.event, ContactClosed)
             and o.event.domain == domain]
    assert [o.event for o in again] == closed
    bot.delivered(again)
    assert not [o for o in await bot.tick() if getattr(o.event, "domain", "") == domain]
    assert not await redis_client.exists(conversation_key(domain, "quiet"))
    assert await redis_client.exists(conversation_key(domain, "waiting"))
    stats = await domain_stats(redis_client, domain)
    assert (stats["contained"], stats["escalating"]) == (1, 1)


async def test_a_message_before_the_deadline_moves_it(
        stage: tuple[BotStage, Clock], redis_client: aioredis.Redis, domain: str) -> None:
    bot, clock = stage
    await bot.handle([record(arrival(domain, "我的快递什么时候到"))])
    clock.now += 30_000
    await bot.handle([record(message(domain, "怎么开发票"))])
    assert await redis_client.zscore(due_key(domain), "c1") == clock.now + SILENCE_S * 1000


async def test_customer_left_clears_the_conversation_and_is_forwarded(
        stage: tuple[BotStage, Clock], redis_client: aioredis.Redis, domain: str) -> None:
    bot, _ = stage
    await bot.handle([record(arrival(domain, "我的快递什么时候到"))])
    left = CustomerLeft(event_id=uuid.uuid4().hex, ts_ms=T0, contact_id="c1", domain=domain)
    out = await bot.handle([record(left)])
    assert [(o.role, o.event) for o in out] == [("routing_requests", left)]
    assert not await redis_client.exists(conversation_key(domain, "c1"))
    assert await redis_client.zscore(due_key(domain), "c1") is None


async def test_a_whole_batch_is_classified_in_one_call(
        stage: tuple[BotStage, Clock], domain: str, monkeypatch: pytest.MonkeyPatch) -> None:
    bot, _ = stage
    classifier = bot.brains.brain.classifier
    calls: list[int] = []
    original = classifier.predict_batch

    def spy(texts: list[str]) -> object:
        calls.append(len(texts))
        return original(texts)

    monkeypatch.setattr(classifier, "predict_batch", spy)
    batch = [record(arrival(domain, text, cid=f"c{i}"))
             for i, text in enumerate(["我的快递什么时候到", "我要退款", "优惠券怎么用", ""])]
    batch.append(record(message(domain, "怎么开发票", cid="c0")))
    out = await bot.handle(batch)
    assert calls == [4]  # the empty arrival needs no classification
    assert len(replies(out)) == 5


async def test_messages_of_one_contact_in_one_batch_see_each_other(
        stage: tuple[BotStage, Clock], domain: str) -> None:
    bot, _ = stage
    out = await bot.handle([record(arrival(domain, "优惠券怎么用")),
                            record(message(domain, "没用"))])
    assert [r.action for r in replies(out)] == [BotAction.ANSWERED, BotAction.ESCALATED]
    assert requests(out)[0].reason == "not_helpful"


async def test_an_event_id_that_looks_like_a_label_is_not_taken_for_a_repeat(
        stage: tuple[BotStage, Clock], redis_client: aioredis.Redis, domain: str) -> None:
    bot, _ = stage
    first = arrival(domain, "我的快递什么时候到")
    second = CustomerMessage(event_id="logistics", ts_ms=T0, contact_id="c1", domain=domain,
                             text="怎么开发票")
    await bot.handle([record(first)])
    await bot.handle([record(second)])
    turns = await redis_client.hget(conversation_key(domain, "c1"), "turns")
    assert turns == b"2"


async def test_a_batch_leaves_each_deadline_as_the_contacts_last_event_set_it(
        stage: tuple[BotStage, Clock], redis_client: aioredis.Redis, domain: str) -> None:
    bot, clock = stage
    await bot.handle([record(arrival(domain, "优惠券怎么用", cid="c9"))])
    assert await redis_client.zscore(due_key(domain), "c9") == T0 + SILENCE_S * 1000
    # One batch: c9 answered again, then handed to a person (no deadline: the bot no longer
    # holds it); c7 answered (a deadline).
    clock.now += 1000
    await bot.handle([record(message(domain, "怎么开发票", cid="c9")),
                      record(message(domain, "没用", cid="c9")),
                      record(arrival(domain, "优惠券怎么用", cid="c7"))])
    assert await redis_client.zscore(due_key(domain), "c9") is None
    assert await redis_client.zscore(due_key(domain), "c7") == clock.now + SILENCE_S * 1000
