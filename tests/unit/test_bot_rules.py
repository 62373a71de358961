"""router.bot.rules: asking for a person, anger, "did not help", and the VIP policy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.bot.rules import (
    PhraseMatcher,
    Rules,
    VipPolicy,
    parse_vip_policy,
    vip_boost,
    vip_goes_to_a_person,
)
from router.bot.text import normalize
from router.errors import SettingsError
from router.events import Tier

from ._bot import small_kb


def rules() -> Rules:
    return Rules.from_kb(small_kb())


@pytest.mark.parametrize("text", [
    "转人工", "我要转人工", "帮我找客服", "人工客服在吗", "我要真人",
    "I want a human", "Let me talk to a REAL PERSON", "agent please", "Live agent!",
    "can I speak to a representative?",
])
def test_asking_for_a_person_is_a_human_request(text: str) -> None:
    assert rules().check(text).human_request


@pytest.mark.parametrize("text", [
    "Do you sell the humane mouse trap?", "my agents are fine", "reagent delivery",
    "我的快递什么时候到", "where is my package",
])
def test_words_merely_containing_a_phrase_are_not_a_human_request(text: str) -> None:
    assert not rules().check(text).human_request


def test_chinese_phrases_match_inside_a_sentence_without_spaces() -> None:
    assert rules().check("物流太慢了转人工吧").human_request


def test_an_english_phrase_next_to_chinese_characters_still_matches() -> None:
    assert rules().check("我要找human").human_request


def test_english_phrases_apply_to_chinese_customers_and_the_reverse() -> None:
    assert rules().check("agent").human_request
    assert rules().check("please 转人工").human_request


def test_full_width_letters_are_matched_like_ascii() -> None:
    assert rules().check("ＨＵＭＡＮ please").human_request


@pytest.mark.parametrize("text", ["我要投诉", "你们就是骗子", "This is a scam",
                                  "I am FURIOUS", "worst shop ever"])
def test_anger_and_complaints_are_recognised(text: str) -> None:
    assert rules().check(text).anger


@pytest.mark.parametrize("text", ["没用", "还是没解决", "不是这个问题", "that didn't help",
                                  "Not helpful at all", "that's not what I asked"])
def test_not_helpful_is_recognised(text: str) -> None:
    assert rules().check(text).not_helpful


def test_a_plain_question_triggers_no_rule() -> None:
    hits = rules().check("优惠券怎么用")
    assert not hits.human_request
    assert not hits.anger
    assert not hits.not_helpful


def test_an_empty_phrase_list_matches_nothing() -> None:
    assert not PhraseMatcher.of([]).matches("anything")
    assert not Rules.none().check("转人工 human agent").human_request


def test_longer_phrases_win_over_their_prefixes() -> None:
    m = PhraseMatcher.of(["live", "live agent"])
    assert m.matches("live agent")
    assert m.matches("live")


def test_regex_characters_in_phrases_are_literal() -> None:
    m = PhraseMatcher.of(["a.b", "(help)"])
    assert m.matches("a.b")
    assert not m.matches("axb")
    assert m.matches("(help)")


@pytest.mark.parametrize(("policy", "tier", "expected"), [
    (VipPolicy.NONE, Tier.VIP, 0), (VipPolicy.BOOST, Tier.VIP, 3),
    (VipPolicy.ALWAYS_HUMAN, Tier.VIP, 3), (VipPolicy.BOOST, Tier.NORMAL, 0),
])
def test_vip_boost_follows_the_policy(policy: VipPolicy, tier: Tier, expected: int) -> None:
    assert vip_boost(tier, policy, 3) == expected


def test_only_always_human_sends_every_vip_to_a_person() -> None:
    assert vip_goes_to_a_person(Tier.VIP, VipPolicy.ALWAYS_HUMAN)
    assert not vip_goes_to_a_person(Tier.NORMAL, VipPolicy.ALWAYS_HUMAN)
    assert not vip_goes_to_a_person(Tier.VIP, VipPolicy.BOOST)


def test_parse_vip_policy_names_the_setting_and_the_choices() -> None:
    assert parse_vip_policy("always_human") is VipPolicy.ALWAYS_HUMAN
    with pytest.raises(SettingsError, match="PEAKROUTE_BOT_VIP_POLICY='gold': use none, boost"):
        parse_vip_policy("gold")


def _reference(phrases: list[str], text: str) -> bool:
    """The rule as the docstring states it: some phrase occurs in the normalised text, a
    Latin one as whole words (a Chinese character next to it counts as a boundary)."""
    import re

    norm = normalize(text)
    for phrase in {normalize(p) for p in phrases if p.strip()}:
        if re.search(r"[\u3400-\u4dbf\u4e00-\u9fff]", phrase):
            if phrase in norm:
                return True
        elif re.search(rf"(?<![a-z0-9]){re.escape(phrase)}(?![a-z0-9])", norm):
            return True
    return False


PHRASES = ["agent", "live agent", "human", "a.b", "人工", "转人工", "投诉", "x+", "real person"]


@given(st.lists(st.sampled_from([*PHRASES, "agents", "reagent", " ", "我", "要", "a", "b", ".",
                                 "x", "+", "1", "人", "工", "Agent", "ＡＧＥＮＴ", "!"]),
                max_size=12))
def test_one_pattern_matches_exactly_where_some_phrase_does(pieces: list[str]) -> None:
    text = "".join(pieces)
    assert PhraseMatcher.of(PHRASES).matches(normalize(text)) == _reference(PHRASES, text)


def test_only_latin_or_only_chinese_phrases() -> None:
    assert PhraseMatcher.of(["agent"]).matches("an agent")
    assert not PhraseMatcher.of(["agent"]).matches("reagent")
    assert PhraseMatcher.of(["人工"]).matches("转人工")
    assert not PhraseMatcher.of(["人工"]).matches("agent")
