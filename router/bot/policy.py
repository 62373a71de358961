"""The bot's decision, pure: from the classifier's prediction, the rules, the knowledge base and
where the conversation stands, to a BotDecision (answer, ask to rephrase, or hand off to a
queue with skills and priority). No I/O; the stage does the rest.

Order of precedence for a customer message:
1. the contact is already with a person: the bot only confirms the hand-off;
2. asks for a person -> escalate (to the subject's queue if the bot knows it);
3. anger or complaint -> escalate to the anger route (complaints);
4. right after a bot answer, "that did not help" -> escalate to the answered subject's queue;
5. VIP under the always_human policy -> escalate;
6. below the confidence threshold (out of scope) -> ask to rephrase while allowed, else
   escalate as not understood;
7. a containable intent -> answer it; otherwise hand off to the intent's queue.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from router.bot.kb import Escalation, Intent, KnowledgeBase, Message, Route
from router.bot.rules import RuleHits, VipPolicy, vip_boost, vip_goes_to_a_person
from router.bot.scoring import OOS, Prediction
from router.decode import PRIORITY_RANGE
from router.events import BotAction, Language, Tier

UNKNOWN_INTENT = "unknown"  # the intent label when the bot did not understand
HUMAN_REQUEST_INTENT = "human_request"  # asked for a person before naming a subject
ANGER_INTENT = "anger"  # angry before naming a subject


class Reason(enum.StrEnum):
    """Why the bot escalated (routing.requested.v1 `reason`, the metric label)."""

    INTENT_NEEDS_AGENT = "intent_needs_agent"
    HUMAN_REQUESTED = "human_requested"
    ANGER = "anger"
    NOT_HELPFUL = "not_helpful"
    NOT_UNDERSTOOD = "not_understood"
    VIP = "vip"


class Phase(enum.StrEnum):
    """Where a conversation stands after the bot's last reply."""

    NEW = "new"  # no reply yet
    ANSWERED = "answered"  # the bot answered an intent; silence closes the contact
    REPHRASE = "rephrase"  # the bot asked the customer to rephrase; silence closes it too
    ESCALATED = "escalated"  # handed to a person; the bot only confirms from now on


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    threshold: float
    vip_policy: VipPolicy = VipPolicy.BOOST
    vip_boost: int = 0
    rephrase_max: int = 0  # times the bot asks to rephrase before escalating not_understood


@dataclass(frozen=True, slots=True)
class Context:
    """What the bot remembers of the conversation before this message."""

    phase: Phase = Phase.NEW
    last_intent: str = ""  # the subject of the bot's last answer or hand-off
    last_confidence: float = 0.0
    rephrases: int = 0
    tier: Tier = Tier.NORMAL


@dataclass(frozen=True, slots=True)
class BotDecision:
    action: BotAction
    phase: Phase
    intent: str
    confidence: float
    reply: str
    language: Language  # of the reply (the customer's, if the knowledge base has it)
    reason: str = ""  # a Reason value when escalated
    queue: str = ""
    skills: Mapping[str, int] = field(default_factory=dict)
    priority: int = 0
    new_escalation: bool = False  # publish a routing request (the contact's first hand-off)


def decide(hits: RuleHits, prediction: Prediction, language: Language, ctx: Context,
           kb: KnowledgeBase, cfg: PolicyConfig) -> BotDecision:
    """The bot's reply to one customer message (a contact's first text or a later one)."""
    if ctx.phase == Phase.ESCALATED:
        return still_with_a_person(language, ctx, kb)
    understood = _understood(prediction, kb, cfg.threshold)
    previous = kb.intents.get(ctx.last_intent)
    if hits.human_request:
        subject = understood or previous
        return _escalate(Reason.HUMAN_REQUESTED, subject, _confidence(subject, prediction, ctx),
                         language, ctx, kb, cfg)
    if hits.anger:
        subject = understood or previous
        return _escalate(Reason.ANGER, subject, _confidence(subject, prediction, ctx),
                         language, ctx, kb, cfg)
    if hits.not_helpful and ctx.phase in (Phase.ANSWERED, Phase.REPHRASE):
        return _escalate(Reason.NOT_HELPFUL, previous, ctx.last_confidence, language, ctx, kb,
                         cfg)
    if vip_goes_to_a_person(ctx.tier, cfg.vip_policy):
        return _escalate(Reason.VIP, understood, prediction.confidence, language, ctx, kb, cfg)
    if understood is None:
        if ctx.rephrases < cfg.rephrase_max:
            return BotDecision(BotAction.ANSWERED, Phase.REPHRASE, UNKNOWN_INTENT,
                               prediction.confidence,
                               kb.message(Message.NOT_UNDERSTOOD, language),
                               kb.language(language))
        return _escalate(Reason.NOT_UNDERSTOOD, None, prediction.confidence, language, ctx, kb,
                         cfg)
    if understood.containable:
        return BotDecision(BotAction.ANSWERED, Phase.ANSWERED, understood.name,
                           prediction.confidence, kb.answer(understood.name, language),
                           kb.language(language))
    return _escalate(Reason.INTENT_NEEDS_AGENT, understood, prediction.confidence, language,
                     ctx, kb, cfg)


