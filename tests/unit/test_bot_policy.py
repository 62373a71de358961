"""router.bot.policy.decide (contain or escalate) and router.routing.policy (queue, levels)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.bot import policy as bot
from router.bot.policy import (
    GENERAL_SKILL,
    HUMAN_REQUEST_WORDS,
    INTENTS,
    VIP_PRIORITY_BOOST,
    BotDecision,
    decide,
    escalation,
)
from router.decode import ID_RE, LEVEL_RANGE
from router.events import BotAction, Language, Tier
from router.routing.policy import PRIORITY_STEP_MS, format_levels, parse_levels, queue_score

ZH, EN = Language.ZH, Language.EN

# One message per intent and language that should match only that intent.
EXAMPLES: dict[str, dict[Language, str]] = {
    "order_status": {ZH: "我想查一下订单状态", EN: "What is my order status?"},
    "logistics": {ZH: "我的快递什么时候到？", EN: "Where is my package?"},
    "coupon": {ZH: "优惠券怎么用", EN: "How do I use a coupon?"},
    "invoice": {ZH: "怎么开发票", EN: "I need an invoice"},
    "presale_deposit": {ZH: "定金可以退吗", EN: "When is the final payment for presale?"},
    "refund": {ZH: "我要退款", EN: "I want a refund"},
    "payment_failed": {ZH: "支付失败了", EN: "My card declined"},
    "account_security": {ZH: "我的账号被盗了", EN: "I think I was hacked"},
    "complaint": {ZH: "我要投诉", EN: "This is a scam"},
}
INTENT_BY_NAME = {i.name: i for i in INTENTS}
CASES = [(name, lang) for name in EXAMPLES for lang in (ZH, EN)]
CASE_IDS = [f"{name}-{lang.value}" for name, lang in CASES]


def assert_escalated(d: BotDecision, language: Language) -> None:
    assert d.action is BotAction.ESCALATED
    assert d.skills.get(language.value) == 1
    assert d.reply
    assert 0 <= d.priority <= 9


def test_every_intent_has_an_example_in_both_languages() -> None:
    assert set(EXAMPLES) == set(INTENT_BY_NAME)


@pytest.mark.parametrize(("name", "language"), CASES, ids=CASE_IDS)
def test_each_example_is_classified_as_its_intent(name: str, language: Language) -> None:
    assert decide(EXAMPLES[name][language], language).intent == name


@pytest.mark.parametrize(("name", "language"), CASES, ids=CASE_IDS)
def test_containable_intents_are_answered_and_others_escalated(
    name: str, language: Language
) -> None:
    intent = INTENT_BY_NAME[name]
    d = decide(EXAMPLES[name][language], language)
    if intent.containable:
        assert d.action is BotAction.ANSWERED
        assert d.reply == intent.answers[language]
        assert d.skills == {}
        assert d.reason == ""
        assert d.priority == 0
    else:
        assert_escalated(d, language)
        assert d.skills == {language.value: 1, intent.topic_skill: 1}
        assert d.reason == "intent_needs_agent"
        assert d.priority == intent.priority


def test_chinese_logistics_question_is_answered() -> None:
    d = decide("我的快递什么时候到？", ZH)
    assert d.action is BotAction.ANSWERED
    assert d.intent == "logistics"
    assert d.reply.strip()


def test_answered_reply_is_in_the_customers_language() -> None:
    assert decide("Where is my package?", EN).reply == INTENT_BY_NAME["logistics"].answers[EN]
    assert decide("我的包裹到哪了", ZH).reply == INTENT_BY_NAME["logistics"].answers[ZH]


def test_every_containable_intent_has_an_answer_in_every_language() -> None:
    for intent in INTENTS:
        if intent.containable:
            assert all(intent.answers.get(lang, "").strip() for lang in Language), intent.name


def test_chinese_refund_escalates_to_refunds_with_chinese() -> None:
    d = decide("我要退款", ZH)
    assert d.action is BotAction.ESCALATED
    assert d.intent == "refund"
    assert d.skills == {"zh": 1, "refunds": 1}
    assert d.reason == "intent_needs_agent"


def test_english_refund_escalates_to_refunds_with_english() -> None:
    assert decide("I want my money back", EN).skills == {"en": 1, "refunds": 1}


@pytest.mark.parametrize(("text", "language"), [
    ("转人工", ZH),
    ("人工客服", ZH),
    ("Let me talk to a real person", EN),
    ("I want to speak to someone", EN),
    ("Can I get a live agent?", EN),
])
def test_asking_for_a_person_escalates_as_human_requested(text: str, language: Language) -> None:
    d = decide(text, language)
    assert_escalated(d, language)
    assert d.reason == "human_requested"
    assert d.intent == "human_request"
    assert d.skills == {language.value: 1, GENERAL_SKILL: 1}


@pytest.mark.parametrize(("text", "language"), [
    ("我的快递什么时候到？转人工", ZH),
    ("优惠券怎么用，我要人工客服", ZH),
    ("Where is my package? Let me talk to a real person", EN),
    ("coupon question, I want a HUMAN", EN),
])
def test_asking_for_a_person_wins_over_a_containable_topic(text: str, language: Language) -> None:
    d = decide(text, language)
    assert d.action is BotAction.ESCALATED
    assert d.reason == "human_requested"


@pytest.mark.parametrize(("text", "language"), [
    ("你好", ZH), ("hello there", EN), ("", ZH), ("", EN), ("🙂", EN), ("asdfgh", ZH),
])
def test_unknown_text_escalates_as_not_understood_to_general(text: str, language: Language) -> None:
    d = decide(text, language)
    assert_escalated(d, language)
    assert d.reason == "not_understood"
    assert d.intent == "unknown"
    assert d.skills == {language.value: 1, GENERAL_SKILL: 1}


def test_keywords_of_the_other_language_are_not_matched() -> None:
    assert decide("我的快递什么时候到？", EN).reason == "not_understood"
    assert decide("Where is my package?", ZH).reason == "not_understood"


@pytest.mark.parametrize("text", ["WHERE IS MY PACKAGE", "where is my package",
                                  "Where Is My PaCkAgE"])
def test_english_matching_is_case_insensitive(text: str) -> None:
    d = decide(text, EN)
    assert d.intent == "logistics"
    assert d.action is BotAction.ANSWERED


def test_english_human_request_is_case_insensitive() -> None:
    assert decide("LET ME TALK TO A REAL PERSON", EN).reason == "human_requested"


def test_vip_raises_priority_of_an_escalation_by_the_boost() -> None:
    normal = decide("我要投诉", ZH, Tier.NORMAL)
    vip = decide("我要投诉", ZH, Tier.VIP)
    assert vip.priority == normal.priority + VIP_PRIORITY_BOOST


@pytest.mark.parametrize("text", ["转人工", "你好", "我要退款", "我的账号被盗了"])
def test_vip_boost_applies_to_every_kind_of_escalation(text: str) -> None:
    assert decide(text, ZH, Tier.VIP).priority == min(
        decide(text, ZH, Tier.NORMAL).priority + VIP_PRIORITY_BOOST, 9)


def test_tier_defaults_to_normal() -> None:
    assert decide("我要投诉", ZH) == decide("我要投诉", ZH, Tier.NORMAL)


def test_vip_does_not_change_an_answered_contact() -> None:
    assert decide("我的快递什么时候到？", ZH, Tier.VIP) == decide("我的快递什么时候到？", ZH)


def test_priority_never_exceeds_9(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bot, "VIP_PRIORITY_BOOST", 50)
    for text in ("我的账号被盗了", "转人工", "你好"):
        assert decide(text, ZH, Tier.VIP).priority == 9
    assert escalation(ZH, Tier.VIP, "button").priority == 9


@given(st.text(max_size=200), st.sampled_from(list(Language)), st.sampled_from(list(Tier)))
@settings(max_examples=200, deadline=None, database=None)
def test_every_decision_is_well_formed(text: str, language: Language, tier: Tier) -> None:
    d = decide(text, language, tier)
    assert 0 <= d.priority <= 9
    assert d.reply
    if d.action is BotAction.ESCALATED:
        assert d.skills.get(language.value) == 1
        assert d.reason in {"intent_needs_agent", "human_requested", "not_understood"}
        assert all(ID_RE.fullmatch(s) for s in d.skills)
    else:
        assert d.skills == {}
        assert d.reason == ""


def test_escalation_carries_language_general_skill_and_reason() -> None:
    d = escalation(EN, Tier.NORMAL, "button")
    assert d.action is BotAction.ESCALATED
    assert d.skills == {"en": 1, GENERAL_SKILL: 1}
    assert d.reason == "button"
    assert d.priority == 0
    assert escalation(EN, Tier.VIP, "button").priority == VIP_PRIORITY_BOOST


def test_human_request_words_exist_for_every_language() -> None:
    assert all(HUMAN_REQUEST_WORDS.get(lang) for lang in Language)


def test_english_keywords_are_lower_case() -> None:
    """The text is lower-cased before matching, so an upper-case keyword could never match."""
    for intent in INTENTS:
        for word in intent.keywords.get(EN, ()):
            assert word == word.lower(), (intent.name, word)
    assert all(w == w.lower() for w in HUMAN_REQUEST_WORDS[EN])


@pytest.mark.parametrize(("text", "language"), [
    ("我要退款，订单号123", ZH),
    ("退货的快递怎么寄", ZH),
    ("I want a refund for my order", EN),
    ("Refund please, the package was broken", EN),
])
def test_a_refund_that_mentions_an_order_or_parcel_still_escalates(
    text: str, language: Language
) -> None:
    d = decide(text, language)
    assert d.action is BotAction.ESCALATED
    assert d.skills == {language.value: 1, "refunds": 1}


def test_a_word_merely_containing_human_is_not_a_human_request() -> None:
    assert decide("Do you sell the humane mouse trap?", EN).reason != "human_requested"


# --- router.routing.policy ---------------------------------------------------------------

SKILL_IDS = st.from_regex(r"[A-Za-z0-9._:@-]{1,64}", fullmatch=True)
LEVELS = st.dictionaries(SKILL_IDS, st.integers(*LEVEL_RANGE), max_size=32)


@given(LEVELS)
@settings(max_examples=200, deadline=None, database=None)
def test_parse_levels_inverts_format_levels(levels: dict[str, int]) -> None:
    assert parse_levels(format_levels(levels)) == levels


@given(LEVELS)
@settings(max_examples=200, deadline=None, database=None)
def test_format_levels_is_sorted_by_skill_and_independent_of_insertion_order(
    levels: dict[str, int],
) -> None:
    text = format_levels(levels)
    assert text == format_levels(dict(reversed(list(levels.items()))))
    names = [part.partition("=")[0] for part in filter(None, text.split(","))]
    assert names == sorted(levels)


def test_format_levels_example() -> None:
    assert format_levels({"zh": 1, "refund": 2}) == "refund=2,zh=1"


def test_format_levels_of_nothing_is_empty_and_parses_back_to_nothing() -> None:
    assert format_levels({}) == ""
    assert parse_levels("") == {}


def test_format_levels_is_stable() -> None:
    levels = {"zh": 1, "refunds": 3, "general": 10}
    assert format_levels(levels) == format_levels(dict(levels)) == "general=10,refunds=3,zh=1"


def test_parse_levels_example() -> None:
    assert parse_levels("refund=2,zh=1") == {"refund": 2, "zh": 1}


def test_an_earlier_escalation_is_served_first() -> None:
    assert queue_score(1_000, 0) < queue_score(1_001, 0)


def test_a_higher_priority_is_served_first_at_equal_time() -> None:
    t = 1_700_000_000_000
    assert queue_score(t, 9) < queue_score(t, 1) < queue_score(t, 0)


def test_one_priority_step_outweighs_waiting_less_than_the_step() -> None:
    t = 1_700_000_000_000
    assert queue_score(t + PRIORITY_STEP_MS - 1, 1) < queue_score(t, 0)
    assert queue_score(t + PRIORITY_STEP_MS, 1) == queue_score(t, 0)


@given(st.integers(1_420_070_400_000, 4_102_444_800_000), st.integers(0, 9),
       st.integers(1, 10**9), st.integers(0, 9))
@settings(max_examples=200, deadline=None, database=None)
def test_queue_score_is_monotonic(t: int, p: int, dt: int, dp: int) -> None:
    assert queue_score(t, p) < queue_score(t + dt, p)
    if dp:
        assert queue_score(t, min(p + dp, 9)) <= queue_score(t, p)
