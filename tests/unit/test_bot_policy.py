"""router.bot.policy.decide: answer, ask to rephrase, or hand off with queue, skills, priority.

Pure: the classifier's output is given as a Prediction, so each rule is tested on its own."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.bot.kb import Escalation, Message
from router.bot.policy import (
    ANGER_INTENT,
    HUMAN_REQUEST_INTENT,
    UNKNOWN_INTENT,
    Context,
    Phase,
    PolicyConfig,
    Reason,
    decide,
    human_requested,
    reply_for,
)
from router.bot.rules import RuleHits, Rules, VipPolicy
from router.bot.scoring import OOS, Prediction
from router.decode import ID_RE
from router.events import BotAction, Language, Tier

from ._bot import small_kb

ZH, EN = Language.ZH, Language.EN
CFG = PolicyConfig(threshold=0.5, vip_policy=VipPolicy.BOOST, vip_boost=3)
NONE = RuleHits()
SURE = 0.9
UNSURE = 0.2


def p(intent: str, confidence: float = SURE) -> Prediction:
    return Prediction(intent, confidence)


def answered(intent: str = "logistics", confidence: float = SURE) -> Context:
    return Context(Phase.ANSWERED, intent, confidence)


def test_a_confident_containable_intent_is_answered_in_the_customers_language() -> None:
    kb = small_kb()
    for lang in (ZH, EN):
        d = decide(NONE, p("logistics"), lang, Context(), kb, CFG)
        assert d.action is BotAction.ANSWERED
        assert d.phase is Phase.ANSWERED
        assert d.intent == "logistics"
        assert d.reply == kb.intents["logistics"].answer[lang]
        assert d.language is lang
        assert d.reason == ""
        assert not d.new_escalation


def test_a_confident_hand_off_intent_escalates_to_its_queue_with_skills_and_priority() -> None:
    kb = small_kb()
    d = decide(NONE, p("refund", 0.8), ZH, Context(), kb, CFG)
    assert d.action is BotAction.ESCALATED
    assert d.reason == Reason.INTENT_NEEDS_AGENT
    assert (d.queue, dict(d.skills), d.priority) == ("refunds", {"refunds": 2}, 1)
    assert d.intent == "refund"
    assert d.confidence == 0.8
    assert d.reply == kb.intents["refund"].answer[ZH]
    assert d.new_escalation


def test_below_the_threshold_escalates_as_not_understood_to_the_general_route() -> None:
    kb = small_kb()
    d = decide(NONE, p("logistics", UNSURE), EN, Context(), kb, CFG)
    assert d.action is BotAction.ESCALATED
    assert d.reason == Reason.NOT_UNDERSTOOD
    assert d.intent == UNKNOWN_INTENT
    assert d.queue == kb.routes[Escalation.NOT_UNDERSTOOD].queue
    assert d.skills == {}
    assert d.reply == kb.message(Message.HANDOFF, EN)


def test_exactly_at_the_threshold_counts_as_confident() -> None:
    d = decide(NONE, p("coupon", CFG.threshold), ZH, Context(), small_kb(), CFG)
    assert d.action is BotAction.ANSWERED


def test_the_oos_class_is_never_answered_however_confident() -> None:
    d = decide(NONE, p(OOS, 0.99), ZH, Context(), small_kb(), CFG)
    assert d.reason == Reason.NOT_UNDERSTOOD


def test_an_intent_the_kb_does_not_know_is_not_answered() -> None:
    d = decide(NONE, p("crypto_question", 0.99), ZH, Context(), small_kb(), CFG)
    assert d.action is BotAction.ESCALATED
    assert d.reason == Reason.NOT_UNDERSTOOD


def test_with_rephrasing_allowed_the_bot_first_asks_to_rephrase() -> None:
    kb = small_kb()
    cfg = PolicyConfig(threshold=0.5, rephrase_max=1)
    first = decide(NONE, p("coupon", UNSURE), ZH, Context(), kb, cfg)
    assert first.action is BotAction.ANSWERED
    assert first.phase is Phase.REPHRASE
    assert first.intent == UNKNOWN_INTENT
    assert first.reply == kb.message(Message.NOT_UNDERSTOOD, ZH)
    again = decide(NONE, p("coupon", UNSURE), ZH,
                   Context(Phase.REPHRASE, "", 0.0, rephrases=1), kb, cfg)
    assert again.reason == Reason.NOT_UNDERSTOOD
    assert again.new_escalation


def test_asking_for_a_person_wins_over_a_containable_intent() -> None:
    d = decide(RuleHits(human_request=True), p("logistics"), ZH, Context(), small_kb(), CFG)
    assert d.action is BotAction.ESCALATED
    assert d.reason == Reason.HUMAN_REQUESTED
    assert d.queue == "orders"  # the subject the bot understood
    assert d.intent == "logistics"


def test_asking_for_a_person_without_a_subject_goes_to_the_human_request_route() -> None:
    kb = small_kb()
    d = decide(RuleHits(human_request=True), p("coupon", UNSURE), ZH, Context(), kb, CFG)
    assert d.intent == HUMAN_REQUEST_INTENT
    assert d.queue == kb.routes[Escalation.HUMAN_REQUEST].queue
    assert d.reply == kb.message(Message.HANDOFF, ZH)


def test_asking_for_a_person_after_an_answer_keeps_the_answered_subject() -> None:
    d = decide(RuleHits(human_request=True), p("coupon", UNSURE), ZH, answered("invoice", 0.7),
               small_kb(), CFG)
    assert (d.intent, d.queue, d.confidence) == ("invoice", "payment", 0.7)


def test_anger_escalates_to_the_anger_route_whatever_the_intent() -> None:
    kb = small_kb()
    d = decide(RuleHits(anger=True), p("logistics"), ZH, Context(), kb, CFG)
    assert d.reason == Reason.ANGER
    assert d.queue == kb.routes[Escalation.ANGER].queue == "complaints"
    assert d.intent == "logistics"
    assert d.priority == kb.routes[Escalation.ANGER].priority


def test_anger_takes_the_higher_priority_of_route_and_subject() -> None:
    d = decide(RuleHits(anger=True), p("account_security"), ZH, Context(), small_kb(), CFG)
    assert d.priority == 2


def test_anger_without_a_subject_is_labelled_anger() -> None:
    d = decide(RuleHits(anger=True), p("x", UNSURE), EN, Context(), small_kb(), CFG)
    assert d.intent == ANGER_INTENT


def test_not_helpful_after_an_answer_escalates_to_the_answered_subjects_queue() -> None:
    d = decide(RuleHits(not_helpful=True), p("coupon", UNSURE), ZH, answered("logistics"),
               small_kb(), CFG)
    assert d.reason == Reason.NOT_HELPFUL
    assert (d.intent, d.queue) == ("logistics", "orders")
    assert d.new_escalation


def test_not_helpful_before_any_answer_is_just_classified() -> None:
    d = decide(RuleHits(not_helpful=True), p("coupon"), ZH, Context(), small_kb(), CFG)
    assert d.action is BotAction.ANSWERED


def test_a_new_question_after_an_answer_is_classified_again() -> None:
    d = decide(NONE, p("invoice"), ZH, answered("logistics"), small_kb(), CFG)
    assert d.action is BotAction.ANSWERED
    assert d.intent == "invoice"


def test_after_an_escalation_the_bot_only_confirms_and_requests_nothing_new() -> None:
    kb = small_kb()
    ctx = Context(Phase.ESCALATED, "refund", 0.8)
    for hits in (NONE, RuleHits(human_request=True), RuleHits(anger=True)):
        d = decide(hits, p("logistics"), ZH, ctx, kb, CFG)
        assert d.action is BotAction.ESCALATED
        assert not d.new_escalation
        assert d.intent == "refund"
        assert d.reply == kb.message(Message.HANDOFF, ZH)


def test_vip_boost_raises_the_priority_of_an_escalation() -> None:
    normal = decide(NONE, p("refund"), ZH, Context(), small_kb(), CFG)
    vip = decide(NONE, p("refund"), ZH, Context(tier=Tier.VIP), small_kb(), CFG)
    assert vip.priority == normal.priority + 3


def test_vip_does_not_change_an_answer_under_boost() -> None:
    d = decide(NONE, p("logistics"), ZH, Context(tier=Tier.VIP), small_kb(), CFG)
    assert d.action is BotAction.ANSWERED


def test_no_vip_policy_gives_no_boost() -> None:
    cfg = PolicyConfig(threshold=0.5, vip_policy=VipPolicy.NONE, vip_boost=3)
    d = decide(NONE, p("refund"), ZH, Context(tier=Tier.VIP), small_kb(), cfg)
    assert d.priority == 1


def test_always_human_escalates_every_vip_even_a_containable_question() -> None:
    cfg = PolicyConfig(threshold=0.5, vip_policy=VipPolicy.ALWAYS_HUMAN, vip_boost=3)
    d = decide(NONE, p("logistics"), ZH, Context(tier=Tier.VIP), small_kb(), cfg)
    assert d.reason == Reason.VIP
    assert d.queue == "orders"
    assert d.priority == 3
    normal = decide(NONE, p("logistics"), ZH, Context(), small_kb(), cfg)
    assert normal.action is BotAction.ANSWERED


def test_priority_never_exceeds_9() -> None:
    cfg = PolicyConfig(threshold=0.5, vip_boost=9)
    d = decide(NONE, p("account_security"), ZH, Context(tier=Tier.VIP), small_kb(), cfg)
    assert d.priority == 9


def test_the_button_escalates_as_human_requested_to_the_last_subject() -> None:
    d = human_requested(EN, answered("coupon", 0.77), small_kb(), CFG)
    assert d.reason == Reason.HUMAN_REQUESTED
    assert (d.intent, d.queue, d.confidence) == ("coupon", "payment", 0.77)
    assert d.new_escalation
    fresh = human_requested(EN, Context(), small_kb(), CFG)
    assert fresh.intent == HUMAN_REQUEST_INTENT


def test_the_button_after_an_escalation_only_confirms() -> None:
    d = human_requested(ZH, Context(Phase.ESCALATED, "refund"), small_kb(), CFG)
    assert not d.new_escalation


@pytest.mark.parametrize(("action", "intent", "reason", "expected"), [
    (BotAction.ANSWERED, "logistics", "", "answer"),
    (BotAction.ANSWERED, UNKNOWN_INTENT, "", "not_understood"),
    (BotAction.ESCALATED, "refund", "intent_needs_agent", "answer"),
    (BotAction.ESCALATED, "refund", "human_requested", "handoff"),
])
def test_reply_for_repeats_the_reply_of_an_earlier_decision(
        action: BotAction, intent: str, reason: str, expected: str) -> None:
    kb = small_kb()
    text = {"answer": kb.intents[intent].answer[ZH] if intent in kb.intents else "",
            "not_understood": kb.message(Message.NOT_UNDERSTOOD, ZH),
            "handoff": kb.message(Message.HANDOFF, ZH)}[expected]
    assert reply_for(action, intent, reason, ZH, kb) == text


def test_reply_for_matches_decide() -> None:
    kb = small_kb()
    for pred in (p("logistics"), p("refund"), p("x", UNSURE)):
        d = decide(NONE, pred, EN, Context(), kb, CFG)
        assert reply_for(d.action, d.intent, d.reason, EN, kb) == d.reply


INTENTS = [*small_kb().intents, OOS, "unknown_to_kb"]


@given(st.text(max_size=80), st.sampled_from(INTENTS), st.floats(0, 1),
       st.sampled_from(list(Language)), st.sampled_from(list(Tier)),
       st.sampled_from(list(Phase)), st.sampled_from(list(VipPolicy)))
@settings(max_examples=300, deadline=None, database=None)
def test_every_decision_is_well_formed(text: str, intent: str, confidence: float,
                                       language: Language, tier: Tier, phase: Phase,
                                       vip: VipPolicy) -> None:
    kb = small_kb()
    cfg = PolicyConfig(threshold=0.5, vip_policy=vip, vip_boost=3)
    ctx = Context(phase, "logistics" if phase is not Phase.NEW else "", 0.6, tier=tier)
    d = decide(Rules.from_kb(kb).check(text), p(intent, confidence), language, ctx, kb, cfg)
    assert 0 <= d.priority <= 9
    assert d.reply
    assert d.language in kb.languages
    if d.action is BotAction.ANSWERED:
        assert not d.new_escalation
        assert d.reason == ""
    else:
        assert d.new_escalation == (phase is not Phase.ESCALATED)
        if d.new_escalation:
            assert d.reason in {r.value for r in Reason}
            assert ID_RE.fullmatch(d.queue)