def human_requested(language: Language, ctx: Context, kb: KnowledgeBase,
                    cfg: PolicyConfig) -> BotDecision:
    """The customer pressed "talk to a person" (customer.human_requested.v1)."""
    if ctx.phase == Phase.ESCALATED:
        return still_with_a_person(language, ctx, kb)
    previous = kb.intents.get(ctx.last_intent)
    return _escalate(Reason.HUMAN_REQUESTED, previous, ctx.last_confidence, language, ctx, kb,
                     cfg)


def still_with_a_person(language: Language, ctx: Context, kb: KnowledgeBase) -> BotDecision:
    """Messages after a hand-off: confirm it; no new routing request."""
    return BotDecision(BotAction.ESCALATED, Phase.ESCALATED, ctx.last_intent or UNKNOWN_INTENT,
                       ctx.last_confidence, kb.message(Message.HANDOFF, language),
                       kb.language(language))


def _understood(prediction: Prediction, kb: KnowledgeBase, threshold: float) -> Intent | None:
    """The knowledge-base intent the bot is confident about, if any."""
    if prediction.intent == OOS or prediction.confidence < threshold:
        return None
    return kb.intents.get(prediction.intent)


def _confidence(subject: Intent | None, prediction: Prediction, ctx: Context) -> float:
    if subject is not None and subject.name == prediction.intent:
        return prediction.confidence
    return ctx.last_confidence if subject is not None else prediction.confidence


_FALLBACK_INTENT = {
    Reason.HUMAN_REQUESTED: HUMAN_REQUEST_INTENT,
    Reason.ANGER: ANGER_INTENT,
}
_RULE_ROUTE = {
    Reason.HUMAN_REQUESTED: Escalation.HUMAN_REQUEST,
    Reason.ANGER: Escalation.ANGER,
    Reason.NOT_HELPFUL: Escalation.NOT_UNDERSTOOD,
    Reason.NOT_UNDERSTOOD: Escalation.NOT_UNDERSTOOD,
    Reason.VIP: Escalation.VIP,
}


def _escalate(reason: Reason, subject: Intent | None, confidence: float, language: Language,
              ctx: Context, kb: KnowledgeBase, cfg: PolicyConfig) -> BotDecision:
    """Hand off: to the subject's queue when the bot knows the subject (anger always goes to
    the anger route), else to the reason's route."""
    fallback = kb.routes[_RULE_ROUTE.get(reason, Escalation.NOT_UNDERSTOOD)]
    if reason == Reason.ANGER:
        route = Route(fallback.queue, max(fallback.priority, subject.priority if subject else 0))
        skills: Mapping[str, int] = {}
    elif subject is not None:
        route, skills = Route(subject.queue, subject.priority), subject.skills
    else:
        route, skills = fallback, {}
    if reason == Reason.INTENT_NEEDS_AGENT and subject is not None:
        reply = kb.answer(subject.name, language)  # the intent's own hand-off notice
    else:
        reply = kb.message(Message.HANDOFF, language)
    intent = subject.name if subject else _FALLBACK_INTENT.get(reason, UNKNOWN_INTENT)
    priority = min(route.priority + vip_boost(ctx.tier, cfg.vip_policy, cfg.vip_boost),
                   PRIORITY_RANGE[1])
    return BotDecision(BotAction.ESCALATED, Phase.ESCALATED, intent, confidence, reply,
                       kb.language(language), reason.value, route.queue, dict(skills),
                       priority, new_escalation=True)


def reply_for(action: BotAction, intent: str, reason: str, language: Language,
              kb: KnowledgeBase) -> str:
    """The reply text for a decision recorded earlier (to repeat it for a re-delivered event)."""
    if action == BotAction.ANSWERED:
        if intent in kb.intents:
            return kb.answer(intent, language)
        return kb.message(Message.NOT_UNDERSTOOD, language)
    if reason == Reason.INTENT_NEEDS_AGENT and intent in kb.intents:
        return kb.answer(intent, language)
    return kb.message(Message.HANDOFF, language)
