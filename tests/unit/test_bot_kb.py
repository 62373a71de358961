"""router.bot.kb: the knowledge base loads, and every mistake is named with its key and fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from router.bot.errors import KnowledgeBaseError
from router.bot.kb import (
    DEFAULT_ROUTES,
    MIN_EXAMPLES_PER_LANGUAGE,
    Escalation,
    Message,
    Route,
    Rule,
    default_kb_path,
    load_kb,
    parse_kb,
    resolve_kb_path,
)
from router.errors import PeakrouteError
from router.events import Language

from ._bot import SMALL_KB, small_kb

ZH, EN = Language.ZH, Language.EN


def raw_small() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SMALL_KB.read_text())
    return data


def parse(data: Any) -> Any:
    return parse_kb(yaml.safe_dump(data, allow_unicode=True).encode(), "kb.yaml")


def error_of(data: Any) -> str:
    with pytest.raises(KnowledgeBaseError) as info:
        parse(data)
    return str(info.value)


def test_the_small_test_kb_loads_with_its_intents_and_languages() -> None:
    kb = small_kb()
    assert kb.languages == (ZH, EN)
    assert list(kb.intents) == ["logistics", "coupon", "invoice", "refund", "account_security"]
    assert kb.intents["refund"].containable is False
    assert kb.intents["refund"].skills == {"refunds": 2}
    assert kb.intents["logistics"].priority == 0


def test_examples_lists_every_example_with_its_intent() -> None:
    kb = small_kb()
    examples = kb.examples()
    assert ("我的快递什么时候到", "logistics") in examples
    assert ("i want a refund", "refund") in examples
    assert len(examples) == sum(len(t) for i in kb.intents.values()
                                for t in i.examples.values())


def test_the_digest_is_the_sha256_of_the_file() -> None:
    import hashlib

    assert small_kb().digest == hashlib.sha256(SMALL_KB.read_bytes()).hexdigest()


def test_a_changed_file_has_another_digest() -> None:
    data = raw_small()
    data["name"] = "changed"
    assert parse(data).digest != parse(raw_small()).digest


def test_escalation_routes_default_and_can_be_overridden() -> None:
    data = raw_small()
    data.pop("escalations")
    assert parse(data).routes == DEFAULT_ROUTES
    data["escalations"] = {"human_request": {"queue": "vip_desk", "priority": 4}}
    routes = parse(data).routes
    assert routes[Escalation.HUMAN_REQUEST] == Route("vip_desk", 4)
    assert routes[Escalation.ANGER] == DEFAULT_ROUTES[Escalation.ANGER]


def test_message_and_answer_fall_back_to_the_first_language() -> None:
    data = raw_small()
    data["languages"] = ["zh"]
    for section in ("rules", "messages"):
        for entry in data[section].values():
            entry.pop("en")
    for intent in data["intents"].values():
        intent["answer"].pop("en")
        intent["examples"].pop("en")
    kb = parse(data)
    assert kb.language(EN) == ZH
    assert kb.message(Message.HANDOFF, EN) == data["messages"]["handoff"]["zh"]
    assert kb.answer("logistics", EN) == data["intents"]["logistics"]["answer"]["zh"]


def test_phrases_of_a_rule_cover_every_language() -> None:
    phrases = small_kb().phrases(Rule.HUMAN_REQUEST)
    assert "转人工" in phrases
    assert "human" in phrases


def test_resolve_kb_path_is_the_packaged_default_when_empty() -> None:
    assert resolve_kb_path("") == default_kb_path()
    assert resolve_kb_path("x/kb.yaml") == Path("x/kb.yaml")
    assert default_kb_path().name == "default.yaml"


def test_a_missing_file_names_the_path_and_the_setting(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeBaseError, match="PEAKROUTE_BOT_KB_PATH") as info:
        load_kb(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(info.value)


def test_kb_errors_are_peakroute_errors() -> None:
    assert issubclass(KnowledgeBaseError, PeakrouteError)


def test_invalid_yaml_names_the_line() -> None:
    with pytest.raises(KnowledgeBaseError, match=r"kb.yaml: not valid YAML at line 2"):
        parse_kb(b"version: 1\n  bad: indent\n", "kb.yaml")


def test_non_utf8_is_refused() -> None:
    with pytest.raises(KnowledgeBaseError, match="UTF-8"):
        parse_kb(b"\xff\xfe", "kb.yaml")


def test_a_key_given_twice_is_refused() -> None:
    with pytest.raises(KnowledgeBaseError, match="appears twice"):
        parse_kb(b"version: 1\nversion: 1\n", "kb.yaml")


def test_the_top_level_must_be_a_mapping() -> None:
    assert "expected a mapping, found a list" in error_of([1, 2])


def test_a_missing_section_is_named() -> None:
    data = raw_small()
    data.pop("messages")
    assert "kb.yaml: messages: missing" in error_of(data)


def test_an_unknown_top_level_key_lists_the_allowed_ones() -> None:
    data = raw_small()
    data["intens"] = {}
    message = error_of(data)
    assert "intens: unknown key" in message
    assert "intents" in message


def test_an_unsupported_version_says_which_to_write() -> None:
    data = raw_small()
    data["version"] = 2
    assert "write `version: 1`" in error_of(data)


def test_an_unknown_language_is_refused() -> None:
    data = raw_small()
    data["languages"] = ["zh", "fr"]
    assert "languages[1]: 'fr' is not a supported language" in error_of(data)


def test_a_rule_missing_a_language_is_named() -> None:
    data = raw_small()
    data["rules"]["anger"].pop("en")
    assert "rules.anger.en: missing" in error_of(data)


def test_an_unknown_rule_is_named() -> None:
    data = raw_small()
    data["rules"]["happy"] = {"zh": ["好"], "en": ["good"]}
    assert "rules.happy: unknown key" in error_of(data)


def test_an_empty_phrase_is_refused() -> None:
    data = raw_small()
    data["rules"]["human_request"]["zh"].append("  ")
    assert "rules.human_request.zh[4]: expected non-empty text" in error_of(data)


def test_a_missing_message_is_named() -> None:
    data = raw_small()
    data["messages"].pop("closed")
    assert "messages.closed: missing" in error_of(data)


def test_an_intent_needs_containable_queue_answer_and_examples() -> None:
    data = raw_small()
    data["intents"]["coupon"].pop("queue")
    assert "intents.coupon.queue: missing" in error_of(data)


def test_containable_must_be_a_boolean() -> None:
    data = raw_small()
    data["intents"]["coupon"]["containable"] = "yes please"
    assert "intents.coupon.containable: expected true or false" in error_of(data)


def test_an_unknown_intent_key_is_named() -> None:
    data = raw_small()
    data["intents"]["coupon"]["answers"] = {}
    assert "intents.coupon.answers: unknown key" in error_of(data)


@pytest.mark.parametrize("name", ["Refund", "re-fund", "退款", ""])
def test_an_intent_id_must_be_lower_case_ascii(name: str) -> None:
    data = raw_small()
    data["intents"][name] = data["intents"].pop("coupon")
    assert "not a valid intent id" in error_of(data)


@pytest.mark.parametrize("name", ["oos", "unknown", "human_request"])
def test_reserved_intent_names_are_refused(name: str) -> None:
    data = raw_small()
    data["intents"][name] = data["intents"].pop("coupon")
    assert "reserved" in error_of(data)


def test_a_queue_must_be_an_id() -> None:
    data = raw_small()
    data["intents"]["coupon"]["queue"] = "pay ment"
    assert "intents.coupon.queue: 'pay ment' is not a queue name" in error_of(data)


def test_a_priority_outside_0_to_9_is_refused() -> None:
    data = raw_small()
    data["intents"]["refund"]["priority"] = 10
    assert "intents.refund.priority: 10 is outside 0..9" in error_of(data)


def test_a_skill_level_outside_1_to_10_is_refused() -> None:
    data = raw_small()
    data["intents"]["refund"]["skills"] = {"refunds": 0}
    assert "intents.refund.skills.refunds: 0 is outside 1..10" in error_of(data)


def test_a_bad_skill_name_is_refused() -> None:
    data = raw_small()
    data["intents"]["refund"]["skills"] = {"退款": 1}
    assert "not a valid skill name" in error_of(data)


def test_an_answer_missing_a_language_is_named() -> None:
    data = raw_small()
    data["intents"]["coupon"]["answer"].pop("zh")
    assert "intents.coupon.answer.zh: missing" in error_of(data)


def test_an_answer_longer_than_the_text_limit_is_refused() -> None:
    data = raw_small()
    data["intents"]["coupon"]["answer"]["en"] = "x" * 4001
    assert "intents.coupon.answer.en: 4001 characters, at most 4000" in error_of(data)


def test_too_few_examples_are_refused() -> None:
    data = raw_small()
    data["intents"]["coupon"]["examples"]["en"] = ["coupon?"]
    message = error_of(data)
    assert f"intents.coupon.examples.en: 1 entries, at least {MIN_EXAMPLES_PER_LANGUAGE}" \
        in message


def test_an_example_given_as_a_number_says_to_quote_it() -> None:
    data = raw_small()
    data["intents"]["coupon"]["examples"]["en"].append(12345)
    assert "quote it" in error_of(data)


def test_the_same_example_under_two_intents_is_refused() -> None:
    data = raw_small()
    data["intents"]["invoice"]["examples"]["zh"].append("优惠券怎么用")
    message = error_of(data)
    assert "intents.invoice.examples" in message
    assert "also an example of intents.coupon" in message


def test_examples_differing_only_in_case_and_width_count_as_the_same() -> None:
    data = raw_small()
    data["intents"]["invoice"]["examples"]["en"].append("HOW DO I USE A COUPON")
    assert "also an example of intents.coupon" in error_of(data)


def test_no_intents_is_refused() -> None:
    data = raw_small()
    data["intents"] = {}
    assert "intents: no intents" in error_of(data)


def test_an_escalation_route_needs_a_queue() -> None:
    data = raw_small()
    data["escalations"] = {"anger": {"priority": 2}}
    assert "escalations.anger.queue: missing" in error_of(data)


def test_an_unknown_escalation_is_named() -> None:
    data = raw_small()
    data["escalations"] = {"sad": {"queue": "general"}}
    assert "escalations.sad: unknown key" in error_of(data)


@pytest.mark.parametrize(("key", "good"), [("threshold", 0.7), ("neighbour_power", 0),
                                           ("coverage_power", 0.5)])
def test_a_threshold_or_its_powers_are_optional_and_between_0_and_1(key: str,
                                                                   good: float) -> None:
    assert getattr(small_kb(), key) is None
    data = raw_small()
    data[key] = good
    assert getattr(parse(data), key) == good
    data[key] = 1.5
    assert f"{key}: expected a number between 0 and 1" in error_of(data)
    data[key] = "high"
    assert f"{key}: expected a number between 0 and 1" in error_of(data)


def test_out_of_scope_examples_are_listed_with_the_oos_label() -> None:
    data = raw_small()
    data["out_of_scope"] = {"zh": ["今天天气怎么样"], "en": ["tell me a joke"]}
    kb = parse(data)
    assert kb.out_of_scope == {ZH: ("今天天气怎么样",), EN: ("tell me a joke",)}
    assert kb.examples()[-2:] == [("今天天气怎么样", "oos"), ("tell me a joke", "oos")]


def test_out_of_scope_is_optional() -> None:
    kb = small_kb()
    assert kb.out_of_scope == {}
    assert all(label != "oos" for _, label in kb.examples())


def test_out_of_scope_needs_every_language() -> None:
    data = raw_small()
    data["out_of_scope"] = {"zh": ["今天天气怎么样"]}
    assert "out_of_scope.en: missing" in error_of(data)


def test_an_out_of_scope_example_that_is_an_intent_example_is_refused() -> None:
    data = raw_small()
    data["out_of_scope"] = {"zh": ["今天天气怎么样"], "en": ["How do I use a coupon"]}
    message = error_of(data)
    assert "out_of_scope.en[0]" in message
    assert "also an example of intents.coupon" in message


def test_handoffs_are_optional_and_listed_with_their_kind() -> None:
    assert small_kb().handoffs == {}
    data = raw_small()
    data["handoffs"] = {"human_request": {"zh": ["叫你们客服出来", "换个人", "找个真人"],
                                          "en": ["someone else please", "a person", "agent"]}}
    kb = parse(data)
    assert kb.handoffs[Rule.HUMAN_REQUEST][EN] == ("someone else please", "a person", "agent")
    assert ("换个人", "human_request") in kb.handoff_examples()


def test_a_handoff_kind_must_be_a_person_request_or_anger() -> None:
    data = raw_small()
    data["handoffs"] = {"not_helpful": {"zh": ["没用"] * 3, "en": ["no"] * 3}}
    assert "handoffs.not_helpful: unknown key" in error_of(data)


def test_handoffs_need_every_language_and_three_examples() -> None:
    data = raw_small()
    data["handoffs"] = {"anger": {"zh": ["我要投诉", "太差了", "差评"]}}
    assert "handoffs.anger.en: missing" in error_of(data)
    data["handoffs"] = {"anger": {"zh": ["我要投诉", "太差了", "差评"], "en": ["complaint"]}}
    assert "handoffs.anger.en: 1 entries, at least 3" in error_of(data)


def test_a_handoff_example_that_is_an_intent_example_is_refused() -> None:
    data = raw_small()
    data["handoffs"] = {"anger": {"zh": ["我要投诉", "太差了", "差评"],
                                  "en": ["complaint", "How do I use a coupon", "rubbish"]}}
    message = error_of(data)
    assert "handoffs.anger.en[1]" in message
    assert "also in intents.coupon" in message


def test_language_thresholds_are_optional_per_language() -> None:
    assert small_kb().language_thresholds == {}
    data = raw_small()
    data["language_thresholds"] = {"zh": 0.3, "en": 0.2}
    assert parse(data).language_thresholds == {"zh": 0.3, "en": 0.2}
    data["language_thresholds"] = {"zh": 0.3}
    assert "language_thresholds.en: missing" in error_of(data)
