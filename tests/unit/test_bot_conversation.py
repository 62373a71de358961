"""router.bot.conversation (pure half): how one decision moves a conversation on."""

from __future__ import annotations

from router.bot.conversation import (
    Caps,
    Conversation,
    advance,
    decode_fields,
    encode,
    silence_deadline,
)
from router.bot.policy import BotDecision, Phase, Reason
from router.events import BotAction, Channel, Language, Speaker, Tier

CAPS = Caps(turns=4, turn_chars=10)
T = 1_795_500_000_000


def answer(intent: str = "logistics") -> BotDecision:
    return BotDecision(BotAction.ANSWERED, Phase.ANSWERED, intent, 0.9, "the answer",
                       Language.ZH)


def escalation() -> BotDecision:
    return BotDecision(BotAction.ESCALATED, Phase.ESCALATED, "refund", 0.8, "handing off",
                       Language.ZH, Reason.INTENT_NEEDS_AGENT.value, "refunds",
                       {"refunds": 2}, 4, new_escalation=True)


def rephrase() -> BotDecision:
    return BotDecision(BotAction.ANSWERED, Phase.REPHRASE, "unknown", 0.1, "rephrase?",
                       Language.ZH)


def test_a_message_adds_the_customer_and_bot_turns_and_counts_one_turn() -> None:
    conv = advance(Conversation(), answer(), "where?", T, CAPS)
    assert [(t.speaker, t.text) for t in conv.transcript] == [
        (Speaker.CUSTOMER, "where?"), (Speaker.BOT, "the answer")]
    assert conv.turns == 1
    assert conv.phase is Phase.ANSWERED
    assert (conv.intent, conv.confidence, conv.last_ms) == ("logistics", 0.9, T)


def test_a_button_press_adds_only_the_bot_turn() -> None:
    conv = advance(Conversation(), escalation(), None, T, CAPS)
    assert [t.speaker for t in conv.transcript] == [Speaker.BOT]
    assert conv.turns == 0


def test_the_transcript_keeps_the_last_turns_each_cut_to_the_limit() -> None:
    conv = Conversation()
    for i in range(5):
        conv = advance(conv, answer(), f"question number {i}", T + i, CAPS)
    assert len(conv.transcript) == CAPS.turns
    assert conv.transcript[-2].text == "question n"  # cut to 10 characters
    assert conv.turns == 5


def test_an_escalation_is_recorded_with_its_route_and_time() -> None:
    conv = advance(Conversation(), escalation(), "退款", T, CAPS)
    assert conv.escalation is not None
    assert (conv.escalation.queue, conv.escalation.priority, conv.escalation.ts_ms) == (
        "refunds", 4, T)


def test_later_decisions_keep_the_first_escalation() -> None:
    conv = advance(Conversation(), escalation(), "退款", T, CAPS)
    still = BotDecision(BotAction.ESCALATED, Phase.ESCALATED, "refund", 0.8, "wait",
                        Language.ZH)
    later = advance(conv, still, "hello?", T + 5, CAPS)
    assert later.escalation == conv.escalation


def test_rephrasing_counts_and_keeps_the_last_subject() -> None:
    conv = advance(Conversation(), answer("coupon"), "q", T, CAPS)
    conv = advance(conv, rephrase(), "??", T + 1, CAPS)
    assert conv.rephrases == 1
    assert conv.intent == "coupon"
    assert conv.phase is Phase.REPHRASE


def test_silence_closes_only_while_the_bot_holds_the_contact() -> None:
    assert silence_deadline(advance(Conversation(), answer(), "q", T, CAPS), 5000) == \
        T + 5000
    assert silence_deadline(advance(Conversation(), rephrase(), "q", T, CAPS), 5000) == \
        T + 5000
    assert silence_deadline(advance(Conversation(), escalation(), "q", T, CAPS),
                            5000) is None
    assert silence_deadline(Conversation(), 5000) is None


def test_encode_and_decode_round_trip() -> None:
    conv = advance(Conversation(Language.EN, Tier.VIP, Channel.EMAIL), escalation(),
                   "I want a refund", T, CAPS)
    raw = {k.encode(): v.encode() for k, v in encode(conv).items()}
    assert decode_fields(raw) == conv


def test_an_empty_hash_is_no_conversation() -> None:
    assert decode_fields({}) is None


def test_context_carries_phase_subject_and_tier() -> None:
    conv = advance(Conversation(tier=Tier.VIP), answer("coupon"), "q", T, CAPS)
    ctx = conv.context()
    assert (ctx.phase, ctx.last_intent, ctx.tier) == (Phase.ANSWERED, "coupon", Tier.VIP)
